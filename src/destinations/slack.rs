//! Slack incoming webhook: a text fallback plus blocks with name, title, company and score.
//! Never the email address.

use serde_json::{Value, json};
use std::time::Duration;

use crate::delivery::http::{rejected, send, truncate_utf16};
use crate::delivery::retry::Attempt;
use crate::envelope::Envelope;
use crate::lead::Lead;

#[derive(Clone)]
pub struct Slack {
    url: String,
}

impl Slack {
    pub fn new(url: impl Into<String>) -> Self {
        Slack { url: url.into() }
    }
}

/// Characters of one value (name, title, company) after escaping, counted as UTF-16 code units
/// (never more than characters, so safe however Slack counts). Block Kit refuses a section's text
/// over 3,000 characters and a field's over 2,000 (a 400, which no retry fixes): three values of
/// this size and the labels stay under both, and under 3,000 for the `text` fallback.
pub const VALUE_CHARS: usize = 900;
/// A score is a number; a crafted one (`1e300`) must not grow the text.
const SCORE_CHARS: usize = 12;
/// The source is 1-64 characters when ingest wrote it.
const SOURCE_CHARS: usize = 64;

/// Slack mrkdwn needs `&`, `<` and `>` escaped. At most `max` UTF-16 units come out, counted after
/// escaping; a character or an escape sequence is never cut, and a shortened value ends with `…`.
fn escape(text: &str, max: usize) -> String {
    let mut out = String::new();
    let mut used = 0;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let piece = match c {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            _ => "",
        };
        // UTF-16 units, as VALUE_CHARS counts them (the pieces are ASCII).
        let width = if piece.is_empty() {
            c.len_utf16()
        } else {
            piece.len()
        };
        // Room for this piece, and for the ellipsis if more is to come.
        let reserve = usize::from(chars.peek().is_some());
        if used + width + reserve > max {
            out.push('…');
            return out;
        }
        used += width;
        if piece.is_empty() {
            out.push(c);
        } else {
            out.push_str(piece);
        }
    }
    out
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
    let text = match lead.icp_score {
        Some(s) if s.fract() == 0.0 => format!("{s:.0}"),
        Some(s) => format!("{s:.1}"),
        None => "n/a".to_string(),
    };
    truncate_utf16(&text, SCORE_CHARS).to_string()
}

pub fn payload(env: &Envelope) -> Value {
    let lead = &env.lead;
    let name = escape(&name(lead), VALUE_CHARS);
    let title = escape(lead.job_title.as_deref().unwrap_or("—"), VALUE_CHARS);
    let company = escape(lead.company_name.as_deref().unwrap_or("—"), VALUE_CHARS);
    // Input strings are never sliced by bytes: the id is checked hex, but take characters anyway.
    let short_id: String = env.id.chars().take(12).collect();
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
                {"type": "mrkdwn", "text": format!("lead `{short_id}`{}",
                    env.source.as_deref().map(|s| format!(" · source `{}`", escape(s, SOURCE_CHARS))).unwrap_or_default())}
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
            "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789".into(),
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

    /// Characters outside the BMP count two units: 900 units hold 449 emoji and the ellipsis.
    #[test]
    fn escaping_counts_utf16_units() {
        let cut = escape(&"😀".repeat(1_000), VALUE_CHARS);
        assert!(
            cut.encode_utf16().count() <= VALUE_CHARS,
            "{}",
            cut.encode_utf16().count()
        );
        assert_eq!(
            cut.chars().filter(|c| *c == '😀').count(),
            (VALUE_CHARS - 1) / 2
        );
        assert!(cut.ends_with('…'));
    }

    fn texts(p: &Value) -> Vec<(&'static str, String)> {
        let mut out = vec![("text", p["text"].as_str().unwrap().to_string())];
        for block in p["blocks"].as_array().unwrap() {
            if let Some(t) = block["text"]["text"].as_str() {
                out.push(("section", t.to_string()));
            }
            for f in block["fields"].as_array().into_iter().flatten() {
                out.push(("field", f["text"].as_str().unwrap().to_string()));
            }
            for e in block["elements"].as_array().into_iter().flatten() {
                out.push(("context", e["text"].as_str().unwrap().to_string()));
            }
        }
        out
    }

    /// A 3,000-character first name, 600 `&` in a company (5 characters each once escaped) and a
    /// long multibyte title: every text stays within Block Kit's limits, no escape sequence or
    /// character is cut, and what is cut says so.
    #[test]
    fn long_values_are_cut_to_block_kit_limits() {
        let body = serde_json::json!({
            "first_name": "J".repeat(3_000),
            "company": "&".repeat(600),
            "title": "😀<".repeat(2_000),
            "score": "1e300",
        });
        let (lead, _) = Lead::parse(body.to_string().as_bytes()).unwrap();
        // A crafted envelope (the router's input) with a long source.
        let mut env = Envelope::new("ab".repeat(32), UNIX_EPOCH, None, lead);
        env.source = Some("<".repeat(500));
        let p = payload(&env);
        for (kind, text) in texts(&p) {
            let limit = if kind == "field" { 2_000 } else { 3_000 };
            assert!(
                text.chars().count() <= limit,
                "{kind}: {}",
                text.chars().count()
            );
            // Every `&` starts a whole escape sequence.
            for (i, _) in text.match_indices('&') {
                let rest = &text[i..];
                assert!(
                    ["&amp;", "&lt;", "&gt;"]
                        .iter()
                        .any(|e| rest.starts_with(e)),
                    "{kind}: a cut escape at {i}"
                );
            }
        }
        assert!(p["text"].as_str().unwrap().contains("JJJ…"));
        assert!(p.to_string().contains("&amp;&amp;…"));
        assert_eq!(escape("a&b", 5), "a…");
        assert_eq!(escape("a&b", 7), "a&amp;b");
        assert_eq!(escape("a&b", 6), "a…");
    }
}
