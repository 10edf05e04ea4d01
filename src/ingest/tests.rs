//! The use case with in-memory ports: the order of checks and the claim's timing, no network.

use super::*;
use crate::idempotency::{Record, Status};
use lambda_http::http::HeaderValue;
use std::sync::Mutex;
use std::time::UNIX_EPOCH;

#[derive(Default)]
pub(super) struct MemoryStore {
    claims: Mutex<Vec<Claim>>,
    completed: Mutex<Vec<String>>,
    abandoned: Mutex<Vec<Claim>>,
    held: Mutex<Option<Record>>,
    fail_complete: bool,
}

impl IdempotencyStore for MemoryStore {
    async fn begin(&self, claim: &Claim) -> Result<Begin, StoreError> {
        self.claims.lock().unwrap().push(claim.clone());
        Ok(match self.held.lock().unwrap().clone() {
            Some(r) => Begin::Held(r),
            None => Begin::Claimed,
        })
    }
    async fn complete(&self, _id: &str, message_id: &str, _exp: i64) -> Result<(), StoreError> {
        if self.fail_complete {
            return Err(StoreError::Unavailable("down".into()));
        }
        self.completed.lock().unwrap().push(message_id.to_string());
        Ok(())
    }
    async fn abandon(&self, claim: &Claim) -> Result<(), StoreError> {
        self.abandoned.lock().unwrap().push(claim.clone());
        Ok(())
    }
}

#[derive(Default)]
pub(super) struct MemoryQueue {
    pub(super) sent: Mutex<Vec<OutgoingMessage>>,
    fail: bool,
    /// A queue that never answers: the slow dependency the time budget is for.
    hang: bool,
}

impl LeadQueue for MemoryQueue {
    async fn send(&self, m: &OutgoingMessage) -> Result<String, QueueError> {
        if self.hang {
            std::future::pending::<()>().await;
        }
        if self.fail {
            return Err(QueueError("down".into()));
        }
        self.sent.lock().unwrap().push(m.clone());
        Ok(format!("m-{}", self.sent.lock().unwrap().len()))
    }
}

pub(super) const TOKEN: &str = "tok-0123456789abcdef";
pub(super) const T0: u64 = 1_800_000_000;

pub(super) fn ingest(store: MemoryStore, queue: MemoryQueue) -> Ingest<MemoryStore, MemoryQueue> {
    Ingest {
        settings: IngestSettings {
            secrets: Secrets::parse(TOKEN).unwrap(),
            key_spec: KeySpec::Body,
            ttl_seconds: 100,
            max_body_bytes: 64,
            // Envelopes up to 1 KiB, with room for a dead-letter copy's attributes.
            max_message_bytes: 1_024 + crate::queue::DEAD_LETTER_ROOM,
            tolerance_seconds: 300,
            default_in_progress: Duration::from_secs(30),
        },
        store,
        queue,
    }
}

fn headers(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("x-clay-signature", HeaderValue::from_str(token).unwrap());
    h
}

async fn call(
    i: &Ingest<MemoryStore, MemoryQueue>,
    h: &HeaderMap,
    body: &[u8],
    remaining: Option<Duration>,
) -> Result<Outcome, IngestError> {
    i.handle(IngestRequest {
        method: &Method::POST,
        path: "/api/clay/enriched/",
        headers: h,
        body,
        received_at: UNIX_EPOCH + Duration::from_secs(T0),
        remaining,
        trace_header: None,
    })
    .await
}

#[tokio::test]
async fn claim_lock_is_the_lambda_remaining_time_else_the_default() {
    let i = ingest(MemoryStore::default(), MemoryQueue::default());
    call(
        &i,
        &headers(TOKEN),
        b"{}",
        Some(Duration::from_millis(4_321)),
    )
    .await
    .unwrap();
    call(&i, &headers(TOKEN), b"{\"a\":1}", None).await.unwrap();
    let claims = i.store.claims.lock().unwrap().clone();
    let t0_ms = T0 as i64 * 1000;
    assert_eq!(claims[0].now_ms, t0_ms);
    assert_eq!(claims[0].in_progress_expires_at, t0_ms + 4_321);
    assert_eq!(claims[1].in_progress_expires_at, t0_ms + 30_000);
    assert_eq!(claims[0].expires_at, T0 as i64 + 100);
}

