//! The HTTP side of feeding Clay: one POST of one row to a table webhook, and the retry loop
//! around it (429, 5xx, timeouts), paced so retries never break the rate limit either.

use std::time::{Duration, SystemTime};

use super::{AUTH_HEADER, ClayWebhook, Pace, may_have_counted};
use crate::delivery::http::{rejected, send};
use crate::delivery::retry::{Attempt, Retried, RetryPolicy, TransportKind, drive};

/// Clay's table webhooks, one POST at a time: the port the feeder and `clayhook push` send
/// through ([`ClayClient`] over HTTP; scripted in the tests).
pub trait ClayWebhooks: Send + Sync {
    /// One POST of one row; any 2xx is accepted.
    fn post(
        &self,
        webhook: &ClayWebhook,
        body: &[u8],
    ) -> impl std::future::Future<Output = Attempt> + Send;
    /// The longest single request.
    fn request_timeout(&self) -> Duration;
}

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
    /// Submissions held for this row: the caller's one, plus one granted before each retry
    /// that followed an attempt which may have counted. `counted <= reserved`.
    pub reserved: u32,
    /// It stopped because the webhook had no submission left for another attempt: the row may
    /// go to another webhook.
    pub out_of_submissions: bool,
}

impl Submission {
    pub fn accepted(&self) -> bool {
        self.last == Attempt::Delivered
    }
}

impl ClayClient {
    pub fn new(connect_timeout: Duration, timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = crate::delivery::http::client(connect_timeout)?;
        Ok(ClayClient { client, timeout })
    }

    /// [`submit`] through this client.
    pub async fn submit<F, Fut>(
        &self,
        webhook: &ClayWebhook,
        body: &[u8],
        policy: &RetryPolicy,
        pace: &mut Pace,
        deadline: SystemTime,
        more_submissions: F,
    ) -> Submission
    where
        F: FnMut() -> Fut + Send,
        Fut: std::future::Future<Output = bool> + Send,
    {
        submit(
            self,
            webhook,
            body,
            policy,
            pace,
            deadline,
            more_submissions,
        )
        .await
    }
}

impl ClayWebhooks for ClayClient {
    async fn post(&self, webhook: &ClayWebhook, body: &[u8]) -> Attempt {
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

    fn request_timeout(&self) -> Duration {
        self.timeout
    }
}

/// Posts until accepted, a permanent answer, the attempts run out, or the next wait would
/// pass `deadline`. Every attempt waits for its slot in `pace`.
///
/// The caller holds one submission for the first attempt. An attempt that may have counted
/// (a 5xx, a timeout) used it up, so before the next one `more_submissions` must grant
/// another: past the limit Clay answers 200 and silently creates nothing, so a retry beyond
/// it would lose the row while we report it sent.
pub async fn submit<C: ClayWebhooks, F, Fut>(
    clay: &C,
    webhook: &ClayWebhook,
    body: &[u8],
    policy: &RetryPolicy,
    pace: &mut Pace,
    deadline: SystemTime,
    more_submissions: F,
) -> Submission
where
    F: FnMut() -> Fut + Send,
    Fut: std::future::Future<Output = bool> + Send,
{
    let mut row = RowAttempts {
        clay,
        webhook,
        body,
        pace,
        counted: 0,
        reserved: 1,
        more_submissions,
    };
    // A retry is only worth waiting for if a whole post still fits after the wait.
    let attempt_time = clay.request_timeout();
    let r = drive(&mut row, policy, deadline, attempt_time).await;
    Submission {
        // Every attempt is made (pacing waits rather than skips).
        last: r.last.unwrap_or(Attempt::Transport {
            kind: TransportKind::Other,
            detail: "no attempt was made".into(),
        }),
        attempts: r.attempts,
        counted: row.counted,
        reserved: row.reserved,
        out_of_submissions: r.stopped,
    }
}

/// One row's attempts at one webhook: what [`drive`] retries, counting what the attempts may
/// have used of the webhook's submissions.
struct RowAttempts<'a, C, F> {
    clay: &'a C,
    webhook: &'a ClayWebhook,
    body: &'a [u8],
    pace: &'a mut Pace,
    counted: u32,
    reserved: u32,
    more_submissions: F,
}

impl<C, F, Fut> Retried for RowAttempts<'_, C, F>
where
    C: ClayWebhooks,
    F: FnMut() -> Fut + Send,
    Fut: std::future::Future<Output = bool> + Send,
{
    async fn attempt(&mut self, _n: u32) -> Option<Attempt> {
        self.pace.wait().await;
        let last = self.clay.post(self.webhook, self.body).await;
        if may_have_counted(&last) {
            self.counted += 1;
        }
        Some(last)
    }

    async fn before_retry(&mut self, n: u32, last: &Attempt, wait: Duration) -> bool {
        if self.counted == self.reserved {
            if !(self.more_submissions)().await {
                tracing::warn!(webhook = %self.webhook.label, attempt = n, answer = ?last, "Clay did not take the row and the webhook has no submission left for a retry");
                return false;
            }
            self.reserved += 1;
        }
        tracing::warn!(webhook = %self.webhook.label, attempt = n, wait_ms = wait.as_millis() as u64, answer = ?last, "Clay did not take the row; retrying");
        true
    }
}
