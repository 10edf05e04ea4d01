//! A lean client for AWS's JSON 1.0 protocol, which DynamoDB and SQS both speak: a signed `POST`
//! of a JSON body, a JSON answer. The functions' hot path (ingest's three calls, the router's
//! ledger, gates and queue calls) goes through it instead of the SDK's orchestrator, whose
//! per-call machinery (runtime plugins merged on every call, a dozen interceptors, endpoint rules,
//! a fresh signing key) cost more CPU than the call itself (docs/performance.md).
//!
//! It keeps what correctness needs, read from the same `SdkConfig` the SDK clients use: the
//! region, the credentials (cached, refreshed before they expire), `AWS_ENDPOINT_URL[_SERVICE]` or
//! the endpoint the SDK's rules give (FIPS, dual-stack, every partition),
//! the attempt and operation timeouts, and the standard retry policy (`AWS_MAX_ATTEMPTS`,
//! full-jitter backoff, on throttling, 500/502/503/504 and transport errors).

pub mod credentials;
pub mod https;
pub mod item;
pub mod request;
pub mod sigv4;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue, USER_AGENT};
use std::sync::Arc;
use std::time::Duration;

use crate::config::ConfigError;
use credentials::CredentialCache;
use sigv4::Signer;

/// A service that speaks the JSON 1.0 protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    DynamoDb,
    Sqs,
}

impl Service {
    /// The name requests are signed for, and the endpoint's first label.
    fn signing_name(self) -> &'static str {
        match self {
            Service::DynamoDb => "dynamodb",
            Service::Sqs => "sqs",
        }
    }

    fn target_prefix(self) -> &'static str {
        match self {
            Service::DynamoDb => "DynamoDB_20120810",
            Service::Sqs => "AmazonSQS",
        }
    }

    /// The service-specific endpoint variable, which wins over `AWS_ENDPOINT_URL`.
    fn endpoint_var(self) -> &'static str {
        match self {
            Service::DynamoDb => "AWS_ENDPOINT_URL_DYNAMODB",
            Service::Sqs => "AWS_ENDPOINT_URL_SQS",
        }
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The service answered with an error.
    #[error(transparent)]
    Service(Box<ServiceError>),
    /// No answer: connect, send, read or timeout; or an answer that is not the protocol's.
    #[error("{operation}: {reason}")]
    Transport {
        operation: &'static str,
        reason: String,
    },
    #[error("{operation}: no credentials: {reason}")]
    Credentials {
        operation: &'static str,
        reason: String,
    },
}

/// An error answer from the service.
#[derive(Debug, thiserror::Error)]
#[error("{operation}: {code} (HTTP {status}, request {request_id}): {message}")]
pub struct ServiceError {
    pub operation: &'static str,
    pub status: u16,
    pub code: String,
    pub message: String,
    pub request_id: String,
    /// The whole answer: a failed condition carries the item (`ALL_OLD`) here.
    pub body: serde_json::Value,
}

impl CallError {
    /// The service's error code (`ConditionalCheckFailedException`, ...).
    pub fn code(&self) -> Option<&str> {
        match self {
            CallError::Service(e) => Some(&e.code),
            _ => None,
        }
    }

    /// The answer's body, for errors that carry data (a failed condition's item).
    pub fn body(&self) -> Option<&serde_json::Value> {
        match self {
            CallError::Service(e) => Some(&e.body),
            _ => None,
        }
    }

    /// Worth another attempt: throttling, the SDKs' transient statuses (500, 502, 503, 504) and
    /// codes, or no answer at all. A 501 (not implemented) will not change on a second try.
    fn retryable(&self) -> bool {
        match self {
            CallError::Service(e) => {
                let (status, code) = (&e.status, &e.code);
                matches!(status, 500 | 502 | 503 | 504)
                    || THROTTLING.contains(&code.as_str())
                    || TRANSIENT.contains(&code.as_str())
            }
            CallError::Transport { .. } => true,
            CallError::Credentials { .. } => false,
        }
    }
}

/// The SDKs' throttling codes.
const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
];

/// The SDKs' transient codes.
const TRANSIENT: &[&str] = &["RequestTimeout", "RequestTimeoutException", "InternalError"];

/// Attempts and backoff: the SDK's standard policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// Full jitter: a random wait up to `initial × 2^(attempt-1)`, capped.
    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .initial_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max_backoff);
        ceiling.mul_f64(fastrand::f64())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub attempt: Option<Duration>,
    pub operation: Option<Duration>,
}

