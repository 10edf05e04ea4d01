//! The feeder use case against moto_server (counters, breaker, intake queue, DLQ) and a local
//! server playing Clay's webhook sources.

use crate::support::Aws;
use crate::support::clay::{FakeClay, Script};
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use clayhook::delivery::retry::RetryPolicy;
use clayhook::feed::clay::ClayClient;
use clayhook::feed::dynamodb::DynamoDbFeedStore;
use clayhook::feed::feeder::{Feeder, FeederSettings, webhook_counter};
use clayhook::feed::sqs::{REASON_ATTRIBUTE, SqsIntake};
use clayhook::feed::{BreakerPolicy, webhooks};
use serde_json::{Value, json};
use std::time::{Duration, Instant, SystemTime};

const TOKEN: &str = "clay-feeder-token-91c";

type F = Feeder<DynamoDbFeedStore, SqsIntake>;

struct Rig {
    aws: Aws,
    dlq_url: String,
    clay: FakeClay,
}

async fn rig(token: Option<&str>) -> Rig {
    let aws = Aws::fresh().await;
    let dlq_url = aws
        .sqs
        .create_queue()
        .queue_name(crate::support::unique("intake-dlq"))
        .send()
        .await
        .expect("dlq")
        .queue_url
        .expect("dlq url");
    Rig {
        aws,
        dlq_url,
        clay: FakeClay::start(token).await,
    }
}

fn settings(rig: &Rig, hooks: usize, token: &str) -> FeederSettings {
    let urls: Vec<String> = (1..=hooks).map(|i| rig.clay.webhook(i)).collect();
    FeederSettings {
        webhooks: webhooks(&urls, &[token.to_string()]).expect("webhooks"),
        limit: 50_000,
        rate_per_instance: 10.0,
        daily_budget: None,
        breaker: BreakerPolicy {
            threshold: 5,
            cooldown: Duration::from_secs(300),
        },
        retry: RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(5),
            cap: Duration::from_millis(50),
            safety_margin: Duration::from_millis(200),
        },
        sent_ttl_seconds: 3600,
    }
}

fn feeder(rig: &Rig, settings: FeederSettings) -> F {
    Feeder::new(
        settings,
        DynamoDbFeedStore::new(rig.aws.ddb.clone(), &rig.aws.table),
        SqsIntake {
            client: rig.aws.sqs.clone(),
            queue_url: Some(rig.aws.queue_url.clone()),
            dead_letter_url: Some(rig.dlq_url.clone()),
        },
        ClayClient::new(Duration::from_millis(500), Duration::from_millis(400)).expect("client"),
    )
}

