//! The clayhook command line: the local pipeline and tools for the sample events.

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "clayhook",
    version,
    about = "Clay enrichment callbacks, received and routed"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole pipeline locally: moto_server, ingest on :3000, the router on the queue.
    Local {
        /// Where ingest listens (the port `sam local start-api` uses).
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: SocketAddr,
        /// moto_server's port (DynamoDB and SQS).
        #[arg(long, default_value_t = 5000)]
        moto_port: u16,
        /// The moto_server executable.
        #[arg(long, env = "MOTO_SERVER", default_value = ".venv/bin/moto_server")]
        moto_server: PathBuf,
    },
    /// Re-sign a Standard Webhooks API Gateway event (events/*.json) with the current time and
    /// the whsec_ secret in CLAY_WEBHOOK_SECRETS; prints the event.
    SignEvent { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("clayhook: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Local {
            listen,
            moto_port,
            moto_server,
        } => {
            // Same log set-up as the Lambdas (AWS_LAMBDA_LOG_LEVEL, AWS_LAMBDA_LOG_FORMAT).
            lambda_runtime::tracing::init_default_subscriber();
            runtime
                .block_on(clayhook::local::run(clayhook::local::LocalOptions {
                    listen,
                    moto_port,
                    moto_server,
                }))
                .map_err(|e| e.to_string())
        }
        Command::SignEvent { file } => sign_event(&file),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("clayhook: {e}");
            ExitCode::FAILURE
        }
    }
}

fn sign_event(file: &std::path::Path) -> Result<(), String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let secrets = std::env::var("CLAY_WEBHOOK_SECRETS").unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let signed = clayhook::events::resign_standard_webhooks(&text, &secrets, now)?;
    println!("{signed}");
    Ok(())
}
