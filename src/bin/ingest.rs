//! The ingest Lambda: wiring only.

use clayhook::ingest::config::IngestConfig;
use clayhook::ingest::lambda::handle_request;
use lambda_http::{Error, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    clayhook::logging::init();
    clayhook::metrics::init_from_env("ingest");
    clayhook::logging::exit_code(serve().await)
}

async fn serve() -> Result<(), Error> {
    let config = IngestConfig::from_env().inspect_err(|e| {
        tracing::error!(error = %e, "refusing to start: configuration is invalid");
    })?;
    let started = std::time::Instant::now();
    let sdk = clayhook::aws::sdk_config().await;
    let loaded = started.elapsed();
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let built = started.elapsed();
    let warm_key = clayhook::table::warm_up_key(clayhook::table::INGEST_PREFIX);
    clayhook::aws::warm_connections(
        &ddb,
        (&config.table, &warm_key),
        Some((&sqs, &config.queue_url)),
        config.warm_up,
    )
    .await;
    tracing::debug!(
        config_us = loaded.as_micros() as u64,
        clients_us = (built - loaded).as_micros() as u64,
        warm_up_us = (started.elapsed() - built).as_micros() as u64,
        "init timings"
    );
    let ingest = clayhook::wiring::ingest(config, &ddb, &sqs);
    let ingest = &ingest;
    lambda_http::run(service_fn(move |req| handle_request(ingest, req))).await
}
