//! Generic webhooks (crm / outreach / nurture / zapier): the lead JSON with an
//! `Idempotency-Key`, optionally signed the Standard Webhooks way.

use serde_json::json;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::auth::standard_webhooks_signature;
use crate::delivery::http::{rejected, send};
use crate::delivery::names::DestinationName;
use crate::delivery::retry::Attempt;
use crate::envelope::Envelope;

/// The key of an outbound `whsec_` secret. `Debug` never shows it.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey([REDACTED])")
    }
}

impl SigningKey {
    /// Parses `whsec_<base64>`; `None` when it is not one.
    pub fn parse(secret: &str) -> Option<SigningKey> {
        let b64 = secret.trim().strip_prefix("whsec_")?;
        let key = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).ok()?;
        (!key.is_empty()).then_some(SigningKey(key))
    }

    /// The decoded key's length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Clone)]
pub struct Webhook {
    url: String,
    signing: Option<SigningKey>,
}

impl Webhook {
    pub fn new(url: impl Into<String>, signing: Option<SigningKey>) -> Self {
        Webhook {
            url: url.into(),
            signing,
        }
    }
}

/// `{"event_id": ID, "source": ..., "lead": {...}}`.
pub fn payload_value(env: &Envelope) -> serde_json::Value {
    json!({"event_id": env.id, "source": env.source, "lead": env.lead})
}

/// The bytes sent (and signed).
pub fn payload(env: &Envelope) -> Vec<u8> {
    payload_value(env).to_string().into_bytes()
}

/// `<ID>:<destination>`: stable across retries, distinct per destination.
pub fn idempotency_key(env: &Envelope, name: DestinationName) -> String {
    format!("{}:{}", env.id, name)
}

impl Webhook {
    pub async fn deliver(
        &self,
        client: &reqwest::Client,
        name: DestinationName,
        env: &Envelope,
        timeout: Duration,
    ) -> Attempt {
        let body = payload(env);
        let key = idempotency_key(env, name);
        let mut req = client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", &key);
        if let Some(signing) = &self.signing {
            let ts = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            req = req
                .header("webhook-id", &key)
                .header("webhook-timestamp", ts.to_string())
                .header(
                    "webhook-signature",
                    standard_webhooks_signature(&signing.0, &key, ts, &body),
                );
        }
        match send(req.body(body), timeout).await {
            Ok(a) if (200..300).contains(&a.status) => Attempt::Delivered,
            Ok(a) => rejected(a),
            Err(attempt) => attempt,
        }
    }
}