/// One service's client; clones share the connection pool and the credential cache.
#[derive(Clone, Debug)]
pub struct AwsJsonClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    service: Service,
    http: https::HttpClient,
    uri: hyper::Uri,
    host: HeaderValue,
    path: String,
    signer: Signer,
    credentials: CredentialCache,
    retry: RetryPolicy,
    timeouts: Timeouts,
}

/// The endpoint, host (as signed) and path of `url`.
fn endpoint(url: &str) -> Result<(hyper::Uri, String, String), String> {
    let uri: hyper::Uri = url
        .trim_end_matches('/')
        .parse()
        .map_err(|e| format!("endpoint {url:?}: {e}"))?;
    let authority = uri
        .authority()
        .ok_or_else(|| format!("endpoint {url:?} has no host"))?;
    let default_port = match uri.scheme_str() {
        Some("https") => 443,
        Some("http") => 80,
        _ => return Err(format!("endpoint {url:?} is not http(s)")),
    };
    let host = match authority.port_u16() {
        Some(p) if p != default_port => format!("{}:{p}", authority.host()),
        _ => authority.host().to_string(),
    };
    let path = match uri.path() {
        "" => "/".to_string(),
        p => p.to_string(),
    };
    Ok((uri, host, path))
}

/// The endpoint the SDK's rules give `service` in `region` when no URL is configured, honouring
/// `AWS_USE_FIPS_ENDPOINT` and `AWS_USE_DUALSTACK_ENDPOINT` as the SDK clients beside us do, in
/// every partition (the suffixes are the SDK's partition table's).
fn default_url(service: Service, region: &str, fips: bool, dual_stack: bool) -> String {
    let (suffix, dual_stack_suffix) = if region.starts_with("cn-") {
        ("amazonaws.com.cn", "api.amazonwebservices.com.cn")
    } else if region.starts_with("us-isob-") {
        ("sc2s.sgov.gov", "sc2s.sgov.gov")
    } else if region.starts_with("us-iso-") {
        ("c2s.ic.gov", "c2s.ic.gov")
    } else {
        ("amazonaws.com", "api.aws")
    };
    // GovCloud's plain endpoints already are its FIPS endpoints, except on dual-stack.
    let fips = fips && (dual_stack || !region.starts_with("us-gov-"));
    let label = if fips { "-fips" } else { "" };
    let suffix = if dual_stack {
        dual_stack_suffix
    } else {
        suffix
    };
    format!(
        "https://{}{label}.{region}.{suffix}",
        service.signing_name()
    )
}

impl AwsJsonClient {
    /// A client for `service` with `sdk`'s region, credentials, endpoint, timeouts and retries.
    pub fn new(
        sdk: &aws_config::SdkConfig,
        service: Service,
        http: https::HttpClient,
    ) -> Result<AwsJsonClient, ConfigError> {
        let env = crate::config::process_env();
        let region = sdk
            .region()
            .map(|r| r.to_string())
            .ok_or(ConfigError::Missing("AWS_REGION"))?;
        let url = env
            .optional(service.endpoint_var())
            .or_else(|| sdk.endpoint_url().map(str::to_string))
            .unwrap_or_else(|| {
                default_url(
                    service,
                    &region,
                    sdk.use_fips().unwrap_or(false),
                    sdk.use_dual_stack().unwrap_or(false),
                )
            });
        let invalid = |reason: String| ConfigError::Invalid {
            var: service.endpoint_var(),
            reason,
        };
        let (uri, host, path) = endpoint(&url).map_err(invalid)?;
        let retry = sdk.retry_config().map_or(
            RetryPolicy {
                max_attempts: 3,
                initial_backoff: Duration::from_secs(1),
                max_backoff: Duration::from_secs(20),
            },
            |r| RetryPolicy {
                max_attempts: r.max_attempts().max(1),
                initial_backoff: r.initial_backoff(),
                max_backoff: r.max_backoff(),
            },
        );
        let timeouts = sdk.timeout_config().map_or(
            Timeouts {
                attempt: None,
                operation: None,
            },
            |t| Timeouts {
                attempt: t.operation_attempt_timeout(),
                operation: t.operation_timeout(),
            },
        );
        Ok(AwsJsonClient {
            inner: Arc::new(Inner {
                service,
                http,
                uri,
                host: HeaderValue::from_str(&host).map_err(|e| invalid(e.to_string()))?,
                path,
                signer: Signer::new(region, service.signing_name()),
                credentials: CredentialCache::new(sdk.credentials_provider()),
                retry,
                timeouts,
            }),
        })
    }

