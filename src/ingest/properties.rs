//! Property tests over headers, bodies and lead fields: whatever arrives, ingest answers with
//! one of the spec's statuses, never a 5xx, never a panic, never echoing the secret.
//! `PROPTEST_CASES` scales them (`make stress` runs a million).

use super::tests::{MemoryQueue, MemoryStore, T0, TOKEN, ingest};
use super::*;
use crate::lead::Lead;
use lambda_http::http::{HeaderName, HeaderValue};
use proptest::prelude::*;
use serde_json::{Map, Value};
use std::time::UNIX_EPOCH;

const NAMES: [&str; 8] = [
    "content-type",
    "x-clay-signature",
    "authorization",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "idempotency-key",
    "x-other",
];

fn header_strategy() -> impl Strategy<Value = Vec<(usize, Vec<u8>)>> {
    let value = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..80),
        Just(b"application/json".to_vec()),
        Just(b"application/json; charset=utf-8".to_vec()),
        Just(format!("Bearer {TOKEN}").into_bytes()),
        Just(TOKEN.as_bytes().to_vec()),
        Just(b"sha256=".to_vec()),
        Just(b"v1,".to_vec()),
        "[0-9]{1,12}".prop_map(String::into_bytes),
        "v1,[A-Za-z0-9+/=]{0,60}".prop_map(String::into_bytes),
    ];
    proptest::collection::vec((0..NAMES.len(), value), 0..8)
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,30}".prop_map(Value::String),
        "[ 0-9,.%+kKmM-]{0,12}".prop_map(Value::String),
        Just(Value::String("['a@b.co', 'x']".into())),
        Just(Value::String("N/A".into())),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec(("[a-z _]{0,12}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Objects keyed by names Clay bodies use (any spelling), with any values.
fn lead_object() -> impl Strategy<Value = Map<String, Value>> {
    let key = prop_oneof![
        Just("email".to_string()),
        Just("Work Email".to_string()),
        Just("icp_score".to_string()),
        Just("Score".to_string()),
        Just("employee_count".to_string()),
        Just("domain".to_string()),
        Just("linkedin".to_string()),
        Just("First Name".to_string()),
        Just("company".to_string()),
        ".{0,16}",
    ];
    proptest::collection::vec((key, json_value()), 0..10).prop_map(|kv| kv.into_iter().collect())
}

fn body_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        lead_object().prop_map(|o| Value::Object(o).to_string().into_bytes()),
        json_value().prop_map(|v| v.to_string().into_bytes()),
    ]
}

fn path_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/api/clay/enriched".to_string()),
        "[A-Za-z0-9_-]{1,64}".prop_map(|s| format!("/api/clay/enriched/{s}")),
        ".{0,80}".prop_map(|s| format!("/api/clay/enriched/{s}")),
        ".{0,40}",
    ]
}

