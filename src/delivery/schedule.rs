//! Retries over hours: after an invocation's own quick retries fail, a record waits on the queue
//! for the next step of this schedule (its visibility changed, not a fixed timeout), so a
//! destination that is down for an afternoon still gets every lead. The dead-letter queue comes
//! only after the schedule. Pure: the router asks, the queue adapter carries it out.

use std::time::{Duration, SystemTime};

use crate::config::{ConfigError, Env};

/// `RETRY_SCHEDULE`: the waits after the 1st, 2nd, ... failed receive.
pub const DEFAULT_SCHEDULE: &str = "30s,2m,10m,30m,1h,2h";
/// `RETRY_SCHEDULE_TOTAL`: the last step repeats until the waits add up to this.
pub const DEFAULT_TOTAL: &str = "24h";
/// SQS keeps a received message invisible at most 12 hours from that receive: a
/// `ChangeMessageVisibility` ending later is refused (not shortened).
pub const SQS_MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);
/// Kept clear of SQS's limit: the event source mapping's batching window (up to 5 minutes
/// between the receive and the invocation), the clocks, and the call itself.
pub const VISIBILITY_MARGIN: Duration = Duration::from_secs(6 * 60);
/// The longest step: SQS's 12 h less the margin and the longest invocation (15 minutes), so a
/// step is honoured whenever in the invocation it is asked for.
pub const MAX_STEP: Duration = Duration::from_secs(12 * 3600 - 30 * 60);

/// The longest visibility SQS still takes for a message received no earlier than `received`
/// (for a Lambda, the invocation's start), asked at `now`: 12 h since the receive, less what has
/// passed and [`VISIBILITY_MARGIN`]. Every wait on the queue goes through this.
pub fn visibility_limit(received: SystemTime, now: SystemTime) -> Duration {
    let passed = now.duration_since(received).unwrap_or_default();
    SQS_MAX_VISIBILITY.saturating_sub(passed + VISIBILITY_MARGIN)
}
/// The queues keep messages 14 days; the schedule must end well inside that.
pub const MAX_TOTAL: Duration = Duration::from_secs(13 * 86_400);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    /// Every wait, the repeated last step expanded.
    waits: Vec<Duration>,
}

impl Default for RetrySchedule {
    fn default() -> Self {
        RetrySchedule::parse(DEFAULT_SCHEDULE, DEFAULT_TOTAL).unwrap_or(RetrySchedule {
            waits: vec![Duration::from_secs(30)],
        })
    }
}

/// `90`, `90s`, `2m`, `1h`, `1d`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(Duration::from_secs(seconds))
}