#[tokio::test]
async fn checks_run_in_the_spec_order_and_nothing_is_touched_before_auth() {
    let i = ingest(MemoryStore::default(), MemoryQueue::default());
    let big = [b'x'; 65];
    // Too big and unauthenticated and not JSON: size wins.
    let r = call(&i, &HeaderMap::new(), &big, None).await;
    assert!(matches!(
        r,
        Err(IngestError::PayloadTooLarge {
            size: 65,
            limit: 64
        })
    ));
    // Unauthenticated and bad content type: content type wins.
    let r = call(&i, &HeaderMap::new(), b"{}", None).await;
    assert!(matches!(r, Err(IngestError::UnsupportedMediaType)));
    // Unauthenticated and not JSON: authentication wins.
    let r = call(&i, &headers("nope"), b"not json", None).await;
    assert!(matches!(r, Err(IngestError::Unauthorized(_))));
    let r = call(&i, &headers(TOKEN), b"not json", None).await;
    assert!(matches!(r, Err(IngestError::InvalidJson(_))));
    assert!(i.store.claims.lock().unwrap().is_empty());
    assert!(i.queue.sent.lock().unwrap().is_empty());
}

#[tokio::test]
async fn failed_send_abandons_exactly_our_claim() {
    let queue = MemoryQueue {
        fail: true,
        ..Default::default()
    };
    let i = ingest(MemoryStore::default(), queue);
    let r = call(&i, &headers(TOKEN), b"{}", None).await;
    assert!(matches!(r, Err(IngestError::Queue(_))));
    let claims = i.store.claims.lock().unwrap().clone();
    assert_eq!(*i.store.abandoned.lock().unwrap(), claims);
    assert!(i.store.completed.lock().unwrap().is_empty());
}

/// A queue that never answers: the send is cut off before the invocation's deadline, with time
/// left to give the claim back, so the 503 leaves no record behind.
#[tokio::test(start_paused = true)]
async fn a_hanging_queue_is_cut_off_in_time_to_release_the_claim() {
    let queue = MemoryQueue {
        hang: true,
        ..Default::default()
    };
    let i = ingest(MemoryStore::default(), queue);
    let remaining = Duration::from_secs(3);
    let started = tokio::time::Instant::now();
    let r = call(&i, &headers(TOKEN), b"{}", Some(remaining)).await;
    let took = started.elapsed();
    assert!(matches!(r, Err(IngestError::Queue(_))), "{r:?}");
    assert!(took <= remaining - CLEANUP_RESERVE, "{took:?}");
    let claims = i.store.claims.lock().unwrap().clone();
    assert_eq!(claims.len(), 1);
    assert_eq!(*i.store.abandoned.lock().unwrap(), claims);
    assert_eq!(
        http::respond(&r).status(),
        lambda_http::http::StatusCode::SERVICE_UNAVAILABLE
    );
}

