//! Feeding Clay: rows go into a Clay table through its webhook source, one JSON object per POST,
//! paced under Clay's rate limit, counted against the 50,000 submissions a webhook accepts.
//!
//! Two ways in share this module: `clayhook push` (files, `push`) and the `feeder` Lambda (an
//! intake SQS queue, `feeder`). What is here is pure: row checks, webhook lists, pacing, the
//! circuit breaker, and which answers count against the limit.

pub mod clay;
pub mod config;
pub mod dynamodb;
pub mod feeder;
#[cfg(feature = "cli")]
pub mod journal;
#[cfg(feature = "cli")]
pub mod push;
pub mod sqs;

use sha2::{Digest, Sha256};
use std::time::Duration;

use crate::delivery::retry::{Attempt, TransportKind};

/// Submissions Clay accepts per webhook source, for good (deleting rows does not give any back).
pub const CLAY_SUBMISSION_LIMIT: u64 = 50_000;
/// Clay's payload limit is 100 KB; we stay under 100,000 bytes of JSON, as PostHog's client does.
pub const MAX_ROW_BYTES: usize = 100_000;
/// Clay takes about 10 records/s per workspace (burst 20); half leaves room for other senders.
pub const DEFAULT_RATE_PER_SECOND: f64 = 5.0;
pub const MAX_RATE_PER_SECOND: f64 = 10.0;
/// The header Clay's webhook source reads its authentication token from.
pub const AUTH_HEADER: &str = "x-clay-webhook-auth";

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FeedConfigError {
    #[error("no Clay webhook URL given")]
    NoWebhook,
    #[error("webhook {0} is not an http(s) URL")]
    NotAUrl(usize),
    #[error(
        "{tokens} auth tokens for {webhooks} webhooks: give one token for all, or one per webhook in the same order"
    )]
    TokenCount { tokens: usize, webhooks: usize },
    #[error(
        "the rate must be above 0 and at most {MAX_RATE_PER_SECOND} per second (Clay's limit); got {0}"
    )]
    Rate(f64),
    #[error("the submission limit must be at least 1")]
    Limit,
}

/// One Clay table webhook. Its URL is a credential (anyone holding it can add rows), so logs
/// and messages name it by `label` only.
#[derive(Clone, PartialEq, Eq)]
pub struct ClayWebhook {
    pub url: String,
    pub token: Option<String>,
    /// Stable short key for counters: SHA-256 of the URL, 16 hex digits.
    pub key: String,
    /// `#2 (…9f3a)`: position in the list and the URL's last four characters.
    pub label: String,
}

impl std::fmt::Debug for ClayWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClayWebhook")
            .field("label", &self.label)
            .field("token", &self.token.as_ref().map(|_| "[set]"))
            .finish()
    }
}

/// Pairs URLs with tokens: none, one for all, or one per URL.
pub fn webhooks(urls: &[String], tokens: &[String]) -> Result<Vec<ClayWebhook>, FeedConfigError> {
    let urls: Vec<&str> = urls
        .iter()
        .map(|u| u.trim())
        .filter(|u| !u.is_empty())
        .collect();
    let tokens: Vec<&str> = tokens
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .collect();
    if urls.is_empty() {
        return Err(FeedConfigError::NoWebhook);
    }
    if tokens.len() > 1 && tokens.len() != urls.len() {
        return Err(FeedConfigError::TokenCount {
            tokens: tokens.len(),
            webhooks: urls.len(),
        });
    }
    urls.iter()
        .enumerate()
        .map(|(i, url)| {
            if !crate::clock::is_http_url(url) {
                return Err(FeedConfigError::NotAUrl(i + 1));
            }
            let token = match tokens.len() {
                0 => None,
                1 => Some(tokens[0].to_string()),
                _ => Some(tokens[i].to_string()),
            };
            let tail: String = url
                .chars()
                .rev()
                .take(4)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            Ok(ClayWebhook {
                url: url.to_string(),
                token,
                key: hex::encode(&Sha256::digest(url.as_bytes())[..8]),
                label: format!("#{} (…{tail})", i + 1),
            })
        })
        .collect()
}

