//! The delivery ledger: one item per (lead ID, destination), `pk = delivery#<ID>#<dest>`, in the
//! idempotency table. A conditional claim before sending means a redelivered message skips what
//! was delivered, and two concurrent deliveries of one message never both send.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;
use std::future::Future;

use super::rules::DestinationName;
use crate::dynamo::{delete_if_still_ours, describe, n, s};

pub const DELIVERING: &str = "DELIVERING";
pub const DELIVERED: &str = "DELIVERED";

/// One (lead, destination) pair and this invocation's lock on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryClaim {
    pub id: String,
    pub destination: DestinationName,
    /// Which version of the lead this is ([`crate::envelope::Envelope::lead_version`]).
    pub version: String,
    /// When ingest accepted this version (epoch ms): an older version never replaces a newer.
    pub received_at_ms: i64,
    /// Epoch ms: while this is in the future no other invocation may send. Our lock token too.
    pub lock_until_ms: i64,
    pub now_ms: i64,
    /// Epoch seconds: when the ledger item may be forgotten (TTL).
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// Ours to send.
    Claimed,
    /// This version (or a newer one) was already delivered by an earlier receive: skip.
    AlreadyDelivered,
    /// Another invocation is sending it right now: this record retries later.
    Busy,
}

#[derive(Debug, thiserror::Error)]
#[error("delivery ledger unavailable: {0}")]
pub struct LedgerError(pub String);

pub trait DeliveryLedger: Send + Sync {
    fn claim(
        &self,
        claim: &DeliveryClaim,
    ) -> impl Future<Output = Result<ClaimOutcome, LedgerError>> + Send;
    /// Records the delivery for good.
    fn delivered(
        &self,
        claim: &DeliveryClaim,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;
    /// Gives our claim back after a failed delivery, so the next receive can try at once.
    fn release(
        &self,
        claim: &DeliveryClaim,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;
}

#[derive(Clone, Debug)]
pub struct DynamoDbDeliveryLedger {
    client: Client,
    table: String,
}

impl DynamoDbDeliveryLedger {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoDbDeliveryLedger {
            client,
            table: table.into(),
        }
    }

    pub fn pk(id: &str, destination: DestinationName) -> String {
        format!("delivery#{id}#{destination}")
    }
}

fn err<E: std::error::Error + 'static>(e: SdkError<E>) -> LedgerError {
    LedgerError(describe(e))
}

impl DeliveryLedger for DynamoDbDeliveryLedger {
    async fn claim(&self, c: &DeliveryClaim) -> Result<ClaimOutcome, LedgerError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&Self::pk(&c.id, c.destination)))
            .item("status", s(DELIVERING))
            .item("lock_until", n(c.lock_until_ms))
            .item("expires_at", n(c.expires_at))
            .item("version", s(&c.version))
            .item("received_at_ms", n(c.received_at_ms))
            // Ours when: never claimed; a claim whose invocation is gone; or another version,
            // older than this one, delivered (a re-enriched row: the update must go out too).
            .condition_expression(
                "attribute_not_exists(#pk) OR (#status = :delivering AND #lock < :now_ms) \
                 OR (#status = :delivered AND #version <> :version AND #received < :received)",
            )
            .expression_attribute_names("#pk", "pk")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#lock", "lock_until")
            .expression_attribute_names("#version", "version")
            .expression_attribute_names("#received", "received_at_ms")
            .expression_attribute_values(":delivering", s(DELIVERING))
            .expression_attribute_values(":delivered", s(DELIVERED))
            .expression_attribute_values(":now_ms", n(c.now_ms))
            .expression_attribute_values(":version", s(&c.version))
            .expression_attribute_values(":received", n(c.received_at_ms))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(ClaimOutcome::Claimed),
            Err(SdkError::ServiceError(ctx)) => match ctx.into_err() {
                PutItemError::ConditionalCheckFailedException(e) => {
                    let delivered = e
                        .item()
                        .and_then(|i| i.get("status"))
                        .and_then(|v| v.as_s().ok())
                        .is_some_and(|st| st == DELIVERED);
                    Ok(if delivered {
                        ClaimOutcome::AlreadyDelivered
                    } else {
                        ClaimOutcome::Busy
                    })
                }
                other => Err(LedgerError(DisplayErrorContext(&other).to_string())),
            },
            Err(e) => Err(err(e)),
        }
    }

    async fn delivered(&self, c: &DeliveryClaim) -> Result<(), LedgerError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&Self::pk(&c.id, c.destination)))
            .update_expression("SET #status = :delivered, #at = :now REMOVE #lock")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#at", "delivered_at")
            .expression_attribute_names("#lock", "lock_until")
            .expression_attribute_values(":delivered", s(DELIVERED))
            .expression_attribute_values(":now", n(c.now_ms))
            .send()
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn release(&self, c: &DeliveryClaim) -> Result<(), LedgerError> {
        delete_if_still_ours(
            &self.client,
            &self.table,
            &Self::pk(&c.id, c.destination),
            DELIVERING,
            "lock_until",
            c.lock_until_ms,
        )
        .await
        .map_err(LedgerError)
    }
}
