//! The router's delivery-control settings (docs/configuration.md): the breaker's policy and each
//! destination's rate limit, with defaults from the vendors' published limits
//! (docs/delivery-control.md says where each comes from).

use std::time::Duration;

use super::{BreakerPolicy, RateLimit};
use crate::config::{ConfigError, Env};
use crate::delivery::names::DestinationName;
use crate::delivery::schedule::parse_duration;

/// HubSpot allows 100 requests per 10 s on its lowest tiers: 9/s with a burst of 10 never puts
/// more than 100 in any 10 s. Slack's incoming webhooks take about one message a second. A
/// Zapier hook answers 429 past about 30 requests a second.
pub const DEFAULT_RATE_LIMITS: &str = "crm=9/s:10,slack=1/s,zapier=25/s:5";
/// Longest an invocation waits in line for a booked slot before the record waits on the queue.
pub const DEFAULT_RATE_LIMIT_MAX_WAIT: &str = "5s";
/// `MAX_VENDOR_WAIT`: the longest a destination's own answer (`Retry-After`, as seconds or a
/// date) may hold it back. A misconfigured or hostile endpoint asking for a year gets this.
pub const DEFAULT_MAX_VENDOR_WAIT: &str = "1h";

#[derive(Debug, Clone, PartialEq)]
pub struct ControlSettings {
    /// `None`: no breaker (`BREAKER_THRESHOLD=0`).
    pub breaker: Option<BreakerPolicy>,
    pub limits: Vec<(DestinationName, RateLimit)>,
    pub max_wait: Duration,
    /// The longest wait a destination's answer may impose (`MAX_VENDOR_WAIT`): a `Retry-After`
    /// or a pause asking for more is cut to this.
    pub max_vendor_wait: Duration,
}

impl Default for ControlSettings {
    fn default() -> Self {
        ControlSettings {
            breaker: None,
            limits: Vec::new(),
            max_wait: Duration::from_secs(5),
            max_vendor_wait: Duration::from_secs(3600),
        }
    }
}

impl ControlSettings {
    pub fn limit(&self, d: DestinationName) -> Option<&RateLimit> {
        self.limits.iter().find(|(n, _)| *n == d).map(|(_, l)| l)
    }

    /// Whether the router needs the shared state at all.
    pub fn enabled(&self) -> bool {
        self.breaker.is_some() || !self.limits.is_empty()
    }

    pub fn read<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let duration = |var: &'static str, default: &str| {
            let text = env.optional(var).unwrap_or_else(|| default.to_string());
            parse_duration(&text)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| ConfigError::Invalid {
                    var,
                    reason: format!("{text:?} is not a duration above zero (like 30s, 10m)"),
                })
        };
        let defaults = BreakerPolicy::default();
        let threshold = env.number("BREAKER_THRESHOLD", defaults.threshold, |_| true)?;
        let breaker = (threshold > 0).then_some(BreakerPolicy {
            threshold,
            cooldown: duration("BREAKER_COOLDOWN", "30s")?,
            max_cooldown: duration("BREAKER_MAX_COOLDOWN", "10m")?,
        });
        let mut limits =
            parse_rate_limits(DEFAULT_RATE_LIMITS).map_err(|reason| ConfigError::Invalid {
                var: "DESTINATION_RATE_LIMITS",
                reason,
            })?;
        if let Some(text) = env.optional("DESTINATION_RATE_LIMITS") {
            let given =
                parse_rate_limits_with_off(&text).map_err(|reason| ConfigError::Invalid {
                    var: "DESTINATION_RATE_LIMITS",
                    reason,
                })?;
            for (name, limit) in given {
                limits.retain(|(n, _)| *n != name);
                if let Some(l) = limit {
                    limits.push((name, l));
                }
            }
        }
        limits.sort_by_key(|(n, _)| *n);
        Ok(ControlSettings {
            breaker,
            limits,
            max_wait: duration("RATE_LIMIT_MAX_WAIT", DEFAULT_RATE_LIMIT_MAX_WAIT)?,
            max_vendor_wait: {
                let wait = duration("MAX_VENDOR_WAIT", DEFAULT_MAX_VENDOR_WAIT)?;
                if wait > crate::delivery::schedule::MAX_STEP {
                    return Err(ConfigError::Invalid {
                        var: "MAX_VENDOR_WAIT",
                        reason: "at most 690m (11h30m): a longer wait could not be held on the \
                                 queue"
                            .into(),
                    });
                }
                wait
            },
        })
    }
}

fn parse_rate_limits(text: &str) -> Result<Vec<(DestinationName, RateLimit)>, String> {
    Ok(parse_rate_limits_with_off(text)?
        .into_iter()
        .filter_map(|(n, l)| l.map(|l| (n, l)))
        .collect())
}

/// `crm=90/10s:10, slack=1/s, zapier=off`: per destination, a count per period (`s`, `m`, `h`
/// or a duration like `10s`), optionally `:burst` (default 1); `off` removes a default.
pub fn parse_rate_limits_with_off(
    text: &str,
) -> Result<Vec<(DestinationName, Option<RateLimit>)>, String> {
    let mut out = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, spec) = entry
            .split_once('=')
            .ok_or_else(|| format!("{entry:?}: expected destination=count/period"))?;
        let name = DestinationName::ALL
            .into_iter()
            .find(|d| d.as_str() == name.trim())
            .ok_or_else(|| format!("{:?} is not a destination", name.trim()))?;
        let spec = spec.trim();
        if spec == "off" {
            out.push((name, None));
            continue;
        }
        let (rate, burst) = match spec.split_once(':') {
            Some((r, b)) => (
                r,
                b.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|b| *b > 0)
                    .ok_or_else(|| {
                        format!("{entry:?}: the burst must be a whole number above 0")
                    })?,
            ),
            None => (spec, 1),
        };
        let (count, per) = rate
            .split_once('/')
            .ok_or_else(|| format!("{entry:?}: expected count/period, like 1/s or 90/10s"))?;
        let count = count
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|c| *c > 0)
            .ok_or_else(|| format!("{entry:?}: the count must be a whole number above 0"))?;
        let per = per.trim();
        let per = if per.starts_with(|c: char| c.is_ascii_digit()) {
            parse_duration(per)
        } else {
            parse_duration(&format!("1{per}"))
        }
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{entry:?}: the period must be like s, m, h or 10s"))?;
        // Slots are whole milliseconds apart: a faster rate would silently become 1000/s.
        if per.as_millis() < u128::from(count) {
            return Err(format!(
                "{entry:?}: more than 1000 requests per second cannot be paced (slots are whole \
                 milliseconds apart); use at most 1000/s, or off"
            ));
        }
        // Nor may the whole-millisecond rounding slow it silently: at most 1% under the rate.
        let exact_us = per.as_micros() as f64 / f64::from(count);
        let slot_ms = (exact_us / 1000.0).ceil();
        if slot_ms * 1000.0 > exact_us * 1.01 {
            return Err(format!(
                "{entry:?}: slots a whole number of milliseconds apart would pace it at {:.0}/s, \
                 more than 1% under; choose a rate whose interval is near whole milliseconds \
                 (like 500/s or 1000/s)",
                1000.0 / slot_ms
            ));
        }
        if out.iter().any(|(n, _)| *n == name) {
            return Err(format!("{name} is listed twice"));
        }
        out.push((name, Some(RateLimit { count, per, burst })));
    }
    Ok(out)
}
