//! Polls an SQS queue and hands batches to a function's handler, as the Lambda event source
//! mapping does: records the handler reports failed stay on the queue and come back after the
//! visibility timeout (and reach the DLQ after `maxReceiveCount`); the rest are deleted.

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName};
use std::time::{Duration, SystemTime};

pub use crate::batch::SqsBatchHandler;

/// SQS `ReceiveMessage` results as the Lambda SQS event the router receives.
pub fn event_from_messages(messages: &[Message], queue_arn: &str, region: &str) -> SqsEvent {
    let mut event = SqsEvent::default();
    for m in messages {
        let mut r = SqsMessage::default();
        r.message_id = m.message_id.clone();
        r.receipt_handle = m.receipt_handle.clone();
        r.body = m.body.clone();
        r.md5_of_body = m.md5_of_body.clone();
        r.event_source = Some("aws:sqs".into());
        r.event_source_arn = Some(queue_arn.to_string());
        r.aws_region = Some(region.to_string());
        for (k, v) in m.attributes.clone().unwrap_or_default() {
            r.attributes.insert(k.as_str().to_string(), v);
        }
        event.records.push(r);
    }
    event
}

pub struct Poller<'a, H> {
    pub sqs: &'a aws_sdk_sqs::Client,
    pub queue_url: &'a str,
    pub queue_arn: &'a str,
    pub handler: &'a H,
    /// What the function's timeout would be.
    pub invocation_time: Duration,
}

impl<H: SqsBatchHandler> Poller<'_, H> {
    /// One receive (long poll up to `wait`), one invocation, deletes. Returns the number
    /// of records handed to the router.
    pub async fn poll_once(&self, wait: Duration) -> Result<usize, aws_sdk_sqs::Error> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(self.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await?;
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            return Ok(0);
        }
        // arn:aws:sqs:<region>:<account>:<name>
        let region = self.queue_arn.split(':').nth(3).unwrap_or("us-east-1");
        let event = event_from_messages(&messages, self.queue_arn, region);
        let deadline = SystemTime::now() + self.invocation_time;
        let failed: Vec<String> =
            match crate::batch::handle(self.handler, event, deadline, None).await {
                Ok(resp) => resp
                    .batch_item_failures
                    .into_iter()
                    .map(|f| f.item_identifier)
                    .collect(),
                // A failed invocation: every record comes back.
                Err(e) => {
                    tracing::error!(error = %e, "invocation failed; the whole batch comes back");
                    messages
                        .iter()
                        .filter_map(|m| m.message_id.clone())
                        .collect()
                }
            };
        let entries: Vec<DeleteMessageBatchRequestEntry> = messages
            .iter()
            .enumerate()
            .filter(|(_, m)| !m.message_id.as_ref().is_some_and(|id| failed.contains(id)))
            .filter_map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle.clone()?)
                    .build()
                    .ok()
            })
            .collect();
        if !entries.is_empty() {
            self.sqs
                .delete_message_batch()
                .queue_url(self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await?;
        }
        Ok(messages.len())
    }
}
