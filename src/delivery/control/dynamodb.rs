//! The shared control state in the table: one item per destination (`delivery#control#<dest>`),
//! every change one conditional `UpdateItem` that returns the state it left (or, when its
//! condition did not hold, the state another instance left), so instances never undo each
//! other's transitions and each keeps a current copy without reading again.

use serde_json::{Value, json};

use super::{Booking, BreakerPolicy, ControlError, ControlState, DeliveryControl, RateLimit};
use crate::aws_json::item::{CONDITION_FAILED, number, s, text};
use crate::aws_json::request::{Attr, Write, n};
use crate::aws_json::{AwsJsonClient, CallError};
use crate::delivery::names::DestinationName;
use crate::router::ledger::count;
use crate::table::delivery_control_key;

/// `BatchGetItem` rounds for keys DynamoDB left unprocessed, and the pause between them.
const UNPROCESSED_ROUNDS: u32 = 3;
const UNPROCESSED_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

#[derive(Clone, Debug)]
pub struct DynamoDbDeliveryControl {
    client: AwsJsonClient,
    table: String,
}

/// `Ok(new state)` when an update was made, `Err(state found)` when its condition did not hold.
type Settled = Result<ControlState, ControlState>;

impl DynamoDbDeliveryControl {
    pub fn new(client: AwsJsonClient, table: impl Into<String>) -> Self {
        DynamoDbDeliveryControl {
            client,
            table: table.into(),
        }
    }

    /// An update of `destination`'s item (under `condition`, when there is one), returning its
    /// new state, or the state found when the condition did not hold.
    async fn update(
        &self,
        destination: DestinationName,
        expression: &str,
        condition: Option<&str>,
        names: &[(&str, &str)],
        values: Vec<(&str, Attr<'_>)>,
    ) -> Result<Settled, ControlError> {
        let body = Write {
            table_name: &self.table,
            key: Some(delivery_control_key(destination).into()),
            update_expression: Some(expression.into()),
            condition_expression: condition,
            expression_attribute_names: names.to_vec(),
            expression_attribute_values: values,
            return_values: Some("ALL_NEW"),
            return_values_on_condition_check_failure: Some("ALL_OLD"),
            ..Write::default()
        };
        settled(self.client.write("UpdateItem", &body).await)
    }
}

fn state_of(item: &Value) -> ControlState {
    let time = |k| number(item, k).unwrap_or(0);
    ControlState {
        failures: count(item, "failures", 0),
        opens: count(item, "opens", 0),
        open_until_ms: time("open_until"),
        probe_until_ms: time("probe_until"),
        paused_until_ms: time("paused_until"),
        tat_ms: time("tat"),
    }
}

fn settled(result: Result<Value, CallError>) -> Result<Settled, ControlError> {
    match result {
        Ok(out) => Ok(Ok(out.get("Attributes").map(state_of).unwrap_or_default())),
        Err(e) if e.code() == Some(CONDITION_FAILED) => Ok(Err(e
            .body()
            .and_then(|b| b.get("Item"))
            .map(state_of)
            .unwrap_or_default())),
        Err(e) => Err(ControlError(e.to_string())),
    }
}

fn either(r: Settled) -> ControlState {
    r.unwrap_or_else(|found| found)
}

impl DeliveryControl for DynamoDbDeliveryControl {
    fn enabled(&self) -> bool {
        true
    }

