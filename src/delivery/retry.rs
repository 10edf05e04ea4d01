//! The one place that decides whether a delivery attempt is retried, and how long to wait:
//! full-jitter exponential backoff, `Retry-After` honoured, never past the Lambda's deadline;
//! and the one loop ([`drive`]) that carries it out, for the router and the Clay submitter alike.

use std::future::Future;

use crate::config::{ConfigError, Env};
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

impl Class {
    /// The `Class` dimension of the failure metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Class::Success => "success",
            Class::Permanent => "permanent",
            Class::Transient { .. } => "transient",
        }
    }
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

impl RetryPolicy {
    /// `RETRY_MAX_ATTEMPTS`, `RETRY_BASE_MS` and `RETRY_CAP_MS` over the defaults (the router).
    pub fn read<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let defaults = RetryPolicy::default();
        Ok(RetryPolicy {
            base: env.millis("RETRY_BASE_MS", defaults.base.as_millis() as u64)?,
            cap: env.millis("RETRY_CAP_MS", defaults.cap.as_millis() as u64)?,
            ..Self::read_attempts(env)?
        })
    }

    /// The defaults with `RETRY_MAX_ATTEMPTS` only (the feeder, whose pacing spaces retries).
    pub fn read_attempts<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let defaults = RetryPolicy::default();
        Ok(RetryPolicy {
            max_attempts: env.number("RETRY_MAX_ATTEMPTS", defaults.max_attempts, |v| *v > 0)?,
            ..defaults
        })
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

/// One operation retried under a [`RetryPolicy`]: what an attempt does, and what happens between
/// attempts. [`drive`] runs the loop; the router (one destination) and the Clay submitter (one
/// row) each say only what is theirs.
pub trait Retried: Send {
    /// Attempt number `n` (1-based); `None` when there is no time for it (the loop stops).
    fn attempt(&mut self, n: u32) -> impl Future<Output = Option<Attempt>> + Send;
    /// After failed attempt `n` (classed `class`, followed by `next`): for logs and metrics.
    fn failed(&mut self, _n: u32, _last: &Attempt, _class: &Class, _next: &Next) {}
    /// Before waiting `wait` for attempt `n + 1`: `false` stops the loop here.
    fn before_retry(
        &mut self,
        _n: u32,
        _last: &Attempt,
        _wait: Duration,
    ) -> impl Future<Output = bool> + Send {
        std::future::ready(true)
    }
}

/// How a retried operation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retries {
    /// The last attempt (`Delivered` when it succeeded); `None` when none was made.
    pub last: Option<Attempt>,
    pub attempts: u32,
    /// `before_retry` stopped it.
    pub stopped: bool,
}

impl Retries {
    pub fn succeeded(&self) -> bool {
        self.last == Some(Attempt::Delivered)
    }
}

/// Attempts until one succeeds, the policy gives up, or the operation stops itself. A wait that
/// leaves less than `attempt_time` before `deadline` is not taken (see [`RetryPolicy::next`]).
pub async fn drive<R: Retried>(
    op: &mut R,
    policy: &RetryPolicy,
    deadline: SystemTime,
    attempt_time: Duration,
) -> Retries {
    let mut attempts = 0;
    loop {
        let Some(last) = op.attempt(attempts + 1).await else {
            return Retries {
                last: None,
                attempts,
                stopped: false,
            };
        };
        attempts += 1;
        let now = SystemTime::now();
        let class = classify(&last, now);
        if class == Class::Success {
            return Retries {
                last: Some(last),
                attempts,
                stopped: false,
            };
        }
        let next = policy.next(
            attempts,
            &class,
            fastrand::f64(),
            now,
            deadline,
            attempt_time,
        );
        op.failed(attempts, &last, &class, &next);
        match next {
            Next::RetryAfter(wait) => {
                if !op.before_retry(attempts, &last, wait).await {
                    return Retries {
                        last: Some(last),
                        attempts,
                        stopped: true,
                    };
                }
                tokio::time::sleep(wait).await;
            }
            Next::GiveUp(_) => {
                return Retries {
                    last: Some(last),
                    attempts,
                    stopped: false,
                };
            }
        }
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

    /// Answers from a script; records what the driver asked.
    struct Scripted {
        answers: Vec<Option<Attempt>>,
        failed: Vec<(u32, &'static str)>,
        grant_retries: u32,
        asked: Vec<u32>,
    }

    impl Retried for Scripted {
        async fn attempt(&mut self, n: u32) -> Option<Attempt> {
            self.asked.push(n);
            self.answers.remove(0)
        }
        fn failed(&mut self, n: u32, _last: &Attempt, class: &Class, _next: &Next) {
            self.failed.push((n, class.as_str()));
        }
        async fn before_retry(&mut self, _n: u32, _last: &Attempt, _wait: Duration) -> bool {
            let granted = self.grant_retries > 0;
            self.grant_retries = self.grant_retries.saturating_sub(1);
            granted
        }
    }

    fn scripted(answers: Vec<Option<Attempt>>, grant_retries: u32) -> Scripted {
        Scripted {
            answers,
            failed: vec![],
            grant_retries,
            asked: vec![],
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_driver_retries_until_success_a_permanent_answer_or_a_refusal() {
        let policy = RetryPolicy::default();
        let deadline = SystemTime::now() + Duration::from_secs(600);
        let quick = Duration::from_millis(10);

        let mut op = scripted(vec![Some(status(503, None)), Some(Attempt::Delivered)], 9);
        let r = drive(&mut op, &policy, deadline, quick).await;
        assert!(r.succeeded() && r.attempts == 2 && !r.stopped);
        assert_eq!(op.failed, vec![(1, "transient")]);

        let mut op = scripted(vec![Some(status(400, None))], 9);
        let r = drive(&mut op, &policy, deadline, quick).await;
        assert_eq!((r.attempts, r.stopped), (1, false));
        assert_eq!(op.failed, vec![(1, "permanent")]);

        // before_retry says no after the first retry: two attempts, stopped.
        let mut op = scripted(vec![Some(status(503, None)); 4], 1);
        let r = drive(&mut op, &policy, deadline, quick).await;
        assert_eq!((r.attempts, r.stopped), (2, true));
        assert_eq!(r.last, Some(status(503, None)));

        // Attempts run out at the policy's maximum.
        let mut op = scripted(vec![Some(status(503, None)); 4], 9);
        let r = drive(&mut op, &policy, deadline, quick).await;
        assert_eq!((r.attempts, r.stopped), (policy.max_attempts, false));
        assert_eq!(op.asked, vec![1, 2, 3, 4]);

        // No time for the first attempt: nothing was sent.
        let mut op = scripted(vec![None], 9);
        let r = drive(&mut op, &policy, deadline, quick).await;
        assert_eq!((r.attempts, r.last), (0, None));
    }
}
