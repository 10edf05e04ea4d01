//! `LeadQueue` on SQS, standard or FIFO (decided by the `.fifo` suffix of the URL).

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{
    MessageAttributeValue, MessageSystemAttributeNameForSends, MessageSystemAttributeValue,
};

use super::{DeadLetter, LeadQueue, OutgoingMessage, QueueError, Redelivery};

#[derive(Clone, Debug)]
pub struct SqsLeadQueue {
    client: Client,
    url: String,
    fifo: bool,
}

impl SqsLeadQueue {
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        let url = url.into();
        let fifo = url.ends_with(".fifo");
        SqsLeadQueue { client, url, fifo }
    }
}

impl LeadQueue for SqsLeadQueue {
    async fn send(&self, message: &OutgoingMessage) -> Result<String, QueueError> {
        let mut request = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(&message.body);
        if let Some(trace) = &message.trace_header {
            // The ingest invocation's trace, carried to the router as `AWSTraceHeader`.
            let value = MessageSystemAttributeValue::builder()
                .data_type("String")
                .string_value(trace)
                .build()
                .map_err(|e| QueueError(e.to_string()))?;
            request = request.message_system_attributes(
                MessageSystemAttributeNameForSends::AwsTraceHeader,
                value,
            );
        }
        if self.fifo {
            request = request
                .message_group_id(&message.group)
                .message_deduplication_id(&message.id);
        }
        let out = request
            .send()
            .await
            .map_err(|e| QueueError(DisplayErrorContext(&e).to_string()))?;
        out.message_id
            .ok_or_else(|| QueueError("SQS accepted the message but returned no id".into()))
    }
}

/// [`Redelivery`] on the lead queue and its dead-letter queue: `ChangeMessageVisibility`, and
/// `SendMessage` with the reason as message attributes (`clayhook dlq` shows them).
#[derive(Clone, Debug)]
pub struct SqsRedelivery {
    client: Client,
    queue_url: String,
    dead_letter_url: String,
}

impl SqsRedelivery {
    pub fn new(client: Client, queue_url: String, dead_letter_url: String) -> Self {
        SqsRedelivery {
            client,
            queue_url,
            dead_letter_url,
        }
    }
}

pub use super::{LEGACY_REASON_ATTRIBUTE, REASON_ATTRIBUTE, RECEIVES_ATTRIBUTE};

fn attribute(data_type: &str, value: String) -> Result<MessageAttributeValue, QueueError> {
    MessageAttributeValue::builder()
        .data_type(data_type)
        .string_value(value)
        .build()
        .map_err(|e| QueueError(e.to_string()))
}

impl Redelivery for SqsRedelivery {
    fn enabled(&self) -> bool {
        true
    }

    async fn delay(
        &self,
        receipt_handle: &str,
        wait: std::time::Duration,
    ) -> Result<(), QueueError> {
        let seconds = wait.as_secs().clamp(0, 43_200) as i32;
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(seconds)
            .send()
            .await
            .map_err(|e| QueueError(DisplayErrorContext(&e).to_string()))?;
        Ok(())
    }

    async fn dead_letter(&self, record: &DeadLetter<'_>) -> Result<(), QueueError> {
        let mut req = self
            .client
            .send_message()
            .queue_url(&self.dead_letter_url)
            .message_body(record.body)
            .message_attributes(
                REASON_ATTRIBUTE,
                attribute("String", super::short_reason(record.reason).to_string())?,
            )
            .message_attributes(
                RECEIVES_ATTRIBUTE,
                attribute("Number", record.receives.to_string())?,
            );
        if self.dead_letter_url.ends_with(".fifo") {
            req = req
                .message_group_id(record.group.unwrap_or("default"))
                .message_deduplication_id(record.message_id);
        }
        req.send()
            .await
            .map_err(|e| QueueError(DisplayErrorContext(&e).to_string()))?;
        Ok(())
    }

    async fn requeue(&self, body: &str, delay: std::time::Duration) -> Result<(), QueueError> {
        if self.queue_url.ends_with(".fifo") {
            return Err(QueueError(
                "a FIFO queue keeps its order: not sent back".into(),
            ));
        }
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .delay_seconds(delay.as_secs().clamp(0, 900) as i32)
            .send()
            .await
            .map_err(|e| QueueError(DisplayErrorContext(&e).to_string()))?;
        Ok(())
    }
}
