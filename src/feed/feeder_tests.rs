//! The feeder's decisions with in-memory ports, no network: what reaches Clay once, what is
//! dead-lettered, rotation past a full webhook, the daily budget, the circuit breaker.

use super::*;
use crate::delivery::retry::{Attempt, RetryAfter};
use crate::feed::clay::ClayWebhooks;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

#[derive(Default)]
struct MemoryStore {
    counters: Mutex<HashMap<String, i64>>,
    breaker: Mutex<BreakerState>,
    sent: Mutex<HashSet<String>>,
    /// Live claims: message id to (token, lock until).
    claims: Mutex<HashMap<String, (String, i64)>>,
}

impl FeedStore for MemoryStore {
    async fn breaker(&self) -> Result<BreakerState, StoreError> {
        Ok(*self.breaker.lock().unwrap())
    }
    async fn breaker_failed(
        &self,
        policy: &BreakerPolicy,
        now_ms: i64,
    ) -> Result<BreakerState, StoreError> {
        let mut b = self.breaker.lock().unwrap();
        *b = b.after_failure(policy, now_ms);
        Ok(*b)
    }
    async fn breaker_succeeded(&self, now_ms: i64) -> Result<BreakerState, StoreError> {
        let mut b = self.breaker.lock().unwrap();
        *b = b.after_success(now_ms);
        Ok(*b)
    }
    async fn breaker_open_until(&self, until_ms: i64) -> Result<BreakerState, StoreError> {
        let mut b = self.breaker.lock().unwrap();
        *b = b.open_until(until_ms);
        Ok(*b)
    }
    async fn take(&self, counter: &str, limit: u64, _exp: Option<i64>) -> Result<bool, StoreError> {
        let mut counters = self.counters.lock().unwrap();
        let n = counters.entry(counter.to_string()).or_default();
        if *n < limit as i64 {
            *n += 1;
            Ok(true)
        } else {
            Ok(false)
        }
    }
    async fn add(&self, counter: &str, delta: i64) -> Result<(), StoreError> {
        *self
            .counters
            .lock()
            .unwrap()
            .entry(counter.to_string())
            .or_default() += delta;
        Ok(())
    }
    async fn claim_row(&self, c: &RowClaim) -> Result<RowClaimed, StoreError> {
        if self.sent.lock().unwrap().contains(&c.message_id) {
            return Ok(RowClaimed::Handled);
        }
        let mut claims = self.claims.lock().unwrap();
        match claims.get(&c.message_id) {
            Some((token, until)) if *token != c.token && *until >= c.now_ms => Ok(RowClaimed::Busy),
            _ => {
                claims.insert(c.message_id.clone(), (c.token.clone(), c.lock_until_ms));
                Ok(RowClaimed::Claimed)
            }
        }
    }
    async fn release_row(&self, c: &RowClaim) -> Result<(), StoreError> {
        let mut claims = self.claims.lock().unwrap();
        if claims
            .get(&c.message_id)
            .is_some_and(|(t, _)| *t == c.token)
        {
            claims.remove(&c.message_id);
        }
        Ok(())
    }
    async fn mark_sent(&self, message_id: &str, _exp: i64) -> Result<(), StoreError> {
        self.sent.lock().unwrap().insert(message_id.to_string());
        Ok(())
    }
}

#[derive(Default)]
struct MemoryIntake {
    postponed: Mutex<Vec<String>>,
    dead: Mutex<Vec<(String, String)>>,
}

impl Intake for MemoryIntake {
    async fn postpone(&self, receipt_handle: &str, _seconds: i64) -> Result<(), IntakeError> {
        self.postponed
            .lock()
            .unwrap()
            .push(receipt_handle.to_string());
        Ok(())
    }
    async fn dead_letter(&self, message: &SqsMessage, reason: &str) -> Result<(), IntakeError> {
        let id = message.message_id.clone().unwrap_or_default();
        self.dead.lock().unwrap().push((id, reason.to_string()));
        Ok(())
    }
}

/// Clay answering from a script (then 200), recording which webhook got which row.
#[derive(Default)]
struct ScriptedClay {
    script: Mutex<VecDeque<Attempt>>,
    posts: Mutex<Vec<(String, String)>>,
}

impl ClayWebhooks for ScriptedClay {
    async fn post(&self, webhook: &ClayWebhook, body: &[u8]) -> Attempt {
        let row = String::from_utf8_lossy(body).into_owned();
        self.posts.lock().unwrap().push((webhook.url.clone(), row));
        self.script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Attempt::Delivered)
    }
    fn request_timeout(&self) -> Duration {
        Duration::from_secs(1)
    }
}

type TestFeeder = Feeder<MemoryStore, MemoryIntake, ScriptedClay>;

fn feeder(webhooks: usize, limit: u64, budget: Option<u64>) -> TestFeeder {
    let urls: Vec<String> = (1..=webhooks)
        .map(|i| format!("https://api.clay.com/hook-{i}"))
        .collect();
    Feeder::new(
        FeederSettings {
            webhooks: crate::feed::webhooks(&urls, &[]).unwrap(),
            limit,
            rate_per_instance: 10.0,
            daily_budget: budget,
            breaker: BreakerPolicy {
                threshold: 2,
                cooldown: Duration::from_secs(300),
            },
            retry: RetryPolicy {
                max_attempts: 2,
                ..RetryPolicy::default()
            },
            sent_ttl_seconds: 3600,
        },
        MemoryStore::default(),
        MemoryIntake::default(),
        ScriptedClay::default(),
    )
}

