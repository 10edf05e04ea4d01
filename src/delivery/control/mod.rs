//! Delivery control per destination, shared by every router instance through one table item per
//! destination (`delivery#control#<dest>`):
//!
//! - a **circuit breaker**: `threshold` consecutive failures open it for a cooldown (doubling on
//!   each reopening, up to a ceiling); then it half-opens, and exactly one instance takes the
//!   probe; the probe's success closes it, its failure reopens it;
//! - a **rate limit** (GCRA: one "theoretical arrival time", `tat`, per destination): each
//!   request books the next slot with one conditional write, and waits for it when it is near;
//! - a **pause**: a 429 with `Retry-After` holds the destination for every instance.
//!
//! What is here is pure: the state, the decisions and the arithmetic. [`dynamodb`] keeps the
//! state with conditional updates, so no instance undoes another's transition.

pub mod config;
pub mod dynamodb;

use std::future::Future;
use std::time::Duration;

use crate::delivery::names::DestinationName;

/// When a breaker opens and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive failed deliveries (transient: 5xx, timeouts, connection errors) that open it.
    pub threshold: u32,
    /// The first opening's length; each reopening after a failed probe doubles it...
    pub cooldown: Duration,
    /// ...up to this.
    pub max_cooldown: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            threshold: 5,
            cooldown: Duration::from_secs(30),
            max_cooldown: Duration::from_secs(600),
        }
    }
}

impl BreakerPolicy {
    /// The length of the `opens`-th consecutive opening (1-based).
    pub fn cooldown_for(&self, opens: u32) -> Duration {
        let doubled = self
            .cooldown
            .saturating_mul(2u32.saturating_pow(opens.saturating_sub(1).min(20)));
        doubled.min(self.max_cooldown.max(self.cooldown))
    }
}

/// `count` requests per `per`, up to `burst` at once after a quiet spell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub count: u32,
    pub per: Duration,
    pub burst: u32,
}

impl RateLimit {
    /// Milliseconds between two requests at the sustained rate (at least 1), rounded up so the
    /// pace never runs above the limit (`3/s` is one every 334 ms, not 333).
    pub fn interval_ms(&self) -> i64 {
        let per = self.per.as_millis() as i64;
        (per.div_euclid(i64::from(self.count.max(1)))
            + i64::from(per % i64::from(self.count.max(1)) != 0))
        .max(1)
    }

    /// How far ahead of the sustained rate a burst may run (GCRA's tolerance).
    pub fn tolerance_ms(&self) -> i64 {
        i64::from(self.burst.max(1) - 1) * self.interval_ms()
    }

    /// Requests per second, for logs and docs.
    pub fn per_second(&self) -> f64 {
        f64::from(self.count) / self.per.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

/// One destination's shared state, as read from its item (all times epoch ms; 0 = never).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ControlState {
    /// Consecutive transient failures.
    pub failures: u32,
    /// Consecutive openings (reset when a delivery succeeds): the cooldown doubles with them.
    pub opens: u32,
    pub open_until_ms: i64,
    /// While in the future, one instance's probe is out: the others wait for it.
    pub probe_until_ms: i64,
    /// A 429's `Retry-After`: nothing is sent before this.
    pub paused_until_ms: i64,
    /// The rate limit's theoretical arrival time.
    pub tat_ms: i64,
}

/// Why a destination's delivery waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// The breaker is open.
    Open,
    /// Half-open, and another instance's probe is out.
    Probing,
    /// A 429 asked every instance to wait.
    Paused,
    /// The rate limit's next free slot is further off than this invocation can wait.
    RateLimited,
    /// Its state could not be read (throttled, unprocessed, unreachable): unknown is not
    /// clean, so the destination waits a moment rather than risk an open breaker.
    Unread,
}

impl Held {
    pub fn as_str(self) -> &'static str {
        match self {
            Held::Open => "breaker_open",
            Held::Probing => "breaker_probing",
            Held::Paused => "paused",
            Held::RateLimited => "rate_limited",
            Held::Unread => "control_unread",
        }
    }
}

/// What a delivery may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Send.
    Pass,
    /// Half-open: send only after taking the probe ([`DeliveryControl::take_probe`]).
    Probe,
    /// Do not send before `until_ms`.
    Wait { until_ms: i64, held: Held },
}

impl ControlState {
    pub fn gate(&self, policy: &BreakerPolicy, now_ms: i64) -> Gate {
        if self.open_until_ms > now_ms {
            return Gate::Wait {
                until_ms: self.open_until_ms,
                held: Held::Open,
            };
        }
        if self.paused_until_ms > now_ms {
            return Gate::Wait {
                until_ms: self.paused_until_ms,
                held: Held::Paused,
            };
        }
        if self.failures >= policy.threshold.max(1) {
            if self.probe_until_ms > now_ms {
                return Gate::Wait {
                    until_ms: self.probe_until_ms,
                    held: Held::Probing,
                };
            }
            return Gate::Probe;
        }
        Gate::Pass
    }

