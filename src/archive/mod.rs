//! The event archive: every envelope the router routes is kept for `ARCHIVE_DAYS` (default 30)
//! in the table, as `delivery#event#<id>` beside the ledger items (`delivery#<id>#<dest>`) that
//! hold each destination's delivery history (tries, failures, the outcome of each receive). The
//! table, not S3: one small conditional write per lead is cheaper than an S3 PUT, and `clayhook
//! events show ID` is one read (docs/delivery-control.md has the figures).
//!
//! What is here is pure: the archived event, a destination's record, and the status the two
//! make. [`dynamodb`] writes and reads them; `cli` is `clayhook events`.

#[cfg(feature = "cli")]
pub mod cli;
pub mod dynamodb;

use crate::delivery::names::DestinationName;
use crate::router::ledger::{LedgerItem, Outcome};

/// Larger envelopes are archived without their body (a DynamoDB item holds 400 KB); their
/// record says how large they were, and replay refuses them.
pub const MAX_ARCHIVED_ENVELOPE: usize = 350_000;
/// `ARCHIVE_DAYS`.
pub const DEFAULT_ARCHIVE_DAYS: u32 = 30;

/// One archived envelope and the rules' verdict when it was routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedEvent {
    pub id: String,
    pub source: Option<String>,
    pub received_at: String,
    pub received_at_ms: i64,
    /// The lead's version (the ledger's), so a re-enriched row replaces its older archive.
    pub version: String,
    /// The configured destinations the rules chose.
    pub routed: Vec<DestinationName>,
    /// The envelope JSON; `None` when it was over [`MAX_ARCHIVED_ENVELOPE`].
    pub envelope: Option<String>,
    pub envelope_bytes: usize,
    pub archived_at_ms: i64,
    /// Why the router sent it to the dead-letter queue, when it did.
    pub dead_lettered: Option<String>,
    /// Epoch seconds: when DynamoDB may forget it.
    pub expires_at: i64,
}

/// What the ledger holds of one (lead, destination).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestinationRecord {
    /// What was delivered last (which version, when): judged against the event's version.
    pub ledger: LedgerItem,
    pub tries: u32,
    pub history: Vec<Outcome>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Every destination the rules chose has it.
    Delivered,
    /// A destination refused it for good, or it went to the dead-letter queue.
    Failed,
    /// Some destination is still owed it (retrying, held by a breaker or a rate limit).
    Waiting,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Delivered => "delivered",
            Status::Failed => "failed",
            Status::Waiting => "waiting",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        [Status::Delivered, Status::Failed, Status::Waiting]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

impl DestinationRecord {
    /// This version of the lead (or a newer one) reached the destination: an older version's
    /// delivery does not count for a re-enriched row.
    pub fn delivered(&self, event: &ArchivedEvent) -> bool {
        self.ledger.covers(&event.version, event.received_at_ms)
    }

    /// Its last receive ended in a refusal retrying cannot change.
    pub fn refused(&self, event: &ArchivedEvent) -> bool {
        !self.delivered(event) && self.history.last().is_some_and(|o| o.class == "permanent")
    }

    pub fn status(&self, event: &ArchivedEvent) -> Status {
        if self.delivered(event) {
            Status::Delivered
        } else if self.refused(event) {
            Status::Failed
        } else {
            Status::Waiting
        }
    }
}

/// An event's status from its destinations' records (`None`: nothing recorded yet).
pub fn status(event: &ArchivedEvent, records: &[(DestinationName, DestinationRecord)]) -> Status {
    let of = |d: DestinationName| {
        records
            .iter()
            .find(|(n, _)| *n == d)
            .map_or(Status::Waiting, |(_, r)| r.status(event))
    };
    let each: Vec<Status> = event.routed.iter().map(|d| of(*d)).collect();
    if each.iter().all(|s| *s == Status::Delivered) {
        Status::Delivered
    } else if event.dead_lettered.is_some() || each.contains(&Status::Failed) {
        Status::Failed
    } else {
        Status::Waiting
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::ledger::DELIVERED;
    use DestinationName::*;

    fn event(routed: Vec<DestinationName>) -> ArchivedEvent {
        ArchivedEvent {
            id: "a".repeat(64),
            source: None,
            received_at: String::new(),
            received_at_ms: 0,
            version: "v".into(),
            routed,
            envelope: None,
            envelope_bytes: 0,
            archived_at_ms: 0,
            dead_lettered: None,
            expires_at: 0,
        }
    }

    fn record(status: &str, last: Option<&'static str>) -> DestinationRecord {
        let delivered = status == DELIVERED;
        DestinationRecord {
            ledger: LedgerItem {
                status: Some(status.into()),
                delivered_version: delivered.then(|| "v".into()),
                delivered_received_at_ms: delivered.then_some(0),
                ..LedgerItem::default()
            },
            history: last
                .map(|class| Outcome {
                    at_ms: 1,
                    tries: 1,
                    class,
                    what: String::new(),
                })
                .into_iter()
                .collect(),
            ..DestinationRecord::default()
        }
    }

    #[test]
    fn an_event_is_delivered_when_every_routed_destination_is() {
        let e = event(vec![Crm, Zapier]);
        let done = record(DELIVERED, Some("delivered"));
        assert_eq!(status(&e, &[(Crm, done.clone())]), Status::Waiting);
        assert_eq!(
            status(&e, &[(Crm, done.clone()), (Zapier, done.clone())]),
            Status::Delivered
        );
        let refused = record("RELEASED", Some("permanent"));
        assert_eq!(
            status(&e, &[(Crm, done.clone()), (Zapier, refused)]),
            Status::Failed
        );
        let retrying = record("RELEASED", Some("transient"));
        assert_eq!(
            status(&e, &[(Crm, done.clone()), (Zapier, retrying)]),
            Status::Waiting
        );
        let mut dead = e.clone();
        dead.dead_lettered = Some("retries exhausted".into());
        assert_eq!(status(&dead, &[(Crm, done)]), Status::Failed);
        assert_eq!(
            status(&event(vec![]), &[]),
            Status::Delivered,
            "nothing owed"
        );
    }

    #[test]
    fn an_older_versions_delivery_does_not_count_for_a_re_enriched_row() {
        let mut e = event(vec![Crm]);
        e.version = "v2".into();
        e.received_at_ms = 5_000;
        let old = DestinationRecord {
            ledger: LedgerItem {
                status: Some(DELIVERED.into()),
                delivered_version: Some("v1".into()),
                delivered_received_at_ms: Some(1_000),
                delivered_at: Some(1_200),
                ..LedgerItem::default()
            },
            ..DestinationRecord::default()
        };
        assert_eq!(status(&e, &[(Crm, old.clone())]), Status::Waiting);
        let mut newer = old;
        newer.ledger.delivered_version = Some("v3".into());
        newer.ledger.delivered_received_at_ms = Some(6_000);
        assert_eq!(status(&e, &[(Crm, newer)]), Status::Delivered);
    }
}
