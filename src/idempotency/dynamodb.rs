//! `IdempotencyStore` on DynamoDB: one conditional put (with `ALL_OLD` on failure, so a duplicate
//! costs no extra read), an update to `COMPLETED`, and a delete guarded by our lock token.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use std::collections::HashMap;

use super::{Begin, Claim, IdempotencyStore, Record, Status, StoreError};
use crate::dynamo::{describe, n, s};
use crate::lease::{Lease, lapsed};

/// The claim on a callback while it is queued.
const LEASE: Lease = Lease {
    held: "IN_PROGRESS",
    attribute: "in_progress_expires_at",
};

/// Ours when never seen, expired, or held by an invocation that is gone.
const BEGIN_CONDITION: &str = concat!("attribute_not_exists(#pk) OR #exp < :now OR ", lapsed!());

#[derive(Clone, Debug)]
pub struct DynamoDbIdempotencyStore {
    client: Client,
    table: String,
}

impl DynamoDbIdempotencyStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoDbIdempotencyStore {
            client,
            table: table.into(),
        }
    }

    pub fn pk(id: &str) -> String {
        crate::table::ingest_key(id)
    }

    /// The fallback when the failed condition did not return the item (older endpoints).
    async fn read(&self, pk: &str) -> Result<Option<Record>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        out.item.as_ref().map(record_from_item).transpose()
    }
}

fn unavailable<E: std::error::Error + 'static>(e: SdkError<E>) -> StoreError {
    StoreError::Unavailable(describe(e))
}

/// Reads a stored item back into a [`Record`].
pub fn record_from_item(item: &HashMap<String, AttributeValue>) -> Result<Record, StoreError> {
    let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    let num = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<i64>().ok())
    };
    let status = text("status")
        .as_deref()
        .and_then(Status::parse)
        .ok_or(StoreError::Corrupt("status"))?;
    Ok(Record {
        status,
        expires_at: num("expires_at").ok_or(StoreError::Corrupt("expires_at"))?,
        in_progress_expires_at: num("in_progress_expires_at"),
        message_id: text("message_id"),
        body_hash: text("body_hash"),
    })
}

impl IdempotencyStore for DynamoDbIdempotencyStore {
    async fn begin(&self, claim: &Claim) -> Result<Begin, StoreError> {
        let pk = Self::pk(&claim.id);
        let mut item = HashMap::from([
            ("pk".to_string(), s(&pk)),
            ("status".to_string(), s(LEASE.held)),
            ("expires_at".to_string(), n(claim.expires_at)),
            (LEASE.attribute.to_string(), n(claim.in_progress_expires_at)),
        ]);
        if let Some(h) = &claim.body_hash {
            item.insert("body_hash".to_string(), s(h));
        }
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(BEGIN_CONDITION)
            .expression_attribute_names("#pk", "pk")
            .expression_attribute_names("#exp", "expires_at")
            .expression_attribute_values(":now", n(claim.now_s()));
        for (k, v) in LEASE.names() {
            request = request.expression_attribute_names(k, v);
        }
        for (k, v) in LEASE.lapsed_values(claim.now_ms) {
            request = request.expression_attribute_values(k, v);
        }
        let result = request
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(Begin::Claimed),
            Err(SdkError::ServiceError(ctx)) => match ctx.into_err() {
                PutItemError::ConditionalCheckFailedException(e) => {
                    let held = match e.item() {
                        Some(item) => Some(record_from_item(item)?),
                        None => self.read(&pk).await?,
                    };
                    // Gone between the put and the read: the caller simply tries again.
                    Ok(held.map_or(Begin::Contended, Begin::Held))
                }
                other => Err(StoreError::Unavailable(
                    DisplayErrorContext(&other).to_string(),
                )),
            },
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn complete(
        &self,
        id: &str,
        message_id: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&Self::pk(id)))
            .update_expression("SET #status = :done, #mid = :mid, #exp = :exp REMOVE #ipexp")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#mid", "message_id")
            .expression_attribute_names("#exp", "expires_at")
            .expression_attribute_names("#ipexp", LEASE.attribute)
            .expression_attribute_values(":done", s(Status::Completed.as_str()))
            .expression_attribute_values(":mid", s(message_id))
            .expression_attribute_values(":exp", n(expires_at))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn abandon(&self, claim: &Claim) -> Result<(), StoreError> {
        LEASE
            .give_up(
                &self.client,
                &self.table,
                &Self::pk(&claim.id),
                claim.in_progress_expires_at,
                None,
            )
            .await
            .map(|_| ())
            .map_err(StoreError::Unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_status_reads_back_as_in_progress() {
        assert_eq!(Status::parse(LEASE.held), Some(Status::InProgress));
    }
}
