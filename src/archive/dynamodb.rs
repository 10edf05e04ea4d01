//! The archive in the table: one item per lead (`delivery#event#<id>`), written by the router
//! with one conditional put per receive (a redelivery of the same version changes nothing), and
//! read by `clayhook events` together with the lead's ledger items.

use serde_json::{Value, json};
use std::collections::HashMap;

use super::{ArchivedEvent, DestinationRecord};
use crate::aws_json::AwsJsonClient;
use crate::aws_json::item::{items_of, number, s, text, written};
use crate::aws_json::request::{self, Attr, Write};
use crate::delivery::names::DestinationName;
use crate::router::ledger::{LedgerItem, Outcome, count};
use crate::table::{ARCHIVE_INFIX, DELIVERY_PREFIX, archive_key, delivery_key};

pub fn event_item(e: &ArchivedEvent) -> Vec<(&'static str, Attr<'_>)> {
    let mut item = vec![
        ("pk", request::s(archive_key(&e.id))),
        ("id", request::s(e.id.as_str())),
        ("received_at", request::s(e.received_at.as_str())),
        ("received_at_ms", request::n(e.received_at_ms)),
        ("version", request::s(e.version.as_str())),
        (
            "routed",
            Attr::L(e.routed.iter().map(|d| request::s(d.as_str())).collect()),
        ),
        ("envelope_bytes", request::n(e.envelope_bytes as i64)),
        ("archived_at", request::n(e.archived_at_ms)),
        ("expires_at", request::n(e.expires_at)),
    ];
    for (k, v) in [
        ("source", &e.source),
        ("envelope", &e.envelope),
        ("dead_lettered", &e.dead_lettered),
    ] {
        if let Some(v) = v {
            item.push((k, request::s(v.as_str())));
        }
    }
    item
}

pub fn event_of(item: &Value) -> Option<ArchivedEvent> {
    let text = |k: &str| text(item, k).map(str::to_string);
    Some(ArchivedEvent {
        id: text("id")?,
        source: text("source"),
        received_at: text("received_at").unwrap_or_default(),
        received_at_ms: number(item, "received_at_ms").unwrap_or(0),
        version: text("version").unwrap_or_default(),
        routed: items_of(item, "routed")
            .iter()
            .filter_map(|d| DestinationName::parse(d.get("S")?.as_str()?))
            .collect(),
        envelope: text("envelope"),
        envelope_bytes: number(item, "envelope_bytes").unwrap_or(0).max(0) as usize,
        archived_at_ms: number(item, "archived_at").unwrap_or(0),
        dead_lettered: text("dead_lettered"),
        expires_at: number(item, "expires_at").unwrap_or(0),
    })
}

pub fn record_of(item: &Value) -> DestinationRecord {
    DestinationRecord {
        ledger: LedgerItem::from_item(item),
        tries: count(item, "tries", 0),
        history: items_of(item, "history")
            .iter()
            .filter_map(Outcome::from_attribute)
            .collect(),
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
    client: AwsJsonClient,
    table: String,
}

impl EventArchive {
    pub fn new(client: AwsJsonClient, table: impl Into<String>) -> Self {
        EventArchive {
            client,
            table: table.into(),
        }
    }

    /// Keeps `e` unless this version is archived already.
    pub async fn put(&self, e: &ArchivedEvent) -> Result<(), String> {
        let body = Write {
            table_name: &self.table,
            item: event_item(e),
            condition_expression: Some("attribute_not_exists(#pk) OR #v <> :v"),
            expression_attribute_names: vec![("#pk", "pk"), ("#v", "version")],
            expression_attribute_values: vec![(":v", request::s(e.version.as_str()))],
            ..Write::default()
        };
        written(self.client.write("PutItem", &body).await).map(|_| ())
    }

    /// Notes why the router sent the lead to the dead-letter queue.
    pub async fn dead_lettered(&self, id: &str, reason: &str, at_ms: i64) -> Result<(), String> {
        let body = Write {
            table_name: &self.table,
            key: Some(archive_key(id).into()),
            update_expression: Some("SET #d = :reason, #at = :at".into()),
            condition_expression: Some("attribute_exists(#pk)"),
            expression_attribute_names: vec![
                ("#pk", "pk"),
                ("#d", "dead_lettered"),
                ("#at", "dead_lettered_at"),
            ],
            expression_attribute_values: vec![
                (":reason", request::s(reason)),
                (":at", request::n(at_ms)),
            ],
            ..Write::default()
        };
        written(self.client.write("UpdateItem", &body).await).map(|_| ())
    }

    /// One event and its destinations' records (one read of up to six items).
    pub async fn get(&self, id: &str) -> Result<Option<EventWithRecords>, String> {
        let mut keys = vec![archive_key(id)];
        keys.extend(DestinationName::ALL.iter().map(|d| delivery_key(id, *d)));
        let keys: Vec<Value> = keys.iter().map(|k| json!({ "pk": s(k) })).collect();
        let mut pending = serde_json::Map::new();
        pending.insert(
            self.table.clone(),
            json!({ "Keys": keys, "ConsistentRead": true }),
        );
        let mut pending = Value::Object(pending);
        let mut items: Vec<Value> = Vec::new();
        // Unprocessed keys (throttling) are asked again, a few times.
        for _ in 0..5 {
            let body = json!({ "RequestItems": pending });
            let mut out = self
                .client
                .call("BatchGetItem", &body)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(Value::Array(got)) = out
                .get_mut("Responses")
                .and_then(|r| r.get_mut(&self.table))
                .map(Value::take)
            {
                items.extend(got);
            }
            match out
                .get_mut("UnprocessedKeys")
                .map(Value::take)
                .filter(|u| u.as_object().is_some_and(|u| !u.is_empty()))
            {
                Some(u) => pending = u,
                None => break,
            }
        }
        let Some(event) = items
            .iter()
            .find(|i| text(i, "pk") == Some(archive_key(id).as_str()))
            .and_then(event_of)
        else {
            return Ok(None);
        };
        let records = items
            .iter()
            .filter_map(|i| {
                let (_, d) = ledger_key_parts(text(i, "pk")?)?;
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
        let archived = format!("{DELIVERY_PREFIX}{ARCHIVE_INFIX}");
        let mut body = json!({
            "TableName": self.table,
            "FilterExpression": "begins_with(#pk, :prefix)",
            "ExpressionAttributeNames": { "#pk": "pk" },
            "ExpressionAttributeValues": { ":prefix": s(DELIVERY_PREFIX) },
        });
        loop {
            let mut out = self
                .client
                .call("Scan", &body)
                .await
                .map_err(|e| e.to_string())?;
            let page = out.get("Items").and_then(Value::as_array);
            for item in page.into_iter().flatten() {
                let Some(pk) = text(item, "pk") else {
                    continue;
                };
                if pk.starts_with(&archived) {
                    if let Some(e) = event_of(item).filter(|e| {
                        e.received_at_ms >= since_ms
                            && source.is_none_or(|s| e.source.as_deref() == Some(s))
                    }) {
                        events.push(e);
                    }
                } else if let Some((id, d)) = ledger_key_parts(pk) {
                    records
                        .entry(id.to_string())
                        .or_default()
                        .push((d, record_of(item)));
                }
            }
            match out
                .get_mut("LastEvaluatedKey")
                .map(Value::take)
                .filter(|k| k.as_object().is_some_and(|k| !k.is_empty()))
            {
                Some(k) => body["ExclusiveStartKey"] = k,
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