    async fn read(
        &self,
        destinations: &[DestinationName],
    ) -> Result<Vec<(DestinationName, ControlState)>, ControlError> {
        if destinations.is_empty() {
            return Ok(Vec::new());
        }
        let mut keys: Vec<Value> = destinations
            .iter()
            .map(|d| json!({ "pk": s(&delivery_control_key(*d)) }))
            .collect();
        let mut items: Vec<Value> = Vec::new();
        // Keys DynamoDB left unprocessed (throttling) are asked again, a few times, briefly.
        for round in 0..UNPROCESSED_ROUNDS {
            if round > 0 {
                tokio::time::sleep(UNPROCESSED_BACKOFF * round).await;
            }
            let mut request = serde_json::Map::new();
            request.insert(self.table.clone(), json!({ "Keys": keys }));
            let body = json!({ "RequestItems": request });
            let out = self
                .client
                .call("BatchGetItem", &body)
                .await
                .map_err(|e| ControlError(e.to_string()))?;
            if let Some(found) = out
                .get("Responses")
                .and_then(|r| r.get(&self.table))
                .and_then(Value::as_array)
            {
                items.extend(found.iter().cloned());
            }
            keys = out
                .get("UnprocessedKeys")
                .and_then(|u| u.get(&self.table))
                .and_then(|t| t.get("Keys"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if keys.is_empty() {
                break;
            }
        }
        let unread: Vec<&str> = keys.iter().filter_map(|k| text(k, "pk")).collect();
        // A key returned with no item was never written: a clean state. One still unprocessed
        // is left out: the caller treats it as unknown, never as clean.
        Ok(destinations
            .iter()
            .filter(|d| !unread.contains(&delivery_control_key(**d).as_str()))
            .map(|d| {
                let key = delivery_control_key(*d);
                let state = items
                    .iter()
                    .find(|i| text(i, "pk") == Some(key.as_str()))
                    .map(state_of)
                    .unwrap_or_default();
                (*d, state)
            })
            .collect())
    }

    async fn failed(
        &self,
        destination: DestinationName,
        policy: &BreakerPolicy,
        now_ms: i64,
    ) -> Result<(ControlState, bool), ControlError> {
        let counted = either(
            self.update(
                destination,
                "ADD #f :one",
                None,
                &[("#f", "failures")],
                vec![(":one", n(1))],
            )
            .await?,
        );
        if !counted.should_open(policy, now_ms) {
            return Ok((counted, false));
        }
        // At the threshold and not open: open it. Of several instances counting at once, one
        // opens it; the others get its state back.
        let opens = counted.opens.saturating_add(1);
        let until = now_ms + policy.cooldown_for(opens).as_millis() as i64;
        let opened = self
            .update(
                destination,
                "SET #o = :until, #n = :opens, #p = :zero",
                Some("#f >= :threshold AND (attribute_not_exists(#o) OR #o <= :now)"),
                &[
                    ("#f", "failures"),
                    ("#o", "open_until"),
                    ("#n", "opens"),
                    ("#p", "probe_until"),
                ],
                vec![
                    (":until", n(until)),
                    (":opens", n(opens)),
                    (":zero", n(0)),
                    (":threshold", n(policy.threshold.max(1))),
                    (":now", n(now_ms)),
                ],
            )
            .await?;
        let by_us = opened.is_ok();
        Ok((either(opened), by_us))
    }

    async fn succeeded(
        &self,
        destination: DestinationName,
        now_ms: i64,
    ) -> Result<ControlState, ControlError> {
        // Closed only if not open now: an instance that opened it since keeps it open.
        Ok(either(
            self.update(
                destination,
                "SET #f = :zero, #n = :zero, #p = :zero",
                Some("attribute_not_exists(#o) OR #o <= :now"),
                &[
                    ("#f", "failures"),
                    ("#n", "opens"),
                    ("#p", "probe_until"),
                    ("#o", "open_until"),
                ],
                vec![(":zero", n(0)), (":now", n(now_ms))],
            )
            .await?,
        ))
    }

    async fn take_probe(
        &self,
        destination: DestinationName,
        policy: &BreakerPolicy,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Settled, ControlError> {
        self.update(
            destination,
            "SET #p = :until",
            Some(
                "#f >= :threshold AND (attribute_not_exists(#o) OR #o <= :now) \
                 AND (attribute_not_exists(#p) OR #p <= :now)",
            ),
            &[
                ("#f", "failures"),
                ("#o", "open_until"),
                ("#p", "probe_until"),
            ],
            vec![
                (":until", n(until_ms)),
                (":threshold", n(policy.threshold.max(1))),
                (":now", n(now_ms)),
            ],
        )
        .await
    }

    async fn pause(
        &self,
        destination: DestinationName,
        until_ms: i64,
    ) -> Result<ControlState, ControlError> {
        // Only ever extended.
        Ok(either(
            self.update(
                destination,
                "SET #u = :until",
                Some("attribute_not_exists(#u) OR #u < :until"),
                &[("#u", "paused_until")],
                vec![(":until", n(until_ms))],
            )
            .await?,
        ))
    }

    async fn book(
        &self,
        destination: DestinationName,
        limit: &RateLimit,
        now_ms: i64,
        max_wait_ms: i64,
    ) -> Result<Booking, ControlError> {
        let interval = limit.interval_ms();
        let tolerance = limit.tolerance_ms();
        let latest = now_ms + tolerance + max_wait_ms;
        // Two conditional writes, one of which applies: "busy" (the arrival time is ahead of
        // now: book the next slot) or "quiet" (it is past: start from now). Busy goes first:
        // under load it is the one that applies, so a booking there costs one write; after a
        // quiet spell it costs two. Guessing "quiet" from the arrival time this instance last
        // saw was tried: under load the guess went wrong (another instance had moved the time
        // on), and the extra write cost the shared limit up to a tenth of its rate in the
        // stress suite, more than the saved write is worth on an idle destination.
        let mut quiet = false;
        for _ in 0..6 {
            let result = if quiet {
                self.update(
                    destination,
                    "SET #t = :next",
                    Some("attribute_not_exists(#t) OR #t < :now"),
                    &[("#t", "tat")],
                    vec![(":next", n(now_ms + interval)), (":now", n(now_ms))],
                )
                .await?
            } else {
                self.update(
                    destination,
                    "SET #t = #t + :interval",
                    Some("#t >= :now AND #t <= :latest"),
                    &[("#t", "tat")],
                    vec![
                        (":interval", n(interval)),
                        (":now", n(now_ms)),
                        (":latest", n(latest)),
                    ],
                )
                .await?
            };
            match result {
                Ok(state) => {
                    if quiet {
                        return Ok(Booking::SendAt(now_ms));
                    }
                    let slot = state.tat_ms - interval;
                    return Ok(Booking::SendAt((slot - tolerance).max(now_ms)));
                }
                Err(found) => {
                    if found.tat_ms > latest {
                        return Ok(Booking::TooFar {
                            until_ms: found.tat_ms - tolerance - max_wait_ms,
                        });
                    }
                    quiet = found.tat_ms < now_ms;
                }
            }
        }
        Err(ControlError(
            "the rate limit's slot kept changing over six tries".into(),
        ))
    }
}
