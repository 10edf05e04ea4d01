//! The SQS message: the contract between ingest and the router (version 1).

use serde::{Deserialize, Serialize};
use std::time::SystemTime;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::delivery::names::DestinationName;
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
    /// Set by `clayhook events replay` (absent from what ingest sends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<Replay>,
    /// When `clayhook dlq redrive` sent it back (epoch ms): the lead is owed anew from then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redriven_at_ms: Option<i64>,
}

/// A replay of an archived lead: through the queue, so rules, limits and the breaker apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replay {
    /// When it was replayed (epoch ms).
    pub at_ms: i64,
    /// Deliver again even where the ledger has it: a new version for the ledger, so a forced
    /// replay still reaches each destination once.
    #[serde(default)]
    pub force: bool,
    /// Only these of the destinations the rules choose (all when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<DestinationName>,
}

/// The deepest body (nested objects and arrays, the body object itself counting 1) whose
/// envelope the router can still read back: serde_json reads at most 127 levels, and the
/// envelope puts unknown fields two levels deeper (`{"lead": {"extra": ...}}`) than they sat.
/// The test below holds this to the exact boundary.
pub const MAX_BODY_DEPTH: usize = 125;

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// Says where and what kind of mistake, never the values (serde_json's own message may quote
    /// one, say an email address in a crafted message).
    #[error("message body is not a version-1 envelope: {kind} at line {line}, column {column}")]
    Malformed {
        kind: &'static str,
        line: usize,
        column: usize,
    },
    #[error("unsupported envelope version {0}")]
    Version(u32),
    /// Every id ingest writes is a SHA-256 in lowercase hex; anything else was not written by
    /// ingest, and downstream code (log lines, Slack's short id) may rely on its shape.
    #[error("envelope id is not 64 lowercase hex digits")]
    InvalidId,
}

/// Whether `id` has the shape of an ID ingest derives: 64 lowercase hex digits.
pub fn is_valid_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// [`depth`] of an object, without building a `Value` around it.
pub fn object_depth(object: &serde_json::Map<String, serde_json::Value>) -> usize {
    1 + object.values().map(depth).max().unwrap_or(0)
}

