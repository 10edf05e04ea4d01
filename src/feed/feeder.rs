//! The feeder use case: an intake SQS batch in, rows posted to Clay, a partial batch response
//! out. Records are sent one at a time under the pace; while the circuit breaker is open (too
//! many consecutive failures, the daily budget spent, every webhook at its limit) records are
//! not attempted: they are reported failed and their visibility pushed to the reopening time, so
//! they wait on the queue instead of burning through their receives.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};
use tracing::{Instrument, error, info, warn};

use super::clay::{ClayClient, ClayWebhooks};
use super::{
    BreakerPolicy, BreakerState, ClayWebhook, Pace, budget_day, prepare_raw, webhook_refused,
};
use crate::delivery::retry::{Attempt, Class, RetryPolicy, classify};
use crate::metrics::Metrics;

/// Kept free after the last post of an invocation for the work that records it (the row marked
/// sent, the counters, the breaker): no post starts that could not end before the deadline
/// less this, and the calls after a post end by the deadline.
pub const BOOKKEEPING_RESERVE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
#[error("feeder state unavailable: {0}")]
pub struct StoreError(pub String);

/// The feeder's state in the table: counters, the breaker, rows already sent.
pub trait FeedStore: Send + Sync {
    fn breaker(&self) -> impl Future<Output = Result<BreakerState, StoreError>> + Send;
    /// [`BreakerState::after_failure`], applied atomically; the state after.
    fn breaker_failed(
        &self,
        policy: &BreakerPolicy,
        now_ms: i64,
    ) -> impl Future<Output = Result<BreakerState, StoreError>> + Send;
    /// [`BreakerState::after_success`], applied atomically; the state after.
    fn breaker_succeeded(
        &self,
        now_ms: i64,
    ) -> impl Future<Output = Result<BreakerState, StoreError>> + Send;
    /// [`BreakerState::open_until`], applied atomically; the state after.
    fn breaker_open_until(
        &self,
        until_ms: i64,
    ) -> impl Future<Output = Result<BreakerState, StoreError>> + Send;
    /// Adds one to `counter` if it is below `limit`; `false` when the limit is reached.
    fn take(
        &self,
        counter: &str,
        limit: u64,
        expires_at: Option<i64>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Adds `delta` (negative to give back) without a condition.
    fn add(&self, counter: &str, delta: i64)
    -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Claims the row before anything is sent, so two receives of one message (SQS is
    /// at-least-once; two instances) never both post it: ours when never claimed, or when the
    /// claim of an invocation that is gone has lapsed.
    fn claim_row(
        &self,
        claim: &RowClaim,
    ) -> impl Future<Output = Result<RowClaimed, StoreError>> + Send;
    /// The row is handled for good (sent, or dead-lettered): a redelivery skips it.
    fn mark_sent(
        &self,
        message_id: &str,
        expires_at: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Gives our claim back unsent, so the next receive may take it.
    fn release_row(&self, claim: &RowClaim) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// A receive's claim on one intake row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowClaim {
    pub message_id: String,
    /// Epoch ms: until then no other receive may send the row.
    pub lock_until_ms: i64,
    pub now_ms: i64,
    /// Random, one per claim: a claim that finds it in the item wrote it itself.
    pub token: String,
    /// Epoch seconds: when the item may be forgotten.
    pub expires_at: i64,
}

/// What claiming a row found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowClaimed {
    /// Ours to send.
    Claimed,
    /// Already handled by an earlier receive (sent, or dead-lettered).
    Handled,
    /// Another receive is sending it now.
    Busy,
}

#[derive(Debug, thiserror::Error)]
#[error("intake queue: {0}")]
pub struct IntakeError(pub String);

/// The intake queue's side: holding records back, and moving hopeless ones to the DLQ.
pub trait Intake: Send + Sync {
    fn postpone(
        &self,
        receipt_handle: &str,
        seconds: i64,
    ) -> impl Future<Output = Result<(), IntakeError>> + Send;
    fn dead_letter(
        &self,
        message: &SqsMessage,
        reason: &str,
    ) -> impl Future<Output = Result<(), IntakeError>> + Send;
}

#[derive(Debug, Clone)]
pub struct FeederSettings {
    pub webhooks: Vec<ClayWebhook>,
    /// Submissions per webhook (`CLAY_SUBMISSION_LIMIT`, Clay's 50,000).
    pub limit: u64,
    /// One instance's share of the rate: `FEEDER_RATE_PER_SECOND / FEEDER_MAX_CONCURRENCY`
    /// (the event source mapping runs at most that many instances at once).
    pub rate_per_instance: f64,
    pub daily_budget: Option<u64>,
    pub breaker: BreakerPolicy,
    pub retry: RetryPolicy,
    pub sent_ttl_seconds: i64,
}

pub struct Feeder<S, Q, C = ClayClient> {
    pub settings: FeederSettings,
    pub store: S,
    pub intake: Q,
    pub clay: C,
    /// The first webhook not known to be at its limit (saves a write per row once one is full).
    pub current: AtomicUsize,
    /// Kept across invocations: a warm instance's next batch must not send its first row sooner
    /// than one interval after the last batch's last row, or back-to-back batches would burst.
    pace: tokio::sync::Mutex<Pace>,
}

impl<S: FeedStore, Q: Intake, C: ClayWebhooks> crate::batch::SqsBatchHandler for Feeder<S, Q, C> {
    type Error = FeederError;
    fn handle_with(
        &self,
        event: SqsEvent,
        deadline: SystemTime,
        metrics: &Metrics,
    ) -> impl std::future::Future<Output = Result<SqsBatchResponse, FeederError>> {
        Feeder::handle_with(self, event, deadline, metrics)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FeederError {
    #[error("a failed record has no message id; failing the whole batch")]
    UnnamedFailure,
    /// The secrets in use were refused: the whole batch fails and comes back.
    #[error(transparent)]
    SecretsRefused(#[from] crate::secret_refs::refreshing::SecretsRefused),
}

/// What became of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Sent, or sent before, or moved to the DLQ: delete it from the queue.
    Done,
    /// Failed: SQS offers it again after the visibility timeout.
    Retry,
    /// Not attempted: the breaker is open; hold it back until it closes.
    Wait,
}

use crate::clock::epoch_ms;

pub fn webhook_counter(w: &ClayWebhook) -> String {
    crate::table::feed_webhook_key(&w.key)
}

pub fn budget_counter(day: &str) -> String {
    crate::table::feed_budget_key(day)
}

impl<S: FeedStore, Q: Intake, C: ClayWebhooks> Feeder<S, Q, C> {
    pub fn new(settings: FeederSettings, store: S, intake: Q, clay: C) -> Self {
        Feeder {
            store,
            intake,
            clay,
            current: AtomicUsize::new(0),
            pace: tokio::sync::Mutex::new(Pace::per_second(settings.rate_per_instance)),
            settings,
        }
    }

    /// Handles one batch; prints its metrics when they are on (see [`crate::metrics`]).
    pub async fn handle(
        &self,
        event: SqsEvent,
        deadline: SystemTime,
    ) -> Result<SqsBatchResponse, FeederError> {
        crate::batch::handle(self, event, deadline, None).await
    }

    /// [`Feeder::handle`], collecting metrics into `metrics`: `SentToClay`, `ClayFailed` by
    /// `Class`, `Retries`, `DeadLettered`, `Waiting` (held back by the open breaker).
    pub async fn handle_with(
        &self,
        event: SqsEvent,
        deadline: SystemTime,
        metrics: &Metrics,
    ) -> Result<SqsBatchResponse, FeederError> {
        // The records were received no earlier than this (less the batching window, which the
        // visibility margin covers): SQS's 12 h for their waits count from here.
        let invoked_at = SystemTime::now();
        let mut breaker = match self.store.breaker().await {
            Ok(b) => Some(b),
            Err(e) => {
                error!(error = %e, "cannot read the circuit breaker; the batch will be retried");
                None
            }
        };
        // One invocation at a time per instance, so the lock is only ever contended in tests.
        let mut pace = self.pace.lock().await;
        let mut failed: Vec<&SqsMessage> = Vec::new();
        for record in &event.records {
            let id = record.message_id.as_deref().unwrap_or("");
            let fate = match breaker.as_mut() {
                None => Fate::Retry,
                Some(b) if b.is_open(epoch_ms(SystemTime::now())) => Fate::Wait,
                Some(b) => {
                    self.record(record, b, &mut pace, deadline, metrics)
                        .instrument(tracing::info_span!("record", message_id = id))
                        .await
                }
            };
            if fate == Fate::Wait {
                metrics.count("Waiting", &[]);
            }
            if fate != Fate::Done {
                failed.push(record);
            }
        }
        // Once the breaker is open nothing is tried until it closes: every failed record of the
        // batch waits that long, instead of coming back to find it still open.
        if let Some(b) = breaker {
            let now = epoch_ms(SystemTime::now());
            if b.is_open(now) && !failed.is_empty() {
                // A budget spent before noon or a long cooldown reopens past what SQS holds a
                // message for: the records come back sooner and wait again.
                let limit =
                    crate::delivery::schedule::visibility_limit(invoked_at, SystemTime::now());
                let seconds =
                    ((b.open_until_ms - now) / 1000 + 1).clamp(1, limit.as_secs().max(1) as i64);
                info!(
                    records = failed.len(),
                    seconds, "circuit breaker open: records wait on the queue"
                );
                for handle in failed.iter().filter_map(|r| r.receipt_handle.as_deref()) {
                    if let Err(e) = self.intake.postpone(handle, seconds).await {
                        warn!(error = %e, "could not postpone a waiting record; it comes back sooner");
                    }
                }
            }
        }
        crate::batch::failures(failed.iter().map(|r| r.message_id.clone()))
            .map_err(|_| FeederError::UnnamedFailure)
    }

    async fn record(
        &self,
        record: &SqsMessage,
        breaker: &mut BreakerState,
        pace: &mut Pace,
        deadline: SystemTime,
        metrics: &Metrics,
    ) -> Fate {
        let id = record.message_id.as_deref().unwrap_or("");
        let now_ms = epoch_ms(SystemTime::now());
        let claim = RowClaim {
            message_id: id.to_string(),
            // A claim outlives this invocation a little, then another receive may take over.
            lock_until_ms: epoch_ms(deadline) + 1_000,
            now_ms,
            token: format!("{:016x}", fastrand::u64(..)),
            expires_at: now_ms / 1000 + self.settings.sent_ttl_seconds,
        };
        match self.store.claim_row(&claim).await {
            Ok(RowClaimed::Claimed) => {}
            Ok(RowClaimed::Handled) => {
                info!("already handled by an earlier receive (sent, or dead-lettered); skipped");
                return Fate::Done;
            }
            Ok(RowClaimed::Busy) => {
                info!("another receive is sending this row; it comes back later");
                return Fate::Retry;
            }
            Err(e) => {
                warn!(error = %e, "cannot claim the row");
                return Fate::Retry;
            }
        }
        let fate = self.claimed(record, breaker, pace, deadline, metrics).await;
        if fate != Fate::Done
            && let Err(e) = self.store.release_row(&claim).await
        {
            warn!(error = %e, "could not give the row's claim back; it lapses on its own");
        }
        fate
    }

    /// One row this receive has claimed: sent, dead-lettered, or left for a later receive.
    async fn claimed(
        &self,
        record: &SqsMessage,
        breaker: &mut BreakerState,
        pace: &mut Pace,
        deadline: SystemTime,
        metrics: &Metrics,
    ) -> Fate {
        let id = record.message_id.as_deref().unwrap_or("");
        let raw = record.body.as_deref().unwrap_or("");
        let body = match prepare_raw(raw.as_bytes()) {
            Ok(b) => b,
            Err(reason) => {
                return self
                    .dead_letter(record, &reason.to_string(), (metrics, deadline))
                    .await;
            }
        };
        let now = SystemTime::now();
        // Only a post that can run its whole timeout starts: one cut short may have been taken
        // by Clay (which takes no idempotency key), and would be sent again.
        let send_by = deadline
            .checked_sub(BOOKKEEPING_RESERVE)
            .unwrap_or(deadline);
        if send_by.duration_since(now).unwrap_or_default() < self.clay.request_timeout() {
            return Fate::Retry;
        }
        // The daily budget first: a row that cannot be afforded today takes no webhook slot.
        let budget = match self.settings.daily_budget {
            None => None,
            Some(limit) => {
                let (day, ends_ms) = budget_day(epoch_ms(now));
                let counter = budget_counter(&day);
                match self
                    .store
                    .take(&counter, limit, Some(ends_ms / 1000 + 86_400))
                    .await
                {
                    Ok(true) => Some(counter),
                    Ok(false) => {
                        warn!(budget = limit, day = %day, "daily submission budget spent; records wait until the next UTC day");
                        *breaker = self
                            .breaker_moved(breaker.open_until(ends_ms), || {
                                self.store.breaker_open_until(ends_ms)
                            })
                            .await;
                        return Fate::Wait;
                    }
                    Err(e) => {
                        warn!(error = %e, "cannot take from the daily budget");
                        return Fate::Retry;
                    }
                }
            }
        };
        let webhook = match self.webhook().await {
            Ok(Some(w)) => w,
            Ok(None) => {
                error!(
                    limit = self.settings.limit,
                    webhooks = self.settings.webhooks.len(),
                    "every Clay webhook has used its submission limit: create a new webhook source in Clay and add its URL to CLAY_WEBHOOK_URLS; records wait on the queue"
                );
                self.give_back(budget.as_deref(), -1).await;
                let until = epoch_ms(now) + self.settings.breaker.cooldown.as_millis() as i64;
                *breaker = self
                    .breaker_moved(breaker.open_until(until), || {
                        self.store.breaker_open_until(until)
                    })
                    .await;
                return Fate::Wait;
            }
            Err(e) => {
                warn!(error = %e, "cannot take a webhook submission");
                self.give_back(budget.as_deref(), -1).await;
                return Fate::Retry;
            }
        };
        let counter = webhook_counter(webhook);
        let (store, limit, counter_ref) = (&self.store, self.settings.limit, counter.as_str());
        // A retry after an attempt that may have counted needs a submission of its own, taken
        // under the same condition as the first (see `clay::submit`).
        let more_submissions = move || async move {
            store
                .take(counter_ref, limit, None)
                .await
                .unwrap_or_else(|e| {
                    warn!(error = %e, "cannot take a submission for a retry");
                    false
                })
        };
        let sub = super::clay::submit(
            &self.clay,
            webhook,
            &body,
            &self.settings.retry,
            pace,
            send_by,
            more_submissions,
        )
        .await;
        metrics.add("Retries", f64::from(sub.attempts.saturating_sub(1)), &[]);
        // Settle the webhook's count to what the attempts may have used, and the day's budget
        // (one taken up front) likewise.
        let unused = i64::from(sub.counted) - i64::from(sub.reserved);
        if unused != 0 {
            self.give_back(Some(&counter), unused).await;
        }
        let budget_delta = i64::from(sub.counted) - 1;
        if budget_delta != 0 {
            self.give_back(budget.as_deref(), budget_delta).await;
        }
        if sub.accepted() {
            metrics.count("SentToClay", &[]);
            info!(webhook = %webhook.label, attempts = sub.attempts, "row sent to Clay");
            self.handled(id, deadline).await;
            // Always told to the store: failures other instances counted since this batch read
            // the breaker are reset too, so "consecutive" holds across instances.
            let now = epoch_ms(SystemTime::now());
            *breaker = self
                .breaker_moved(breaker.after_success(now), || {
                    self.store.breaker_succeeded(now)
                })
                .await;
            return Fate::Done;
        }
        let systemic = webhook_refused(&sub.last)
            || classify(&sub.last, SystemTime::now()) != Class::Permanent;
        let class = if !systemic {
            "permanent"
        } else if webhook_refused(&sub.last) {
            "refused"
        } else {
            "transient"
        };
        metrics.count("ClayFailed", &[("Class", class)]);
        if !systemic {
            // Clay is up and refused this row (400, 413, ...): retrying cannot help.
            return self
                .dead_letter(record, &answer(&sub.last), (metrics, deadline))
                .await;
        }
        let (policy, now) = (&self.settings.breaker, epoch_ms(SystemTime::now()));
        *breaker = self
            .breaker_moved(breaker.after_failure(policy, now), || {
                self.store.breaker_failed(policy, now)
            })
            .await;
        if breaker.is_open(epoch_ms(SystemTime::now())) {
            error!(webhook = %webhook.label, answer = %answer(&sub.last), threshold = self.settings.breaker.threshold, "circuit breaker opened after consecutive failures");
            Fate::Wait
        } else {
            warn!(webhook = %webhook.label, attempts = sub.attempts, answer = %answer(&sub.last), out_of_submissions = sub.out_of_submissions, "row not taken by Clay; will retry");
            Fate::Retry
        }
    }

    /// The first webhook with a submission left, taking that submission.
    async fn webhook(&self) -> Result<Option<&ClayWebhook>, StoreError> {
        let limit = self.settings.limit;
        let found = super::next_with_room(
            &self.settings.webhooks,
            self.current.load(Ordering::Relaxed),
            |w| {
                let counter = webhook_counter(w);
                async move { self.store.take(&counter, limit, None).await }
            },
            |w, next| warn!(webhook = %w.label, limit, next = %next.label, "webhook has used its submission limit; rotating to the next"),
        )
        .await?;
        Ok(found.map(|(i, w)| {
            self.current.store(i, Ordering::Relaxed);
            w
        }))
    }

    async fn give_back(&self, counter: Option<&str>, delta: i64) {
        if let Some(c) = counter
            && let Err(e) = self.store.add(c, delta).await
        {
            warn!(error = %e, counter = c, delta, "counter not adjusted");
        }
    }

    /// The breaker after a transition the store applies (what every instance now sees); when
    /// the store cannot be reached, `local` (this instance's view) until it can.
    async fn breaker_moved<F, Fut>(&self, local: BreakerState, apply: F) -> BreakerState
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<BreakerState, StoreError>>,
    {
        match apply().await {
            Ok(shared) => shared,
            Err(e) => {
                warn!(error = %e, "circuit breaker state not saved");
                local
            }
        }
    }

    /// Remembers the message as handled, so a redelivery neither sends nor dead-letters it again.
    async fn handled(&self, message_id: &str, deadline: SystemTime) {
        let expires = epoch_ms(SystemTime::now()) / 1000 + self.settings.sent_ttl_seconds;
        // Before anything else after the post: this is the write that keeps it from a second.
        let done_by = deadline
            .checked_sub(self.settings.retry.safety_margin)
            .unwrap_or(deadline);
        match crate::clock::by(done_by, self.store.mark_sent(message_id, expires)).await {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                warn!(error = %e, "handled but not recorded; a redelivery would repeat it")
            }
            None => warn!("handled but not recorded in time; a redelivery would repeat it"),
        }
    }

    async fn dead_letter(
        &self,
        record: &SqsMessage,
        reason: &str,
        (metrics, deadline): (&Metrics, SystemTime),
    ) -> Fate {
        match self.intake.dead_letter(record, reason).await {
            Ok(()) => {
                metrics.count("DeadLettered", &[]);
                error!(
                    reason,
                    "record cannot be sent to Clay; moved to the dead-letter queue"
                );
                self.handled(record.message_id.as_deref().unwrap_or(""), deadline)
                    .await;
                Fate::Done
            }
            Err(e) => {
                error!(reason, error = %e, "record cannot be sent to Clay and could not be moved to the DLQ; it fails until maxReceiveCount moves it");
                Fate::Retry
            }
        }
    }
}

fn answer(a: &Attempt) -> String {
    match a {
        Attempt::Delivered => "accepted".into(),
        Attempt::Status { status, detail, .. } => format!("{status}: {detail}"),
        Attempt::Transport { detail, .. } => detail.clone(),
    }
}

#[cfg(test)]
#[path = "feeder_tests.rs"]
mod tests;
