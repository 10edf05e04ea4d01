//! `clayhook dlq`: look into the lead queue's dead-letter queue and send its records back.
//!
//! Listing and showing leave the DLQ as it was: messages are received with a short visibility
//! timeout and made visible again at once. A redrive sends each record back to the lead queue
//! unchanged and deletes it from the DLQ only after SQS took it; the router then consults the
//! delivery ledger, so destinations that already have the lead are not sent it again.

use aws_sdk_sqs::Client as Sqs;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use serde_json::{Value, json};

use crate::delivery::http::redact;
use crate::envelope::Envelope;
use crate::queue::{LEGACY_REASON_ATTRIBUTE, REASON_ATTRIBUTE, RECEIVES_ATTRIBUTE};
use crate::router::ledger::DeliveryLedger;
use crate::router::rules::{DestinationName, RoutingRule, route};

/// How long a listed message stays hidden if resetting its visibility fails.
const PEEK_VISIBILITY_SECONDS: i32 = 30;
/// The most messages one command reads.
pub const MAX_MESSAGES: usize = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("SQS: {0}")]
    Sqs(String),
    #[error("DynamoDB: {0}")]
    DynamoDb(String),
    #[error("no message in the DLQ has the message id or lead ID {0:?}")]
    NotFound(String),
}

fn sqs_err<E: std::error::Error + 'static>(e: aws_sdk_sqs::error::SdkError<E>) -> DlqError {
    DlqError::Sqs(DisplayErrorContext(&e).to_string())
}

/// One record in the DLQ, and what the ledger says of it.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    pub receive_count: Option<u32>,
    /// Why the router put it there (records SQS moved after `maxReceiveCount` have none).
    pub reason: Option<String>,
    pub trace_header: Option<String>,
    pub envelope: Option<Envelope>,
    /// Destinations the ledger has recorded as delivered.
    pub delivered: Vec<DestinationName>,
    /// Destinations the rules want that the ledger has not recorded.
    pub owed: Vec<DestinationName>,
}

pub struct DeadLetters<L> {
    pub sqs: Sqs,
    /// What has been delivered, as the router's ledger records it.
    pub ledger: L,
    pub dlq_url: String,
    /// The rules the router runs (`ROUTING_RULES`, else the defaults): what a lead is owed.
    pub rules: Vec<RoutingRule>,
}

impl<L: DeliveryLedger> DeadLetters<L> {
    /// Reads up to `max` messages, hiding each for `visibility` seconds.
    async fn receive(&self, max: usize, visibility: i32) -> Result<Vec<Message>, DlqError> {
        let mut all: Vec<Message> = Vec::new();
        let mut empty_polls = 0;
        while all.len() < max && empty_polls < 2 {
            let out = self
                .sqs
                .receive_message()
                .queue_url(&self.dlq_url)
                .max_number_of_messages((max - all.len()).min(10) as i32)
                .visibility_timeout(visibility)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await
                .map_err(sqs_err)?;
            let got = out.messages.unwrap_or_default();
            if got.is_empty() {
                empty_polls += 1;
            }
            for m in got {
                if !all.iter().any(|a| a.message_id == m.message_id) {
                    all.push(m);
                }
            }
        }
        Ok(all)
    }

    /// Makes messages visible again (after a list or show).
    async fn release(&self, messages: &[Message]) {
        for m in messages {
            if let Some(handle) = &m.receipt_handle {
                let _ = self
                    .sqs
                    .change_message_visibility()
                    .queue_url(&self.dlq_url)
                    .receipt_handle(handle)
                    .visibility_timeout(0)
                    .send()
                    .await;
            }
        }
    }

