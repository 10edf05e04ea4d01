//! The ingest use case: the spec's checks in order (size → content type → authentication → JSON →
//! idempotency → enqueue), against the two ports. The HTTP answer is decided in [`http`] only.

pub mod config;
pub mod http;
pub mod lambda;

use lambda_http::http::{HeaderMap, Method};
use std::future::Future;
use std::time::{Duration, SystemTime};
use tracing::{info, warn};

use crate::auth::{self, AuthError, Secrets};
use crate::envelope::{self, Envelope, MAX_BODY_DEPTH};
use crate::idempotency::{
    Begin, Claim, IdempotencyStore, KeySpec, StoreError, Verdict, derive_key, judge,
};
use crate::lead::{BodyError, Lead, parse_object};
use crate::queue::{LeadQueue, OutgoingMessage, QueueError};

/// The route prefix; `/{source}` may follow.
pub const ROUTE: &str = "/api/clay/enriched";

/// serde_json's message for a document nested deeper than it reads.
const RECURSION_LIMIT: &str = "recursion limit exceeded";

/// How often a key that changes hands mid-write is retried (Powertools does 2 retries too).
const MAX_CLAIM_ATTEMPTS: usize = 3;

/// Ingest's settings (`config.rs` reads them from the environment).
#[derive(Debug, Clone)]
pub struct IngestSettings {
    pub secrets: Secrets,
    pub key_spec: KeySpec,
    pub ttl_seconds: i64,
    pub max_body_bytes: usize,
    /// The lead queue's maximum message size: the envelope must fit it.
    pub max_message_bytes: usize,
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
    #[error("the queue message would be {size} bytes, over the queue's {limit}-byte limit")]
    MessageTooLarge { size: usize, limit: usize },
    #[error("body nests deeper than {limit} levels")]
    TooDeep { limit: usize },
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
    /// The function's fetched secrets are refused by its configuration: nothing is accepted
    /// (not with the list they replaced, which may hold a removed token) until they are fixed.
    #[error(transparent)]
    SecretsRefused(#[from] crate::secret_refs::refreshing::SecretsRefused),
}

/// The use case, generic over its two ports.
pub struct Ingest<S, Q> {
    pub settings: IngestSettings,
    pub store: S,
    pub queue: Q,
}

/// Kept back from the invocation's deadline for giving a claim back after a failed or slow call,
/// so a 503 never leaves an `IN_PROGRESS` record behind a killed invocation.
pub const CLEANUP_RESERVE: Duration = Duration::from_millis(1_000);
/// The last stretch before the deadline: the answer itself needs it.
const ANSWER_MARGIN: Duration = Duration::from_millis(150);

/// Runs `call` until `until`; past it the call is dropped (its request cancelled) and `timed_out`
/// is the error.
async fn bounded<T, E>(
    until: tokio::time::Instant,
    call: impl Future<Output = Result<T, E>>,
    timed_out: impl FnOnce() -> E,
) -> Result<T, E> {
    match tokio::time::timeout_at(until, call).await {
        Ok(result) => result,
        Err(_) => Err(timed_out()),
    }
}

use crate::clock::epoch_ms;

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
        && (sub.eq_ignore_ascii_case("json") || sub.to_ascii_lowercase().ends_with("+json"))
}

