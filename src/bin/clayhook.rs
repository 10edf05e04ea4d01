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
    /// Run the whole pipeline locally: moto_server, ingest on :3000, the router on the lead queue,
    /// and the feeder on the intake queue when CLAY_WEBHOOK_URLS is set.
    Local {
        /// Where ingest listens (the port `sam local start-api` uses).
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: SocketAddr,
        /// moto_server's port (DynamoDB and SQS).
        #[arg(long, default_value_t = 5000)]
        moto_port: u16,
        /// The moto_server executable.
        #[arg(long, env = "MOTO_SERVER", default_value = "scripts/moto_server")]
        moto_server: PathBuf,
    },
    /// The services `sam local` needs around SAM's containers (run by `make sam-local`):
    /// moto_server on every interface with the table and queues events/env.json names, a server
    /// that prints what the destinations receive, and, with --lambda-endpoint, the lead and
    /// intake queues polled into `sam local start-lambda` as the event source mappings would.
    SamLocal {
        /// moto_server's port (events/env.json: 5000).
        #[arg(long, default_value_t = 5000)]
        moto_port: u16,
        /// The moto_server executable.
        #[arg(long, env = "MOTO_SERVER", default_value = "scripts/moto_server")]
        moto_server: PathBuf,
        /// Where the destination printer listens (events/env.json: port 9000).
        #[arg(long, default_value = "0.0.0.0:9000")]
        destinations: SocketAddr,
        /// `sam local start-lambda`'s address, e.g. http://127.0.0.1:3001.
        #[arg(long)]
        lambda_endpoint: Option<String>,
    },
    /// Push rows into Clay tables through their webhook sources: one JSON object per POST, paced,
    /// retried, counted against Clay's 50,000 submissions per webhook, resumable.
    ///
    /// Exit status: 0 all rows sent (or already sent), 1 some rows failed (written to the
    /// failed-rows file), 2 bad arguments or input, 3 stopped early (limit reached or webhook
    /// refused; a re-run goes on where it stopped).
    Push(PushArgs),
    /// Inspect and redrive the lead queue's dead-letter queue (AWS settings from the usual
    /// environment: AWS_REGION, credentials, AWS_ENDPOINT_URL for moto_server).
    Dlq {
        /// The dead-letter queue's URL (the stack's DeadLetterQueueUrl output).
        #[arg(long, env = "DLQ_URL")]
        dlq_url: String,
        /// The table holding the delivery ledger (the stack's LeadsTableName output).
        #[arg(long, env = "IDEMPOTENCY_TABLE")]
        table: String,
        #[command(subcommand)]
        action: DlqAction,
    },
    /// The event archive: every lead the router routed, kept ARCHIVE_DAYS, with each
    /// destination's delivery timeline; replay sends leads through the lead queue again (AWS
    /// settings from the usual environment, as for dlq).
    Events {
        /// The table holding the archive and the ledger (the stack's LeadsTableName output).
        #[arg(long, env = "IDEMPOTENCY_TABLE")]
        table: String,
        #[command(subcommand)]
        action: EventsAction,
    },
    /// Re-sign a Standard Webhooks API Gateway event (events/*.json) with the current time and
    /// the whsec_ secret in CLAY_WEBHOOK_SECRETS; prints the event.
    SignEvent { file: PathBuf },
    /// After `sam deploy`: check the stack at its CallbackUrl (a new test lead is 202, the same
    /// again 200 duplicate, a wrong token 401). The test lead is routed nowhere.
    Smoke {
        /// The stack's CallbackUrl output (…/api/clay/enriched).
        url: String,
        /// A token from CLAY_WEBHOOK_SECRETS [default: its first static token, from the
        /// environment].
        #[arg(long)]
        token: Option<String>,
    },
}