fn batch(rows: &[&str]) -> SqsEvent {
    let mut event = SqsEvent::default();
    for (i, row) in rows.iter().enumerate() {
        let mut m = SqsMessage::default();
        m.message_id = Some(format!("m{i}"));
        m.receipt_handle = Some(format!("r{i}"));
        m.body = Some(row.to_string());
        event.records.push(m);
    }
    event
}

async fn failed(f: &TestFeeder, rows: &[&str]) -> Vec<String> {
    let deadline = SystemTime::now() + Duration::from_secs(60);
    let r = f.handle(batch(rows), deadline).await.unwrap();
    r.batch_item_failures
        .into_iter()
        .map(|x| x.item_identifier)
        .collect()
}

fn posts(f: &TestFeeder) -> Vec<(String, String)> {
    f.clay.posts.lock().unwrap().clone()
}

fn status(code: u16) -> Attempt {
    Attempt::Status {
        status: code,
        retry_after: None::<RetryAfter>,
        detail: String::new(),
    }
}

#[tokio::test(start_paused = true)]
async fn rows_reach_clay_once_and_hopeless_rows_go_to_the_dlq() {
    let f = feeder(1, 100, None);
    let rows = [
        r#"{"email":"a@b.co"}"#,
        r#""not an object""#,
        r#"{"email":"c@d.co"}"#,
    ];
    assert!(failed(&f, &rows).await.is_empty());
    assert_eq!(posts(&f).len(), 2);
    let dead = f.intake.dead.lock().unwrap().clone();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, "m1");
    // The same batch again (a redelivery): nothing reaches Clay twice.
    assert!(failed(&f, &rows).await.is_empty());
    assert_eq!(posts(&f).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_row_clay_refuses_for_good_is_dead_lettered_with_clays_answer() {
    let f = feeder(1, 100, None);
    f.clay.script.lock().unwrap().push_back(status(400));
    assert!(failed(&f, &[r#"{"email":"a@b.co"}"#]).await.is_empty());
    assert_eq!(posts(&f).len(), 1, "a 400 is not retried");
    let dead = f.intake.dead.lock().unwrap().clone();
    assert!(dead[0].1.contains("400"), "{dead:?}");
}

#[tokio::test(start_paused = true)]
async fn a_full_webhook_rotates_to_the_next_and_all_full_waits() {
    let f = feeder(2, 1, None);
    let rows = [r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":3}"#];
    let got = failed(&f, &rows).await;
    let hooks: Vec<String> = posts(&f).into_iter().map(|(u, _)| u).collect();
    assert_eq!(
        hooks,
        ["https://api.clay.com/hook-1", "https://api.clay.com/hook-2"]
    );
    assert_eq!(got, ["m2"], "the third row waits: every webhook is full");
    assert!(f.store.breaker.lock().unwrap().open_until_ms > 0);
    assert_eq!(*f.intake.postponed.lock().unwrap(), ["r2"]);
}

#[tokio::test(start_paused = true)]
async fn the_daily_budget_holds_rows_back_without_taking_a_webhook_slot() {
    let f = feeder(1, 100, Some(1));
    let got = failed(&f, &[r#"{"n":1}"#, r#"{"n":2}"#]).await;
    assert_eq!(got, ["m1"]);
    assert_eq!(posts(&f).len(), 1);
    let counters = f.store.counters.lock().unwrap().clone();
    let webhook = &f.settings.webhooks[0];
    assert_eq!(
        counters[&webhook_counter(webhook)],
        1,
        "the held-back row took no slot"
    );
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_open_the_breaker_and_the_rest_of_the_batch_waits() {
    let f = feeder(1, 100, None);
    // Two rows fail every attempt (503 twice each); the breaker opens at the second.
    f.clay
        .script
        .lock()
        .unwrap()
        .extend([status(503), status(503), status(503), status(503)]);
    let rows = [r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":3}"#, r#"{"n":4}"#];
    let got = failed(&f, &rows).await;
    assert_eq!(got, ["m0", "m1", "m2", "m3"], "nothing is lost");
    assert_eq!(posts(&f).len(), 4, "rows 3 and 4 were not tried");
    assert!(
        f.store
            .breaker
            .lock()
            .unwrap()
            .is_open(crate::clock::epoch_ms(SystemTime::now()))
    );
    assert_eq!(
        f.intake.postponed.lock().unwrap().len(),
        4,
        "they wait instead of burning receives"
    );
    let counters = f.store.counters.lock().unwrap().clone();
    let webhook = &f.settings.webhooks[0];
    assert!(counters[&webhook_counter(webhook)] <= 4, "{counters:?}");
}

#[tokio::test(start_paused = true)]
async fn a_retry_needs_a_submission_of_its_own_and_none_is_taken_past_the_limit() {
    // One submission per webhook: a 503 may have used hook-1's only one, so no retry goes to it.
    let f = feeder(2, 1, None);
    f.clay.script.lock().unwrap().push_back(status(503));
    let row = [r#"{"n":1}"#];
    assert_eq!(failed(&f, &row).await, ["m0"], "the row is not lost");
    assert_eq!(posts(&f).len(), 1, "no retry past hook-1's limit");
    // Its redelivery goes to the next webhook.
    assert!(failed(&f, &row).await.is_empty());
    let hooks: Vec<String> = posts(&f).into_iter().map(|(u, _)| u).collect();
    assert_eq!(
        hooks,
        ["https://api.clay.com/hook-1", "https://api.clay.com/hook-2"]
    );
    let counters = f.store.counters.lock().unwrap().clone();
    assert_eq!(counters[&webhook_counter(&f.settings.webhooks[0])], 1);
}
