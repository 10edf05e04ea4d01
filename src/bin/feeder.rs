//! The feeder Lambda: wiring only. Intake SQS queue -> Clay table webhooks.

use clayhook::feed::config::FeederConfig;
use lambda_runtime::Error;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    clayhook::logging::init();
    clayhook::metrics::init_from_env("feeder");
    clayhook::logging::exit_code(serve().await)
}

async fn serve() -> Result<(), Error> {
    let config = FeederConfig::from_env().inspect_err(|e| {
        tracing::error!(error = %e, "refusing to start: configuration is invalid");
    })?;
    tracing::info!(webhooks = ?config.settings.webhooks, limit = config.settings.limit, "feeder configured");
    let sdk = clayhook::aws::sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let warm_key = clayhook::table::warm_up_key(clayhook::table::FEED_PREFIX);
    clayhook::aws::warm_connections(&ddb, (&config.table, &warm_key), None, config.warm_up).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let feeder = clayhook::wiring::feeder(config, &ddb, &sqs)?;
    clayhook::batch::run_lambda(&feeder).await
}
