//! The ingest use case: the spec's checks in order (size → content type → authentication → JSON →
//! idempotency → enqueue), against the two ports. The HTTP answer is decided in [`http`] only.

pub mod http;
pub mod lambda;

use lambda_http::http::{HeaderMap, Method};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::{info, warn};

use crate::auth::{self, AuthError, Secrets};
use crate::envelope::Envelope;
use crate::idempotency::{
    Begin, Claim, IdempotencyStore, KeySpec, StoreError, Verdict, derive_key, judge,
};
use crate::lead::{BodyError, Lead};
use crate::queue::{LeadQueue, OutgoingMessage, QueueError};

/// The route prefix; `/{source}` may follow.
pub const ROUTE: &str = "/api/clay/enriched";

/// How often a key that changes hands mid-write is retried (Powertools does 2 retries too).
const MAX_CLAIM_ATTEMPTS: usize = 3;

/// Ingest's settings (see `config.rs` for their environment variables).
#[derive(Debug, Clone)]
pub struct IngestSettings {
    pub secrets: Secrets,
    pub key_spec: KeySpec,
    pub ttl_seconds: i64,
    pub max_body_bytes: usize,
    pub tolerance_seconds: i64,
    /// In-progress lock length when no Lambda deadline is known (local runs).
    pub default_in_progress: Duration,
}

/// One HTTP request, free of any Lambda type.
#[derive(Debug)]
pub struct IngestRequest<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    pub received_at: SystemTime,
    /// Time left before the Lambda is killed, when known: the in-progress lock's length.
    pub remaining: Option<Duration>,
    /// The invocation's X-Ray trace header, when tracing is on.
    pub trace_header: Option<&'a str>,
}

/// A request that got through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Accepted {
        id: String,
        message_id: String,
        /// How long SQS took to take the message.
        enqueue: Duration,
    },
    Duplicate {
        id: String,
        message_id: Option<String>,
    },
}

