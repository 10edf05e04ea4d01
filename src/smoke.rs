//! `clayhook smoke URL`: after a deploy, three requests prove the stack answers as the spec
//! says: a new lead is 202 `accepted`, the same lead again is 200 `duplicate`, a wrong token is
//! 401. The lead goes to the reserved source `clayhook-smoke`, which the router routes nowhere,
//! so no real tool ever sees it.

use std::time::Duration;

use crate::router::rules::SMOKE_SOURCE;

/// The path of the stack's `CallbackUrl` output.
const CALLBACK_PATH: &str = "/api/clay/enriched";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SmokeError {
    #[error("expected the stack's CallbackUrl, an http(s) URL ending in {CALLBACK_PATH}")]
    NotACallbackUrl,
    #[error("no token: pass --token, or set CLAY_WEBHOOK_SECRETS (its first static token is used)")]
    NoToken,
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// One request of the check and what came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: &'static str,
    pub want: &'static str,
    pub got: String,
    pub ok: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmokeReport {
    pub url: String,
    pub steps: Vec<Step>,
}

impl SmokeReport {
    pub fn passed(&self) -> bool {
        self.steps.iter().all(|s| s.ok)
    }

    /// One screen: each step, then the verdict.
    pub fn render(&self) -> String {
        let mut out = format!("clayhook smoke {}\n", self.url);
        for s in &self.steps {
            let mark = if s.ok { "ok  " } else { "FAIL" };
            out.push_str(&format!(
                "  {mark}  {:<16} want {:<14} got {}\n",
                s.name, s.want, s.got
            ));
        }
        out.push_str(if self.passed() {
            "verdict: the stack authenticates, deduplicates and queues callbacks (the test lead is routed nowhere)\n"
        } else {
            "verdict: NOT ready: see the failed steps above, the ingest function's logs and docs/operations.md\n"
        });
        out
    }
}

/// The smoke source's URL under the stack's `CallbackUrl`.
pub fn smoke_url(callback_url: &str) -> Result<String, SmokeError> {
    let base = callback_url.trim().trim_end_matches('/');
    if !crate::clock::is_http_url(base) || !base.ends_with(CALLBACK_PATH) {
        return Err(SmokeError::NotACallbackUrl);
    }
    Ok(format!("{base}/{SMOKE_SOURCE}"))
}

/// Runs the three requests against `callback_url` with `token`.
pub async fn smoke(callback_url: &str, token: &str) -> Result<SmokeReport, SmokeError> {
    if token.trim().is_empty() {
        return Err(SmokeError::NoToken);
    }
    let url = smoke_url(callback_url)?;
    let client = crate::delivery::http::client(Duration::from_secs(5))
        .map_err(|e| SmokeError::Client(e.to_string()))?;
    let nonce = format!("{:016x}", fastrand::u64(..));
    // A lead of its own each run, so the first answer is `accepted`, never `duplicate`.
    let body = serde_json::json!({
        "email": format!("smoke-{nonce}@example.invalid"),
        "first_name": "clayhook",
        "company_name": "clayhook smoke test",
        "icp_score": 0,
        "row_id": format!("smoke-{nonce}"),
    })
    .to_string();
    let post = |credential: String| {
        let request = client
            .post(&url)
            .header("content-type", "application/json")
            .header(crate::auth::CLAY_SIGNATURE_HEADER, credential)
            .timeout(Duration::from_secs(15))
            .body(body.clone());
        async move {
            match request.send().await {
                Ok(answer) => {
                    let status = answer.status().as_u16();
                    let text = answer.text().await.unwrap_or_default();
                    let json: serde_json::Value =
                        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
                    let word = json["status"]
                        .as_str()
                        .or(json["error"]["code"].as_str())
                        .unwrap_or("")
                        .to_string();
                    (status, word)
                }
                // The error itself would print the URL: say only what kind of failure it was.
                Err(e) if e.is_timeout() => (0, "no answer (timed out)".to_string()),
                Err(_) => (0, "no answer (connection failed)".to_string()),
            }
        }
    };
    let mut steps = Vec::new();
    let (status, word) = post(token.to_string()).await;
    steps.push(Step {
        name: "new lead",
        want: "202 accepted",
        got: format!("{status} {word}"),
        ok: status == 202 && word == "accepted",
    });
    let (status, word) = post(token.to_string()).await;
    steps.push(Step {
        name: "same lead again",
        want: "200 duplicate",
        got: format!("{status} {word}"),
        ok: status == 200 && word == "duplicate",
    });
    let (status, word) = post(format!("not-{nonce}")).await;
    steps.push(Step {
        name: "wrong token",
        want: "401",
        got: format!("{status} {word}"),
        ok: status == 401,
    });
    Ok(SmokeReport { url, steps })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_callback_url_is_taken() {
        assert_eq!(
            smoke_url("https://abc.execute-api.eu-west-1.amazonaws.com/api/clay/enriched/")
                .unwrap(),
            "https://abc.execute-api.eu-west-1.amazonaws.com/api/clay/enriched/clayhook-smoke"
        );
        for bad in [
            "abc.execute-api.eu-west-1.amazonaws.com/api/clay/enriched",
            "https://abc.execute-api.eu-west-1.amazonaws.com/",
            "https://abc.execute-api.eu-west-1.amazonaws.com/api/clay/enriched/q3",
        ] {
            assert_eq!(smoke_url(bad), Err(SmokeError::NotACallbackUrl), "{bad}");
        }
    }

    #[test]
    fn the_report_fits_one_screen_and_says_what_failed() {
        let step = |ok| Step {
            name: "new lead",
            want: "202 accepted",
            got: if ok { "202 accepted" } else { "500 internal" }.into(),
            ok,
        };
        let good = SmokeReport {
            url: "u".into(),
            steps: vec![step(true)],
        };
        assert!(good.passed() && good.render().contains("routed nowhere"));
        let bad = SmokeReport {
            url: "u".into(),
            steps: vec![step(true), step(false)],
        };
        let text = bad.render();
        assert!(!bad.passed() && text.contains("FAIL") && text.contains("NOT ready"));
        assert!(text.lines().count() <= 24);
    }
}