#[derive(Subcommand)]
enum DlqAction {
    /// One line per record: message id, lead ID, source, receives, destinations delivered and owed.
    List,
    /// One record (by message id or lead ID) as JSON, with the ledger's view. Emails are masked.
    Show {
        id: String,
        /// Show email addresses unmasked.
        #[arg(long)]
        show_email: bool,
    },
    /// Send records back to the lead queue; the router delivers only to destinations the
    /// ledger has not recorded. Records that are not clayhook envelopes stay in the DLQ.
    Redrive {
        /// The lead queue's URL (the stack's LeadQueueUrl output).
        #[arg(long, env = "LEAD_QUEUE_URL")]
        queue_url: String,
        /// Only this record (message id or lead ID).
        #[arg(long)]
        id: Option<String>,
        /// Show what would be redriven; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum EventsAction {
    /// One line per lead: received, ID, source, status, destinations routed, delivered, owed.
    List {
        /// Only leads received since: a time (2026-12-01T09:00:00Z) or a duration back (6h, 7d).
        #[arg(long, default_value = "1d")]
        since: String,
        /// Only leads from this source (the path's {source}).
        #[arg(long)]
        source: Option<String>,
        /// Only leads with this status.
        #[arg(long, value_parser = ["delivered", "failed", "waiting"])]
        status: Option<String>,
    },
    /// One lead as JSON: the lead (emails masked), the rules' verdict, each destination's timeline.
    Show {
        id: String,
        /// Show email addresses unmasked.
        #[arg(long)]
        show_email: bool,
    },
    /// Send leads through the lead queue again: one by ID, or every lead since a time. The
    /// ledger skips destinations that have a lead unless --force.
    Replay {
        /// The lead's ID (or use --since).
        id: Option<String>,
        /// Every lead received since (a time, or a duration back such as 6h).
        #[arg(long, conflicts_with = "id")]
        since: Option<String>,
        /// With --since: only leads from this source.
        #[arg(long)]
        source: Option<String>,
        /// Only to this destination (of those the rules choose).
        #[arg(long)]
        destination: Option<String>,
        /// Deliver again even where the ledger has it (once more per destination).
        #[arg(long)]
        force: bool,
        /// Show what would be replayed; send nothing.
        #[arg(long)]
        dry_run: bool,
        /// The lead queue's URL (the stack's LeadQueueUrl output).
        #[arg(long, env = "LEAD_QUEUE_URL")]
        queue_url: String,
    },
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
            clayhook::logging::init();
            runtime
                .block_on(clayhook::local::run(clayhook::local::LocalOptions {
                    listen,
                    moto_port,
                    moto_server,
                }))
                .map_err(|e| e.to_string())
        }
        Command::SamLocal {
            moto_port,
            moto_server,
            destinations,
            lambda_endpoint,
        } => {
            clayhook::logging::init();
            runtime
                .block_on(clayhook::local::sam::run(
                    clayhook::local::sam::SamLocalOptions {
                        moto_port,
                        moto_server,
                        destinations,
                        lambda_endpoint,
                    },
                ))
                .map_err(|e| e.to_string())
        }
        Command::SignEvent { file } => sign_event(&file),
        Command::Dlq {
            dlq_url,
            table,
            action,
        } => runtime.block_on(dlq(dlq_url, table, action)),
        Command::Events { table, action } => runtime.block_on(events(table, action)),
        Command::Push(args) => return runtime.block_on(push(args)),
        Command::Smoke { url, token } => return runtime.block_on(smoke(url, token)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("clayhook: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn smoke(url: String, token: Option<String>) -> ExitCode {
    let token = match token {
        Some(t) => Some(t),
        None => match clayhook::config::process_env().optional("CLAY_WEBHOOK_SECRETS") {
            None => None,
            Some(listed) => {
                match clayhook::secret_refs::value_not_reference("CLAY_WEBHOOK_SECRETS", &listed)
                    .and_then(|()| {
                        clayhook::auth::Secrets::parse(&listed).map_err(|e| e.to_string())
                    }) {
                    Ok(secrets) => secrets.first_static_token().map(str::to_string),
                    Err(e) => {
                        eprintln!("clayhook smoke: {e}");
                        return ExitCode::from(2);
                    }
                }
            }
        },
    };
    match clayhook::smoke::smoke(&url, token.as_deref().unwrap_or_default()).await {
        Ok(report) => {
            print!("{}", report.render());
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("clayhook smoke: {e}");
            ExitCode::from(2)
        }
    }
}

fn sign_event(file: &std::path::Path) -> Result<(), String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let listed = clayhook::config::process_env()
        .raw("CLAY_WEBHOOK_SECRETS")
        .unwrap_or_default();
    clayhook::secret_refs::value_not_reference("CLAY_WEBHOOK_SECRETS", &listed)?;
    let secrets = clayhook::auth::Secrets::parse(&listed).map_err(|e| e.to_string())?;
    let now = clayhook::clock::epoch_ms(std::time::SystemTime::now()) / 1000;
    let signed = clayhook::events::resign_standard_webhooks(&text, &secrets, now)?;
    println!("{signed}");
    Ok(())
}

#[derive(clap::Args)]
struct PushArgs {
    /// A Clay webhook URL; repeat to rotate to the next one when a webhook reaches the limit.
    #[arg(long = "webhook", required = true)]
    webhooks: Vec<String>,
    /// The webhook's authentication token (sent as x-clay-webhook-auth): one for all
    /// webhooks, or one per --webhook in the same order.
    #[arg(
        long = "auth-token",
        env = "CLAY_WEBHOOK_AUTH_TOKEN",
        hide_env_values = true
    )]
    auth_tokens: Vec<String>,
    /// Rows per second, at most 10 (Clay's limit per workspace).
    #[arg(long, default_value_t = clayhook::feed::DEFAULT_RATE_PER_SECOND)]
    rate: f64,
    /// Submissions per webhook before rotating (Clay's limit).
    #[arg(long, env = "CLAY_SUBMISSION_LIMIT", default_value_t = clayhook::feed::CLAY_SUBMISSION_LIMIT)]
    limit: u64,
    /// The state file: submissions per webhook and rows already accepted [default:
    /// $XDG_STATE_HOME/clayhook/push-<hash of the first webhook's URL>.jsonl, else under
    /// ~/.local/state].
    #[arg(long)]
    state: Option<PathBuf>,
    /// Where failed rows go [default: FILE.failed.jsonl, or clayhook-push.failed.jsonl for -].
    #[arg(long)]
    failed: Option<PathBuf>,
    /// csv or jsonl [default: from the extension; on standard input, jsonl if it starts with {].
    #[arg(long, value_parser = ["csv", "jsonl"])]
    format: Option<String>,
    /// Attempts per row (429, 5xx, timeouts are retried with backoff).
    #[arg(long, default_value_t = 5)]
    max_attempts: u32,
    /// Longest wait for one answer, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// CSV with a header row, or JSON Lines (one object per line); - reads standard input.
    file: PathBuf,
}

