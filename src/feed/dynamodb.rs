//! `FeedStore` on DynamoDB, in the same table as everything else: counters
//! (`feed#webhook#<key>`, `feed#budget#<day>`) taken with a conditional `ADD`, the breaker
//! (`feed#breaker`), and one `feed#sent#<message id>` item per row: claimed (`SENDING`, with a
//! lease and a token) before it is posted, then `SENT` once Clay accepted it (or it was
//! dead-lettered). Items written before claims existed have no status: they read as sent.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::{UpdateItemError, UpdateItemOutput};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use std::collections::HashMap;

use super::feeder::{FeedStore, RowClaim, RowClaimed, StoreError};
use super::{BreakerPolicy, BreakerState};
use crate::dynamo::{describe, n, s, written};

use crate::table::FEED_BREAKER_KEY as BREAKER_PK;
use aws_sdk_dynamodb::operation::put_item::PutItemError;

/// A row claimed by a receive that is posting it.
const SENDING: &str = "SENDING";
/// A row handled for good: Clay took it, or it was dead-lettered.
const SENT: &str = "SENT";

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

/// The breaker item: `failures` and `open_until` (epoch ms).
fn breaker_of(item: &HashMap<String, AttributeValue>) -> BreakerState {
    BreakerState {
        consecutive_failures: number(item, "failures").clamp(0, i64::from(u32::MAX)) as u32,
        open_until_ms: number(item, "open_until"),
    }
}

/// The breaker after a conditional update: the new state, or (the condition did not hold)
/// the state another instance left.
fn settled(
    result: Result<UpdateItemOutput, SdkError<UpdateItemError>>,
) -> Result<BreakerState, StoreError> {
    match result {
        Ok(out) => Ok(out.attributes.as_ref().map(breaker_of).unwrap_or_default()),
        Err(SdkError::ServiceError(ctx)) => match ctx.into_err() {
            UpdateItemError::ConditionalCheckFailedException(e) => {
                Ok(e.item().map(breaker_of).unwrap_or_default())
            }
            other => Err(StoreError(DisplayErrorContext(&other).to_string())),
        },
        Err(e) => Err(err(e)),
    }
}

impl DynamoDbFeedStore {
    /// An update of the breaker item returning its new state (or, when a condition fails,
    /// the state that stopped it). `#f` is `failures`, `#o` `open_until`, named by each caller
    /// that uses them (DynamoDB refuses names an expression does not use).
    fn breaker_update(&self, expression: &str) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(BREAKER_PK))
            .update_expression(expression)
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
    }
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> i64 {
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
        Ok(out.item.as_ref().map(breaker_of).unwrap_or_default())
    }

    async fn breaker_failed(
        &self,
        policy: &BreakerPolicy,
        now_ms: i64,
    ) -> Result<BreakerState, StoreError> {
        let counted = self
            .breaker_update("ADD #f :one")
            .expression_attribute_names("#f", "failures")
            .expression_attribute_values(":one", n(1))
            .send()
            .await
            .map_err(err)?;
        let after = counted
            .attributes
            .as_ref()
            .map(breaker_of)
            .unwrap_or_default();
        let threshold = policy.threshold.max(1);
        if after.consecutive_failures < threshold {
            return Ok(after);
        }
        // At the threshold: open for the cooldown, one failure short of it (half-open). Only one
        // of several instances counting at once opens it; the others get its state back.
        let until = now_ms + policy.cooldown.as_millis() as i64;
        settled(
            self.breaker_update("SET #f = :half, #o = :until")
                .expression_attribute_names("#f", "failures")
                .expression_attribute_names("#o", "open_until")
                .condition_expression(
                    "#f >= :threshold AND (attribute_not_exists(#o) OR #o < :until)",
                )
                .expression_attribute_values(":half", n(i64::from(threshold - 1)))
                .expression_attribute_values(":threshold", n(i64::from(threshold)))
                .expression_attribute_values(":until", n(until))
                .send()
                .await,
        )
    }

    async fn breaker_succeeded(&self, now_ms: i64) -> Result<BreakerState, StoreError> {
        // Closed only if not open now: an instance that opened it since keeps it open.
        settled(
            self.breaker_update("SET #f = :zero, #o = :zero")
                .expression_attribute_names("#f", "failures")
                .expression_attribute_names("#o", "open_until")
                .condition_expression("attribute_not_exists(#o) OR #o <= :now")
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":now", n(now_ms))
                .send()
                .await,
        )
    }

    async fn breaker_open_until(&self, until_ms: i64) -> Result<BreakerState, StoreError> {
        // Only ever extended.
        settled(
            self.breaker_update("SET #o = :until")
                .expression_attribute_names("#o", "open_until")
                .condition_expression("attribute_not_exists(#o) OR #o < :until")
                .expression_attribute_values(":until", n(until_ms))
                .send()
                .await,
        )
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

    async fn claim_row(&self, c: &RowClaim) -> Result<RowClaimed, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&crate::table::feed_sent_key(&c.message_id)))
            .item("status", s(SENDING))
            .item("lease", n(c.lock_until_ms))
            .item("lease_token", s(&c.token))
            .item("expires_at", n(c.expires_at))
            // Ours when never claimed, or when the claim of an invocation that is gone lapsed.
            .condition_expression(
                "attribute_not_exists(pk) OR (#status = :sending AND #lease < :now_ms)",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#lease", "lease")
            .expression_attribute_values(":sending", s(SENDING))
            .expression_attribute_values(":now_ms", n(c.now_ms))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(RowClaimed::Claimed),
            Err(SdkError::ServiceError(ctx)) => match ctx.into_err() {
                PutItemError::ConditionalCheckFailedException(e) => {
                    let item = e.item().cloned().unwrap_or_default();
                    let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
                    Ok(match text("status").as_deref() {
                        // Our own put, applied on an attempt whose answer was lost.
                        Some(SENDING) if text("lease_token").as_deref() == Some(&c.token) => {
                            RowClaimed::Claimed
                        }
                        Some(SENDING) => RowClaimed::Busy,
                        _ => RowClaimed::Handled,
                    })
                }
                other => Err(StoreError(DisplayErrorContext(&other).to_string())),
            },
            Err(e) => Err(err(e)),
        }
    }

    async fn mark_sent(&self, message_id: &str, expires_at: i64) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&crate::table::feed_sent_key(message_id)))
            .item("status", s(SENT))
            .item("expires_at", n(expires_at))
            .send()
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn release_row(&self, c: &RowClaim) -> Result<(), StoreError> {
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(&crate::table::feed_sent_key(&c.message_id)))
            .condition_expression("#status = :sending AND #tok = :tok")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#tok", "lease_token")
            .expression_attribute_values(":sending", s(SENDING))
            .expression_attribute_values(":tok", s(&c.token))
            .send()
            .await;
        // Not ours any more (lapsed and taken over): nothing to give back.
        written(deleted).map(|_| ()).map_err(StoreError)
    }
}
