//! The router Lambda: wiring only.

use clayhook::router::config::RouterConfig;
use lambda_runtime::Error;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    clayhook::logging::init();
    clayhook::metrics::init_from_env("router");
    clayhook::logging::exit_code(serve().await)
}

async fn serve() -> Result<(), Error> {
    let config = RouterConfig::from_env().inspect_err(|e| {
        tracing::error!(error = %e, "refusing to start: configuration is invalid");
    })?;
    tracing::info!(destinations = ?config.destinations, rules = config.settings.rules.len(), "router configured");
    let sdk = clayhook::aws::sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let warm_key = clayhook::table::warm_up_key(clayhook::table::DELIVERY_PREFIX);
    clayhook::aws::warm_connections(&ddb, (&config.table, &warm_key), None, config.warm_up).await;
    let router = clayhook::wiring::router(config, &ddb)?;
    clayhook::batch::run_lambda(&router).await
}
