//! `LeadQueue` on SQS, standard or FIFO (decided by the `.fifo` suffix of the URL).

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{MessageSystemAttributeNameForSends, MessageSystemAttributeValue};

use super::{LeadQueue, OutgoingMessage, QueueError};

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
        let mut req = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(&message.body);
        if let Some(trace) = &message.trace_header {
            let attribute = MessageSystemAttributeValue::builder()
                .data_type("String")
                .string_value(trace)
                .build()
                .map_err(|e| QueueError(e.to_string()))?;
            req = req.message_system_attributes(
                MessageSystemAttributeNameForSends::AwsTraceHeader,
                attribute,
            );
        }
        if self.fifo {
            req = req
                .message_group_id(&message.group)
                .message_deduplication_id(&message.id);
        }
        let out = req
            .send()
            .await
            .map_err(|e| QueueError(DisplayErrorContext(&e).to_string()))?;
        out.message_id
            .ok_or_else(|| QueueError("SQS accepted the message but returned no id".into()))
    }
}