impl<S: IdempotencyStore, Q: LeadQueue> Ingest<S, Q> {
    pub async fn handle(&self, req: IngestRequest<'_>) -> Result<Outcome, IngestError> {
        // The time left (`remaining`) was measured as the request arrived: count from here, not
        // from after parsing a body of up to 1 MiB.
        let started = tokio::time::Instant::now();
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
        let too_deep = IngestError::TooDeep {
            limit: MAX_BODY_DEPTH,
        };
        let object = match parse_object(req.body) {
            Ok(object) => object,
            // Deeper than serde_json reads at all: the same answer as deeper than we route.
            Err(BodyError::InvalidJson { message, .. }) if message == RECURSION_LIMIT => {
                return Err(too_deep);
            }
            Err(e) => return Err(e.into()),
        };
        if envelope::object_depth(&object) > MAX_BODY_DEPTH {
            return Err(too_deep);
        }
        let (lead, warnings) = Lead::from_object(object);
        let key = derive_key(&s.key_spec, req.headers, req.body, &lead, source.as_deref());
        // From here on every log line of this request carries the lead's ID.
        tracing::Span::current().record("lead_id", key.id.as_str());
        for w in &warnings {
            warn!(field = w.field, key = %w.key, reason = w.reason, "unparseable value: field left absent, kept under extra");
        }
        if key.fell_back_to_body {
            warn!("configured idempotency key missing from the request: using the body");
        }
        // What SQS receives is the envelope, not the body: it must fit before anything is written.
        let envelope = Envelope::new(key.id.clone(), req.received_at, source.clone(), lead);
        let message = OutgoingMessage {
            body: envelope.to_json(),
            id: key.id.clone(),
            group: source.unwrap_or_else(|| "default".to_string()),
            trace_header: req.trace_header.map(str::to_string),
        };
        // Room is left for the attributes of its dead-letter copy, which count toward the
        // same limit: a lead that fits the queue must fit the DLQ with its reason too.
        let limit = s
            .max_message_bytes
            .saturating_sub(crate::queue::DEAD_LETTER_ROOM);
        if message.body.len() > limit {
            return Err(IngestError::MessageTooLarge {
                size: message.body.len(),
                limit,
            });
        }
        // Every call is bounded by the invocation's own deadline, less what giving the claim
        // back needs: a slow DynamoDB or SQS turns into a clean 503, never a killed invocation.
        let lock = req.remaining.unwrap_or(s.default_in_progress);
        let deadline = started + lock;
        let calls_until = deadline
            .checked_sub(CLEANUP_RESERVE + ANSWER_MARGIN)
            .unwrap_or(deadline);
        let cleanup_until = deadline.checked_sub(ANSWER_MARGIN).unwrap_or(deadline);
        let claim = Claim {
            id: key.id.clone(),
            body_hash: key.body_hash.clone(),
            expires_at: now_ms.div_euclid(1000) + s.ttl_seconds,
            in_progress_expires_at: now_ms + lock.as_millis() as i64,
            now_ms,
            token: format!("{:016x}", fastrand::u64(..)),
        };
        let claimed = bounded(calls_until, self.claim(&claim), || {
            IngestError::Store(StoreError::Unavailable(
                "no answer within the invocation's time".into(),
            ))
        })
        .await;
        match claimed {
            Ok(None) => {}
            Ok(Some(duplicate)) => return Ok(duplicate),
            Err(e @ IngestError::Store(_)) => {
                // The put may have landed before the answer was lost: give back what may be ours.
                self.release(&claim, cleanup_until).await;
                return Err(e);
            }
            Err(e) => return Err(e),
        }

        let sending = std::time::Instant::now();
        let sent = bounded(calls_until, self.queue.send(&message), || {
            QueueError("no answer within the invocation's time".into())
        })
        .await;
        let enqueue = sending.elapsed();
        let message_id = match sent {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "enqueue failed: releasing the idempotency claim");
                self.release(&claim, cleanup_until).await;
                return Err(e.into());
            }
        };
        // The lead is queued whatever happens next. If marking it complete fails, a retry after
        // the lock expires queues it again, and the router's delivery ledger drops the repeat.
        let completed_expiry = epoch_ms(SystemTime::now()).div_euclid(1000) + s.ttl_seconds;
        let completed = bounded(
            cleanup_until,
            self.store.complete(&key.id, &message_id, completed_expiry),
            || StoreError::Unavailable("no answer within the invocation's time".into()),
        )
        .await;
        if let Err(e) = completed {
            warn!(error = %e, "lead queued but the record could not be completed");
        }
        info!(scheme = scheme.as_str(), "accepted");
        Ok(Outcome::Accepted {
            id: key.id,
            message_id,
            enqueue,
        })
    }

    /// Deletes our claim (guarded by its lock token), within what is left of the invocation.
    async fn release(&self, claim: &Claim, until: tokio::time::Instant) {
        let released = bounded(until, self.store.abandon(claim), || {
            StoreError::Unavailable("no answer within the invocation's time".into())
        })
        .await;
        if let Err(d) = released {
            warn!(error = %d, "could not delete the claim; its lock lapses at the deadline");
        }
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
