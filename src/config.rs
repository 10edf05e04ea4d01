//! Configuration, read once at start from environment variables. Every variable and its default
//! is listed in docs/configuration.md; a bad value stops the function with a message naming the variable.

use std::time::Duration;

use crate::auth::{DEFAULT_TOLERANCE_SECONDS, Secrets, SecretsError};
use crate::delivery::retry::RetryPolicy;
use crate::destinations::hubspot::{DEFAULT_BASE_URL, DEFAULT_UPSERT_PATH, HubSpot};
use crate::destinations::slack::Slack;
use crate::destinations::webhook::{SigningKey, Webhook};
use crate::destinations::{Crm, DestinationSettings};
use crate::feed::BreakerPolicy;
use crate::feed::feeder::FeederSettings;
use crate::idempotency::{KeySpec, KeySpecError};
use crate::ingest::IngestSettings;
use crate::router::RouterSettings;
use crate::router::rules::{RulesError, default_rules, parse_rules};

/// SQS's maximum message size (and its Lambda event source mapping's) since 2025.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_048_576;
/// Bodies as large as the queue takes; whether the envelope fits is checked on its own (413).
pub const DEFAULT_MAX_BODY_BYTES: usize = DEFAULT_MAX_MESSAGE_BYTES;
pub const DEFAULT_TTL_SECONDS: i64 = 86_400;
pub const DEFAULT_IN_PROGRESS_MS: u64 = 30_000;
/// How long start-up may spend opening connections to DynamoDB and SQS (`WARM_UP_TIMEOUT_MS`).
pub const DEFAULT_WARM_UP_MS: u64 = 300;
pub const DEFAULT_ROUTER_CONCURRENCY: usize = 10;
pub const DEFAULT_HTTP_CONNECT_TIMEOUT_MS: u64 = 2_000;
pub const DEFAULT_HTTP_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_DELIVERY_TTL_SECONDS: i64 = 30 * 86_400;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{var} is invalid: {reason}")]
    Invalid { var: &'static str, reason: String },
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(transparent)]
    Key(#[from] KeySpecError),
    #[error(transparent)]
    Rules(#[from] RulesError),
}

/// Everything the ingest function needs.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub settings: IngestSettings,
    pub table: String,
    pub queue_url: String,
    /// 0 turns the warm-up off.
    pub warm_up: Duration,
}

/// Reads variables through `lookup`, so tests need not touch the process environment.
pub struct Env<F: Fn(&str) -> Option<String>>(pub F);

impl<F: Fn(&str) -> Option<String>> Env<F> {
    fn get(&self, var: &'static str) -> Option<String> {
        (self.0)(var).filter(|v| !v.trim().is_empty())
    }

    pub fn optional(&self, var: &'static str) -> Option<String> {
        self.get(var).map(|v| v.trim().to_string())
    }

    /// An http(s) URL, when set.
    pub fn url(&self, var: &'static str) -> Result<Option<String>, ConfigError> {
        match self.optional(var) {
            None => Ok(None),
            Some(u) if crate::clock::is_http_url(&u) => Ok(Some(u)),
            Some(_) => Err(ConfigError::Invalid {
                var,
                reason: "expected an http(s) URL".into(),
            }),
        }
    }

    pub fn required(&self, var: &'static str) -> Result<String, ConfigError> {
        self.get(var).ok_or(ConfigError::Missing(var))
    }

    pub fn number<T: std::str::FromStr>(
        &self,
        var: &'static str,
        default: T,
        valid: impl Fn(&T) -> bool,
    ) -> Result<T, ConfigError> {
        let Some(text) = self.get(var) else {
            return Ok(default);
        };
        match text.trim().parse::<T>() {
            Ok(v) if valid(&v) => Ok(v),
            _ => Err(ConfigError::Invalid {
                var,
                reason: format!("expected a positive number, got {:?}", text.trim()),
            }),
        }
    }
}

fn warm_up<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Duration, ConfigError> {
    Ok(Duration::from_millis(env.number(
        "WARM_UP_TIMEOUT_MS",
        DEFAULT_WARM_UP_MS,
        |_| true,
    )?))
}

pub fn process_env() -> Env<impl Fn(&str) -> Option<String>> {
    Env(|k: &str| std::env::var(k).ok())
}

