//! The benchmarks' keep-alive AWS stand-in (tests/support/standin.rs) answers our own adapters
//! the way DynamoDB and SQS do on the paths the benchmarks take, over few connections.

use crate::support::sdk_config;
use crate::support::standin::AwsStandin;
use clayhook::idempotency::dynamodb::DynamoDbIdempotencyStore;
use clayhook::idempotency::{Begin, Claim, IdempotencyStore};
use clayhook::queue::sqs::SqsLeadQueue;
use clayhook::queue::{LeadQueue, OutgoingMessage};

#[tokio::test]
async fn the_standin_answers_our_adapters_over_kept_alive_connections() {
    let standin = AwsStandin::start().await;
    let config = sdk_config(&standin.url).await;
    let store = DynamoDbIdempotencyStore::new(aws_sdk_dynamodb::Client::new(&config), "t");
    let queue = SqsLeadQueue::new(
        aws_sdk_sqs::Client::new(&config),
        format!("{}/q", standin.url),
    );
    for i in 0..20 {
        let claim = Claim {
            id: format!("lead-{i}"),
            body_hash: None,
            expires_at: 2_000_000_000,
            in_progress_expires_at: 1_900_000_000_000,
            now_ms: 1_800_000_000_000,
            token: format!("token-{i}"),
        };
        assert!(matches!(store.begin(&claim).await, Ok(Begin::Claimed)));
        // The same key again, by another invocation: held, with the item the failed condition
        // returned.
        let other = Claim {
            token: format!("other-{i}"),
            ..claim.clone()
        };
        assert!(matches!(store.begin(&other).await, Ok(Begin::Held(_))));
        let message_id = queue
            .send(&OutgoingMessage {
                body: format!("{{\"n\":{i}}}"),
                id: claim.id.clone(),
                group: "default".into(),
                trace_header: None,
            })
            .await
            .expect("sent");
        assert!(!message_id.is_empty());
        store
            .complete(&claim.id, &message_id, claim.expires_at)
            .await
            .expect("completed");
    }
    let calls = standin.calls();
    assert_eq!(calls.get("DynamoDB_20120810.PutItem"), Some(&40));
    assert_eq!(calls.get("AmazonSQS.SendMessage"), Some(&20));
    assert_eq!(calls.get("DynamoDB_20120810.UpdateItem"), Some(&20));
    // 80 calls, one client per service, calls in sequence: kept alive.
    assert!(
        standin.connections() <= 4,
        "{} connections",
        standin.connections()
    );
}
