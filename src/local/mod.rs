//! `clayhook local`: the whole pipeline on one machine, no Docker, no AWS account.
//! moto_server stands in for DynamoDB and SQS; a small HTTP server stands in for API Gateway;
//! a poller stands in for the SQS event source mapping. The handlers are the Lambdas' own.

pub mod http;
pub mod poller;
pub mod printing;
pub mod sam;

use aws_config::Region;
use aws_sdk_sqs::types::QueueAttributeName;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Env, process_env};
use crate::feed::config::FeederConfig;
use crate::ingest::config::IngestConfig;
use crate::router::Router;
use crate::router::config::RouterConfig;
use printing::PrintingDestinations;

pub const LOCAL_TABLE: &str = "clayhook-local";
pub const LOCAL_QUEUE: &str = "clayhook-leads";
pub const LOCAL_DLQ: &str = "clayhook-leads-dlq";
pub const LOCAL_INTAKE: &str = "clayhook-intake";
pub const LOCAL_INTAKE_DLQ: &str = "clayhook-intake-dlq";
/// Local redeliveries come back quickly so failures are visible; an invocation (one second
/// less) still fits a whole default request (`HTTP_TIMEOUT_MS`, 10 s) and the bookkeeping after it.
const LOCAL_VISIBILITY_SECONDS: i32 = 20;
/// A backstop only: the router itself moves a record to the DLQ when its schedule is over.
const LOCAL_MAX_RECEIVE_COUNT: u32 = 1000;
/// Locally a failing lead comes back every 10 s and reaches the DLQ after 5 receives, unless
/// `RETRY_SCHEDULE` / `RETRY_SCHEDULE_TOTAL` say otherwise.
const LOCAL_RETRY_SCHEDULE: (&str, &str) = ("10s", "40s");
/// As the template's FeederMaxReceiveCount: held-back rows come back many times by design.
const LOCAL_INTAKE_MAX_RECEIVE_COUNT: u32 = 1000;

#[derive(Debug, Clone)]
pub struct LocalOptions {
    pub listen: SocketAddr,
    pub moto_port: u16,
    pub moto_server: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("cannot start {path}: {source} (run `make venv`, or set MOTO_SERVER)")]
    Moto {
        path: String,
        source: std::io::Error,
    },
    #[error("moto_server did not open port {0} in 30 s")]
    MotoTimeout(u16),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("AWS (moto) set-up failed: {0}")]
    Setup(String),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error(
        "clayhook local takes secret values, not references (AWS here is moto): set the value of {0}"
    )]
    SecretReferences(String),
}

fn setup<E: std::fmt::Display>(e: E) -> LocalError {
    LocalError::Setup(e.to_string())
}

/// Starts moto_server on `host`; it is killed when the returned child is dropped (and if we die).
fn start_moto(
    moto_server: &std::path::Path,
    host: &str,
    port: u16,
) -> Result<tokio::process::Child, LocalError> {
    let mut cmd = tokio::process::Command::new(moto_server);
    cmd.args(["-H", host, "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    // If this process dies without unwinding (SIGKILL), take moto with it.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    cmd.spawn().map_err(|source| LocalError::Moto {
        path: moto_server.display().to_string(),
        source,
    })
}

/// Waits for moto on `port`; its endpoint and clients with moto's dummy credentials.
async fn moto_clients(port: u16) -> Result<(String, crate::wiring::Clients), LocalError> {
    wait_for_port(port).await?;
    let endpoint = format!("http://127.0.0.1:{port}");
    let sdk = crate::aws::loader()
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "testing", "testing", None, None, "local",
        ))
        .endpoint_url(&endpoint)
        .load()
        .await;
    Ok((endpoint, crate::wiring::Clients::new(sdk)?))
}

