//! The router use case: an SQS batch in, a partial batch response out. Each record is parsed on
//! its own, routed by the rules, and delivered to each destination at most once per the ledger.

mod batched;
pub mod config;
pub mod gates;
pub mod ledger;
pub mod rules;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use futures::StreamExt;
use std::time::{Duration, SystemTime};
use tracing::{Instrument, error, info, warn};

use crate::delivery::control::config::ControlSettings;
use crate::delivery::control::{DeliveryControl, Gate, Held, NoControl};
use crate::delivery::retry::{Attempt, Class, Next, Retried, RetryPolicy, classify, drive};
use crate::delivery::schedule::{RetrySchedule, visibility_limit};
use crate::destinations::Destinations;
use crate::envelope::Envelope;
use crate::metrics::Metrics;
use crate::queue::{DeadLetter, NoRedelivery, Redelivery};
use gates::{Gates, Hold};
use ledger::{ClaimOutcome, DeliveryClaim, DeliveryLedger, Outcome};
use rules::{DestinationName, RoutingRule, route};

#[derive(Debug, Clone)]
pub struct RouterSettings {
    pub rules: Vec<RoutingRule>,
    /// Records in flight at once (`ROUTER_CONCURRENCY`).
    pub concurrency: usize,
    pub retry: RetryPolicy,
    /// Longest single request to a destination.
    pub request_timeout: Duration,
    /// How long the ledger remembers a delivery (seconds).
    pub delivery_ttl_seconds: i64,
    /// The lead queue's `maxReceiveCount` (`MAX_RECEIVE_COUNT`), when known: a record failing on
    /// that receive is counted as sent to the DLQ.
    pub max_receive_count: Option<u32>,
    /// Waits between receives of a failing record (`RETRY_SCHEDULE`), when the router can
    /// change its visibility ([`Redelivery`]).
    pub schedule: RetrySchedule,
    /// The shared breaker and rate limits (used with a [`DeliveryControl`]).
    pub control: ControlSettings,
    /// How long the archive keeps each envelope (`ARCHIVE_DAYS`; 0: not kept).
    pub archive_days: u32,
}

pub struct Router<L, D, Q = NoRedelivery, C = NoControl> {
    pub settings: RouterSettings,
    pub ledger: L,
    pub destinations: D,
    /// The queue the records come from: waits and the dead-letter queue with a reason.
    pub redelivery: Q,
    /// The per-destination breaker, rate limit and pause every router instance shares.
    pub control: C,
}

/// What one record, or one of its deliveries, came to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RecordResult {
    Done,
    /// Some destination may still take it: again after the schedule's wait for its
    /// `failures`-th failed receive (the receive count, capped below the schedule's end, when the
    /// ledger could not say), at least
    /// `not_before` (a destination's `Retry-After`, or another destination's hold).
    Retry {
        not_before: Option<Duration>,
        why: String,
        failures: Option<u32>,
    },
    /// Nothing failed, but a destination may not be sent to before `until_ms` (its breaker is
    /// open, it is paused, its rate limit is booked ahead): the record waits without counting
    /// a failure, so a long outage does not use up the retry schedule.
    Wait {
        until_ms: i64,
        why: String,
    },
    /// Nothing a retry can change: straight to the dead-letter queue, with why.
    Permanent {
        why: String,
    },
}