/// How deeply a JSON value nests: a scalar is 0, `{}` and `[]` are 1, `{"a":[1]}` is 2.
pub fn depth(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

impl Envelope {
    pub fn new(id: String, received_at: SystemTime, source: Option<String>, lead: Lead) -> Self {
        Envelope {
            version: ENVELOPE_VERSION,
            id,
            received_at: rfc3339(received_at),
            source,
            lead,
            replay: None,
            redriven_at_ms: None,
        }
    }

    /// The message body. Serialising plain data (strings, numbers, maps with string keys) cannot
    /// fail. U+FFFE and U+FFFF are valid in JSON but not in an SQS message (which would refuse the
    /// lead on every retry): they go out as the escapes `\ufffe` / `\uffff`, which read back
    /// as the same characters. serde_json escapes the other characters SQS refuses (controls).
    pub fn to_json(&self) -> String {
        let text = serde_json::to_string(self).unwrap_or_default();
        if text.contains(['\u{fffe}', '\u{ffff}']) {
            // Both can only sit inside JSON strings, where the escape means the same.
            text.replace('\u{fffe}', "\\ufffe")
                .replace('\u{ffff}', "\\uffff")
        } else {
            text
        }
    }

    /// Which version of the lead this is: the hash of its fields. With a header or fields key
    /// every version of a row has the same ID, and a re-enriched row (accepted again once its
    /// ingest record expired) must reach its destinations again; the delivery ledger records
    /// which version it delivered.
    ///
    /// A forced replay is a version of its own, newer than any before it.
    pub fn lead_version(&self) -> String {
        let lead = serde_json::to_vec(&self.lead).unwrap_or_default();
        let hash = crate::idempotency::sha256_hex(&lead);
        match &self.replay {
            Some(r) if r.force => format!("{hash}#replay@{}", r.at_ms),
            _ => hash,
        }
    }

    /// `received_at` in epoch milliseconds (0 when unreadable): orders versions of one lead. A
    /// forced replay counts from when it was replayed.
    pub fn received_at_ms(&self) -> i64 {
        if let Some(r) = self.replay.as_ref().filter(|r| r.force) {
            return r.at_ms;
        }
        OffsetDateTime::parse(&self.received_at, &Rfc3339)
            .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
            .unwrap_or(0)
    }

    /// Since when the lead is owed to its destinations: ingest's acceptance, or a later replay
    /// or redrive (epoch ms). `RETRY_SCHEDULE_TOTAL` after this, whatever is still owed goes
    /// to the dead-letter queue.
    pub fn owed_since_ms(&self) -> i64 {
        self.received_at_ms()
            .max(self.replay.as_ref().map_or(0, |r| r.at_ms))
            .max(self.redriven_at_ms.unwrap_or(0))
    }

    pub fn parse(body: &str) -> Result<Self, EnvelopeError> {
        let env: Envelope = serde_json::from_str(body).map_err(|e| EnvelopeError::Malformed {
            kind: match e.classify() {
                serde_json::error::Category::Io => "unreadable",
                serde_json::error::Category::Syntax => "not JSON",
                serde_json::error::Category::Data => "JSON of the wrong shape",
                serde_json::error::Category::Eof => "truncated JSON",
            },
            line: e.line(),
            column: e.column(),
        })?;
        if env.version != ENVELOPE_VERSION {
            return Err(EnvelopeError::Version(env.version));
        }
        if !is_valid_id(&env.id) {
            return Err(EnvelopeError::InvalidId);
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

    const ID: &str = "ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12";

    #[test]
    fn matches_the_spec_shape_and_round_trips() {
        let (lead, _) = Lead::parse(br#"{"email":"a@b.co","x":1}"#).unwrap();
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let env = Envelope::new(ID.into(), at, None, lead);
        let v: serde_json::Value = serde_json::from_str(&env.to_json()).unwrap();
        assert_eq!(
            v,
            json!({"version":1,"id":ID,"received_at":"2023-11-14T22:13:20Z","source":null,
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

    #[test]
    fn versions_follow_the_lead_and_times_order_them() {
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let lead = |body: &[u8]| Lead::parse(body).unwrap().0;
        let a = Envelope::new(ID.into(), at, None, lead(br#"{"title":"CEO"}"#));
        let b = Envelope::new(ID.into(), at, None, lead(br#"{"title":"CTO"}"#));
        let a_again = Envelope::new(ID.into(), UNIX_EPOCH, None, lead(br#"{"Title":" CEO "}"#));
        assert_ne!(a.lead_version(), b.lead_version());
        assert_eq!(a.lead_version(), a_again.lead_version());
        assert_eq!(a.received_at_ms(), 1_700_000_000_123);
        let back = Envelope::parse(&a.to_json()).unwrap();
        assert_eq!(back.lead_version(), a.lead_version());
        assert_eq!(back.received_at_ms(), a.received_at_ms());
    }

    /// Characters SQS refuses in a message travel escaped and read back the same.
    #[test]
    fn characters_sqs_refuses_are_escaped() {
        let (lead, _) =
            Lead::parse("{\"note\":\"a\u{fffe}b\u{ffff}c\\u0001\"}".as_bytes()).unwrap();
        let env = Envelope::new(ID.into(), UNIX_EPOCH, None, lead);
        let text = env.to_json();
        let allowed = |c: char| {
            matches!(c, '\t' | '\n' | '\r' | ' '..='\u{d7ff}' | '\u{e000}'..='\u{fffd}')
                || c >= '\u{10000}'
        };
        assert!(text.chars().all(allowed), "{text:?}");
        assert_eq!(Envelope::parse(&text).unwrap(), env);
    }

    #[test]
    fn malformed_envelopes_are_described_without_their_values() {
        let e = Envelope::parse(r#"{"version":"jane@acme.com"}"#).unwrap_err();
        assert!(!e.to_string().contains("jane"), "{e}");
        assert!(e.to_string().contains("wrong shape"), "{e}");
    }

    #[test]
    fn refuses_ids_ingest_never_writes() {
        let with_id = |id: &str| {
            json!({"version":1,"id":id,"received_at":"x","source":null,"lead":{}}).to_string()
        };
        assert!(Envelope::parse(&with_id(ID)).is_ok());
        let multibyte = format!("é{}", &ID[2..]);
        for bad in [
            "",
            "ab12",
            &ID.to_uppercase(),
            &multibyte,
            &format!("{ID}0"),
        ] {
            assert!(
                matches!(
                    Envelope::parse(&with_id(bad)),
                    Err(EnvelopeError::InvalidId)
                ),
                "{bad:?}"
            );
        }
    }

    fn nested(levels: usize) -> String {
        // `{"a":{"a":...{}...}}`: `levels` objects, the body itself included.
        format!(
            "{}{{}}{}",
            "{\"a\":".repeat(levels - 1),
            "}".repeat(levels - 1)
        )
    }

    /// The limit is exact: the deepest body allowed round-trips through the envelope, one level
    /// more would not.
    #[test]
    fn the_deepest_allowed_body_round_trips_and_one_more_would_not() {
        for (levels, fits) in [(MAX_BODY_DEPTH, true), (MAX_BODY_DEPTH + 1, false)] {
            let body = nested(levels);
            let value: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(depth(&value), levels);
            let (lead, _) = Lead::parse(body.as_bytes()).unwrap();
            let env = Envelope::new(ID.into(), UNIX_EPOCH, None, lead);
            let back = Envelope::parse(&env.to_json());
            assert_eq!(back.is_ok(), fits, "{levels} levels: {back:?}");
            if fits {
                assert_eq!(back.unwrap(), env);
            }
        }
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!({"a":[1,{"b":[]}]})), 4);
    }
}