impl IngestConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::read(&process_env())
    }

    pub fn read<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        // Secrets first: without one the function must not start, whatever else is wrong.
        let secrets = Secrets::parse(&(env.0)("CLAY_WEBHOOK_SECRETS").unwrap_or_default())?;
        let key_spec = match env.get("IDEMPOTENCY_KEY") {
            Some(text) => KeySpec::parse(&text)?,
            None => KeySpec::Body,
        };
        let settings = IngestSettings {
            secrets,
            key_spec,
            ttl_seconds: env.number("IDEMPOTENCY_TTL_SECONDS", DEFAULT_TTL_SECONDS, |v| *v > 0)?,
            max_body_bytes: env.number("MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, |v| *v > 0)?,
            max_message_bytes: env.number("MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES, |v| {
                (1_024..=DEFAULT_MAX_MESSAGE_BYTES).contains(v)
            })?,
            tolerance_seconds: env.number(
                "SIGNATURE_TOLERANCE_SECONDS",
                DEFAULT_TOLERANCE_SECONDS,
                |v| *v > 0,
            )?,
            default_in_progress: Duration::from_millis(env.number(
                "IN_PROGRESS_DEFAULT_MS",
                DEFAULT_IN_PROGRESS_MS,
                |v| *v > 0,
            )?),
        };
        Ok(IngestConfig {
            settings,
            table: env.required("IDEMPOTENCY_TABLE")?,
            queue_url: env.required("LEAD_QUEUE_URL")?,
            warm_up: warm_up(env)?,
        })
    }
}

/// Everything the router function needs.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    pub settings: RouterSettings,
    pub table: String,
    pub destinations: DestinationSettings,
    pub connect_timeout: Duration,
    /// 0 turns the warm-up off.
    pub warm_up: Duration,
}

impl RouterConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::read(&process_env())
    }

    pub fn read<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let rules = match env.optional("ROUTING_RULES") {
            Some(text) => parse_rules(&text)?,
            None => default_rules(),
        };
        let signing = match env.optional("OUTBOUND_SIGNING_SECRET") {
            None => None,
            Some(s) => Some(SigningKey::parse(&s).ok_or(ConfigError::Invalid {
                var: "OUTBOUND_SIGNING_SECRET",
                reason: "expected whsec_ followed by base64".into(),
            })?),
        };
        let webhook = |var| -> Result<Option<Webhook>, ConfigError> {
            Ok(env.url(var)?.map(|u| Webhook::new(u, signing.clone())))
        };
        let crm = match env.optional("HUBSPOT_ACCESS_TOKEN") {
            Some(token) => Some(Crm::HubSpot(HubSpot::new(
                &env.url("HUBSPOT_BASE_URL")?
                    .unwrap_or_else(|| DEFAULT_BASE_URL.to_string()),
                &env.optional("HUBSPOT_UPSERT_PATH")
                    .unwrap_or_else(|| DEFAULT_UPSERT_PATH.to_string()),
                token,
                env.optional("HUBSPOT_SCORE_PROPERTY"),
            ))),
            None => webhook("CRM_WEBHOOK_URL")?.map(Crm::Webhook),
        };
        let destinations = DestinationSettings {
            crm,
            outreach: webhook("OUTREACH_WEBHOOK_URL")?,
            nurture: webhook("NURTURE_WEBHOOK_URL")?,
            slack: env.url("SLACK_WEBHOOK_URL")?.map(Slack::new),
            zapier: webhook("ZAPIER_WEBHOOK_URL")?,
        };
        let defaults = RetryPolicy::default();
        let retry = RetryPolicy {
            max_attempts: env.number("RETRY_MAX_ATTEMPTS", defaults.max_attempts, |v| *v > 0)?,
            base: Duration::from_millis(env.number(
                "RETRY_BASE_MS",
                defaults.base.as_millis() as u64,
                |v| *v > 0,
            )?),
            cap: Duration::from_millis(env.number(
                "RETRY_CAP_MS",
                defaults.cap.as_millis() as u64,
                |v| *v > 0,
            )?),
            safety_margin: defaults.safety_margin,
        };
        Ok(RouterConfig {
            settings: RouterSettings {
                rules,
                concurrency: env
                    .number("ROUTER_CONCURRENCY", DEFAULT_ROUTER_CONCURRENCY, |v| *v > 0)?,
                retry,
                request_timeout: Duration::from_millis(env.number(
                    "HTTP_TIMEOUT_MS",
                    DEFAULT_HTTP_TIMEOUT_MS,
                    |v| *v > 0,
                )?),
                delivery_ttl_seconds: env.number(
                    "DELIVERY_TTL_SECONDS",
                    DEFAULT_DELIVERY_TTL_SECONDS,
                    |v| *v > 0,
                )?,
                max_receive_count: match env.number("MAX_RECEIVE_COUNT", 0u32, |_| true)? {
                    0 => None,
                    n => Some(n),
                },
            },
            table: env.required("IDEMPOTENCY_TABLE")?,
            destinations,
            connect_timeout: Duration::from_millis(env.number(
                "HTTP_CONNECT_TIMEOUT_MS",
                DEFAULT_HTTP_CONNECT_TIMEOUT_MS,
                |v| *v > 0,
            )?),
            warm_up: warm_up(env)?,
        })
    }
}

