//! One batch's view of the shared delivery control: each destination's state, read once at the
//! start of the batch and kept current by what every call returns, and the decisions the router
//! takes from it before and after each request (wait, probe, book a slot, count a failure).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tracing::{info, warn};

use crate::clock::epoch_ms;
use crate::delivery::control::config::ControlSettings;
use crate::delivery::control::{Booking, BreakerPolicy, ControlState, DeliveryControl, Gate, Held};
use crate::delivery::names::DestinationName;
use crate::delivery::retry::{Attempt, Class};
use crate::metrics::Metrics;

/// How long a 429 without `Retry-After` pauses its destination: long enough for a per-second
/// or per-10-second vendor window to pass, short beside the retry schedule.
pub const PAUSE_WITHOUT_RETRY_AFTER: Duration = Duration::from_secs(10);

/// Lateness below this never costs a new booking: at high rates an interval is shorter than
/// the booking write itself, and a few milliseconds of bunching is nothing to a per-second
/// vendor window.
const MIN_LATENESS_MS: i64 = 20;

/// A wait imposed on one destination: not before `until_ms`, because `held`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    pub until_ms: i64,
    pub held: Held,
}

/// Without a breaker, no count of failures ever opens one.
const NO_BREAKER: BreakerPolicy = BreakerPolicy {
    threshold: u32::MAX,
    cooldown: Duration::from_secs(1),
    max_cooldown: Duration::from_secs(1),
};

pub struct Gates<'a, C> {
    control: &'a C,
    settings: &'a ControlSettings,
    /// What is known of each destination; one missing could not be read, and is held.
    states: Mutex<HashMap<DestinationName, ControlState>>,
    /// The invocation's last moment to send: every call before a request ends by it, and the
    /// breaker's update after one by [`AFTER_SEND`] past it (the ledger's write gets the rest
    /// of the bookkeeping reserve).
    send_by: std::time::SystemTime,
}

/// The share of the bookkeeping reserve the breaker's update after a request may use.
pub const AFTER_SEND: Duration = Duration::from_secs(1);

fn late() -> crate::delivery::control::ControlError {
    crate::delivery::control::ControlError("no answer before the invocation's deadline".into())
}

/// How long a destination whose state could not be read waits before the next look.
pub const UNREAD_HOLD: Duration = Duration::from_secs(5);

fn now_ms() -> i64 {
    epoch_ms(std::time::SystemTime::now())
}