/// Webhook rotation, the feeder's and `clayhook push`'s: from index `from` on, the first webhook
/// `has_room` grants (the feeder's check takes the submission too), with its index. `passed` hears
/// of each full webhook passed over for a next one.
pub async fn next_with_room<'w, E, Fut>(
    webhooks: &'w [ClayWebhook],
    from: usize,
    mut has_room: impl FnMut(&'w ClayWebhook) -> Fut,
    mut passed: impl FnMut(&ClayWebhook, &ClayWebhook),
) -> Result<Option<(usize, &'w ClayWebhook)>, E>
where
    Fut: std::future::Future<Output = Result<bool, E>>,
{
    for (i, w) in webhooks.iter().enumerate().skip(from) {
        if has_room(w).await? {
            return Ok(Some((i, w)));
        }
        if let Some(next) = webhooks.get(i + 1) {
            passed(w, next);
        }
    }
    Ok(None)
}

/// Checks a rate against Clay's limit.
pub fn rate(per_second: f64) -> Result<f64, FeedConfigError> {
    if per_second.is_finite() && per_second > 0.0 && per_second <= MAX_RATE_PER_SECOND {
        Ok(per_second)
    } else {
        Err(FeedConfigError::Rate(per_second))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("{0}, not a JSON object (Clay makes one row of one object)")]
    NotAnObject(&'static str),
    #[error("{bytes} bytes, over Clay's 100 KB payload limit ({MAX_ROW_BYTES} bytes)")]
    TooLarge { bytes: usize },
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// The POST body for one row: a JSON object, at most [`MAX_ROW_BYTES`].
pub fn prepare_row(value: &serde_json::Value) -> Result<Vec<u8>, RowError> {
    if !value.is_object() {
        return Err(RowError::NotAnObject(kind(value)));
    }
    let body = serde_json::to_vec(value).map_err(|e| RowError::NotJson(e.to_string()))?;
    if body.len() > MAX_ROW_BYTES {
        return Err(RowError::TooLarge { bytes: body.len() });
    }
    Ok(body)
}

/// Parses raw bytes (a queue message, a JSONL line) into a row body.
pub fn prepare_raw(raw: &[u8]) -> Result<Vec<u8>, RowError> {
    if raw.len() > MAX_ROW_BYTES * 2 {
        // No need to parse megabytes to refuse them.
        return Err(RowError::TooLarge { bytes: raw.len() });
    }
    let value: serde_json::Value =
        serde_json::from_slice(raw).map_err(|e| RowError::NotJson(e.to_string()))?;
    prepare_row(&value)
}

/// Identifies a row across runs: its content and which occurrence of that content in the input it
/// is (two identical rows are two submissions).
pub fn row_key(body: &[u8], occurrence: u32) -> String {
    format!("{}#{occurrence}", hex::encode(&Sha256::digest(body)[..16]))
}

/// Whether a submission that ended like this may have used one of the webhook's 50,000: a row
/// Clay accepted, or an answer we cannot be sure of (5xx, a timeout, a cut connection). A 429,
/// another 4xx or a refused connection created nothing.
pub fn may_have_counted(attempt: &Attempt) -> bool {
    match attempt {
        Attempt::Delivered => true,
        Attempt::Status { status, .. } => *status >= 500,
        Attempt::Transport { kind, .. } => *kind != TransportKind::Connect,
    }
}

/// Answers that say the webhook itself is unusable (a wrong or missing token, a deleted source),
/// not that one row is bad: every further row would get the same.
pub fn webhook_refused(attempt: &Attempt) -> bool {
    matches!(
        attempt,
        Attempt::Status {
            status: 401 | 403 | 404 | 410,
            ..
        }
    )
}

/// Even spacing between submissions: `interval` after the previous start, never a burst.
#[derive(Debug)]
pub struct Pace {
    interval: Duration,
    next: Option<tokio::time::Instant>,
}

impl Pace {
    pub fn per_second(rate: f64) -> Pace {
        Pace {
            interval: Duration::from_secs_f64(1.0 / rate.max(0.001)),
            next: None,
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Waits for the next slot and takes it.
    pub async fn wait(&mut self) {
        let now = tokio::time::Instant::now();
        let at = self.next.map_or(now, |n| n.max(now));
        tokio::time::sleep_until(at).await;
        self.next = Some(at + self.interval);
    }
}

/// The feeder's circuit breaker, kept in the table so every invocation sees it. Each transition
/// below is applied atomically by the store (`FeedStore::breaker_*`), so no instance undoes
/// another's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BreakerState {
    pub consecutive_failures: u32,
    /// Epoch ms; while in the future, nothing is sent.
    pub open_until_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive failed submissions that open the breaker.
    pub threshold: u32,
    pub cooldown: Duration,
}

impl BreakerState {
    pub fn is_open(&self, now_ms: i64) -> bool {
        self.open_until_ms > now_ms
    }

    /// A row Clay took: the failures are forgotten and a breaker whose time has passed closes
    /// (the half-open probe succeeded). One still open stays open: another instance opened it
    /// after this row was sent, and a success from before must not undo that.
    pub fn after_success(self, now_ms: i64) -> BreakerState {
        if self.is_open(now_ms) {
            self
        } else {
            BreakerState::default()
        }
    }

    /// One more failure; at the threshold the breaker opens for the cooldown, one short of the
    /// threshold, so after the cooldown a single probe decides (half-open).
    pub fn after_failure(self, policy: &BreakerPolicy, now_ms: i64) -> BreakerState {
        let failures = self.consecutive_failures.saturating_add(1);
        let threshold = policy.threshold.max(1);
        if failures >= threshold {
            BreakerState {
                consecutive_failures: threshold - 1,
                // Never shorter than a hold already in place (a spent budget, a Retry-After).
                open_until_ms: self
                    .open_until_ms
                    .max(now_ms + policy.cooldown.as_millis() as i64),
            }
        } else {
            BreakerState {
                consecutive_failures: failures,
                open_until_ms: self.open_until_ms,
            }
        }
    }

    pub fn open_until(self, until_ms: i64) -> BreakerState {
        BreakerState {
            consecutive_failures: self.consecutive_failures,
            open_until_ms: self.open_until_ms.max(until_ms),
        }
    }
}

/// The UTC day a submission counts against the daily budget, and when that day ends.
pub fn budget_day(now_ms: i64) -> (String, i64) {
    let day_ms = 86_400_000;
    let start = now_ms.div_euclid(day_ms) * day_ms;
    let date = time::OffsetDateTime::from_unix_timestamp(start / 1000)
        .map(|t| t.date().to_string())
        .unwrap_or_else(|_| "1970-01-01".into());
    (date, start + day_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn urls(n: usize) -> Vec<String> {
        (1..=n)
            .map(|i| {
                format!(
                    "https://api.clay.com/v3/sources/webhook/pull-in-data-from-a-webhook-{i:04}"
                )
            })
            .collect()
    }

    #[test]
    fn tokens_pair_with_webhooks() {
        let w = webhooks(&urls(2), &[]).unwrap();
        assert!(w.iter().all(|w| w.token.is_none()));
        assert_eq!(w[1].label, "#2 (…0002)");
        assert_ne!(w[0].key, w[1].key);
        let w = webhooks(&urls(2), &["t".into()]).unwrap();
        assert!(w.iter().all(|w| w.token.as_deref() == Some("t")));
        let w = webhooks(&urls(2), &["a".into(), "b".into()]).unwrap();
        assert_eq!(w[1].token.as_deref(), Some("b"));
        assert_eq!(
            webhooks(&urls(3), &["a".into(), "b".into()]),
            Err(FeedConfigError::TokenCount {
                tokens: 2,
                webhooks: 3
            })
        );
        assert_eq!(webhooks(&[], &[]), Err(FeedConfigError::NoWebhook));
        assert_eq!(
            webhooks(&["ftp://x".into()], &[]),
            Err(FeedConfigError::NotAUrl(1))
        );
        // The Debug form is safe to log.
        let w = webhooks(&urls(1), &["secret-token".into()]).unwrap();
        let shown = format!("{w:?}");
        assert!(
            !shown.contains("secret-token") && !shown.contains("api.clay.com"),
            "{shown}"
        );
    }

    #[test]
    fn rates_above_clays_limit_are_refused() {
        assert_eq!(rate(5.0), Ok(5.0));
        assert_eq!(rate(10.0), Ok(10.0));
        for bad in [0.0, -1.0, 10.5, f64::NAN, f64::INFINITY] {
            assert!(rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rows_must_be_objects_under_100_kb() {
        assert_eq!(prepare_row(&json!({"a": 1})).unwrap(), br#"{"a":1}"#);
        assert_eq!(
            prepare_row(&json!([1])),
            Err(RowError::NotAnObject("an array"))
        );
        assert_eq!(
            prepare_row(&json!("x")),
            Err(RowError::NotAnObject("a string"))
        );
        let big = json!({"notes": "x".repeat(MAX_ROW_BYTES)});
        assert!(
            matches!(prepare_row(&big), Err(RowError::TooLarge { bytes }) if bytes > MAX_ROW_BYTES)
        );
        let fits = json!({"n": "x".repeat(MAX_ROW_BYTES - 8)});
        assert_eq!(prepare_row(&fits).unwrap().len(), MAX_ROW_BYTES);
        assert!(matches!(
            prepare_raw(b"{not json"),
            Err(RowError::NotJson(_))
        ));
        assert!(matches!(
            prepare_raw(&vec![b' '; MAX_ROW_BYTES * 3]),
            Err(RowError::TooLarge { .. })
        ));
    }

    #[test]
    fn row_keys_tell_occurrences_apart() {
        assert_eq!(row_key(b"{}", 0), row_key(b"{}", 0));
        assert_ne!(row_key(b"{}", 0), row_key(b"{}", 1));
        assert_ne!(row_key(b"{}", 0), row_key(b"{\"a\":1}", 0));
    }

    #[test]
    fn what_counts_against_the_limit() {
        let status = |s| Attempt::Status {
            status: s,
            retry_after: None,
            detail: String::new(),
        };
        let transport = |kind| Attempt::Transport {
            kind,
            detail: String::new(),
        };
        assert!(may_have_counted(&Attempt::Delivered));
        assert!(may_have_counted(&status(500)));
        assert!(may_have_counted(&transport(TransportKind::Timeout)));
        assert!(!may_have_counted(&status(429)));
        assert!(!may_have_counted(&status(401)));
        assert!(!may_have_counted(&transport(TransportKind::Connect)));
        assert!(webhook_refused(&status(401)) && webhook_refused(&status(404)));
        assert!(!webhook_refused(&status(400)) && !webhook_refused(&status(500)));
    }

    #[test]
    fn the_breaker_opens_at_the_threshold_and_closes_on_success() {
        let policy = BreakerPolicy {
            threshold: 3,
            cooldown: Duration::from_secs(60),
        };
        let mut s = BreakerState::default();
        for _ in 0..2 {
            s = s.after_failure(&policy, 1_000);
            assert!(!s.is_open(1_000));
        }
        s = s.after_failure(&policy, 1_000);
        assert!(s.is_open(1_000) && s.is_open(60_999) && !s.is_open(61_000));
        // Half-open: after the cooldown one more failure opens it again.
        let again = s.after_failure(&policy, 61_000);
        assert!(again.is_open(61_000) && !again.is_open(121_000));
        assert_eq!(s.after_success(61_000), BreakerState::default());
        assert_eq!(
            s.after_success(60_999),
            s,
            "a success never closes an open breaker early"
        );
        assert_eq!(
            BreakerState::default()
                .open_until(5)
                .open_until(3)
                .open_until_ms,
            5
        );
    }

    #[test]
    fn budget_days_are_utc() {
        let (day, ends) = budget_day(1_763_856_000_000 + 3_600_000);
        assert_eq!(day, "2025-11-23");
        assert_eq!(ends, 1_763_856_000_000 + 86_400_000);
    }

    #[tokio::test(start_paused = true)]
    async fn pace_spaces_submissions_evenly() {
        let mut pace = Pace::per_second(4.0);
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            pace.wait().await;
        }
        assert_eq!(start.elapsed(), Duration::from_millis(1_000));
    }
}
