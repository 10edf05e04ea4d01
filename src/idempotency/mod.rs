//! Idempotency: which callbacks are "the same", the record's states (after AWS Powertools), and
//! the decision taken when a record already exists. The store itself is a port.

pub mod dynamodb;

use lambda_http::http::HeaderMap;
use sha2::{Digest, Sha256};
use std::future::Future;

use crate::lead::Lead;

/// What makes two callbacks the same (`IDEMPOTENCY_KEY`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySpec {
    /// The raw body bytes.
    Body,
    /// One request header (lowercase name), e.g. `idempotency-key` or `webhook-id`.
    Header(String),
    /// These lead fields (any spelling a lead accepts).
    Fields(Vec<String>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("IDEMPOTENCY_KEY must be `body`, `header:<name>` or `fields:<a,b,...>` (got {0:?})")]
pub struct KeySpecError(pub String);

impl KeySpec {
    pub fn parse(text: &str) -> Result<Self, KeySpecError> {
        let t = text.trim();
        let bad = || KeySpecError(t.to_string());
        if t.eq_ignore_ascii_case("body") {
            return Ok(KeySpec::Body);
        }
        let (kind, rest) = t.split_once(':').ok_or_else(bad)?;
        match kind.trim().to_ascii_lowercase().as_str() {
            "header" => {
                let name = rest.trim().to_ascii_lowercase();
                let valid = !name.is_empty()
                    && lambda_http::http::HeaderName::from_bytes(name.as_bytes()).is_ok();
                if valid {
                    Ok(KeySpec::Header(name))
                } else {
                    Err(bad())
                }
            }
            "fields" => {
                let fields: Vec<String> = rest
                    .split(',')
                    .map(str::trim)
                    .filter(|f| !f.is_empty())
                    .map(str::to_string)
                    .collect();
                if fields.is_empty() {
                    Err(bad())
                } else {
                    Ok(KeySpec::Fields(fields))
                }
            }
            _ => Err(bad()),
        }
    }

    /// Whether a body hash is stored to catch a key reused with another body (422).
    pub fn checks_body(&self) -> bool {
        !matches!(self, KeySpec::Body)
    }
}

/// The key of one callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// Hex SHA-256 of the key material: the lead's ID.
    pub id: String,
    /// Hex SHA-256 of the raw body, when the key is not the body itself.
    pub body_hash: Option<String>,
    /// The configured key was missing from this request, so the body was used instead.
    pub fell_back_to_body: bool,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Derives the key. The `{source}` is part of it: the same body from two tables is two
/// callbacks. (For the bare route the body key stays the plain body hash.) A request without the
/// configured header (or with none of the configured fields) falls back to the body, so exact
/// retries are still deduplicated.
pub fn derive_key(
    spec: &KeySpec,
    headers: &HeaderMap,
    body: &[u8],
    lead: &Lead,
    source: Option<&str>,
) -> IdempotencyKey {
    let material: Option<Vec<u8>> = match spec {
        KeySpec::Body => None,
        KeySpec::Header(name) => headers
            .get(name.as_str())
            .map(|v| v.as_bytes())
            .filter(|v| !v.iter().all(u8::is_ascii_whitespace))
            .map(|v| [b"header\0", name.as_bytes(), b"\0", v].concat()),
        KeySpec::Fields(fields) => {
            let values: Vec<serde_json::Value> =
                fields.iter().map(|f| lead_value(lead, f)).collect();
            if values.iter().all(serde_json::Value::is_null) {
                None
            } else {
                let canonical = serde_json::json!({"fields": fields, "values": values});
                Some(canonical.to_string().into_bytes())
            }
        }
    };
    let fell_back_to_body = material.is_none() && spec.checks_body();
    let material = material.unwrap_or_else(|| body.to_vec());
    let id = match source {
        // `{source}` is 1-64 of [A-Za-z0-9_-]: the NUL keeps it apart from the material.
        Some(src) => sha256_hex(&[b"source\0", src.as_bytes(), b"\0", &material].concat()),
        None => sha256_hex(&material),
    };
    IdempotencyKey {
        id,
        body_hash: spec.checks_body().then(|| sha256_hex(body)),
        fell_back_to_body,
    }
}

fn lead_value(lead: &Lead, field: &str) -> serde_json::Value {
    lead.get(field).unwrap_or(serde_json::Value::Null)
}

/// The two stored states. "Expired" is never stored: it is computed from the timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    InProgress,
    Completed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::InProgress => "IN_PROGRESS",
            Status::Completed => "COMPLETED",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "IN_PROGRESS" => Some(Status::InProgress),
            "COMPLETED" => Some(Status::Completed),
            _ => None,
        }
    }
}