async fn wait_for_port(port: u16) -> Result<(), LocalError> {
    let start = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if start.elapsed() > Duration::from_secs(30) {
            return Err(LocalError::MotoTimeout(port));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// A queue on moto with its dead-letter queue behind it.
#[derive(Debug, Clone)]
pub struct LocalQueue {
    pub url: String,
    pub arn: String,
    pub dead_letter_url: String,
}

/// What `create_resources` made on moto.
#[derive(Debug, Clone)]
pub struct LocalResources {
    pub leads: LocalQueue,
    pub intake: LocalQueue,
}

/// Creates the table, the lead queue and the feeder's intake queue, each with its DLQ, on moto.
pub async fn create_resources(
    ddb: &aws_sdk_dynamodb::Client,
    sqs: &aws_sdk_sqs::Client,
) -> Result<LocalResources, LocalError> {
    crate::table::create(ddb, LOCAL_TABLE)
        .await
        .map_err(LocalError::Setup)?;
    Ok(LocalResources {
        leads: create_queue(sqs, LOCAL_QUEUE, LOCAL_DLQ, LOCAL_MAX_RECEIVE_COUNT).await?,
        intake: create_queue(
            sqs,
            LOCAL_INTAKE,
            LOCAL_INTAKE_DLQ,
            LOCAL_INTAKE_MAX_RECEIVE_COUNT,
        )
        .await?,
    })
}

async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    dead_letter_name: &str,
    max_receive_count: u32,
) -> Result<LocalQueue, LocalError> {
    let create = |name: &str| {
        sqs.create_queue()
            .queue_name(name)
            .attributes(
                QueueAttributeName::VisibilityTimeout,
                LOCAL_VISIBILITY_SECONDS.to_string(),
            )
            // As template.yaml: the 1 MiB ingest measures envelopes against.
            .attributes(
                QueueAttributeName::MaximumMessageSize,
                crate::ingest::config::DEFAULT_MAX_MESSAGE_BYTES.to_string(),
            )
    };
    let dead_letter_url = create(dead_letter_name)
        .send()
        .await
        .map_err(|e| setup(aws_sdk_sqs::error::DisplayErrorContext(e)))?
        .queue_url
        .unwrap_or_default();
    let dead_letter_arn = queue_arn(sqs, &dead_letter_url).await?;
    let redrive = serde_json::json!({
        "deadLetterTargetArn": dead_letter_arn,
        "maxReceiveCount": max_receive_count.to_string(),
    });
    let url = create(name)
        .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
        .send()
        .await
        .map_err(|e| setup(aws_sdk_sqs::error::DisplayErrorContext(e)))?
        .queue_url
        .unwrap_or_default();
    let arn = queue_arn(sqs, &url).await?;
    Ok(LocalQueue {
        url,
        arn,
        dead_letter_url,
    })
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<String, LocalError> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| setup(aws_sdk_sqs::error::DisplayErrorContext(e)))?;
    Ok(out
        .attributes
        .unwrap_or_default()
        .get(&QueueAttributeName::QueueArn)
        .cloned()
        .unwrap_or_default())
}