/// The envelope, not the body, must fit the queue: a body under `MAX_BODY_BYTES` whose message
/// would not fit is a 413 before anything is written, never a 503 on every retry.
#[tokio::test]
async fn a_body_whose_message_would_not_fit_the_queue_is_413() {
    let mut i = ingest(MemoryStore::default(), MemoryQueue::default());
    i.settings.max_body_bytes = 1_024;
    // 1,000 bytes of body: the envelope adds its id, time and wrapping (about 200 bytes).
    let body = format!(r#"{{"note":"{}"}}"#, "x".repeat(1_000 - 11));
    assert_eq!(body.len(), 1_000);
    let r = call(&i, &headers(TOKEN), body.as_bytes(), None).await;
    let Err(IngestError::MessageTooLarge { size, limit }) = r else {
        panic!("{r:?}");
    };
    assert!(size > limit && limit == 1_024, "{size} {limit}");
    let response = http::respond(&Err(IngestError::MessageTooLarge { size, limit }));
    assert_eq!(response.status().as_u16(), 413);
    assert!(
        std::str::from_utf8(response.body().as_ref())
            .unwrap()
            .contains("payload_too_large")
    );
    assert!(i.store.claims.lock().unwrap().is_empty());
    assert!(i.queue.sent.lock().unwrap().is_empty());
    // A body whose envelope fits goes through.
    let body = format!(r#"{{"note":"{}"}}"#, "x".repeat(700));
    assert!(
        call(&i, &headers(TOKEN), body.as_bytes(), None)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_body_too_deep_for_the_router_is_400_too_deep() {
    let mut i = ingest(MemoryStore::default(), MemoryQueue::default());
    i.settings.max_body_bytes = 4_096;
    let levels = crate::envelope::MAX_BODY_DEPTH + 1;
    let body = format!(
        "{}{{}}{}",
        "{\"a\":".repeat(levels - 1),
        "}".repeat(levels - 1)
    );
    let r = call(&i, &headers(TOKEN), body.as_bytes(), None).await;
    assert!(matches!(r, Err(IngestError::TooDeep { .. })), "{r:?}");
    let response = http::respond(&r);
    assert_eq!(response.status().as_u16(), 400);
    assert!(
        std::str::from_utf8(response.body().as_ref())
            .unwrap()
            .contains("too_deep")
    );
    assert!(i.store.claims.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_queued_lead_is_accepted_even_if_completion_fails() {
    let store = MemoryStore {
        fail_complete: true,
        ..Default::default()
    };
    let i = ingest(store, MemoryQueue::default());
    let r = call(&i, &headers(TOKEN), b"{}", None).await.unwrap();
    assert!(matches!(r, Outcome::Accepted { .. }));
    assert!(i.store.abandoned.lock().unwrap().is_empty());
    assert_eq!(i.queue.sent.lock().unwrap().len(), 1);
    assert_eq!(i.queue.sent.lock().unwrap()[0].group, "default");
}

#[tokio::test]
async fn a_key_that_keeps_changing_hands_gives_up_with_in_progress() {
    let store = MemoryStore::default();
    *store.held.lock().unwrap() = Some(Record {
        status: Status::Completed,
        expires_at: 0, // expired: judge says retry every time
        in_progress_expires_at: None,
        message_id: None,
        body_hash: None,
        lock_token: None,
    });
    let i = ingest(store, MemoryQueue::default());
    let r = call(&i, &headers(TOKEN), b"{}", None).await;
    assert!(matches!(r, Err(IngestError::InProgress { .. })));
    assert_eq!(i.store.claims.lock().unwrap().len(), MAX_CLAIM_ATTEMPTS);
    assert!(i.queue.sent.lock().unwrap().is_empty());
}

#[test]
fn routes() {
    assert_eq!(route_source("/api/clay/enriched").unwrap(), None);
    assert_eq!(route_source("/api/clay/enriched/").unwrap(), None);
    assert_eq!(
        route_source("/api/clay/enriched/a-B_9").unwrap().as_deref(),
        Some("a-B_9")
    );
    assert!(matches!(
        route_source("/api/clay/enrichedX"),
        Err(IngestError::NotFound)
    ));
    assert!(matches!(
        route_source("/api/clay/enriched/a/b"),
        Err(IngestError::NotFound)
    ));
    assert!(matches!(
        route_source("/api/clay/enriched/a%20b"),
        Err(IngestError::InvalidSource)
    ));
    assert!(matches!(route_source("/"), Err(IngestError::NotFound)));
}

#[tokio::test]
async fn a_timestamped_request_is_accepted_in_its_window_and_refused_after() {
    let i = ingest(MemoryStore::default(), MemoryQueue::default());
    let body = br#"{"email":"a@b.co"}"#;
    let signed = |ts: u64| {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        let sig = crate::auth::timestamped_hmac_hex(TOKEN.as_bytes(), ts as i64, body);
        h.insert("x-clay-signature", HeaderValue::from_str(&sig).unwrap());
        h.insert("x-clay-timestamp", HeaderValue::from(ts));
        h
    };
    let r = call(&i, &signed(T0 - 10), body, None).await;
    assert!(matches!(r, Ok(Outcome::Accepted { .. })), "{r:?}");
    // The same request captured and replayed ten minutes later.
    let r = call(&i, &signed(T0 - 600), body, None).await;
    assert!(
        matches!(r, Err(IngestError::Unauthorized(AuthError::StaleTimestamp))),
        "{r:?}"
    );
}

/// The largest envelope ingest accepts still fits the dead-letter queue with its attributes
/// (SQS counts them toward the same limit): at the exact boundary a lead is accepted, one byte
/// more is a 413, and the accepted one's DLQ copy with the longest reason fits the queue.
#[tokio::test]
async fn the_largest_accepted_lead_still_fits_the_dead_letter_queue() {
    let mut i = ingest(MemoryStore::default(), MemoryQueue::default());
    i.settings.max_body_bytes = 4_096;
    let limit = i.settings.max_message_bytes - crate::queue::DEAD_LETTER_ROOM;
    let body = |n: usize| format!(r#"{{"note":"{}"}}"#, "x".repeat(n));
    let Err(IngestError::MessageTooLarge { size, .. }) =
        call(&i, &headers(TOKEN), body(2_000).as_bytes(), None).await
    else {
        panic!("2,000 bytes of note do not fit a 1 KiB envelope");
    };
    // One more byte of note is one more byte of envelope.
    let exact = 2_000 - (size - limit);
    let r = call(&i, &headers(TOKEN), body(exact + 1).as_bytes(), None).await;
    assert!(
        matches!(r, Err(IngestError::MessageTooLarge { size, limit: l }) if size == limit + 1 && l == limit),
        "{r:?}"
    );
    call(&i, &headers(TOKEN), body(exact).as_bytes(), None)
        .await
        .unwrap();
    let sent = i.queue.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].body.len(), limit, "accepted at the exact boundary");
    let long_reason = "retries exhausted: nurture: answered 503; ".repeat(100);
    let letter = crate::queue::DeadLetter {
        body: &sent[0].body,
        reason: &long_reason,
        receives: u32::MAX,
        group: None,
        message_id: "m",
    };
    assert!(
        crate::queue::dead_letter_size(&letter) <= i.settings.max_message_bytes,
        "{} > {}",
        crate::queue::dead_letter_size(&letter),
        i.settings.max_message_bytes
    );
    // Replayed to every destination and then redriven, its copy still fits.
    let mut again = crate::envelope::Envelope::parse(&sent[0].body).unwrap();
    again.replay = Some(crate::envelope::Replay {
        at_ms: i64::MAX,
        force: true,
        destinations: crate::delivery::names::DestinationName::ALL.to_vec(),
    });
    again.redriven_at_ms = Some(i64::MAX);
    let grown = again.to_json();
    let letter = crate::queue::DeadLetter {
        body: &grown,
        ..letter
    };
    assert!(
        crate::queue::dead_letter_size(&letter) <= i.settings.max_message_bytes,
        "{} > {}",
        crate::queue::dead_letter_size(&letter),
        i.settings.max_message_bytes
    );
    assert_eq!(
        crate::queue::short_reason(&long_reason).len(),
        crate::queue::MAX_REASON_BYTES
    );
    // A reason of multi-byte characters is cut on a character boundary.
    let wide = "é".repeat(1_000);
    assert!(crate::queue::short_reason(&wide).len() <= crate::queue::MAX_REASON_BYTES);
}
