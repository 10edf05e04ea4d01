//! The delivery ledger: one item per (lead ID, destination), `pk = delivery#<ID>#<dest>`, in the
//! idempotency table. A conditional claim before sending means a redelivered message skips what
//! was delivered, and two concurrent deliveries of one message never both send.
//!
//! It is version-aware: the item keeps which version of the lead was delivered last
//! (`delivered_version`, `delivered_received_at_ms`) apart from the claim in flight (`status`,
//! `lock_until`), so a later version (a row Clay re-enriched) is delivered again, an older one
//! never replaces it, and a claim that fails or dies never erases what was delivered before.

use serde_json::{Value, json};
use std::future::Future;

use crate::aws_json::request::{self, Attr, Write};

use super::rules::DestinationName;
use crate::archive::ArchivedEvent;
use crate::archive::dynamodb::EventArchive;
use crate::aws_json::item::{CONDITION_FAILED, number, s, text, written};
use crate::aws_json::{AwsJsonClient, CallError};
use crate::lease::{Lease, OURS, lapsed};

pub const DELIVERING: &str = "DELIVERING";
pub const DELIVERED: &str = "DELIVERED";
/// A failed try handed back: claimable again (unless a delivery covers the version).
pub const RELEASED: &str = "RELEASED";
/// History entries kept per (lead, destination); later tries still count in `tries`.
pub const MAX_HISTORY: u32 = 50;

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
    /// Random, one per claim (`lease_token`): a claim that finds it already in the item (its
    /// first attempt applied, the answer lost) is ours, not another invocation's.
    pub token: String,
}

/// A fresh claim token.
pub fn claim_token() -> String {
    format!("{:016x}", fastrand::u64(..))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// Ours to send; `failures` earlier receives of this version failed here (the retry
    /// schedule's step: waits for a breaker or a rate limit are not failures).
    Claimed { failures: u32 },
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
    /// Receives of `failed_version` that failed here.
    pub failures: u32,
    pub failed_version: Option<String>,
    /// The token of the claim that holds it, while `DELIVERING`.
    pub lease_token: Option<String>,
}

/// How one receive's tries at a destination ended: what the item's history keeps (no lead data:
/// a status, an error class, counts and times).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub at_ms: i64,
    /// Requests made in this receive.
    pub tries: u32,
    /// `delivered`, `transient`, `permanent`.
    pub class: &'static str,
    /// `answered 503`, `timeout error`, `delivered`.
    pub what: String,
}

/// A count kept as a number attribute, read back as a `u32` (missing: `default`).
pub fn count(item: &Value, k: &str, default: u32) -> u32 {
    number(item, k).map_or(default, |v| v.clamp(0, i64::from(u32::MAX)) as u32)
}

impl Outcome {
    fn attribute(&self) -> Attr<'_> {
        Attr::M(vec![
            ("at", request::n(self.at_ms)),
            ("tries", request::n(self.tries)),
            ("class", request::s(self.class)),
            ("what", request::s(self.what.as_str())),
        ])
    }

    /// An entry of an item's `history`, as written by [`Outcome::attribute`].
    pub fn from_attribute(v: &Value) -> Option<Outcome> {
        let m = v.get("M")?;
        let class = match text(m, "class")? {
            "delivered" => "delivered",
            "permanent" => "permanent",
            _ => "transient",
        };
        Some(Outcome {
            at_ms: number(m, "at")?,
            tries: count(m, "tries", 1),
            class,
            what: text(m, "what")?.to_string(),
        })
    }
}

impl LedgerItem {
    /// A ledger item as the JSON protocol returns it.
    pub fn from_item(item: &Value) -> LedgerItem {
        let text = |k: &str| text(item, k).map(str::to_string);
        LedgerItem {
            status: text("status"),
            delivered_version: text("delivered_version"),
            delivered_received_at_ms: number(item, "delivered_received_at_ms"),
            delivered_at: number(item, "delivered_at"),
            failures: count(item, "failures", 0),
            failed_version: text("failed_version"),
            lease_token: text("lease_token"),
        }
    }

    /// Whether `claim` itself holds this item: what a retried claim finds when its first
    /// attempt was applied but the answer lost.
    pub fn held_by(&self, claim: &DeliveryClaim) -> bool {
        self.status.as_deref() == Some(DELIVERING)
            && self.lease_token.as_deref() == Some(claim.token.as_str())
    }

