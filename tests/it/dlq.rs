//! `clayhook dlq list | show | redrive`, the real binary, against moto_server; then the router
//! on what was redriven, to see that only destinations missing from the ledger are sent to.

use crate::support::{Aws, moto_url};
use aws_lambda_events::sqs::SqsEvent;
use clayhook::delivery::retry::RetryPolicy;
use clayhook::destinations::webhook::Webhook;
use clayhook::destinations::{Crm, DestinationSettings, HttpDestinations};
use clayhook::envelope::Envelope;
use clayhook::lead::Lead;
use clayhook::router::ledger::{DeliveryClaim, DeliveryLedger, DynamoDbDeliveryLedger};
use clayhook::router::rules::{DestinationName, default_rules};
use clayhook::router::{Router, RouterSettings};
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn clayhook(aws: &Aws, dlq: &str, args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clayhook"));
    cmd.arg("dlq")
        .args(args)
        .env("AWS_ENDPOINT_URL", moto_url())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("DLQ_URL", dlq)
        .env("IDEMPOTENCY_TABLE", &aws.table)
        .env("LEAD_QUEUE_URL", &aws.queue_url)
        .env_remove("ROUTING_RULES");
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("clayhook dlq"))
        .await
        .expect("join");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    if !args.contains(&"--show-email") {
        assert!(
            !run.stdout.contains("hot@acme.com") && !run.stderr.contains("hot@acme.com"),
            "an email address reached the output: {}",
            run.stdout
        );
    }
    run
}

fn envelope(id: &str, body: &str) -> Envelope {
    let (lead, _) = Lead::parse(body.as_bytes()).unwrap();
    Envelope::new(
        crate::support::lead_id(id),
        UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        Some("webinar".into()),
        lead,
    )
}

async fn send(aws: &Aws, url: &str, body: &str) {
    aws.sqs
        .send_message()
        .queue_url(url)
        .message_body(body)
        .send()
        .await
        .expect("send");
}