/// Everything the feeder function needs.
#[derive(Debug, Clone)]
pub struct FeederConfig {
    pub settings: FeederSettings,
    pub table: String,
    pub queue_url: Option<String>,
    pub dead_letter_url: Option<String>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// 0 turns the warm-up off.
    pub warm_up: Duration,
}

pub const DEFAULT_FEEDER_MAX_CONCURRENCY: u32 = 2;
pub const DEFAULT_BREAKER_THRESHOLD: u32 = 5;
pub const DEFAULT_BREAKER_COOLDOWN_SECONDS: u64 = 300;
pub const DEFAULT_FEED_SENT_TTL_SECONDS: i64 = 14 * 86_400;

fn list<F: Fn(&str) -> Option<String>>(env: &Env<F>, var: &'static str) -> Vec<String> {
    env.optional(var)
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default()
}

impl FeederConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::read(&process_env())
    }

    pub fn read<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let invalid = |var: &'static str| {
            move |e: crate::feed::FeedConfigError| ConfigError::Invalid {
                var,
                reason: e.to_string(),
            }
        };
        let webhooks = crate::feed::webhooks(
            &list(env, "CLAY_WEBHOOK_URLS"),
            &list(env, "CLAY_WEBHOOK_AUTH_TOKENS"),
        )
        .map_err(invalid("CLAY_WEBHOOK_URLS"))?;
        let rate = crate::feed::rate(env.number(
            "FEEDER_RATE_PER_SECOND",
            crate::feed::DEFAULT_RATE_PER_SECOND,
            |_| true,
        )?)
        .map_err(invalid("FEEDER_RATE_PER_SECOND"))?;
        let concurrency = env.number(
            "FEEDER_MAX_CONCURRENCY",
            DEFAULT_FEEDER_MAX_CONCURRENCY,
            |v| *v > 0,
        )?;
        let budget = env.number("FEEDER_DAILY_BUDGET", 0u64, |_| true)?;
        let defaults = RetryPolicy::default();
        Ok(FeederConfig {
            settings: FeederSettings {
                webhooks,
                limit: env.number(
                    "CLAY_SUBMISSION_LIMIT",
                    crate::feed::CLAY_SUBMISSION_LIMIT,
                    |v| *v > 0,
                )?,
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
                retry: RetryPolicy {
                    max_attempts: env
                        .number("RETRY_MAX_ATTEMPTS", defaults.max_attempts, |v| *v > 0)?,
                    ..defaults
                },
                sent_ttl_seconds: DEFAULT_FEED_SENT_TTL_SECONDS,
            },
            table: env.required("IDEMPOTENCY_TABLE")?,
            queue_url: env.url("FEEDER_QUEUE_URL")?,
            dead_letter_url: env.url("FEEDER_DLQ_URL")?,
            connect_timeout: Duration::from_millis(env.number(
                "HTTP_CONNECT_TIMEOUT_MS",
                DEFAULT_HTTP_CONNECT_TIMEOUT_MS,
                |v| *v > 0,
            )?),
            request_timeout: Duration::from_millis(env.number(
                "HTTP_TIMEOUT_MS",
                DEFAULT_HTTP_TIMEOUT_MS,
                |v| *v > 0,
            )?),
            warm_up: warm_up(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read(vars: &[(&str, &str)]) -> Result<IngestConfig, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        IngestConfig::read(&Env(move |k: &str| map.get(k).cloned()))
    }

    const BASE: [(&str, &str); 3] = [
        ("CLAY_WEBHOOK_SECRETS", "tok"),
        ("IDEMPOTENCY_TABLE", "t"),
        ("LEAD_QUEUE_URL", "http://q"),
    ];

    #[test]
    fn defaults() {
        let c = read(&BASE).unwrap();
        assert_eq!(c.settings.max_body_bytes, 1_048_576);
        assert_eq!(c.settings.max_message_bytes, 1_048_576);
        assert_eq!(c.settings.ttl_seconds, 86_400);
        assert_eq!(c.settings.tolerance_seconds, 300);
        assert_eq!(c.settings.key_spec, KeySpec::Body);
    }

    #[test]
    fn no_secret_refuses_to_start() {
        let err = read(&BASE[1..]).unwrap_err();
        assert!(err.to_string().contains("CLAY_WEBHOOK_SECRETS"), "{err}");
        let err = read(&[("CLAY_WEBHOOK_SECRETS", " , ")]).unwrap_err();
        assert!(matches!(err, ConfigError::Secrets(SecretsError::Empty)));
    }

    fn router(vars: &[(&str, &str)]) -> Result<RouterConfig, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        RouterConfig::read(&Env(move |k: &str| map.get(k).cloned()))
    }

    #[test]
    fn router_needs_only_the_table() {
        let c = router(&[("IDEMPOTENCY_TABLE", "t")]).unwrap();
        assert_eq!(c.settings.concurrency, 10);
        assert_eq!(c.settings.rules, default_rules());
        let shown = format!("{:?}", c.destinations);
        assert!(shown.contains("crm: \"none\""), "{shown}");
        assert!(
            router(&[])
                .unwrap_err()
                .to_string()
                .contains("IDEMPOTENCY_TABLE")
        );
    }

    #[test]
    fn router_settings_are_checked_at_start() {
        let t = ("IDEMPOTENCY_TABLE", "t");
        let e = router(&[t, ("ROUTING_RULES", r#"[{"destinations":["fax"]}]"#)]).unwrap_err();
        assert!(
            e.to_string()
                .contains("ROUTING_RULES is invalid at [0].destinations[0]"),
            "{e}"
        );
        let e = router(&[t, ("SLACK_WEBHOOK_URL", "hooks.slack.com/x")]).unwrap_err();
        assert!(e.to_string().contains("SLACK_WEBHOOK_URL"), "{e}");
        let e = router(&[t, ("OUTBOUND_SIGNING_SECRET", "plain")]).unwrap_err();
        assert!(e.to_string().contains("OUTBOUND_SIGNING_SECRET"), "{e}");
        let c = router(&[
            t,
            ("HUBSPOT_ACCESS_TOKEN", "pat-secret"),
            ("CRM_WEBHOOK_URL", "http://x"),
        ])
        .unwrap();
        let shown = format!("{c:?}");
        assert!(
            shown.contains("hubspot") && !shown.contains("pat-secret"),
            "{shown}"
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        let mut vars = BASE.to_vec();
        vars.push(("MAX_BODY_BYTES", "lots"));
        assert!(
            read(&vars)
                .unwrap_err()
                .to_string()
                .contains("MAX_BODY_BYTES")
        );
        let mut vars = BASE.to_vec();
        vars.push(("IDEMPOTENCY_KEY", "cookie:x"));
        assert!(
            read(&vars)
                .unwrap_err()
                .to_string()
                .contains("IDEMPOTENCY_KEY")
        );
        assert!(
            read(&BASE[..2])
                .unwrap_err()
                .to_string()
                .contains("LEAD_QUEUE_URL")
        );
    }

    fn feeder(vars: &[(&str, &str)]) -> Result<FeederConfig, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        FeederConfig::read(&Env(move |k: &str| map.get(k).cloned()))
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
        let e = feeder(&[t, urls, ("CLAY_WEBHOOK_AUTH_TOKENS", "a,b,c")]).unwrap_err();
        assert!(
            e.to_string().contains("3 auth tokens for 2 webhooks"),
            "{e}"
        );
        let c = feeder(&[
            t,
            urls,
            ("FEEDER_DAILY_BUDGET", "1000"),
            ("CLAY_WEBHOOK_AUTH_TOKENS", "sekrit"),
        ])
        .unwrap();
        assert_eq!(c.settings.daily_budget, Some(1000));
        assert!(!format!("{c:?}").contains("sekrit"));
    }
}