    /// Earlier failed receives of `version` (failures of another version do not count).
    pub fn failures_of(&self, version: &str) -> u32 {
        if self.failed_version.as_deref() == Some(version) {
            self.failures
        } else {
            0
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
        outcome: &Outcome,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;
    /// Gives our claim back after a failed receive (`failures` of this version so far, this one
    /// included; `None`: the try was not made, as for a breaker that opened, and counts for
    /// nothing), so the next receive can try. What was delivered before stays recorded.
    fn release(
        &self,
        claim: &DeliveryClaim,
        failures: Option<u32>,
        outcome: &Outcome,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;
    /// Keeps the envelope as routed ([`crate::archive`]); a version already kept is left.
    fn archive(
        &self,
        _event: &ArchivedEvent,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send {
        std::future::ready(Ok(()))
    }
    /// Notes on the archived event why it went to the dead-letter queue.
    fn dead_lettered(
        &self,
        _id: &str,
        _reason: &str,
        _at_ms: i64,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send {
        std::future::ready(Ok(()))
    }
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
    client: AwsJsonClient,
    table: String,
    archive: EventArchive,
}

impl DynamoDbDeliveryLedger {
    pub fn new(client: AwsJsonClient, table: impl Into<String>) -> Self {
        let table = table.into();
        DynamoDbDeliveryLedger {
            archive: EventArchive::new(client.clone(), table.clone()),
            client,
            table,
        }
    }

    pub fn pk(id: &str, destination: DestinationName) -> String {
        crate::table::delivery_key(id, destination)
    }

    /// An `UpdateItem` of the claim's item.
    fn update<'a>(
        &'a self,
        c: &DeliveryClaim,
        expression: impl Into<std::borrow::Cow<'a, str>>,
        names: Vec<(&'a str, &'a str)>,
        values: Vec<(&'a str, Attr<'a>)>,
    ) -> Write<'a> {
        Write {
            table_name: &self.table,
            key: Some(Self::pk(&c.id, c.destination).into()),
            update_expression: Some(expression.into()),
            expression_attribute_names: names,
            expression_attribute_values: values,
            ..Write::default()
        }
    }
}

fn unavailable(e: CallError) -> LedgerError {
    LedgerError(e.to_string())
}

/// Nothing delivered yet covers the claimed version: the negation of [`LedgerItem::covers`].
macro_rules! not_covered {
    () => {
        "((attribute_not_exists(#dv) AND (attribute_not_exists(#dat) OR #dat < :received)) \
         OR (#dv <> :version AND #dr < :received))"
    };
}

/// Ours when never claimed, or when what was delivered does not cover this version and no live
/// claim holds it (none, a released one, or one whose invocation is gone).
const CLAIM_CONDITION: &str = concat!(
    "attribute_not_exists(#pk) OR ((",
    lapsed!(),
    " OR #status = :delivered OR #status = :released) AND ",
    not_covered!(),
    ")"
);

impl DeliveryLedger for DynamoDbDeliveryLedger {
    async fn archive(&self, event: &ArchivedEvent) -> Result<(), LedgerError> {
        self.archive.put(event).await.map_err(LedgerError)
    }

    async fn dead_lettered(&self, id: &str, reason: &str, at_ms: i64) -> Result<(), LedgerError> {
        self.archive
            .dead_lettered(id, reason, at_ms)
            .await
            .map_err(LedgerError)
    }

    async fn claim(&self, c: &DeliveryClaim) -> Result<ClaimOutcome, LedgerError> {
        let mut names = vec![
            ("#pk", "pk"),
            ("#exp", "expires_at"),
            ("#dv", "delivered_version"),
            ("#dr", "delivered_received_at_ms"),
            ("#dat", "delivered_at"),
        ];
        names.extend(LEASE.names());
        names.push(("#tok", "lease_token"));
        let mut values = vec![
            (":delivered", request::s(DELIVERED)),
            (":released", request::s(RELEASED)),
            (":until", request::n(c.lock_until_ms)),
            (":tok", request::s(c.token.as_str())),
            (":exp", request::n(c.expires_at)),
            (":version", request::s(c.version.as_str())),
            (":received", request::n(c.received_at_ms)),
        ];
        values.extend(LEASE.lapsed_values(c.now_ms));
        let body = Write {
            condition_expression: Some(CLAIM_CONDITION),
            return_values: Some("ALL_OLD"),
            return_values_on_condition_check_failure: Some("ALL_OLD"),
            ..self.update(
                c,
                "SET #status = :held, #lease = :until, #exp = :exp, #tok = :tok",
                names,
                values,
            )
        };
        match self.client.write("UpdateItem", &body).await {
            Ok(out) => Ok(ClaimOutcome::Claimed {
                failures: out
                    .get("Attributes")
                    .map(LedgerItem::from_item)
                    .unwrap_or_default()
                    .failures_of(&c.version),
            }),
            Err(e) if e.code() == Some(CONDITION_FAILED) => {
                let held = e
                    .body()
                    .and_then(|b| b.get("Item"))
                    .map(LedgerItem::from_item)
                    .unwrap_or_default();
                Ok(if held.held_by(c) {
                    // Our own claim, applied on an attempt whose answer was lost.
                    ClaimOutcome::Claimed {
                        failures: held.failures_of(&c.version),
                    }
                } else if held.covers(&c.version, c.received_at_ms) {
                    ClaimOutcome::AlreadyDelivered
                } else {
                    ClaimOutcome::Busy
                })
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn delivered(&self, c: &DeliveryClaim, outcome: &Outcome) -> Result<(), LedgerError> {
        let names = vec![
            ("#status", "status"),
            ("#at", "delivered_at"),
            ("#dv", "delivered_version"),
            ("#dr", "delivered_received_at_ms"),
            ("#lock", LEASE.attribute),
            ("#failures", "failures"),
            ("#history", "history"),
            ("#tries", "tries"),
        ];
        let values = vec![
            (":delivered", request::s(DELIVERED)),
            (":now", request::n(c.now_ms)),
            (":version", request::s(c.version.as_str())),
            (":received", request::n(c.received_at_ms)),
            (":zero", request::n(0)),
            (":empty", Attr::L(Vec::new())),
            (":entry", Attr::L(vec![outcome.attribute()])),
            (":tries", request::n(outcome.tries)),
        ];
        let body = self.update(
            c,
            "SET #status = :delivered, #at = :now, #dv = :version, #dr = :received, \
             #failures = :zero, #history = list_append(if_not_exists(#history, :empty), :entry) \
             ADD #tries :tries REMOVE #lock",
            names,
            values,
        );
        self.client
            .write("UpdateItem", &body)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn has_delivered(
        &self,
        id: &str,
        destination: DestinationName,
        version: &str,
        received_at_ms: i64,
    ) -> Result<bool, LedgerError> {
        let body = json!({
            "TableName": self.table,
            "Key": { "pk": s(&Self::pk(id, destination)) },
            "ConsistentRead": true,
        });
        let out = self
            .client
            .call("GetItem", &body)
            .await
            .map_err(unavailable)?;
        Ok(out
            .get("Item")
            .is_some_and(|i| LedgerItem::from_item(i).covers(version, received_at_ms)))
    }

    async fn release(
        &self,
        c: &DeliveryClaim,
        failures: Option<u32>,
        outcome: &Outcome,
    ) -> Result<(), LedgerError> {
        // Handed back only while the claim is ours (taken over since: not ours to touch). The
        // item stays: it counts the failures that set the retry schedule's step, and keeps the
        // history `clayhook events show` prints.
        let mut set = String::from("SET #status = :released, #last = :now");
        let mut names = vec![("#last", "last_try_at"), ("#tries", "tries")];
        names.extend(LEASE.names());
        let mut values = vec![
            (":released", request::s(RELEASED)),
            (":now", request::n(outcome.at_ms)),
            (":tries", request::n(outcome.tries)),
        ];
        values.extend(LEASE.ours_values(c.lock_until_ms));
        if let Some(f) = failures {
            set.push_str(", #failures = :failures, #fv = :version");
            names.extend([("#failures", "failures"), ("#fv", "failed_version")]);
            values.extend([
                (":failures", request::n(f)),
                (":version", request::s(c.version.as_str())),
            ]);
        }
        if failures.is_some_and(|f| f <= MAX_HISTORY) {
            set.push_str(", #history = list_append(if_not_exists(#history, :empty), :entry)");
            names.push(("#history", "history"));
            values.extend([
                (":empty", Attr::L(Vec::new())),
                (":entry", Attr::L(vec![outcome.attribute()])),
            ]);
        }
        set.push_str(" ADD #tries :tries REMOVE #lease");
        let body = Write {
            condition_expression: Some(OURS),
            ..self.update(c, set, names, values)
        };
        written(self.client.write("UpdateItem", &body).await).map_err(LedgerError)?;
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
            ..LedgerItem::default()
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