/// An idempotency record as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub status: Status,
    /// Epoch seconds after which the record no longer counts (the table's TTL attribute).
    pub expires_at: i64,
    /// Epoch milliseconds after which an `IN_PROGRESS` record is stale (its Lambda is gone).
    pub in_progress_expires_at: Option<i64>,
    pub message_id: Option<String>,
    pub body_hash: Option<String>,
    /// The claiming invocation's random token (`lock_token`), while `IN_PROGRESS`.
    pub lock_token: Option<String>,
}

impl Record {
    /// Whether this is `claim`'s own `IN_PROGRESS`: what a retried put finds when its first
    /// attempt was applied but its answer lost. Then the key is ours, not someone else's.
    pub fn held_by(&self, claim: &Claim) -> bool {
        self.status == Status::InProgress
            && self.lock_token.as_deref() == Some(claim.token.as_str())
    }
}

/// The claim ingest writes as `IN_PROGRESS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub id: String,
    pub body_hash: Option<String>,
    /// Epoch seconds: the record's expiry.
    pub expires_at: i64,
    /// Epoch milliseconds: until then no other invocation may take this key over. Doubles as
    /// this invocation's lock token when the claim is abandoned.
    pub in_progress_expires_at: i64,
    pub now_ms: i64,
    /// Random, one per claim: a write that finds it already in the item wrote it itself.
    pub token: String,
}

impl Claim {
    pub fn now_s(&self) -> i64 {
        self.now_ms.div_euclid(1000)
    }
}

/// What the conditional put found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// The key is ours: absent, expired or stale before.
    Claimed,
    /// Another record holds the key (returned by the failed condition, no extra read).
    Held(Record),
    /// The record changed hands between the write and the read. Try again.
    Contended,
}

/// What to answer when a record already holds the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Already queued: answer with the first message id.
    Duplicate { message_id: Option<String> },
    /// Another invocation is working on it right now.
    InProgress,
    /// Same key, different body.
    KeyReused,
    /// The record was expired or stale, so the put should have won; the state moved under us.
    /// Try again.
    Retry,
}

