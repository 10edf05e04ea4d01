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
        handle_request(&*ingest.current().await, req).await
    }))
    .await
}
