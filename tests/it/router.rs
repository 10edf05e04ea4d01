//! The router against moto_server (the delivery ledger) and real local HTTP servers (wiremock).

use crate::support::Aws;
use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use clayhook::auth::{self, Secrets};
use clayhook::delivery::retry::RetryPolicy;
use clayhook::destinations::hubspot::{DEFAULT_UPSERT_PATH, HubSpot};
use clayhook::destinations::slack::Slack;
use clayhook::destinations::webhook::{SigningKey, Webhook};
use clayhook::destinations::{Crm, DestinationSettings, HttpDestinations};
use clayhook::envelope::Envelope;
use clayhook::lead::Lead;
use clayhook::router::ledger::DynamoDbDeliveryLedger;
use clayhook::router::rules::default_rules;
use clayhook::router::{Router, RouterError, RouterSettings};
use serde_json::{Value, json};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

type R = Router<DynamoDbDeliveryLedger, HttpDestinations>;

const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn settings() -> RouterSettings {
    RouterSettings {
        rules: default_rules(),
        concurrency: 10,
        retry: RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(5),
            cap: Duration::from_millis(50),
            safety_margin: Duration::from_millis(200),
        },
        request_timeout: Duration::from_secs(2),
        delivery_ttl_seconds: 3600,
        max_receive_count: None,
        schedule: Default::default(),
        control: Default::default(),
        archive_days: 0,
    }
}

fn router(aws: &Aws, d: DestinationSettings) -> R {
    Router {
        settings: settings(),
        ledger: DynamoDbDeliveryLedger::new(aws.dynamodb.clone(), &aws.table),
        destinations: HttpDestinations::new(d, Duration::from_millis(500)).unwrap(),
        redelivery: clayhook::queue::NoRedelivery,
        control: clayhook::delivery::control::NoControl,
    }
}

/// All five destinations, each on its own path of one local server.
fn all_webhooks(server: &MockServer) -> DestinationSettings {
    let url = |p: &str| format!("{}/{p}", server.uri());
    DestinationSettings {
        crm: Some(Crm::Webhook(Webhook::new(url("crm"), None))),
        outreach: Some(Webhook::new(url("outreach"), None)),
        nurture: Some(Webhook::new(url("nurture"), None)),
        slack: Some(Slack::new(url("slack"))),
        zapier: Some(Webhook::new(url("zapier"), None)),
        warehouse: None,
    }
}

fn envelope(id: &str, body: &str, source: Option<&str>) -> Envelope {
    let (lead, _) = Lead::parse(body.as_bytes()).unwrap();
    Envelope::new(
        crate::support::lead_id(id),
        UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        source.map(str::to_string),
        lead,
    )
}

fn record(message_id: &str, body: &str) -> SqsMessage {
    let mut m = SqsMessage::default();
    m.message_id = Some(message_id.into());
    m.body = Some(body.into());
    m
}

fn event(records: Vec<SqsMessage>) -> SqsEvent {
    let mut e = SqsEvent::default();
    e.records = records;
    e
}

fn soon(secs: u64) -> SystemTime {
    SystemTime::now() + Duration::from_secs(secs)
}

async fn failures(r: &R, records: Vec<SqsMessage>, deadline: SystemTime) -> Vec<String> {
    let mut ids: Vec<String> = r
        .handle(event(records), deadline)
        .await
        .unwrap()
        .batch_item_failures
        .into_iter()
        .map(|f| f.item_identifier)
        .collect();
    ids.sort();
    ids
}

async fn ok(server: &MockServer, p: &str) {
    Mock::given(method("POST"))
        .and(path(format!("/{p}")))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .mount(server)
        .await;
}

async fn requests_to(server: &MockServer, p: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.url.path() == format!("/{p}"))
        .collect()
}

const HOT: &str = r#"{"email":"jane@acme.com","first_name":"Jane","last_name":"Doe","job_title":"VP Sales","company":"Acme","icp_score":95,"Row ID":"r1"}"#;