    /// Calls `operation` (`PutItem`, `SendMessage`, ...) with `body` (a [`request::Write`], or
    /// any JSON), retrying as the policy says, and returns the answer's JSON. The body is written
    /// out before the call starts. Boxed: hyper's future is deep, and every caller's future would
    /// otherwise carry its whole type (past the compiler's layout depth).
    pub fn call<B: serde::Serialize + ?Sized>(
        &self,
        operation: &'static str,
        body: &B,
    ) -> futures::future::BoxFuture<'_, Result<serde_json::Value, CallError>> {
        let body = serde_json::to_vec(body);
        Box::pin(async move {
            let body = body.map_err(|e| CallError::Transport {
                operation,
                reason: e.to_string(),
            })?;
            self.call_bytes(operation, Bytes::from(body)).await
        })
    }

    /// [`call`](Self::call) for a `PutItem`, `UpdateItem` or `DeleteItem`. Debug builds (every
    /// test) first check its expressions as DynamoDB will: moto checks only some of it.
    pub fn write<'s>(
        &'s self,
        operation: &'static str,
        body: &request::Write<'_>,
    ) -> futures::future::BoxFuture<'s, Result<serde_json::Value, CallError>> {
        debug_assert_eq!(
            body.expression_mistake(),
            None,
            "{operation} to {}",
            body.table_name
        );
        self.call(operation, body)
    }

    async fn call_bytes(
        &self,
        operation: &'static str,
        body: Bytes,
    ) -> Result<serde_json::Value, CallError> {
        let attempts = async {
            let mut attempt = 1;
            loop {
                let result = self.attempt(operation, body.clone()).await;
                match result {
                    Err(e) if e.retryable() && attempt < self.inner.retry.max_attempts => {
                        tokio::time::sleep(self.inner.retry.backoff(attempt)).await;
                        attempt += 1;
                    }
                    other => return other,
                }
            }
        };
        match self.inner.timeouts.operation {
            Some(limit) => tokio::time::timeout(limit, attempts)
                .await
                .unwrap_or_else(|_| {
                    Err(CallError::Transport {
                        operation,
                        reason: format!("no answer within {} ms", limit.as_millis()),
                    })
                }),
            None => attempts.await,
        }
    }

    async fn attempt(
        &self,
        operation: &'static str,
        body: Bytes,
    ) -> Result<serde_json::Value, CallError> {
        let inner = &self.inner;
        let keys = inner
            .credentials
            .keys()
            .await
            .map_err(|reason| CallError::Credentials { operation, reason })?;
        let target = format!("{}.{operation}", inner.service.target_prefix());
        let host = inner.host.to_str().unwrap_or_default();
        let signed = inner.signer.sign(
            &keys,
            host,
            &inner.path,
            &target,
            &body,
            time::OffsetDateTime::now_utc(),
        );
        let transport = |reason: String| CallError::Transport { operation, reason };
        let mut request = hyper::Request::post(inner.uri.clone())
            .header(HOST, inner.host.clone())
            .header(CONTENT_TYPE, sigv4::CONTENT_TYPE)
            .header("x-amz-target", target)
            .header("x-amz-date", signed.amz_date)
            .header(AUTHORIZATION, signed.authorization)
            .header(USER_AGENT, concat!("clayhook/", env!("CARGO_PKG_VERSION")));
        if let Some(token) = &keys.session_token {
            request = request.header("x-amz-security-token", token);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| transport(e.to_string()))?;
        let exchange = async {
            let response = inner
                .http
                .request(request)
                .await
                .map_err(|e| transport(error_chain(&e)))?;
            let (parts, body) = response.into_parts();
            let bytes = body
                .collect()
                .await
                .map_err(|e| transport(error_chain(&e)))?
                .to_bytes();
            Ok::<_, CallError>((parts, bytes))
        };
        let (parts, bytes) = match inner.timeouts.attempt {
            Some(limit) => tokio::time::timeout(limit, exchange)
                .await
                .map_err(|_| transport(format!("no answer within {} ms", limit.as_millis())))??,
            None => exchange.await?,
        };
        let json: serde_json::Value = if bytes.is_empty() {
            serde_json::Value::Object(Default::default())
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                Err(_) if !parts.status.is_success() => serde_json::Value::Null,
                Err(e) => return Err(transport(format!("an answer that is not JSON: {e}"))),
            }
        };
        if parts.status.is_success() {
            return Ok(json);
        }
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let code = json
            .get("__type")
            .and_then(|v| v.as_str())
            .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
            .or_else(|| {
                header("x-amzn-errortype").map(|t| t.split(':').next().unwrap_or("").to_string())
            })
            .unwrap_or_else(|| format!("HTTP{}", parts.status.as_u16()));
        let message = ["message", "Message"]
            .iter()
            .find_map(|k| json.get(*k).and_then(|v| v.as_str()))
            .unwrap_or("")
            .to_string();
        Err(CallError::Service(Box::new(ServiceError {
            operation,
            status: parts.status.as_u16(),
            code,
            message,
            request_id: header("x-amzn-requestid").unwrap_or_default(),
            body: json,
        })))
    }
}

