//! The queue port: ingest hands each accepted lead to it exactly once per idempotency key.

pub mod sqs;

use std::future::Future;

/// The message attribute holding why a record is in a dead-letter queue: the lead DLQ's and the
/// intake DLQ's alike.
pub const REASON_ATTRIBUTE: &str = "clayhook_reason";
/// The intake DLQ's spelling before one name was chosen: still read, for messages already there.
pub const LEGACY_REASON_ATTRIBUTE: &str = "clayhook-reason";
/// The message attribute holding how many receives it had.
pub const RECEIVES_ATTRIBUTE: &str = "clayhook_receives";

/// The longest reason a dead letter carries (bytes; cut at a character boundary).
pub const MAX_REASON_BYTES: usize = 900;
/// Room every lead message leaves under the queue's maximum size for what later copies add:
/// SQS counts message attributes (name, type and value) toward the same limit, and a dead-letter
/// copy carries the reason and the receive count (under 1 KB); a redrive or a replay marks the
/// envelope (when, and which destinations) in the rest.
pub const DEAD_LETTER_ROOM: usize = 2_048;
const _: () = assert!(
    REASON_ATTRIBUTE.len()
        + "String".len()
        + MAX_REASON_BYTES
        + RECEIVES_ATTRIBUTE.len()
        + "Number".len()
        + "4294967295".len()
        <= DEAD_LETTER_ROOM
);

/// `reason` cut to [`MAX_REASON_BYTES`] at a character boundary.
pub fn short_reason(reason: &str) -> &str {
    if reason.len() <= MAX_REASON_BYTES {
        return reason;
    }
    let mut end = MAX_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// What SQS counts of a dead-letter copy: the body and each attribute's name, type and value.
pub fn dead_letter_size(record: &DeadLetter<'_>) -> usize {
    record.body.len()
        + REASON_ATTRIBUTE.len()
        + "String".len()
        + short_reason(record.reason).len()
        + RECEIVES_ATTRIBUTE.len()
        + "Number".len()
        + record.receives.to_string().len()
}

/// One message for the lead queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// The envelope JSON.
    pub body: String,
    /// The lead's ID: the FIFO deduplication id.
    pub id: String,
    /// The FIFO message group: the `{source}` (or `default`), so a table's leads keep their order.
    pub group: String,
    /// The X-Ray trace header of the ingest invocation, carried to the router as the message's
    /// `AWSTraceHeader` system attribute.
    pub trace_header: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("lead queue unavailable: {0}")]
pub struct QueueError(pub String);

pub trait LeadQueue: Send + Sync {
    /// Sends the message; returns the queue's message id.
    fn send(
        &self,
        message: &OutgoingMessage,
    ) -> impl Future<Output = Result<String, QueueError>> + Send;
}

/// A record on its way to the dead-letter queue, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter<'a> {
    /// The record's body, as received.
    pub body: &'a str,
    /// Why it is there (no lead data, no secret): `permanent: crm answered 400`, ...
    pub reason: &'a str,
    /// Receives it had.
    pub receives: u32,
    /// The FIFO message group it came from, if any.
    pub group: Option<&'a str>,
    /// Its message id (the FIFO deduplication id in the DLQ).
    pub message_id: &'a str,
}

/// What the router asks of the queue a record came from: wait longer before the next receive
/// (retries over hours), or go to the dead-letter queue now, with the reason. Without a queue to
/// ask ([`Redelivery::enabled`] false) a failed record just fails, and the queue's own visibility
/// timeout and `maxReceiveCount` apply.
pub trait Redelivery: Send + Sync {
    fn enabled(&self) -> bool;
    /// The record comes back after `wait` (its visibility timeout, from now).
    fn delay(
        &self,
        receipt_handle: &str,
        wait: std::time::Duration,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
    /// Puts the record on the dead-letter queue; the caller then deletes it from the queue.
    fn dead_letter(
        &self,
        record: &DeadLetter<'_>,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
    /// Sends `body` to the queue again as a new message (receive count 0), visible after
    /// `delay` (at most SQS's 15 minutes); the caller then deletes the old one. Standard queues.
    fn requeue(
        &self,
        body: &str,
        delay: std::time::Duration,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// No queue to ask: failed records fail, as they did before retries over hours.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRedelivery;

impl Redelivery for NoRedelivery {
    fn enabled(&self) -> bool {
        false
    }
    async fn delay(&self, _: &str, _: std::time::Duration) -> Result<(), QueueError> {
        Err(QueueError("no queue to change".into()))
    }
    async fn dead_letter(&self, _: &DeadLetter<'_>) -> Result<(), QueueError> {
        Err(QueueError("no dead-letter queue".into()))
    }
    async fn requeue(&self, _: &str, _: std::time::Duration) -> Result<(), QueueError> {
        Err(QueueError("no queue to send to".into()))
    }
}

/// A queue to ask, or none.
impl<R: Redelivery> Redelivery for Option<R> {
    fn enabled(&self) -> bool {
        self.as_ref().is_some_and(R::enabled)
    }
    async fn delay(
        &self,
        receipt_handle: &str,
        wait: std::time::Duration,
    ) -> Result<(), QueueError> {
        match self {
            Some(r) => r.delay(receipt_handle, wait).await,
            None => NoRedelivery.delay(receipt_handle, wait).await,
        }
    }
    async fn dead_letter(&self, record: &DeadLetter<'_>) -> Result<(), QueueError> {
        match self {
            Some(r) => r.dead_letter(record).await,
            None => NoRedelivery.dead_letter(record).await,
        }
    }
    async fn requeue(&self, body: &str, delay: std::time::Duration) -> Result<(), QueueError> {
        match self {
            Some(r) => r.requeue(body, delay).await,
            None => NoRedelivery.requeue(body, delay).await,
        }
    }
}
