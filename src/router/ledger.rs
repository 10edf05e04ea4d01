//! The delivery ledger: one item per (lead ID, destination), `pk = delivery#<ID>#<dest>`, in the
//! idempotency table. A conditional claim before sending means a redelivered message skips what
//! was delivered, and two concurrent deliveries of one message never both send.
//!
//! It is version-aware: the item keeps which version of the lead was delivered last
//! (`delivered_version`, `delivered_received_at_ms`) apart from the claim in flight (`status`,
//! `lock_until`), so a later version (a row Clay re-enriched) is delivered again, an older one
//! never replaces it, and a claim that fails or dies never erases what was delivered before.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use std::collections::HashMap;
use std::future::Future;

use super::rules::DestinationName;
use crate::dynamo::{describe, n, s};
use crate::lease::{Lease, lapsed};

pub const DELIVERING: &str = "DELIVERING";
pub const DELIVERED: &str = "DELIVERED";

/// The claim on a (lead, destination) while it is sent.
const LEASE: Lease = Lease {
    held: DELIVERING,
    attribute: "lock_until",
};

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

/// What a ledger item says, as read back from the table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerItem {
    pub status: Option<String>,
    /// The version delivered last, and when ingest accepted it (epoch ms).
    pub delivered_version: Option<String>,
    pub delivered_received_at_ms: Option<i64>,
    /// When the last delivery was recorded (epoch ms). Items written before versions were kept
    /// have only this.
    pub delivered_at: Option<i64>,
}

