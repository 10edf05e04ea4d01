//! The shared control state in the table: one item per destination (`delivery#control#<dest>`),
//! every change one conditional `UpdateItem` that returns the state it left (or, when its
//! condition did not hold, the state another instance left), so instances never undo each
//! other's transitions and each keeps a current copy without reading again.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::{UpdateItemError, UpdateItemOutput};
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, ReturnValue, ReturnValuesOnConditionCheckFailure,
};
use std::collections::HashMap;

use super::{Booking, BreakerPolicy, ControlError, ControlState, DeliveryControl, RateLimit};
use crate::delivery::names::DestinationName;
use crate::dynamo::{describe, n, s};
use crate::table::delivery_control_key;

#[derive(Clone, Debug)]
pub struct DynamoDbDeliveryControl {
    client: Client,
    table: String,
}

impl DynamoDbDeliveryControl {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoDbDeliveryControl {
            client,
            table: table.into(),
        }
    }

    /// An update of `destination`'s item returning its new state.
    fn update(&self, destination: DestinationName, expression: &str) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&delivery_control_key(destination)))
            .update_expression(expression)
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
    }
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> i64 {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

fn state_of(item: &HashMap<String, AttributeValue>) -> ControlState {
    let count = |k| number(item, k).clamp(0, i64::from(u32::MAX)) as u32;
    ControlState {
        failures: count("failures"),
        opens: count("opens"),
        open_until_ms: number(item, "open_until"),
        probe_until_ms: number(item, "probe_until"),
        paused_until_ms: number(item, "paused_until"),
        tat_ms: number(item, "tat"),
    }
}

/// `Ok(Ok(new state))` when the update was made, `Ok(Err(state found))` when its condition did
/// not hold.
fn settled(
    result: Result<UpdateItemOutput, SdkError<UpdateItemError>>,
) -> Result<Result<ControlState, ControlState>, ControlError> {
    match result {
        Ok(out) => Ok(Ok(out
            .attributes
            .as_ref()
            .map(state_of)
            .unwrap_or_default())),
        Err(SdkError::ServiceError(ctx)) => match ctx.into_err() {
            UpdateItemError::ConditionalCheckFailedException(e) => {
                Ok(Err(e.item().map(state_of).unwrap_or_default()))
            }
            other => Err(ControlError(DisplayErrorContext(&other).to_string())),
        },
        Err(e) => Err(ControlError(describe(e))),
    }
}

fn either(r: Result<ControlState, ControlState>) -> ControlState {
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
        let mut keys = KeysAndAttributes::builder();
        for d in destinations {
            keys = keys.keys(HashMap::from([(
                "pk".to_string(),
                s(&delivery_control_key(*d)),
            )]));
        }
        let keys = keys
            .build()
            .map_err(|e| ControlError(DisplayErrorContext(&e).to_string()))?;
        let out = self
            .client
            .batch_get_item()
            .request_items(&self.table, keys)
            .send()
            .await
            .map_err(|e| ControlError(describe(e)))?;
        let items = out
            .responses
            .and_then(|mut r| r.remove(&self.table))
            .unwrap_or_default();
        // An item not returned (never written, or left unprocessed) reads as a clean state.
        Ok(destinations
            .iter()
            .map(|d| {
                let key = delivery_control_key(*d);
                let state = items
                    .iter()
                    .find(|i| i.get("pk").and_then(|v| v.as_s().ok()) == Some(&key))
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
        let counted = either(settled(
            self.update(destination, "ADD #f :one")
                .expression_attribute_names("#f", "failures")
                .expression_attribute_values(":one", n(1))
                .send()
                .await,
        )?);
        if !counted.should_open(policy, now_ms) {
            return Ok((counted, false));
        }
        // At the threshold and not open: open it. Of several instances counting at once, one
        // opens it; the others get its state back.
        let opens = counted.opens.saturating_add(1);
        let until = now_ms + policy.cooldown_for(opens).as_millis() as i64;
        let opened = settled(
            self.update(destination, "SET #o = :until, #n = :opens, #p = :zero")
                .condition_expression(
                    "#f >= :threshold AND (attribute_not_exists(#o) OR #o <= :now)",
                )
                .expression_attribute_names("#f", "failures")
                .expression_attribute_names("#o", "open_until")
                .expression_attribute_names("#n", "opens")
                .expression_attribute_names("#p", "probe_until")
                .expression_attribute_values(":until", n(until))
                .expression_attribute_values(":opens", n(i64::from(opens)))
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":threshold", n(i64::from(policy.threshold.max(1))))
                .expression_attribute_values(":now", n(now_ms))
                .send()
                .await,
        )?;
        let by_us = opened.is_ok();
        Ok((either(opened), by_us))
    }

    async fn succeeded(
        &self,
        destination: DestinationName,
        now_ms: i64,
    ) -> Result<ControlState, ControlError> {
        // Closed only if not open now: an instance that opened it since keeps it open.
        Ok(either(settled(
            self.update(destination, "SET #f = :zero, #n = :zero, #p = :zero")
                .condition_expression("attribute_not_exists(#o) OR #o <= :now")
                .expression_attribute_names("#f", "failures")
                .expression_attribute_names("#n", "opens")
                .expression_attribute_names("#p", "probe_until")
                .expression_attribute_names("#o", "open_until")
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":now", n(now_ms))
                .send()
                .await,
        )?))
    }

    async fn take_probe(
        &self,
        destination: DestinationName,
        policy: &BreakerPolicy,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Result<ControlState, ControlState>, ControlError> {
        settled(
            self.update(destination, "SET #p = :until")
                .condition_expression(
                    "#f >= :threshold AND (attribute_not_exists(#o) OR #o <= :now) \
                     AND (attribute_not_exists(#p) OR #p <= :now)",
                )
                .expression_attribute_names("#f", "failures")
                .expression_attribute_names("#o", "open_until")
                .expression_attribute_names("#p", "probe_until")
                .expression_attribute_values(":until", n(until_ms))
                .expression_attribute_values(":threshold", n(i64::from(policy.threshold.max(1))))
                .expression_attribute_values(":now", n(now_ms))
                .send()
                .await,
        )
    }

    async fn pause(
        &self,
        destination: DestinationName,
        until_ms: i64,
    ) -> Result<ControlState, ControlError> {
        // Only ever extended.
        Ok(either(settled(
            self.update(destination, "SET #u = :until")
                .condition_expression("attribute_not_exists(#u) OR #u < :until")
                .expression_attribute_names("#u", "paused_until")
                .expression_attribute_values(":until", n(until_ms))
                .send()
                .await,
        )?))
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
                settled(
                    self.update(destination, "SET #t = :next")
                        .condition_expression("attribute_not_exists(#t) OR #t < :now")
                        .expression_attribute_names("#t", "tat")
                        .expression_attribute_values(":next", n(now_ms + interval))
                        .expression_attribute_values(":now", n(now_ms))
                        .send()
                        .await,
                )?
            } else {
                settled(
                    self.update(destination, "SET #t = #t + :interval")
                        .condition_expression("#t >= :now AND #t <= :latest")
                        .expression_attribute_names("#t", "tat")
                        .expression_attribute_values(":interval", n(interval))
                        .expression_attribute_values(":now", n(now_ms))
                        .expression_attribute_values(":latest", n(latest))
                        .send()
                        .await,
                )?
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
            "the rate limit's slot kept changing under four tries".into(),
        ))
    }
}