#[tokio::test]
async fn webhooks_get_the_lead_json_with_an_idempotency_key() {
    let aws = Aws::fresh().await;
    let server = MockServer::start().await;
    for p in ["crm", "outreach", "nurture", "slack", "zapier"] {
        ok(&server, p).await;
    }
    let r = router(&aws, all_webhooks(&server));
    let env = envelope("lead1", HOT, Some("tbl"));
    let fails = failures(&r, vec![record("m1", &env.to_json())], soon(30)).await;
    assert!(fails.is_empty());
    for p in ["crm", "outreach", "zapier"] {
        let reqs = requests_to(&server, p).await;
        assert_eq!(reqs.len(), 1, "{p}");
        let body: Value = serde_json::from_slice(&reqs[0].body).unwrap();
        assert_eq!(
            body,
            json!({"event_id":env.id,"source":"tbl","lead":{
                "email":"jane@acme.com","first_name":"Jane","last_name":"Doe","company_name":"Acme",
                "job_title":"VP Sales","icp_score":95,"extra":{"Row ID":"r1"}}})
        );
        assert_eq!(
            reqs[0].headers["idempotency-key"],
            format!("{}:{p}", env.id).as_str()
        );
        assert_eq!(reqs[0].headers["content-type"], "application/json");
        assert!(!reqs[0].headers.contains_key("webhook-signature"));
    }
    let slack = requests_to(&server, "slack").await;
    assert_eq!(slack.len(), 1);
    let body: Value = serde_json::from_slice(&slack[0].body).unwrap();
    assert_eq!(
        body["text"],
        "New lead: Jane Doe, VP Sales at Acme (ICP 95)"
    );
    assert!(body["blocks"].is_array());
    assert!(
        requests_to(&server, "nurture").await.is_empty(),
        "95 is not nurture"
    );
}

#[tokio::test]
async fn signed_webhooks_verify_with_standard_webhooks() {
    let aws = Aws::fresh().await;
    let server = MockServer::start().await;
    ok(&server, "zapier").await;
    let key = SigningKey::parse(WHSEC).unwrap();
    let d = DestinationSettings {
        zapier: Some(Webhook::new(format!("{}/zapier", server.uri()), Some(key))),
        ..Default::default()
    };
    let r = router(&aws, d);
    let env = envelope("lead2", HOT, None);
    assert!(
        failures(&r, vec![record("m1", &env.to_json())], soon(30))
            .await
            .is_empty()
    );
    let reqs = requests_to(&server, "zapier").await;
    assert_eq!(
        reqs[0].headers["webhook-id"],
        format!("{}:zapier", env.id).as_str()
    );
    let mut headers = lambda_http::http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        headers.insert(
            name,
            reqs[0].headers[name].to_str().unwrap().parse().unwrap(),
        );
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let secrets = Secrets::parse(WHSEC).unwrap();
    assert_eq!(
        auth::verify(&headers, &reqs[0].body, &secrets, now, 300),
        Ok(auth::Scheme::StandardWebhooks)
    );
}

