//! The queue port: ingest hands each accepted lead to it exactly once per idempotency key.

pub mod sqs;

use std::future::Future;

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
