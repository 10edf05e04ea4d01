//! Proof that a callback comes from the table owner: static token, HMAC over the raw body, or
//! Standard Webhooks. Pure: works on `&[u8]` and headers, knows nothing of Lambda or AWS.
//!
//! Every malformed credential is an ordinary [`AuthError`], never a panic, so the HTTP layer can
//! answer 401 for all of them with one body.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use lambda_http::http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Header carrying either the static token or an HMAC of the body.
pub const CLAY_SIGNATURE_HEADER: &str = "x-clay-signature";
/// Opt-in: Unix seconds, signed with the body (`HMAC(secret, "<timestamp>.<body>")`), so a
/// captured request stops working once it leaves the window.
pub const CLAY_TIMESTAMP_HEADER: &str = "x-clay-timestamp";
pub const WEBHOOK_ID_HEADER: &str = "webhook-id";
pub const WEBHOOK_TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const WEBHOOK_SIGNATURE_HEADER: &str = "webhook-signature";

/// Longest credential header we look at. Anything longer is rejected before any work is done.
pub const MAX_CREDENTIAL_HEADER_BYTES: usize = 4096;

/// Standard Webhooks' recommended replay window.
pub const DEFAULT_TOLERANCE_SECONDS: i64 = 300;

/// One configured secret. `Debug` never shows the value.
#[derive(Clone)]
pub struct Secret {
    /// The secret exactly as configured: the HMAC key.
    raw: Vec<u8>,
    /// SHA-256 of `raw`: static tokens are compared digest to digest, so the comparison takes
    /// the same time whatever the token's length.
    digest: [u8; 32],
    /// The Standard Webhooks key: base64-decoded `whsec_` payload, or the raw bytes otherwise.
    webhook_key: Vec<u8>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

/// Why the secret list could not be used. Messages never contain a secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretsError {
    #[error("CLAY_WEBHOOK_SECRETS is empty: refusing to start without a secret (fail closed)")]
    Empty,
    #[error("secret #{0} in CLAY_WEBHOOK_SECRETS starts with whsec_ but is not valid base64")]
    BadWebhookSecret(usize),
    #[error("secret #{0} in CLAY_WEBHOOK_SECRETS decodes to an empty key")]
    EmptyKey(usize),
    #[error(
        "secret #{0} in CLAY_WEBHOOK_SECRETS is shorter than {MIN_SECRET_BYTES} bytes: use a long random value (for example `openssl rand -hex 32`)"
    )]
    TooShort(usize),
}

/// The shortest secret (or decoded `whsec_` key) accepted: anything shorter is guessable.
pub const MIN_SECRET_BYTES: usize = 16;

const WHSEC: &[u8] = b"whsec_";

/// The rotation list: any one secret may match.
#[derive(Clone, Debug)]
pub struct Secrets(Vec<Secret>);

impl Secrets {
    /// Parses the comma-separated list. Blank entries are ignored; no secret at all is an error.
    pub fn parse(list: &str) -> Result<Self, SecretsError> {
        let mut secrets = Vec::new();
        for (n, entry) in list.split(',').map(str::trim).enumerate() {
            if entry.is_empty() {
                continue;
            }
            let webhook_key = match entry.strip_prefix("whsec_") {
                Some(b64) => B64
                    .decode(b64)
                    .map_err(|_| SecretsError::BadWebhookSecret(n + 1))?,
                None => entry.as_bytes().to_vec(),
            };
            if webhook_key.is_empty() {
                return Err(SecretsError::EmptyKey(n + 1));
            }
            if entry.len() < MIN_SECRET_BYTES || webhook_key.len() < MIN_SECRET_BYTES {
                return Err(SecretsError::TooShort(n + 1));
            }
            secrets.push(Secret {
                raw: entry.as_bytes().to_vec(),
                digest: Sha256::digest(entry.as_bytes()).into(),
                webhook_key,
            });
        }
        if secrets.is_empty() {
            return Err(SecretsError::Empty);
        }
        Ok(Secrets(secrets))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The first static token (an entry without `whsec_`), for tools that print a sample request.
    pub fn first_static_token(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|s| !s.raw.starts_with(WHSEC))
            .and_then(|s| std::str::from_utf8(&s.raw).ok())
    }

