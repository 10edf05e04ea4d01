//! The feeder storm: rows on the intake queue, two feeder instances (the template's
//! `MaximumConcurrency`) sharing the DynamoDB counters, and a Clay that answers 429s, 5xx,
//! too slowly and now and then 422 at seeded random — and, like Clay, answers 200 past a
//! webhook's submission limit while creating nothing. One invocation in ten "dies" after its
//! batch ran, so SQS offers the whole batch again. More rows than the webhooks can take: the
//! rest must wait on the queue.

use super::support::Aws;
use super::support::clay::{FakeClay, Script};
use super::{Row, queue_with_dlq};
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use clayhook::delivery::retry::RetryPolicy;
use clayhook::feed::clay::ClayClient;
use clayhook::feed::dynamodb::DynamoDbFeedStore;
use clayhook::feed::feeder::{Feeder, FeederSettings, webhook_counter};
use clayhook::feed::sqs::SqsIntake;
use clayhook::feed::{BreakerPolicy, webhooks};
use clayhook::local::poller::{Poller, SqsBatchHandler};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

const TOKEN: &str = "clay-storm-token-77d";
const WEBHOOKS: usize = 3;
const LIMIT: u64 = 100;
const GOOD_ROWS: usize = 330;

/// A feeder instance whose invocation now and then dies after its batch ran: the response
/// is lost and every record of the batch comes back.
struct Dying<'a, H> {
    inner: &'a H,
    rng: Mutex<fastrand::Rng>,
    deaths: AtomicUsize,
}

/// The invocation died before answering.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Died(String);

impl<H: SqsBatchHandler> SqsBatchHandler for Dying<'_, H> {
    type Error = Died;
    async fn handle_with(
        &self,
        event: SqsEvent,
        deadline: SystemTime,
        metrics: &clayhook::metrics::Metrics,
    ) -> Result<SqsBatchResponse, Died> {
        let response = self
            .inner
            .handle_with(event, deadline, metrics)
            .await
            .map_err(|e| Died(e.to_string()))?;
        if self.rng.lock().expect("rng").u32(0..10) == 0 {
            self.deaths.fetch_add(1, Ordering::Relaxed);
            return Err(Died("the instance died before answering".into()));
        }
        Ok(response)
    }
}

fn script(rng: &mut fastrand::Rng, steps: usize) -> Vec<Script> {
    (0..steps)
        .map(|_| match rng.u32(0..100) {
            0..=11 => Script::Status(429, Some(0)),
            12..=19 => Script::Status(503, None),
            20..=23 => Script::Status(500, None),
            24..=27 => Script::Slow(Duration::from_millis(1_500)),
            28..=29 => Script::Status(422, None),
            _ => Script::Take,
        })
        .collect()
}

fn settings(clay: &FakeClay) -> FeederSettings {
    let urls: Vec<String> = (1..=WEBHOOKS).map(|i| clay.webhook(i)).collect();
    FeederSettings {
        webhooks: webhooks(&urls, &[TOKEN.to_string()]).expect("webhooks"),
        limit: LIMIT,
        // Correctness, not Clay's rate, is under test here.
        rate_per_instance: 25.0,
        daily_budget: None,
        breaker: BreakerPolicy {
            threshold: 5,
            cooldown: Duration::from_secs(2),
        },
        retry: RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(20),
            cap: Duration::from_millis(200),
            safety_margin: Duration::from_millis(200),
        },
        sent_ttl_seconds: 3600,
    }
}

/// The row number a body carries, or the body itself for rows that are not objects.
fn row_key(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("n").and_then(Value::as_u64))
        .map_or_else(|| body.to_string(), |n| n.to_string())
}

