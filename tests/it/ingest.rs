//! The ingest handler against a real moto_server: every row of the spec's response table.

use crate::support::{Aws, dead_endpoint, sdk_config};
use aws_sdk_dynamodb::types::AttributeValue;
use clayhook::auth::{Secrets, hmac_hex, standard_webhooks_signature};
use clayhook::idempotency::KeySpec;
use clayhook::idempotency::dynamodb::DynamoDbIdempotencyStore;
use clayhook::ingest::lambda::handle_request;
use clayhook::ingest::{Ingest, IngestSettings};
use clayhook::queue::sqs::SqsLeadQueue;
use lambda_http::http::{HeaderMap, Method};
use lambda_http::{Body, Request};
use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const TOKEN: &str = "tok_live_5a1d9c0e7f";
const WHSEC: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const BODY: &str =
    r#"{"Work Email":"Jane@Acme.com","First Name":"Jane","icp_score":"85","Row ID":"r1"}"#;

type Handler = Ingest<DynamoDbIdempotencyStore, SqsLeadQueue>;

fn settings(key_spec: KeySpec) -> IngestSettings {
    IngestSettings {
        secrets: Secrets::parse(&format!("{TOKEN},{WHSEC}")).unwrap(),
        key_spec,
        ttl_seconds: 86_400,
        max_body_bytes: 262_144,
        max_message_bytes: 262_144,
        tolerance_seconds: 300,
        default_in_progress: Duration::from_secs(30),
    }
}

fn ingest(aws: &Aws, key_spec: KeySpec) -> Handler {
    Ingest {
        settings: settings(key_spec),
        store: DynamoDbIdempotencyStore::new(aws.ddb.clone(), &aws.table),
        queue: SqsLeadQueue::new(aws.sqs.clone(), &aws.queue_url),
    }
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    json: Value,
}

fn request(path: &str, headers: &[(&str, &str)], body: &[u8]) -> Request {
    let mut b = lambda_http::http::Request::builder()
        .method(Method::POST)
        .uri(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Body::Binary(body.to_vec())).unwrap()
}

async fn send(h: &Handler, req: Request) -> Answer {
    let resp = handle_request(h, req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    assert_eq!(headers["content-type"], "application/json");
    let json = serde_json::from_slice(resp.body().as_ref()).expect("JSON body");
    Answer {
        status,
        headers,
        json,
    }
}

async fn post(h: &Handler, headers: &[(&str, &str)], body: &str) -> Answer {
    send(h, request("/api/clay/enriched", headers, body.as_bytes())).await
}

fn token_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("content-type", "application/json"),
        ("x-clay-signature", TOKEN),
    ]
}

fn s(item: &std::collections::HashMap<String, AttributeValue>, k: &str) -> Option<String> {
    item.get(k).and_then(|v| v.as_s().ok()).cloned()
}

