//! Time as the table stores it: epoch milliseconds (locks) and seconds (TTLs).

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the epoch; 0 for a time before it.
pub fn epoch_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
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
