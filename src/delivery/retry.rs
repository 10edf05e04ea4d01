//! The one place that decides whether a delivery attempt is retried, and how long to wait:
//! full-jitter exponential backoff, `Retry-After` honoured, never past the Lambda's deadline.

use std::time::{Duration, SystemTime};

/// What one delivery attempt came to, as the destination saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Delivered,
    /// The server answered with a non-success status.
    Status {
        status: u16,
        retry_after: Option<RetryAfter>,
        /// The destination's answer, shortened and redacted (for the log only).
        detail: String,
    },
    /// No usable answer: connection refused or reset, timeout, ...
    Transport {
        kind: TransportKind,
        detail: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Connect,
    Timeout,
    Other,
}

/// A `Retry-After` value: delay-seconds or an HTTP date (RFC 9110).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    Seconds(u64),
    At(SystemTime),
}

impl RetryAfter {
    /// Parses a header value; anything unreadable is ignored (`None`).
    pub fn parse(text: &str) -> Option<RetryAfter> {
        let t = text.trim();
        if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
            return t.parse().ok().map(RetryAfter::Seconds);
        }
        httpdate::parse_http_date(t).ok().map(RetryAfter::At)
    }

    /// How long from `now` the server asked us to wait.
    pub fn delay(&self, now: SystemTime) -> Duration {
        match self {
            RetryAfter::Seconds(s) => Duration::from_secs(*s),
            RetryAfter::At(t) => t.duration_since(now).unwrap_or_default(),
        }
    }
}

/// Transient or permanent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    Success,
    /// Worth another try (after at least `not_before`, when the server said so).
    Transient {
        not_before: Option<Duration>,
    },
    /// Retrying cannot help: the record fails and, after `maxReceiveCount`, reaches the DLQ.
    Permanent,
}

/// Connect errors, timeouts, 408, 425, 429 and 5xx other than 501 are transient; other 4xx
/// (and 501, and anything else unexpected) are permanent.
pub fn classify(attempt: &Attempt, now: SystemTime) -> Class {
    match attempt {
        Attempt::Delivered => Class::Success,
        Attempt::Transport { .. } => Class::Transient { not_before: None },
        Attempt::Status {
            status,
            retry_after,
            ..
        } => match status {
            408 | 425 | 429 => Class::Transient {
                not_before: retry_after.map(|r| r.delay(now)),
            },
            501 => Class::Permanent,
            500..=599 => Class::Transient {
                not_before: retry_after.map(|r| r.delay(now)),
            },
            _ => Class::Permanent,
        },
    }
}

/// Backoff settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per destination per invocation, the first included.
    pub max_attempts: u32,
    pub base: Duration,
    pub cap: Duration,
    /// Time kept free before the deadline for the answer to reach the runtime.
    pub safety_margin: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base: Duration::from_millis(250),
            cap: Duration::from_secs(20),
            safety_margin: Duration::from_millis(500),
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    RetryAfter(Duration),
    /// Stop: the record fails and SQS redelivers it later (or moves it to the DLQ).
    GiveUp(&'static str),
}

impl RetryPolicy {
    /// Full jitter: uniform in `[0, min(cap, base · 2^attempt))`. `unit` is a random number in
    /// `[0, 1)`, passed in so the function stays pure.
    pub fn backoff(&self, attempt: u32, unit: f64) -> Duration {
        let exp = self
            .base
            .saturating_mul(2u32.saturating_pow(attempt.min(30)));
        exp.min(self.cap).mul_f64(unit.clamp(0.0, 1.0))
    }

