//! Slack incoming webhook: a text fallback plus blocks with name, title, company and score.
//! Never the email address.

use serde_json::{Value, json};
use std::time::Duration;

use super::{rejected, send};
use crate::envelope::Envelope;
use crate::lead::Lead;
use crate::router::retry::Attempt;

#[derive(Clone)]
pub struct Slack {
    url: String,
}

impl Slack {
    pub fn new(url: impl Into<String>) -> Self {
        Slack { url: url.into() }
    }
}

/// Slack mrkdwn needs `&`, `<` and `>` escaped.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn name(lead: &Lead) -> String {
    let parts: Vec<&str> = [lead.first_name.as_deref(), lead.last_name.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    if parts.is_empty() {
        "Unnamed lead".to_string()
    } else {
        parts.join(" ")
    }
}

fn score(lead: &Lead) -> String {
    match lead.icp_score {
        Some(s) if s.fract() == 0.0 => format!("{s:.0}"),
        Some(s) => format!("{s:.1}"),
        None => "n/a".to_string(),
    }
}

pub fn payload(env: &Envelope) -> Value {
    let lead = &env.lead;
    let name = escape(&name(lead));
    let title = escape(lead.job_title.as_deref().unwrap_or("—"));
    let company = escape(lead.company_name.as_deref().unwrap_or("—"));
    let score = score(lead);
    let text = format!("New lead: {name}, {title} at {company} (ICP {score})");
    json!({
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": format!("*New lead: {name}* — ICP *{score}*")}},
            {"type": "section", "fields": [
                {"type": "mrkdwn", "text": format!("*Name*\n{name}")},
                {"type": "mrkdwn", "text": format!("*Title*\n{title}")},
                {"type": "mrkdwn", "text": format!("*Company*\n{company}")},
                {"type": "mrkdwn", "text": format!("*ICP score*\n{score}")}
            ]},
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": format!("lead `{}`{}", &env.id[..env.id.len().min(12)],
                    env.source.as_deref().map(|s| format!(" · source `{}`", escape(s))).unwrap_or_default())}
            ]}
        ]
    })
}

impl Slack {
    pub async fn deliver(
        &self,
        client: &reqwest::Client,
        env: &Envelope,
        timeout: Duration,
    ) -> Attempt {
        let req = client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(payload(env).to_string());
        match send(req, timeout).await {
            Ok(a) if a.status == 200 => Attempt::Delivered,
            Ok(a) => rejected(a),
            Err(attempt) => attempt,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn has_text_and_blocks_and_no_email() {
        let (lead, _) = Lead::parse(
            br#"{"email":"jane@acme.com","first_name":"Jane","last_name":"Doe","title":"VP <Sales>","company":"A&B","score":93}"#,
        )
        .unwrap();
        let env = Envelope::new(
            "abcdef0123456789".into(),
            UNIX_EPOCH,
            Some("t1".into()),
            lead,
        );
        let p = payload(&env);
        assert_eq!(
            p["text"],
            "New lead: Jane Doe, VP &lt;Sales&gt; at A&amp;B (ICP 93)"
        );
        assert_eq!(p["blocks"].as_array().unwrap().len(), 3);
        assert!(!p.to_string().contains("jane@acme.com"));
    }
}