impl RetrySchedule {
    /// The listed steps (each 1 s to [`MAX_STEP`]), then the last one again until the total.
    pub fn parse(steps: &str, total: &str) -> Result<RetrySchedule, String> {
        let mut listed = Vec::new();
        for step in steps.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let d = parse_duration(step)
                .ok_or_else(|| format!("{step:?} is not a duration (like 30s, 10m, 1h)"))?;
            if d.is_zero() || d > MAX_STEP {
                return Err(format!(
                    "{step:?}: each step must be between 1s and 690m (11h30m: SQS keeps a \
                     message invisible at most 12h from its receive, less the invocation and a \
                     margin)"
                ));
            }
            listed.push(d);
        }
        let Some(&last) = listed.last() else {
            return Err("no steps".into());
        };
        let total = parse_duration(total)
            .ok_or_else(|| format!("total {total:?} is not a duration (like 24h)"))?;
        if total > MAX_TOTAL {
            return Err("the total must end within 13 days (the queues keep messages 14)".into());
        }
        let mut waits = listed;
        let mut sum: Duration = waits.iter().sum();
        while sum < total {
            waits.push(last);
            sum += last;
        }
        Ok(RetrySchedule { waits })
    }

    /// `RETRY_SCHEDULE` and `RETRY_SCHEDULE_TOTAL` over the defaults.
    pub fn read<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let steps = env
            .optional("RETRY_SCHEDULE")
            .unwrap_or_else(|| DEFAULT_SCHEDULE.into());
        let total = env
            .optional("RETRY_SCHEDULE_TOTAL")
            .unwrap_or_else(|| DEFAULT_TOTAL.into());
        RetrySchedule::parse(&steps, &total).map_err(|reason| ConfigError::Invalid {
            var: "RETRY_SCHEDULE",
            reason,
        })
    }

    /// How long a record that failed on its `receive`-th receive (1-based) waits before the next;
    /// `None` once the schedule is over: then it goes to the dead-letter queue.
    pub fn wait_after(&self, receive: u32) -> Option<Duration> {
        let index = usize::try_from(receive.max(1) - 1).ok()?;
        self.waits.get(index).copied()
    }

    /// The step of the last wait: a failure count that never exhausts the schedule.
    pub fn last_step(&self) -> u32 {
        u32::try_from(self.waits.len()).unwrap_or(u32::MAX).max(1)
    }

    /// Receives a record gets in all: the first and one after each wait. The queue's
    /// `maxReceiveCount` must be at least this, or SQS ends the schedule early.
    pub fn receives(&self) -> u32 {
        u32::try_from(self.waits.len() + 1).unwrap_or(u32::MAX)
    }

    /// The waits added up: how long a lead may be retried.
    pub fn total(&self) -> Duration {
        self.waits.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_schedule_retries_for_a_day() {
        let s = RetrySchedule::default();
        let m = |n: u64| Duration::from_secs(60 * n);
        assert_eq!(s.wait_after(1), Some(Duration::from_secs(30)));
        assert_eq!(s.wait_after(2), Some(m(2)));
        assert_eq!(s.wait_after(3), Some(m(10)));
        assert_eq!(s.wait_after(4), Some(m(30)));
        assert_eq!(s.wait_after(5), Some(m(60)));
        assert_eq!(s.wait_after(6), Some(m(120)));
        // 3 h 42.5 min listed, then 2 h steps until 24 h: 11 more.
        assert_eq!(s.wait_after(17), Some(m(120)));
        assert_eq!(s.wait_after(18), None);
        assert_eq!(s.receives(), 18);
        assert!(s.total() >= Duration::from_secs(24 * 3600));
        assert!(s.total() < Duration::from_secs(26 * 3600));
        // Receive count 0 (unknown) counts as the first.
        assert_eq!(s.wait_after(0), s.wait_after(1));
    }

    #[test]
    fn short_schedules_and_bad_ones() {
        let s = RetrySchedule::parse("1s, 2s", "1s").unwrap();
        assert_eq!(s.receives(), 3);
        assert_eq!(s.wait_after(2), Some(Duration::from_secs(2)));
        assert_eq!(s.wait_after(3), None);
        let s = RetrySchedule::parse("1m", "5m").unwrap();
        assert_eq!(s.receives(), 6);
        for (steps, total) in [
            ("", "1h"),
            ("0s", "1h"),
            ("13h", "1d"),
            // SQS's 12 h cannot be honoured once any time has passed since the receive.
            ("12h", "1d"),
            ("691m", "1d"),
            ("5x", "1h"),
            ("1m", "14d"),
            ("1m", "soon"),
        ] {
            assert!(
                RetrySchedule::parse(steps, total).is_err(),
                "{steps} / {total}"
            );
        }
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1d"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("h"), None);
        let longest = RetrySchedule::parse("690m", "1d").unwrap();
        assert_eq!(longest.wait_after(1), Some(MAX_STEP));
    }

    #[test]
    fn every_wait_fits_what_sqs_still_allows_since_the_receive() {
        let received = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let at = |s: u64| received + Duration::from_secs(s);
        assert_eq!(
            visibility_limit(received, at(0)),
            SQS_MAX_VISIBILITY - VISIBILITY_MARGIN
        );
        // Time passed since the receive comes off: asked 10 minutes in, 12 h less 16 minutes.
        assert_eq!(
            visibility_limit(received, at(600)),
            Duration::from_secs(12 * 3600 - 600 - 360)
        );
        // Any step of a schedule that parses is honoured in an invocation of up to 15 minutes.
        assert!(MAX_STEP <= visibility_limit(received, at(15 * 60)));
        assert_eq!(visibility_limit(received, at(13 * 3600)), Duration::ZERO);
    }
}