#[tokio::test(flavor = "multi_thread")]
async fn list_show_and_redrive_only_what_the_ledger_lacks() {
    let aws = Aws::fresh().await;
    let dlq = aws
        .sqs
        .create_queue()
        .queue_name(crate::support::unique("dlq"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    // Lead A (85, email): crm, outreach, zapier; crm already delivered before it failed.
    let a = envelope("lead-a", r#"{"email":"hot@acme.com","icp_score":85}"#);
    // Lead B (60): nurture, zapier; nothing delivered.
    let b = envelope("lead-b", r#"{"icp_score":60}"#);
    send(&aws, &dlq, &a.to_json()).await;
    send(&aws, &dlq, &b.to_json()).await;
    send(&aws, &dlq, "{not an envelope").await;
    let ledger = DynamoDbDeliveryLedger::new(aws.dynamodb.clone(), &aws.table);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let claim = DeliveryClaim {
        id: a.id.clone(),
        version: a.lead_version(),
        received_at_ms: a.received_at_ms(),
        destination: DestinationName::Crm,
        lock_until_ms: now_ms + 60_000,
        now_ms,
        expires_at: now_ms / 1000 + 3600,
        token: clayhook::router::ledger::claim_token(),
    };
    ledger.claim(&claim).await.unwrap();
    ledger
        .delivered(
            &claim,
            &clayhook::router::ledger::Outcome {
                at_ms: now_ms,
                tries: 1,
                class: "delivered",
                what: "delivered".into(),
            },
        )
        .await
        .unwrap();

    let r = clayhook(&aws, &dlq, &["list"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("3 record(s) in the dead-letter queue"),
        "{}",
        r.stdout
    );
    let line_a = r
        .stdout
        .lines()
        .find(|l| l.contains(&format!("lead {}", a.id)))
        .unwrap();
    assert!(
        line_a.contains("delivered crm  owed outreach,zapier,warehouse"),
        "{line_a}"
    );
    assert!(
        line_a.contains("source webinar") && line_a.contains("receives 1"),
        "{line_a}"
    );
    let line_b = r
        .stdout
        .lines()
        .find(|l| l.contains(&format!("lead {}", b.id)))
        .unwrap();
    assert!(
        line_b.contains("delivered -  owed nurture,zapier,warehouse"),
        "{line_b}"
    );
    assert!(
        r.stdout.contains("not a clayhook envelope (16 bytes)"),
        "{}",
        r.stdout
    );

    // Listing left everything in place (visible again at once).
    let r = clayhook(&aws, &dlq, &["show", &a.id]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let shown: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(shown["delivered"], serde_json::json!(["crm"]));
    assert_eq!(
        shown["owed"],
        serde_json::json!(["outreach", "zapier", "warehouse"])
    );
    assert_eq!(shown["message"]["lead"]["email"], "h***@acme.com");
    assert_eq!(shown["receive_count"], 2, "list received it once already");
    let r = clayhook(&aws, &dlq, &["show", &a.id, "--show-email"]).await;
    assert!(r.stdout.contains("hot@acme.com"));
    let r = clayhook(&aws, &dlq, &["show", "nope"]).await;
    assert_ne!(r.code, 0);
    assert!(
        r.stderr
            .contains("no message in the DLQ has the message id or lead ID \"nope\""),
        "{}",
        r.stderr
    );

    let r = clayhook(&aws, &dlq, &["redrive", "--dry-run"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("would redrive 2 record(s) (dry run: nothing changed)"),
        "{}",
        r.stdout
    );
    assert!(
        aws.drain(0, Duration::ZERO).await.is_empty(),
        "a dry run sends nothing"
    );

    let r = clayhook(&aws, &dlq, &["redrive"]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("redrove 2 record(s)"), "{}", r.stdout);
    assert!(
        r.stdout.contains("left ") && r.stdout.contains("not a clayhook envelope"),
        "{}",
        r.stdout
    );
    let r = clayhook(&aws, &dlq, &["list"]).await;
    assert!(
        r.stdout.contains("1 record(s) in the dead-letter queue"),
        "{}",
        r.stdout
    );

    // The router on the redriven records: crm is not sent lead A again.
    let messages = aws.drain(2, Duration::from_secs(5)).await;
    assert_eq!(messages.len(), 2);
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let url = |p: &str| format!("{}/{p}", server.uri());
    let router = Router {
        settings: RouterSettings {
            rules: default_rules(),
            concurrency: 4,
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(2),
            delivery_ttl_seconds: 3600,
            max_receive_count: None,
            schedule: Default::default(),
            control: Default::default(),
            archive_days: 0,
        },
        ledger,
        destinations: HttpDestinations::new(
            DestinationSettings {
                crm: Some(Crm::Webhook(Webhook::new(url("crm"), None))),
                outreach: Some(Webhook::new(url("outreach"), None)),
                nurture: Some(Webhook::new(url("nurture"), None)),
                zapier: Some(Webhook::new(url("zapier"), None)),
                warehouse: None,
                slack: None,
            },
            Duration::from_secs(1),
        )
        .unwrap(),
        redelivery: clayhook::queue::NoRedelivery,
        control: clayhook::delivery::control::NoControl,
    };
    let event: SqsEvent = clayhook::local::poller::event_from_messages(
        &messages,
        "arn:aws:sqs:us-east-1:1:q",
        "us-east-1",
    );
    let out = router
        .handle(event, SystemTime::now() + Duration::from_secs(30))
        .await
        .unwrap();
    assert!(out.batch_item_failures.is_empty());
    let mut paths: Vec<String> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.url.path().to_string())
        .collect();
    paths.sort();
    assert_eq!(paths, vec!["/nurture", "/outreach", "/zapier", "/zapier"]);
}

/// Retries over hours, shortened: a lead whose destination keeps answering 503 waits out the
/// schedule on the queue (its visibility changed after each receive: not seen again before the
/// wait), then the router moves it to the DLQ itself with the reason, which `clayhook dlq list`
/// shows; a lead a destination refuses (400) goes there at once. Driven by the local poller
/// (the event source mapping's stand-in: it deletes what the router does not report failed).
#[tokio::test(flavor = "multi_thread")]
async fn failing_leads_wait_out_the_schedule_then_reach_the_dlq_with_a_reason() {
    use clayhook::delivery::schedule::RetrySchedule;
    use clayhook::local::poller::Poller;
    use clayhook::queue::sqs::SqsRedelivery;
    let aws = Aws::fresh().await;
    let dlq = aws
        .sqs
        .create_queue()
        .queue_name(crate::support::unique("schedule-dlq"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(wiremock::matchers::path("/nurture"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(wiremock::matchers::path("/crm"))
        .respond_with(ResponseTemplate::new(400).set_body_string("bad property"))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let url = |p: &str| format!("{}/{p}", server.uri());
    let router = Router {
        settings: RouterSettings {
            rules: default_rules(),
            concurrency: 4,
            retry: RetryPolicy {
                max_attempts: 2,
                base: Duration::from_millis(5),
                cap: Duration::from_millis(20),
                safety_margin: Duration::from_millis(200),
            },
            request_timeout: Duration::from_secs(2),
            delivery_ttl_seconds: 3600,
            max_receive_count: None,
            schedule: RetrySchedule::parse("1s,2s", "3s").unwrap(),
            control: Default::default(),
            archive_days: 0,
        },
        ledger: DynamoDbDeliveryLedger::new(aws.dynamodb.clone(), &aws.table),
        destinations: HttpDestinations::new(
            DestinationSettings {
                crm: Some(Crm::Webhook(Webhook::new(url("crm"), None))),
                outreach: Some(Webhook::new(url("outreach"), None)),
                nurture: Some(Webhook::new(url("nurture"), None)),
                zapier: None,
                warehouse: None,
                slack: None,
            },
            Duration::from_secs(1),
        )
        .unwrap(),
        redelivery: SqsRedelivery::new(aws.sqs.clone(), aws.queue_url.clone(), dlq.clone()),
        control: clayhook::delivery::control::NoControl,
    };
    let poller = Poller {
        sqs: &aws.sqs,
        queue_url: &aws.queue_url,
        queue_arn: "arn:aws:sqs:us-east-1:123456789012:schedule",
        handler: &router,
        invocation_time: Duration::from_secs(10),
    };
    // Warm: nurture only, down. Hot: crm refuses it (400), outreach takes it.
    send(
        &aws,
        &aws.queue_url,
        &envelope("warm", r#"{"icp_score":60}"#).to_json(),
    )
    .await;
    send(
        &aws,
        &aws.queue_url,
        &envelope("hot", r#"{"email":"hot@acme.com","icp_score":85}"#).to_json(),
    )
    .await;
    let started = std::time::Instant::now();
    let mut received_at = Vec::new();
    while started.elapsed() < Duration::from_secs(15) {
        let n = poller.poll_once(Duration::from_millis(200)).await.unwrap();
        if n > 0 {
            received_at.push(started.elapsed());
        }
        let dlq_depth = dlq_messages(&aws, &dlq).await;
        if dlq_depth == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let nurture_calls = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/nurture")
        .count();
    assert_eq!(
        nurture_calls,
        3 * 2,
        "three receives, two attempts each: {received_at:?}"
    );
    // Each wait held: the second receive no sooner than 1 s after the first, the third 2 s later.
    assert!(received_at.len() >= 3, "{received_at:?}");
    let gaps: Vec<Duration> = received_at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[0] >= Duration::from_millis(950), "{gaps:?}");
    assert!(
        gaps[gaps.len() - 1] >= Duration::from_millis(1_900),
        "{gaps:?}"
    );
    // The lead queue is empty; the DLQ holds both, each with its reason.
    assert!(aws.drain(0, Duration::from_millis(300)).await.is_empty());
    let list = clayhook(&aws, &dlq, &["list"]).await;
    assert_eq!(list.code, 0, "{}", list.stderr);
    let warm = list
        .stdout
        .lines()
        .find(|l| l.contains(&crate::support::lead_id("warm")))
        .unwrap();
    assert!(
        warm.contains("receives 3")
            && warm.contains(
                "reason retries exhausted after 3 failed receives over 3 s: nurture: answered 503"
            ),
        "{warm}"
    );
    let hot = list
        .stdout
        .lines()
        .find(|l| l.contains(&crate::support::lead_id("hot")))
        .unwrap();
    assert!(
        hot.contains("receives 1")
            && hot.contains("reason permanent: crm: answered 400")
            && hot.contains("delivered outreach")
            && hot.contains("owed crm"),
        "{hot}"
    );
    assert!(
        !list.stdout.contains("bad property"),
        "the answer's body stays out of the reason"
    );
}

async fn dlq_messages(aws: &Aws, dlq: &str) -> usize {
    let out = aws
        .sqs
        .get_queue_attributes()
        .queue_url(dlq)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .unwrap();
    out.attributes
        .unwrap_or_default()
        .get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The intake DLQ's records carry their reason under the one attribute name the lead DLQ uses,
/// and `clayhook dlq list` shows it; a record dead-lettered before the name was one (the old
/// `clayhook-reason` spelling) still shows its reason.
#[tokio::test(flavor = "multi_thread")]
async fn dlq_list_shows_the_reason_of_intake_dead_letters_in_either_spelling() {
    use clayhook::feed::feeder::Intake;
    use clayhook::feed::sqs::SqsIntake;
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
    let intake = SqsIntake {
        client: aws.sqs.clone(),
        queue_url: None,
        dead_letter_url: Some(dlq.clone()),
    };
    let mut row = aws_lambda_events::sqs::SqsMessage::default();
    row.body = Some("[1, 2]".into());
    intake
        .dead_letter(&row, "not a JSON object: an array")
        .await
        .unwrap();
    let legacy = aws_sdk_sqs::types::MessageAttributeValue::builder()
        .data_type("String")
        .string_value("clay answered 400")
        .build()
        .unwrap();
    aws.sqs
        .send_message()
        .queue_url(&dlq)
        .message_body("{\"row\":1}")
        .message_attributes("clayhook-reason", legacy)
        .send()
        .await
        .unwrap();

    let r = clayhook(&aws, &dlq, &["list"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("reason not a JSON object: an array"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("reason clay answered 400"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("reason -"), "{}", r.stdout);
}

/// `clayhook dlq` with the credentials people have: a `credential_process` profile in a config
/// file, as the AWS CLI reads it, and no key in the environment.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_works_with_a_credential_process_profile() {
    let aws = Aws::fresh().await;
    let dlq = aws
        .sqs
        .create_queue()
        .queue_name(crate::support::unique("cp-dlq"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    send(&aws, &dlq, "{\"row\":1}").await;
    let dir = std::env::temp_dir().join(crate::support::unique("clayhook-cp"));
    std::fs::create_dir_all(&dir).unwrap();
    let process = dir.join("credentials.sh");
    std::fs::write(
        &process,
        "#!/bin/sh\necho '{\"Version\": 1, \"AccessKeyId\": \"testing\", \"SecretAccessKey\": \"testing\"}'\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&process, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.join("config");
    std::fs::write(
        &config,
        format!(
            "[profile from-process]\nregion = us-east-1\ncredential_process = {}\n",
            process.display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clayhook"));
    cmd.args(["dlq", "list"])
        .env("AWS_ENDPOINT_URL", moto_url())
        .env("AWS_CONFIG_FILE", &config)
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("none"))
        .env("AWS_PROFILE", "from-process")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env("DLQ_URL", &dlq)
        .env("IDEMPOTENCY_TABLE", &aws.table)
        .env_remove("ROUTING_RULES");
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("clayhook dlq"))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("1 record(s) in the dead-letter queue"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
