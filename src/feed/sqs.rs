//! `Intake` on SQS: postponing a waiting record (ChangeMessageVisibility on the intake queue)
//! and moving a record no retry can help straight to the dead-letter queue, with the reason.

use aws_lambda_events::sqs::SqsMessage;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::MessageAttributeValue;

use super::feeder::{Intake, IntakeError};

pub use crate::queue::REASON_ATTRIBUTE;

#[derive(Clone, Debug)]
pub struct SqsIntake {
    pub client: Client,
    /// Without it, waiting records come back after the usual visibility timeout.
    pub queue_url: Option<String>,
    /// Without it, a hopeless record fails until `maxReceiveCount` moves it.
    pub dead_letter_url: Option<String>,
}

fn err<E: std::error::Error + 'static>(e: aws_sdk_sqs::error::SdkError<E>) -> IntakeError {
    IntakeError(DisplayErrorContext(&e).to_string())
}

impl Intake for SqsIntake {
    async fn postpone(&self, receipt_handle: &str, seconds: i64) -> Result<(), IntakeError> {
        let Some(url) = &self.queue_url else {
            return Ok(());
        };
        self.client
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(seconds.clamp(0, 43_200) as i32)
            .send()
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn dead_letter(&self, message: &SqsMessage, reason: &str) -> Result<(), IntakeError> {
        let Some(url) = &self.dead_letter_url else {
            return Err(IntakeError("FEEDER_DLQ_URL is not set".into()));
        };
        let reason = crate::queue::short_reason(reason).to_string();
        let attribute = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(reason)
            .build()
            .map_err(|e| IntakeError(e.to_string()))?;
        self.client
            .send_message()
            .queue_url(url)
            .message_body(message.body.as_deref().unwrap_or(""))
            .message_attributes(REASON_ATTRIBUTE, attribute)
            .send()
            .await
            .map_err(err)?;
        Ok(())
    }
}