/// Puts `bodies` on the intake queue and receives them back as a Lambda event (real message
/// ids and receipt handles, visible again after `visibility` seconds).
async fn batch(rig: &Rig, bodies: &[String], visibility: i32) -> SqsEvent {
    for b in bodies {
        rig.aws
            .sqs
            .send_message()
            .queue_url(&rig.aws.queue_url)
            .message_body(b)
            .send()
            .await
            .expect("send");
    }
    let mut records = Vec::new();
    while records.len() < bodies.len() {
        let out = rig
            .aws
            .sqs
            .receive_message()
            .queue_url(&rig.aws.queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(visibility)
            .send()
            .await
            .expect("receive");
        for m in out.messages.unwrap_or_default() {
            let mut r = SqsMessage::default();
            r.message_id = m.message_id;
            r.receipt_handle = m.receipt_handle;
            r.body = m.body;
            records.push(r);
        }
    }
    // Keep the order the bodies were sent in (moto returns them so; make sure).
    records.sort_by_key(|r| bodies.iter().position(|b| Some(b) == r.body.as_ref()));
    let mut event = SqsEvent::default();
    event.records = records;
    event
}

fn rows(n: usize) -> Vec<String> {
    (1..=n)
        .map(|i| json!({"n": i, "email": format!("lead{i}@example.com")}).to_string())
        .collect()
}

fn deadline() -> SystemTime {
    SystemTime::now() + Duration::from_secs(60)
}

fn failed_ids(r: &SqsBatchResponse) -> Vec<String> {
    r.batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}

fn ids(event: &SqsEvent, which: std::ops::Range<usize>) -> Vec<String> {
    event.records[which]
        .iter()
        .map(|r| r.message_id.clone().unwrap_or_default())
        .collect()
}

async fn count(rig: &Rig, pk: &str) -> i64 {
    rig.aws
        .ddb
        .get_item()
        .table_name(&rig.aws.table)
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(pk.into()))
        .consistent_read(true)
        .send()
        .await
        .expect("get")
        .item
        .and_then(|i| {
            i.get("count")
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

async fn receive_now(rig: &Rig, url: &str) -> Vec<aws_sdk_sqs::types::Message> {
    rig.aws
        .sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .message_attribute_names("All")
        .send()
        .await
        .expect("receive")
        .messages
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_reaches_clay_once_with_the_token_even_when_redelivered() {
    let rig = rig(Some(TOKEN)).await;
    let s = settings(&rig, 1, TOKEN);
    let key = webhook_counter(&s.webhooks[0]);
    let f = feeder(&rig, s);
    let event = batch(&rig, &rows(3), 30).await;
    let r = f.handle(event.clone(), deadline()).await.expect("handle");
    assert!(r.batch_item_failures.is_empty(), "{r:?}");
    let got: Vec<Value> = rig.clay.accepted().into_iter().map(|(_, v)| v).collect();
    assert_eq!(
        got,
        rows(3)
            .iter()
            .map(|r| serde_json::from_str::<Value>(r).unwrap())
            .collect::<Vec<_>>()
    );
    assert_eq!(count(&rig, &key).await, 3);
    // The same messages again (a Lambda that died before SQS deleted them): nothing re-sent.
    let r = f.handle(event, deadline()).await.expect("handle");
    assert!(r.batch_item_failures.is_empty());
    assert_eq!(rig.clay.hits().len(), 3);
    assert_eq!(count(&rig, &key).await, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_429_and_5xx_are_retried_within_the_invocation() {
    let rig = rig(Some(TOKEN)).await;
    rig.clay
        .script([Script::Status(429, None), Script::Status(503, None)]);
    let s = settings(&rig, 1, TOKEN);
    let key = webhook_counter(&s.webhooks[0]);
    let f = feeder(&rig, s);
    let metrics = clayhook::metrics::Metrics::new("test", "feeder");
    let r = f
        .handle_with(batch(&rig, &rows(2), 30).await, deadline(), &metrics)
        .await
        .unwrap();
    assert!(r.batch_item_failures.is_empty(), "{r:?}");
    assert_eq!(rig.clay.accepted().len(), 2);
    assert_eq!(rig.clay.hits().len(), 4);
    assert_eq!(metrics.total("SentToClay", &[]), 2.0);
    assert_eq!(metrics.total("Retries", &[]), 2.0);
    // The 429 created nothing; the 503 might have: 2 rows + 1 uncertain.
    assert_eq!(count(&rig, &key).await, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_answers_time_out_and_the_record_is_retried_later() {
    let rig = rig(None).await;
    rig.clay.script([
        Script::Slow(Duration::from_secs(2)),
        Script::Slow(Duration::from_secs(2)),
        Script::Slow(Duration::from_secs(2)),
    ]);
    let f = feeder(&rig, settings(&rig, 1, ""));
    let event = batch(&rig, &rows(2), 30).await;
    let r = f.handle(event.clone(), deadline()).await.unwrap();
    assert_eq!(failed_ids(&r), ids(&event, 0..1));
    assert_eq!(rig.clay.accepted().len(), 1, "the second row went through");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_token_opens_the_breaker_and_records_wait_on_the_queue() {
    let rig = rig(Some(TOKEN)).await;
    let mut s = settings(&rig, 1, "wrong-token");
    s.breaker = BreakerPolicy {
        threshold: 2,
        cooldown: Duration::from_secs(3),
    };
    let f = feeder(&rig, s.clone());
    let event = batch(&rig, &rows(4), 1).await;
    let r = f.handle(event.clone(), deadline()).await.unwrap();
    assert_eq!(failed_ids(&r), ids(&event, 0..4), "nothing is dropped");
    assert_eq!(
        rig.clay.hits().len(),
        2,
        "two refusals open the breaker; the rest are not tried"
    );
    // Waiting records were pushed back to the reopening time, past their 1 s visibility.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(
        receive_now(&rig, &rig.aws.queue_url).await.is_empty(),
        "records were not held back"
    );
    // A second invocation (another container) sees the open breaker and sends nothing.
    let other = feeder(&rig, s.clone());
    let r = other.handle(event.clone(), deadline()).await.unwrap();
    assert_eq!(r.batch_item_failures.len(), 4);
    assert_eq!(rig.clay.hits().len(), 2);
    // The token fixed, after the cooldown one probe closes the breaker and all four go.
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.webhooks = webhooks(&[rig.clay.webhook(1)], &[TOKEN.into()]).unwrap();
    let fixed = feeder(&rig, s);
    let r = fixed.handle(event, deadline()).await.unwrap();
    assert!(r.batch_item_failures.is_empty(), "{r:?}");
    assert_eq!(rig.clay.accepted().len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spent_daily_budget_holds_the_rest_of_the_batch_back() {
    let rig = rig(None).await;
    let mut s = settings(&rig, 1, "");
    s.daily_budget = Some(2);
    let f = feeder(&rig, s);
    let event = batch(&rig, &rows(4), 30).await;
    let r = f.handle(event.clone(), deadline()).await.unwrap();
    assert_eq!(failed_ids(&r), ids(&event, 2..4));
    assert_eq!(rig.clay.accepted().len(), 2);
    let (day, _) = clayhook::feed::budget_day(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    );
    assert_eq!(count(&rig, &format!("feed#budget#{day}")).await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_limit_reached_mid_batch_rotates_webhooks_then_holds_records_back() {
    let rig = rig(None).await;
    let mut s = settings(&rig, 2, "");
    s.limit = 2;
    let keys: Vec<String> = s.webhooks.iter().map(webhook_counter).collect();
    let f = feeder(&rig, s);
    let event = batch(&rig, &rows(5), 30).await;
    let r = f.handle(event.clone(), deadline()).await.unwrap();
    assert_eq!(failed_ids(&r), ids(&event, 4..5));
    let by_hook: Vec<usize> = rig.clay.accepted().iter().map(|(h, _)| *h).collect();
    assert_eq!(by_hook, vec![1, 1, 2, 2]);
    assert_eq!(
        (count(&rig, &keys[0]).await, count(&rig, &keys[1]).await),
        (2, 2)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_5xx_on_a_webhooks_last_submission_is_not_retried_past_the_limit() {
    // Past the limit Clay answers 200 and creates nothing. Row 2's 503 may have used
    // webhook #1's last submission: its retry waits for the next receive and goes to #2.
    let rig = rig(None).await;
    rig.clay.silent_limit(2);
    rig.clay.script([Script::Take, Script::Status(503, None)]);
    let mut s = settings(&rig, 2, "");
    s.limit = 2;
    let keys: Vec<String> = s.webhooks.iter().map(webhook_counter).collect();
    let f = feeder(&rig, s);
    let event = batch(&rig, &rows(3), 30).await;
    let r = f.handle(event.clone(), deadline()).await.unwrap();
    assert_eq!(failed_ids(&r), ids(&event, 1..2));
    assert_eq!(rig.clay.dropped(), vec![], "rows Clay would have dropped");
    let mut retry = SqsEvent::default();
    retry.records = event.records[1..2].to_vec();
    let r = f.handle(retry, deadline()).await.unwrap();
    assert!(r.batch_item_failures.is_empty(), "{r:?}");
    assert_eq!(rig.clay.dropped(), vec![], "rows Clay would have dropped");
    let mut got: Vec<(usize, i64)> = rig
        .clay
        .accepted()
        .iter()
        .map(|(h, v)| (*h, v["n"].as_i64().unwrap_or(0)))
        .collect();
    got.sort();
    assert_eq!(got, vec![(1, 1), (2, 2), (2, 3)]);
    assert_eq!(
        (count(&rig, &keys[0]).await, count(&rig, &keys[1]).await),
        (2, 2)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_no_retry_can_help_go_straight_to_the_dlq_with_the_reason() {
    let rig = rig(None).await;
    rig.clay.script([Script::Status(400, None)]);
    let f = feeder(&rig, settings(&rig, 1, ""));
    let big = json!({"notes": "x".repeat(150_000)}).to_string();
    let bodies = vec![
        json!({"n": 1}).to_string(),
        "not json".into(),
        "[1,2]".into(),
        big,
    ];
    let r = f
        .handle(batch(&rig, &bodies, 30).await, deadline())
        .await
        .unwrap();
    assert!(
        r.batch_item_failures.is_empty(),
        "dead-lettered, not failed: {r:?}"
    );
    assert!(rig.clay.accepted().is_empty());
    let mut reasons: Vec<String> = Vec::new();
    for _ in 0..5 {
        for m in receive_now(&rig, &rig.dlq_url).await {
            let reason = m
                .message_attributes
                .as_ref()
                .and_then(|a| a.get(REASON_ATTRIBUTE))
                .and_then(|v| v.string_value.clone())
                .unwrap_or_default();
            reasons.push(reason);
        }
        if reasons.len() >= 4 {
            break;
        }
    }
    reasons.sort();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(
        reasons[0].starts_with("150012 bytes, over Clay's 100 KB"),
        "{reasons:?}"
    );
    assert!(reasons[1].starts_with("400: "), "{reasons:?}");
    assert!(
        reasons[2].starts_with("an array, not a JSON object"),
        "{reasons:?}"
    );
    assert!(reasons[3].starts_with("not JSON"), "{reasons:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dynamodb_down_fails_the_batch_without_sending() {
    let rig = rig(None).await;
    let sdk = crate::support::sdk_config(&crate::support::dead_endpoint()).await;
    let f = Feeder::new(
        settings(&rig, 1, ""),
        DynamoDbFeedStore::new(aws_sdk_dynamodb::Client::new(&sdk), "t"),
        SqsIntake {
            client: rig.aws.sqs.clone(),
            queue_url: None,
            dead_letter_url: None,
        },
        ClayClient::new(Duration::from_millis(500), Duration::from_millis(400)).unwrap(),
    );
    let event = batch(&rig, &rows(2), 30).await;
    let r = f.handle(event.clone(), deadline()).await.unwrap();
    assert_eq!(failed_ids(&r), ids(&event, 0..2));
    assert!(rig.clay.hits().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn back_to_back_batches_on_one_instance_keep_the_rate() {
    let rig = rig(Some(TOKEN)).await;
    let mut s = settings(&rig, 1, TOKEN);
    s.rate_per_instance = 5.0;
    let f = feeder(&rig, s);
    let all = rows(6);
    let first = batch(&rig, &all[..3], 30).await;
    let second = batch(&rig, &all[3..], 30).await;
    for event in [first, second] {
        let r = f.handle(event, deadline()).await.expect("handle");
        assert!(r.batch_item_failures.is_empty(), "{r:?}");
    }
    let hits: Vec<Instant> = rig.clay.hits().into_iter().map(|(at, _)| at).collect();
    assert_eq!(hits.len(), 6);
    // 200 ms apart at 5/s, the gap between the batches included (a little slack for timers).
    for pair in hits.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= Duration::from_millis(190), "{gap:?} between rows");
    }
}

/// Two feeder instances on one breaker item: each transition is atomic, so concurrent failures
/// open it once, a success from before never closes what the other opened, and only a probe
/// after the cooldown closes it.
#[tokio::test(flavor = "multi_thread")]
async fn instances_share_one_breaker_and_never_undo_each_others_transitions() {
    use clayhook::feed::feeder::FeedStore;
    let aws = Aws::fresh().await;
    let a = DynamoDbFeedStore::new(aws.ddb.clone(), aws.table.clone());
    let b = DynamoDbFeedStore::new(aws.ddb.clone(), aws.table.clone());
    let policy = BreakerPolicy {
        threshold: 5,
        cooldown: Duration::from_secs(300),
    };
    let now = 1_000_000;
    // Ten failures at once from two instances: the breaker opens, for one cooldown.
    let failures = (0..10).map(|i| {
        let store = if i % 2 == 0 { &a } else { &b };
        store.breaker_failed(&policy, now)
    });
    let states = futures::future::join_all(failures).await;
    assert!(states.iter().all(|s| s.is_ok()), "{states:?}");
    let shared = a.breaker().await.unwrap();
    assert!(shared.is_open(now), "{shared:?}");
    assert_eq!(shared.open_until_ms, now + 300_000);
    // B's row sent before A opened it comes back accepted: the breaker stays open.
    let after = b.breaker_succeeded(now + 1).await.unwrap();
    assert!(after.is_open(now + 1), "{after:?}");
    assert_eq!(a.breaker().await.unwrap(), after);
    // A hold is only ever extended (a spent budget until midnight), never shortened.
    let held = b.breaker_open_until(now + 900_000).await.unwrap();
    assert_eq!(held.open_until_ms, now + 900_000);
    let kept = a.breaker_open_until(now + 10).await.unwrap();
    assert_eq!(kept.open_until_ms, now + 900_000);
    // After the hold, one probe decides: a success closes it for everyone.
    let closed = a.breaker_succeeded(now + 900_000).await.unwrap();
    assert_eq!(closed, clayhook::feed::BreakerState::default());
    assert_eq!(b.breaker().await.unwrap(), closed);
}

/// A 13 h cooldown (a budget spent before noon waits longer still) postpones the records to
/// what SQS still allows since their receive: moto refuses the 12 h the feeder used to ask for
/// once any time has passed, and the records would come back at their 1 s visibility.
#[tokio::test(flavor = "multi_thread")]
async fn a_postponement_longer_than_sqs_allows_still_holds_the_records() {
    let rig = rig(Some(TOKEN)).await;
    let mut s = settings(&rig, 1, "wrong-token");
    s.breaker = BreakerPolicy {
        threshold: 1,
        cooldown: Duration::from_secs(13 * 3600),
    };
    let f = feeder(&rig, s);
    let event = batch(&rig, &rows(2), 1).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let r = f.handle(event.clone(), deadline()).await.unwrap();
    assert_eq!(failed_ids(&r), ids(&event, 0..2), "nothing is dropped");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(
        receive_now(&rig, &rig.aws.queue_url).await.is_empty(),
        "the postponement was refused: the records came back"
    );
}

/// Two receives of the same intake messages at once (SQS is at-least-once; two instances)
/// post each row to Clay once: the row is claimed before it is sent, not checked and then sent.
/// Clay answers slowly, so both receives are in flight together.
#[tokio::test(flavor = "multi_thread")]
async fn two_receives_of_one_row_at_once_post_it_once() {
    let rig = rig(None).await;
    let s = settings(&rig, 1, "");
    let a = feeder(&rig, s.clone());
    let b = feeder(&rig, s);
    rig.clay.script(std::iter::repeat_n(
        Script::Slow(Duration::from_millis(300)),
        8,
    ));
    let event = batch(&rig, &rows(3), 30).await;
    let (ra, rb) = tokio::join!(
        a.handle(event.clone(), deadline()),
        b.handle(event.clone(), deadline())
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(
        rig.clay.hits().len(),
        3,
        "each row posted once: {ra:?} {rb:?}"
    );
    // A row the other receive was sending is left for later (or found handled); a later
    // receive finds every row handled.
    assert!(ra.batch_item_failures.len() + rb.batch_item_failures.len() <= 3);
    let again = feeder(&rig, settings(&rig, 1, ""));
    let r = again.handle(event, deadline()).await.unwrap();
    assert!(r.batch_item_failures.is_empty(), "{r:?}");
    assert_eq!(rig.clay.hits().len(), 3);
}
