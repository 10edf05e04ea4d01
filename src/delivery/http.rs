//! One HTTP attempt, as every outbound call makes it: the shared client's settings, a request
//! bounded in time and in how much of the answer is read, and the answer shortened and redacted
//! for the log.

use std::time::Duration;

use super::retry::{Attempt, RetryAfter, TransportKind};
use crate::config::{ConfigError, Env};

pub const DEFAULT_HTTP_CONNECT_TIMEOUT_MS: u64 = 2_000;
pub const DEFAULT_HTTP_TIMEOUT_MS: u64 = 10_000;

/// The router's and the feeder's request bounds (`HTTP_CONNECT_TIMEOUT_MS`, `HTTP_TIMEOUT_MS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpTimeouts {
    pub connect: Duration,
    /// The whole request, answer included.
    pub request: Duration,
}

impl HttpTimeouts {
    pub fn read<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        Ok(HttpTimeouts {
            connect: env.millis("HTTP_CONNECT_TIMEOUT_MS", DEFAULT_HTTP_CONNECT_TIMEOUT_MS)?,
            request: env.millis("HTTP_TIMEOUT_MS", DEFAULT_HTTP_TIMEOUT_MS)?,
        })
    }
}

/// The client every outbound caller builds once (its connection pool shared by all requests):
/// redirects are never followed (Standard Webhooks: a redirect is a failure).
pub fn client(connect_timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("clayhook/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// A received answer: status, `Retry-After`, and the body text (bounded).
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<RetryAfter>,
    pub body: String,
}

/// Longest part of a destination's answer kept for the log.
const DETAIL_CHARS: usize = 300;

/// Most of an answer's body ever read: enough for any error a destination explains itself with
/// (HubSpot's multi-status errors included), never a 128 MB router's memory.
pub const MAX_ANSWER_BYTES: usize = 8 * 1024;

/// Sends one request; transport failures come back as an [`Attempt`] already. Reads at most
/// [`MAX_ANSWER_BYTES`] of the answer and drops the rest with the connection.
pub async fn send(request: reqwest::RequestBuilder, timeout: Duration) -> Result<Answer, Attempt> {
    let mut response = request.timeout(timeout).send().await.map_err(transport)?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(RetryAfter::parse);
    let mut body = Vec::new();
    while body.len() < MAX_ANSWER_BYTES {
        match response.chunk().await.map_err(transport)? {
            Some(chunk) => {
                let room = MAX_ANSWER_BYTES - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            None => break,
        }
    }
    Ok(Answer {
        status,
        retry_after,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// At most `max` UTF-16 code units of `text`, cut between characters (never inside one). Vendors
/// count "characters" as characters or as UTF-16 units (Java, JavaScript); the second is never
/// fewer, so this fits both.
pub fn truncate_utf16(text: &str, max: usize) -> &str {
    let mut units = 0;
    for (at, c) in text.char_indices() {
        units += c.len_utf16();
        if units > max {
            return text.get(..at).unwrap_or_default();
        }
    }
    text
}

fn transport(e: reqwest::Error) -> Attempt {
    let kind = if e.is_timeout() {
        TransportKind::Timeout
    } else if e.is_connect() {
        TransportKind::Connect
    } else {
        TransportKind::Other
    };
    // The URL of a Slack or Zapier hook is its credential: never let it reach a log line.
    let e = e.without_url();
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    Attempt::Transport {
        kind,
        detail: redact(&detail),
    }
}

/// A non-success answer as an [`Attempt`], its body shortened and redacted for the log.
pub fn rejected(answer: Answer) -> Attempt {
    Attempt::Status {
        status: answer.status,
        retry_after: answer.retry_after,
        detail: redact(&answer.body),
    }
}

/// Shortens text for a log line and masks anything that looks like an email address.
pub fn redact(text: &str) -> String {
    let short: String = text.chars().take(DETAIL_CHARS).collect();
    short
        .split_inclusive(|c: char| c.is_whitespace() || "\"'<>,;:()[]{}".contains(c))
        .map(|word| {
            let trimmed =
                word.trim_end_matches(|c: char| c.is_whitespace() || "\"'<>,;:()[]{}".contains(c));
            if trimmed.contains('@') {
                format!("[email]{}", &word[trimmed.len()..])
            } else {
                word.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_counts_utf16_units_and_never_splits_a_character() {
        assert_eq!(truncate_utf16("héllo", 2), "hé");
        assert_eq!(truncate_utf16("héllo", 10), "héllo");
        assert_eq!(truncate_utf16("日本語", 1), "日");
        assert_eq!(truncate_utf16("a😀b", 2), "a", "an emoji is two units");
        assert_eq!(truncate_utf16("a😀b", 3), "a😀");
        assert_eq!(truncate_utf16("", 0), "");
    }

    /// A destination that answers with an endless body: the attempt reads a few KB and comes
    /// back with the status, instead of reading until the timeout (or the memory) runs out.
    #[tokio::test]
    async fn answers_are_read_only_up_to_a_bound() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let head = "HTTP/1.1 500 Internal Server Error\r\ntransfer-encoding: chunked\r\n\r\n";
            if socket.write_all(head.as_bytes()).await.is_err() {
                return 0usize;
            }
            let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "e".repeat(64 * 1024));
            let mut sent = 0;
            // Up to 256 MB, until the client hangs up.
            while sent < 4096 && socket.write_all(chunk.as_bytes()).await.is_ok() {
                sent += 1;
            }
            sent
        });
        let client = reqwest::Client::new();
        let started = std::time::Instant::now();
        let answer = send(
            client.post(format!("http://{addr}/")).body("{}"),
            Duration::from_secs(20),
        )
        .await
        .unwrap_or_else(|_| panic!("a status, not a transport failure"));
        assert_eq!(answer.status, 500);
        assert_eq!(answer.body.len(), MAX_ANSWER_BYTES);
        assert!(started.elapsed() < Duration::from_secs(10));
        let chunks_sent = server.await.unwrap();
        assert!(chunks_sent < 4096, "the client stopped reading");
    }

    #[test]
    fn redact_masks_emails_and_bounds_length() {
        let r = redact(r#"{"message":"Contact jane@acme.com already exists","id":"<bob@x.io>"}"#);
        assert!(
            !r.contains("jane@acme.com") && !r.contains("bob@x.io"),
            "{r}"
        );
        assert!(r.contains("already exists"));
        assert!(redact(&"x".repeat(10_000)).len() <= DETAIL_CHARS);
    }
}
