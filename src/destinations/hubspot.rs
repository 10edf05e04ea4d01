//! HubSpot: batch upsert of one contact keyed by email (a true upsert, safe to retry).
//! A 2xx whose body lists errors (207 Multi-Status) is not a success; a 409 from a concurrent
//! create is retried once at once, since the upsert then finds the contact.

use serde_json::{Map, Value, json};
use std::time::Duration;

use crate::delivery::http::{Answer, rejected, send, truncate_utf16};
use crate::delivery::retry::Attempt;
use crate::envelope::Envelope;

pub const DEFAULT_BASE_URL: &str = "https://api.hubapi.com";
pub const DEFAULT_UPSERT_PATH: &str = "/crm/v3/objects/contacts/batch/upsert";

#[derive(Clone)]
pub struct HubSpot {
    base_url: String,
    upsert_path: String,
    token: String,
    /// The contact property that receives `icp_score`, when the portal has one.
    score_property: Option<String>,
}

impl HubSpot {
    pub fn new(
        base_url: &str,
        upsert_path: &str,
        token: impl Into<String>,
        score_property: Option<String>,
    ) -> Self {
        HubSpot {
            base_url: base_url.trim_end_matches('/').to_string(),
            upsert_path: upsert_path.to_string(),
            token: token.into(),
            score_property,
        }
    }

    pub fn url(&self) -> String {
        format!("{}{}", self.base_url, self.upsert_path)
    }
}

/// HubSpot refuses a property value over 65,536 characters (a 400 no retry fixes). Counted here
/// as UTF-16 code units, as a Java service counts them: never more than characters.
pub const MAX_PROPERTY_CHARS: usize = 65_536;

/// The request body, or `None` when the lead has no email to upsert by.
pub fn payload(env: &Envelope, score_property: Option<&str>) -> Option<Value> {
    let lead = &env.lead;
    let email = lead.email.as_ref()?;
    let mut props = Map::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            let v = truncate_utf16(&v, MAX_PROPERTY_CHARS).to_string();
            props.insert(k.to_string(), Value::String(v));
        }
    };
    put("email", Some(email.clone()));
    put("firstname", lead.first_name.clone());
    put("lastname", lead.last_name.clone());
    put("company", lead.company_name.clone());
    put("jobtitle", lead.job_title.clone());
    put("website", lead.domain.clone());
    put("industry", lead.industry.clone());
    if let Some(p) = score_property {
        put(
            p,
            lead.icp_score
                .map(|s| crate::lead::number_value(s).to_string()),
        );
    }
    Some(json!({"inputs": [{
        "idProperty": "email",
        "id": email,
        "properties": props,
        "objectWriteTraceId": env.id,
    }]}))
}