fn n(item: &std::collections::HashMap<String, AttributeValue>, k: &str) -> Option<i64> {
    item.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn assert_nothing_written(aws: &Aws) {
    assert!(aws.items().await.is_empty(), "no idempotency item");
    assert!(
        aws.drain(0, Duration::ZERO).await.is_empty(),
        "nothing queued"
    );
}

#[tokio::test]
async fn new_lead_is_accepted_then_a_repeat_is_a_duplicate_with_the_first_message_id() {
    let aws = Aws::fresh().await;
    let h = ingest(&aws, KeySpec::Body);
    let first = post(&h, &token_headers(), BODY).await;
    assert_eq!(first.status, 202, "{}", first.json);
    assert_eq!(first.json["status"], "accepted");
    let id = first.json["id"].as_str().unwrap().to_string();
    assert_eq!(id, clayhook::idempotency::sha256_hex(BODY.as_bytes()));
    let message_id = first.json["message_id"].as_str().unwrap().to_string();

    let again = post(&h, &token_headers(), BODY).await;
    assert_eq!(again.status, 200);
    assert_eq!(
        again.json,
        json!({"status":"duplicate","id":id,"message_id":message_id})
    );

    let messages = aws.drain(1, Duration::from_secs(2)).await;
    assert_eq!(messages.len(), 1, "exactly one message");
    assert_eq!(messages[0].message_id.as_deref(), Some(message_id.as_str()));

    let items = aws.items().await;
    assert_eq!(items.len(), 1);
    let item = &items[0];
    assert_eq!(s(item, "pk").unwrap(), clayhook::table::ingest_key(&id));
    assert_eq!(s(item, "status").as_deref(), Some("COMPLETED"));
    assert_eq!(s(item, "message_id").as_deref(), Some(message_id.as_str()));
    let exp = n(item, "expires_at").unwrap();
    assert!(
        (exp - (now_s() + 86_400)).abs() < 30,
        "expires_at ≈ now + TTL"
    );
    assert_eq!(s(item, "body_hash"), None, "body keys need no body hash");
}

#[tokio::test]
async fn the_sqs_message_is_the_spec_envelope() {
    let aws = Aws::fresh().await;
    let h = ingest(&aws, KeySpec::Body);
    let a = send(
        &h,
        request(
            "/api/clay/enriched/q3-webinar_list",
            &token_headers(),
            BODY.as_bytes(),
        ),
    )
    .await;
    assert_eq!(a.status, 202);
    let messages = aws.drain(1, Duration::from_secs(2)).await;
    assert_eq!(messages.len(), 1);
    let body: Value = serde_json::from_str(messages[0].body().unwrap()).unwrap();
    let received_at = body["received_at"].as_str().unwrap();
    let t =
        time::OffsetDateTime::parse(received_at, &time::format_description::well_known::Rfc3339)
            .expect("RFC 3339");
    assert!((t.unix_timestamp() - now_s()).abs() < 30);
    assert_eq!(
        body,
        json!({
            "version": 1,
            "id": a.json["id"],
            "received_at": received_at,
            "source": "q3-webinar_list",
            "lead": {
                "email": "jane@acme.com",
                "first_name": "Jane",
                "icp_score": 85,
                "extra": {"Row ID": "r1"}
            }
        })
    );
}

#[tokio::test]
async fn fifo_queue_gets_group_and_deduplication_id() {
    let aws = Aws::fresh_with(true).await;
    let h = ingest(&aws, KeySpec::Body);
    let a = send(
        &h,
        request(
            "/api/clay/enriched/tableA",
            &token_headers(),
            BODY.as_bytes(),
        ),
    )
    .await;
    assert_eq!(a.status, 202, "{}", a.json);
    let messages = aws.drain(1, Duration::from_secs(2)).await;
    assert_eq!(messages.len(), 1);
    let attrs = messages[0].attributes.clone().unwrap_or_default();
    use aws_sdk_sqs::types::MessageSystemAttributeName as A;
    assert_eq!(
        attrs.get(&A::MessageGroupId).map(String::as_str),
        Some("tableA")
    );
    assert_eq!(
        attrs.get(&A::MessageDeduplicationId),
        a.json["id"].as_str().map(str::to_string).as_ref()
    );
}

#[tokio::test]
async fn fifty_concurrent_identical_requests_give_one_202_and_one_message() {
    let aws = Aws::fresh().await;
    let h = ingest(&aws, KeySpec::Body);
    let answers = {
        let headers = token_headers();
        futures::future::join_all((0..50).map(|_| post(&h, &headers, BODY))).await
    };
    let accepted = answers.iter().filter(|a| a.status == 202).count();
    assert_eq!(accepted, 1, "exactly one 202");
    for a in &answers {
        assert!(
            matches!(a.status, 200 | 202 | 409),
            "only 202, 200 or 409: {} {}",
            a.status,
            a.json
        );
        if a.status == 409 {
            assert_eq!(a.headers["retry-after"], "1");
            assert_eq!(a.json["error"]["code"], "in_progress");
        }
    }
    let messages = aws.drain(1, Duration::from_secs(2)).await;
    assert_eq!(messages.len(), 1, "exactly one SQS message");
}

async fn put_record(
    aws: &Aws,
    id: &str,
    status: &str,
    expires_at: i64,
    ip_exp: Option<i64>,
    body_hash: Option<&str>,
) {
    let mut req = aws
        .ddb
        .put_item()
        .table_name(&aws.table)
        .item("pk", AttributeValue::S(clayhook::table::ingest_key(id)))
        .item("status", AttributeValue::S(status.into()))
        .item("expires_at", AttributeValue::N(expires_at.to_string()))
        .item("message_id", AttributeValue::S("old-message".into()));
    if let Some(t) = ip_exp {
        req = req.item("in_progress_expires_at", AttributeValue::N(t.to_string()));
    }
    if let Some(hh) = body_hash {
        req = req.item("body_hash", AttributeValue::S(hh.into()));
    }
    req.send().await.unwrap();
}

#[tokio::test]
async fn in_progress_request_gets_409_with_retry_after() {
    let aws = Aws::fresh().await;
    let h = ingest(&aws, KeySpec::Body);
    let id = clayhook::idempotency::sha256_hex(BODY.as_bytes());
    let future_ms = (now_s() + 60) * 1000;
    put_record(
        &aws,
        &id,
        "IN_PROGRESS",
        now_s() + 3600,
        Some(future_ms),
        None,
    )
    .await;
    let a = post(&h, &token_headers(), BODY).await;
    assert_eq!(a.status, 409);
    assert_eq!(a.headers["retry-after"], "1");
    assert_eq!(a.json["error"]["code"], "in_progress");
    assert!(aws.drain(0, Duration::ZERO).await.is_empty());
}

#[tokio::test]
async fn stale_in_progress_left_by_a_crash_is_taken_over() {
    let aws = Aws::fresh().await;
    let h = ingest(&aws, KeySpec::Body);
    let id = clayhook::idempotency::sha256_hex(BODY.as_bytes());
    let past_ms = (now_s() - 5) * 1000;
    put_record(
        &aws,
        &id,
        "IN_PROGRESS",
        now_s() + 3600,
        Some(past_ms),
        None,
    )
    .await;
    let a = post(&h, &token_headers(), BODY).await;
    assert_eq!(a.status, 202, "{}", a.json);
    assert_eq!(aws.drain(1, Duration::from_secs(2)).await.len(), 1);
    let items = aws.items().await;
    assert_eq!(s(&items[0], "status").as_deref(), Some("COMPLETED"));
    assert_eq!(
        s(&items[0], "message_id"),
        a.json["message_id"].as_str().map(str::to_string)
    );
}

#[tokio::test]
async fn expired_completed_record_counts_as_new() {
    let aws = Aws::fresh().await;
    let h = ingest(&aws, KeySpec::Body);
    let id = clayhook::idempotency::sha256_hex(BODY.as_bytes());
    put_record(&aws, &id, "COMPLETED", now_s() - 10, None, None).await;
    let a = post(&h, &token_headers(), BODY).await;
    assert_eq!(a.status, 202, "{}", a.json);
    assert_ne!(a.json["message_id"], "old-message");
}

#[tokio::test]
async fn body_over_the_limit_is_413_before_anything_else() {
    let aws = Aws::fresh().await;
    let mut h = ingest(&aws, KeySpec::Body);
    h.settings.max_body_bytes = 1024;
    let big = format!(r#"{{"email":"a@b.co","pad":"{}"}}"#, "x".repeat(2000));
    // Even without credentials or a content type: size is checked first.
    let a = post(&h, &[], &big).await;
    assert_eq!(a.status, 413);
    assert_eq!(a.json["error"]["code"], "payload_too_large");
    let exact = format!(r#"{{"p":"{}"}}"#, "x".repeat(1024 - 8));
    assert_eq!(exact.len(), 1024);
    assert_eq!(post(&h, &token_headers(), &exact).await.status, 202);
    let one_more = format!(r#"{{"p":"{}"}}"#, "x".repeat(1024 - 7));
    assert_eq!(post(&h, &token_headers(), &one_more).await.status, 413);
}

#[tokio::test]
async fn non_json_content_types_are_415_and_json_variants_pass() {
    let aws = Aws::fresh().await;
    let h = ingest(&aws, KeySpec::Body);
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "json",
        "application/jsonx",
        "",
    ] {
        let a = post(
            &h,
            &[("content-type", ct), ("x-clay-signature", TOKEN)],
            BODY,
        )
        .await;
        assert_eq!(a.status, 415, "{ct}");
        assert_eq!(a.json["error"]["code"], "unsupported_media_type");
    }
    let a = post(&h, &[("x-clay-signature", TOKEN)], BODY).await;
    assert_eq!(a.status, 415, "missing content type");
    assert_nothing_written(&aws).await;
    for (i, ct) in [
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/vnd.clay+json",
    ]
    .iter()
    .enumerate()
    {
        let body = format!(r#"{{"n":{i}}}"#);
        let a = post(
            &h,
            &[("content-type", ct), ("x-clay-signature", TOKEN)],
            &body,
        )
        .await;
        assert_eq!(a.status, 202, "{ct}");
    }
}

#[tokio::test]
async fn every_wrong_credential_gets_the_same_401_and_writes_nothing() {
    let aws = Aws::fresh().await;
    let h = ingest(&aws, KeySpec::Body);
    let ct = ("content-type", "application/json");
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![ct],
        vec![ct, ("x-clay-signature", "wrong")],
        vec![ct, ("x-clay-signature", "")],
        vec![ct, ("x-clay-signature", "sha256=abc")],
        vec![ct, ("authorization", "Bearer wrong")],
        vec![ct, ("authorization", "Basic dG9rOnRvaw==")],
        vec![
            ct,
            ("webhook-id", "m1"),
            ("webhook-timestamp", "1"),
            ("webhook-signature", "v1,"),
        ],
    ];
    let mut bodies = Vec::new();
    for headers in cases {
        let a = post(&h, &headers, BODY).await;
        assert_eq!(a.status, 401, "{headers:?}");
        bodies.push(a.json.to_string());
    }
    bodies.dedup();
    assert_eq!(bodies.len(), 1, "one answer whatever was wrong");
    assert!(!bodies[0].contains(TOKEN) && !bodies[0].contains("jane"));
    assert_nothing_written(&aws).await;
}

#[tokio::test]
async fn hmac_and_standard_webhooks_and_bearer_are_accepted() {
    let aws = Aws::fresh().await;
    let h = ingest(&aws, KeySpec::Body);
    let body1 = r#"{"email":"one@acme.com"}"#;
    let sig = format!("sha256={}", hmac_hex(TOKEN.as_bytes(), body1.as_bytes()));
    let a = post(
        &h,
        &[
            ("content-type", "application/json"),
            ("x-clay-signature", &sig),
        ],
        body1,
    )
    .await;
    assert_eq!(a.status, 202);

    let body2 = r#"{"email":"two@acme.com"}"#;
    let key = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        WHSEC.trim_start_matches("whsec_"),
    )
    .unwrap();
    let ts = now_s();
    let sw = standard_webhooks_signature(&key, "msg_1", ts, body2.as_bytes());
    let a = post(
        &h,
        &[
            ("content-type", "application/json"),
            ("webhook-id", "msg_1"),
            ("webhook-timestamp", &ts.to_string()),
            ("webhook-signature", &sw),
        ],
        body2,
    )
    .await;
    assert_eq!(a.status, 202);

    // The same signature ten minutes later is a replay.
    let old = now_s() - 600;
    let sw_old = standard_webhooks_signature(&key, "msg_2", old, body2.as_bytes());
    let a = post(
        &h,
        &[
            ("content-type", "application/json"),
            ("webhook-id", "msg_2"),
            ("webhook-timestamp", &old.to_string()),
            ("webhook-signature", &sw_old),
        ],
        body2,
    )
    .await;
    assert_eq!(a.status, 401);

    let bearer = format!("Bearer {TOKEN}");
    let a = post(
        &h,
        &[
            ("content-type", "application/json"),
            ("authorization", &bearer),
        ],
        r#"{"email":"three@acme.com"}"#,
    )
    .await;
    assert_eq!(a.status, 202);
    assert_eq!(aws.drain(3, Duration::from_secs(2)).await.len(), 3);
}

#[tokio::test]
async fn invalid_json_is_400_with_position_and_writes_nothing() {
    let aws = Aws::fresh().await;
    let h = ingest(&aws, KeySpec::Body);
    let a = post(
        &h,
        &token_headers(),
        "{\"email\": \"jane@acme.com\",\n \"x\": }",
    )
    .await;
    assert_eq!(a.status, 400);
    assert_eq!(a.json["error"]["code"], "invalid_json");
    assert_eq!(a.json["error"]["line"], 2);
    assert!(a.json["error"]["column"].as_u64().unwrap() > 0);
    assert!(
        !a.json.to_string().contains("jane"),
        "never echoes the body"
    );
    for body in ["[1,2]", "\"text\"", "42", "null", ""] {
        let a = post(&h, &token_headers(), body).await;
        assert_eq!(a.status, 400, "{body:?}");
        assert_eq!(a.json["error"]["code"], "invalid_json");
    }
    assert_nothing_written(&aws).await;
}

#[tokio::test]
async fn header_key_reused_with_a_different_body_is_422() {
    let aws = Aws::fresh().await;
    let h = ingest(&aws, KeySpec::Header("idempotency-key".into()));
    let mut headers = token_headers();
    headers.push(("idempotency-key", "row-42"));
    let a = post(&h, &headers, BODY).await;
    assert_eq!(a.status, 202);
    let items = aws.items().await;
    assert_eq!(
        s(&items[0], "body_hash"),
        Some(clayhook::idempotency::sha256_hex(BODY.as_bytes()))
    );
    let same = post(&h, &headers, BODY).await;
    assert_eq!(same.status, 200);
    let other = post(&h, &headers, r#"{"email":"other@acme.com"}"#).await;
    assert_eq!(other.status, 422);
    assert_eq!(other.json["error"]["code"], "idempotency_key_reused");
    assert_eq!(aws.drain(1, Duration::from_secs(2)).await.len(), 1);
}

#[tokio::test]
async fn fields_key_dedups_on_normalised_fields_and_catches_changed_bodies() {
    let aws = Aws::fresh().await;
    let h = ingest(&aws, KeySpec::Fields(vec!["email".into()]));
    let a = post(
        &h,
        &token_headers(),
        r#"{"email":"Jane@Acme.com","score":"80"}"#,
    )
    .await;
    assert_eq!(a.status, 202);
    let b = post(
        &h,
        &token_headers(),
        r#"{"Work Email":"jane@acme.com","score":"90"}"#,
    )
    .await;
    assert_eq!(b.status, 422);
    assert_eq!(b.json["error"]["id"], a.json["id"]);
}

#[tokio::test]
async fn sqs_unreachable_is_503_and_leaves_no_item() {
    let aws = Aws::fresh().await;
    let dead = sdk_config(&dead_endpoint()).await;
    let h = Ingest {
        settings: settings(KeySpec::Body),
        store: DynamoDbIdempotencyStore::new(aws.ddb.clone(), &aws.table),
        queue: SqsLeadQueue::new(aws_sdk_sqs::Client::new(&dead), &aws.queue_url),
    };
    let a = post(&h, &token_headers(), BODY).await;
    assert_eq!(a.status, 503);
    assert_eq!(a.json["error"]["code"], "unavailable");
    assert!(a.headers.contains_key("retry-after"));
    assert!(aws.items().await.is_empty(), "claim deleted");
    // Once SQS is back, the retry goes through.
    let h = ingest(&aws, KeySpec::Body);
    assert_eq!(post(&h, &token_headers(), BODY).await.status, 202);
}

#[tokio::test]
async fn dynamodb_unreachable_is_503_and_queues_nothing() {
    let aws = Aws::fresh().await;
    let dead = sdk_config(&dead_endpoint()).await;
    let h = Ingest {
        settings: settings(KeySpec::Body),
        store: DynamoDbIdempotencyStore::new(aws_sdk_dynamodb::Client::new(&dead), &aws.table),
        queue: SqsLeadQueue::new(aws.sqs.clone(), &aws.queue_url),
    };
    let a = post(&h, &token_headers(), BODY).await;
    assert_eq!(a.status, 503);
    assert_eq!(a.json["error"]["code"], "unavailable");
    assert!(a.headers.contains_key("retry-after"));
    assert_nothing_written(&aws).await;
}

#[tokio::test]
async fn missing_table_is_503_not_500() {
    let aws = Aws::fresh().await;
    let mut h = ingest(&aws, KeySpec::Body);
    h.store = DynamoDbIdempotencyStore::new(aws.ddb.clone(), "no-such-table");
    let a = post(&h, &token_headers(), BODY).await;
    assert_eq!(a.status, 503);
}

#[tokio::test]
async fn routes_methods_and_sources() {
    let aws = Aws::fresh().await;
    let h = ingest(&aws, KeySpec::Body);
    let a = send(
        &h,
        request("/api/clay/other", &token_headers(), BODY.as_bytes()),
    )
    .await;
    assert_eq!(a.status, 404);
    let long = format!("/api/clay/enriched/{}", "a".repeat(65));
    let a = send(&h, request(&long, &token_headers(), BODY.as_bytes())).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.json["error"]["code"], "invalid_source");
    let a = send(
        &h,
        request(
            "/api/clay/enriched/bad.name",
            &token_headers(),
            BODY.as_bytes(),
        ),
    )
    .await;
    assert_eq!(a.status, 400);
    let mut get = request("/api/clay/enriched", &token_headers(), b"");
    *get.method_mut() = Method::GET;
    let a = send(&h, get).await;
    assert_eq!(a.status, 405);
    assert_eq!(a.headers["allow"], "POST");
    assert_nothing_written(&aws).await;
}

/// X-Ray: the invocation's trace header rides on the message as `AWSTraceHeader`, so the router
/// invocation joins the trace; every log line of the request carries its requestId and, once
/// derived, the lead ID.
#[tokio::test]
async fn the_trace_header_is_carried_on_the_message_and_log_lines_carry_the_ids() {
    use lambda_http::RequestExt;
    let aws = Aws::fresh().await;
    let h = ingest(&aws, KeySpec::Body);
    let trace = "Root=1-6741a0b2-0123456789abcdef01234567;Parent=1a2b3c4d5e6f7a8b;Sampled=1";
    let mut context = lambda_http::Context::default();
    context.request_id = "req-trace-1".into();
    context.xray_trace_id = Some(trace.into());
    let body = r#"{"email":"traced@acme.com","Row ID":"trace-1","icp_score":"n/a?"}"#;
    let req = request("/api/clay/enriched", &token_headers(), body.as_bytes())
        .with_lambda_context(context);
    let a = send(&h, req).await;
    assert_eq!(a.status, 202, "{}", a.json);
    let id = a.json["id"].as_str().unwrap().to_string();
    let out = aws
        .sqs
        .receive_message()
        .queue_url(&aws.queue_url)
        .message_system_attribute_names(
            aws_sdk_sqs::types::MessageSystemAttributeName::AwsTraceHeader,
        )
        .send()
        .await
        .unwrap();
    let m = &out.messages.unwrap()[0];
    let attrs = m.attributes.clone().unwrap_or_default();
    assert_eq!(
        attrs
            .get(&aws_sdk_sqs::types::MessageSystemAttributeName::AwsTraceHeader)
            .map(String::as_str),
        Some(trace)
    );
    let log = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-logs/it.log"),
    )
    .unwrap();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("each log line is one JSON object"))
        .filter(|l: &Value| l["requestId"] == "req-trace-1")
        .collect();
    // The unparseable-score warning and the acceptance, both with the lead ID.
    assert!(lines.len() >= 2, "{lines:?}");
    for l in &lines {
        assert_eq!(l["lead_id"], id.as_str(), "{l}");
    }
    assert!(lines.iter().any(|l| l["message"] == "accepted"));
}
