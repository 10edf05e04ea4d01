//! Every held record has an end, against moto's SQS, which refuses a visibility that would end
//! more than 12 h after the message (as SQS does after the receive): a wait longer than SQS
//! allows is cut to what it still takes, for the router and the feeder, so the record stays
//! held instead of coming back at the queue's short visibility timeout.

use crate::support::{Aws, lead_id};
use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use clayhook::delivery::control::config::ControlSettings;
use clayhook::delivery::control::dynamodb::DynamoDbDeliveryControl;
use clayhook::delivery::control::{BreakerPolicy, DeliveryControl};
use clayhook::delivery::retry::RetryPolicy;
use clayhook::destinations::webhook::Webhook;
use clayhook::destinations::{DestinationSettings, HttpDestinations};
use clayhook::envelope::Envelope;
use clayhook::lead::Lead;
use clayhook::queue::sqs::SqsRedelivery;
use clayhook::router::ledger::DynamoDbDeliveryLedger;
use clayhook::router::rules::{DestinationName, default_rules};
use clayhook::router::{Router, RouterSettings};
use std::time::{Duration, SystemTime};

/// Sends `body` and receives it back as a Lambda record with a real receipt handle, visible
/// again after 1 s unless the handler holds it longer.
async fn received(aws: &Aws, body: &str) -> SqsMessage {
    aws.sqs
        .send_message()
        .queue_url(&aws.queue_url)
        .message_body(body)
        .send()
        .await
        .unwrap();
    loop {
        let out = aws
            .sqs
            .receive_message()
            .queue_url(&aws.queue_url)
            .visibility_timeout(1)
            .send()
            .await
            .unwrap();
        if let Some(m) = out.messages.unwrap_or_default().into_iter().next() {
            let mut r = SqsMessage::default();
            r.message_id = m.message_id;
            r.receipt_handle = m.receipt_handle;
            r.body = m.body;
            r.attributes
                .insert("ApproximateReceiveCount".into(), "1".into());
            return r;
        }
    }
}

async fn visible_now(aws: &Aws) -> usize {
    aws.sqs
        .receive_message()
        .queue_url(&aws.queue_url)
        .visibility_timeout(1)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default()
        .len()
}

