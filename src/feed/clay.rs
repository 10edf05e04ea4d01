//! The HTTP side of feeding Clay: one POST of one row to a table webhook, and the retry loop
//! around it (429, 5xx, timeouts), paced so retries never break the rate limit either.

use std::time::{Duration, SystemTime};

use super::{AUTH_HEADER, ClayWebhook, Pace, may_have_counted};
use crate::destinations::{rejected, send};
use crate::router::retry::{Attempt, Next, RetryPolicy, classify};

/// The reqwest client, built once.
#[derive(Clone, Debug)]
pub struct ClayClient {
    client: reqwest::Client,
    timeout: Duration,
}

/// How one row's submission ended, after its retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    /// The last attempt: `Delivered`, or why we stopped.
    pub last: Attempt,
    pub attempts: u32,
    /// Attempts that may have used one of the webhook's submissions (see [`may_have_counted`]).
    pub counted: u32,
}

impl Submission {
    pub fn accepted(&self) -> bool {
        self.last == Attempt::Delivered
    }
}

impl ClayClient {
    pub fn new(connect_timeout: Duration, timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("clayhook/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(ClayClient { client, timeout })
    }

    /// One POST; any 2xx is accepted.
    pub async fn post(&self, webhook: &ClayWebhook, body: &[u8]) -> Attempt {
        let mut req = self
            .client
            .post(&webhook.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(token) = &webhook.token {
            req = req.header(AUTH_HEADER, token);
        }
        match send(req.body(body.to_vec()), self.timeout).await {
            Ok(a) if (200..300).contains(&a.status) => Attempt::Delivered,
            Ok(a) => rejected(a),
            Err(attempt) => attempt,
        }
    }

    /// Posts until accepted, a permanent answer, the attempts run out, or the next wait would
    /// pass `deadline`. Every attempt waits for its slot in `pace`.
    pub async fn submit(
        &self,
        webhook: &ClayWebhook,
        body: &[u8],
        policy: &RetryPolicy,
        pace: &mut Pace,
        deadline: SystemTime,
    ) -> Submission {
        let mut attempts = 0;
        let mut counted = 0;
        loop {
            pace.wait().await;
            attempts += 1;
            let last = self.post(webhook, body).await;
            if may_have_counted(&last) {
                counted += 1;
            }
            let now = SystemTime::now();
            let class = classify(&last, now);
            match policy.next(
                attempts,
                &class,
                fastrand::f64(),
                now,
                deadline,
                self.timeout.min(Duration::from_secs(1)),
            ) {
                Next::RetryAfter(wait) => {
                    tracing::warn!(webhook = %webhook.label, attempt = attempts, wait_ms = wait.as_millis() as u64, answer = ?last, "Clay did not take the row; retrying");
                    tokio::time::sleep(wait).await;
                }
                Next::GiveUp(_) => {
                    return Submission {
                        last,
                        attempts,
                        counted,
                    };
                }
            }
        }
    }
}