#[tokio::test]
async fn hubspot_gets_a_batch_upsert_by_email_with_the_bearer_token() {
    let aws = Aws::fresh().await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(DEFAULT_UPSERT_PATH))
        .and(header("authorization", "Bearer pat-na1-test"))
        .and(body_json(
            json!({"inputs":[{"idProperty":"email","id":"jane@acme.com",
            "properties":{"email":"jane@acme.com","firstname":"Jane","lastname":"Doe",
                "company":"Acme","jobtitle":"VP Sales"},
            "objectWriteTraceId":crate::support::lead_id("lead3")}]}),
        ))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"status":"COMPLETE","results":[{"id":"101","new":true}]})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let d = DestinationSettings {
        crm: Some(Crm::HubSpot(HubSpot::new(
            &server.uri(),
            DEFAULT_UPSERT_PATH,
            "pat-na1-test",
            None,
        ))),
        ..Default::default()
    };
    let r = router(&aws, d);
    let env = envelope("lead3", HOT, None);
    assert!(
        failures(&r, vec![record("m1", &env.to_json())], soon(30))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn hubspot_partial_failure_fails_the_record_and_409_is_retried_at_once() {
    let aws = Aws::fresh().await;
    let server = MockServer::start().await;
    let d = DestinationSettings {
        crm: Some(Crm::HubSpot(HubSpot::new(
            &server.uri(),
            DEFAULT_UPSERT_PATH,
            "t",
            None,
        ))),
        ..Default::default()
    };
    let r = router(&aws, d);
    // 207 with a validation error: permanent, one request only.
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(207).set_body_json(json!({"numErrors":1,
            "errors":[{"status":"error","category":"VALIDATION_ERROR","message":"bad jane@acme.com"}]})))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    let env = envelope("lead4", HOT, None);
    let fails = failures(&r, vec![record("m1", &env.to_json())], soon(30)).await;
    assert_eq!(fails, vec!["m1"]);
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    // Next receive: 409 (a concurrent create), then 200.
    server.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(409).set_body_json(
            json!({"status":"error","category":"CONFLICT","message":"Contact already exists"}),
        ))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"results":[{}]})))
        .mount(&server)
        .await;
    assert!(
        failures(&r, vec![record("m1", &env.to_json())], soon(30))
            .await
            .is_empty()
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_500_fails_the_record_and_the_redelivery_reaches_only_that_destination() {
    let aws = Aws::fresh().await;
    let server = MockServer::start().await;
    ok(&server, "crm").await;
    ok(&server, "zapier").await;
    Mock::given(method("POST"))
        .and(path("/outreach"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    let r = router(&aws, all_webhooks(&server));
    let env = envelope("lead5", r#"{"email":"a@b.co","icp_score":85}"#, None);
    let rec = || record("m5", &env.to_json());
    assert_eq!(failures(&r, vec![rec()], soon(30)).await, vec!["m5"]);
    assert_eq!(requests_to(&server, "crm").await.len(), 1);
    assert_eq!(requests_to(&server, "zapier").await.len(), 1);
    assert_eq!(
        requests_to(&server, "outreach").await.len(),
        3,
        "retried inside the invocation up to max_attempts"
    );
    // The outreach tool recovers; SQS redelivers the message.
    server.reset().await;
    ok(&server, "crm").await;
    ok(&server, "outreach").await;
    ok(&server, "zapier").await;
    assert!(failures(&r, vec![rec()], soon(30)).await.is_empty());
    assert!(
        requests_to(&server, "crm").await.is_empty(),
        "crm not sent twice"
    );
    assert!(
        requests_to(&server, "zapier").await.is_empty(),
        "zapier not sent twice"
    );
    assert_eq!(requests_to(&server, "outreach").await.len(), 1);
    // A third receive sends nothing at all.
    assert!(failures(&r, vec![rec()], soon(30)).await.is_empty());
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out_within_the_invocation() {
    let aws = Aws::fresh().await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/zapier"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    ok(&server, "zapier").await;
    let d = DestinationSettings {
        zapier: Some(Webhook::new(format!("{}/zapier", server.uri()), None)),
        ..Default::default()
    };
    let r = router(&aws, d);
    let env = envelope("lead6", r#"{"email":"a@b.co"}"#, None);
    let start = Instant::now();
    assert!(
        failures(&r, vec![record("m6", &env.to_json())], soon(30))
            .await
            .is_empty()
    );
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "waited for Retry-After"
    );
    assert_eq!(requests_to(&server, "zapier").await.len(), 2);
}

#[tokio::test]
async fn a_wait_longer_than_the_time_left_fails_the_record_instead_of_sleeping() {
    let aws = Aws::fresh().await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).insert_header("retry-after", "120"))
        .mount(&server)
        .await;
    let d = DestinationSettings {
        zapier: Some(Webhook::new(format!("{}/zapier", server.uri()), None)),
        ..Default::default()
    };
    let r = router(&aws, d);
    let env = envelope("lead7", r#"{"email":"a@b.co"}"#, None);
    let start = Instant::now();
    assert_eq!(
        failures(&r, vec![record("m7", &env.to_json())], soon(5)).await,
        vec!["m7"]
    );
    assert!(start.elapsed() < Duration::from_secs(3));
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_permanent_4xx_is_not_retried_and_fails_the_record() {
    let aws = Aws::fresh().await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(404).set_body_string("no_service"))
        .mount(&server)
        .await;
    let r = router(&aws, all_webhooks(&server));
    let env = envelope("lead8", r#"{"email":"a@b.co","icp_score":10}"#, None);
    assert_eq!(
        failures(&r, vec![record("m8", &env.to_json())], soon(30)).await,
        vec!["m8"]
    );
    assert_eq!(requests_to(&server, "zapier").await.len(), 1);
    // The claim was released: a later receive tries again (and still fails, still once).
    assert_eq!(
        failures(&r, vec![record("m8", &env.to_json())], soon(30)).await,
        vec!["m8"]
    );
    assert_eq!(requests_to(&server, "zapier").await.len(), 2);
}

#[tokio::test]
async fn connection_refused_and_timeouts_are_retried_then_fail() {
    let aws = Aws::fresh().await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .mount(&server)
        .await;
    let d = DestinationSettings {
        zapier: Some(Webhook::new(format!("{}/zapier", server.uri()), None)),
        nurture: Some(Webhook::new(crate::support::dead_endpoint(), None)),
        ..Default::default()
    };
    let mut r = router(&aws, d);
    r.settings.request_timeout = Duration::from_millis(300);
    let env = envelope("lead9", r#"{"email":"a@b.co","icp_score":60}"#, None);
    let start = Instant::now();
    assert_eq!(
        failures(&r, vec![record("m9", &env.to_json())], soon(30)).await,
        vec!["m9"]
    );
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "bounded by the request timeout"
    );
    assert_eq!(requests_to(&server, "zapier").await.len(), 3);
}

#[tokio::test]
async fn a_malformed_record_fails_only_itself() {
    let aws = Aws::fresh().await;
    let server = MockServer::start().await;
    ok(&server, "zapier").await;
    let d = DestinationSettings {
        zapier: Some(Webhook::new(format!("{}/zapier", server.uri()), None)),
        ..Default::default()
    };
    let r = router(&aws, d);
    let good = envelope("lead10", r#"{"email":"a@b.co"}"#, None).to_json();
    let records = vec![
        record("bad-json", "{not json"),
        record("good", &good),
        record(
            "bad-version",
            r#"{"version":9,"id":"x","received_at":"","source":null,"lead":{}}"#,
        ),
        {
            let mut m = SqsMessage::default();
            m.message_id = Some("no-body".into());
            m
        },
    ];
    assert_eq!(
        failures(&r, records, soon(30)).await,
        vec!["bad-json", "bad-version", "no-body"]
    );
    assert_eq!(requests_to(&server, "zapier").await.len(), 1);
}

#[tokio::test]
async fn a_failed_record_without_a_message_id_fails_the_whole_batch() {
    let aws = Aws::fresh().await;
    let r = router(&aws, DestinationSettings::default());
    let mut m = SqsMessage::default();
    m.body = Some("junk".into());
    let result = r.handle(event(vec![m]), soon(30)).await;
    assert!(matches!(result, Err(RouterError::UnnamedFailure)));
}

#[tokio::test]
async fn the_same_message_delivered_twice_at_once_is_sent_once() {
    let aws = Aws::fresh().await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(500)))
        .mount(&server)
        .await;
    let d = DestinationSettings {
        zapier: Some(Webhook::new(format!("{}/zapier", server.uri()), None)),
        ..Default::default()
    };
    let r = router(&aws, d);
    let body = envelope("lead11", r#"{"email":"a@b.co"}"#, None).to_json();
    let (a, b) = tokio::join!(
        failures(&r, vec![record("m11", &body)], soon(30)),
        failures(&r, vec![record("m11", &body)], soon(30)),
    );
    assert_eq!(requests_to(&server, "zapier").await.len(), 1, "sent once");
    assert_eq!(a.len() + b.len(), 1, "the loser retries later");
    // Its retry finds the delivery recorded and sends nothing.
    assert!(
        failures(&r, vec![record("m11", &body)], soon(30))
            .await
            .is_empty()
    );
    assert_eq!(requests_to(&server, "zapier").await.len(), 1);
}

#[tokio::test]
async fn leads_below_every_threshold_and_unconfigured_destinations_are_skipped() {
    let aws = Aws::fresh().await;
    let server = MockServer::start().await;
    ok(&server, "slack").await;
    // Only Slack is configured.
    let d = DestinationSettings {
        slack: Some(Slack::new(format!("{}/slack", server.uri()))),
        ..Default::default()
    };
    let r = router(&aws, d);
    let cold = envelope("cold", r#"{"email":"a@b.co","icp_score":"12"}"#, None).to_json();
    let hot = envelope("hot", HOT, None).to_json();
    let fails = failures(&r, vec![record("c", &cold), record("h", &hot)], soon(30)).await;
    assert!(fails.is_empty(), "skips are not failures");
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        1,
        "only slack, only the hot one"
    );
}

#[tokio::test]
async fn fifo_groups_keep_their_order_after_a_failure() {
    let aws = Aws::fresh().await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(wiremock::matchers::body_string_contains(
            crate::support::lead_id("first").as_str(),
        ))
        .respond_with(ResponseTemplate::new(400))
        .mount(&server)
        .await;
    ok(&server, "zapier").await;
    let d = DestinationSettings {
        zapier: Some(Webhook::new(format!("{}/zapier", server.uri()), None)),
        ..Default::default()
    };
    let r = router(&aws, d);
    let fifo = |id: &str, group: &str| {
        let mut m = record(id, &envelope(id, r#"{"email":"a@b.co"}"#, None).to_json());
        m.attributes.insert("MessageGroupId".into(), group.into());
        m
    };
    let fails = failures(
        &r,
        vec![
            fifo("first", "g1"),
            fifo("second", "g1"),
            fifo("other", "g2"),
        ],
        soon(30),
    )
    .await;
    assert_eq!(fails, vec!["first", "second"]);
    let sent: Vec<String> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(&r.body).unwrap()["event_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let sent_id = |name: &str| sent.contains(&crate::support::lead_id(name));
    assert!(sent_id("first") && sent_id("other"));
    assert!(!sent_id("second"), "not attempted out of order");
}

#[tokio::test]
async fn ledger_items_are_written_per_destination() {
    let aws = Aws::fresh().await;
    let server = MockServer::start().await;
    for p in ["crm", "outreach", "slack", "zapier"] {
        ok(&server, p).await;
    }
    let r = router(&aws, all_webhooks(&server));
    let env = envelope("lead12", HOT, None);
    assert!(
        failures(&r, vec![record("m", &env.to_json())], soon(30))
            .await
            .is_empty()
    );
    let mut pks: Vec<String> = aws
        .items()
        .await
        .iter()
        .filter(|i| i["status"].as_s().unwrap() == "DELIVERED")
        .map(|i| i["pk"].as_s().unwrap().clone())
        .collect();
    pks.sort();
    assert_eq!(
        pks,
        vec![
            format!("delivery#{}#crm", crate::support::lead_id("lead12")),
            format!("delivery#{}#outreach", crate::support::lead_id("lead12")),
            format!("delivery#{}#slack", crate::support::lead_id("lead12")),
            format!("delivery#{}#zapier", crate::support::lead_id("lead12"))
        ]
    );
}

/// The metrics an on-call engineer reads: routed per destination, failures per destination and
/// class, retries, and records failing on their last receive (on their way to the DLQ).
#[tokio::test]
async fn metrics_count_routes_failures_retries_and_the_dlq() {
    let aws = Aws::fresh().await;
    let server = MockServer::start().await;
    ok(&server, "crm").await;
    ok(&server, "zapier").await;
    Mock::given(method("POST"))
        .and(path("/outreach"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let mut r = router(&aws, all_webhooks(&server));
    r.settings.max_receive_count = Some(5);
    let env = envelope("lead-metrics", r#"{"email":"a@b.co","icp_score":85}"#, None);
    let mut last = record("m-last", &env.to_json());
    last.attributes
        .insert("ApproximateReceiveCount".into(), "5".into());
    let bad = record("m-bad", "{not json");
    let metrics = clayhook::metrics::Metrics::new("test", "router");
    let out = r
        .handle_with(event(vec![last, bad]), soon(30), &metrics)
        .await
        .unwrap();
    assert_eq!(out.batch_item_failures.len(), 2);
    let total = |name: &str, dims: &[(&str, &str)]| metrics.total(name, dims);
    assert_eq!(total("Routed", &[("Destination", "crm")]), 1.0);
    assert_eq!(total("Routed", &[("Destination", "zapier")]), 1.0);
    assert_eq!(total("Routed", &[("Destination", "outreach")]), 0.0);
    assert_eq!(
        total(
            "DeliveryFailed",
            &[("Destination", "outreach"), ("Class", "transient")]
        ),
        3.0
    );
    assert_eq!(total("Retries", &[("Destination", "outreach")]), 2.0);
    assert_eq!(total("MalformedRecords", &[]), 1.0);
    assert_eq!(total("RecordsFailed", &[]), 2.0);
    assert_eq!(
        total("SentToDlq", &[]),
        1.0,
        "only the record on its 5th receive"
    );
    // Each document is valid EMF naming its dimensions.
    for doc in metrics.documents() {
        let cw = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(cw["Namespace"], "test");
        for name in cw["Dimensions"][0].as_array().unwrap() {
            assert!(doc.get(name.as_str().unwrap()).is_some(), "{doc}");
        }
    }
}

/// The ingest invocation's trace header arrives with the record: its log lines carry it.
#[tokio::test]
async fn a_records_trace_header_joins_its_log_lines() {
    let aws = Aws::fresh().await;
    let server = MockServer::start().await;
    ok(&server, "zapier").await;
    let r = router(
        &aws,
        DestinationSettings {
            zapier: Some(Webhook::new(format!("{}/zapier", server.uri()), None)),
            ..DestinationSettings::default()
        },
    );
    let env = envelope("lead-traced", r#"{"icp_score":10}"#, None);
    let mut rec = record("m-traced", &env.to_json());
    let trace = "Root=1-6741a0b2-5f1c2d3e4a5b6c7d8e9f0a1b;Parent=53995c3f42cd8ad8;Sampled=1";
    rec.attributes.insert("AWSTraceHeader".into(), trace.into());
    assert!(failures(&r, vec![rec], soon(30)).await.is_empty());
    let log = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-logs/it.log"),
    )
    .unwrap();
    let line = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| {
            l["lead_id"] == crate::support::lead_id("lead-traced").as_str()
                && l["destination"] == "zapier"
        })
        .expect("the delivery line");
    assert_eq!(line["xrayTraceId"], trace);
    assert_eq!(line["message_id"], "m-traced");
}

/// The version-aware ledger against DynamoDB (moto): a newer version claims a destination again,
/// the same or an older one is skipped, a failed newer claim leaves the older delivery recorded
/// (a late older redelivery is still skipped), a live claim is busy, and items written before
/// versions were kept are judged by when they were delivered.
#[tokio::test]
async fn the_ledger_delivers_each_version_once_and_never_rolls_back() {
    use clayhook::router::ledger::{ClaimOutcome, DeliveryClaim, DeliveryLedger};
    use clayhook::router::rules::DestinationName;
    let aws = Aws::fresh().await;
    let ledger = DynamoDbDeliveryLedger::new(aws.dynamodb.clone(), &aws.table);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let id = crate::support::lead_id("versions");
    let claim = |version: &str, received_at_ms: i64, lock_until_ms: i64| DeliveryClaim {
        id: id.clone(),
        destination: DestinationName::Crm,
        version: version.into(),
        received_at_ms,
        lock_until_ms,
        now_ms,
        expires_at: now_ms / 1000 + 3600,
        token: clayhook::router::ledger::claim_token(),
    };
    let live = now_ms + 60_000;
    let outcome = |class: &'static str, what: &str| clayhook::router::ledger::Outcome {
        at_ms: now_ms,
        tries: 2,
        class,
        what: what.into(),
    };
    let done = outcome("delivered", "delivered");
    let a = claim("A", now_ms - 10_000, live);
    let b = claim("B", now_ms - 5_000, live + 1);
    assert_eq!(
        ledger.claim(&a).await.unwrap(),
        ClaimOutcome::Claimed { failures: 0 }
    );
    // Another invocation's claim of the same version (its own token) finds A's live claim.
    let a_elsewhere = DeliveryClaim {
        token: clayhook::router::ledger::claim_token(),
        ..a.clone()
    };
    assert_eq!(
        ledger.claim(&a_elsewhere).await.unwrap(),
        ClaimOutcome::Busy,
        "a live claim"
    );
    ledger.delivered(&a, &done).await.unwrap();
    assert_eq!(
        ledger.claim(&a).await.unwrap(),
        ClaimOutcome::AlreadyDelivered
    );
    // B (re-enriched) claims; its delivery fails and is released: A stays delivered.
    assert_eq!(
        ledger.claim(&b).await.unwrap(),
        ClaimOutcome::Claimed { failures: 0 }
    );
    assert_eq!(
        ledger.claim(&a).await.unwrap(),
        ClaimOutcome::AlreadyDelivered
    );
    ledger
        .release(&b, Some(1), &outcome("transient", "answered 503"))
        .await
        .unwrap();
    assert_eq!(
        ledger.claim(&a).await.unwrap(),
        ClaimOutcome::AlreadyDelivered
    );
    // B's retry claims again (one failure of B so far) and delivers; then neither A nor B goes
    // out again.
    assert_eq!(
        ledger.claim(&b).await.unwrap(),
        ClaimOutcome::Claimed { failures: 1 }
    );
    ledger.delivered(&b, &done).await.unwrap();
    assert_eq!(
        ledger.claim(&b).await.unwrap(),
        ClaimOutcome::AlreadyDelivered
    );
    assert_eq!(
        ledger.claim(&a).await.unwrap(),
        ClaimOutcome::AlreadyDelivered
    );
    // C claims and its invocation dies (lock lapsed): A or B late are skipped, C's retry claims.
    let c_dead = claim("C", now_ms - 1_000, now_ms - 1);
    assert_eq!(
        ledger.claim(&c_dead).await.unwrap(),
        ClaimOutcome::Claimed { failures: 0 }
    );
    assert_eq!(
        ledger.claim(&a).await.unwrap(),
        ClaimOutcome::AlreadyDelivered
    );
    assert_eq!(
        ledger.claim(&b).await.unwrap(),
        ClaimOutcome::AlreadyDelivered
    );
    let c = claim("C", now_ms - 1_000, live);
    assert_eq!(
        ledger.claim(&c).await.unwrap(),
        ClaimOutcome::Claimed { failures: 0 }
    );
    // A first delivery that fails is released with its count and its history: the next claim
    // learns the retry schedule's step from it; a try held back (no request made) counts
    // nothing.
    let other = DeliveryClaim {
        destination: DestinationName::Zapier,
        ..a.clone()
    };
    assert_eq!(
        ledger.claim(&other).await.unwrap(),
        ClaimOutcome::Claimed { failures: 0 }
    );
    ledger
        .release(&other, Some(1), &outcome("transient", "timeout error"))
        .await
        .unwrap();
    let other = DeliveryClaim {
        lock_until_ms: live + 5,
        ..other
    };
    assert_eq!(
        ledger.claim(&other).await.unwrap(),
        ClaimOutcome::Claimed { failures: 1 }
    );
    ledger
        .release(&other, None, &outcome("transient", "held"))
        .await
        .unwrap();
    let pk = DynamoDbDeliveryLedger::pk(&id, DestinationName::Zapier);
    let items = aws.items().await;
    let item = items
        .iter()
        .find(|i| i["pk"].as_s().unwrap() == &pk)
        .expect("the released item stays");
    assert_eq!(item["status"].as_s().unwrap(), "RELEASED");
    assert_eq!(item["failures"].as_n().unwrap(), "1");
    assert_eq!(item["tries"].as_n().unwrap(), "4");
    let history = item["history"].as_l().unwrap();
    assert_eq!(history.len(), 1, "a held try adds no history");
    let entry = clayhook::router::ledger::Outcome::from_attribute(&crate::support::json_attribute(
        &history[0],
    ))
    .unwrap();
    assert_eq!(
        (entry.class, entry.what.as_str()),
        ("transient", "timeout error")
    );
    assert!(!item.contains_key("delivered_version"));
    // An item written before versions were kept: delivered at `now_ms - 3_000`.
    let legacy = DynamoDbDeliveryLedger::pk(&id, DestinationName::Slack);
    aws.ddb
        .put_item()
        .table_name(&aws.table)
        .item("pk", aws_sdk_dynamodb::types::AttributeValue::S(legacy))
        .item(
            "status",
            aws_sdk_dynamodb::types::AttributeValue::S("DELIVERED".into()),
        )
        .item(
            "delivered_at",
            aws_sdk_dynamodb::types::AttributeValue::N((now_ms - 3_000).to_string()),
        )
        .send()
        .await
        .unwrap();
    let slack = |c: &DeliveryClaim| DeliveryClaim {
        destination: DestinationName::Slack,
        ..c.clone()
    };
    assert_eq!(
        ledger.claim(&slack(&b)).await.unwrap(),
        ClaimOutcome::AlreadyDelivered,
        "accepted before the old delivery"
    );
    assert_eq!(
        ledger.claim(&slack(&c)).await.unwrap(),
        ClaimOutcome::Claimed { failures: 0 },
        "accepted after it: a new version"
    );
}
