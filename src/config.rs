//! Configuration, read once at start from environment variables. Every variable and its default
//! is listed in the README; a bad value stops the function with a message naming the variable.

use std::time::Duration;

use crate::auth::{DEFAULT_TOLERANCE_SECONDS, Secrets, SecretsError};
use crate::idempotency::{KeySpec, KeySpecError};
use crate::ingest::IngestSettings;

pub const DEFAULT_MAX_BODY_BYTES: usize = 262_144;
pub const DEFAULT_TTL_SECONDS: i64 = 86_400;
pub const DEFAULT_IN_PROGRESS_MS: u64 = 30_000;

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
}

/// Everything the ingest function needs.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub settings: IngestSettings,
    pub table: String,
    pub queue_url: String,
}

/// Reads variables through `lookup`, so tests need not touch the process environment.
pub struct Env<F: Fn(&str) -> Option<String>>(pub F);

impl<F: Fn(&str) -> Option<String>> Env<F> {
    fn get(&self, var: &'static str) -> Option<String> {
        (self.0)(var).filter(|v| !v.trim().is_empty())
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
        assert_eq!(c.settings.max_body_bytes, 262_144);
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
