//! Destinations that take a batch's leads together (the warehouse: one object, or one Firehose
//! call, per router batch). After the records' own deliveries, the leads routed to such a
//! destination are claimed one by one in the ledger, as for any destination, sent in one
//! request (retried for the rows that failed), and recorded one by one.

use std::time::{Duration, SystemTime};
use tracing::{error, info, warn};

use super::gates::Gates;
use super::ledger::{ClaimOutcome, DeliveryClaim, DeliveryLedger, Outcome};
use super::{RecordResult, Router, describe, held};
use crate::clock::epoch_ms;
use crate::delivery::control::{DeliveryControl, Gate};
use crate::delivery::names::DestinationName;
use crate::delivery::retry::{Attempt, Class, Next, classify};
use crate::destinations::Destinations;
use crate::destinations::warehouse::WarehouseRow;
use crate::envelope::Envelope;
use crate::metrics::Metrics;
use crate::queue::Redelivery;

/// One record's share of the batched destinations.
pub(super) struct Batched {
    pub envelope: Envelope,
    pub version: String,
    pub received_at_ms: i64,
    /// Every destination the rules chose for it (what the warehouse row records).
    pub routed: Vec<DestinationName>,
    /// Those of them that are batched.
    pub batched: Vec<DestinationName>,
}

/// A claimed lead on its way.
struct Claimed<'b> {
    /// The record's position in the batch.
    at: usize,
    item: &'b Batched,
    claim: DeliveryClaim,
    failures: u32,
    last: Option<Attempt>,
    tries: u32,
}

impl<L: DeliveryLedger, D: Destinations, Q: Redelivery, C: DeliveryControl> Router<L, D, Q, C> {
    /// The batched deliveries of `items` (record position, share): one result per record that
    /// had any.
    pub(super) async fn deliver_batched(
        &self,
        items: &[(usize, Batched)],
        deadline: SystemTime,
        gates: &Gates<'_, C>,
        metrics: &Metrics,
    ) -> Vec<(usize, RecordResult)> {
        let mut out: Vec<(usize, RecordResult)> = Vec::new();
        let mut dests: Vec<DestinationName> =
            items.iter().flat_map(|(_, b)| b.batched.clone()).collect();
        dests.sort();
        dests.dedup();
        for dest in dests {
            let mine: Vec<&(usize, Batched)> = items
                .iter()
                .filter(|(_, b)| b.batched.contains(&dest))
                .collect();
            out.extend(
                self.one_batched(dest, &mine, deadline, gates, metrics)
                    .await,
            );
        }
        out
    }

