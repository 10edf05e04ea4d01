//! Shared AWS SDK set-up: one `SdkConfig` for every client, with timeouts short enough that a
//! failing dependency turns into a quick 503 rather than an API Gateway timeout.

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, SdkConfig};
use std::time::Duration;

/// Loads the standard chain (region, credentials, `AWS_ENDPOINT_URL[_SERVICE]`, `AWS_MAX_ATTEMPTS`).
pub async fn sdk_config() -> SdkConfig {
    loader().load().await
}

/// The loader behind [`sdk_config`], for callers (tests, tools) that override parts of it.
pub fn loader() -> ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest()).timeout_config(
        TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(1))
            .operation_attempt_timeout(Duration::from_secs(3))
            .operation_timeout(Duration::from_secs(8))
            .build(),
    )
}
