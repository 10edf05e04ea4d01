//! The pure path, without network: verify + parse + build the message for a 2 KB Clay body,
//! and one routing decision.

use clayhook::auth::{Secrets, hmac_hex, verify};
use clayhook::envelope::Envelope;
use clayhook::idempotency::{KeySpec, derive_key};
use clayhook::lead::Lead;
use clayhook::router::rules::{default_rules, route};
use criterion::{Criterion, black_box, criterion_group, criterion_main};
use lambda_http::http::{HeaderMap, HeaderValue};
use std::time::{Duration, UNIX_EPOCH};

fn body_2kb() -> Vec<u8> {
    let body = serde_json::json!({
        "Work Email": "Jane.Doe@Acme.com", "First Name": "Jane", "Last Name": "Doe",
        "Company Name": "Acme, Inc.", "Job Title": "VP Sales", "Employee Count": "1,200",
        "Industry": "['Software', 'SaaS']", "LinkedIn URL": "linkedin.com/in/jane-doe",
        "ICP Score": "92", "Domain": "https://www.acme.com/about", "Row ID": "row_0001",
        "Personalized Opener": "Loved your talk on pipeline hygiene at SaaStr.",
        "notes": "x".repeat(1650),
    });
    let text = body.to_string();
    assert!((1900..2300).contains(&text.len()), "{}", text.len());
    text.into_bytes()
}

fn pure(c: &mut Criterion) {
    let body = body_2kb();
    let secret = "tok_bench_0123456789";
    let secrets = Secrets::parse(secret).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let sig = format!("sha256={}", hmac_hex(secret.as_bytes(), &body));
    headers.insert("x-clay-signature", HeaderValue::from_str(&sig).unwrap());
    c.bench_function("ingest_pure_path_2kb", |b| {
        b.iter(|| {
            let scheme = verify(&headers, black_box(&body), &secrets, 1_800_000_000, 300).unwrap();
            let (lead, _) = Lead::parse(&body).unwrap();
            let key = derive_key(&KeySpec::Body, &headers, &body, &lead, None);
            let env = Envelope::new(
                key.id,
                UNIX_EPOCH + Duration::from_secs(1_800_000_000),
                None,
                lead,
            );
            black_box((scheme, env.to_json()))
        })
    });
    let rules = default_rules();
    let (lead, _) = Lead::parse(&body).unwrap();
    c.bench_function("routing_decision", |b| {
        b.iter(|| black_box(route(&rules, black_box(&lead), Some("webinar"))))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = pure
}
criterion_main!(benches);
