//! The archive in the table: one item per lead (`delivery#event#<id>`), written by the router
//! with one conditional put per receive (a redelivery of the same version changes nothing), and
//! read by `clayhook events` together with the lead's ledger items.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use std::collections::HashMap;

use super::{ArchivedEvent, DestinationRecord};
use crate::delivery::names::DestinationName;
use crate::dynamo::{describe, n, s, written};
use crate::router::ledger::{LedgerItem, Outcome};
use crate::table::{ARCHIVE_INFIX, DELIVERY_PREFIX, archive_key, delivery_key};

type Item = HashMap<String, AttributeValue>;

fn text(item: &Item, k: &str) -> Option<String> {
    item.get(k).and_then(|v| v.as_s().ok()).cloned()
}

fn number(item: &Item, k: &str) -> Option<i64> {
    item.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

pub fn event_item(e: &ArchivedEvent) -> Item {
    let mut item = HashMap::from([
        ("pk".to_string(), s(&archive_key(&e.id))),
        ("id".to_string(), s(&e.id)),
        ("received_at".to_string(), s(&e.received_at)),
        ("received_at_ms".to_string(), n(e.received_at_ms)),
        ("version".to_string(), s(&e.version)),
        (
            "routed".to_string(),
            AttributeValue::L(e.routed.iter().map(|d| s(d.as_str())).collect()),
        ),
        ("envelope_bytes".to_string(), n(e.envelope_bytes as i64)),
        ("archived_at".to_string(), n(e.archived_at_ms)),
        ("expires_at".to_string(), n(e.expires_at)),
    ]);
    if let Some(source) = &e.source {
        item.insert("source".into(), s(source));
    }
    if let Some(envelope) = &e.envelope {
        item.insert("envelope".into(), s(envelope));
    }
    if let Some(reason) = &e.dead_lettered {
        item.insert("dead_lettered".into(), s(reason));
    }
    item
}

pub fn event_of(item: &Item) -> Option<ArchivedEvent> {
    Some(ArchivedEvent {
        id: text(item, "id")?,
        source: text(item, "source"),
        received_at: text(item, "received_at").unwrap_or_default(),
        received_at_ms: number(item, "received_at_ms").unwrap_or(0),
        version: text(item, "version").unwrap_or_default(),
        routed: item
            .get("routed")
            .and_then(|v| v.as_l().ok())
            .map(|l| {
                l.iter()
                    .filter_map(|d| DestinationName::parse(d.as_s().ok()?))
                    .collect()
            })
            .unwrap_or_default(),
        envelope: text(item, "envelope"),
        envelope_bytes: number(item, "envelope_bytes").unwrap_or(0).max(0) as usize,
        archived_at_ms: number(item, "archived_at").unwrap_or(0),
        dead_lettered: text(item, "dead_lettered"),
        expires_at: number(item, "expires_at").unwrap_or(0),
    })
}

pub fn record_of(item: &Item) -> DestinationRecord {
    let count = |k| number(item, k).unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32;
    DestinationRecord {
        ledger: LedgerItem::from_item(item),
        tries: count("tries"),
        history: item
            .get("history")
            .and_then(|v| v.as_l().ok())
            .map(|l| l.iter().filter_map(Outcome::from_attribute).collect())
            .unwrap_or_default(),
    }
}

/// The lead ID and destination of a ledger key (`delivery#<id>#<dest>`).
fn ledger_key_parts(pk: &str) -> Option<(&str, DestinationName)> {
    let rest = pk.strip_prefix(DELIVERY_PREFIX)?;
    let (id, dest) = rest.split_once('#')?;
    crate::envelope::is_valid_id(id).then_some(())?;
    Some((id, DestinationName::parse(dest)?))
}

/// An archived event with its destinations' records.
pub type EventWithRecords = (ArchivedEvent, Vec<(DestinationName, DestinationRecord)>);

#[derive(Clone, Debug)]
pub struct EventArchive {
    client: Client,
    table: String,
}

impl EventArchive {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        EventArchive {
            client,
            table: table.into(),
        }
    }

    /// Keeps `e` unless this version is archived already.
    pub async fn put(&self, e: &ArchivedEvent) -> Result<(), String> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(event_item(e)))
            .condition_expression("attribute_not_exists(#pk) OR #v <> :v")
            .expression_attribute_names("#pk", "pk")
            .expression_attribute_names("#v", "version")
            .expression_attribute_values(":v", s(&e.version))
            .send()
            .await;
        written(result).map(|_| ())
    }

    /// Notes why the router sent the lead to the dead-letter queue.
    pub async fn dead_lettered(&self, id: &str, reason: &str, at_ms: i64) -> Result<(), String> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&archive_key(id)))
            .update_expression("SET #d = :reason, #at = :at")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", "pk")
            .expression_attribute_names("#d", "dead_lettered")
            .expression_attribute_names("#at", "dead_lettered_at")
            .expression_attribute_values(":reason", s(reason))
            .expression_attribute_values(":at", n(at_ms))
            .send()
            .await;
        written(result).map(|_| ())
    }

    /// One event and its destinations' records (one read of up to six items).
    pub async fn get(&self, id: &str) -> Result<Option<EventWithRecords>, String> {
        let mut keys = vec![archive_key(id)];
        keys.extend(DestinationName::ALL.iter().map(|d| delivery_key(id, *d)));
        let mut request = KeysAndAttributes::builder().consistent_read(true);
        for k in &keys {
            request = request.keys(HashMap::from([("pk".to_string(), s(k))]));
        }
        let request = request.build().map_err(|e| e.to_string())?;
        let mut items: Vec<Item> = Vec::new();
        let mut pending = HashMap::from([(self.table.clone(), request)]);
        // Unprocessed keys (throttling) are asked again, a few times.
        for _ in 0..5 {
            let out = self
                .client
                .batch_get_item()
                .set_request_items(Some(pending))
                .send()
                .await
                .map_err(describe)?;
            if let Some(mut r) = out.responses {
                items.extend(r.remove(&self.table).unwrap_or_default());
            }
            match out.unprocessed_keys.filter(|u| !u.is_empty()) {
                Some(u) => pending = u,
                None => break,
            }
        }
        let Some(event) = items
            .iter()
            .find(|i| text(i, "pk").as_deref() == Some(&archive_key(id)))
            .and_then(event_of)
        else {
            return Ok(None);
        };
        let records = items
            .iter()
            .filter_map(|i| {
                let pk = text(i, "pk")?;
                let (_, d) = ledger_key_parts(&pk)?;
                Some((d, record_of(i)))
            })
            .collect();
        Ok(Some((event, records)))
    }

    /// Every archived event received at or after `since_ms` (and from `source`), with its
    /// records: one scan of the router's items (docs/delivery-control.md says what it costs).
    pub async fn scan(
        &self,
        since_ms: i64,
        source: Option<&str>,
    ) -> Result<Vec<EventWithRecords>, String> {
        let mut events: Vec<ArchivedEvent> = Vec::new();
        let mut records: HashMap<String, Vec<(DestinationName, DestinationRecord)>> =
            HashMap::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("begins_with(#pk, :prefix)")
                .expression_attribute_names("#pk", "pk")
                .expression_attribute_values(":prefix", s(DELIVERY_PREFIX))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(describe)?;
            for item in out.items.unwrap_or_default() {
                let Some(pk) = text(&item, "pk") else {
                    continue;
                };
                if pk.starts_with(&format!("{DELIVERY_PREFIX}{ARCHIVE_INFIX}")) {
                    if let Some(e) = event_of(&item).filter(|e| {
                        e.received_at_ms >= since_ms
                            && source.is_none_or(|s| e.source.as_deref() == Some(s))
                    }) {
                        events.push(e);
                    }
                } else if let Some((id, d)) = ledger_key_parts(&pk) {
                    records
                        .entry(id.to_string())
                        .or_default()
                        .push((d, record_of(&item)));
                }
            }
            match out.last_evaluated_key.filter(|k| !k.is_empty()) {
                Some(k) => start = Some(k),
                None => break,
            }
        }
        events.sort_by(|a, b| (a.received_at_ms, &a.id).cmp(&(b.received_at_ms, &b.id)));
        Ok(events
            .into_iter()
            .map(|e| {
                let r = records.remove(&e.id).unwrap_or_default();
                (e, r)
            })
            .collect())
    }
}