/// An error with its causes, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_sign_their_host_with_a_port_only_when_it_is_not_the_default() {
        let (_, host, path) = endpoint("http://127.0.0.1:5000").unwrap();
        assert_eq!((host.as_str(), path.as_str()), ("127.0.0.1:5000", "/"));
        let (_, host, _) = endpoint("https://dynamodb.eu-west-1.amazonaws.com:443/").unwrap();
        assert_eq!(host, "dynamodb.eu-west-1.amazonaws.com");
        assert!(endpoint("ftp://x").is_err());
        assert!(endpoint("not a url").is_err());
    }

    #[test]
    fn default_endpoints_follow_the_sdk_rules_for_fips_dual_stack_and_partitions() {
        use Service::{DynamoDb, Sqs};
        // Each expectation is one of the SDK's own endpoint-rule test cases.
        let cases = [
            (
                DynamoDb,
                "us-east-1",
                false,
                false,
                "https://dynamodb.us-east-1.amazonaws.com",
            ),
            (
                DynamoDb,
                "us-east-1",
                true,
                false,
                "https://dynamodb-fips.us-east-1.amazonaws.com",
            ),
            (
                DynamoDb,
                "us-east-1",
                true,
                true,
                "https://dynamodb-fips.us-east-1.api.aws",
            ),
            (
                DynamoDb,
                "us-east-1",
                false,
                true,
                "https://dynamodb.us-east-1.api.aws",
            ),
            (
                Sqs,
                "us-east-1",
                true,
                false,
                "https://sqs-fips.us-east-1.amazonaws.com",
            ),
            (
                Sqs,
                "cn-north-1",
                false,
                false,
                "https://sqs.cn-north-1.amazonaws.com.cn",
            ),
            (
                DynamoDb,
                "cn-north-1",
                false,
                true,
                "https://dynamodb.cn-north-1.api.amazonwebservices.com.cn",
            ),
            (
                DynamoDb,
                "us-gov-west-1",
                true,
                false,
                "https://dynamodb.us-gov-west-1.amazonaws.com",
            ),
            (
                Sqs,
                "us-gov-east-1",
                true,
                true,
                "https://sqs-fips.us-gov-east-1.api.aws",
            ),
            (
                Sqs,
                "us-iso-east-1",
                true,
                false,
                "https://sqs-fips.us-iso-east-1.c2s.ic.gov",
            ),
            (
                DynamoDb,
                "us-isob-east-1",
                false,
                false,
                "https://dynamodb.us-isob-east-1.sc2s.sgov.gov",
            ),
        ];
        for (service, region, fips, dual_stack, want) in cases {
            assert_eq!(
                default_url(service, region, fips, dual_stack),
                want,
                "{service:?} {region} fips={fips} dual_stack={dual_stack}"
            );
        }
    }

    #[test]
    fn backoff_is_full_jitter_under_a_doubling_cap() {
        let p = RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
        };
        for _ in 0..200 {
            assert!(p.backoff(1) <= Duration::from_millis(100));
            assert!(p.backoff(2) <= Duration::from_millis(200));
            assert!(p.backoff(9) <= Duration::from_millis(300));
        }
    }

    #[test]
    fn throttling_5xx_and_transport_errors_are_retried_others_are_not() {
        let service = |status: u16, code: &str| {
            CallError::Service(Box::new(ServiceError {
                operation: "PutItem",
                status,
                code: code.into(),
                message: String::new(),
                request_id: String::new(),
                body: serde_json::Value::Null,
            }))
        };
        assert!(service(400, "ProvisionedThroughputExceededException").retryable());
        assert!(service(400, "ThrottlingException").retryable());
        assert!(service(500, "InternalServerError").retryable());
        assert!(service(503, "ServiceUnavailable").retryable());
        assert!(!service(501, "NotImplemented").retryable());
        assert!(!service(400, "ConditionalCheckFailedException").retryable());
        assert!(!service(400, "ValidationException").retryable());
        assert!(!service(400, "ResourceNotFoundException").retryable());
        assert!(
            CallError::Transport {
                operation: "PutItem",
                reason: "reset".into()
            }
            .retryable()
        );
    }
}