/// A breaker open for 20 h (`BREAKER_MAX_COOLDOWN` allows it) holds the record on the queue: the
/// router asks SQS for what it still allows, not for the 20 h (or exactly 12 h, which SQS refuses
/// once any time has passed), so the record does not come back a second later.
#[tokio::test(flavor = "multi_thread")]
async fn a_hold_longer_than_sqs_allows_is_held_as_long_as_sqs_allows() {
    let aws = Aws::fresh().await;
    let dlq = aws
        .sqs
        .create_queue()
        .queue_name(crate::support::unique("held-dlq"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let long = BreakerPolicy {
        threshold: 1,
        cooldown: Duration::from_secs(20 * 3600),
        max_cooldown: Duration::from_secs(20 * 3600),
    };
    let control = DynamoDbDeliveryControl::new(aws.dynamodb.clone(), &aws.table);
    let now = clayhook::clock::epoch_ms(SystemTime::now());
    assert!(
        control
            .failed(DestinationName::Nurture, &long, now)
            .await
            .unwrap()
            .1,
        "the breaker opened"
    );
    let router = Router {
        settings: RouterSettings {
            rules: default_rules(),
            concurrency: 2,
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(2),
            delivery_ttl_seconds: 3600,
            max_receive_count: None,
            schedule: Default::default(),
            control: ControlSettings {
                breaker: Some(long),
                ..ControlSettings::default()
            },
            archive_days: 0,
        },
        ledger: DynamoDbDeliveryLedger::new(aws.dynamodb.clone(), &aws.table),
        destinations: HttpDestinations::new(
            DestinationSettings {
                nurture: Some(Webhook::new("http://127.0.0.1:9/nurture", None)),
                ..DestinationSettings::default()
            },
            Duration::from_millis(500),
        )
        .unwrap(),
        redelivery: SqsRedelivery::new(aws.sqs.clone(), aws.queue_url.clone(), dlq),
        control,
    };
    let lead = Lead::parse(br#"{"icp_score":60}"#).unwrap().0;
    let env = Envelope::new(lead_id("held-20h"), SystemTime::now(), None, lead);
    let record = received(&aws, &env.to_json()).await;
    // Time passes after the receive, as it does in any invocation.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let mut event = SqsEvent::default();
    event.records = vec![record];
    let r = router
        .handle(event, SystemTime::now() + Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(r.batch_item_failures.len(), 1, "held, still owed");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        visible_now(&aws).await,
        0,
        "the record came back at the queue's 1 s: its wait was refused"
    );
}

/// The work after the last send has a budget: with the table taking 5 s to record a delivery
/// (the SDK's own bounds are 3 s an attempt, 8 s an operation), the router still answers
/// before its deadline, and the lead it delivered is not reported failed (which would send it
/// again on the next receive).
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_table_after_the_send_never_costs_the_batchs_answer() {
    use crate::support::standin::AwsStandin;
    use crate::support::{lean_clients, sdk_config};
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let standin = AwsStandin::start().await;
    let config = sdk_config(&standin.url).await;
    let (dynamodb, _) = lean_clients(&config);
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let router = Router {
        settings: RouterSettings {
            rules: default_rules(),
            concurrency: 2,
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(1),
            delivery_ttl_seconds: 3600,
            max_receive_count: None,
            schedule: Default::default(),
            control: ControlSettings::default(),
            archive_days: 0,
        },
        ledger: DynamoDbDeliveryLedger::new(dynamodb, "t"),
        destinations: HttpDestinations::new(
            DestinationSettings {
                nurture: Some(Webhook::new(format!("{}/nurture", server.uri()), None)),
                ..DestinationSettings::default()
            },
            Duration::from_millis(500),
        )
        .unwrap(),
        redelivery: clayhook::queue::NoRedelivery,
        control: clayhook::delivery::control::NoControl,
    };
    // Recording a delivery (`SET #status = :delivered ...`) takes 5 s.
    standin.slow_updates(":delivered", Duration::from_secs(5));
    let lead = Lead::parse(br#"{"icp_score":60}"#).unwrap().0;
    let env = Envelope::new(lead_id("slow-table"), SystemTime::now(), None, lead);
    let mut record = SqsMessage::default();
    record.message_id = Some("m1".into());
    record.body = Some(env.to_json());
    let mut event = SqsEvent::default();
    event.records = vec![record];
    let started = std::time::Instant::now();
    let deadline = SystemTime::now() + Duration::from_secs(4);
    let r = router.handle(event, deadline).await.unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "answered after the deadline ({took:?}): the Lambda would have been killed"
    );
    assert!(
        r.batch_item_failures.is_empty(),
        "delivered, so not sent again: {r:?}"
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

/// A conditional write retried after its first attempt was applied (the answer lost to a
/// timeout or a 500) finds its own claim: the token that comes back in the old item makes it
/// ours, for ingest's idempotency record and the router's delivery ledger, while another
/// invocation's claim still reads as held.
#[tokio::test(flavor = "multi_thread")]
async fn a_retried_claim_that_finds_its_own_write_is_ours() {
    use clayhook::idempotency::dynamodb::DynamoDbIdempotencyStore;
    use clayhook::idempotency::{Begin, Claim, IdempotencyStore};
    use clayhook::router::ledger::{ClaimOutcome, DeliveryClaim, DeliveryLedger};
    let aws = Aws::fresh().await;
    let now_ms = clayhook::clock::epoch_ms(SystemTime::now());

    let store = DynamoDbIdempotencyStore::new(aws.ddb.clone(), &aws.table);
    let claim = Claim {
        id: lead_id("retried-put"),
        body_hash: None,
        expires_at: now_ms / 1000 + 3600,
        in_progress_expires_at: now_ms + 30_000,
        now_ms,
        token: "first-invocation".into(),
    };
    assert!(matches!(store.begin(&claim).await, Ok(Begin::Claimed)));
    // The same put again (the SDK's retry of an applied attempt): ours, not a 409.
    assert!(matches!(store.begin(&claim).await, Ok(Begin::Claimed)));
    let other = Claim {
        token: "second-invocation".into(),
        ..claim.clone()
    };
    assert!(matches!(store.begin(&other).await, Ok(Begin::Held(_))));

    let ledger = DynamoDbDeliveryLedger::new(aws.dynamodb.clone(), &aws.table);
    let claim = DeliveryClaim {
        id: lead_id("retried-claim"),
        destination: DestinationName::Nurture,
        version: "v1".into(),
        received_at_ms: now_ms,
        lock_until_ms: now_ms + 30_000,
        now_ms,
        expires_at: now_ms / 1000 + 3600,
        token: "first-invocation".into(),
    };
    assert_eq!(
        ledger.claim(&claim).await.unwrap(),
        ClaimOutcome::Claimed { failures: 0 }
    );
    assert_eq!(
        ledger.claim(&claim).await.unwrap(),
        ClaimOutcome::Claimed { failures: 0 },
        "its own claim, not a busy one to wait for"
    );
    let other = DeliveryClaim {
        token: "second-invocation".into(),
        ..claim.clone()
    };
    assert_eq!(ledger.claim(&other).await.unwrap(), ClaimOutcome::Busy);
}

/// Keys `BatchGetItem` leaves unprocessed (throttling) are asked again; a destination whose key
/// stays unprocessed is left out of the read, which the router holds, never reads as closed.
#[tokio::test(flavor = "multi_thread")]
async fn unprocessed_control_keys_are_read_again_and_never_read_as_clean() {
    use crate::support::standin::AwsStandin;
    use crate::support::{lean_clients, sdk_config};
    let standin = AwsStandin::start().await;
    let config = sdk_config(&standin.url).await;
    let (dynamodb, _) = lean_clients(&config);
    let control = DynamoDbDeliveryControl::new(dynamodb, "t");
    let both = [DestinationName::Nurture, DestinationName::Zapier];
    // Once unprocessed, then read: both come back.
    standin.throttle_batch_gets(1);
    let read = control.read(&both).await.unwrap();
    assert_eq!(
        read.iter().map(|(d, _)| *d).collect::<Vec<_>>(),
        both.to_vec()
    );
    assert_eq!(
        standin.calls().get("DynamoDB_20120810.BatchGetItem"),
        Some(&2)
    );
    // Unprocessed on every round: nothing is claimed to be known.
    standin.throttle_batch_gets(100);
    let read = control.read(&both).await.unwrap();
    assert!(read.is_empty(), "{read:?}");
}
