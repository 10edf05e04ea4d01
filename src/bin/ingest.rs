//! The ingest Lambda: wiring only.

// The future of `main` (runtime, hyper, the functions) nests past the default layout depth.
#![recursion_limit = "256"]

use clayhook::ingest::lambda::handle_request;
use lambda_http::{Error, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    clayhook::logging::init();
    clayhook::metrics::init_from_env("ingest");
    clayhook::logging::exit_code(serve().await)
}

async fn serve() -> Result<(), Error> {
    let ingest = clayhook::wiring::start_ingest().await.inspect_err(|e| {
        tracing::error!(error = %e, "refusing to start: configuration is invalid");
    })?;
    let ingest = &ingest;
    lambda_http::run(service_fn(move |req| async move {
        match ingest.current().await {
            Ok(ingest) => handle_request(&ingest, req).await,
            // Refused secrets: nothing is accepted with the list they replaced; Clay retries.
            Err(refused) => Ok(clayhook::ingest::http::refused_configuration(&refused)),
        }
    }))
    .await
}
