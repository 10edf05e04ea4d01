//! Headers and body as ingest receives them: verification never panics.
#![no_main]

use lambda_http::http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 6] = [
    "x-clay-signature",
    "authorization",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
];

fuzz_target!(|data: &[u8]| {
    let Ok(secrets) = clayhook::auth::Secrets::parse("tok,whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")
    else {
        return;
    };
    // Layout: [n headers] then (name index, len, bytes)*, the rest is the body.
    let mut headers = HeaderMap::new();
    let mut rest = data;
    let count = rest.first().copied().unwrap_or(0) % 8;
    rest = rest.get(1..).unwrap_or_default();
    for _ in 0..count {
        let (Some(&idx), Some(&len)) = (rest.first(), rest.get(1)) else { break };
        let len = len as usize;
        let value = rest.get(2..2 + len).unwrap_or_default();
        rest = rest.get(2 + len..).unwrap_or_default();
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.append(HeaderName::from_static(NAMES[idx as usize % NAMES.len()]), v);
        }
    }
    let _ = clayhook::auth::verify(&headers, rest, &secrets, 1_649_367_553, 300);
});