/// Reads a HubSpot answer: a 2xx is a success only if it lists no errors.
pub fn interpret(answer: Answer) -> Attempt {
    if !(200..300).contains(&answer.status) {
        return rejected(answer);
    }
    let Ok(body) = serde_json::from_str::<Value>(&answer.body) else {
        // A 200/201 without a JSON body still means the upsert was applied.
        return if answer.status == 207 {
            rejected(answer)
        } else {
            Attempt::Delivered
        };
    };
    let errors = body["errors"].as_array().map(Vec::len).unwrap_or(0);
    let num_errors = body["numErrors"].as_u64().unwrap_or(errors as u64);
    if answer.status != 207 && num_errors == 0 && errors == 0 {
        return Attempt::Delivered;
    }
    // Partial failure: the batch held one input, so that input failed. Rate limits retry.
    let first = &body["errors"][0];
    let category = first["category"].as_str().unwrap_or_default();
    let status = match category {
        "RATE_LIMIT" | "RATE_LIMITS" => 429,
        _ => first["status"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .or(first["status"].as_u64().map(|s| s as u16))
            .filter(|s| (400..600).contains(s))
            .unwrap_or(400),
    };
    rejected(Answer {
        status,
        retry_after: answer.retry_after,
        body: format!("207 partial failure: {}", answer.body),
    })
}

impl HubSpot {
    pub async fn deliver(
        &self,
        client: &reqwest::Client,
        env: &Envelope,
        timeout: Duration,
    ) -> Attempt {
        let Some(body) = payload(env, self.score_property.as_deref()) else {
            return Attempt::Status {
                status: 422,
                retry_after: None,
                detail: "the lead has no email to upsert the HubSpot contact by".into(),
            };
        };
        let body = body.to_string();
        let request = || {
            client
                .post(self.url())
                .bearer_auth(&self.token)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
        };
        let mut answer = send(request(), timeout).await;
        if matches!(&answer, Ok(a) if a.status == 409) {
            // Another writer created the contact between HubSpot's lookup and insert.
            answer = send(request(), timeout).await;
        }
        match answer {
            Ok(a) => interpret(a),
            Err(attempt) => attempt,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lead::Lead;
    use std::time::UNIX_EPOCH;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            retry_after: None,
            body: body.into(),
        }
    }

    #[test]
    fn payload_upserts_by_email_with_standard_properties() {
        let (lead, _) = Lead::parse(
            br#"{"email":"jane@acme.com","first_name":"Jane","company":"Acme","score":91,"x":1}"#,
        )
        .unwrap();
        let env = Envelope::new(ID1.into(), UNIX_EPOCH, None, lead);
        let p = payload(&env, Some("icp_score")).unwrap();
        assert_eq!(
            p,
            json!({"inputs":[{"idProperty":"email","id":"jane@acme.com",
                "properties":{"email":"jane@acme.com","firstname":"Jane","company":"Acme","icp_score":"91"},
                "objectWriteTraceId":ID1}]})
        );
        let no_email = Envelope::new(ID1.into(), UNIX_EPOCH, None, Lead::default());
        assert_eq!(payload(&no_email, None), None);
    }

    const ID1: &str = "1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d";

    /// Property values over HubSpot's 65,536-character limit are cut between characters.
    #[test]
    fn long_values_are_cut_to_hubspot_limits() {
        let body = json!({
            "email": "jane@acme.com",
            "first_name": "é".repeat(70_000),
            "last_name": "😀".repeat(40_000),
            "company": "Acme",
            "title": "x".repeat(MAX_PROPERTY_CHARS),
        });
        let (lead, _) = Lead::parse(body.to_string().as_bytes()).unwrap();
        let env = Envelope::new(ID1.into(), UNIX_EPOCH, None, lead);
        let p = payload(&env, None).unwrap();
        let props = &p["inputs"][0]["properties"];
        let first = props["firstname"].as_str().unwrap();
        assert_eq!(first.chars().count(), MAX_PROPERTY_CHARS);
        assert!(first.chars().all(|c| c == 'é'));
        assert_eq!(
            props["jobtitle"].as_str().unwrap().len(),
            MAX_PROPERTY_CHARS
        );
        assert_eq!(props["company"], "Acme");
        // Four UTF-8 bytes, two UTF-16 units each: 32,768 of them fit.
        let last = props["lastname"].as_str().unwrap();
        assert_eq!(last.chars().count(), MAX_PROPERTY_CHARS / 2);
        assert!(last.chars().all(|c| c == '😀'));
    }

    #[test]
    fn interprets_partial_failures() {
        assert_eq!(
            interpret(answer(200, r#"{"status":"COMPLETE","results":[{}]}"#)),
            Attempt::Delivered
        );
        assert_eq!(interpret(answer(200, "")), Attempt::Delivered);
        let partial = r#"{"status":"COMPLETE","numErrors":1,"errors":[{"status":"error","category":"VALIDATION_ERROR","message":"Property \"x\" does not exist"}]}"#;
        assert!(matches!(
            interpret(answer(207, partial)),
            Attempt::Status { status: 400, .. }
        ));
        let limited = r#"{"numErrors":1,"errors":[{"category":"RATE_LIMIT"}]}"#;
        assert!(matches!(
            interpret(answer(207, limited)),
            Attempt::Status { status: 429, .. }
        ));
        assert!(matches!(
            interpret(answer(401, "{}")),
            Attempt::Status { status: 401, .. }
        ));
    }
}
