//! `clayhook events`: list, show and replay archived leads. A replay goes through the lead
//! queue, so the rules, the rate limits and the breakers apply, and the ledger keeps each
//! destination's delivery to once (unless `--force`, which makes the replay a new version).

use serde_json::{Value, json};
use std::time::SystemTime;

use super::dynamodb::{EventArchive, EventWithRecords};
use super::{ArchivedEvent, DestinationRecord, Status, status};
use crate::clock::epoch_ms;
use crate::delivery::names::DestinationName;
use crate::delivery::schedule::parse_duration;
use crate::dlq::mask_emails;
use crate::envelope::{Envelope, Replay, rfc3339};
use crate::router::rules::{RoutingRule, route};

/// `--since`: an RFC 3339 time, or a duration back from now (`90m`, `6h`, `7d`).
pub fn parse_since(text: &str, now_ms: i64) -> Result<i64, String> {
    if let Some(d) = parse_duration(text) {
        return Ok(now_ms - d.as_millis() as i64);
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| format!("--since {text:?}: give a time (2026-12-01T09:00:00Z) or a duration back from now (90m, 6h, 7d)"))
}

fn at(ms: i64) -> String {
    rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64))
}

fn names(ds: impl IntoIterator<Item = DestinationName>) -> String {
    let v: Vec<&str> = ds.into_iter().map(|d| d.as_str()).collect();
    if v.is_empty() {
        "-".into()
    } else {
        v.join(",")
    }
}

fn record_for(
    records: &[(DestinationName, DestinationRecord)],
    d: DestinationName,
) -> DestinationRecord {
    records
        .iter()
        .find(|(n, _)| *n == d)
        .map(|(_, r)| r.clone())
        .unwrap_or_default()
}

/// One line of `events list`: received, ID, source, status, routed, delivered, owed.
pub fn line(event: &ArchivedEvent, records: &[(DestinationName, DestinationRecord)]) -> String {
    let delivered: Vec<DestinationName> = event
        .routed
        .iter()
        .copied()
        .filter(|d| record_for(records, *d).delivered(event))
        .collect();
    let owed = event
        .routed
        .iter()
        .copied()
        .filter(|d| !delivered.contains(d));
    format!(
        "{}  {}  {:<16}  {:<9}  routed {}  delivered {}  owed {}",
        event.received_at,
        event.id,
        event.source.as_deref().unwrap_or("-"),
        status(event, records).as_str(),
        names(event.routed.iter().copied()),
        names(delivered.iter().copied()),
        names(owed),
    )
}

/// `events show`: the lead (emails masked unless `reveal`), the rules' verdict then and now,
/// and each destination's timeline.
pub fn detail((event, records): &EventWithRecords, rules: &[RoutingRule], reveal: bool) -> Value {
    let envelope = event
        .envelope
        .as_deref()
        .and_then(|e| Envelope::parse(e).ok());
    let lead = envelope.as_ref().map(|e| {
        let v = serde_json::to_value(&e.lead).unwrap_or(Value::Null);
        if reveal { v } else { mask_emails(v) }
    });
    let rules_now = envelope
        .as_ref()
        .map(|e| names(route(rules, &e.lead, e.source.as_deref())));
    let mut destinations = serde_json::Map::new();
    let mut shown: Vec<DestinationName> = event.routed.clone();
    shown.extend(
        records
            .iter()
            .map(|(d, _)| *d)
            .filter(|d| !event.routed.contains(d)),
    );
    for d in shown {
        let r = record_for(records, d);
        destinations.insert(
            d.as_str().into(),
            json!({
                "status": r.status(event).as_str(),
                "delivered_at": r.ledger.delivered_at.map(at),
                "requests": r.tries,
                "failed_receives": r.ledger.failures,
                "timeline": r.history.iter().map(|o| json!({
                    "at": at(o.at_ms),
                    "class": o.class,
                    "outcome": o.what,
                    "requests": o.tries,
                })).collect::<Vec<_>>(),
            }),
        );
    }
    json!({
        "id": event.id,
        "source": event.source,
        "received_at": event.received_at,
        "status": status(event, records).as_str(),
        "routed": names(event.routed.iter().copied()),
        "rules_now": rules_now,
        "dead_lettered": event.dead_lettered,
        "replay": envelope.as_ref().and_then(|e| e.replay.as_ref()).map(|r| json!({
            "at": at(r.at_ms), "force": r.force, "destinations": names(r.destinations.iter().copied()),
        })),
        "envelope_bytes": event.envelope_bytes,
        "lead": lead,
        "destinations": destinations,
    })
}