    /// Whether a failure that left this state should open the breaker (it is not open now).
    pub fn should_open(&self, policy: &BreakerPolicy, now_ms: i64) -> bool {
        self.failures >= policy.threshold.max(1) && self.open_until_ms <= now_ms
    }

    /// Whether a success has anything to reset.
    pub fn is_clean(&self) -> bool {
        self.failures == 0 && self.opens == 0
    }
}

/// A rate-limit booking: when to send, or (not booked) from when a booking could be near enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Booking {
    /// Booked: send at this time (now or later).
    SendAt(i64),
    /// Not booked: the next slot is more than the allowed wait away; it is near from `until_ms`.
    TooFar { until_ms: i64 },
}

/// GCRA, as the table adapter carries it out: a request arriving at `now` with the arrival time
/// at `tat` is sent at `max(tat, now) - tolerance` (now, when that is past) and moves `tat` one
/// interval on; when that send time is more than `max_wait_ms` away, nothing is booked.
/// Returns the booking and the new `tat` (unchanged when not booked).
pub fn book(tat_ms: i64, limit: &RateLimit, now_ms: i64, max_wait_ms: i64) -> (Booking, i64) {
    let slot = tat_ms.max(now_ms);
    let send_at = (slot - limit.tolerance_ms()).max(now_ms);
    if send_at - now_ms > max_wait_ms {
        return (
            Booking::TooFar {
                until_ms: send_at - max_wait_ms,
            },
            tat_ms,
        );
    }
    (Booking::SendAt(send_at), slot + limit.interval_ms())
}

#[derive(Debug, thiserror::Error)]
#[error("delivery control unavailable: {0}")]
pub struct ControlError(pub String);

/// The shared state's store. Every method is one conditional write (or one read for many
/// destinations), and returns the state it left or found, so the caller's copy stays current.
pub trait DeliveryControl: Send + Sync {
    /// Whether there is anything to control (false: every call is skipped).
    fn enabled(&self) -> bool;
    /// The destinations' states, in one read (at the start of a batch). A destination left out
    /// could not be read: its state is unknown.
    fn read(
        &self,
        destinations: &[DestinationName],
    ) -> impl Future<Output = Result<Vec<(DestinationName, ControlState)>, ControlError>> + Send;
    /// Counts a failure; opens the breaker when it reaches the threshold and is not open.
    /// `true` with the state when this call opened it.
    fn failed(
        &self,
        destination: DestinationName,
        policy: &BreakerPolicy,
        now_ms: i64,
    ) -> impl Future<Output = Result<(ControlState, bool), ControlError>> + Send;
    /// A delivery succeeded: closes the breaker (unless another instance opened it since).
    fn succeeded(
        &self,
        destination: DestinationName,
        now_ms: i64,
    ) -> impl Future<Output = Result<ControlState, ControlError>> + Send;
    /// Half-open: takes the probe until `until_ms`. `Ok(None)` when another instance has it
    /// (or the state changed); the state then says what to wait for.
    fn take_probe(
        &self,
        destination: DestinationName,
        policy: &BreakerPolicy,
        now_ms: i64,
        until_ms: i64,
    ) -> impl Future<Output = Result<Result<ControlState, ControlState>, ControlError>> + Send;
    /// Holds the destination for every instance until `until_ms` (never shortens a pause).
    fn pause(
        &self,
        destination: DestinationName,
        until_ms: i64,
    ) -> impl Future<Output = Result<ControlState, ControlError>> + Send;
    /// Books a slot under `limit` (see [`book`]).
    fn book(
        &self,
        destination: DestinationName,
        limit: &RateLimit,
        now_ms: i64,
        max_wait_ms: i64,
    ) -> impl Future<Output = Result<Booking, ControlError>> + Send;
}

/// No shared control: every destination always passes (tests, and routers built without it).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoControl;

impl DeliveryControl for NoControl {
    fn enabled(&self) -> bool {
        false
    }
    async fn read(
        &self,
        _: &[DestinationName],
    ) -> Result<Vec<(DestinationName, ControlState)>, ControlError> {
        Ok(Vec::new())
    }
    async fn failed(
        &self,
        _: DestinationName,
        _: &BreakerPolicy,
        _: i64,
    ) -> Result<(ControlState, bool), ControlError> {
        Ok((ControlState::default(), false))
    }
    async fn succeeded(&self, _: DestinationName, _: i64) -> Result<ControlState, ControlError> {
        Ok(ControlState::default())
    }
    async fn take_probe(
        &self,
        _: DestinationName,
        _: &BreakerPolicy,
        _: i64,
        _: i64,
    ) -> Result<Result<ControlState, ControlState>, ControlError> {
        Ok(Ok(ControlState::default()))
    }
    async fn pause(&self, _: DestinationName, _: i64) -> Result<ControlState, ControlError> {
        Ok(ControlState::default())
    }
    async fn book(
        &self,
        _: DestinationName,
        _: &RateLimit,
        now_ms: i64,
        _: i64,
    ) -> Result<Booking, ControlError> {
        Ok(Booking::SendAt(now_ms))
    }
}

#[cfg(test)]
mod tests;