    /// The decoded key of the first `whsec_` entry, for tools that sign sample events.
    pub fn first_webhook_key(&self) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|s| s.raw.starts_with(WHSEC))
            .map(|s| s.webhook_key.as_slice())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The scheme that proved the request, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    StaticToken,
    Hmac,
    TimestampedHmac,
    StandardWebhooks,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::StaticToken => "static_token",
            Scheme::Hmac => "hmac",
            Scheme::TimestampedHmac => "timestamped_hmac",
            Scheme::StandardWebhooks => "standard_webhooks",
        }
    }
}

/// Why a request was refused. Only for logs: the client always gets the same 401.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("no credentials presented")]
    Missing,
    #[error("credential header is malformed")]
    Malformed,
    #[error("the request's timestamp is outside the allowed window")]
    StaleTimestamp,
    #[error("credentials do not match any configured secret")]
    Mismatch,
}

impl AuthError {
    /// A short stable label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed => "malformed",
            AuthError::StaleTimestamp => "stale_timestamp",
            AuthError::Mismatch => "mismatch",
        }
    }
}

/// Checks every credential the request presents; passes when any one holds.
///
/// `now` is the current Unix time in seconds (a parameter so tests can pin it).
pub fn verify(
    headers: &HeaderMap,
    body: &[u8],
    secrets: &Secrets,
    now: i64,
    tolerance_seconds: i64,
) -> Result<Scheme, AuthError> {
    // Keep the most informative failure: a malformed or stale credential says more than "missing".
    let mut failure = AuthError::Missing;
    let mut note = |e: AuthError| {
        if failure == AuthError::Missing || e == AuthError::StaleTimestamp {
            failure = e;
        }
    };

    if headers.contains_key(WEBHOOK_SIGNATURE_HEADER)
        || headers.contains_key(WEBHOOK_ID_HEADER)
        || headers.contains_key(WEBHOOK_TIMESTAMP_HEADER)
    {
        match verify_standard_webhooks(headers, body, secrets, now, tolerance_seconds) {
            Ok(()) => return Ok(Scheme::StandardWebhooks),
            Err(e) => note(e),
        }
    }
    if headers.contains_key(CLAY_TIMESTAMP_HEADER) {
        // A timestamped request is proved by its timestamped HMAC or not at all: dropping the
        // header from a captured one cannot turn it into a plain HMAC.
        return verify_timestamped_hmac(headers, body, secrets, now, tolerance_seconds)
            .map(|()| Scheme::TimestampedHmac);
    }
    for value in headers.get_all(CLAY_SIGNATURE_HEADER) {
        match header_text(value.as_bytes()).and_then(|v| verify_clay_signature(v, body, secrets)) {
            Ok(scheme) => return Ok(scheme),
            Err(e) => note(e),
        }
    }
    for value in headers.get_all(lambda_http::http::header::AUTHORIZATION) {
        match header_text(value.as_bytes()).and_then(|v| verify_bearer(v, secrets)) {
            Ok(()) => return Ok(Scheme::StaticToken),
            Err(e) => note(e),
        }
    }
    Err(failure)
}

/// A credential header as trimmed UTF-8 text, bounded in size.
fn header_text(bytes: &[u8]) -> Result<&str, AuthError> {
    if bytes.is_empty() || bytes.len() > MAX_CREDENTIAL_HEADER_BYTES {
        return Err(AuthError::Malformed);
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| AuthError::Malformed)?
        .trim();
    if text.is_empty() {
        return Err(AuthError::Malformed);
    }
    Ok(text)
}

fn matches_static(token: &[u8], secrets: &Secrets) -> bool {
    // Digests of equal length, folded over every secret without short-circuiting: timing reveals
    // neither which secret matched nor how long any of them is.
    let presented: [u8; 32] = Sha256::digest(token).into();
    secrets
        .0
        .iter()
        .fold(subtle::Choice::from(0), |acc, s| {
            acc | s.digest.ct_eq(&presented)
        })
        .into()
}

fn verify_bearer(value: &str, secrets: &Secrets) -> Result<(), AuthError> {
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Malformed);
    }
    if matches_static(token.as_bytes(), secrets) {
        Ok(())
    } else {
        Err(AuthError::Mismatch)
    }
}

