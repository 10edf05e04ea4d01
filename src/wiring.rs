//! The one place each function is put together from its settings and the AWS clients: the
//! Lambda binaries and `clayhook local` build the same objects here, so they cannot drift.

use crate::destinations::HttpDestinations;
use crate::feed::clay::ClayClient;
use crate::feed::config::FeederConfig;
use crate::feed::dynamodb::DynamoDbFeedStore;
use crate::feed::feeder::Feeder;
use crate::feed::sqs::SqsIntake;
use crate::idempotency::dynamodb::DynamoDbIdempotencyStore;
use crate::ingest::Ingest;
use crate::ingest::config::IngestConfig;
use crate::queue::sqs::SqsLeadQueue;
use crate::router::Router;
use crate::router::config::RouterConfig;
use crate::router::ledger::DynamoDbDeliveryLedger;

pub type IngestFunction = Ingest<DynamoDbIdempotencyStore, SqsLeadQueue>;
pub type RouterFunction = Router<DynamoDbDeliveryLedger, HttpDestinations>;
pub type FeederFunction = Feeder<DynamoDbFeedStore, SqsIntake>;

/// Ingest on its table and lead queue.
pub fn ingest(
    config: IngestConfig,
    ddb: &aws_sdk_dynamodb::Client,
    sqs: &aws_sdk_sqs::Client,
) -> IngestFunction {
    Ingest {
        settings: config.settings,
        store: DynamoDbIdempotencyStore::new(ddb.clone(), config.table),
        queue: SqsLeadQueue::new(sqs.clone(), config.queue_url),
    }
}

/// The router on its ledger, with one HTTP client for every destination.
pub fn router(
    config: RouterConfig,
    ddb: &aws_sdk_dynamodb::Client,
) -> Result<RouterFunction, reqwest::Error> {
    Ok(Router {
        settings: config.settings,
        ledger: DynamoDbDeliveryLedger::new(ddb.clone(), config.table),
        destinations: HttpDestinations::new(config.destinations, config.connect_timeout)?,
    })
}

/// The feeder on its counters, its intake queue (and DLQ) and Clay.
pub fn feeder(
    config: FeederConfig,
    ddb: &aws_sdk_dynamodb::Client,
    sqs: &aws_sdk_sqs::Client,
) -> Result<FeederFunction, reqwest::Error> {
    Ok(Feeder::new(
        config.settings,
        DynamoDbFeedStore::new(ddb.clone(), config.table),
        SqsIntake {
            client: sqs.clone(),
            queue_url: config.queue_url,
            dead_letter_url: config.dead_letter_url,
        },
        ClayClient::new(config.connect_timeout, config.request_timeout)?,
    ))
}
