//! A local HTTP server playing Clay's table webhook sources: one path per webhook, the
//! `x-clay-webhook-auth` token checked, scripted answers (429, 5xx, slow) before the normal
//! 200, and a record of every row it accepted. Like Clay, a webhook past its submission limit
//! (when one is set) still answers 200 but creates nothing: those rows are recorded as dropped.

use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

#[derive(Debug, Clone)]
pub enum Script {
    /// Answer with this status (and `Retry-After` seconds); the row is not taken.
    Status(u16, Option<u64>),
    /// Answer 200 only after this long: the client gives up first; the row is not taken.
    Slow(Duration),
    /// The normal answer: take the row (lets a script interleave good answers).
    Take,
}

#[derive(Default)]
struct State {
    token: Option<String>,
    script: VecDeque<Script>,
    /// (webhook number, row) for every row taken.
    accepted: Vec<(usize, Value)>,
    /// When each request arrived, and on which webhook.
    hits: Vec<(Instant, usize)>,
    /// Submissions per webhook past which rows are silently dropped.
    limit: Option<u64>,
    /// Submissions each webhook has used: every POST that may have created a row (2xx, 5xx,
    /// too slow to answer) — the same pessimistic view clayhook takes.
    used: HashMap<usize, u64>,
    /// Rows answered 200 past the limit: lost, as with Clay.
    dropped: Vec<(usize, Value)>,
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
        let step = st.script.pop_front().unwrap_or(Script::Take);
        let counts = match &step {
            Script::Status(code, _) => *code >= 500,
            Script::Slow(_) | Script::Take => true,
        };
        if counts {
            *st.used.entry(hook).or_insert(0) += 1;
        }
        match step {
            Script::Status(code, retry_after) => {
                let mut r = ResponseTemplate::new(code).set_body_string("try later");
                if let Some(s) = retry_after {
                    r = r.insert_header("retry-after", s.to_string().as_str());
                }
                r
            }
            Script::Slow(d) => ResponseTemplate::new(200).set_delay(d),
            Script::Take => match serde_json::from_slice::<Value>(&request.body) {
                Ok(v) if v.is_object() => {
                    let over = st.limit.is_some_and(|l| st.used[&hook] > l);
                    if over {
                        st.dropped.push((hook, v));
                    } else {
                        st.accepted.push((hook, v));
                    }
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

    /// Drop rows silently past `limit` submissions per webhook, as Clay does past 50,000.
    pub fn silent_limit(&self, limit: u64) {
        self.state.lock().expect("clay state").limit = Some(limit);
    }

    /// Rows answered 200 past the limit and never created.
    pub fn dropped(&self) -> Vec<(usize, Value)> {
        self.state.lock().expect("clay state").dropped.clone()
    }

    pub fn hits(&self) -> Vec<(Instant, usize)> {
        self.state.lock().expect("clay state").hits.clone()
    }
}
