//! Helpers for the sample API Gateway events in `events/`.

use serde_json::Value;

use crate::auth::{Secrets, standard_webhooks_signature};

/// Re-signs a Standard Webhooks event with timestamp `now` and the first `whsec_` secret of
/// `secrets` (the `CLAY_WEBHOOK_SECRETS` list). The samples' own timestamps are outside the
/// ±300 s window by the time anyone runs them.
pub fn resign_standard_webhooks(
    event_json: &str,
    secrets: &Secrets,
    now: i64,
) -> Result<String, String> {
    let key = secrets
        .first_webhook_key()
        .ok_or("CLAY_WEBHOOK_SECRETS holds no whsec_ secret")?;
    let mut event: Value =
        serde_json::from_str(event_json).map_err(|e| format!("not a JSON event: {e}"))?;
    let body = event["body"]
        .as_str()
        .ok_or("the event has no string body")?
        .to_string();
    let headers = event["headers"]
        .as_object_mut()
        .ok_or("the event has no headers")?;
    let id = headers
        .get("webhook-id")
        .and_then(Value::as_str)
        .ok_or("the event has no webhook-id header")?
        .to_string();
    let signature = standard_webhooks_signature(key, &id, now, body.as_bytes());
    headers.insert("webhook-timestamp".into(), Value::String(now.to_string()));
    headers.insert("webhook-signature".into(), Value::String(signature));
    serde_json::to_string_pretty(&event).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Secrets, verify};
    use lambda_http::http::HeaderMap;

    #[test]
    fn resigned_event_verifies() {
        let secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
        let event = r#"{"headers":{"webhook-id":"msg_1","webhook-timestamp":"1","webhook-signature":"v1,x"},"body":"{\"a\":1}"}"#;
        let out: Value = serde_json::from_str(
            &resign_standard_webhooks(
                event,
                &Secrets::parse(&format!("static-token-0123456789,{secret}")).unwrap(),
                1_900_000_000,
            )
            .unwrap(),
        )
        .unwrap();
        let mut h = HeaderMap::new();
        for k in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            h.insert(k, out["headers"][k].as_str().unwrap().parse().unwrap());
        }
        let secrets = Secrets::parse(secret).unwrap();
        assert!(verify(&h, b"{\"a\":1}", &secrets, 1_900_000_000, 300).is_ok());
        let tokens_only = Secrets::parse("static-token-0123456789").unwrap();
        assert!(resign_standard_webhooks(event, &tokens_only, 1).is_err());
    }
}
