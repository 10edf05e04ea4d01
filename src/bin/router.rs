//! The router Lambda: wiring only.

use aws_lambda_events::sqs::SqsEvent;
use clayhook::config::RouterConfig;
use clayhook::destinations::HttpDestinations;
use clayhook::metrics::Metrics;
use clayhook::router::Router;
use clayhook::router::ledger::DynamoDbDeliveryLedger;
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    clayhook::logging::init();
    clayhook::metrics::init(std::env::var("METRICS_NAMESPACE").ok().as_deref(), "router");
    clayhook::logging::exit_code(serve().await)
}

async fn serve() -> Result<(), Error> {
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
        let metrics = Metrics::for_invocation().with_request_id(&event.context.request_id);
        let result = router.handle_with(event.payload, deadline, &metrics).await;
        metrics.flush();
        result.map_err(Error::from)
    }))
    .await
}