pub async fn feeder_storm(seed: u64) -> Row {
    let aws = Aws::fresh().await;
    let (queue, queue_arn, dlq) = queue_with_dlq(&aws, 1000).await;
    let clay = FakeClay::start(Some(TOKEN)).await;
    clay.silent_limit(LIMIT);
    let mut rng = fastrand::Rng::with_seed(seed);
    clay.script(script(&mut rng, 2_000));

    let mut bodies: Vec<String> = (1..=GOOD_ROWS)
        .map(|n| {
            json!({"n": n, "email": format!("f{n}@storm.invalid"), "source": "form"}).to_string()
        })
        .collect();
    bodies.extend([
        "[1,2]".to_string(),
        "not json".into(),
        "\"a string\"".into(),
    ]);
    bodies.push(json!({"n": 0, "notes": "x".repeat(120_000)}).to_string());
    rng.shuffle(&mut bodies);
    let expected: HashSet<String> = bodies.iter().map(|b| row_key(b)).collect();
    for chunk in bodies.chunks(10) {
        let mut batch = aws.sqs.send_message_batch().queue_url(&queue);
        for (i, b) in chunk.iter().enumerate() {
            batch = batch.entries(
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(b)
                    .build()
                    .expect("entry"),
            );
        }
        batch.send().await.expect("send batch");
    }

    let feeder = || {
        Feeder::new(
            settings(&clay),
            DynamoDbFeedStore::new(aws.ddb.clone(), &aws.table),
            SqsIntake {
                client: aws.sqs.clone(),
                queue_url: Some(queue.clone()),
                dead_letter_url: Some(dlq.clone()),
            },
            ClayClient::new(Duration::from_millis(500), Duration::from_secs(1)).expect("client"),
        )
    };
    let feeders = [feeder(), feeder()];
    let dying: Vec<_> = feeders
        .iter()
        .enumerate()
        .map(|(i, f)| Dying {
            inner: f,
            rng: Mutex::new(fastrand::Rng::with_seed(seed ^ (i as u64 + 7))),
            deaths: AtomicUsize::new(0),
        })
        .collect();
    let pollers: Vec<_> = dying
        .iter()
        .map(|d| Poller {
            sqs: &aws.sqs,
            queue_url: &queue,
            queue_arn: &queue_arn,
            handler: d,
            invocation_time: Duration::from_secs(10),
        })
        .collect();

    // Until Clay has heard nothing for longer than a cooldown plus a visibility timeout.
    let start = Instant::now();
    let limit = Duration::from_secs(300);
    let (mut last_hits, mut quiet_since) = (0, Instant::now());
    let settled = loop {
        futures::future::join_all(pollers.iter().map(|p| p.poll_once(Duration::from_secs(1))))
            .await;
        let hits = clay.hits().len();
        if hits != last_hits {
            (last_hits, quiet_since) = (hits, Instant::now());
        } else if quiet_since.elapsed() > Duration::from_secs(8) {
            break true;
        }
        if start.elapsed() > limit {
            break false;
        }
    };
    assert!(settled, "Clay still being called after {limit:?}");
    let took = start.elapsed();

    let on = |url: &str| Aws {
        queue_url: url.to_string(),
        ..aws.clone()
    };
    let keys = |messages: Vec<aws_sdk_sqs::types::Message>| -> Vec<String> {
        messages
            .iter()
            .filter_map(|m| m.body().map(row_key))
            .collect()
    };
    // Held-back records are invisible for up to a cooldown, failed ones for a visibility
    // timeout: receive for longer than both.
    let in_dlq = keys(on(&dlq).drain(usize::MAX, Duration::from_secs(2)).await);
    let waiting = keys(on(&queue).drain(usize::MAX, Duration::from_secs(8)).await);

    let mut accepted: HashMap<String, usize> = HashMap::new();
    let mut per_webhook: HashMap<usize, u64> = HashMap::new();
    for (hook, v) in clay.accepted() {
        *accepted.entry(row_key(&v.to_string())).or_default() += 1;
        *per_webhook.entry(hook).or_default() += 1;
    }
    // A record can be on the queue after Clay took it (its invocation died): it is not waiting.
    let waiting: HashSet<&String> = waiting
        .iter()
        .filter(|k| !accepted.contains_key(*k) && !in_dlq.contains(k))
        .collect();
    let dropped = clay.dropped().len();
    let duplicated: usize = accepted.values().map(|c| c - 1).sum();
    let accounted: HashSet<&String> = accepted
        .keys()
        .chain(in_dlq.iter())
        .chain(waiting.iter().copied())
        .collect();
    let missing = expected.iter().filter(|k| !accounted.contains(k)).count();
    for (hook, n) in &per_webhook {
        assert!(
            *n <= LIMIT,
            "webhook {hook} took {n} rows, over its limit of {LIMIT}"
        );
    }
    for w in &settings(&clay).webhooks {
        let pk = webhook_counter(w);
        let item = aws
            .ddb
            .get_item()
            .table_name(&aws.table)
            .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(pk))
            .consistent_read(true)
            .send()
            .await
            .expect("counter")
            .item
            .unwrap_or_default();
        let count: u64 = item
            .get("count")
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(count <= LIMIT, "counter {count} over the limit {LIMIT}");
    }
    println!(
        "feeder storm: {} POSTs to Clay in {:.1} s; accepted per webhook {per_webhook:?}; {} invocations died; {} rows waiting; {} silently dropped past the limit",
        clay.hits().len(),
        took.as_secs_f64(),
        dying
            .iter()
            .map(|d| d.deaths.load(Ordering::Relaxed))
            .sum::<usize>(),
        waiting.len(),
        dropped,
    );
    Row {
        suite:
            "feeder storm (334 rows, 2 instances, 3 webhooks × 100; 429, 5xx, slow, 422, deaths)"
                .into(),
        sent: expected.len(),
        delivered: accepted.len(),
        duplicated,
        lost: missing + dropped,
        in_dlq: in_dlq.len(),
        waiting: waiting.len(),
    }
}
