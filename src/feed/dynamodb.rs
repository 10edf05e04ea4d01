//! `FeedStore` on DynamoDB, in the same table as everything else: counters
//! (`feed#webhook#<key>`, `feed#budget#<day>`) taken with a conditional `ADD`, the breaker
//! (`feed#breaker`), and one `feed#sent#<message id>` item per row Clay accepted.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;

use super::BreakerState;
use super::feeder::{FeedStore, StoreError};
use crate::dynamo::{describe, n, s, written};

use crate::table::FEED_BREAKER_KEY as BREAKER_PK;

#[derive(Clone, Debug)]
pub struct DynamoDbFeedStore {
    client: Client,
    table: String,
}

impl DynamoDbFeedStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoDbFeedStore {
            client,
            table: table.into(),
        }
    }
}

fn err<E: std::error::Error + 'static>(e: SdkError<E>) -> StoreError {
    StoreError(describe(e))
}

fn number(
    item: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
    name: &str,
) -> i64 {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

impl FeedStore for DynamoDbFeedStore {
    async fn breaker(&self) -> Result<BreakerState, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(BREAKER_PK))
            .consistent_read(true)
            .send()
            .await
            .map_err(err)?;
        Ok(out
            .item
            .map_or_else(BreakerState::default, |i| BreakerState {
                consecutive_failures: number(&i, "failures").clamp(0, i64::from(u32::MAX)) as u32,
                open_until_ms: number(&i, "open_until"),
            }))
    }

    async fn save_breaker(&self, b: BreakerState) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(BREAKER_PK))
            .item("failures", n(i64::from(b.consecutive_failures)))
            .item("open_until", n(b.open_until_ms))
            .send()
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn take(
        &self,
        counter: &str,
        limit: u64,
        expires_at: Option<i64>,
    ) -> Result<bool, StoreError> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(counter))
            .condition_expression("attribute_not_exists(#count) OR #count < :limit")
            .expression_attribute_names("#count", "count")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":limit", n(limit.min(i64::MAX as u64) as i64));
        req = match expires_at {
            Some(at) => req
                .update_expression("ADD #count :one SET #exp = :exp")
                .expression_attribute_names("#exp", "expires_at")
                .expression_attribute_values(":exp", n(at)),
            None => req.update_expression("ADD #count :one"),
        };
        written(req.send().await).map_err(StoreError)
    }

    async fn add(&self, counter: &str, delta: i64) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(counter))
            .update_expression("ADD #count :delta")
            .expression_attribute_names("#count", "count")
            .expression_attribute_values(":delta", n(delta))
            .send()
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn was_sent(&self, message_id: &str) -> Result<bool, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(&crate::table::feed_sent_key(message_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(err)?;
        Ok(out.item.is_some())
    }

    async fn mark_sent(&self, message_id: &str, expires_at: i64) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&crate::table::feed_sent_key(message_id)))
            .item("expires_at", n(expires_at))
            .send()
            .await
            .map_err(err)?;
        Ok(())
    }
}
