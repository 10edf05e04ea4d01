//! `sam local invoke`, minus Docker: the `bootstrap` files `sam build` made run under the AWS
//! Lambda Runtime Interface Emulator against moto_server; every file in `events/` is invoked and
//! its answer checked; the messages ingest queued go to the router, whose deliveries reach a
//! local HTTP server.
//!
//! Needs `sam build` first, so it is `#[ignore]`d in plain `cargo test`; `make e2e` runs it
//! with CLAYHOOK_BUILD_DIR and AWS_LAMBDA_RIE set.

#[path = "e2e/lifecycle.rs"]
mod lifecycle;
#[path = "e2e/secrets.rs"]
mod secrets;

use crate::support::emulator::{emulate, event_file, function_env, invoke, required_env};
use crate::support::{Aws, moto_url};
use serde_json::{Value, json};
use std::time::Duration;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

fn status_and_body(answer: &Value) -> (u64, Value) {
    let status = answer["statusCode"]
        .as_u64()
        .unwrap_or_else(|| panic!("{answer}"));
    let body = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    (status, body)
}

#[tokio::test]
#[ignore = "needs `sam build`; run with `make e2e`"]
async fn sam_built_functions_under_the_lambda_emulator() {
    let build = required_env("CLAYHOOK_BUILD_DIR");
    let aws = Aws::fresh().await;
    let downstream = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .mount(&downstream)
        .await;

    let ingest_env = function_env(
        "IngestFunction",
        &[
            ("IDEMPOTENCY_TABLE", aws.table.clone()),
            ("LEAD_QUEUE_URL", aws.queue_url.clone()),
            ("AWS_ENDPOINT_URL", moto_url().to_string()),
        ],
    );
    let mut router_overrides = vec![
        ("IDEMPOTENCY_TABLE", aws.table.clone()),
        ("AWS_ENDPOINT_URL", moto_url().to_string()),
    ];
    router_overrides.extend(crate::support::emulator::destination_vars(
        &downstream.uri(),
    ));
    let router_env = function_env("RouterFunction", &router_overrides);
    let ingest = emulate(
        "ingest",
        &build.join("IngestFunction/bootstrap"),
        &ingest_env,
    );
    let router = emulate(
        "router",
        &build.join("RouterFunction/bootstrap"),
        &router_env,
    );

    // Every ingest event, with the answer it must get.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let cases = [
        ("ingest-static-token.json", 202),
        ("ingest-hmac.json", 202),
        ("ingest-standard-webhooks.json", 202),
        ("ingest-bad-token.json", 401),
        ("ingest-not-json.json", 400),
    ];
    for (file, want) in cases {
        let mut event = event_file(file);
        if file.contains("standard-webhooks") {
            let text = clayhook::events::resign_standard_webhooks(
                &event.to_string(),
                &clayhook::auth::Secrets::parse(&ingest_env["CLAY_WEBHOOK_SECRETS"]).unwrap(),
                now,
            )
            .unwrap();
            event = serde_json::from_str(&text).unwrap();
        }
        let (status, body) = status_and_body(&invoke(&ingest, &event).await);
        assert_eq!(status, want, "{file}: {body}");
        if want == 202 {
            assert_eq!(body["status"], "accepted");
        } else {
            assert!(body["error"]["code"].is_string(), "{file}: {body}");
        }
    }
    // Clay retries: the same callback again is a duplicate.
    let (status, body) =
        status_and_body(&invoke(&ingest, &event_file("ingest-static-token.json")).await);
    assert_eq!((status, body["status"].as_str()), (200, Some("duplicate")));

    // What ingest queued goes to the router, as the event source mapping would hand it over.
    let messages = aws.drain(3, Duration::from_secs(5)).await;
    assert_eq!(messages.len(), 3, "one message per accepted callback");
    let arn = "arn:aws:sqs:us-east-1:123456789012:e2e";
    let event = clayhook::local::poller::event_from_messages(&messages, arn, "us-east-1");
    let answer = invoke(&router, &serde_json::to_value(&event).unwrap()).await;
    assert_eq!(answer, json!({"batchItemFailures": []}), "{answer}");
    let count = |reqs: &[wiremock::Request], p: &str| {
        reqs.iter()
            .filter(|r| r.url.path() == format!("/{p}"))
            .count()
    };
    let reqs = downstream.received_requests().await.unwrap();
    // 92 with email: crm, outreach, slack, zapier; 64: nurture, zapier; 85 with email: crm,
    // outreach, zapier.
    assert_eq!(count(&reqs, "crm"), 2);
    assert_eq!(count(&reqs, "outreach"), 2);
    assert_eq!(count(&reqs, "nurture"), 1);
    assert_eq!(count(&reqs, "slack"), 1);
    assert_eq!(count(&reqs, "zapier"), 3);

    // The sample SQS batch: two good records and a malformed one, which alone is reported.
    let batch = event_file("router-sqs-batch.json");
    let answer = invoke(&router, &batch).await;
    let bad = batch["Records"][2]["messageId"].clone();
    assert_eq!(
        answer,
        json!({"batchItemFailures": [{"itemIdentifier": bad}]})
    );
    let reqs = downstream.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 9 + 6);

    // The emulator saw a real cold start and per-invocation reports.
    let logs = [ingest.log.clone(), router.log.clone()];
    drop(ingest);
    drop(router);
    // Every line is one JSON object with its invocation's requestId; lines about a lead carry
    // its ID; metric documents are there, in Embedded Metric Format.
    let ingest_lines = crate::support::emulator::function_log_lines(&logs[0]);
    let accepted: Vec<&Value> = ingest_lines
        .iter()
        .filter(|l| l["message"] == "accepted" || l["message"] == "duplicate")
        .collect();
    assert_eq!(accepted.len(), 4, "three accepted and one duplicate");
    assert!(
        accepted
            .iter()
            .all(|l| l["lead_id"].as_str().is_some_and(|id| id.len() == 64))
    );
    assert!(
        ingest_lines.iter().any(|l| l["Accepted"] == 1.0
            && l["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "clayhook")
    );
    assert!(
        ingest_lines
            .iter()
            .any(|l| l["Rejected"] == 1.0 && l["Reason"] == "unauthorized")
    );
    let router_lines = crate::support::emulator::function_log_lines(&logs[1]);
    let deliveries: Vec<&Value> = router_lines
        .iter()
        .filter(|l| l["message"] == "delivered")
        .collect();
    assert_eq!(deliveries.len(), 15);
    assert!(
        deliveries
            .iter()
            .all(|l| l["lead_id"].is_string() && l["message_id"].is_string())
    );
    assert!(
        router_lines
            .iter()
            .any(|l| l["Routed"].is_number() && l["Destination"] == "zapier")
    );
    let ingest_log = std::fs::read_to_string(&logs[0]).unwrap();
    assert!(ingest_log.contains("INIT REPORT"), "{ingest_log}");
    // Log hygiene: no secret, token or email address from the events reaches a log line.
    let mut forbidden: Vec<String> = ingest_env["CLAY_WEBHOOK_SECRETS"]
        .split(',')
        .map(str::to_string)
        .collect();
    forbidden.extend(
        [
            "jane.doe@acme-example.com",
            "sam.lee@globex-example.com",
            "ana.ruiz@initech-example.com",
        ]
        .map(String::from),
    );
    for path in &logs {
        let text = std::fs::read_to_string(path).unwrap();
        for f in &forbidden {
            assert!(!text.contains(f.as_str()), "{} leaks {f:?}", path.display());
        }
    }
}

/// The ingest process dies between the conditional write and the send: Clay's retry answers
/// 409 while the claim's lock holds, and after the lock (the dead invocation's deadline) the
/// retry takes over and the lead is queued exactly once.
#[tokio::test]
#[ignore = "needs `sam build`; run with `make e2e`"]
async fn ingest_killed_between_claim_and_send_is_queued_once_by_the_retry() {
    let build = required_env("CLAYHOOK_BUILD_DIR");
    let aws = Aws::fresh().await;
    // SQS that accepts connections and never answers: the invocation hangs after the claim.
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hole = format!("http://{}", black_hole.local_addr().unwrap());
    let base = [
        ("IDEMPOTENCY_TABLE", aws.table.clone()),
        ("LEAD_QUEUE_URL", aws.queue_url.clone()),
        ("AWS_ENDPOINT_URL", moto_url().to_string()),
    ];
    let mut hung = base.to_vec();
    hung.push(("AWS_ENDPOINT_URL_SQS", hole));
    hung.push(("AWS_LAMBDA_FUNCTION_TIMEOUT", "3".to_string()));
    let bootstrap = build.join("IngestFunction/bootstrap");
    let mut doomed = emulate(
        "ingest-doomed",
        &bootstrap,
        &function_env("IngestFunction", &hung),
    );
    let event = event_file("ingest-static-token.json");
    let url = doomed.invoke_url.clone();
    let body = event.to_string();
    let pending = tokio::spawn(async move {
        let _ = reqwest::Client::new().post(url).body(body).send().await;
    });
    // Wait for the claim, then kill the function mid-invocation.
    let start = std::time::Instant::now();
    loop {
        let items = aws.items().await;
        if items
            .iter()
            .any(|i| i["status"].as_s().is_ok_and(|s| s == "IN_PROGRESS"))
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no claim written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    doomed.kill();
    pending.abort();
    let claimed = std::time::Instant::now();

    let healthy = emulate(
        "ingest-retry",
        &bootstrap,
        &function_env("IngestFunction", &base),
    );
    let (status, body) = status_and_body(&invoke(&healthy, &event).await);
    assert_eq!(
        status, 409,
        "the dead invocation's lock still holds: {body}"
    );
    assert_eq!(body["error"]["code"], "in_progress");
    // The lock is the dead invocation's deadline (3 s after it started).
    let lock = Duration::from_secs(3) + Duration::from_millis(500);
    tokio::time::sleep(lock.saturating_sub(claimed.elapsed())).await;
    let (status, body) = status_and_body(&invoke(&healthy, &event).await);
    assert_eq!(status, 202, "{body}");
    let (status, _) = status_and_body(&invoke(&healthy, &event).await);
    assert_eq!(status, 200);
    assert_eq!(
        aws.drain(1, Duration::from_secs(2)).await.len(),
        1,
        "queued exactly once"
    );
    drop(black_hole);
}

/// Fail closed: with no secret, or a guessable one, the function does not start, and says why in
/// its log (naming the secret's position, never its value).
#[tokio::test]
#[ignore = "needs `sam build`; run with `make e2e`"]
async fn ingest_without_a_usable_secret_refuses_to_start() {
    let build = required_env("CLAYHOOK_BUILD_DIR");
    let aws = Aws::fresh().await;
    for (secrets, why) in [
        (" , ", "CLAY_WEBHOOK_SECRETS is empty"),
        (
            "local-dev-token-change-me,short-tok",
            "secret #2 in CLAY_WEBHOOK_SECRETS is shorter than 16 bytes",
        ),
    ] {
        let env = function_env(
            "IngestFunction",
            &[
                ("CLAY_WEBHOOK_SECRETS", secrets.to_string()),
                ("IDEMPOTENCY_TABLE", aws.table.clone()),
                ("LEAD_QUEUE_URL", aws.queue_url.clone()),
                ("AWS_ENDPOINT_URL", moto_url().to_string()),
            ],
        );
        let f = emulate(
            "ingest-no-secret",
            &build.join("IngestFunction/bootstrap"),
            &env,
        );
        let answer = reqwest::Client::new()
            .post(&f.invoke_url)
            .body(event_file("ingest-static-token.json").to_string())
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .expect("the emulator answers")
            .text()
            .await
            .unwrap_or_default();
        assert!(!answer.contains("statusCode"), "no HTTP answer: {answer}");
        let log_path = f.log.clone();
        drop(f);
        let log = std::fs::read_to_string(log_path).unwrap();
        assert!(log.contains("refusing to start"), "{log}");
        assert!(log.contains(why), "{log}");
        assert!(
            !log.contains("short-tok"),
            "the value never reaches the log: {log}"
        );
    }
    assert!(aws.drain(0, Duration::ZERO).await.is_empty());
}

/// The feeder's built bootstrap under the emulator: the sample intake batch reaches a local
/// server playing Clay (token checked), the record that is not an object goes to the DLQ, and
/// the same batch again sends nothing twice.
#[tokio::test]
#[ignore = "needs `sam build`; run with `make e2e`"]
async fn feeder_sends_the_intake_batch_to_clay_once() {
    let build = required_env("CLAYHOOK_BUILD_DIR");
    let aws = Aws::fresh().await;
    let dlq = aws
        .sqs
        .create_queue()
        .queue_name(crate::support::unique("intake-dlq"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let token = function_env("FeederFunction", &[])["CLAY_WEBHOOK_AUTH_TOKENS"].clone();
    let clay = crate::support::clay::FakeClay::start(Some(&token)).await;
    let env = function_env(
        "FeederFunction",
        &[
            ("IDEMPOTENCY_TABLE", aws.table.clone()),
            ("CLAY_WEBHOOK_URLS", clay.webhook(1)),
            ("FEEDER_DLQ_URL", dlq.clone()),
            ("AWS_ENDPOINT_URL", moto_url().to_string()),
        ],
    );
    let feeder = emulate("feeder", &build.join("FeederFunction/bootstrap"), &env);
    let batch = event_file("feeder-sqs-batch.json");
    let answer = invoke(&feeder, &batch).await;
    assert_eq!(answer, json!({"batchItemFailures": []}), "{answer}");
    let rows: Vec<Value> = clay.accepted().into_iter().map(|(_, v)| v).collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["company"], "Initech");
    let answer = invoke(&feeder, &batch).await;
    assert_eq!(answer, json!({"batchItemFailures": []}), "{answer}");
    assert_eq!(
        clay.hits().len(),
        2,
        "a redelivered batch is not sent again"
    );
    let dead = aws
        .sqs
        .receive_message()
        .queue_url(&dlq)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body.as_deref(), Some("\"not an object\""));
    let log_path = feeder.log.clone();
    drop(feeder);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("INIT REPORT"), "{log}");
    let lines = crate::support::emulator::function_log_lines(&log_path);
    let sent: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "row sent to Clay")
        .collect();
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|l| l["message_id"].is_string()));
    assert!(
        lines
            .iter()
            .any(|l| l["SentToClay"] == 2.0 && l["Function"] == "feeder")
    );
    assert!(lines.iter().any(|l| l["DeadLettered"] == 1.0));
    for secret in [
        token.as_str(),
        "ana.ruiz@initech-example.com",
        "li.wei@hooli-example.com",
    ] {
        assert!(!log.contains(secret), "feeder log leaks {secret:?}");
    }
}
