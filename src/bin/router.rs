//! The router Lambda: wiring only.

use aws_lambda_events::sqs::SqsEvent;
use clayhook::config::RouterConfig;
use clayhook::destinations::HttpDestinations;
use clayhook::router::Router;
use clayhook::router::ledger::DynamoDbDeliveryLedger;
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = RouterConfig::from_env().inspect_err(|e| {
        tracing::error!(error = %e, "refusing to start: configuration is invalid");
    })?;
    tracing::info!(destinations = ?config.destinations, rules = config.settings.rules.len(), "router configured");
    let sdk = clayhook::aws::sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    clayhook::aws::warm_connections(&ddb, &config.table, None, config.warm_up).await;
    let router = Router {
        settings: config.settings,
        ledger: DynamoDbDeliveryLedger::new(ddb, config.table),
        destinations: HttpDestinations::new(config.destinations, config.connect_timeout)?,
    };
    let router = &router;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let deadline = event.context.deadline();
        router
            .handle(event.payload, deadline)
            .await
            .map_err(Error::from)
    }))
    .await
}