/// Every way a request can fail. [`http::respond`] maps each to its status.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("no such route")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("source must be 1-64 of [A-Za-z0-9_-]")]
    InvalidSource,
    #[error("body of {size} bytes is over the {limit}-byte limit")]
    PayloadTooLarge { size: usize, limit: usize },
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    #[error("unauthorized: {0}")]
    Unauthorized(#[from] AuthError),
    #[error(transparent)]
    InvalidJson(#[from] BodyError),
    #[error("idempotency key reused with a different body")]
    KeyReused { id: String },
    #[error("the same request is still being processed")]
    InProgress { id: String },
    #[error("idempotency store: {0}")]
    Store(#[from] StoreError),
    #[error("queue: {0}")]
    Queue(#[from] QueueError),
}

/// The use case, generic over its two ports.
pub struct Ingest<S, Q> {
    pub settings: IngestSettings,
    pub store: S,
    pub queue: Q,
}

fn epoch_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The `{source}` of a path, `None` for the bare route, an error for anything else.
pub fn route_source(path: &str) -> Result<Option<String>, IngestError> {
    let path = path.strip_suffix('/').unwrap_or(path);
    let rest = path.strip_prefix(ROUTE).ok_or(IngestError::NotFound)?;
    if rest.is_empty() {
        return Ok(None);
    }
    let source = rest.strip_prefix('/').ok_or(IngestError::NotFound)?;
    let valid = (1..=64).contains(&source.len())
        && source
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(Some(source.to_string()))
    } else if source.contains('/') {
        Err(IngestError::NotFound)
    } else {
        Err(IngestError::InvalidSource)
    }
}

/// `application/json`, `application/<x>+json`, with any parameters (charset, ...).
pub fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(lambda_http::http::header::CONTENT_TYPE) else {
        return false;
    };
    let Ok(text) = value.to_str() else {
        return false;
    };
    let essence = text.split(';').next().unwrap_or_default().trim();
    let Some((kind, sub)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (sub.eq_ignore_ascii_case("json")
            || sub.len() > 5 && sub[sub.len() - 5..].eq_ignore_ascii_case("+json"))
}

impl<S: IdempotencyStore, Q: LeadQueue> Ingest<S, Q> {
    pub async fn handle(&self, req: IngestRequest<'_>) -> Result<Outcome, IngestError> {
        let source = route_source(req.path)?;
        if req.method != Method::POST {
            return Err(IngestError::MethodNotAllowed);
        }
        let s = &self.settings;
        if req.body.len() > s.max_body_bytes {
            return Err(IngestError::PayloadTooLarge {
                size: req.body.len(),
                limit: s.max_body_bytes,
            });
        }
        if !is_json_content_type(req.headers) {
            return Err(IngestError::UnsupportedMediaType);
        }
        let now_ms = epoch_ms(req.received_at);
        let scheme = auth::verify(
            req.headers,
            req.body,
            &s.secrets,
            now_ms.div_euclid(1000),
            s.tolerance_seconds,
        )?;
        let (lead, warnings) = Lead::parse(req.body)?;
        let key = derive_key(&s.key_spec, req.headers, req.body, &lead);
        // From here on every log line of this request carries the lead's ID.
        tracing::Span::current().record("lead_id", key.id.as_str());
        for w in &warnings {
            warn!(field = w.field, key = %w.key, reason = w.reason, "unparseable value: field left absent, kept under extra");
        }
        if key.fell_back_to_body {
            warn!("configured idempotency key missing from the request: using the body");
        }
        let lock = req.remaining.unwrap_or(s.default_in_progress);
        let claim = Claim {
            id: key.id.clone(),
            body_hash: key.body_hash.clone(),
            expires_at: now_ms.div_euclid(1000) + s.ttl_seconds,
            in_progress_expires_at: now_ms + lock.as_millis() as i64,
            now_ms,
        };
        if let Some(duplicate) = self.claim(&claim).await? {
            return Ok(duplicate);
        }

        let envelope = Envelope::new(key.id.clone(), req.received_at, source.clone(), lead);
        let message = OutgoingMessage {
            body: envelope.to_json(),
            id: key.id.clone(),
            group: source.unwrap_or_else(|| "default".to_string()),
            trace_header: req.trace_header.map(str::to_string),
        };
        let sending = std::time::Instant::now();
        let sent = self.queue.send(&message).await;
        let enqueue = sending.elapsed();
        let message_id = match sent {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "enqueue failed: releasing the idempotency claim");
                if let Err(d) = self.store.abandon(&claim).await {
                    warn!(error = %d, "could not delete the claim; it expires on its own");
                }
                return Err(e.into());
            }
        };
        // The lead is queued whatever happens next. If marking it complete fails, a retry after
        // the lock expires queues it again, and the router's delivery ledger drops the repeat.
        let completed_expiry = epoch_ms(SystemTime::now()).div_euclid(1000) + s.ttl_seconds;
        if let Err(e) = self
            .store
            .complete(&key.id, &message_id, completed_expiry)
            .await
        {
            warn!(error = %e, "lead queued but the record could not be completed");
        }
        info!(scheme = scheme.as_str(), "accepted");
        Ok(Outcome::Accepted {
            id: key.id,
            message_id,
            enqueue,
        })
    }

    /// The conditional write, and what to do when someone else holds the key. `Some` is the
    /// answer for a request already queued; `None` means the key is ours.
    async fn claim(&self, claim: &Claim) -> Result<Option<Outcome>, IngestError> {
        for _ in 0..MAX_CLAIM_ATTEMPTS {
            let held = match self.store.begin(claim).await? {
                Begin::Claimed => return Ok(None),
                Begin::Contended => continue,
                Begin::Held(record) => record,
            };
            match judge(&held, claim.body_hash.as_deref(), claim.now_ms) {
                Verdict::Duplicate { message_id } => {
                    info!("duplicate");
                    return Ok(Some(Outcome::Duplicate {
                        id: claim.id.clone(),
                        message_id,
                    }));
                }
                Verdict::InProgress => {
                    return Err(IngestError::InProgress {
                        id: claim.id.clone(),
                    });
                }
                Verdict::KeyReused => {
                    return Err(IngestError::KeyReused {
                        id: claim.id.clone(),
                    });
                }
                Verdict::Retry => continue,
            }
        }
        Err(IngestError::InProgress {
            id: claim.id.clone(),
        })
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod properties;
