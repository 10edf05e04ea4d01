//! The router's decisions with in-memory ports, no network: which records fail, what is retried
//! within the invocation, what a redelivery sends, FIFO order, versions.

use super::*;
use crate::delivery::retry::{Attempt, RetryAfter};
use crate::lead::Lead;
use crate::queue::{DeadLetter, Redelivery};
use crate::router::ledger::{DELIVERED, DELIVERING, LedgerError, LedgerItem, Outcome};
use DestinationName::*;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::UNIX_EPOCH;

mod control;

/// The ledger's contract in memory: the same `covers` decision as the DynamoDB adapter.
#[derive(Default)]
struct MemoryLedger {
    items: Mutex<HashMap<(String, DestinationName), (LedgerItem, i64)>>,
    /// The table is unreachable: every claim fails.
    down: std::sync::atomic::AtomicBool,
}

impl DeliveryLedger for MemoryLedger {
    async fn claim(&self, c: &DeliveryClaim) -> Result<ClaimOutcome, LedgerError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(LedgerError("connection refused".into()));
        }
        let mut items = self.items.lock().unwrap();
        let (item, lock) = items
            .entry((c.id.clone(), c.destination))
            .or_insert_with(|| (LedgerItem::default(), 0));
        if item.covers(&c.version, c.received_at_ms) {
            return Ok(ClaimOutcome::AlreadyDelivered);
        }
        if item.status.as_deref() == Some(DELIVERING) && *lock >= c.now_ms {
            return Ok(ClaimOutcome::Busy);
        }
        item.status = Some(DELIVERING.into());
        *lock = c.lock_until_ms;
        Ok(ClaimOutcome::Claimed {
            failures: item.failures_of(&c.version),
        })
    }
    async fn delivered(&self, c: &DeliveryClaim, _: &Outcome) -> Result<(), LedgerError> {
        let mut items = self.items.lock().unwrap();
        let (item, _) = items.entry((c.id.clone(), c.destination)).or_default();
        item.status = Some(DELIVERED.into());
        item.delivered_version = Some(c.version.clone());
        item.delivered_received_at_ms = Some(c.received_at_ms);
        item.delivered_at = Some(c.now_ms);
        Ok(())
    }
    async fn release(
        &self,
        c: &DeliveryClaim,
        failures: Option<u32>,
        _: &Outcome,
    ) -> Result<(), LedgerError> {
        let mut items = self.items.lock().unwrap();
        let key = (c.id.clone(), c.destination);
        if let Some((item, lock)) = items.get_mut(&key)
            && item.status.as_deref() == Some(DELIVERING)
            && *lock == c.lock_until_ms
        {
            item.status = Some(crate::router::ledger::RELEASED.into());
            if let Some(f) = failures {
                item.failures = f;
                item.failed_version = Some(c.version.clone());
            }
        }
        Ok(())
    }
    async fn has_delivered(
        &self,
        id: &str,
        destination: DestinationName,
        version: &str,
        received_at_ms: i64,
    ) -> Result<bool, LedgerError> {
        let items = self.items.lock().unwrap();
        Ok(items
            .get(&(id.to_string(), destination))
            .is_some_and(|(i, _)| i.covers(version, received_at_ms)))
    }
}

/// Destinations that answer from a script (then `Delivered`), recording every attempt.
#[derive(Default)]
struct ScriptedDestinations {
    scripts: Mutex<HashMap<DestinationName, VecDeque<Attempt>>>,
    calls: Mutex<Vec<(DestinationName, String)>>,
    /// The timeout each request was given.
    timeouts: Mutex<Vec<Duration>>,
}