    async fn describe(&self, m: &Message) -> Result<DeadLetter, DlqError> {
        let body = m.body.clone().unwrap_or_default();
        let attrs = m.attributes.clone().unwrap_or_default();
        let envelope = Envelope::parse(&body).ok();
        let custom = |name: &str| {
            m.message_attributes
                .as_ref()
                .and_then(|a| a.get(name))
                .and_then(|v| v.string_value.clone())
        };
        let mut delivered = Vec::new();
        let mut owed = Vec::new();
        if let Some(env) = &envelope {
            let version = env.lead_version();
            for d in route(&self.rules, &env.lead, env.source.as_deref()) {
                let reached = self
                    .ledger
                    .has_delivered(&env.id, d, &version, env.received_at_ms())
                    .await
                    .map_err(|e| DlqError::DynamoDb(e.to_string()))?;
                if reached {
                    delivered.push(d);
                } else {
                    owed.push(d);
                }
            }
        }
        Ok(DeadLetter {
            message_id: m.message_id.clone().unwrap_or_default(),
            receipt_handle: m.receipt_handle.clone().unwrap_or_default(),
            body,
            // The router's own count on the lead queue when it moved the record, else SQS's.
            receive_count: custom(RECEIVES_ATTRIBUTE)
                .and_then(|c| c.parse().ok())
                .or_else(|| {
                    attrs
                        .get(&MessageSystemAttributeName::ApproximateReceiveCount)
                        .and_then(|c| c.parse().ok())
                }),
            reason: custom(REASON_ATTRIBUTE).or_else(|| custom(LEGACY_REASON_ATTRIBUTE)),
            trace_header: attrs
                .get(&MessageSystemAttributeName::AwsTraceHeader)
                .cloned(),
            envelope,
            delivered,
            owed,
        })
    }