    /// After attempt number `attempt` (1-based) failed as `class`: wait, or give up. A wait that
    /// leaves less than `attempt_time` before `deadline` (less the margin) gives up instead of
    /// sleeping.
    pub fn next(
        &self,
        attempt: u32,
        class: &Class,
        unit: f64,
        now: SystemTime,
        deadline: SystemTime,
        attempt_time: Duration,
    ) -> Next {
        let not_before = match class {
            Class::Success => return Next::GiveUp("delivered"),
            Class::Permanent => return Next::GiveUp("permanent failure"),
            Class::Transient { not_before } => *not_before,
        };
        if attempt >= self.max_attempts {
            return Next::GiveUp("attempts exhausted");
        }
        let jitter = self.backoff(attempt, unit);
        // Never earlier than the server asked.
        let wait = not_before.map_or(jitter, |n| n.max(jitter));
        let left = deadline
            .duration_since(now)
            .unwrap_or_default()
            .saturating_sub(self.safety_margin);
        if wait.saturating_add(attempt_time) >= left {
            return Next::GiveUp("the wait is longer than the time left");
        }
        Next::RetryAfter(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn status(code: u16, retry_after: Option<RetryAfter>) -> Attempt {
        Attempt::Status {
            status: code,
            retry_after,
            detail: String::new(),
        }
    }

    #[test]
    fn classification_follows_the_spec() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        for code in [408, 425, 429, 500, 502, 503, 504, 599] {
            assert!(
                matches!(classify(&status(code, None), now), Class::Transient { .. }),
                "{code}"
            );
        }
        for code in [400, 401, 403, 404, 405, 409, 410, 413, 415, 422, 501, 302] {
            assert_eq!(
                classify(&status(code, None), now),
                Class::Permanent,
                "{code}"
            );
        }
        let t = Attempt::Transport {
            kind: TransportKind::Timeout,
            detail: String::new(),
        };
        assert_eq!(classify(&t, now), Class::Transient { not_before: None });
        assert_eq!(classify(&Attempt::Delivered, now), Class::Success);
        assert_eq!(
            classify(&status(429, Some(RetryAfter::Seconds(3))), now),
            Class::Transient {
                not_before: Some(Duration::from_secs(3))
            }
        );
    }

    #[test]
    fn retry_after_seconds_and_http_dates() {
        assert_eq!(RetryAfter::parse(" 120 "), Some(RetryAfter::Seconds(120)));
        let at = RetryAfter::parse("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:27:30 GMT").unwrap();
        assert_eq!(at.delay(now), Duration::from_secs(30));
        assert_eq!(at.delay(now + Duration::from_secs(60)), Duration::ZERO);
        for junk in ["", "-1", "soon", "1.5", "99999999999999999999999"] {
            assert_eq!(RetryAfter::parse(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn full_jitter_stays_under_the_exponential_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(0, 0.0), Duration::ZERO);
        assert_eq!(p.backoff(1, 0.999_999).as_millis(), 499);
        assert_eq!(p.backoff(3, 0.5), Duration::from_secs(1));
        assert_eq!(p.backoff(30, 1.0), p.cap);
        assert_eq!(p.backoff(u32::MAX, 1.0), p.cap);
    }

    #[test]
    fn next_honours_retry_after_attempts_and_deadline() {
        let p = RetryPolicy::default();
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let far = now + Duration::from_secs(60);
        let quick = Duration::from_millis(10);
        let transient = Class::Transient { not_before: None };
        assert!(matches!(
            p.next(1, &transient, 0.5, now, far, quick),
            Next::RetryAfter(_)
        ));
        assert_eq!(
            p.next(4, &transient, 0.5, now, far, quick),
            Next::GiveUp("attempts exhausted")
        );
        assert!(matches!(
            p.next(1, &Class::Permanent, 0.5, now, far, quick),
            Next::GiveUp(_)
        ));
        let asked = Class::Transient {
            not_before: Some(Duration::from_secs(5)),
        };
        assert_eq!(
            p.next(1, &asked, 0.0, now, far, quick),
            Next::RetryAfter(Duration::from_secs(5)),
            "never earlier than Retry-After"
        );
        let near = now + Duration::from_secs(3);
        assert_eq!(
            p.next(1, &asked, 0.0, now, near, quick),
            Next::GiveUp("the wait is longer than the time left")
        );
        let past = now - Duration::from_secs(1);
        assert!(matches!(
            p.next(1, &transient, 0.0, now, past, quick),
            Next::GiveUp(_)
        ));
    }
}
