//! The one place each function is put together from its settings and the AWS clients: the
//! Lambda binaries and `clayhook local` build the same objects here, so they cannot drift.

use crate::aws::{Table, WarmUp};
use crate::aws_json::{AwsJsonClient, Service};
use crate::config::{ConfigError, process_env, with_resolved};
use crate::delivery::control::dynamodb::DynamoDbDeliveryControl;
use crate::destinations::HttpDestinations;
use crate::feed::clay::ClayClient;
use crate::feed::config::FeederConfig;
use crate::feed::dynamodb::DynamoDbFeedStore;
use crate::feed::feeder::Feeder;
use crate::feed::sqs::SqsIntake;
use crate::idempotency::dynamodb::DynamoDbIdempotencyStore;
use crate::ingest::Ingest;
use crate::ingest::config::IngestConfig;
use crate::queue::sqs::{SqsLeadQueue, SqsRedelivery};
use crate::router::Router;
use crate::router::config::RouterConfig;
use crate::router::ledger::DynamoDbDeliveryLedger;
use crate::secret_refs::aws::AwsSecretStore;
use crate::secret_refs::{Refreshing, Resolved, SecretReferences};
use crate::table::{DELIVERY_PREFIX, FEED_PREFIX, INGEST_PREFIX};

pub type IngestFunction = Ingest<DynamoDbIdempotencyStore, SqsLeadQueue>;
pub type RouterFunction = Router<
    DynamoDbDeliveryLedger,
    HttpDestinations,
    Option<SqsRedelivery>,
    DynamoDbDeliveryControl,
>;
pub type FeederFunction = Feeder<DynamoDbFeedStore, SqsIntake>;

/// Ingest on its table and lead queue.
pub fn ingest(config: IngestConfig, clients: &Clients) -> IngestFunction {
    Ingest {
        settings: config.settings,
        store: DynamoDbIdempotencyStore::new(clients.ddb.clone(), config.table),
        queue: SqsLeadQueue::new(clients.sqs.clone(), config.queue_url),
    }
}

/// The router on its ledger, with one HTTP client for every destination, and its queue (for
/// retries over hours) when it knows it.
pub fn router(config: RouterConfig, clients: &Clients) -> Result<RouterFunction, reqwest::Error> {
    let (ddb, sqs) = (&clients.dynamodb, &clients.sqs);
    Ok(Router {
        settings: config.settings,
        ledger: DynamoDbDeliveryLedger::new(ddb.clone(), config.table.clone()),
        control: DynamoDbDeliveryControl::new(ddb.clone(), config.table),
        destinations: HttpDestinations::new(config.destinations, config.connect_timeout)?
            .with_warehouse(&clients.sdk),
        redelivery: config
            .redelivery
            .map(|(queue, dlq)| SqsRedelivery::new(sqs.clone(), queue, dlq)),
    })
}

/// The feeder on its counters, its intake queue (and DLQ) and Clay.
pub fn feeder(
    config: FeederConfig,
    ddb: &aws_sdk_dynamodb::Client,
    sqs: &aws_sdk_sqs::Client,
) -> Result<FeederFunction, reqwest::Error> {
    Ok(Feeder::new(
        config.settings,
        DynamoDbFeedStore::new(ddb.clone(), config.table),
        SqsIntake {
            client: sqs.clone(),
            queue_url: config.queue_url,
            dead_letter_url: config.dead_letter_url,
        },
        ClayClient::new(config.connect_timeout, config.request_timeout)?,
    ))
}

/// A function as Lambda runs it: rebuilt when its secrets (fetched by reference) change.
pub type Started<T> = Refreshing<T, AwsSecretStore>;

