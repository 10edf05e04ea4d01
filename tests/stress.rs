//! `make stress`: the spec's promises as figures, bounded in count and time, loopback only.
//!
//! 1. Duplicate storm: 8 ingest processes (the sam-built bootstrap under aws-lambda-rie) against
//!    one moto_server; 1,000 requests of which 30% repeat earlier bodies, fired concurrently.
//! 2. Router faults: 500 leads through SQS (with a DLQ) and the router, against a downstream that
//!    answers 5xx, 429 with Retry-After, hangs past the timeout or drops the connection at
//!    seeded random, redelivering until the queue drains.
//! 3. Feeder storm: rows through the intake queue and two feeder instances into a Clay that
//!    misbehaves and drops rows silently past its limit (`stress_suites/feeder_storm.rs`).
//! 4. Delivery control (`stress_suites/delivery_control.rs`): a destination down longer than the
//!    retry schedule behind its circuit breaker; two routers sharing one rate limit.
//!
//! Ends with one table: sent / delivered / duplicated / lost / in DLQ.

#[path = "stress_suites/delivery_control.rs"]
mod delivery_control;
#[path = "stress_suites/feeder_storm.rs"]
mod feeder_storm;
mod support;

use clayhook::delivery::retry::RetryPolicy;
use clayhook::destinations::slack::Slack;
use clayhook::destinations::webhook::Webhook;
use clayhook::destinations::{Crm, DestinationSettings, HttpDestinations};
use clayhook::envelope::Envelope;
use clayhook::idempotency::sha256_hex;
use clayhook::lead::Lead;
use clayhook::local::poller::Poller;
use clayhook::router::ledger::DynamoDbDeliveryLedger;
use clayhook::router::rules::{default_rules, route};
use clayhook::router::{Router, RouterSettings};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::emulator::{emulate, event_file, function_env, invoke, required_env};
use support::{Aws, moto_url};

const SEED: u64 = 0x00c1_a7b0_0c5e_ed01;

struct Row {
    suite: String,
    sent: usize,
    delivered: usize,
    duplicated: usize,
    lost: usize,
    in_dlq: usize,
    /// Still on the queue, by design (the feeder's webhooks all at their limit).
    waiting: usize,
}