impl LedgerItem {
    pub fn from_item(item: &HashMap<String, AttributeValue>) -> LedgerItem {
        let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
        let num = |k: &str| {
            item.get(k)
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse::<i64>().ok())
        };
        LedgerItem {
            status: text("status"),
            delivered_version: text("delivered_version"),
            delivered_received_at_ms: num("delivered_received_at_ms"),
            delivered_at: num("delivered_at"),
        }
    }

    /// Whether this version of the lead (accepted at `received_at_ms`), or a newer one, has been
    /// delivered: then there is nothing to send. The same test as the claim's condition.
    pub fn covers(&self, version: &str, received_at_ms: i64) -> bool {
        match (&self.delivered_version, self.delivered_received_at_ms) {
            (Some(v), received) => v == version || received.is_none_or(|r| r >= received_at_ms),
            // An item from before versions were kept: delivered after this version was accepted.
            (None, _) => self.delivered_at.is_some_and(|at| at >= received_at_ms),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("delivery ledger unavailable: {0}")]
pub struct LedgerError(pub String);

pub trait DeliveryLedger: Send + Sync {
    fn claim(
        &self,
        claim: &DeliveryClaim,
    ) -> impl Future<Output = Result<ClaimOutcome, LedgerError>> + Send;
    /// Records the delivery of this version for good.
    fn delivered(
        &self,
        claim: &DeliveryClaim,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;
    /// Gives our claim back after a failed delivery, so the next receive can try at once. What
    /// was delivered before stays recorded.
    fn release(
        &self,
        claim: &DeliveryClaim,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;
    /// Whether this version of the lead (accepted at `received_at_ms`), or a newer one, has
    /// reached `destination`: what a claim would find (for the DLQ tools).
    fn has_delivered(
        &self,
        id: &str,
        destination: DestinationName,
        version: &str,
        received_at_ms: i64,
    ) -> impl Future<Output = Result<bool, LedgerError>> + Send;
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
        crate::table::delivery_key(id, destination)
    }
}

fn err<E: std::error::Error + 'static>(e: SdkError<E>) -> LedgerError {
    LedgerError(describe(e))
}

/// Nothing delivered yet covers the claimed version: the negation of [`LedgerItem::covers`].
macro_rules! not_covered {
    () => {
        "((attribute_not_exists(#dv) AND (attribute_not_exists(#dat) OR #dat < :received)) \
         OR (#dv <> :version AND #dr < :received))"
    };
}

/// Ours when never claimed, or when what was delivered does not cover this version and no live
/// claim holds it (none, or one whose invocation is gone).
const CLAIM_CONDITION: &str = concat!(
    "attribute_not_exists(#pk) OR (",
    lapsed!(),
    " AND ",
    not_covered!(),
    ") OR (#status = :delivered AND ",
    not_covered!(),
    ")"
);

impl DeliveryLedger for DynamoDbDeliveryLedger {
    async fn claim(&self, c: &DeliveryClaim) -> Result<ClaimOutcome, LedgerError> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&Self::pk(&c.id, c.destination)))
            .update_expression("SET #status = :held, #lease = :until, #exp = :exp")
            .condition_expression(CLAIM_CONDITION)
            .expression_attribute_names("#pk", "pk")
            .expression_attribute_names("#exp", "expires_at")
            .expression_attribute_names("#dv", "delivered_version")
            .expression_attribute_names("#dr", "delivered_received_at_ms")
            .expression_attribute_names("#dat", "delivered_at")
            .expression_attribute_values(":delivered", s(DELIVERED))
            .expression_attribute_values(":until", n(c.lock_until_ms))
            .expression_attribute_values(":exp", n(c.expires_at))
            .expression_attribute_values(":version", s(&c.version))
            .expression_attribute_values(":received", n(c.received_at_ms));
        for (k, v) in LEASE.names() {
            request = request.expression_attribute_names(k, v);
        }
        for (k, v) in LEASE.lapsed_values(c.now_ms) {
            request = request.expression_attribute_values(k, v);
        }
        let result = request
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(ClaimOutcome::Claimed),
            Err(SdkError::ServiceError(ctx)) => match ctx.into_err() {
                UpdateItemError::ConditionalCheckFailedException(e) => {
                    let held = e.item().map(LedgerItem::from_item).unwrap_or_default();
                    Ok(if held.covers(&c.version, c.received_at_ms) {
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
            .update_expression(
                "SET #status = :delivered, #at = :now, #dv = :version, #dr = :received REMOVE #lock",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#at", "delivered_at")
            .expression_attribute_names("#dv", "delivered_version")
            .expression_attribute_names("#dr", "delivered_received_at_ms")
            .expression_attribute_names("#lock", LEASE.attribute)
            .expression_attribute_values(":delivered", s(DELIVERED))
            .expression_attribute_values(":now", n(c.now_ms))
            .expression_attribute_values(":version", s(&c.version))
            .expression_attribute_values(":received", n(c.received_at_ms))
            .send()
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn has_delivered(
        &self,
        id: &str,
        destination: DestinationName,
        version: &str,
        received_at_ms: i64,
    ) -> Result<bool, LedgerError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(&Self::pk(id, destination)))
            .consistent_read(true)
            .send()
            .await
            .map_err(err)?;
        Ok(out
            .item
            .is_some_and(|i| LedgerItem::from_item(&i).covers(version, received_at_ms)))
    }

    async fn release(&self, c: &DeliveryClaim) -> Result<(), LedgerError> {
        let pk = Self::pk(&c.id, c.destination);
        // An item that never recorded a delivery goes (the common case: one call)...
        let deleted = LEASE
            .give_up(
                &self.client,
                &self.table,
                &pk,
                c.lock_until_ms,
                Some("delivered_at"),
            )
            .await
            .map_err(LedgerError)?;
        if !deleted {
            // ...one that did goes back to what it delivered, if the claim is still ours (taken
            // over since: not ours to touch).
            LEASE
                .hand_back(&self.client, &self.table, &pk, c.lock_until_ms, DELIVERED)
                .await
                .map_err(LedgerError)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(dv: Option<&str>, dr: Option<i64>, at: Option<i64>) -> LedgerItem {
        LedgerItem {
            status: Some(DELIVERED.into()),
            delivered_version: dv.map(str::to_string),
            delivered_received_at_ms: dr,
            delivered_at: at,
        }
    }

    #[test]
    fn what_a_delivery_covers() {
        let a = item(Some("A"), Some(1_000), Some(1_500));
        assert!(a.covers("A", 1_000), "the same version");
        assert!(a.covers("A", 9_000), "the same version, re-accepted later");
        assert!(a.covers("B", 900), "an older version");
        assert!(!a.covers("B", 2_000), "a newer version");
        // Items written before versions were kept: delivered at 1,500.
        let legacy = item(None, None, Some(1_500));
        assert!(legacy.covers("X", 1_000));
        assert!(!legacy.covers("X", 2_000));
        assert!(!LedgerItem::default().covers("A", 0), "nothing delivered");
    }
}