pub async fn run(opts: LocalOptions) -> Result<(), LocalError> {
    let _moto = start_moto(&opts.moto_server, "127.0.0.1", opts.moto_port)?;
    let (endpoint, clients) = moto_clients(opts.moto_port).await?;
    let (ddb, sqs) = (clients.ddb.clone(), clients.sqs.clone());
    let resources = create_resources(&ddb, &sqs).await?;
    let queue_url = resources.leads.url.clone();

    // The user's environment, with the local resources (and a token if none is set) on top.
    let process = process_env();
    let secrets = process
        .optional("CLAY_WEBHOOK_SECRETS")
        .unwrap_or_else(|| format!("local-{:016x}", fastrand::u64(..)));
    let mut overrides: HashMap<&str, String> = HashMap::from([
        ("CLAY_WEBHOOK_SECRETS", secrets.clone()),
        ("IDEMPOTENCY_TABLE", LOCAL_TABLE.to_string()),
        ("LEAD_QUEUE_URL", queue_url.clone()),
        ("LEAD_DLQ_URL", resources.leads.dead_letter_url.clone()),
        ("MAX_RECEIVE_COUNT", LOCAL_MAX_RECEIVE_COUNT.to_string()),
        ("FEEDER_QUEUE_URL", resources.intake.url.clone()),
        ("FEEDER_DLQ_URL", resources.intake.dead_letter_url.clone()),
    ]);
    if process.optional("RETRY_SCHEDULE").is_none() {
        overrides.insert("RETRY_SCHEDULE", LOCAL_RETRY_SCHEDULE.0.into());
        overrides.insert("RETRY_SCHEDULE_TOTAL", LOCAL_RETRY_SCHEDULE.1.into());
    }
    let env = Env(move |k: &str| overrides.get(k).cloned().or_else(|| (process.0)(k)));
    // AWS here is moto, which holds none of your secrets: a reference would be taken for the
    // value itself (a token that is really `secretsmanager:...`), so say so instead.
    let references = crate::secret_refs::SecretReferences::read(&env)?;
    if !references.is_empty() {
        return Err(LocalError::SecretReferences(
            references.describe().join(", "),
        ));
    }
    let ingest_config = IngestConfig::read(&env)?;
    // For the printed `curl`.
    let sample_token = ingest_config
        .settings
        .secrets
        .first_static_token()
        .map(str::to_string);
    let router_config = RouterConfig::read(&env)?;
    // The feeder runs only when there is a Clay table to feed, as the template's FeederEnabled.
    let feeder = match env.optional("CLAY_WEBHOOK_URLS") {
        Some(_) => Some(feeder(&env, &ddb, &sqs)?),
        None => None,
    };

    let ingest = Arc::new(crate::wiring::ingest(ingest_config, &clients));
    // As in Lambda, but destinations that are not configured print what they would receive.
    let router = crate::wiring::router(router_config, &clients)?;
    let router = Router {
        settings: router.settings,
        ledger: router.ledger,
        destinations: PrintingDestinations {
            inner: router.destinations,
        },
        redelivery: router.redelivery,
        control: router.control,
    };
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| LocalError::Listen {
            addr: opts.listen,
            source,
        })?;
    let server = tokio::spawn(http::serve(listener, ingest));

    let url = format!("http://{}/api/clay/enriched", opts.listen);
    println!("clayhook local pipeline is up");
    println!("  ingest      POST {url}  (and {url}/<source>)");
    println!("  DynamoDB    {endpoint}  table {LOCAL_TABLE}");
    println!("  SQS         {queue_url}  (DLQ {LOCAL_DLQ})");
    println!(
        "  router      polling the queue; unconfigured destinations print what they would receive"
    );
    let intake = &resources.intake;
    match &feeder {
        Some(f) => println!(
            "  feeder      {}  (DLQ {LOCAL_INTAKE_DLQ}) -> {} Clay webhook(s)",
            intake.url,
            f.settings.webhooks.len()
        ),
        None => println!("  feeder      off: set CLAY_WEBHOOK_URLS to feed a Clay table"),
    }
    match sample_token {
        Some(token) => {
            println!("\nTry it (local token, not a real secret):\n");
            println!("curl -i -X POST {url} \\");
            println!("  -H 'Content-Type: application/json' \\");
            println!("  -H 'X-Clay-Signature: {token}' \\");
            println!(
                "  -d '{{\"Work Email\":\"jane@example.com\",\"First Name\":\"Jane\",\"Company\":\"Acme\",\"Job Title\":\"VP Sales\",\"ICP Score\":\"92\"}}'"
            );
        }
        None => println!(
            "\nCLAY_WEBHOOK_SECRETS holds only whsec_ secrets: sign requests the Standard Webhooks way."
        ),
    }
    if feeder.is_some() {
        // moto picks the service from the Authorization header; it checks no signature.
        println!("\nFeed Clay a row through the intake queue:\n");
        println!("curl -s {} -d Action=SendMessage \\", intake.url);
        println!(
            "  -H 'Authorization: AWS4-HMAC-SHA256 Credential=local/20260101/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=0' \\"
        );
        println!(
            "  --data-urlencode 'MessageBody={{\"email\":\"jane@example.com\",\"company\":\"Acme\"}}'"
        );
    }
    println!("\nCtrl-C stops everything.");

    let invocation_time = Duration::from_secs(LOCAL_VISIBILITY_SECONDS as u64 - 1);
    let leads = Poller {
        sqs: &sqs,
        queue_url: &queue_url,
        queue_arn: &resources.leads.arn,
        handler: &router,
        invocation_time,
    };
    let feeding = async {
        match &feeder {
            Some(f) => {
                let poller = Poller {
                    sqs: &sqs,
                    queue_url: &intake.url,
                    queue_arn: &intake.arn,
                    handler: f,
                    invocation_time,
                };
                poll_forever(&poller).await
            }
            None => std::future::pending().await,
        }
    };
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(setup)?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => println!("\nstopping"),
        _ = term.recv() => println!("\nstopping"),
        _ = poll_forever(&leads) => {}
        _ = feeding => {}
    }
    server.abort();
    Ok(())
}

/// The feeder as its Lambda builds it, on the local table and intake queue.
fn feeder<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
    ddb: &aws_sdk_dynamodb::Client,
    sqs: &aws_sdk_sqs::Client,
) -> Result<crate::wiring::FeederFunction, LocalError> {
    Ok(crate::wiring::feeder(FeederConfig::read(env)?, ddb, sqs)?)
}

/// Stands in for an event source mapping: receive, invoke, delete, forever.
async fn poll_forever<H: SqsBatchHandler>(poller: &Poller<'_, H>) {
    loop {
        if let Err(e) = poller.poll_once(Duration::from_secs(1)).await {
            eprintln!(
                "poll of {} failed: {}",
                poller.queue_url,
                aws_sdk_sqs::error::DisplayErrorContext(e)
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

use poller::{Poller, SqsBatchHandler};
