//! The feeder Lambda: wiring only. Intake SQS queue -> Clay table webhooks.

use clayhook::config::FeederConfig;
use clayhook::feed::clay::ClayClient;
use clayhook::feed::dynamodb::DynamoDbFeedStore;
use clayhook::feed::feeder::Feeder;
use clayhook::feed::sqs::SqsIntake;
use lambda_runtime::Error;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    clayhook::logging::init();
    clayhook::metrics::init(std::env::var("METRICS_NAMESPACE").ok().as_deref(), "feeder");
    clayhook::logging::exit_code(serve().await)
}

async fn serve() -> Result<(), Error> {
    let config = FeederConfig::from_env().inspect_err(|e| {
        tracing::error!(error = %e, "refusing to start: configuration is invalid");
    })?;
    tracing::info!(webhooks = ?config.settings.webhooks, limit = config.settings.limit, "feeder configured");
    let sdk = clayhook::aws::sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    clayhook::aws::warm_connections(&ddb, &config.table, None, config.warm_up).await;
    let feeder = Feeder::new(
        config.settings,
        DynamoDbFeedStore::new(ddb, config.table),
        SqsIntake {
            client: aws_sdk_sqs::Client::new(&sdk),
            queue_url: config.queue_url,
            dead_letter_url: config.dead_letter_url,
        },
        ClayClient::new(config.connect_timeout, config.request_timeout)?,
    );
    clayhook::batch::run_lambda(&feeder).await
}