impl RecordResult {
    /// A record's result from its deliveries': retry while any destination may still take it;
    /// permanent only when none can.
    fn of(results: Vec<RecordResult>) -> RecordResult {
        let now = epoch_ms(SystemTime::now());
        let mut retry: Option<(Option<Duration>, Option<u32>)> = None;
        let mut wait: Option<i64> = None;
        let mut whys = Vec::new();
        let mut permanent = Vec::new();
        for r in results {
            match r {
                RecordResult::Done => {}
                RecordResult::Retry {
                    not_before,
                    why,
                    failures,
                } => {
                    let (nb, f) = retry.get_or_insert((None, None));
                    *nb = (*nb).max(not_before);
                    *f = (*f).max(failures);
                    whys.push(why);
                }
                RecordResult::Wait { until_ms, why } => {
                    wait = wait.max(Some(until_ms));
                    whys.push(why);
                }
                RecordResult::Permanent { why } => permanent.push(why),
            }
        }
        whys.extend(permanent.iter().cloned());
        match (retry, wait) {
            (Some((not_before, failures)), wait) => RecordResult::Retry {
                // A held destination comes back no sooner than its hold ends.
                not_before: not_before
                    .max(wait.map(|w| Duration::from_millis((w - now).max(0) as u64))),
                why: whys.join("; "),
                failures,
            },
            (None, Some(until_ms)) => RecordResult::Wait {
                until_ms,
                why: whys.join("; "),
            },
            (None, None) if permanent.is_empty() => RecordResult::Done,
            (None, None) => RecordResult::Permanent {
                why: permanent.join("; "),
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// A failed record cannot be named in a partial response: fail the whole batch instead, so
    /// nothing is lost (the ledger keeps delivered destinations from being sent twice).
    #[error("a failed record has no message id; failing the whole batch")]
    UnnamedFailure,
    /// The secrets in use were refused: the whole batch fails and comes back.
    #[error(transparent)]
    SecretsRefused(#[from] crate::secret_refs::refreshing::SecretsRefused),
}

/// Kept free after the last request of an invocation for the work that records it: the ledger,
/// the breaker, and each record's wait or dead letter. No request starts that could not end
/// before the deadline less this, and every call after the sends ends by the deadline.
pub const BOOKKEEPING_RESERVE: Duration = Duration::from_secs(2);

/// A claim outlives the invocation that took it by this much past its last send, so the
/// bookkeeping finishes under it, and a little more; then another invocation may take over.
fn lock_until_ms(send_by: SystemTime) -> i64 {
    epoch_ms(send_by) + BOOKKEEPING_RESERVE.as_millis() as i64 + 1_000
}

use crate::clock::{by, epoch_ms};

impl<L: DeliveryLedger, D: Destinations, Q: Redelivery, C: DeliveryControl>
    crate::batch::SqsBatchHandler for Router<L, D, Q, C>
{
    type Error = RouterError;
    fn handle_with(
        &self,
        event: SqsEvent,
        deadline: SystemTime,
        metrics: &Metrics,
    ) -> impl std::future::Future<Output = Result<SqsBatchResponse, RouterError>> {
        Router::handle_with(self, event, deadline, metrics)
    }
}

fn message_group(m: &SqsMessage) -> Option<&str> {
    m.attributes.get("MessageGroupId").map(String::as_str)
}

fn receive_count(r: &SqsMessage) -> u32 {
    r.attributes
        .get("ApproximateReceiveCount")
        .and_then(|c| c.parse::<u32>().ok())
        .unwrap_or(1)
}

impl<L: DeliveryLedger, D: Destinations, Q: Redelivery, C: DeliveryControl> Router<L, D, Q, C> {
    /// Handles one batch. `deadline` is the Lambda's (or a local stand-in). Prints the batch's
    /// metrics when they are on (see [`crate::metrics`]).
    pub async fn handle(
        &self,
        event: SqsEvent,
        deadline: SystemTime,
    ) -> Result<SqsBatchResponse, RouterError> {
        crate::batch::handle(self, event, deadline, None).await
    }

    /// [`Router::handle`], collecting metrics into `metrics`.
    pub async fn handle_with(
        &self,
        event: SqsEvent,
        deadline: SystemTime,
        metrics: &Metrics,
    ) -> Result<SqsBatchResponse, RouterError> {
        // The records were received no earlier than this (less the batching window, which
        // the visibility margin covers): SQS's 12 h for their waits count from here.
        let invoked_at = SystemTime::now();
        // Requests end by `send_by`; what records them, by `done_by`.
        let send_by = deadline
            .checked_sub(BOOKKEEPING_RESERVE)
            .unwrap_or(deadline);
        let done_by = self.done_by(send_by);
        if !event.records.is_empty()
            && time_to_send(send_by, self.settings.retry.safety_margin)
                < self.settings.request_timeout
        {
            metrics.count("InvocationTooShort", &[]);
            error!(
                "the invocation is too short for a whole request (HTTP_TIMEOUT_MS, plus 2.5 s for \
                 the bookkeeping): records wait without a request; raise the function's timeout \
                 or lower HTTP_TIMEOUT_MS"
            );
        }
        let records = event.records;
        let total = records.len();
        let last_receives: Vec<String> = records
            .iter()
            .filter(|r| self.is_last_receive(r))
            .filter_map(|r| r.message_id.clone())
            .collect();
        let fifo = records.iter().any(|r| message_group(r).is_some());
        let configured: Vec<DestinationName> = DestinationName::ALL
            .into_iter()
            .filter(|d| self.destinations.configured(*d))
            .collect();
        let gates = Gates::load(&self.control, &self.settings.control, &configured, send_by).await;
        let gates = &gates;
        let failed: Vec<Option<String>> = if fifo {
            self.handle_fifo(records, (invoked_at, send_by), gates, metrics)
                .await
        } else {
            // Each record's own deliveries, concurrently; then the batched destinations' one
            // request for all of them; then each record is settled.
            let mut done: Vec<(SqsMessage, RecordResult, Option<batched::Batched>)> =
                futures::stream::iter(records)
                    .map(|r| async move {
                        let (result, share) = self.record(&r, send_by, gates, metrics).await;
                        (r, result, share)
                    })
                    .buffer_unordered(self.settings.concurrency.max(1))
                    .collect()
                    .await;
            let shares: Vec<(usize, batched::Batched)> = done
                .iter_mut()
                .enumerate()
                .filter_map(|(i, (_, _, share))| share.take().map(|s| (i, s)))
                .collect();
            for (i, result) in self.deliver_batched(&shares, send_by, gates, metrics).await {
                let own = std::mem::replace(&mut done[i].1, RecordResult::Done);
                done[i].1 = RecordResult::of(vec![own, result]);
            }
            futures::stream::iter(done)
                .map(|(r, result, _)| async move {
                    let ok = self
                        .settle(
                            &r,
                            result,
                            Settling {
                                invoked_at,
                                done_by,
                            },
                            metrics,
                        )
                        .await;
                    (!ok).then_some(r.message_id)
                })
                .buffer_unordered(self.settings.concurrency.max(1))
                .filter_map(|f| async move { f })
                .collect()
                .await
        };
        let response = crate::batch::failures(failed).map_err(|_| RouterError::UnnamedFailure)?;
        let to_dlq = response
            .batch_item_failures
            .iter()
            .filter(|f| last_receives.contains(&f.item_identifier))
            .count();
        if to_dlq > 0 {
            error!(
                records = to_dlq,
                "records failed on their last receive: they move to the dead-letter queue"
            );
        }
        metrics.add("SentToDlq", to_dlq as f64, &[]);
        metrics.add(
            "RecordsFailed",
            response.batch_item_failures.len() as f64,
            &[],
        );
        info!(
            records = total,
            failed = response.batch_item_failures.len(),
            "batch done"
        );
        Ok(response)
    }

    /// FIFO: groups run concurrently, each in order; after a failure the rest of its group is
    /// reported failed unprocessed, so SQS keeps the order.
    /// Whether SQS moves this record to the DLQ if it fails now.
    fn is_last_receive(&self, r: &SqsMessage) -> bool {
        let received = r
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|c| c.parse::<u32>().ok());
        matches!((self.settings.max_receive_count, received), (Some(max), Some(n)) if n >= max)
    }

    async fn handle_fifo(
        &self,
        records: Vec<SqsMessage>,
        (invoked_at, deadline): (SystemTime, SystemTime),
        gates: &Gates<'_, C>,
        metrics: &Metrics,
    ) -> Vec<Option<String>> {
        let mut groups: Vec<(String, Vec<SqsMessage>)> = Vec::new();
        for r in records {
            let g = message_group(&r).unwrap_or_default().to_string();
            match groups.iter_mut().find(|(name, _)| *name == g) {
                Some((_, v)) => v.push(r),
                None => groups.push((g, vec![r])),
            }
        }
        futures::stream::iter(groups)
            .map(|(_, group)| async move {
                let mut failed = Vec::new();
                let mut blocked = false;
                for r in group {
                    // Behind a failed record its group waits, untouched, to keep the order.
                    if blocked {
                        failed.push(r.message_id);
                        continue;
                    }
                    let (mut result, share) = self.record(&r, deadline, gates, metrics).await;
                    if let Some(share) = share {
                        let shares = [(0, share)];
                        for (_, b) in self
                            .deliver_batched(&shares, deadline, gates, metrics)
                            .await
                        {
                            result = RecordResult::of(vec![result, b]);
                        }
                    }
                    let at = Settling {
                        invoked_at,
                        done_by: self.done_by(deadline),
                    };
                    if !self.settle(&r, result, at, metrics).await {
                        blocked = true;
                        failed.push(r.message_id);
                    }
                }
                failed
            })
            .buffer_unordered(self.settings.concurrency.max(1))
            .flat_map(futures::stream::iter)
            .collect()
            .await
    }

    /// When the work after the sends must be over: the invocation's deadline (`send_by` plus the
    /// reserve) less the time its answer needs to reach the runtime.
    fn done_by(&self, send_by: SystemTime) -> SystemTime {
        (send_by + BOOKKEEPING_RESERVE)
            .checked_sub(self.settings.retry.safety_margin)
            .unwrap_or(send_by)
    }

    /// What becomes of a record that did not succeed; `true` when it may be deleted from the
    /// queue (done, or now on the dead-letter queue), `false` when it stays and comes back.
    /// Each call ends by `at.done_by`: one cut short leaves the record on the queue (it comes
    /// back after its visibility timeout), which loses nothing.
    async fn settle(
        &self,
        r: &SqsMessage,
        result: RecordResult,
        at: Settling,
        metrics: &Metrics,
    ) -> bool {
        if result == RecordResult::Done {
            return true;
        }
        if !self.redelivery.enabled() {
            return false;
        }
        let receives = receive_count(r);
        let message_id = r.message_id.as_deref().unwrap_or_default();
        let owed_left = self.owed_left(r);
        let (reason, class) = match result {
            RecordResult::Done => return true,
            RecordResult::Wait { why, .. } | RecordResult::Retry { why, .. }
                if owed_left == Some(Duration::ZERO) =>
            {
                (
                    format!(
                        "still owed {} s after it was accepted (RETRY_SCHEDULE_TOTAL): {why}",
                        self.settings.schedule.total().as_secs()
                    ),
                    "expired",
                )
            }
            RecordResult::Wait { until_ms, why } => {
                let wait =
                    Duration::from_millis((until_ms - epoch_ms(SystemTime::now())).max(0) as u64);
                return self
                    .wait(r, wait, (receives, at, owed_left), &why, metrics)
                    .await;
            }
            RecordResult::Retry {
                not_before,
                why,
                failures,
            } => {
                // Without the ledger's count (it was unreachable), the receive count also
                // counts holds and busy claims: it may wait with it, never end the schedule.
                let step =
                    failures.unwrap_or_else(|| receives.min(self.settings.schedule.last_step()));
                match self.settings.schedule.wait_after(step) {
                    Some(wait) => {
                        let wait = wait.max(not_before.unwrap_or_default());
                        if self.requeued_fresh(r, receives, wait, (&why, at)).await {
                            metrics.count("RetryScheduled", &[]);
                            return true;
                        }
                        let Some(handle) = r.receipt_handle.as_deref() else {
                            return false;
                        };
                        let wait = at.bounded(wait, owed_left);
                        match by(at.done_by, self.redelivery.delay(handle, wait)).await {
                            Some(Ok(())) => {
                                metrics.count("RetryScheduled", &[]);
                                metrics.add("RetryDepth", f64::from(step), &[]);
                                info!(message_id, failures = step, receives, wait_s = wait.as_secs(), why = %why, "retry scheduled");
                            }
                            Some(Err(e)) => {
                                warn!(message_id, error = %e, "could not schedule the retry; the queue's visibility timeout applies")
                            }
                            None => late(message_id, metrics),
                        }
                        return false;
                    }
                    None => (
                        format!(
                            "retries exhausted after {step} failed receives over {} s: {why}",
                            self.settings.schedule.total().as_secs()
                        ),
                        "exhausted",
                    ),
                }
            }
            RecordResult::Permanent { why } => (format!("permanent: {why}"), "permanent"),
        };
        let letter = DeadLetter {
            body: r.body.as_deref().unwrap_or_default(),
            reason: &reason,
            receives,
            group: message_group(r),
            message_id,
        };
        match by(at.done_by, self.redelivery.dead_letter(&letter)).await {
            Some(Ok(())) => {
                // On the DLQ: the record may go, whatever becomes of the archive's note.
                if let Some(env) = r.body.as_deref().and_then(|b| Envelope::parse(b).ok()) {
                    let note =
                        self.ledger
                            .dead_lettered(&env.id, &reason, epoch_ms(SystemTime::now()));
                    match by(at.done_by, note).await {
                        Some(Ok(())) => {}
                        Some(Err(e)) => {
                            warn!(error = %e, "could not note the dead letter in the archive")
                        }
                        None => warn!("no time left to note the dead letter in the archive"),
                    }
                }
                metrics.count("DeadLettered", &[("Reason", class)]);
                error!(message_id, receives, reason = %reason, "record moved to the dead-letter queue");
                true
            }
            Some(Err(e)) => {
                warn!(message_id, error = %e, "could not move the record to the dead-letter queue; it stays on the queue");
                false
            }
            None => {
                late(message_id, metrics);
                false
            }
        }
    }

    /// A record held back without a failure: it comes back after `wait` (and a little jitter,
    /// so the records a breaker held do not all return at once). On a standard queue, a record
    /// one receive short of the queue's `maxReceiveCount` goes back as a fresh message instead,
    /// so waiting never sends a lead to the DLQ.
    async fn wait(
        &self,
        r: &SqsMessage,
        wait: Duration,
        (receives, at, owed_left): (u32, Settling, Option<Duration>),
        why: &str,
        metrics: &Metrics,
    ) -> bool {
        let message_id = r.message_id.as_deref().unwrap_or_default();
        let spread = (wait / 10).min(Duration::from_secs(5));
        let wait = at.bounded(
            wait.max(Duration::from_secs(1)) + spread.mul_f64(fastrand::f64()),
            owed_left,
        );
        metrics.count("RecordsHeld", &[]);
        if self.requeued_fresh(r, receives, wait, (why, at)).await {
            return true;
        }
        let Some(handle) = r.receipt_handle.as_deref() else {
            return false;
        };
        match by(at.done_by, self.redelivery.delay(handle, wait)).await {
            Some(Ok(())) => {
                info!(message_id, receives, wait_s = wait.as_secs(), why = %why, "held: waits without counting a failure")
            }
            Some(Err(e)) => {
                warn!(message_id, error = %e, "could not hold the record; the queue's visibility timeout applies")
            }
            None => late(message_id, metrics),
        }
        false
    }

    /// How long the record's lead is still owed: `RETRY_SCHEDULE_TOTAL` from when ingest
    /// accepted it (or a redrive or replay sent it again), less what has passed; zero once over
    /// (then no wait is left, held or not); `None` when the record does not say.
    fn owed_left(&self, r: &SqsMessage) -> Option<Duration> {
        let since = r
            .body
            .as_deref()
            .and_then(|b| Envelope::parse(b).ok())
            .map(|e| e.owed_since_ms())
            .filter(|ms| *ms > 0)?;
        let end = since + self.settings.schedule.total().as_millis() as i64;
        Some(Duration::from_millis(
            (end - epoch_ms(SystemTime::now())).max(0) as u64,
        ))
    }

    /// Keeps the envelope in the archive (when `ARCHIVE_DAYS` is set); a failure is logged and
    /// counted, never the record's failure.
    async fn archive(
        &self,
        r: &SqsMessage,
        (envelope, send_by): (&Envelope, SystemTime),
        version: &str,
        routed: &[DestinationName],
        metrics: &Metrics,
    ) {
        if self.settings.archive_days == 0 {
            return;
        }
        let body = r.body.as_deref().unwrap_or_default();
        let now = epoch_ms(SystemTime::now());
        let event = crate::archive::ArchivedEvent {
            id: envelope.id.clone(),
            source: envelope.source.clone(),
            received_at: envelope.received_at.clone(),
            received_at_ms: envelope.received_at_ms(),
            version: version.to_string(),
            routed: routed.to_vec(),
            envelope: (body.len() <= crate::archive::MAX_ARCHIVED_ENVELOPE)
                .then(|| body.to_string()),
            envelope_bytes: body.len(),
            archived_at_ms: now,
            dead_lettered: None,
            expires_at: now / 1000 + i64::from(self.settings.archive_days) * 86_400,
        };
        let kept = by(self.done_by(send_by), self.ledger.archive(&event))
            .await
            .unwrap_or_else(|| {
                Err(ledger::LedgerError(
                    "no answer before the invocation's deadline".into(),
                ))
            });
        if let Err(e) = kept {
            metrics.count("ArchiveFailed", &[]);
            warn!(error = %e, "could not archive the envelope");
        }
    }

    /// A record that is to come back, one receive short of the queue's `maxReceiveCount` on a
    /// standard queue, goes back as a fresh message (after `wait`, at most SQS's 15 minutes)
    /// instead: the retry schedule (counted in the ledger) decides when it reaches the DLQ, not
    /// receives spent waiting. `true` when it did (the old message may be deleted).
    async fn requeued_fresh(
        &self,
        r: &SqsMessage,
        receives: u32,
        wait: Duration,
        (why, at): (&str, Settling),
    ) -> bool {
        let near_backstop = self
            .settings
            .max_receive_count
            .is_some_and(|max| receives.saturating_add(1) >= max);
        if !near_backstop || message_group(r).is_some() {
            return false;
        }
        let message_id = r.message_id.as_deref().unwrap_or_default();
        let body = r.body.as_deref().unwrap_or_default();
        match by(at.done_by, self.redelivery.requeue(body, wait)).await {
            Some(Ok(())) => {
                info!(message_id, receives, wait_s = wait.as_secs().min(900), why = %why, "near the queue's receive limit: sent back as a fresh message");
                true
            }
            Some(Err(e)) => {
                warn!(message_id, error = %e, "could not send the record back fresh");
                false
            }
            None => false,
        }
    }

    /// One record: parse, route, deliver to its destinations; its share of the batched ones
    /// (the warehouse) is handed back for the batch's one request.
    async fn record(
        &self,
        r: &SqsMessage,
        deadline: SystemTime,
        gates: &Gates<'_, C>,
        metrics: &Metrics,
    ) -> (RecordResult, Option<batched::Batched>) {
        let message_id = r.message_id.clone().unwrap_or_default();
        let span = tracing::info_span!(
            "record",
            message_id = %message_id,
            lead_id = tracing::field::Empty,
            xrayTraceId = tracing::field::Empty
        );
        // The ingest invocation's trace, carried by SQS: this record's log lines join it.
        if let Some(trace) = r.attributes.get("AWSTraceHeader") {
            span.record("xrayTraceId", trace.as_str());
        }
        async {
            let envelope = match r.body.as_deref().map(Envelope::parse) {
                Some(Ok(e)) => e,
                Some(Err(e)) => {
                    metrics.count("MalformedRecords", &[]);
                    warn!(error = %e, "malformed record: it fails alone");
                    return (
                        RecordResult::Permanent {
                            why: "malformed record".into(),
                        },
                        None,
                    );
                }
                None => {
                    warn!("record has no body: it fails alone");
                    return (
                        RecordResult::Permanent {
                            why: "record has no body".into(),
                        },
                        None,
                    );
                }
            };
            tracing::Span::current().record("lead_id", envelope.id.as_str());
            let wanted = route(
                &self.settings.rules,
                &envelope.lead,
                envelope.source.as_deref(),
            );
            let mut targets = Vec::new();
            for d in wanted {
                if self.destinations.configured(d) {
                    targets.push(d);
                } else {
                    info!(destination = %d, "destination not configured: skipped");
                }
            }
            if envelope.source.as_deref() == Some(rules::SMOKE_SOURCE) {
                info!("smoke test lead (clayhook smoke): routed nowhere");
                return (RecordResult::Done, None);
            }
            // The archive keeps the rules' whole verdict: a replay to one destination narrows
            // what is sent, not what the lead is owed.
            let routed = targets.clone();
            if let Some(replay) = &envelope.replay {
                if !replay.destinations.is_empty() {
                    targets.retain(|d| replay.destinations.contains(d));
                }
                info!(force = replay.force, destinations = ?targets, "replayed lead (clayhook events replay)");
            }
            let version = envelope.lead_version();
            let received_at_ms = envelope.received_at_ms();
            let archived = self.archive(r, (&envelope, deadline), &version, &routed, metrics);
            if targets.is_empty() {
                archived.await;
                metrics.count("Unrouted", &[]);
                info!("no configured destination for this lead: skipped");
                return (RecordResult::Done, None);
            }
            let (batched, direct): (Vec<DestinationName>, Vec<DestinationName>) = targets
                .iter()
                .partition(|d| self.destinations.batched(**d));
            let deliveries = futures::future::join_all(direct.iter().map(|d| {
                self.deliver_once(
                    &envelope,
                    (&version, received_at_ms),
                    *d,
                    deadline,
                    gates,
                    metrics,
                )
            }));
            let (results, ()) = futures::future::join(deliveries, archived).await;
            let share = (!batched.is_empty()).then(|| batched::Batched {
                routed: targets.clone(),
                batched,
                received_at_ms,
                version: version.clone(),
                envelope: envelope.clone(),
            });
            (RecordResult::of(results), share)
        }
        .instrument(span)
        .await
    }

    /// Checks the destination's breaker and pause, claims the (lead, destination) pair in the
    /// ledger, delivers with retries (each request on a rate-limit slot), records the outcome.
    #[allow(clippy::too_many_arguments)]
    async fn deliver_once(
        &self,
        env: &Envelope,
        (version, received_at_ms): (&str, i64),
        dest: DestinationName,
        deadline: SystemTime,
        gates: &Gates<'_, C>,
        metrics: &Metrics,
    ) -> RecordResult {
        let probe = match gates.check(dest) {
            Ok(gate) => gate == Gate::Probe,
            Err(hold) => return held(dest, hold, metrics),
        };
        let now = SystemTime::now();
        let claim = DeliveryClaim {
            id: env.id.clone(),
            destination: dest,
            version: version.to_string(),
            received_at_ms,
            // Past the deadline this invocation is gone, and another may take over.
            lock_until_ms: lock_until_ms(deadline),
            now_ms: epoch_ms(now),
            expires_at: epoch_ms(now) / 1000 + self.settings.delivery_ttl_seconds,
            token: ledger::claim_token(),
        };
        let claimed = by(deadline, self.ledger.claim(&claim))
            .await
            .unwrap_or_else(|| {
                Err(ledger::LedgerError(
                    "no answer before the invocation's last request".into(),
                ))
            });
        let failures = match claimed {
            Ok(ClaimOutcome::Claimed { failures }) => failures,
            Ok(ClaimOutcome::AlreadyDelivered) => {
                info!(destination = %dest, "already delivered (this version or a newer one): skipped");
                return RecordResult::Done;
            }
            Ok(ClaimOutcome::Busy) => {
                // Not a failure: the other invocation finishes (or its lock lapses) meanwhile.
                info!(destination = %dest, "another invocation is delivering: retry later");
                let step = self.settings.schedule.wait_after(1).unwrap_or_default();
                return RecordResult::Wait {
                    until_ms: epoch_ms(SystemTime::now()) + step.as_millis() as i64,
                    why: format!("{dest}: another invocation is delivering"),
                };
            }
            Err(e) => {
                warn!(destination = %dest, error = %e, "ledger unavailable");
                return RecordResult::Retry {
                    not_before: None,
                    why: format!("{dest}: ledger unavailable"),
                    failures: None,
                };
            }
        };
        // Half-open: this delivery may be the one probe, with one request.
        if probe
            && let Err(hold) = gates
                .probe(dest, self.settings.request_timeout + Duration::from_secs(2))
                .await
        {
            self.release_held(&claim, deadline).await;
            return held(dest, hold, metrics);
        }
        let (result, tries, last, hold) = self
            .attempts(env, dest, deadline, probe, gates, metrics)
            .await;
        let outcome = Outcome {
            at_ms: epoch_ms(SystemTime::now()),
            tries,
            class: match &result {
                RecordResult::Done => "delivered",
                RecordResult::Permanent { .. } => "permanent",
                _ => "transient",
            },
            what: last.as_ref().map_or_else(|| "held".into(), describe),
        };
        match result {
            RecordResult::Done => {
                if let Err(e) = self
                    .bounded(deadline, self.ledger.delivered(&claim, &outcome))
                    .await
                {
                    // Delivered all the same; the lock expires and a redelivery could resend.
                    error!(destination = %dest, error = %e, "delivered but not recorded");
                }
                metrics.count("Routed", &[("Destination", dest.as_str())]);
                info!(destination = %dest, "delivered");
                RecordResult::Done
            }
            failed => {
                // A receive that made no request (held before its first) is no failure.
                let failures = (tries > 0).then_some(failures + 1);
                // A failure that opened the breaker (or met a pause) waits for it too.
                let hold = hold.or_else(|| gates.check(dest).err());
                if let Err(e) = self
                    .bounded(deadline, self.ledger.release(&claim, failures, &outcome))
                    .await
                {
                    warn!(destination = %dest, error = %e, "could not release the claim; it expires on its own");
                }
                match (failed, hold) {
                    (_, Some(hold)) if tries == 0 => held(dest, hold, metrics),
                    // Other deliveries used up the invocation: no request made, no failure.
                    (_, None) if tries == 0 => RecordResult::Wait {
                        until_ms: epoch_ms(SystemTime::now()),
                        why: format!("{dest}: no time left in the invocation"),
                    },
                    (
                        RecordResult::Retry {
                            not_before, why, ..
                        },
                        hold,
                    ) => RecordResult::Retry {
                        not_before: not_before.max(hold.map(|h| {
                            Duration::from_millis(
                                (h.until_ms - epoch_ms(SystemTime::now())).max(0) as u64
                            )
                        })),
                        why,
                        failures,
                    },
                    (other, _) => other,
                }
            }
        }
    }

    /// A ledger call after the sends, ended by the invocation's bookkeeping deadline.
    async fn bounded<T>(
        &self,
        send_by: SystemTime,
        call: impl std::future::Future<Output = Result<T, ledger::LedgerError>>,
    ) -> Result<T, ledger::LedgerError> {
        by(self.done_by(send_by), call).await.unwrap_or_else(|| {
            Err(ledger::LedgerError(
                "no answer before the invocation's deadline".into(),
            ))
        })
    }

    /// Gives a claim back unused (held before its first request): no failure, no try.
    async fn release_held(&self, claim: &DeliveryClaim, send_by: SystemTime) {
        let outcome = Outcome {
            at_ms: epoch_ms(SystemTime::now()),
            tries: 0,
            class: "transient",
            what: "held".into(),
        };
        if let Err(e) = self
            .bounded(send_by, self.ledger.release(claim, None, &outcome))
            .await
        {
            warn!(destination = %claim.destination, error = %e, "could not release the claim; it expires on its own");
        }
    }

    /// The requests of one receive: the result, how many were made, the last one, and the
    /// hold that stopped them, if one did.
    async fn attempts(
        &self,
        env: &Envelope,
        dest: DestinationName,
        deadline: SystemTime,
        probe: bool,
        gates: &Gates<'_, C>,
        metrics: &Metrics,
    ) -> (RecordResult, u32, Option<Attempt>, Option<Hold>) {
        let mut attempts = DeliveryAttempts {
            destinations: &self.destinations,
            env,
            dest,
            deadline,
            settings: &self.settings,
            metrics,
            gates,
            hold: None,
        };
        // A probe is one request: its failure reopens the breaker at once.
        let probe_policy = RetryPolicy {
            max_attempts: 1,
            ..self.settings.retry
        };
        let policy = if probe {
            &probe_policy
        } else {
            &self.settings.retry
        };
        // A retry is only worth waiting for if a whole request still fits after the wait.
        let retries = drive(
            &mut attempts,
            policy,
            deadline,
            self.settings.request_timeout,
        )
        .await;
        let hold = attempts.hold;
        let result = match &retries.last {
            None => RecordResult::Retry {
                not_before: None,
                why: format!("{dest}: no time left for an attempt"),
                failures: None,
            },
            Some(last) => match classify(last, SystemTime::now()) {
                Class::Success => RecordResult::Done,
                Class::Transient { not_before } => RecordResult::Retry {
                    // The destination's own word on when to come back, within the bound.
                    not_before: not_before.map(|n| n.min(self.settings.control.max_vendor_wait)),
                    why: format!("{dest}: {}", describe(last)),
                    failures: None,
                },
                Class::Permanent => RecordResult::Permanent {
                    why: format!("{dest}: {}", describe(last)),
                },
            },
        };
        (result, retries.attempts, retries.last, hold)
    }
}

/// When a batch's records are settled: SQS's 12 h for their waits count from `invoked_at`, and
/// every call ends by `done_by`.
#[derive(Debug, Clone, Copy)]
struct Settling {
    invoked_at: SystemTime,
    done_by: SystemTime,
}

impl Settling {
    /// `wait`, within what SQS still allows since the receive, and no longer than the lead is
    /// still owed (at least a second): it comes back in time to end, not half a day late.
    fn bounded(&self, wait: Duration, owed_left: Option<Duration>) -> Duration {
        let wait = wait.min(visibility_limit(self.invoked_at, SystemTime::now()));
        match owed_left {
            Some(left) => wait.min(left.max(Duration::from_secs(1))),
            None => wait,
        }
    }
}

/// A settling call that did not end by the deadline: the record comes back on its own.
fn late(message_id: &str, metrics: &Metrics) {
    metrics.count("BookkeepingLate", &[]);
    warn!(
        message_id,
        "no time left to settle the record; the queue's visibility timeout applies"
    );
}

/// What is left until `send_by`, less the margin.
fn time_to_send(send_by: SystemTime, margin: Duration) -> Duration {
    send_by
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        .saturating_sub(margin)
}

/// A destination held back: the record waits for it (no failure counted), and the metrics say
/// which destination and why.
fn held(dest: DestinationName, hold: Hold, metrics: &Metrics) -> RecordResult {
    let dims = [
        ("Destination", dest.as_str()),
        ("Reason", hold.held.as_str()),
    ];
    metrics.count("Held", &dims);
    if hold.held == Held::Open {
        metrics.add("BreakerOpen", 1.0, &[("Destination", dest.as_str())]);
    }
    info!(destination = %dest, reason = hold.held.as_str(), until_ms = hold.until_ms, "held: waits");
    RecordResult::Wait {
        until_ms: hold.until_ms,
        why: format!("{dest}: {}", hold.held.as_str()),
    }
}

/// One record's attempts at one destination: what [`drive`] retries.
struct DeliveryAttempts<'a, 'g, D, C> {
    destinations: &'a D,
    env: &'a Envelope,
    dest: DestinationName,
    deadline: SystemTime,
    settings: &'a RouterSettings,
    metrics: &'a Metrics,
    gates: &'a Gates<'g, C>,
    /// Set when the breaker, a pause or the rate limit stopped the requests.
    hold: Option<Hold>,
}

impl<D: Destinations, C: DeliveryControl> Retried for DeliveryAttempts<'_, '_, D, C> {
    async fn attempt(&mut self, n: u32) -> Option<Attempt> {
        // A retry goes only while the breaker stays shut (another record's failure, or this
        // one's, may have opened it) and the destination is not paused.
        if n > 1
            && let Err(hold) = self.gates.check(self.dest)
        {
            self.hold = Some(hold);
            return None;
        }
        // Only a request that can run its whole timeout starts: one cut short may still be
        // processed by the destination (Slack and Zapier ignore Idempotency-Key), and would be
        // sent again on the next receive. Without the time, the record waits for that receive.
        let full = self.settings.request_timeout;
        let left = time_to_send(self.deadline, self.settings.retry.safety_margin);
        if left < full {
            info!(destination = %self.dest, "no time left for a whole attempt: the record waits");
            return None;
        }
        // Wait in line for a slot only as long as a whole request still fits after it.
        if let Err(hold) = self.gates.book(self.dest, left - full, self.metrics).await {
            self.hold = Some(hold);
            return None;
        }
        if time_to_send(self.deadline, self.settings.retry.safety_margin) < full {
            return None;
        }
        let attempt = self.destinations.deliver(self.dest, self.env, full).await;
        let class = classify(&attempt, SystemTime::now());
        self.gates
            .after(self.dest, &attempt, &class, self.metrics)
            .await;
        Some(attempt)
    }

    fn failed(&mut self, n: u32, last: &Attempt, class: &Class, next: &Next) {
        log_failure(self.dest, n, last, class, next);
        self.metrics.count(
            "DeliveryFailed",
            &[
                ("Destination", self.dest.as_str()),
                ("Class", class.as_str()),
            ],
        );
    }

    async fn before_retry(&mut self, _n: u32, _last: &Attempt, _wait: Duration) -> bool {
        self.metrics
            .count("Retries", &[("Destination", self.dest.as_str())]);
        true
    }
}

/// An attempt in a few words, for a reason: the status or the transport error's kind (never the
/// answer's body, which may hold lead data).
fn describe(attempt: &Attempt) -> String {
    match attempt {
        Attempt::Delivered => "delivered".into(),
        Attempt::Status { status, .. } => format!("answered {status}"),
        Attempt::Transport { kind, .. } => format!("{kind:?} error").to_lowercase(),
    }
}

fn log_failure(
    dest: DestinationName,
    attempt_no: u32,
    attempt: &Attempt,
    class: &Class,
    next: &Next,
) {
    let class_name = class.as_str();
    let next_text = match next {
        Next::RetryAfter(d) => format!("retry in {} ms", d.as_millis()),
        Next::GiveUp(why) => format!("giving up: {why}"),
    };
    match attempt {
        Attempt::Status { status, detail, .. } => warn!(
            destination = %dest, attempt = attempt_no, status = *status, class = class_name,
            answer = %detail, next = %next_text, "delivery failed"
        ),
        Attempt::Transport { kind, detail } => warn!(
            destination = %dest, attempt = attempt_no, transport = ?kind, class = class_name,
            error = %detail, next = %next_text, "delivery failed"
        ),
        Attempt::Delivered => {}
    }
}

#[cfg(test)]
mod tests;