/// Where `clayhook push` kept its state before it moved to the user's state directory.
const LEGACY_STATE: &str = ".clayhook-push-state.jsonl";

async fn push(a: PushArgs) -> ExitCode {
    use clayhook::feed::push::{Format, PushOptions};
    use std::io::IsTerminal;
    let usage = |e: String| {
        eprintln!("clayhook push: {e}");
        ExitCode::from(2)
    };
    let webhooks = match clayhook::feed::webhooks(&a.webhooks, &a.auth_tokens) {
        Ok(w) => w,
        Err(e) => return usage(e.to_string()),
    };
    let rate = match clayhook::feed::rate(a.rate) {
        Ok(r) => r,
        Err(e) => return usage(e.to_string()),
    };
    if a.limit == 0 || a.max_attempts == 0 {
        return usage("--limit and --max-attempts must be at least 1".into());
    }
    let failed = a.failed.unwrap_or_else(|| {
        if a.file.as_os_str() == "-" {
            PathBuf::from("clayhook-push.failed.jsonl")
        } else {
            let mut name = a.file.clone().into_os_string();
            name.push(".failed.jsonl");
            PathBuf::from(name)
        }
    });
    let state = match a.state {
        Some(path) => path,
        // Earlier versions kept the state here: carrying on without it would send its rows
        // again and count each webhook's submissions from 0.
        None if std::path::Path::new(LEGACY_STATE).exists() => {
            return usage(format!(
                "found {LEGACY_STATE} here, the state of an earlier clayhook push: pass --state {LEGACY_STATE} to keep using it"
            ));
        }
        None => {
            let first = webhooks.first().map(|w| w.key.as_str()).unwrap_or_default();
            match clayhook::feed::journal::default_path(&clayhook::config::process_env(), first) {
                Ok(path) => path,
                Err(e) => return usage(e.to_string()),
            }
        }
    };
    let options = PushOptions {
        webhooks,
        input: a.file,
        format: a.format.map(|f| {
            if f == "csv" {
                Format::Csv
            } else {
                Format::Jsonl
            }
        }),
        state,
        failed,
        rate,
        limit: a.limit,
        retry: clayhook::delivery::retry::RetryPolicy {
            max_attempts: a.max_attempts,
            base: std::time::Duration::from_millis(500),
            cap: std::time::Duration::from_secs(30),
            safety_margin: std::time::Duration::ZERO,
        },
        progress: !a.quiet && std::io::stderr().is_terminal(),
    };
    let timeout = std::time::Duration::from_millis(a.timeout_ms.max(1));
    let client = match clayhook::feed::clay::ClayClient::new(
        timeout.min(std::time::Duration::from_secs(10)),
        timeout,
    ) {
        Ok(c) => c,
        Err(e) => return usage(format!("cannot build the HTTP client: {e}")),
    };
    match clayhook::feed::push::push(&options, &client).await {
        Ok(summary) => {
            print!("{}", summary.report(options.limit, &options.state));
            if summary.stop.is_some() {
                ExitCode::from(3)
            } else if summary.failed > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => usage(e.to_string()),
    }
}

/// The same AWS clients the functions use.
async fn clients() -> Result<clayhook::wiring::Clients, String> {
    clayhook::wiring::Clients::new(clayhook::aws::sdk_config().await).map_err(|e| e.to_string())
}

async fn dlq(dlq_url: String, table: String, action: DlqAction) -> Result<(), String> {
    use clayhook::dlq::{DeadLetters, MAX_MESSAGES, RedriveOutcome};
    let rules = clayhook::router::config::routing_rules(&clayhook::config::process_env())
        .map_err(|e| e.to_string())?;
    let clients = clients().await?;
    let dead = DeadLetters {
        sqs: clients.sqs,
        ledger: clayhook::router::ledger::DynamoDbDeliveryLedger::new(clients.dynamodb, table),
        dlq_url,
        rules,
    };
    match action {
        DlqAction::List => {
            let all = dead.list(MAX_MESSAGES).await.map_err(|e| e.to_string())?;
            for d in &all {
                println!("{}", d.line());
            }
            println!("{} record(s) in the dead-letter queue", all.len());
        }
        DlqAction::Show { id, show_email } => {
            let d = dead.show(&id).await.map_err(|e| e.to_string())?;
            let text =
                serde_json::to_string_pretty(&d.detail(show_email)).map_err(|e| e.to_string())?;
            println!("{text}");
        }
        DlqAction::Redrive {
            queue_url,
            id,
            dry_run,
        } => {
            let report = dead
                .redrive(&queue_url, id.as_deref(), dry_run)
                .await
                .map_err(|e| e.to_string())?;
            let mut failed = 0;
            let mut moved = 0;
            for (d, outcome) in &report {
                let lead = d.envelope.as_ref().map_or("-", |e| e.id.as_str());
                let owed = d
                    .owed
                    .iter()
                    .map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(",");
                match outcome {
                    RedriveOutcome::Redriven => {
                        moved += 1;
                        println!("redriven {}  lead {lead}  owed {owed}", d.message_id)
                    }
                    RedriveOutcome::WouldRedrive => {
                        moved += 1;
                        println!("would redrive {}  lead {lead}  owed {owed}", d.message_id)
                    }
                    RedriveOutcome::NotAnEnvelope => println!(
                        "left {}: not a clayhook envelope (inspect it with dlq show)",
                        d.message_id
                    ),
                    RedriveOutcome::Failed(e) => {
                        failed += 1;
                        println!("failed {}: {e}", d.message_id)
                    }
                }
            }
            if let Some(only) = &id
                && report.is_empty()
            {
                return Err(format!(
                    "no message in the DLQ has the message id or lead ID {only:?}"
                ));
            }
            println!(
                "{} {moved} record(s){}",
                if dry_run { "would redrive" } else { "redrove" },
                if dry_run {
                    " (dry run: nothing changed)"
                } else {
                    ""
                }
            );
            if failed > 0 {
                return Err(format!(
                    "{failed} record(s) could not be redriven; they stay in the DLQ"
                ));
            }
        }
    }
    Ok(())
}

async fn events(table: String, action: EventsAction) -> Result<(), String> {
    use clayhook::archive::cli::{Events, ReplayOutcome, detail, line, parse_since};
    use clayhook::archive::{Status, dynamodb::EventArchive};
    let clients = clients().await?;
    let events = Events {
        archive: EventArchive::new(clients.dynamodb, table),
        sqs: clients.sqs,
    };
    let now = clayhook::clock::epoch_ms(std::time::SystemTime::now());
    match action {
        EventsAction::List {
            since,
            source,
            status,
        } => {
            let since = parse_since(&since, now)?;
            let wanted = status.as_deref().and_then(Status::parse);
            let all = events.list(since, source.as_deref(), wanted).await?;
            for (e, r) in &all {
                println!("{}", line(e, r));
            }
            println!("{} lead(s)", all.len());
        }
        EventsAction::Show { id, show_email } => {
            let rules = clayhook::router::config::routing_rules(&clayhook::config::process_env())
                .map_err(|e| e.to_string())?;
            let found = events.show(&id).await?;
            let text = serde_json::to_string_pretty(&detail(&found, &rules, show_email))
                .map_err(|e| e.to_string())?;
            println!("{text}");
        }
        EventsAction::Replay {
            id,
            since,
            source,
            destination,
            force,
            dry_run,
            queue_url,
        } => {
            let destination = match destination {
                Some(d) => Some(
                    clayhook::router::rules::DestinationName::parse(&d).ok_or_else(|| {
                        let names: Vec<&str> = clayhook::router::rules::DestinationName::ALL
                            .iter()
                            .map(|n| n.as_str())
                            .collect();
                        format!(
                            "--destination {d:?} is not a destination ({})",
                            names.join(", ")
                        )
                    })?,
                ),
                None => None,
            };
            let chosen = match (id, since) {
                (Some(id), _) => vec![events.show(&id).await?.0],
                (None, Some(since)) => events
                    .list(parse_since(&since, now)?, source.as_deref(), None)
                    .await?
                    .into_iter()
                    .map(|(e, _)| e)
                    .collect(),
                (None, None) => return Err("name a lead ID, or --since".into()),
            };
            let report = events
                .replay(&queue_url, &chosen, destination, force, dry_run)
                .await;
            let mut failed = 0;
            for (id, outcome) in &report {
                match outcome {
                    ReplayOutcome::Sent => println!("replayed {id}"),
                    ReplayOutcome::WouldSend => println!("would replay {id}"),
                    ReplayOutcome::TooLarge => {
                        failed += 1;
                        println!(
                            "left {id}: archived without its body (too large); nothing to replay"
                        )
                    }
                    ReplayOutcome::Failed(e) => {
                        failed += 1;
                        println!("failed {id}: {e}")
                    }
                }
            }
            let sent = report.len() - failed;
            println!(
                "{} {sent} lead(s){}{}",
                if dry_run { "would replay" } else { "replayed" },
                destination.map_or(String::new(), |d| format!(" to {d}")),
                if force {
                    " (forced past the ledger)"
                } else {
                    ""
                }
            );
            if failed > 0 {
                return Err(format!("{failed} lead(s) could not be replayed"));
            }
        }
    }
    Ok(())
}
