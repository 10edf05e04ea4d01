//! Secret settings by reference. A secret variable (`CLAY_WEBHOOK_SECRETS`, the tokens, the hook
//! URLs, the signing secret) may hold, instead of its value, where to fetch it:
//!
//! - `secretsmanager:<name or ARN>[#<json key>]`, or a Secrets Manager ARN itself;
//! - `ssm:<parameter name>`, or an SSM parameter ARN (SecureString decrypted).
//!
//! With `#key`, the secret is a JSON object and the value is that key's (how the template's own
//! secret keeps every setting in one secret, one fetch for all). Values are fetched at start
//! (before the configuration is read, concurrently with the connection warm-up) and again every
//! `SECRETS_REFRESH_SECONDS`, so a rotation takes effect without a deploy ([`Refreshing`]).
//! References are not secret and may be logged; fetched values never are.

pub mod aws;
pub mod refreshing;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use crate::config::{ConfigError, Env};
pub use refreshing::Refreshing;

/// Every variable that may come by reference (docs/configuration.md).
pub const SECRET_VARIABLES: &[&str] = &[
    "CLAY_WEBHOOK_SECRETS",
    "HUBSPOT_ACCESS_TOKEN",
    "CRM_WEBHOOK_URL",
    "OUTREACH_WEBHOOK_URL",
    "NURTURE_WEBHOOK_URL",
    "SLACK_WEBHOOK_URL",
    "ZAPIER_WEBHOOK_URL",
    "OUTBOUND_SIGNING_SECRET",
    "CLAY_WEBHOOK_URLS",
    "CLAY_WEBHOOK_AUTH_TOKENS",
];

/// How often a warm instance fetches its secrets again (`SECRETS_REFRESH_SECONDS`).
pub const DEFAULT_REFRESH_SECONDS: u64 = 300;

/// One fetch: a whole secret or parameter (several variables may read keys of one secret).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SecretSource {
    SecretsManager(String),
    Parameter(String),
}

impl std::fmt::Display for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::SecretsManager(id) => write!(f, "secretsmanager:{id}"),
            SecretSource::Parameter(name) => write!(f, "ssm:{name}"),
        }
    }
}

/// Where one variable's value is: a source, and the JSON key within it if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretReference {
    pub source: SecretSource,
    pub key: Option<String>,
}

