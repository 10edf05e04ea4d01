//! Time as the table stores it: epoch milliseconds (locks) and seconds (TTLs).

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the epoch; 0 for a time before it.
pub fn epoch_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Runs `call` until `until` at the latest: `None` when it had not finished by then (it is
/// dropped). Every AWS call after a send goes through this, so the invocation's answer is never
/// lost to a slow table or queue.
pub async fn by<T>(until: SystemTime, call: impl std::future::Future<Output = T>) -> Option<T> {
    let left = until.duration_since(SystemTime::now()).unwrap_or_default();
    tokio::time::timeout(left, call).await.ok()
}

/// Whether `text` is an http(s) URL, the one check every URL setting gets.
pub fn is_http_url(text: &str) -> bool {
    text.starts_with("https://") || text.starts_with("http://")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn epoch_milliseconds() {
        assert_eq!(epoch_ms(UNIX_EPOCH + Duration::from_millis(1_234)), 1_234);
        assert_eq!(epoch_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
        assert!(is_http_url("https://api.clay.com/x") && is_http_url("http://127.0.0.1:9"));
        assert!(!is_http_url("hooks.slack.com/x") && !is_http_url("ftp://x"));
    }
}