impl ScriptedDestinations {
    fn script(&self, name: DestinationName, attempts: Vec<Attempt>) {
        self.scripts.lock().unwrap().insert(name, attempts.into());
    }
    fn calls(&self, name: DestinationName) -> Vec<String> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, id)| id.clone())
            .collect()
    }
    fn total(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

impl Destinations for ScriptedDestinations {
    fn configured(&self, name: DestinationName) -> bool {
        name != Warehouse
    }
    async fn deliver(&self, name: DestinationName, env: &Envelope, timeout: Duration) -> Attempt {
        self.calls.lock().unwrap().push((name, env.id.clone()));
        self.timeouts.lock().unwrap().push(timeout);
        let next = self
            .scripts
            .lock()
            .unwrap()
            .get_mut(&name)
            .and_then(VecDeque::pop_front);
        next.unwrap_or(Attempt::Delivered)
    }
}

fn status(code: u16, retry_after: Option<RetryAfter>) -> Attempt {
    Attempt::Status {
        status: code,
        retry_after,
        detail: String::new(),
    }
}

fn router() -> Router<MemoryLedger, ScriptedDestinations> {
    Router {
        settings: RouterSettings {
            rules: rules::default_rules(),
            concurrency: 10,
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(5),
            delivery_ttl_seconds: 3600,
            max_receive_count: None,
            schedule: Default::default(),
            control: Default::default(),
            archive_days: 0,
        },
        ledger: MemoryLedger::default(),
        destinations: ScriptedDestinations::default(),
        redelivery: crate::queue::NoRedelivery,
        control: NoControl,
    }
}

/// A lead accepted at `at`.
fn envelope_at(name: &str, body: &str, at: SystemTime) -> Envelope {
    let lead = Lead::parse(body.as_bytes()).unwrap().0;
    Envelope::new(
        crate::idempotency::sha256_hex(name.as_bytes()),
        at,
        None,
        lead,
    )
}

/// A lead accepted `received_s` seconds after a base an hour before the tests started: recent,
/// so it is still owed (`RETRY_SCHEDULE_TOTAL` counts from its acceptance), in a fixed order.
fn envelope(name: &str, body: &str, received_s: u64) -> Envelope {
    static BASE: std::sync::OnceLock<SystemTime> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| SystemTime::now() - Duration::from_secs(3_600));
    let lead = Lead::parse(body.as_bytes()).unwrap().0;
    let id = crate::idempotency::sha256_hex(name.as_bytes());
    Envelope::new(id, base + Duration::from_secs(received_s), None, lead)
}

fn record(message_id: &str, env: &Envelope, group: Option<&str>) -> SqsMessage {
    let mut m = SqsMessage::default();
    m.message_id = Some(message_id.into());
    m.body = Some(env.to_json());
    if let Some(g) = group {
        m.attributes.insert("MessageGroupId".into(), g.into());
    }
    m
}

async fn failed<Q: Redelivery, C: DeliveryControl>(
    r: &Router<MemoryLedger, ScriptedDestinations, Q, C>,
    records: Vec<SqsMessage>,
) -> Vec<String> {
    let mut event = SqsEvent::default();
    event.records = records;
    let deadline = SystemTime::now() + Duration::from_secs(30);
    let response = r.handle(event, deadline).await.unwrap();
    response
        .batch_item_failures
        .into_iter()
        .map(|f| f.item_identifier)
        .collect()
}

const HOT: &str = r#"{"email":"a@b.co","icp_score":95}"#;