impl std::fmt::Display for SecretReference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.key {
            Some(k) => write!(f, "{}#{k}", self.source),
            None => write!(f, "{}", self.source),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretRefError {
    #[error("{var} is a reference with nothing after {prefix:?}")]
    Empty { var: &'static str, prefix: String },
    #[error("{var} names an SSM parameter, which has no JSON keys: drop the #{key}")]
    KeyOnParameter { var: &'static str, key: String },
    #[error("{var}: cannot fetch {reference}: {reason}")]
    Fetch {
        var: &'static str,
        reference: String,
        reason: String,
    },
    #[error("{var}: {reference} has no such key (keep unused settings as \"\")")]
    MissingKey {
        var: &'static str,
        reference: String,
    },
    #[error(
        "{var} ends in #{var} like a reference, but names no secretsmanager: or ssm: source or ARN"
    )]
    NotAReference { var: &'static str },
    #[error("{var}: {reference} is not a JSON object, so it has no key to read")]
    NotAnObject {
        var: &'static str,
        reference: String,
    },
}

impl SecretReference {
    /// `None` for a plain value; a reference otherwise (an error when it is malformed).
    pub fn parse(
        var: &'static str,
        value: &str,
    ) -> Option<Result<SecretReference, SecretRefError>> {
        let value = value.trim();
        let (rest, ssm) = if let Some(rest) = value.strip_prefix("secretsmanager:") {
            (rest, false)
        } else if let Some(rest) = value.strip_prefix("ssm:") {
            (rest, true)
        } else if let Some(service) = arn_service(value) {
            (value, service == "ssm")
        } else {
            return None;
        };
        // `#` appears in neither secret names nor parameter names.
        let (id, key) = match rest.split_once('#') {
            Some((id, key)) => (id.trim(), Some(key.trim().to_string())),
            None => (rest.trim(), None),
        };
        if id.is_empty() || key.as_deref() == Some("") {
            let prefix = value.split(':').next().unwrap_or_default().to_string() + ":";
            return Some(Err(SecretRefError::Empty { var, prefix }));
        }
        let source = if ssm {
            if let Some(key) = key {
                return Some(Err(SecretRefError::KeyOnParameter { var, key }));
            }
            SecretSource::Parameter(id.to_string())
        } else {
            SecretSource::SecretsManager(id.to_string())
        };
        Some(Ok(SecretReference { source, key }))
    }
}

/// For the operator's tools, which take secret values only: the value, or why it is a reference.
pub fn value_not_reference(var: &'static str, value: &str) -> Result<(), String> {
    match SecretReference::parse(var, value) {
        None => Ok(()),
        Some(_) => Err(format!(
            "{var} holds a reference ({}...), not the value: export the secret itself",
            value.trim().split(':').next().unwrap_or_default()
        )),
    }
}

/// `secretsmanager` or `ssm` for an ARN of either (any partition), else `None`.
fn arn_service(value: &str) -> Option<&str> {
    let mut parts = value.splitn(4, ':');
    let (arn, _partition, service) = (parts.next()?, parts.next()?, parts.next()?);
    (arn == "arn" && matches!(service, "secretsmanager" | "ssm") && parts.next().is_some())
        .then_some(service)
}

/// The port the references are fetched through: a whole secret string or parameter value.
pub trait SecretStore: Send + Sync {
    fn fetch(&self, source: &SecretSource) -> impl Future<Output = Result<String, String>> + Send;
}

/// The variables that hold references, read once at start.
#[derive(Debug, Clone, Default)]
pub struct SecretReferences {
    by_variable: Vec<(&'static str, SecretReference)>,
    pub refresh: Duration,
}

/// Fetched values by variable name.
pub type Resolved = BTreeMap<&'static str, String>;

impl SecretReferences {
    /// The references among [`SECRET_VARIABLES`]; a malformed one stops the start.
    pub fn read<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let mut by_variable = Vec::new();
        for var in SECRET_VARIABLES {
            let Some(value) = env.optional(var) else {
                continue;
            };
            match SecretReference::parse(var, &value) {
                Some(reference) => {
                    by_variable.push((*var, reference.map_err(ConfigError::refused)?));
                }
                // A reference whose source did not resolve (SAM's `Ref` of a logical id, a
                // typo) must never be taken for the secret itself.
                None if value.ends_with(&format!("#{var}")) => {
                    return Err(ConfigError::refused(SecretRefError::NotAReference { var }));
                }
                None => {}
            }
        }
        let refresh = Duration::from_secs(env.number(
            "SECRETS_REFRESH_SECONDS",
            DEFAULT_REFRESH_SECONDS,
            |v| *v > 0,
        )?);
        Ok(SecretReferences {
            by_variable,
            refresh,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.by_variable.is_empty()
    }

    /// Which services are named (for building only the clients needed).
    pub fn uses(&self) -> (bool, bool) {
        let sm = self
            .by_variable
            .iter()
            .any(|(_, r)| matches!(r.source, SecretSource::SecretsManager(_)));
        let ssm = self
            .by_variable
            .iter()
            .any(|(_, r)| matches!(r.source, SecretSource::Parameter(_)));
        (sm, ssm)
    }

    /// The variables and where they come from, for the start-up log line (no values).
    pub fn describe(&self) -> Vec<String> {
        self.by_variable
            .iter()
            .map(|(var, r)| format!("{var}={r}"))
            .collect()
    }

    /// Fetches each source once, concurrently, and reads every variable's value out of it.
    pub async fn resolve<S: SecretStore>(&self, store: &S) -> Result<Resolved, SecretRefError> {
        let sources: BTreeSet<&SecretSource> =
            self.by_variable.iter().map(|(_, r)| &r.source).collect();
        let fetched = futures::future::join_all(
            sources
                .into_iter()
                .map(|source| async move { (source, store.fetch(source).await) }),
        )
        .await;
        let fetched: BTreeMap<&SecretSource, Result<String, String>> =
            fetched.into_iter().collect();
        let mut resolved = Resolved::new();
        for (var, reference) in &self.by_variable {
            let text = match fetched.get(&reference.source) {
                Some(Ok(text)) => text,
                Some(Err(reason)) => {
                    return Err(SecretRefError::Fetch {
                        var,
                        reference: reference.to_string(),
                        reason: reason.clone(),
                    });
                }
                None => {
                    return Err(SecretRefError::Fetch {
                        var,
                        reference: reference.to_string(),
                        reason: "not fetched".into(),
                    });
                }
            };
            resolved.insert(var, value_of(var, reference, text)?);
        }
        Ok(resolved)
    }
}

/// The whole text, or the key's value in its JSON object (a string as is, a number or boolean
/// as written, null as unset; a missing key is an error).
fn value_of(
    var: &'static str,
    reference: &SecretReference,
    text: &str,
) -> Result<String, SecretRefError> {
    let Some(key) = &reference.key else {
        return Ok(text.to_string());
    };
    let object = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(o)) => o,
        _ => {
            return Err(SecretRefError::NotAnObject {
                var,
                reference: reference.to_string(),
            });
        }
    };
    match object.get(key) {
        // An error, not an unset variable: a key dropped while rotating would otherwise switch a
        // destination off without a word. Unused settings are kept as "".
        None => Err(SecretRefError::MissingKey {
            var,
            reference: reference.to_string(),
        }),
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(serde_json::Value::Null) => Ok(String::new()),
        Some(other) => Ok(other.to_string()),
    }
}

#[cfg(test)]
mod tests;
