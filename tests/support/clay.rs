//! A local HTTP server playing Clay's table webhook sources: one path per webhook, the
//! `x-clay-webhook-auth` token checked, scripted answers (429, 5xx, slow) before the normal
//! 200, and a record of every row it accepted.

use serde_json::Value;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

#[derive(Debug, Clone)]
pub enum Script {
    /// Answer with this status (and `Retry-After` seconds); the row is not taken.
    Status(u16, Option<u64>),
    /// Answer 200 only after this long: the client gives up first; the row is not taken.
    Slow(Duration),
}

#[derive(Default)]
struct State {
    token: Option<String>,
    script: VecDeque<Script>,
    /// (webhook number, row) for every row taken.
    accepted: Vec<(usize, Value)>,
    /// When each request arrived, and on which webhook.
    hits: Vec<(Instant, usize)>,
}

pub struct FakeClay {
    pub server: MockServer,
    state: Arc<Mutex<State>>,
}

struct Responder(Arc<Mutex<State>>);

impl Respond for Responder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut st = self.0.lock().expect("clay state");
        let hook: usize = request
            .url
            .path()
            .rsplit('-')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        st.hits.push((Instant::now(), hook));
        let token = request
            .headers
            .get("x-clay-webhook-auth")
            .and_then(|v| v.to_str().ok());
        if st.token.is_some() && token != st.token.as_deref() {
            return ResponseTemplate::new(401).set_body_string("Unauthorized");
        }
        match st.script.pop_front() {
            Some(Script::Status(code, retry_after)) => {
                let mut r = ResponseTemplate::new(code).set_body_string("try later");
                if let Some(s) = retry_after {
                    r = r.insert_header("retry-after", s.to_string().as_str());
                }
                r
            }
            Some(Script::Slow(d)) => ResponseTemplate::new(200).set_delay(d),
            None => match serde_json::from_slice::<Value>(&request.body) {
                Ok(v) if v.is_object() => {
                    st.accepted.push((hook, v));
                    ResponseTemplate::new(200).set_body_string(r#"{"status":"ok"}"#)
                }
                _ => ResponseTemplate::new(400).set_body_string("Body parse error"),
            },
        }
    }
}

impl FakeClay {
    pub async fn start(token: Option<&str>) -> FakeClay {
        let server = MockServer::start().await;
        let state = Arc::new(Mutex::new(State {
            token: token.map(str::to_string),
            ..State::default()
        }));
        Mock::given(wiremock::matchers::method("POST"))
            .respond_with(Responder(state.clone()))
            .mount(&server)
            .await;
        FakeClay { server, state }
    }

    /// Webhook number `n`'s URL, shaped like Clay's.
    pub fn webhook(&self, n: usize) -> String {
        format!(
            "{}/v3/sources/webhook/pull-in-data-from-a-webhook-{n}",
            self.server.uri()
        )
    }

    pub fn script(&self, steps: impl IntoIterator<Item = Script>) {
        self.state.lock().expect("clay state").script.extend(steps);
    }

    pub fn accepted(&self) -> Vec<(usize, Value)> {
        self.state.lock().expect("clay state").accepted.clone()
    }

    pub fn hits(&self) -> Vec<(Instant, usize)> {
        self.state.lock().expect("clay state").hits.clone()
    }
}
