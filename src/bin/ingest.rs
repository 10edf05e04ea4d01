//! The ingest Lambda: wiring only.

use clayhook::config::IngestConfig;
use clayhook::idempotency::dynamodb::DynamoDbIdempotencyStore;
use clayhook::ingest::{Ingest, lambda::handle_request};
use clayhook::queue::sqs::SqsLeadQueue;
use lambda_http::{Error, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let config = IngestConfig::from_env().inspect_err(|e| {
        tracing::error!(error = %e, "refusing to start: configuration is invalid");
    })?;
    let sdk = clayhook::aws::sdk_config().await;
    let ingest = Ingest {
        settings: config.settings,
        store: DynamoDbIdempotencyStore::new(aws_sdk_dynamodb::Client::new(&sdk), config.table),
        queue: SqsLeadQueue::new(aws_sdk_sqs::Client::new(&sdk), config.queue_url),
    };
    let ingest = &ingest;
    lambda_http::run(service_fn(move |req| handle_request(ingest, req))).await
}