proptest! {
    #[test]
    fn ingest_answers_only_spec_statuses(
        headers in header_strategy(),
        body in body_strategy(),
        path in path_strategy(),
        post in proptest::bool::weighted(0.95),
    ) {
        let mut map = HeaderMap::new();
        for (i, v) in headers {
            if let Ok(value) = HeaderValue::from_bytes(&v) {
                map.append(HeaderName::from_static(NAMES[i]), value);
            }
        }
        // The unit tests' fixture refuses bodies over 64 bytes: with it nearly every body here
        // would be a 413 before anything else ran. The deployed limits instead.
        let mut i = ingest(MemoryStore::default(), MemoryQueue::default());
        i.settings.max_body_bytes = 1 << 20;
        i.settings.max_message_bytes = crate::ingest::config::DEFAULT_MAX_MESSAGE_BYTES;
        let method = if post { Method::POST } else { Method::GET };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let result = rt.block_on(i.handle(IngestRequest {
            method: &method,
            path: &path,
            headers: &map,
            body: &body,
            received_at: UNIX_EPOCH + Duration::from_secs(T0),
            remaining: Some(Duration::from_secs(3)),
            trace_header: None,
        }));
        let response = http::respond(&result);
        let status = response.status().as_u16();
        prop_assert!(
            [200, 202, 400, 401, 404, 405, 409, 413, 415, 422].contains(&status),
            "status {status}"
        );
        let text = std::str::from_utf8(response.body().as_ref()).unwrap().to_string();
        let parsed: Value = serde_json::from_str(&text).unwrap();
        prop_assert!(parsed.is_object());
        prop_assert!(!text.contains(TOKEN));
        if status == 202 {
            let sent = i.queue.sent.lock().unwrap();
            prop_assert_eq!(sent.len(), 1);
            // Whatever ingest accepts, the router reads back.
            let envelope = crate::envelope::Envelope::parse(&sent[0].body);
            prop_assert!(envelope.is_ok(), "{:?}", envelope.err());
            prop_assert_eq!(envelope.unwrap().to_json(), sent[0].body.clone());
        } else {
            prop_assert!(i.queue.sent.lock().unwrap().is_empty());
        }
    }

    #[test]
    fn lead_parsing_never_fails_on_an_object_and_round_trips(object in lead_object()) {
        let (lead, warnings) = Lead::from_object(object.clone());
        // Nothing is lost: every key is a known field or kept under extra.
        for key in object.keys() {
            let known = crate::lead::Field::from_key(key).is_some();
            prop_assert!(known || lead.extra.contains_key(key));
        }
        for w in &warnings {
            prop_assert!(lead.extra.contains_key(&w.key));
        }
        let text = serde_json::to_string(&lead).unwrap();
        let back: Lead = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(&back, &lead);
        // And through the queue message, as the router reads it.
        let id = crate::idempotency::sha256_hex(text.as_bytes());
        let envelope = crate::envelope::Envelope::new(id, UNIX_EPOCH, Some("t".into()), lead);
        let read_back = crate::envelope::Envelope::parse(&envelope.to_json());
        prop_assert!(read_back.is_ok(), "{:?}", read_back.err());
        prop_assert_eq!(read_back.unwrap(), envelope);
    }

    /// Bodies nested around the limit: accepted ones round-trip, deeper ones are refused.
    #[test]
    fn nesting_around_the_limit_is_refused_or_read_back(
        levels in (crate::envelope::MAX_BODY_DEPTH - 4)..=(crate::envelope::MAX_BODY_DEPTH + 4),
        array in any::<bool>(),
        leaf in leaf(),
    ) {
        let mut value = leaf;
        for _ in 1..levels {
            value = if array { Value::Array(vec![value]) } else { serde_json::json!({"k": value}) };
        }
        let body = serde_json::json!({"email": "a@b.co", "deep": value}).to_string();
        // The queue's real limit: the fixture's 1 KiB would refuse a deep body for its size
        // (escaping grows a leaf), which is not what this property is about.
        let mut i = ingest(MemoryStore::default(), MemoryQueue::default());
        i.settings.max_body_bytes = 1 << 20;
        i.settings.max_message_bytes = crate::ingest::config::DEFAULT_MAX_MESSAGE_BYTES;
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert("x-clay-signature", HeaderValue::from_static(TOKEN));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let result = rt.block_on(i.handle(IngestRequest {
            method: &Method::POST,
            path: "/api/clay/enriched",
            headers: &h,
            body: body.as_bytes(),
            received_at: UNIX_EPOCH + Duration::from_secs(T0),
            remaining: Some(Duration::from_secs(3)),
            trace_header: None,
        }));
        // `levels - 1` containers around a scalar, inside the body object.
        let body_depth = levels;
        if body_depth <= crate::envelope::MAX_BODY_DEPTH {
            prop_assert!(result.is_ok(), "{:?}", result.err());
            let sent = i.queue.sent.lock().unwrap();
            prop_assert!(crate::envelope::Envelope::parse(&sent[0].body).is_ok());
        } else {
            prop_assert!(matches!(result, Err(IngestError::TooDeep { .. })), "{:?}", result);
            prop_assert_eq!(http::error_code(result.as_ref().unwrap_err()), "too_deep");
        }
    }

    #[test]
    fn auth_never_panics_and_refuses_random_credentials(
        headers in header_strategy(),
        body in proptest::collection::vec(any::<u8>(), 0..200),
        now in any::<i64>(),
    ) {
        let mut map = HeaderMap::new();
        for (i, v) in headers {
            if let Ok(value) = HeaderValue::from_bytes(&v) {
                map.append(HeaderName::from_static(NAMES[i]), value);
            }
        }
        let secrets = crate::auth::Secrets::parse(TOKEN).unwrap();
        let presented_token = map.iter().any(|(k, v)| {
            (k == "x-clay-signature" && v.as_bytes() == TOKEN.as_bytes())
                || (k == "authorization" && v.as_bytes().ends_with(TOKEN.as_bytes()))
        });
        let result = crate::auth::verify(&map, &body, &secrets, now, 300);
        if !presented_token {
            prop_assert!(result.is_err());
        }
    }
}
