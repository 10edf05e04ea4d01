//! A downstream HTTP server that misbehaves at seeded random: 5xx, 429 with Retry-After, hangs
//! past the client's timeout, dropped connections. It counts the deliveries it accepted (a 200
//! actually sent) per `Idempotency-Key`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
pub struct Tally {
    pub accepted: HashMap<String, u32>,
    pub answers: HashMap<&'static str, u32>,
}

pub struct Chaos {
    pub url: String,
    pub tally: Arc<Mutex<Tally>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Chaos {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug)]
struct Dropped;
impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose")
    }
}
impl std::error::Error for Dropped {}

/// `ok` of 100 requests succeed; the rest split between 500, 429, hang and reset.
pub async fn start(seed: u64, ok: u32, hang: Duration) -> Chaos {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let tally = Arc::new(Mutex::new(Tally::default()));
    let rng = Arc::new(Mutex::new(fastrand::Rng::with_seed(seed)));
    let t = tally.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (tally, rng) = (t.clone(), rng.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (tally, rng) = (tally.clone(), rng.clone());
                    async move {
                        let roll = rng.lock().unwrap().u32(0..100);
                        let bad = 100 - ok;
                        let (kind, status) = if roll < ok {
                            ("200", 200)
                        } else if roll < ok + bad * 3 / 10 {
                            ("500", 500)
                        } else if roll < ok + bad * 5 / 10 {
                            ("429", 429)
                        } else if roll < ok + bad * 8 / 10 {
                            ("hang", 0)
                        } else {
                            ("reset", 0)
                        };
                        *tally.lock().unwrap().answers.entry(kind).or_default() += 1;
                        match kind {
                            "hang" => {
                                tokio::time::sleep(hang).await;
                                Err(Dropped)
                            }
                            "reset" => Err(Dropped),
                            _ => {
                                let mut r =
                                    hyper::Response::new(Full::new(Bytes::from_static(b"ok")));
                                *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                                if status == 429 {
                                    r.headers_mut().insert("retry-after", "1".parse().unwrap());
                                }
                                if status == 200 {
                                    let key = delivery_key(req).await;
                                    *tally.lock().unwrap().accepted.entry(key).or_default() += 1;
                                }
                                Ok(r)
                            }
                        }
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Chaos { url, tally, task }
}

/// `Idempotency-Key` for webhooks; Slack has none, so its message's lead reference.
async fn delivery_key(req: hyper::Request<hyper::body::Incoming>) -> String {
    use http_body_util::BodyExt;
    if let Some(k) = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
    {
        return k.to_string();
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let text = v["blocks"][2]["elements"][0]["text"]
        .as_str()
        .unwrap_or_default();
    let short = text.split('`').nth(1).unwrap_or_default();
    format!("{short}:slack")
}
