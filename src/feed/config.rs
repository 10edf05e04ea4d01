//! The feeder function's configuration (docs/configuration.md).

use std::time::Duration;

use super::feeder::FeederSettings;
use super::{BreakerPolicy, CLAY_SUBMISSION_LIMIT, DEFAULT_RATE_PER_SECOND, FeedConfigError};
use crate::config::{ConfigError, Env, process_env};
use crate::delivery::http::HttpTimeouts;
use crate::delivery::retry::RetryPolicy;

pub const DEFAULT_FEEDER_MAX_CONCURRENCY: u32 = 2;
pub const DEFAULT_BREAKER_THRESHOLD: u32 = 5;
pub const DEFAULT_BREAKER_COOLDOWN_SECONDS: u64 = 300;
pub const DEFAULT_FEED_SENT_TTL_SECONDS: i64 = 14 * 86_400;

/// Everything the feeder function needs.
#[derive(Debug, Clone)]
pub struct FeederConfig {
    pub settings: FeederSettings,
    pub table: String,
    pub queue_url: Option<String>,
    pub dead_letter_url: Option<String>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

impl FeederConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::read(&process_env())
    }

    pub fn read<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let invalid = |var: &'static str| {
            move |e: FeedConfigError| ConfigError::Invalid {
                var,
                reason: e.to_string(),
            }
        };
        let tokens = env.list("CLAY_WEBHOOK_AUTH_TOKENS");
        if let Some(n) = tokens
            .iter()
            .position(|t| !t.is_empty() && t.len() < crate::auth::MIN_SECRET_BYTES)
        {
            return Err(ConfigError::Invalid {
                var: "CLAY_WEBHOOK_AUTH_TOKENS",
                reason: format!(
                    "token #{} is shorter than {} bytes: give the Clay webhook a long random token",
                    n + 1,
                    crate::auth::MIN_SECRET_BYTES
                ),
            });
        }
        let webhooks = super::webhooks(&env.list("CLAY_WEBHOOK_URLS"), &tokens)
            .map_err(invalid("CLAY_WEBHOOK_URLS"))?;
        let rate =
            super::rate(env.number("FEEDER_RATE_PER_SECOND", DEFAULT_RATE_PER_SECOND, |_| true)?)
                .map_err(invalid("FEEDER_RATE_PER_SECOND"))?;
        let concurrency = env.number(
            "FEEDER_MAX_CONCURRENCY",
            DEFAULT_FEEDER_MAX_CONCURRENCY,
            |v| *v > 0,
        )?;
        let budget = env.number("FEEDER_DAILY_BUDGET", 0u64, |_| true)?;
        let http = HttpTimeouts::read(env)?;
        Ok(FeederConfig {
            settings: FeederSettings {
                webhooks,
                limit: env.number("CLAY_SUBMISSION_LIMIT", CLAY_SUBMISSION_LIMIT, |v| *v > 0)?,
                rate_per_instance: rate / f64::from(concurrency),
                daily_budget: (budget > 0).then_some(budget),
                breaker: BreakerPolicy {
                    threshold: env.number(
                        "FEEDER_BREAKER_THRESHOLD",
                        DEFAULT_BREAKER_THRESHOLD,
                        |v| *v > 0,
                    )?,
                    cooldown: Duration::from_secs(env.number(
                        "FEEDER_BREAKER_COOLDOWN_SECONDS",
                        DEFAULT_BREAKER_COOLDOWN_SECONDS,
                        |v| *v > 0,
                    )?),
                },
                retry: RetryPolicy::read_attempts(env)?,
                sent_ttl_seconds: DEFAULT_FEED_SENT_TTL_SECONDS,
            },
            table: env.required("IDEMPOTENCY_TABLE")?,
            queue_url: env.url("FEEDER_QUEUE_URL")?,
            dead_letter_url: env.url("FEEDER_DLQ_URL")?,
            connect_timeout: http.connect,
            request_timeout: http.request,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feeder(vars: &[(&str, &str)]) -> Result<FeederConfig, ConfigError> {
        FeederConfig::read(&crate::config::env_of(vars))
    }

    #[test]
    fn feeder_settings() {
        let t = ("IDEMPOTENCY_TABLE", "t");
        let urls = (
            "CLAY_WEBHOOK_URLS",
            "https://api.clay.com/a, https://api.clay.com/b",
        );
        let c = feeder(&[t, urls]).unwrap();
        assert_eq!(c.settings.webhooks.len(), 2);
        assert_eq!(c.settings.limit, 50_000);
        assert_eq!(c.settings.rate_per_instance, 2.5);
        assert_eq!(c.settings.daily_budget, None);
        let e = feeder(&[t]).unwrap_err();
        assert!(e.to_string().contains("CLAY_WEBHOOK_URLS"), "{e}");
        let e = feeder(&[t, urls, ("FEEDER_RATE_PER_SECOND", "20")]).unwrap_err();
        assert!(e.to_string().contains("FEEDER_RATE_PER_SECOND"), "{e}");
        let three = (
            "CLAY_WEBHOOK_AUTH_TOKENS",
            "token-a-0123456789,token-b-0123456789,token-c-0123456789",
        );
        let e = feeder(&[t, urls, three]).unwrap_err();
        assert!(
            e.to_string().contains("3 auth tokens for 2 webhooks"),
            "{e}"
        );
        let c = feeder(&[
            t,
            urls,
            ("FEEDER_DAILY_BUDGET", "1000"),
            ("CLAY_WEBHOOK_AUTH_TOKENS", "sekrit-0123456789"),
            ("RETRY_MAX_ATTEMPTS", "2"),
        ])
        .unwrap();
        assert_eq!(c.settings.daily_budget, Some(1000));
        assert_eq!(c.settings.retry.max_attempts, 2);
        assert!(!format!("{c:?}").contains("sekrit"));
        let e = feeder(&[
            t,
            urls,
            ("CLAY_WEBHOOK_AUTH_TOKENS", "long-enough-0123456789, short"),
        ])
        .unwrap_err();
        assert!(
            e.to_string().contains("token #2 is shorter than 16 bytes"),
            "{e}"
        );
        assert!(!e.to_string().contains("short\""), "{e}");
    }
}