/// `X-Clay-Signature`: `sha256=<hex>`, a bare 64-hex HMAC, or the static secret itself.
fn verify_clay_signature(value: &str, body: &[u8], secrets: &Secrets) -> Result<Scheme, AuthError> {
    if let Some(hex_sig) = value.strip_prefix("sha256=") {
        let sig = decode_hmac_hex(hex_sig)?;
        return if matches_hmac(&sig, &[body], secrets) {
            Ok(Scheme::Hmac)
        } else {
            Err(AuthError::Mismatch)
        };
    }
    // A bare 64-hex value may be an HMAC or a secret that happens to look like one: try both.
    if value.len() == 64
        && let Ok(sig) = decode_hmac_hex(value)
        && matches_hmac(&sig, &[body], secrets)
    {
        return Ok(Scheme::Hmac);
    }
    if matches_static(value.as_bytes(), secrets) {
        Ok(Scheme::StaticToken)
    } else {
        Err(AuthError::Mismatch)
    }
}

/// `X-Clay-Timestamp: <unix seconds>` with `X-Clay-Signature: sha256=<hex>` of
/// `"<timestamp>.<body>"`, within the tolerance both ways. The key is the plain HMAC's: a
/// timestamped signature is also a plain HMAC of the text `"<timestamp>.<body>"`, which is never
/// a JSON object, so it could only ever pass authentication to be refused as invalid JSON.
fn verify_timestamped_hmac(
    headers: &HeaderMap,
    body: &[u8],
    secrets: &Secrets,
    now: i64,
    tolerance_seconds: i64,
) -> Result<(), AuthError> {
    let one = |name: &str| -> Result<&str, AuthError> {
        let mut values = headers.get_all(name).iter();
        match (values.next(), values.next()) {
            (Some(v), None) => header_text(v.as_bytes()),
            (None, _) => Err(AuthError::Malformed),
            (Some(_), Some(_)) => Err(AuthError::Malformed),
        }
    };
    let timestamp = parse_timestamp(one(CLAY_TIMESTAMP_HEADER)?)?;
    if (now - timestamp).abs() > tolerance_seconds {
        return Err(AuthError::StaleTimestamp);
    }
    let hex_sig = one(CLAY_SIGNATURE_HEADER)?
        .strip_prefix("sha256=")
        .ok_or(AuthError::Malformed)?;
    let sig = decode_hmac_hex(hex_sig)?;
    let text = timestamp.to_string();
    if matches_hmac(&sig, &[text.as_bytes(), b".", body], secrets) {
        Ok(())
    } else {
        Err(AuthError::Mismatch)
    }
}

/// Unix seconds as plain digits: "1674087231abc", "+1", " 1" and floats are all refused.
fn parse_timestamp(text: &str) -> Result<i64, AuthError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuthError::Malformed);
    }
    text.parse().map_err(|_| AuthError::Malformed)
}

/// The `sha256=<hex>` value a timestamped request carries in `X-Clay-Signature` (for senders,
/// tests and tools).
pub fn timestamped_hmac_hex(key: &[u8], timestamp: i64, body: &[u8]) -> String {
    let text = timestamp.to_string();
    format!(
        "sha256={}",
        hex::encode(mac_of(key, &[text.as_bytes(), b".", body]))
    )
}

fn decode_hmac_hex(hex_sig: &str) -> Result<Vec<u8>, AuthError> {
    if hex_sig.len() != 64 {
        return Err(AuthError::Malformed);
    }
    hex::decode(hex_sig).map_err(|_| AuthError::Malformed)
}