/// Start-up shared by the three functions: the secret references and the warm-up read from the
/// environment, the SDK configured, the secrets fetched while the connections warm up, then the
/// function built by `build` from its configuration with the secrets in place (and built again
/// by the same closure when they change). Any error means the function must not start.
async fn start<T>(
    prefix: &str,
    queue_var: Option<&'static str>,
    build: impl Fn(&Resolved, &Clients) -> Result<T, ConfigError> + Send + Sync + 'static,
) -> Result<Started<T>, ConfigError> {
    let env = process_env();
    let references = SecretReferences::read(&env)?;
    let warm_up = WarmUp::read(&env, prefix, queue_var)?;
    let started = std::time::Instant::now();
    let sdk = crate::aws::sdk_config().await;
    let clients = Clients::new(sdk.clone())?;
    let store = AwsSecretStore::new(&sdk, &references);
    let loaded = started.elapsed();
    if !references.is_empty() {
        tracing::info!(references = ?references.describe(), refresh_s = references.refresh.as_secs(), "secrets by reference");
    }
    let sqs = queue_var.map(|_| &clients.sqs);
    // Ingest's and the router's table calls go through the lean client; the feeder's still go
    // through the SDK's, whose pool is warmed instead.
    let table = match prefix {
        FEED_PREFIX | INGEST_PREFIX => Table::Sdk(&clients.ddb),
        _ => Table::Lean(&clients.dynamodb),
    };
    let (resolved, ()) = futures::future::join(
        references.resolve(&store),
        Box::pin(warm_up.run(table, sqs)),
    )
    .await;
    let resolved = resolved.map_err(ConfigError::refused)?;
    tracing::debug!(
        sdk_us = loaded.as_micros() as u64,
        fetch_and_warm_up_us = (started.elapsed() - loaded).as_micros() as u64,
        "init timings"
    );
    // Refused values stop a cold start as they stop a warm instance: one rule, one metric.
    let first = build(&resolved, &clients).inspect_err(|e| {
        if e.about_secrets() {
            crate::secret_refs::refreshing::count_refusal();
        }
    })?;
    Ok(Refreshing::new(
        first,
        resolved,
        references,
        store,
        move |resolved: &Resolved| build(resolved, &clients),
    ))
}

/// The AWS clients a function is built with (made once at init, shared by every rebuild).
pub struct Clients {
    /// The hot path's DynamoDB and SQS calls (src/aws_json).
    pub dynamodb: AwsJsonClient,
    pub queue: AwsJsonClient,
    /// The SDK's, for the calls off the hot path.
    pub ddb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    /// For clients only some configurations need (the warehouse's S3 or Firehose).
    pub sdk: aws_config::SdkConfig,
}

impl Clients {
    /// Every client on `sdk`'s region, credentials, endpoints, timeouts and retries; the two
    /// lean clients share one connection pool.
    pub fn new(sdk: aws_config::SdkConfig) -> Result<Clients, ConfigError> {
        let connect = sdk.timeout_config().and_then(|t| t.connect_timeout());
        let http =
            crate::aws_json::https::client(connect).map_err(|reason| ConfigError::Invalid {
                var: "AWS_TLS_ROOTS",
                reason,
            })?;
        Ok(Clients {
            dynamodb: AwsJsonClient::new(&sdk, Service::DynamoDb, http.clone())?,
            queue: AwsJsonClient::new(&sdk, Service::Sqs, http)?,
            ddb: aws_sdk_dynamodb::Client::new(&sdk),
            sqs: aws_sdk_sqs::Client::new(&sdk),
            sdk,
        })
    }
}

/// The ingest Lambda, started.
pub async fn start_ingest() -> Result<Started<IngestFunction>, ConfigError> {
    start(INGEST_PREFIX, Some("LEAD_QUEUE_URL"), |resolved, c| {
        let config = IngestConfig::read(&with_resolved(&process_env(), resolved))?;
        Ok(ingest(config, c))
    })
    .await
}

/// The router Lambda, started.
pub async fn start_router() -> Result<Started<RouterFunction>, ConfigError> {
    start(DELIVERY_PREFIX, None, |resolved, c| {
        let config = RouterConfig::read(&with_resolved(&process_env(), resolved))?;
        tracing::info!(destinations = ?config.destinations, rules = config.settings.rules.len(), "router configured");
        router(config, c).map_err(ConfigError::refused)
    })
    .await
}

/// The feeder Lambda, started.
pub async fn start_feeder() -> Result<Started<FeederFunction>, ConfigError> {
    start(FEED_PREFIX, None, |resolved, c| {
        let config = FeederConfig::read(&with_resolved(&process_env(), resolved))?;
        tracing::info!(webhooks = ?config.settings.webhooks, limit = config.settings.limit, "feeder configured");
        feeder(config, &c.ddb, &c.sqs).map_err(ConfigError::refused)
    })
    .await
}
