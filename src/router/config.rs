//! The router function's configuration (docs/configuration.md).

use std::time::Duration;

use super::RouterSettings;
use super::rules::{RoutingRule, default_rules, parse_rules};
use crate::config::{ConfigError, Env, process_env};
use crate::delivery::control::config::ControlSettings;
use crate::delivery::http::HttpTimeouts;
use crate::delivery::retry::RetryPolicy;
use crate::delivery::schedule::RetrySchedule;
use crate::destinations::DestinationSettings;

pub const DEFAULT_ROUTER_CONCURRENCY: usize = 10;
/// 30 days: past SQS's and the DLQ's retention, so a redrive never resends what was delivered.
pub const DEFAULT_DELIVERY_TTL_SECONDS: i64 = 30 * 86_400;

/// `ROUTING_RULES`, or the built-in rules when unset (the router's, and `clayhook dlq`'s).
pub fn routing_rules<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
) -> Result<Vec<RoutingRule>, ConfigError> {
    match env.optional("ROUTING_RULES") {
        Some(text) => parse_rules(&text).map_err(ConfigError::refused),
        None => Ok(default_rules()),
    }
}

/// Everything the router function needs.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    pub settings: RouterSettings,
    pub table: String,
    pub destinations: DestinationSettings,
    pub connect_timeout: Duration,
    /// The lead queue and its DLQ (`LEAD_QUEUE_URL`, `LEAD_DLQ_URL`): with both, failing records
    /// wait out the retry schedule and reach the DLQ with a reason.
    pub redelivery: Option<(String, String)>,
}

impl RouterConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::read(&process_env())
    }

    pub fn read<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let rules = routing_rules(env)?;
        let destinations = DestinationSettings::read(env)?;
        let http = HttpTimeouts::read(env)?;
        let schedule = RetrySchedule::read(env)?;
        let max_receive_count = match env.number("MAX_RECEIVE_COUNT", 0u32, |_| true)? {
            0 => None,
            n => Some(n),
        };
        let redelivery = match (env.url("LEAD_QUEUE_URL")?, env.url("LEAD_DLQ_URL")?) {
            (Some(queue), Some(dlq)) => Some((queue, dlq)),
            (None, None) => None,
            (Some(_), None) => return Err(ConfigError::Missing("LEAD_DLQ_URL")),
            (None, Some(_)) => return Err(ConfigError::Missing("LEAD_QUEUE_URL")),
        };
        // SQS must not end the schedule early by moving the record to the DLQ itself.
        if let (Some(_), Some(max)) = (&redelivery, max_receive_count)
            && max < schedule.receives()
        {
            return Err(ConfigError::Invalid {
                var: "MAX_RECEIVE_COUNT",
                reason: format!(
                    "{max} is fewer than the {} receives RETRY_SCHEDULE takes: raise the queue's maxReceiveCount or shorten the schedule",
                    schedule.receives()
                ),
            });
        }
        let archive_days: u32 =
            env.number("ARCHIVE_DAYS", crate::archive::DEFAULT_ARCHIVE_DAYS, |d| {
                *d <= 365
            })?;
        let delivery_ttl_seconds: i64 =
            env.number("DELIVERY_TTL_SECONDS", DEFAULT_DELIVERY_TTL_SECONDS, |v| {
                *v > 0
            })?;
        Ok(RouterConfig {
            settings: RouterSettings {
                rules,
                concurrency: env
                    .number("ROUTER_CONCURRENCY", DEFAULT_ROUTER_CONCURRENCY, |v| *v > 0)?,
                retry: RetryPolicy::read(env)?,
                request_timeout: http.request,
                // A replay of an archived lead honours the ledger: the ledger must remember
                // every delivery at least as long as the archive keeps the lead.
                delivery_ttl_seconds: delivery_ttl_seconds.max(i64::from(archive_days) * 86_400),
                max_receive_count,
                schedule,
                control: ControlSettings::read(env)?,
                archive_days,
            },
            table: env.required("IDEMPOTENCY_TABLE")?,
            destinations,
            connect_timeout: http.connect,
            redelivery,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(vars: &[(&str, &str)]) -> Result<RouterConfig, ConfigError> {
        RouterConfig::read(&crate::config::env_of(vars))
    }

    #[test]
    fn the_ledger_remembers_at_least_as_long_as_the_archive_keeps() {
        let ttl = |vars: &[(&str, &str)]| {
            let mut all = vec![("IDEMPOTENCY_TABLE", "t")];
            all.extend_from_slice(vars);
            router(&all).unwrap().settings.delivery_ttl_seconds
        };
        assert_eq!(ttl(&[]), DEFAULT_DELIVERY_TTL_SECONDS);
        assert_eq!(ttl(&[("ARCHIVE_DAYS", "90")]), 90 * 86_400);
        assert_eq!(
            ttl(&[("ARCHIVE_DAYS", "10"), ("DELIVERY_TTL_SECONDS", "86400")]),
            10 * 86_400
        );
        assert_eq!(
            ttl(&[("ARCHIVE_DAYS", "0"), ("DELIVERY_TTL_SECONDS", "86400")]),
            86_400
        );
    }

    #[test]
    fn router_needs_only_the_table() {
        let c = router(&[("IDEMPOTENCY_TABLE", "t")]).unwrap();
        assert_eq!(c.settings.concurrency, 10);
        assert_eq!(c.settings.rules, default_rules());
        assert_eq!(c.settings.retry, RetryPolicy::default());
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
        let e = router(&[t, ("HUBSPOT_ACCESS_TOKEN", "pat-short")]).unwrap_err();
        assert!(
            e.to_string()
                .contains("HUBSPOT_ACCESS_TOKEN is invalid: shorter than 16 bytes"),
            "{e}"
        );
        assert!(!e.to_string().contains("pat-short"), "{e}");
        let e = router(&[t, ("OUTBOUND_SIGNING_SECRET", "plain")]).unwrap_err();
        assert!(e.to_string().contains("OUTBOUND_SIGNING_SECRET"), "{e}");
        // whsec_ of "short-key" (9 bytes).
        let e = router(&[t, ("OUTBOUND_SIGNING_SECRET", "whsec_c2hvcnQta2V5")]).unwrap_err();
        assert!(e.to_string().contains("shorter than 16 bytes"), "{e}");
        assert!(!e.to_string().contains("c2hvcnQta2V5"), "{e}");
        let e = router(&[t, ("RETRY_CAP_MS", "0")]).unwrap_err();
        assert!(e.to_string().contains("RETRY_CAP_MS"), "{e}");
        // Both crm settings at once: refused, naming both, never one silently winning.
        let e = router(&[
            t,
            ("HUBSPOT_ACCESS_TOKEN", "pat-secret-0123456789"),
            ("CRM_WEBHOOK_URL", "http://x"),
        ])
        .unwrap_err();
        assert!(
            e.to_string().contains("CRM_WEBHOOK_URL")
                && e.to_string().contains("HUBSPOT_ACCESS_TOKEN"),
            "{e}"
        );
        assert!(!e.to_string().contains("pat-secret"), "{e}");
        let c = router(&[t, ("HUBSPOT_ACCESS_TOKEN", "pat-secret-0123456789")]).unwrap();
        let shown = format!("{c:?}");
        assert!(
            shown.contains("hubspot") && !shown.contains("pat-secret"),
            "{shown}"
        );
    }
}
