//! Shared AWS SDK set-up: one `SdkConfig` for every client, with timeouts short enough that a
//! failing dependency turns into a quick 503 rather than an API Gateway timeout.

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, SdkConfig};
use std::time::Duration;

/// Loads the standard chain (region, credentials, `AWS_ENDPOINT_URL[_SERVICE]`, `AWS_MAX_ATTEMPTS`).
pub async fn sdk_config() -> SdkConfig {
    loader().load().await
}

/// The Amazon Trust Services roots that every AWS endpoint chains to.
pub(crate) const AWS_ROOT_CAS: &[u8] = include_bytes!("../assets/aws-root-cas.pem");

/// The HTTPS client every AWS client shares: hyper + rustls on ring (the TLS stack reqwest uses
/// too, so each binary carries one). It trusts the five Amazon Trust Services roots, compiled
/// in: loading and parsing the whole system bundle cost ~10 ms of every cold start. Set
/// `AWS_TLS_ROOTS=system` to trust the platform's bundle instead (e.g. behind a TLS proxy).
pub fn https_client() -> aws_sdk_dynamodb::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{
        Provider, TlsContext, TrustStore, rustls_provider::CryptoMode,
    };
    let system = crate::config::process_env()
        .raw("AWS_TLS_ROOTS")
        .is_some_and(|v| v.eq_ignore_ascii_case("system"));
    let trust = if system {
        TrustStore::default()
    } else {
        TrustStore::empty()
            .with_native_roots(false)
            .with_pem_certificate(AWS_ROOT_CAS)
    };
    let builder =
        aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring));
    match TlsContext::builder().with_trust_store(trust).build() {
        Ok(context) => builder.tls_context(context).build_https(),
        // The bundle is compiled in and parsed by the tests; fall back to the defaults anyway.
        Err(_) => builder.build_https(),
    }
}

/// The loader behind [`sdk_config`], for callers (tests, tools) that override parts of it.
///
/// Lambda puts the region and the role's credentials in the environment; naming them here
/// spares start-up the default provider chains (profile files, IMDS, STS clients), which cost
/// several milliseconds of INIT and are never used in Lambda.
pub fn loader() -> ConfigLoader {
    let env = crate::config::process_env();
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = env.optional("AWS_REGION") {
        loader = loader.region(aws_config::Region::new(region));
    }
    if env.raw("AWS_ACCESS_KEY_ID").is_some() {
        loader = loader.credentials_provider(
            aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
        );
    }
    // Stalled-stream protection watches a body's throughput with timers on every call; our
    // calls carry a few kilobytes at most, and the attempt timeout below already ends a call
    // that stalls. Off, it no longer costs every call its bookkeeping.
    loader
        .stalled_stream_protection(
            aws_config::stalled_stream_protection::StalledStreamProtectionConfig::disabled(),
        )
        .http_client(https_client())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(1))
                .operation_attempt_timeout(Duration::from_secs(3))
                .operation_timeout(Duration::from_secs(8))
                .build(),
        )
}

/// The client whose connection to the table start-up opens: the one the function's hot path uses.
#[derive(Debug, Clone, Copy)]
pub enum Table<'a> {
    Lean(&'a crate::aws_json::AwsJsonClient),
    Sdk(&'a aws_sdk_dynamodb::Client),
}

/// What start-up warms: a read of this function's own warm-up item in the table and, for
/// ingest, the lead queue's attributes. Read from the environment on its own, because it runs
/// before the configuration can be read (while the secrets are fetched).
#[derive(Debug, Clone)]
pub struct WarmUp {
    pub table: String,
    pub key: String,
    pub queue_url: Option<String>,
    /// 0 turns the warm-up off.
    pub limit: Duration,
}

impl WarmUp {
    /// `prefix` is the function's key prefix (src/table.rs); `queue_var` the queue it sends to.
    pub fn read<F: Fn(&str) -> Option<String>>(
        env: &crate::config::Env<F>,
        prefix: &str,
        queue_var: Option<&'static str>,
    ) -> Result<WarmUp, crate::config::ConfigError> {
        Ok(WarmUp {
            table: env.required("IDEMPOTENCY_TABLE")?,
            key: crate::table::warm_up_key(prefix),
            queue_url: match queue_var {
                Some(var) => Some(env.required(var)?),
                None => None,
            },
            limit: env.warm_up()?,
        })
    }

    /// Opens the connections (TCP + TLS) to DynamoDB and, if named, SQS during init, so the
    /// first invocation pays no set-up that start-up could have done. Bounded by `limit`: a slow
    /// endpoint never blocks start-up, and any answer (even an error) leaves a warm connection in
    /// the pool.
    pub async fn run(&self, table: Table<'_>, queue: Option<&aws_sdk_sqs::Client>) {
        if self.limit.is_zero() {
            return;
        }
        let table = async {
            match table {
                Table::Lean(client) => {
                    let body = serde_json::json!({
                        "TableName": self.table,
                        "Key": { crate::table::PARTITION_KEY: crate::aws_json::item::s(&self.key) },
                    });
                    let _ = client.call("GetItem", &body).await;
                }
                Table::Sdk(client) => {
                    let _ = client
                        .get_item()
                        .table_name(&self.table)
                        .key(
                            crate::table::PARTITION_KEY,
                            aws_sdk_dynamodb::types::AttributeValue::S(self.key.clone()),
                        )
                        .send()
                        .await;
                }
            }
        };
        let queue = async {
            if let (Some(client), Some(url)) = (queue, &self.queue_url) {
                let _ = client
                    .get_queue_attributes()
                    .queue_url(url)
                    .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                    .send()
                    .await;
            }
        };
        let warmed = tokio::time::timeout(self.limit, futures::future::join(table, queue)).await;
        if warmed.is_err() {
            tracing::warn!(
                limit_ms = self.limit.as_millis() as u64,
                "connection warm-up timed out; continuing"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_compiled_in_roots_make_a_tls_context() {
        use aws_smithy_http_client::tls::{TlsContext, TrustStore};
        let trust = TrustStore::empty()
            .with_native_roots(false)
            .with_pem_certificate(super::AWS_ROOT_CAS);
        assert!(
            TlsContext::builder()
                .with_trust_store(trust)
                .build()
                .is_ok()
        );
        let text = String::from_utf8_lossy(super::AWS_ROOT_CAS);
        assert_eq!(text.matches("BEGIN CERTIFICATE").count(), 5);
    }
}