    /// Every record in the DLQ (up to `max`), left in place.
    pub async fn list(&self, max: usize) -> Result<Vec<DeadLetter>, DlqError> {
        let messages = self.receive(max, PEEK_VISIBILITY_SECONDS).await?;
        let mut out = Vec::new();
        let mut failure = None;
        for m in &messages {
            match self.describe(m).await {
                Ok(d) => out.push(d),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        self.release(&messages).await;
        match failure {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// The record with this message id or lead ID.
    pub async fn show(&self, id: &str) -> Result<DeadLetter, DlqError> {
        self.list(MAX_MESSAGES)
            .await?
            .into_iter()
            .find(|d| d.message_id == id || d.envelope.as_ref().is_some_and(|e| e.id == id))
            .ok_or_else(|| DlqError::NotFound(id.to_string()))
    }

    /// Sends records back to `queue_url` and deletes them from the DLQ: all of them, or the one
    /// `only` names. Records that are not envelopes stay (the router would fail them again).
    /// With `dry_run`, reports what it would do and changes nothing.
    pub async fn redrive(
        &self,
        queue_url: &str,
        only: Option<&str>,
        dry_run: bool,
    ) -> Result<Vec<(DeadLetter, RedriveOutcome)>, DlqError> {
        let messages = self
            .receive(
                MAX_MESSAGES,
                if dry_run {
                    PEEK_VISIBILITY_SECONDS
                } else {
                    300
                },
            )
            .await?;
        let mut report = Vec::new();
        let mut untouched = Vec::new();
        for m in &messages {
            let d = match self.describe(m).await {
                Ok(d) => d,
                Err(e) => {
                    untouched.push(m.clone());
                    report.push((placeholder(m), RedriveOutcome::Failed(e.to_string())));
                    continue;
                }
            };
            let wanted = only.is_none_or(|id| {
                d.message_id == id || d.envelope.as_ref().is_some_and(|e| e.id == id)
            });
            if !wanted {
                untouched.push(m.clone());
                continue;
            }
            let Some(env) = d.envelope.clone() else {
                untouched.push(m.clone());
                report.push((d, RedriveOutcome::NotAnEnvelope));
                continue;
            };
            if dry_run {
                untouched.push(m.clone());
                report.push((d, RedriveOutcome::WouldRedrive));
                continue;
            }
            match self.send_back(queue_url, &d, &env).await {
                Ok(()) => report.push((d, RedriveOutcome::Redriven)),
                Err(e) => {
                    untouched.push(m.clone());
                    report.push((d, RedriveOutcome::Failed(e.to_string())));
                }
            }
        }
        self.release(&untouched).await;
        Ok(report)
    }

    async fn send_back(
        &self,
        queue_url: &str,
        d: &DeadLetter,
        env: &Envelope,
    ) -> Result<(), DlqError> {
        // Owed anew from now: the retry schedule's total counts again from the redrive.
        let mut again = env.clone();
        again.redriven_at_ms = Some(crate::clock::epoch_ms(std::time::SystemTime::now()));
        let mut req = self
            .sqs
            .send_message()
            .queue_url(queue_url)
            .message_body(again.to_json());
        if queue_url.ends_with(".fifo") {
            req = req
                .message_group_id(env.source.clone().unwrap_or_else(|| "default".into()))
                .message_deduplication_id(format!("{}-redrive-{}", env.id, d.message_id));
        }
        req.send().await.map_err(sqs_err)?;
        self.sqs
            .delete_message()
            .queue_url(&self.dlq_url)
            .receipt_handle(&d.receipt_handle)
            .send()
            .await
            .map_err(sqs_err)?;
        Ok(())
    }
}

fn placeholder(m: &Message) -> DeadLetter {
    DeadLetter {
        message_id: m.message_id.clone().unwrap_or_default(),
        receipt_handle: String::new(),
        body: String::new(),
        receive_count: None,
        reason: None,
        trace_header: None,
        envelope: None,
        delivered: Vec::new(),
        owed: Vec::new(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedriveOutcome {
    Redriven,
    WouldRedrive,
    NotAnEnvelope,
    Failed(String),
}

fn names(list: &[DestinationName]) -> String {
    if list.is_empty() {
        "-".into()
    } else {
        list.iter()
            .map(|d| d.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl DeadLetter {
    /// One line for `dlq list`.
    pub fn line(&self) -> String {
        match &self.envelope {
            Some(env) => format!(
                "{}  lead {}  source {}  received {}  receives {}  delivered {}  owed {}  reason {}",
                self.message_id,
                env.id,
                env.source.as_deref().unwrap_or("-"),
                env.received_at,
                self.receive_count.map_or("?".into(), |c| c.to_string()),
                names(&self.delivered),
                names(&self.owed),
                self.reason.as_deref().unwrap_or("-"),
            ),
            None => format!(
                "{}  not a clayhook envelope ({} bytes)  receives {}  reason {}",
                self.message_id,
                self.body.len(),
                self.receive_count.map_or("?".into(), |c| c.to_string()),
                self.reason.as_deref().unwrap_or("-"),
            ),
        }
    }

    /// The JSON for `dlq show`. Email addresses are masked unless `reveal`.
    pub fn detail(&self, reveal: bool) -> Value {
        let message = match &self.envelope {
            Some(env) => {
                let v = serde_json::to_value(env).unwrap_or(Value::Null);
                if reveal { v } else { mask_emails(v) }
            }
            None if reveal => Value::String(self.body.clone()),
            None => Value::String(redact(&self.body)),
        };
        json!({
            "message_id": self.message_id,
            "lead_id": self.envelope.as_ref().map(|e| e.id.clone()),
            "receive_count": self.receive_count,
            "reason": self.reason,
            "trace_header": self.trace_header,
            "delivered": self.delivered.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
            "owed": self.owed.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
            "message": message,
        })
    }
}

/// Replaces every string holding an `@` with its masked form (`j***@acme.com`).
pub fn mask_emails(v: Value) -> Value {
    match v {
        Value::String(s) if s.contains('@') => {
            let (local, domain) = s.split_once('@').unwrap_or((&s, ""));
            let first: String = local.chars().take(1).collect();
            Value::String(format!("{first}***@{domain}"))
        }
        Value::Array(a) => Value::Array(a.into_iter().map(mask_emails).collect()),
        Value::Object(o) => {
            Value::Object(o.into_iter().map(|(k, v)| (k, mask_emails(v))).collect())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_masked_everywhere_in_the_message() {
        let v = json!({"lead": {"email": "jane@acme.com", "extra": {"cc": ["bob@x.io", 3]}}, "n": "plain"});
        assert_eq!(
            mask_emails(v),
            json!({"lead": {"email": "j***@acme.com", "extra": {"cc": ["b***@x.io", 3]}}, "n": "plain"})
        );
    }
}
