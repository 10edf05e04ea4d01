//! The SQS message: the contract between ingest and the router (version 1).

use serde::{Deserialize, Serialize};
use std::time::SystemTime;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::lead::Lead;

pub const ENVELOPE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u32,
    /// The idempotency key's hash (hex): the lead's ID everywhere downstream.
    pub id: String,
    /// When ingest received the callback, RFC 3339 in UTC.
    pub received_at: String,
    /// The `{source}` path segment, or null.
    pub source: Option<String>,
    pub lead: Lead,
}

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("message body is not a version-1 envelope: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("unsupported envelope version {0}")]
    Version(u32),
}

impl Envelope {
    pub fn new(id: String, received_at: SystemTime, source: Option<String>, lead: Lead) -> Self {
        Envelope {
            version: ENVELOPE_VERSION,
            id,
            received_at: rfc3339(received_at),
            source,
            lead,
        }
    }

    pub fn to_json(&self) -> String {
        // Serialising plain data (strings, numbers, maps with string keys) cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn parse(body: &str) -> Result<Self, EnvelopeError> {
        let env: Envelope = serde_json::from_str(body)?;
        if env.version != ENVELOPE_VERSION {
            return Err(EnvelopeError::Version(env.version));
        }
        Ok(env)
    }
}

pub fn rfc3339(t: SystemTime) -> String {
    OffsetDateTime::from(t)
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn matches_the_spec_shape_and_round_trips() {
        let (lead, _) = Lead::parse(br#"{"email":"a@b.co","x":1}"#).unwrap();
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let env = Envelope::new("ab12".into(), at, None, lead);
        let v: serde_json::Value = serde_json::from_str(&env.to_json()).unwrap();
        assert_eq!(
            v,
            json!({"version":1,"id":"ab12","received_at":"2023-11-14T22:13:20Z","source":null,
                   "lead":{"email":"a@b.co","extra":{"x":1}}})
        );
        assert_eq!(Envelope::parse(&env.to_json()).unwrap(), env);
    }

    #[test]
    fn refuses_other_versions_and_junk() {
        assert!(matches!(
            Envelope::parse(r#"{"version":2,"id":"a","received_at":"x","source":null,"lead":{}}"#),
            Err(EnvelopeError::Version(2))
        ));
        assert!(Envelope::parse("not json").is_err());
    }
}