/// What `events replay` did with one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayOutcome {
    Sent,
    WouldSend,
    /// Archived without its body (over the archive's limit): nothing to send.
    TooLarge,
    Failed(String),
}

pub struct Events {
    pub archive: EventArchive,
    pub sqs: aws_sdk_sqs::Client,
}

impl Events {
    /// Events received since `since_ms` (from `source`, with `status`), oldest first.
    pub async fn list(
        &self,
        since_ms: i64,
        source: Option<&str>,
        wanted: Option<Status>,
    ) -> Result<Vec<EventWithRecords>, String> {
        let all = self.archive.scan(since_ms, source).await?;
        Ok(all
            .into_iter()
            .filter(|(e, r)| wanted.is_none_or(|w| status(e, r) == w))
            .collect())
    }

    pub async fn show(&self, id: &str) -> Result<EventWithRecords, String> {
        self.archive
            .get(id)
            .await?
            .ok_or_else(|| format!("no archived event has the ID {id:?} (kept ARCHIVE_DAYS days)"))
    }

    /// Sends each event back to the lead queue, marked as a replay.
    pub async fn replay(
        &self,
        queue_url: &str,
        events: &[ArchivedEvent],
        destination: Option<DestinationName>,
        force: bool,
        dry_run: bool,
    ) -> Vec<(String, ReplayOutcome)> {
        let now = epoch_ms(SystemTime::now());
        let mut out = Vec::new();
        for e in events {
            let outcome = match e.envelope.as_deref().map(Envelope::parse) {
                None => ReplayOutcome::TooLarge,
                Some(Err(err)) => ReplayOutcome::Failed(err.to_string()),
                Some(Ok(_)) if dry_run => ReplayOutcome::WouldSend,
                Some(Ok(mut env)) => {
                    env.replay = Some(Replay {
                        at_ms: now,
                        force,
                        destinations: destination.into_iter().collect(),
                    });
                    match self.send(queue_url, &env, now).await {
                        Ok(()) => ReplayOutcome::Sent,
                        Err(err) => ReplayOutcome::Failed(err),
                    }
                }
            };
            out.push((e.id.clone(), outcome));
        }
        out
    }

    async fn send(&self, queue_url: &str, env: &Envelope, now: i64) -> Result<(), String> {
        let mut request = self
            .sqs
            .send_message()
            .queue_url(queue_url)
            .message_body(env.to_json());
        if queue_url.ends_with(".fifo") {
            request = request
                .message_group_id(env.source.as_deref().unwrap_or("default"))
                .message_deduplication_id(format!("{}-replay-{now}", env.id));
        }
        request
            .send()
            .await
            .map(|_| ())
            .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(&e).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_time_or_a_duration_back() {
        let now = 1_800_000_000_000;
        assert_eq!(parse_since("90m", now).unwrap(), now - 90 * 60_000);
        assert_eq!(parse_since("7d", now).unwrap(), now - 7 * 86_400_000);
        assert_eq!(
            parse_since("2027-01-15T08:00:00Z", now).unwrap(),
            1_800_000_000_000
        );
        assert!(
            parse_since("yesterday", now)
                .unwrap_err()
                .contains("--since")
        );
    }
}
