//! `IdempotencyStore` on DynamoDB through the SDK: one conditional put (with `ALL_OLD` on
//! failure, so a duplicate costs no extra read), an update to `COMPLETED`, and a delete guarded
//! by our lease. These are ingest's hot path.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};

use super::{Begin, Claim, IdempotencyStore, Record, Status, StoreError};
use crate::dynamo::{describe, n, s, written};
use crate::lease::{Lease, OURS, lapsed};

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
            .key(crate::table::PARTITION_KEY, s(pk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(describe(e)))?;
        out.item.as_ref().map(record_from_item).transpose()
    }
}

/// Reads a stored item back into a [`Record`].
pub fn record_from_item(item: &HashMap<String, AttributeValue>) -> Result<Record, StoreError> {
    let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    let number = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_n().ok())
            .and_then(|t| t.parse::<i64>().ok())
    };
    let status = text("status")
        .as_deref()
        .and_then(Status::parse)
        .ok_or(StoreError::Corrupt("status"))?;
    Ok(Record {
        status,
        expires_at: number("expires_at").ok_or(StoreError::Corrupt("expires_at"))?,
        in_progress_expires_at: number(LEASE.attribute),
        message_id: text("message_id"),
        body_hash: text("body_hash"),
        lock_token: text("lock_token"),
    })
}

impl IdempotencyStore for DynamoDbIdempotencyStore {
    async fn begin(&self, claim: &Claim) -> Result<Begin, StoreError> {
        let pk = Self::pk(&claim.id);
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(crate::table::PARTITION_KEY, s(&pk))
            .item("status", s(LEASE.held))
            .item("expires_at", n(claim.expires_at))
            .item(LEASE.attribute, n(claim.in_progress_expires_at))
            .item("lock_token", s(&claim.token))
            .condition_expression(BEGIN_CONDITION)
            .expression_attribute_names("#pk", crate::table::PARTITION_KEY)
            .expression_attribute_names("#exp", "expires_at")
            .expression_attribute_values(":now", n(claim.now_s()))
            .expression_attribute_values(":held", s(LEASE.held))
            .expression_attribute_values(":now_ms", n(claim.now_ms))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        for (name, attribute) in LEASE.names() {
            put = put.expression_attribute_names(name, attribute);
        }
        if let Some(h) = &claim.body_hash {
            put = put.item("body_hash", s(h));
        }
        match put.send().await {
            Ok(_) => Ok(Begin::Claimed),
            Err(SdkError::ServiceError(ctx))
                if matches!(ctx.err(), PutItemError::ConditionalCheckFailedException(_)) =>
            {
                let returned = match ctx.into_err() {
                    PutItemError::ConditionalCheckFailedException(e) => e.item,
                    _ => None,
                };
                let held = match returned {
                    Some(item) => Some(record_from_item(&item)?),
                    None => self.read(&pk).await?,
                };
                // Gone between the put and the read: the caller simply tries again.
                Ok(match held {
                    // Our own put, applied on an attempt whose answer was lost.
                    Some(record) if record.held_by(claim) => Begin::Claimed,
                    Some(record) => Begin::Held(record),
                    None => Begin::Contended,
                })
            }
            Err(e) => Err(StoreError::Unavailable(describe(e))),
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
            .key(crate::table::PARTITION_KEY, s(&Self::pk(id)))
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
            .map_err(|e| StoreError::Unavailable(describe(e)))?;
        Ok(())
    }

    /// Deletes the record while our lease (its deadline, our token) still holds it: one taken
    /// over since is left alone.
    async fn abandon(&self, claim: &Claim) -> Result<(), StoreError> {
        let mut delete = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(crate::table::PARTITION_KEY, s(&Self::pk(&claim.id)))
            .condition_expression(OURS)
            .expression_attribute_values(":held", s(LEASE.held))
            .expression_attribute_values(":lease", n(claim.in_progress_expires_at));
        for (name, attribute) in LEASE.names() {
            delete = delete.expression_attribute_names(name, attribute);
        }
        written(delete.send().await)
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

    #[test]
    fn a_stored_item_reads_back_and_a_broken_one_is_corrupt() {
        let item = |pairs: &[(&str, AttributeValue)]| -> HashMap<String, AttributeValue> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect()
        };
        let stored = item(&[
            ("pk", s("ingest#x")),
            ("status", s("COMPLETED")),
            ("expires_at", n(9)),
            ("message_id", s("m-1")),
            ("body_hash", s("h")),
        ]);
        let r = record_from_item(&stored).unwrap();
        assert_eq!(r.status, Status::Completed);
        assert_eq!((r.expires_at, r.message_id.as_deref()), (9, Some("m-1")));
        assert!(record_from_item(&item(&[("status", s("SOMETHING"))])).is_err());
        assert!(record_from_item(&item(&[("status", s("COMPLETED"))])).is_err());
    }
}