/// Powertools' `_handle_for_status`, plus payload validation, as a pure function.
pub fn judge(held: &Record, body_hash: Option<&str>, now_ms: i64) -> Verdict {
    if held.expires_at < now_ms.div_euclid(1000) {
        return Verdict::Retry;
    }
    if held.status == Status::InProgress && held.in_progress_expires_at.is_some_and(|t| t < now_ms)
    {
        return Verdict::Retry;
    }
    if let (Some(stored), Some(ours)) = (held.body_hash.as_deref(), body_hash)
        && stored != ours
    {
        return Verdict::KeyReused;
    }
    match held.status {
        Status::InProgress => Verdict::InProgress,
        Status::Completed => Verdict::Duplicate {
            message_id: held.message_id.clone(),
        },
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("idempotency store unavailable: {0}")]
    Unavailable(String),
    #[error("idempotency record is unreadable: {0}")]
    Corrupt(&'static str),
}

/// The port: a conditional write, its completion and its abandonment.
pub trait IdempotencyStore: Send + Sync {
    /// Writes `IN_PROGRESS` if the key is absent, expired or stale; otherwise returns what holds it.
    fn begin(&self, claim: &Claim) -> impl Future<Output = Result<Begin, StoreError>> + Send;
    /// Marks the key `COMPLETED` with the queue's message id, refreshing the expiry.
    fn complete(
        &self,
        id: &str,
        message_id: &str,
        expires_at: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Deletes our `IN_PROGRESS` claim (and nothing another invocation has taken over since).
    fn abandon(&self, claim: &Claim) -> impl Future<Output = Result<(), StoreError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::http::HeaderValue;

    fn record(status: Status) -> Record {
        Record {
            status,
            expires_at: 2_000,
            in_progress_expires_at: Some(1_500_000),
            message_id: Some("m-1".into()),
            body_hash: Some("h1".into()),
            lock_token: Some("t-1".into()),
        }
    }

    #[test]
    fn key_spec_parses_and_rejects() {
        assert_eq!(KeySpec::parse("body"), Ok(KeySpec::Body));
        assert_eq!(
            KeySpec::parse("header:Idempotency-Key"),
            Ok(KeySpec::Header("idempotency-key".into()))
        );
        assert_eq!(
            KeySpec::parse("fields:email, Row ID"),
            Ok(KeySpec::Fields(vec!["email".into(), "Row ID".into()]))
        );
        for bad in [
            "",
            "header:",
            "fields:",
            "fields: , ",
            "cookie:x",
            "header:bad name",
        ] {
            assert!(KeySpec::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn body_key_is_the_body_hash() {
        let k = derive_key(
            &KeySpec::Body,
            &HeaderMap::new(),
            b"{}",
            &Lead::default(),
            None,
        );
        assert_eq!(k.id, sha256_hex(b"{}"));
        assert_eq!(k.body_hash, None);
        assert!(!k.fell_back_to_body);
    }

    #[test]
    fn header_key_ignores_body_but_records_its_hash() {
        let spec = KeySpec::Header("idempotency-key".into());
        let mut h = HeaderMap::new();
        h.insert("idempotency-key", HeaderValue::from_static("row-1"));
        let a = derive_key(&spec, &h, b"{\"a\":1}", &Lead::default(), None);
        let b = derive_key(&spec, &h, b"{\"a\":2}", &Lead::default(), None);
        assert_eq!(a.id, b.id);
        assert_ne!(a.body_hash, b.body_hash);
        h.insert("idempotency-key", HeaderValue::from_static("row-2"));
        assert_ne!(
            derive_key(&spec, &h, b"{\"a\":1}", &Lead::default(), None).id,
            a.id
        );
    }

    #[test]
    fn missing_header_or_fields_fall_back_to_body() {
        let spec = KeySpec::Header("idempotency-key".into());
        let k = derive_key(&spec, &HeaderMap::new(), b"{}", &Lead::default(), None);
        assert_eq!(k.id, sha256_hex(b"{}"));
        assert!(k.fell_back_to_body);
        let spec = KeySpec::Fields(vec!["email".into()]);
        let k = derive_key(&spec, &HeaderMap::new(), b"{}", &Lead::default(), None);
        assert!(k.fell_back_to_body);
    }

    #[test]
    fn fields_key_uses_normalised_values() {
        let spec = KeySpec::Fields(vec!["email".into()]);
        let (a, _) = Lead::parse(br#"{"Work Email":"Jane@Acme.com","x":1}"#).unwrap();
        let (b, _) = Lead::parse(br#"{"email":" jane@acme.com ","x":2}"#).unwrap();
        let ka = derive_key(&spec, &HeaderMap::new(), b"1", &a, None);
        let kb = derive_key(&spec, &HeaderMap::new(), b"2", &b, None);
        assert_eq!(ka.id, kb.id);
        assert_ne!(ka.body_hash, kb.body_hash);
    }

    /// The same body, header or fields from two tables (`/enriched/table-a`, `/table-b`) are two
    /// callbacks; the bare route keeps the plain body hash.
    #[test]
    fn the_source_is_part_of_every_key() {
        let (lead, _) = Lead::parse(br#"{"email":"jane@acme.com"}"#).unwrap();
        let mut h = HeaderMap::new();
        h.insert("idempotency-key", HeaderValue::from_static("row-1"));
        for spec in [
            KeySpec::Body,
            KeySpec::Header("idempotency-key".into()),
            KeySpec::Fields(vec!["email".into()]),
        ] {
            let body = br#"{"email":"jane@acme.com"}"#;
            let a = derive_key(&spec, &h, body, &lead, Some("table-a"));
            let b = derive_key(&spec, &h, body, &lead, Some("table-b"));
            let bare = derive_key(&spec, &h, body, &lead, None);
            assert_ne!(a.id, b.id, "{spec:?}");
            assert_ne!(a.id, bare.id, "{spec:?}");
            assert_eq!(a, derive_key(&spec, &h, body, &lead, Some("table-a")));
        }
        let bare = derive_key(&KeySpec::Body, &h, b"{}", &lead, None);
        assert_eq!(bare.id, sha256_hex(b"{}"));
    }

    #[test]
    fn judge_follows_the_powertools_state_machine() {
        let now_ms = 1_000_000;
        let done = record(Status::Completed);
        assert_eq!(
            judge(&done, Some("h1"), now_ms),
            Verdict::Duplicate {
                message_id: Some("m-1".into())
            }
        );
        assert_eq!(judge(&done, Some("h2"), now_ms), Verdict::KeyReused);
        assert_eq!(
            judge(&done, None, now_ms),
            Verdict::Duplicate {
                message_id: Some("m-1".into())
            }
        );
        let busy = record(Status::InProgress);
        assert_eq!(judge(&busy, Some("h1"), now_ms), Verdict::InProgress);
        assert_eq!(judge(&busy, Some("h2"), now_ms), Verdict::KeyReused);
        // Stale in-progress and expired records are takeovers, whatever their hash.
        assert_eq!(judge(&busy, Some("h2"), 1_500_001), Verdict::Retry);
        assert_eq!(judge(&done, Some("h1"), 2_001_000), Verdict::Retry);
    }
}