    async fn one_batched(
        &self,
        dest: DestinationName,
        items: &[&(usize, Batched)],
        deadline: SystemTime,
        gates: &Gates<'_, C>,
        metrics: &Metrics,
    ) -> Vec<(usize, RecordResult)> {
        let mut out = Vec::new();
        let probe = match gates.check(dest) {
            Ok(gate) => gate == Gate::Probe,
            Err(hold) => {
                return items
                    .iter()
                    .map(|(at, _)| (*at, held(dest, hold, metrics)))
                    .collect();
            }
        };
        // Each lead is claimed on its own: the ledger keeps the warehouse's rows to one per
        // lead version, whatever the batch.
        let now = SystemTime::now();
        let claims = futures::future::join_all(items.iter().map(|(at, b)| async move {
            let claim = DeliveryClaim {
                id: b.envelope.id.clone(),
                destination: dest,
                version: b.version.clone(),
                received_at_ms: b.received_at_ms,
                lock_until_ms: super::lock_until_ms(deadline),
                now_ms: epoch_ms(now),
                expires_at: epoch_ms(now) / 1000 + self.settings.delivery_ttl_seconds,
                token: super::ledger::claim_token(),
            };
            let outcome = crate::clock::by(deadline, self.ledger.claim(&claim))
                .await
                .unwrap_or_else(|| {
                    Err(super::ledger::LedgerError(
                        "no answer before the invocation's last request".into(),
                    ))
                });
            (*at, b, claim, outcome)
        }))
        .await;
        let mut claimed: Vec<Claimed<'_>> = Vec::new();
        for (at, item, claim, outcome) in claims {
            match outcome {
                Ok(ClaimOutcome::Claimed { failures }) => claimed.push(Claimed {
                    at,
                    item,
                    claim,
                    failures,
                    last: None,
                    tries: 0,
                }),
                Ok(ClaimOutcome::AlreadyDelivered) => out.push((at, RecordResult::Done)),
                Ok(ClaimOutcome::Busy) => out.push((
                    at,
                    RecordResult::Wait {
                        until_ms: epoch_ms(SystemTime::now())
                            + self
                                .settings
                                .schedule
                                .wait_after(1)
                                .unwrap_or_default()
                                .as_millis() as i64,
                        why: format!("{dest}: another invocation is delivering"),
                    },
                )),
                Err(e) => {
                    warn!(destination = %dest, lead_id = %item.envelope.id, error = %e, "ledger unavailable");
                    out.push((
                        at,
                        RecordResult::Retry {
                            not_before: None,
                            why: format!("{dest}: ledger unavailable"),
                            failures: None,
                        },
                    ));
                }
            }
        }
        if claimed.is_empty() {
            return out;
        }
        let mut hold = None;
        if probe
            && let Err(h) = gates
                .probe(dest, self.settings.request_timeout + Duration::from_secs(2))
                .await
        {
            hold = Some(h);
        }
        let max_attempts = if probe {
            1
        } else {
            self.settings.retry.max_attempts.max(1)
        };
        let mut attempt_no = 0;
        while hold.is_none() && attempt_no < max_attempts {
            let pending: Vec<usize> = (0..claimed.len())
                .filter(|i| {
                    claimed[*i].last.as_ref().is_none_or(|a| {
                        matches!(classify(a, SystemTime::now()), Class::Transient { .. })
                    })
                })
                .collect();
            if pending.is_empty() {
                break;
            }
            // Only a request that can run its whole timeout starts (see `DeliveryAttempts`).
            let full = self.settings.request_timeout;
            let left = super::time_to_send(deadline, self.settings.retry.safety_margin);
            if left < full {
                break;
            }
            if let Err(h) = gates.book(dest, left - full, metrics).await {
                hold = Some(h);
                break;
            }
            attempt_no += 1;
            let rows: Vec<WarehouseRow<'_>> = pending
                .iter()
                .map(|i| {
                    let c = &claimed[*i];
                    WarehouseRow::new(&c.item.envelope, &c.item.version, &c.item.routed)
                })
                .collect();
            if super::time_to_send(deadline, self.settings.retry.safety_margin) < full {
                break;
            }
            let answers = self.destinations.deliver_batch(dest, &rows, full).await;
            drop(rows);
            for (k, i) in pending.iter().enumerate() {
                let a = answers.get(k).cloned().unwrap_or(Attempt::Transport {
                    kind: crate::delivery::retry::TransportKind::Other,
                    detail: "no answer for the row".into(),
                });
                claimed[*i].tries += 1;
                claimed[*i].last = Some(a);
            }
            // The breaker and pauses see the request as a whole: delivered if any row was.
            let whole = answers
                .iter()
                .find(|a| **a == Attempt::Delivered)
                .or_else(|| answers.first())
                .cloned()
                .unwrap_or(Attempt::Delivered);
            let class = classify(&whole, SystemTime::now());
            gates.after(dest, &whole, &class, metrics).await;
            let failed = answers.iter().filter(|a| **a != Attempt::Delivered).count();
            if failed == 0 {
                break;
            }
            metrics.add(
                "DeliveryFailed",
                failed as f64,
                &[("Destination", dest.as_str()), ("Class", "transient")],
            );
            warn!(destination = %dest, rows = pending.len(), failed, attempt = attempt_no, first = %describe(answers.iter().find(|a| **a != Attempt::Delivered).unwrap_or(&whole)), "warehouse rows failed");
            if let Err(h) = gates.check(dest) {
                hold = Some(h);
                break;
            }
            let first_transient = answers
                .iter()
                .map(|a| classify(a, SystemTime::now()))
                .find(|c| matches!(c, Class::Transient { .. }));
            let Some(class) = first_transient else { break };
            match self.settings.retry.next(
                attempt_no,
                &class,
                fastrand::f64(),
                SystemTime::now(),
                deadline,
                full,
            ) {
                Next::RetryAfter(wait) => {
                    metrics.count("Retries", &[("Destination", dest.as_str())]);
                    tokio::time::sleep(wait).await;
                }
                Next::GiveUp(_) => break,
            }
        }
        for c in claimed {
            out.push((
                c.at,
                self.settle_batched(dest, c, (hold, deadline), metrics)
                    .await,
            ));
        }
        out
    }

    /// Records one claimed lead's outcome in the ledger, and what it means for its record.
    async fn settle_batched(
        &self,
        dest: DestinationName,
        c: Claimed<'_>,
        (hold, send_by): (Option<super::gates::Hold>, SystemTime),
        metrics: &Metrics,
    ) -> RecordResult {
        let lead_id = c.item.envelope.id.as_str();
        let now = SystemTime::now();
        let class = c.last.as_ref().map(|a| classify(a, now));
        let outcome = Outcome {
            at_ms: epoch_ms(now),
            tries: c.tries,
            class: match class {
                Some(Class::Success) => "delivered",
                Some(Class::Permanent) => "permanent",
                _ => "transient",
            },
            what: c.last.as_ref().map_or_else(|| "held".into(), describe),
        };
        if class == Some(Class::Success) {
            if let Err(e) = self
                .bounded(send_by, self.ledger.delivered(&c.claim, &outcome))
                .await
            {
                error!(destination = %dest, lead_id, error = %e, "delivered but not recorded");
            }
            metrics.count("Routed", &[("Destination", dest.as_str())]);
            info!(destination = %dest, lead_id, "delivered");
            return RecordResult::Done;
        }
        let failures = (c.tries > 0).then_some(c.failures + 1);
        if let Err(e) = self
            .bounded(send_by, self.ledger.release(&c.claim, failures, &outcome))
            .await
        {
            warn!(destination = %dest, lead_id, error = %e, "could not release the claim; it expires on its own");
        }
        match (class, hold) {
            (None, Some(h)) => held(dest, h, metrics),
            (None, None) => RecordResult::Wait {
                until_ms: epoch_ms(now),
                why: format!("{dest}: no time left in the invocation"),
            },
            (Some(Class::Permanent), _) => RecordResult::Permanent {
                why: format!("{dest}: {}", outcome.what),
            },
            (Some(Class::Transient { not_before }), h) => RecordResult::Retry {
                // The destination's own word on when to come back, within the bound.
                not_before: not_before
                    .map(|n| n.min(self.settings.control.max_vendor_wait))
                    .max(h.map(|h| {
                        Duration::from_millis((h.until_ms - epoch_ms(now)).max(0) as u64)
                    })),
                why: format!("{dest}: {}", outcome.what),
                failures,
            },
            (Some(Class::Success), _) => RecordResult::Done,
        }
    }
}