impl<'a, C: DeliveryControl> Gates<'a, C> {
    /// Reads the destinations' states (one request, and again for keys left unprocessed). A
    /// state that could not be read is unknown, never clean: that destination is held briefly
    /// (an open breaker read as closed would send into an outage).
    pub async fn load(
        control: &'a C,
        settings: &'a ControlSettings,
        destinations: &[DestinationName],
        send_by: std::time::SystemTime,
    ) -> Gates<'a, C> {
        let mut states = HashMap::new();
        if control.enabled() && settings.enabled() {
            let read = crate::clock::by(send_by, control.read(destinations))
                .await
                .unwrap_or_else(|| Err(late()));
            match read {
                Ok(read) => states.extend(read),
                Err(e) => {
                    warn!(error = %e, "could not read the delivery control; its destinations wait")
                }
            }
        }
        Gates {
            control,
            settings,
            states: Mutex::new(states),
            send_by,
        }
    }

    fn active(&self) -> bool {
        self.control.enabled() && self.settings.enabled()
    }

    fn policy(&self) -> &BreakerPolicy {
        self.settings.breaker.as_ref().unwrap_or(&NO_BREAKER)
    }

    fn state(&self, d: DestinationName) -> Option<ControlState> {
        self.states.lock().ok().and_then(|s| s.get(&d).copied())
    }

    fn keep(&self, d: DestinationName, state: ControlState) {
        if let Ok(mut s) = self.states.lock() {
            s.insert(d, state);
        }
    }

    /// What the last known state allows now.
    pub fn check(&self, d: DestinationName) -> Result<Gate, Hold> {
        if !self.active() {
            return Ok(Gate::Pass);
        }
        let now = now_ms();
        let Some(state) = self.state(d) else {
            return Err(Hold {
                until_ms: now + UNREAD_HOLD.as_millis() as i64,
                held: Held::Unread,
            });
        };
        match state.gate(self.policy(), now) {
            Gate::Wait { until_ms, held } => Err(self.bounded(Hold { until_ms, held }, now)),
            other => Ok(other),
        }
    }

    /// A pause comes from a destination's answer: never longer than `MAX_VENDOR_WAIT` from now,
    /// even one written before the bound (or by an instance with a longer one).
    fn bounded(&self, hold: Hold, now: i64) -> Hold {
        if hold.held != Held::Paused {
            return hold;
        }
        Hold {
            until_ms: hold
                .until_ms
                .min(now + self.settings.max_vendor_wait.as_millis() as i64),
            ..hold
        }
    }

    /// Half-open: takes the probe for `lease` (the one request it allows), or says what to wait
    /// for.
    pub async fn probe(&self, d: DestinationName, lease: Duration) -> Result<(), Hold> {
        let now = now_ms();
        let until = now + lease.as_millis() as i64;
        let taken = crate::clock::by(
            self.send_by,
            self.control.take_probe(d, self.policy(), now, until),
        )
        .await
        .unwrap_or_else(|| Err(late()));
        match taken {
            Ok(Ok(state)) => {
                self.keep(d, state);
                info!(destination = %d, "breaker half-open: this delivery is the probe");
                Ok(())
            }
            Ok(Err(found)) => {
                self.keep(d, found);
                match found.gate(self.policy(), now) {
                    Gate::Wait { until_ms, held } => {
                        Err(self.bounded(Hold { until_ms, held }, now))
                    }
                    // Closed since, or the probe lapsed between the read and the write: wait a
                    // moment rather than race for it again.
                    _ => Err(Hold {
                        until_ms: now + 1_000,
                        held: Held::Probing,
                    }),
                }
            }
            Err(e) => {
                warn!(destination = %d, error = %e, "could not take the probe; waiting for the cooldown");
                Err(Hold {
                    until_ms: now + self.policy().cooldown.as_millis() as i64,
                    held: Held::Probing,
                })
            }
        }
    }

    /// Books a slot under the destination's rate limit (if it has one) and sleeps until it,
    /// waiting at most `max_wait` (and the configured longest wait).
    pub async fn book(
        &self,
        d: DestinationName,
        max_wait: Duration,
        metrics: &Metrics,
    ) -> Result<(), Hold> {
        let Some(limit) = self.active().then(|| self.settings.limit(d)).flatten() else {
            return Ok(());
        };
        let max_wait = max_wait.min(self.settings.max_wait).as_millis() as i64;
        let mut tries = 0;
        let mut waited = Duration::ZERO;
        loop {
            tries += 1;
            let now = now_ms();
            let booking =
                crate::clock::by(self.send_by, self.control.book(d, limit, now, max_wait))
                    .await
                    .unwrap_or_else(|| Err(late()));
            let Ok(Booking::SendAt(at)) = booking else {
                return self.not_booked(d, booking, now);
            };
            // Measured from when the booking came back: a slow write must not push the
            // request past its slot. A slot missed by more than one interval (the write took
            // that long) is given up for a later one, so late requests never bunch together.
            let late = now_ms() - at;
            if late > limit.interval_ms().max(MIN_LATENESS_MS) && tries < 3 {
                continue;
            }
            let wait = Duration::from_millis((-late).max(0) as u64);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
                waited += wait;
            }
            if !waited.is_zero() {
                metrics.duration("RateLimitWait", waited, &[("Destination", d.as_str())]);
            }
            return Ok(());
        }
    }

    fn not_booked(
        &self,
        d: DestinationName,
        booking: Result<Booking, crate::delivery::control::ControlError>,
        now: i64,
    ) -> Result<(), Hold> {
        match booking {
            Ok(Booking::SendAt(_)) => Ok(()),
            Ok(Booking::TooFar { until_ms }) => Err(Hold {
                until_ms,
                held: Held::RateLimited,
            }),
            Err(e) => {
                // Sending unbooked could break the limit; waiting a little costs only latency.
                warn!(destination = %d, error = %e, "could not book a rate-limit slot");
                Err(Hold {
                    until_ms: now + 1_000,
                    held: Held::RateLimited,
                })
            }
        }
    }

    /// After a request: a success closes the breaker, a 429 with `Retry-After` pauses the
    /// destination for everyone, another transient failure counts towards opening it.
    pub async fn after(
        &self,
        d: DestinationName,
        attempt: &Attempt,
        class: &Class,
        metrics: &Metrics,
    ) {
        if !self.active() {
            return;
        }
        let now = now_ms();
        let dims = [("Destination", d.as_str())];
        let update = async {
            match (attempt, class) {
                (_, Class::Success) => {
                    if self.state(d).is_some_and(|s| s.is_clean()) {
                        return None;
                    }
                    Some(self.control.succeeded(d, now).await.inspect(|s| {
                        if s.is_clean() {
                            info!(destination = %d, "breaker closed");
                        }
                    }))
                }
                // A 429 says "slower", not "down": it pauses, never counts toward the breaker.
                (Attempt::Status { status: 429, .. }, Class::Transient { not_before }) => {
                    let wait = not_before
                        .unwrap_or(PAUSE_WITHOUT_RETRY_AFTER)
                        .min(self.settings.max_vendor_wait);
                    let until = now + wait.as_millis() as i64;
                    metrics.count("Paused", &dims);
                    warn!(destination = %d, wait_ms = wait.as_millis() as u64, "429: the destination is paused for every router");
                    Some(self.control.pause(d, until).await)
                }
                (_, Class::Transient { .. }) if self.settings.breaker.is_some() => {
                    let counted = self.control.failed(d, self.policy(), now).await;
                    if let Ok((state, true)) = &counted {
                        metrics.count("BreakerOpened", &dims);
                        warn!(
                            destination = %d,
                            failures = state.failures,
                            cooldown_s = (state.open_until_ms - now) / 1000,
                            "circuit breaker opened"
                        );
                    }
                    Some(counted.map(|(state, _)| state))
                }
                _ => None,
            }
        };
        // The ledger's write after this one needs the rest of the reserve.
        let result = match crate::clock::by(self.send_by + AFTER_SEND, update).await {
            None => Err(late()),
            Some(None) => return,
            Some(Some(result)) => result,
        };
        match result {
            Ok(state) => self.keep(d, state),
            Err(e) => warn!(destination = %d, error = %e, "could not update the delivery control"),
        }
    }
}