#[tokio::test(start_paused = true)]
async fn a_permanent_failure_fails_the_record_and_the_redelivery_sends_only_what_is_owed() {
    let r = router();
    let env = envelope("hot", HOT, 1_000);
    r.destinations.script(Outreach, vec![status(400, None)]);
    assert_eq!(failed(&r, vec![record("m1", &env, None)]).await, ["m1"]);
    for d in [Crm, Outreach, Slack, Zapier] {
        assert_eq!(
            r.destinations.calls(d).len(),
            1,
            "{d}: permanent failures are not retried"
        );
    }
    assert!(failed(&r, vec![record("m1", &env, None)]).await.is_empty());
    assert_eq!(r.destinations.calls(Outreach).len(), 2);
    assert_eq!(
        r.destinations.total(),
        5,
        "only the owed destination went out again"
    );
    assert!(failed(&r, vec![record("m1", &env, None)]).await.is_empty());
    assert_eq!(r.destinations.total(), 5, "nothing is sent twice");
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_within_the_invocation() {
    let r = router();
    let env = envelope("warm", r#"{"icp_score":60}"#, 1_000);
    r.destinations.script(
        Zapier,
        vec![
            status(503, None),
            status(429, Some(RetryAfter::Seconds(2))),
            status(500, None),
        ],
    );
    assert!(failed(&r, vec![record("m1", &env, None)]).await.is_empty());
    assert_eq!(
        r.destinations.calls(Zapier).len(),
        4,
        "three failures, then delivered"
    );
    assert_eq!(r.destinations.calls(Nurture).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_wait_past_the_deadline_fails_the_record_at_once() {
    let r = router();
    let env = envelope("warm", r#"{"icp_score":60}"#, 1_000);
    r.destinations
        .script(Zapier, vec![status(429, Some(RetryAfter::Seconds(600)))]);
    let started = tokio::time::Instant::now();
    assert_eq!(failed(&r, vec![record("m1", &env, None)]).await, ["m1"]);
    assert_eq!(r.destinations.calls(Zapier).len(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "no sleeping past the deadline"
    );
}

#[tokio::test(start_paused = true)]
async fn fifo_groups_stop_at_their_first_failure_and_others_go_on() {
    let r = router();
    let first = envelope("first", r#"{"icp_score":10}"#, 1_000);
    let second = envelope("second", r#"{"icp_score":10}"#, 1_000);
    let other = envelope("other", r#"{"icp_score":10}"#, 1_000);
    r.destinations.script(Zapier, vec![status(400, None)]);
    let got = failed(
        &r,
        vec![
            record("a", &first, Some("g1")),
            record("b", &second, Some("g1")),
            record("c", &other, Some("g2")),
        ],
    )
    .await;
    let mut got = got;
    got.sort();
    assert_eq!(got, ["a", "b"]);
    let sent = r.destinations.calls(Zapier);
    assert!(
        sent.contains(&other.id) && !sent.contains(&second.id),
        "{sent:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_newer_version_is_delivered_again_and_an_older_one_never() {
    let r = router();
    let v1 = envelope(
        "row",
        r#"{"email":"a@b.co","icp_score":85,"title":"CEO"}"#,
        1_000,
    );
    let v2 = envelope(
        "row",
        r#"{"email":"a@b.co","icp_score":85,"title":"CTO"}"#,
        2_000,
    );
    assert_eq!(v1.id, v2.id);
    assert!(failed(&r, vec![record("m1", &v1, None)]).await.is_empty());
    assert!(failed(&r, vec![record("m2", &v2, None)]).await.is_empty());
    assert_eq!(
        r.destinations.calls(Crm).len(),
        2,
        "the update reached the CRM"
    );
    assert!(failed(&r, vec![record("m1", &v1, None)]).await.is_empty());
    assert!(failed(&r, vec![record("m2", &v2, None)]).await.is_empty());
    assert_eq!(r.destinations.calls(Crm).len(), 2, "no repeat, no rollback");
}

#[tokio::test(start_paused = true)]
async fn a_record_that_is_not_an_envelope_fails_alone() {
    let r = router();
    let good = envelope("good", r#"{"icp_score":10}"#, 1_000);
    let mut bad = SqsMessage::default();
    bad.message_id = Some("bad".into());
    bad.body = Some("{not json".into());
    assert_eq!(
        failed(&r, vec![bad, record("good", &good, None)]).await,
        ["bad"]
    );
    assert_eq!(r.destinations.calls(Zapier), std::slice::from_ref(&good.id));
}

/// The queue's side of retries over hours, in memory: visibility changes and dead letters.
#[derive(Default)]
struct MemoryRedelivery {
    delays: Mutex<Vec<(String, Duration)>>,
    letters: Mutex<Vec<(String, String, u32)>>,
    requeued: Mutex<Vec<(String, Duration)>>,
}

impl Redelivery for MemoryRedelivery {
    fn enabled(&self) -> bool {
        true
    }
    async fn delay(&self, receipt: &str, wait: Duration) -> Result<(), crate::queue::QueueError> {
        self.delays.lock().unwrap().push((receipt.into(), wait));
        Ok(())
    }
    async fn dead_letter(&self, r: &DeadLetter<'_>) -> Result<(), crate::queue::QueueError> {
        self.letters
            .lock()
            .unwrap()
            .push((r.message_id.into(), r.reason.into(), r.receives));
        Ok(())
    }
    async fn requeue(&self, body: &str, wait: Duration) -> Result<(), crate::queue::QueueError> {
        self.requeued.lock().unwrap().push((body.into(), wait));
        Ok(())
    }
}

fn scheduled_router(
    steps: &str,
    total: &str,
) -> Router<MemoryLedger, ScriptedDestinations, MemoryRedelivery> {
    let plain = router();
    let mut settings = plain.settings;
    settings.schedule = RetrySchedule::parse(steps, total).unwrap();
    Router {
        settings,
        ledger: MemoryLedger::default(),
        destinations: ScriptedDestinations::default(),
        redelivery: MemoryRedelivery::default(),
        control: NoControl,
    }
}

/// A record on its `receives`-th receive, with a receipt handle.
fn received(message_id: &str, env: &Envelope, receives: u32) -> SqsMessage {
    let mut m = record(message_id, env, None);
    m.receipt_handle = Some(format!("rh-{message_id}-{receives}"));
    m.attributes
        .insert("ApproximateReceiveCount".into(), receives.to_string());
    m
}

#[tokio::test(start_paused = true)]
async fn a_failing_record_waits_out_the_schedule_then_reaches_the_dlq_with_its_reason() {
    let r = scheduled_router("30s,2m", "150s");
    let env = envelope_at("down", r#"{"icp_score":60}"#, SystemTime::now());
    // Nurture is down for every attempt of three receives.
    r.destinations.script(
        Nurture,
        vec![status(503, None); 3 * RetryPolicy::default().max_attempts as usize],
    );
    assert_eq!(failed(&r, vec![received("m1", &env, 1)]).await, ["m1"]);
    assert_eq!(failed(&r, vec![received("m1", &env, 2)]).await, ["m1"]);
    assert_eq!(
        *r.redelivery.delays.lock().unwrap(),
        [
            ("rh-m1-1".to_string(), Duration::from_secs(30)),
            ("rh-m1-2".to_string(), Duration::from_secs(120)),
        ]
    );
    // The third receive is the schedule's last: off to the DLQ (and so deleted from the queue).
    assert!(failed(&r, vec![received("m1", &env, 3)]).await.is_empty());
    let letters = r.redelivery.letters.lock().unwrap().clone();
    assert_eq!(letters.len(), 1);
    let (id, reason, receives) = &letters[0];
    assert_eq!((id.as_str(), *receives), ("m1", 3));
    assert!(
        reason.starts_with("retries exhausted after 3 failed receives over 150 s"),
        "{reason}"
    );
    assert!(reason.contains("nurture: answered 503"), "{reason}");
    assert_eq!(r.redelivery.delays.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_ledger_outage_late_in_a_records_life_waits_instead_of_ending_the_schedule() {
    // Many receives were holds (breaker, busy claims), not failures; then the table is
    // unreachable, so the ledger cannot say how many failures there were.
    let r = scheduled_router("30s,2m", "150s");
    r.ledger
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let env = envelope_at("held", r#"{"icp_score":60}"#, SystemTime::now());
    assert_eq!(failed(&r, vec![received("m1", &env, 40)]).await, ["m1"]);
    assert!(r.redelivery.letters.lock().unwrap().is_empty());
    assert_eq!(
        *r.redelivery.delays.lock().unwrap(),
        [("rh-m1-40".to_string(), Duration::from_secs(120))]
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_longer_than_the_step_is_honoured_across_receives() {
    let r = scheduled_router("30s", "1h");
    let env = envelope("limited", r#"{"icp_score":60}"#, 1_000);
    r.destinations.script(
        Nurture,
        vec![status(429, Some(RetryAfter::Seconds(600))); 4],
    );
    assert_eq!(failed(&r, vec![received("m1", &env, 1)]).await, ["m1"]);
    assert_eq!(
        *r.redelivery.delays.lock().unwrap(),
        [("rh-m1-1".to_string(), Duration::from_secs(600))]
    );
}

#[tokio::test(start_paused = true)]
async fn a_permanent_failure_goes_to_the_dlq_at_once_unless_another_destination_may_still_take_it()
{
    let r = scheduled_router("30s", "1h");
    let env = envelope("refused", HOT, 1_000);
    r.destinations.script(Outreach, vec![status(400, None)]);
    assert!(failed(&r, vec![received("m1", &env, 1)]).await.is_empty());
    let letters = r.redelivery.letters.lock().unwrap().clone();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].1, "permanent: outreach: answered 400");
    assert!(r.redelivery.delays.lock().unwrap().is_empty());

    // One permanent, one transient: it waits for the transient one.
    let r = scheduled_router("30s", "1h");
    let env = envelope("mixed", HOT, 1_000);
    r.destinations.script(Outreach, vec![status(400, None)]);
    r.destinations.script(Slack, vec![status(503, None); 4]);
    assert_eq!(failed(&r, vec![received("m2", &env, 1)]).await, ["m2"]);
    assert!(r.redelivery.letters.lock().unwrap().is_empty());
    assert_eq!(r.redelivery.delays.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_malformed_record_goes_to_the_dlq_with_its_reason_and_the_batch_goes_on() {
    let r = scheduled_router("30s", "1h");
    let env = envelope("fine", r#"{"icp_score":60}"#, 1_000);
    let mut bad = received("bad", &env, 1);
    bad.body = Some("{not json".into());
    assert!(
        failed(&r, vec![bad, received("ok", &env, 1)])
            .await
            .is_empty()
    );
    let letters = r.redelivery.letters.lock().unwrap().clone();
    assert_eq!(
        letters,
        [(
            "bad".to_string(),
            "permanent: malformed record".to_string(),
            1
        )]
    );
    assert_eq!(r.destinations.calls(Nurture).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn without_a_queue_to_ask_a_failing_record_just_fails() {
    let r = router();
    let env = envelope("plain", r#"{"icp_score":60}"#, 1_000);
    r.destinations.script(Nurture, vec![status(400, None)]);
    assert_eq!(failed(&r, vec![received("m1", &env, 1)]).await, ["m1"]);
}

/// No request starts on a truncated timeout: with less than a whole `HTTP_TIMEOUT_MS` left
/// before the deadline (less the bookkeeping reserve and the margin), the record waits for its
/// next receive without a request and without a failure; with enough, the request gets all of it.
#[tokio::test(start_paused = true)]
async fn no_attempt_starts_that_cannot_run_its_whole_timeout() {
    let r = scheduled_router("30s", "1h");
    let env = envelope_at("late", r#"{"icp_score":60}"#, SystemTime::now());
    r.destinations.script(Nurture, vec![Attempt::Delivered]);
    let full = r.settings.request_timeout;
    let short =
        BOOKKEEPING_RESERVE + r.settings.retry.safety_margin + full - Duration::from_millis(300);
    let mut event = SqsEvent::default();
    event.records = vec![received("m1", &env, 1)];
    let response = r
        .handle(event.clone(), SystemTime::now() + short)
        .await
        .unwrap();
    assert_eq!(response.batch_item_failures.len(), 1, "it waits");
    assert!(
        r.destinations.calls(Nurture).is_empty(),
        "no request started"
    );
    assert!(r.destinations.timeouts.lock().unwrap().is_empty());
    let item = r
        .ledger
        .items
        .lock()
        .unwrap()
        .get(&(env.id.clone(), Nurture))
        .map(|(i, _)| i.failures);
    assert_eq!(item.unwrap_or(0), 0, "no failure counted");
    assert!(r.redelivery.letters.lock().unwrap().is_empty());

    let response = r
        .handle(event, SystemTime::now() + short + Duration::from_secs(1))
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(r.destinations.calls(Nurture).len(), 1);
    let timeouts = r.destinations.timeouts.lock().unwrap().clone();
    assert!(timeouts.iter().all(|t| *t == full), "{timeouts:?}");
}