async fn duplicate_storm() -> Row {
    let build = required_env("CLAYHOOK_BUILD_DIR");
    let aws = Aws::fresh().await;
    let env = function_env(
        "IngestFunction",
        &[
            ("IDEMPOTENCY_TABLE", aws.table.clone()),
            ("LEAD_QUEUE_URL", aws.queue_url.clone()),
            ("AWS_ENDPOINT_URL", moto_url().to_string()),
        ],
    );
    let bootstrap = build.join("IngestFunction/bootstrap");
    let processes: Vec<_> = (0..8)
        .map(|i| emulate(&format!("storm-ingest-{i}"), &bootstrap, &env))
        .collect();
    let template = event_file("ingest-static-token.json");

    // 700 unique bodies, then 300 repeats of earlier ones, shuffled.
    let mut rng = fastrand::Rng::with_seed(SEED);
    let mut bodies: Vec<String> = (0..700)
        .map(|i| {
            format!(
                r#"{{"email":"lead{i}@storm.invalid","icp_score":"{}","row_id":"r{i}"}}"#,
                rng.u32(0..100)
            )
        })
        .collect();
    let unique: HashSet<String> = bodies.iter().map(|b| sha256_hex(b.as_bytes())).collect();
    for _ in 0..300 {
        let b = bodies[rng.usize(0..700)].clone();
        bodies.push(b);
    }
    rng.shuffle(&mut bodies);

    // One request at a time per process (the emulator runs one invocation at a time).
    let slots: Vec<_> = processes
        .iter()
        .map(|_| Arc::new(tokio::sync::Semaphore::new(1)))
        .collect();
    let statuses = futures::future::join_all(bodies.iter().enumerate().map(|(n, body)| {
        let mut event = template.clone();
        event["body"] = Value::String(body.clone());
        let (slots, processes) = (&slots, &processes);
        async move {
            let mut seen = Vec::new();
            let mut attempt = 0;
            loop {
                let p = (n + attempt) % processes.len();
                let _permit = slots[p].acquire().await.unwrap();
                let answer = invoke(&processes[p], &event).await;
                drop(_permit);
                let status = answer["statusCode"].as_u64().unwrap_or(0);
                seen.push(status);
                // Clay retries a 409 (and a 503) later; so do we.
                if status != 409 && status != 503 || attempt > 20 {
                    return seen;
                }
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }))
    .await;
    let finals: Vec<u64> = statuses.iter().map(|s| *s.last().unwrap()).collect();
    let accepted = finals.iter().filter(|s| **s == 202).count();
    let duplicates = finals.iter().filter(|s| **s == 200).count();
    assert_eq!(
        accepted + duplicates,
        1000,
        "every request ends 202 or 200: {finals:?}"
    );

    let messages = aws.drain(unique.len(), Duration::from_secs(10)).await;
    let mut ids: HashMap<String, usize> = HashMap::new();
    for m in &messages {
        let env = Envelope::parse(m.body().unwrap()).unwrap();
        *ids.entry(env.id).or_default() += 1;
    }
    let duplicated: usize = ids.values().map(|c| c - 1).sum();
    let queued: HashSet<String> = ids.keys().cloned().collect();
    let lost = unique.difference(&queued).count();
    assert_eq!(accepted, unique.len(), "one 202 per unique body");
    Row {
        suite: "ingest duplicate storm (8 processes, 1,000 requests, 30% repeats)".into(),
        sent: unique.len(),
        delivered: queued.intersection(&unique).count(),
        duplicated,
        lost,
        in_dlq: 0,
        waiting: 0,
    }
}

async fn queue_with_dlq(aws: &Aws, max_receive_count: u32) -> (String, String, String) {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let dlq = aws
        .sqs
        .create_queue()
        .queue_name(support::unique("stress-dlq"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let arn = |url: String| async move {
        aws.sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(A::QueueArn)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap()[&A::QueueArn]
            .clone()
    };
    let dlq_arn = arn(dlq.clone()).await;
    let redrive = serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count.to_string()});
    let queue = aws
        .sqs
        .create_queue()
        .queue_name(support::unique("stress-leads"))
        .attributes(A::VisibilityTimeout, "4")
        .attributes(A::RedrivePolicy, redrive.to_string())
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let queue_arn = arn(queue.clone()).await;
    (queue, queue_arn, dlq)
}

async fn router_faults() -> Row {
    let aws = Aws::fresh().await;
    let (queue, queue_arn, dlq) = queue_with_dlq(&aws, 5).await;
    // An invocation fits whole requests (0.8 s) and their retries before the 2 s kept for the
    // bookkeeping: 6 s, inside the queue's visibility timeout.
    aws.sqs
        .set_queue_attributes()
        .queue_url(&queue)
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            "8",
        )
        .send()
        .await
        .unwrap();
    let chaos = support::chaos::start(SEED, 55, Duration::from_secs(3)).await;
    let url = |p: &str| format!("{}/{p}", chaos.url);
    let destinations = DestinationSettings {
        crm: Some(Crm::Webhook(Webhook::new(url("crm"), None))),
        outreach: Some(Webhook::new(url("outreach"), None)),
        nurture: Some(Webhook::new(url("nurture"), None)),
        slack: Some(Slack::new(url("slack"))),
        zapier: Some(Webhook::new(url("zapier"), None)),
        warehouse: None,
    };
    let router = Router {
        settings: RouterSettings {
            rules: default_rules(),
            concurrency: 10,
            retry: RetryPolicy {
                max_attempts: 3,
                base: Duration::from_millis(50),
                cap: Duration::from_millis(500),
                safety_margin: Duration::from_millis(200),
            },
            request_timeout: Duration::from_millis(800),
            delivery_ttl_seconds: 3600,
            max_receive_count: None,
            schedule: Default::default(),
            control: Default::default(),
            archive_days: 0,
        },
        ledger: DynamoDbDeliveryLedger::new(aws.dynamodb.clone(), &aws.table),
        destinations: HttpDestinations::new(destinations, Duration::from_millis(500)).unwrap(),
        redelivery: clayhook::queue::NoRedelivery,
        control: clayhook::delivery::control::NoControl,
    };

    // 500 leads with seeded scores; what each must reach.
    let mut rng = fastrand::Rng::with_seed(SEED ^ 1);
    let mut expected: HashMap<String, Vec<String>> = HashMap::new();
    let rules = default_rules();
    for chunk in (0..500).collect::<Vec<_>>().chunks(10) {
        let mut batch = aws.sqs.send_message_batch().queue_url(&queue);
        for i in chunk {
            let body = format!(
                r#"{{"email":"p{i}@chaos.invalid","first_name":"P{i}","icp_score":{}}}"#,
                rng.u32(0..100)
            );
            let (lead, _) = Lead::parse(body.as_bytes()).unwrap();
            let id = sha256_hex(format!("lead-{i}").as_bytes());
            let env = Envelope::new(id.clone(), std::time::SystemTime::now(), None, lead);
            // The warehouse is not configured here: the router skips it by design.
            let dests: Vec<_> = route(&rules, &env.lead, None)
                .into_iter()
                .filter(|d| d.as_str() != "warehouse")
                .collect();
            let short = id[..12].to_string();
            expected.insert(
                id.clone(),
                dests
                    .iter()
                    .map(|d| match d.as_str() {
                        "slack" => format!("{short}:slack"),
                        other => format!("{id}:{other}"),
                    })
                    .collect(),
            );
            batch = batch.entries(
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(env.to_json())
                    .build()
                    .unwrap(),
            );
        }
        batch.send().await.unwrap();
    }

    // Pollers, as the event source mapping: until the queue is empty or the time is up.
    let poller = Poller {
        sqs: &aws.sqs,
        queue_url: &queue,
        queue_arn: &queue_arn,
        handler: &router,
        invocation_time: Duration::from_secs(6),
    };
    let start = Instant::now();
    let limit = Duration::from_secs(420);
    let drained = async {
        let mut idle_rounds = 0;
        while start.elapsed() < limit {
            let got =
                futures::future::join_all((0..4).map(|_| poller.poll_once(Duration::from_secs(1))))
                    .await;
            let total: usize = got.into_iter().map(|r| r.unwrap_or(0)).sum();
            if total == 0 {
                let attrs = aws
                    .sqs
                    .get_queue_attributes()
                    .queue_url(&queue)
                    .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
                    .send()
                    .await
                    .unwrap()
                    .attributes
                    .unwrap_or_default();
                let n = |k: aws_sdk_sqs::types::QueueAttributeName| {
                    attrs
                        .get(&k)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                use aws_sdk_sqs::types::QueueAttributeName as A;
                if n(A::ApproximateNumberOfMessages) + n(A::ApproximateNumberOfMessagesNotVisible)
                    == 0
                {
                    idle_rounds += 1;
                    if idle_rounds >= 2 {
                        return true;
                    }
                }
            } else {
                idle_rounds = 0;
            }
        }
        false
    }
    .await;
    assert!(drained, "the queue did not drain within {limit:?}");

    let dlq_ids: HashSet<String> = {
        let probe = Aws {
            queue_url: dlq.clone(),
            ..aws.clone()
        };
        probe
            .drain(0, Duration::from_secs(1))
            .await
            .iter()
            .filter_map(|m| Envelope::parse(m.body()?).ok().map(|e| e.id))
            .collect()
    };
    let tally = chaos.tally.lock().unwrap();
    let mut delivered = 0;
    let mut lost = 0;
    let mut deliveries = 0;
    for (id, keys) in &expected {
        deliveries += keys.len();
        let all = keys
            .iter()
            .all(|k| tally.accepted.get(k).copied().unwrap_or(0) >= 1);
        if all {
            delivered += 1;
        } else if !dlq_ids.contains(id) {
            lost += 1;
        }
    }
    let duplicated: usize = tally
        .accepted
        .values()
        .map(|c| (*c as usize).saturating_sub(1))
        .sum();
    println!(
        "router faults: {deliveries} deliveries owed; downstream answers {:?}; drained in {:.1} s",
        tally.answers,
        start.elapsed().as_secs_f64()
    );
    // The DLQ is for leads the faults kept from their destinations through every receive, not
    // a place every lead may end: most get through (all 500 in every run so far).
    assert!(
        delivered * 10 >= expected.len() * 9,
        "router faults: only {delivered} of {} leads delivered ({} in the DLQ)",
        expected.len(),
        dlq_ids.len()
    );
    Row {
        suite: "router faults (500 leads; 5xx, 429, hangs, resets; SQS redelivery)".into(),
        sent: expected.len(),
        delivered,
        duplicated,
        lost,
        in_dlq: dlq_ids.len(),
        waiting: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long; run with `make stress`"]
async fn nothing_lost_nothing_sent_twice() {
    let rows = vec![
        duplicate_storm().await,
        router_faults().await,
        feeder_storm::feeder_storm(SEED).await,
        delivery_control::breaker_outage().await,
        delivery_control::shared_rate_limit().await,
        delivery_control::replay_to_new_destination().await,
    ];
    print_and_check(&rows);
}

/// The delivery-control suites alone: `cargo test --test stress -- --ignored delivery_control`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long; run with `make stress`"]
async fn delivery_control_only() {
    let rows = vec![
        delivery_control::breaker_outage().await,
        delivery_control::shared_rate_limit().await,
        delivery_control::replay_to_new_destination().await,
    ];
    print_and_check(&rows);
}

fn print_and_check(rows: &[Row]) {
    println!();
    println!("| suite | sent | delivered | duplicated | lost | in DLQ | waiting |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.suite, r.sent, r.delivered, r.duplicated, r.lost, r.in_dlq, r.waiting
        );
    }
    for r in rows {
        assert_eq!(r.lost, 0, "{}: lost", r.suite);
        assert_eq!(r.duplicated, 0, "{}: duplicated", r.suite);
        assert!(
            r.delivered + r.in_dlq + r.waiting >= r.sent,
            "{}: unaccounted leads",
            r.suite
        );
    }
}
