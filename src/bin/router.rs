//! The router Lambda: wiring only.

// The future of `main` (runtime, hyper, the functions) nests past the default layout depth.
#![recursion_limit = "256"]

use lambda_runtime::Error;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    clayhook::logging::init();
    clayhook::metrics::init_from_env("router");
    clayhook::logging::exit_code(serve().await)
}

async fn serve() -> Result<(), Error> {
    let router = clayhook::wiring::start_router().await.inspect_err(|e| {
        tracing::error!(error = %e, "refusing to start: configuration is invalid");
    })?;
    clayhook::batch::run_lambda(&router).await
}
