//! The ingest function's configuration (docs/configuration.md).

use super::IngestSettings;
use crate::auth::{DEFAULT_TOLERANCE_SECONDS, Secrets};
use crate::config::{ConfigError, Env, process_env};
use crate::idempotency::KeySpec;

/// SQS's maximum message size (and its Lambda event source mapping's) since 2025.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_048_576;
/// Bodies as large as the queue takes; whether the envelope fits is checked on its own (413).
pub const DEFAULT_MAX_BODY_BYTES: usize = DEFAULT_MAX_MESSAGE_BYTES;
pub const DEFAULT_TTL_SECONDS: i64 = 86_400;
pub const DEFAULT_IN_PROGRESS_MS: u64 = 30_000;

/// Everything the ingest function needs.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub settings: IngestSettings,
    pub table: String,
    pub queue_url: String,
}

impl IngestConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::read(&process_env())
    }

    pub fn read<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        // Secrets first: without one the function must not start, whatever else is wrong.
        let secrets = Secrets::parse(&env.raw("CLAY_WEBHOOK_SECRETS").unwrap_or_default())
            .map_err(ConfigError::refused)?;
        let key_spec = match env.optional("IDEMPOTENCY_KEY") {
            Some(text) => KeySpec::parse(&text).map_err(ConfigError::refused)?,
            None => KeySpec::Body,
        };
        let settings = IngestSettings {
            secrets,
            key_spec,
            ttl_seconds: env.number("IDEMPOTENCY_TTL_SECONDS", DEFAULT_TTL_SECONDS, |v| *v > 0)?,
            max_body_bytes: env.number("MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, |v| *v > 0)?,
            max_message_bytes: env.number("MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES, |v| {
                (1_024 + crate::queue::DEAD_LETTER_ROOM..=DEFAULT_MAX_MESSAGE_BYTES).contains(v)
            })?,
            tolerance_seconds: env.number(
                "SIGNATURE_TOLERANCE_SECONDS",
                DEFAULT_TOLERANCE_SECONDS,
                |v| *v > 0,
            )?,
            default_in_progress: env.millis("IN_PROGRESS_DEFAULT_MS", DEFAULT_IN_PROGRESS_MS)?,
        };
        Ok(IngestConfig {
            settings,
            table: env.required("IDEMPOTENCY_TABLE")?,
            queue_url: env.required("LEAD_QUEUE_URL")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::SecretsError;

    fn read(vars: &[(&str, &str)]) -> Result<IngestConfig, ConfigError> {
        IngestConfig::read(&crate::config::env_of(vars))
    }

    const BASE: [(&str, &str); 3] = [
        ("CLAY_WEBHOOK_SECRETS", "tok-0123456789abcdef"),
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
        assert_eq!(err.to_string(), SecretsError::Empty.to_string());
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
}