/// HMAC-SHA256 under `key` of `parts` one after the other: every scheme's MAC. HMAC takes keys
/// of any length, so the empty result for a refused key never happens in practice.
fn mac_of(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    match HmacSha256::new_from_slice(key) {
        Ok(mut mac) => {
            for part in parts {
                mac.update(part);
            }
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// Whether `sig` is the MAC of `parts` under any secret's raw bytes; every secret is tried, in
/// constant time, so timing does not reveal which one matched.
fn matches_hmac(sig: &[u8], parts: &[&[u8]], secrets: &Secrets) -> bool {
    secrets
        .0
        .iter()
        .fold(subtle::Choice::from(0), |acc, s| {
            acc | mac_of(&s.raw, parts).as_slice().ct_eq(sig)
        })
        .into()
}

/// HMAC-SHA256 of `body` under `key`, as lowercase hex (for senders, tests and tools).
pub fn hmac_hex(key: &[u8], body: &[u8]) -> String {
    hex::encode(mac_of(key, &[body]))
}

/// The `v1,<base64>` Standard Webhooks signature of one message (for senders, tests and tools).
pub fn standard_webhooks_signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    format!(
        "v1,{}",
        B64.encode(standard_webhooks_mac(key, id, timestamp, body))
    )
}

fn standard_webhooks_mac(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let text = timestamp.to_string();
    mac_of(key, &[id.as_bytes(), b".", text.as_bytes(), b".", body])
}

fn verify_standard_webhooks(
    headers: &HeaderMap,
    body: &[u8],
    secrets: &Secrets,
    now: i64,
    tolerance_seconds: i64,
) -> Result<(), AuthError> {
    let one = |name: &str| -> Result<&str, AuthError> {
        let value = headers.get(name).ok_or(AuthError::Malformed)?;
        header_text(value.as_bytes())
    };
    let id = one(WEBHOOK_ID_HEADER)?;
    let timestamp_text = one(WEBHOOK_TIMESTAMP_HEADER)?;
    let signatures = one(WEBHOOK_SIGNATURE_HEADER)?;
    let timestamp = parse_timestamp(timestamp_text)?;
    if (now - timestamp).abs() > tolerance_seconds {
        return Err(AuthError::StaleTimestamp);
    }
    let expected: Vec<Vec<u8>> = secrets
        .0
        .iter()
        .map(|s| standard_webhooks_mac(&s.webhook_key, id, timestamp, body))
        .collect();
    let mut ok = subtle::Choice::from(0);
    let mut any_v1 = false;
    for entry in signatures.split(' ').filter(|e| !e.is_empty()) {
        let Some((version, b64)) = entry.split_once(',') else {
            continue;
        };
        if version != "v1" {
            continue;
        }
        any_v1 = true;
        let Ok(candidate) = B64.decode(b64) else {
            continue;
        };
        // ct_eq is false for slices of different length, so a truncated "v1," can never pass.
        for e in &expected {
            ok |= e.as_slice().ct_eq(candidate.as_slice());
        }
    }
    if bool::from(ok) {
        Ok(())
    } else if any_v1 {
        Err(AuthError::Mismatch)
    } else {
        Err(AuthError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::http::HeaderValue;

    const VECTOR_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const VECTOR_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const VECTOR_TS: i64 = 1649367553;
    const VECTOR_BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
    const VECTOR_SIG: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";
    const TOKEN: &str = "s3cr3t-token-for-tests";

    fn secrets() -> Secrets {
        Secrets::parse(&format!("old-token-0f1e2d3c, {TOKEN},{VECTOR_SECRET}")).unwrap()
    }

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                lambda_http::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
    }

    fn sw(id: &str, ts: &str, sig: &str) -> HeaderMap {
        headers(&[
            ("webhook-id", id.as_bytes()),
            ("webhook-timestamp", ts.as_bytes()),
            ("webhook-signature", sig.as_bytes()),
        ])
    }

    fn check(h: &HeaderMap, body: &[u8]) -> Result<Scheme, AuthError> {
        verify(h, body, &secrets(), VECTOR_TS, DEFAULT_TOLERANCE_SECONDS)
    }

    #[test]
    fn standard_webhooks_reference_vector_signs_and_verifies() {
        let key = B64.decode("C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        assert_eq!(
            standard_webhooks_signature(&key, VECTOR_ID, VECTOR_TS, VECTOR_BODY),
            VECTOR_SIG
        );
        let h = sw(VECTOR_ID, &VECTOR_TS.to_string(), VECTOR_SIG);
        assert_eq!(check(&h, VECTOR_BODY), Ok(Scheme::StandardWebhooks));
    }

    #[test]
    fn standard_webhooks_accepts_any_entry_of_a_rotation_list() {
        let sig = format!("v1,AAAA v1a,zzzz {VECTOR_SIG}");
        let h = sw(VECTOR_ID, &VECTOR_TS.to_string(), &sig);
        assert_eq!(check(&h, VECTOR_BODY), Ok(Scheme::StandardWebhooks));
    }

    #[test]
    fn standard_webhooks_rejects_truncated_and_prefix_signatures() {
        for sig in ["v1,", "v1", &VECTOR_SIG[..11], "v1,tZ1I4/hD", ""] {
            let h = sw(VECTOR_ID, &VECTOR_TS.to_string(), sig);
            assert!(check(&h, VECTOR_BODY).is_err(), "{sig:?} must fail");
        }
    }

    #[test]
    fn standard_webhooks_rejects_over_long_signature() {
        let sig = format!("{VECTOR_SIG}AAAA");
        let h = sw(VECTOR_ID, &VECTOR_TS.to_string(), &sig);
        assert_eq!(check(&h, VECTOR_BODY), Err(AuthError::Mismatch));
    }

    #[test]
    fn standard_webhooks_rejects_changed_body_id_or_timestamp() {
        let h = sw(VECTOR_ID, &VECTOR_TS.to_string(), VECTOR_SIG);
        assert_eq!(check(&h, b"{\"email\":\"x\"}"), Err(AuthError::Mismatch));
        let h = sw("msg_other", &VECTOR_TS.to_string(), VECTOR_SIG);
        assert_eq!(check(&h, VECTOR_BODY), Err(AuthError::Mismatch));
        let h = sw(VECTOR_ID, &(VECTOR_TS + 1).to_string(), VECTOR_SIG);
        assert_eq!(check(&h, VECTOR_BODY), Err(AuthError::Mismatch));
    }

    #[test]
    fn standard_webhooks_timestamp_window_is_both_ways() {
        let key = B64.decode("C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        for (offset, ok) in [
            (-301, false),
            (-300, true),
            (0, true),
            (300, true),
            (301, false),
        ] {
            let ts = VECTOR_TS + offset;
            let sig = standard_webhooks_signature(&key, VECTOR_ID, ts, VECTOR_BODY);
            let h = sw(VECTOR_ID, &ts.to_string(), &sig);
            let got = check(&h, VECTOR_BODY);
            if ok {
                assert_eq!(got, Ok(Scheme::StandardWebhooks), "offset {offset}");
            } else {
                assert_eq!(got, Err(AuthError::StaleTimestamp), "offset {offset}");
            }
        }
    }

    fn timestamped(ts: &str, sig: &str) -> HeaderMap {
        headers(&[
            ("x-clay-timestamp", ts.as_bytes()),
            ("x-clay-signature", sig.as_bytes()),
        ])
    }

    #[test]
    fn timestamped_hmac_holds_only_inside_the_window() {
        for (offset, want) in [
            (-301, Err(AuthError::StaleTimestamp)),
            (-300, Ok(Scheme::TimestampedHmac)),
            (0, Ok(Scheme::TimestampedHmac)),
            (300, Ok(Scheme::TimestampedHmac)),
            (301, Err(AuthError::StaleTimestamp)),
        ] {
            let ts = VECTOR_TS + offset;
            let sig = timestamped_hmac_hex(TOKEN.as_bytes(), ts, VECTOR_BODY);
            assert_eq!(
                check(&timestamped(&ts.to_string(), &sig), VECTOR_BODY),
                want,
                "offset {offset}"
            );
        }
    }

    #[test]
    fn timestamped_hmac_signs_the_timestamp_and_cannot_be_downgraded() {
        let ts = VECTOR_TS.to_string();
        let sig = timestamped_hmac_hex(TOKEN.as_bytes(), VECTOR_TS, VECTOR_BODY);
        // Another timestamp, another body: refused.
        let moved = timestamped(&(VECTOR_TS + 1).to_string(), &sig);
        assert_eq!(check(&moved, VECTOR_BODY), Err(AuthError::Mismatch));
        assert_eq!(
            check(&timestamped(&ts, &sig), b"{}"),
            Err(AuthError::Mismatch)
        );
        // The same signature without its timestamp is not an HMAC of the body.
        let stripped = headers(&[("x-clay-signature", sig.as_bytes())]);
        assert_eq!(check(&stripped, VECTOR_BODY), Err(AuthError::Mismatch));
        // With a timestamp, a static token or a plain body HMAC does not pass.
        let plain = format!("sha256={}", hmac_hex(TOKEN.as_bytes(), VECTOR_BODY));
        for value in [TOKEN, plain.as_str()] {
            assert!(
                check(&timestamped(&ts, value), VECTOR_BODY).is_err(),
                "{value}"
            );
        }
        // Malformed timestamps and doubled headers.
        for bad in ["", "12a", "+1649367553", "1649367553.0"] {
            assert_eq!(
                check(&timestamped(bad, &sig), VECTOR_BODY),
                Err(AuthError::Malformed),
                "{bad:?}"
            );
        }
        let mut doubled = timestamped(&ts, &sig);
        doubled.append("x-clay-timestamp", HeaderValue::from_static("1"));
        assert_eq!(check(&doubled, VECTOR_BODY), Err(AuthError::Malformed));
    }

    #[test]
    fn static_tokens_are_compared_as_digests_of_one_length() {
        let s = secrets();
        assert!(
            s.0.iter()
                .all(|x| x.digest == <[u8; 32]>::from(Sha256::digest(&x.raw)))
        );
        // Prefixes, extensions and other lengths all fail the same way.
        for t in [
            "s3cr3t",
            "s3cr3t-token-for-tests-and-more",
            "x",
            &"a".repeat(4000),
        ] {
            assert!(!matches_static(t.as_bytes(), &s), "{t}");
        }
        assert!(matches_static(TOKEN.as_bytes(), &s));
    }

    #[test]
    fn standard_webhooks_timestamp_must_be_plain_digits() {
        for ts in [
            "1649367553abc",
            "+1649367553",
            "1649367553.0",
            "-1",
            "",
            "99999999999999999999999",
        ] {
            let h = sw(VECTOR_ID, ts, VECTOR_SIG);
            assert!(check(&h, VECTOR_BODY).is_err(), "{ts:?} must fail");
        }
    }

    #[test]
    fn standard_webhooks_needs_all_three_headers() {
        let h = headers(&[
            ("webhook-id", VECTOR_ID.as_bytes()),
            ("webhook-signature", VECTOR_SIG.as_bytes()),
        ]);
        assert_eq!(check(&h, VECTOR_BODY), Err(AuthError::Malformed));
    }

    #[test]
    fn static_token_in_either_header_and_rotation() {
        for token in [TOKEN, "old-token-0f1e2d3c"] {
            let h = headers(&[("x-clay-signature", token.as_bytes())]);
            assert_eq!(check(&h, b"{}"), Ok(Scheme::StaticToken));
            let bearer = format!("Bearer {token}");
            let h = headers(&[("authorization", bearer.as_bytes())]);
            assert_eq!(check(&h, b"{}"), Ok(Scheme::StaticToken));
        }
        let h = headers(&[("authorization", format!("bearer  {TOKEN} ").as_bytes())]);
        assert_eq!(check(&h, b"{}"), Ok(Scheme::StaticToken));
    }

    #[test]
    fn static_token_rejects_near_misses() {
        let near = [
            &TOKEN[..TOKEN.len() - 1],
            "s3cr3t-token-for-testsX",
            "S3CR3T-TOKEN-FOR-TESTS",
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7o",
        ];
        for token in near {
            let h = headers(&[("x-clay-signature", token.as_bytes())]);
            assert_eq!(check(&h, b"{}"), Err(AuthError::Mismatch), "{token}");
        }
        let h = headers(&[("authorization", format!("Basic {TOKEN}").as_bytes())]);
        assert_eq!(check(&h, b"{}"), Err(AuthError::Malformed));
        let h = headers(&[("authorization", b"Bearer".as_slice())]);
        assert_eq!(check(&h, b"{}"), Err(AuthError::Malformed));
        let h = headers(&[("authorization", b"Bearer    ".as_slice())]);
        assert!(check(&h, b"{}").is_err());
    }

    #[test]
    fn hmac_prefixed_and_bare() {
        let body = "{\"email\":\"jane@acme.com\",\"note\":\"naïve ✓\"}".as_bytes();
        let sig = hmac_hex(TOKEN.as_bytes(), body);
        let h = headers(&[("x-clay-signature", format!("sha256={sig}").as_bytes())]);
        assert_eq!(check(&h, body), Ok(Scheme::Hmac));
        let h = headers(&[("x-clay-signature", sig.as_bytes())]);
        assert_eq!(check(&h, body), Ok(Scheme::Hmac));
        let upper = sig.to_uppercase();
        let h = headers(&[("x-clay-signature", format!("sha256={upper}").as_bytes())]);
        assert_eq!(
            check(&h, body),
            Ok(Scheme::Hmac),
            "hex case does not matter"
        );
        // The body is signed as bytes: one changed byte fails.
        let mut other = body.to_vec();
        other[3] ^= 1;
        let h = headers(&[("x-clay-signature", format!("sha256={sig}").as_bytes())]);
        assert_eq!(check(&h, &other), Err(AuthError::Mismatch));
    }

    #[test]
    fn hmac_malformed_hex_is_an_error_not_a_panic() {
        let sig = hmac_hex(TOKEN.as_bytes(), b"{}");
        let cases = [
            "sha256=".to_string(),
            format!("sha256={}", &sig[..63]),
            format!("sha256={}", &sig[..62]),
            format!("sha256={sig}00"),
            format!("sha256={}zz", &sig[..62]),
            // A multibyte char keeps the char count at 64 but not the byte count.
            format!("sha256={}é", &sig[..63]),
            format!("sha256={}é", &sig[..62]),
        ];
        for c in cases {
            let h = headers(&[("x-clay-signature", c.as_bytes())]);
            assert_eq!(check(&h, b"{}"), Err(AuthError::Malformed), "{c:?}");
        }
    }

    #[test]
    fn empty_non_utf8_and_huge_headers_are_malformed() {
        let huge = vec![b'a'; MAX_CREDENTIAL_HEADER_BYTES + 1];
        let cases: [&[u8]; 4] = [b"", b"   ", &[0xff, 0xfe, 0x80], &huge];
        for value in cases {
            let h = headers(&[("x-clay-signature", value)]);
            assert_eq!(check(&h, b"{}"), Err(AuthError::Malformed));
            let h = headers(&[("authorization", value)]);
            assert_eq!(check(&h, b"{}"), Err(AuthError::Malformed));
            let h = headers(&[
                ("webhook-id", value),
                ("webhook-timestamp", b"1649367553"),
                ("webhook-signature", VECTOR_SIG.as_bytes()),
            ]);
            assert_eq!(check(&h, b"{}"), Err(AuthError::Malformed));
        }
    }

    #[test]
    fn no_credentials_is_missing() {
        assert_eq!(check(&HeaderMap::new(), b"{}"), Err(AuthError::Missing));
    }

    #[test]
    fn any_valid_credential_among_several_passes() {
        let h = headers(&[
            ("x-clay-signature", b"wrong".as_slice()),
            ("authorization", format!("Bearer {TOKEN}").as_bytes()),
        ]);
        assert_eq!(check(&h, b"{}"), Ok(Scheme::StaticToken));
    }

    #[test]
    fn secret_list_fails_closed_and_never_prints_secrets() {
        assert_eq!(Secrets::parse("").unwrap_err(), SecretsError::Empty);
        assert_eq!(Secrets::parse(" , ,").unwrap_err(), SecretsError::Empty);
        assert_eq!(
            Secrets::parse("long-enough-token-1,whsec_").unwrap_err(),
            SecretsError::EmptyKey(2)
        );
        // Guessable secrets are refused at start, named by position only.
        let short = Secrets::parse("long-enough-token-1,tok").unwrap_err();
        assert_eq!(short, SecretsError::TooShort(2));
        assert!(!short.to_string().contains("tok,") && short.to_string().contains("#2"));
        assert_eq!(
            Secrets::parse("whsec_dG9vLXNob3J0").unwrap_err(),
            SecretsError::TooShort(1),
            "a whsec_ key that decodes to 9 bytes"
        );
        assert!(Secrets::parse("exactly-16-bytes").is_ok());
        assert_eq!(
            Secrets::parse("whsec_!!notbase64").unwrap_err(),
            SecretsError::BadWebhookSecret(1)
        );
        let s = secrets();
        assert_eq!(s.len(), 3);
        let shown = format!("{s:?}");
        assert!(
            !shown.contains(TOKEN) && !shown.contains("C2FVs"),
            "{shown}"
        );
    }
}
