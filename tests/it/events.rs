//! `clayhook events list | show | replay`, the real binary, against moto_server: the router
//! archives what it routes with each destination's timeline; a replay goes through the lead
//! queue and the ledger (once per destination unless --force).

use crate::support::{Aws, moto_url};
use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use clayhook::delivery::retry::RetryPolicy;
use clayhook::destinations::webhook::Webhook;
use clayhook::destinations::{DestinationSettings, HttpDestinations};
use clayhook::envelope::Envelope;
use clayhook::lead::Lead;
use clayhook::router::ledger::DynamoDbDeliveryLedger;
use clayhook::router::rules::default_rules;
use clayhook::router::{Router, RouterSettings};
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, SystemTime};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn events(aws: &Aws, args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clayhook"));
    cmd.arg("events")
        .args(args)
        .env("AWS_ENDPOINT_URL", moto_url())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("IDEMPOTENCY_TABLE", &aws.table)
        .env("LEAD_QUEUE_URL", &aws.queue_url)
        .env_remove("ROUTING_RULES");
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("clayhook events"))
        .await
        .expect("join");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    if !args.contains(&"--show-email") {
        for raw in ["ok@events", "down@events", "refused@events"] {
            assert!(
                !run.stdout.contains(raw) && !run.stderr.contains(raw),
                "an email address reached the output: {}",
                run.stdout
            );
        }
    }
    run
}

type R = Router<DynamoDbDeliveryLedger, HttpDestinations>;

fn router(aws: &Aws, server: &MockServer) -> R {
    let url = |p: &str| Some(Webhook::new(format!("{}/{p}", server.uri()), None));
    Router {
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
            schedule: Default::default(),
            control: Default::default(),
            archive_days: 30,
        },
        ledger: DynamoDbDeliveryLedger::new(aws.dynamodb.clone(), &aws.table),
        destinations: HttpDestinations::new(
            DestinationSettings {
                crm: None,
                outreach: None,
                nurture: url("nurture"),
                slack: None,
                zapier: url("zapier"),
                warehouse: None,
            },
            Duration::from_millis(500),
        )
        .unwrap(),
        redelivery: clayhook::queue::NoRedelivery,
        control: clayhook::delivery::control::NoControl,
    }
}

fn envelope(name: &str, score: u32) -> Envelope {
    let body =
        format!(r#"{{"email":"{name}@events.invalid","first_name":"N","icp_score":{score}}}"#);
    let (lead, _) = Lead::parse(body.as_bytes()).unwrap();
    Envelope::new(
        crate::support::lead_id(name),
        SystemTime::now(),
        Some("tbl".into()),
        lead,
    )
}

async fn route(r: &R, bodies: Vec<String>) {
    let mut event = SqsEvent::default();
    event.records = bodies
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            let mut m = SqsMessage::default();
            m.message_id = Some(format!("m{i}"));
            m.body = Some(b);
            m
        })
        .collect();
    r.handle(event, SystemTime::now() + Duration::from_secs(20))
        .await
        .unwrap();
}

async fn hits(server: &MockServer, p: &str, key: &str) -> usize {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| {
            r.url.path() == format!("/{p}")
                && r.headers
                    .get("idempotency-key")
                    .and_then(|v| v.to_str().ok())
                    == Some(key)
        })
        .count()
}

#[tokio::test]
async fn events_list_show_and_replay() {
    let aws = Aws::fresh().await;
    let server = MockServer::start().await;
    let ok = envelope("ok", 65);
    let refused = envelope("refused", 66);
    let down = envelope("down", 67);
    Mock::given(method("POST"))
        .and(path("/zapier"))
        .and(header("idempotency-key", format!("{}:zapier", refused.id)))
        .respond_with(ResponseTemplate::new(400))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/nurture"))
        .and(header("idempotency-key", format!("{}:nurture", down.id)))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let r = router(&aws, &server);
    route(&r, vec![ok.to_json(), refused.to_json(), down.to_json()]).await;

    let list = events(&aws, &["list", "--since", "1h"]).await;
    assert_eq!(list.code, 0, "{}", list.stderr);
    assert!(list.stdout.contains("3 lead(s)"), "{}", list.stdout);
    let status_of = |id: &str| {
        list.stdout
            .lines()
            .find(|l| l.contains(id))
            .unwrap_or_default()
            .to_string()
    };
    assert!(status_of(&ok.id).contains("delivered"), "{}", list.stdout);
    assert!(status_of(&refused.id).contains("failed"), "{}", list.stdout);
    assert!(status_of(&down.id).contains("waiting"), "{}", list.stdout);
    assert!(
        status_of(&down.id).contains("delivered zapier  owed nurture"),
        "{}",
        list.stdout
    );
    let failed = events(&aws, &["list", "--since", "1h", "--status", "failed"]).await;
    assert!(failed.stdout.contains("1 lead(s)"), "{}", failed.stdout);
    assert!(failed.stdout.contains(&refused.id));
    let other = events(&aws, &["list", "--source", "another"]).await;
    assert!(other.stdout.contains("0 lead(s)"), "{}", other.stdout);

    let show = events(&aws, &["show", &down.id]).await;
    assert_eq!(show.code, 0, "{}", show.stderr);
    let v: Value = serde_json::from_str(&show.stdout).unwrap();
    assert_eq!(v["status"], "waiting");
    assert_eq!(v["routed"], "nurture,zapier");
    assert_eq!(v["rules_now"], "nurture,zapier,warehouse");
    assert_eq!(v["lead"]["email"], "d***@events.invalid");
    let nurture = &v["destinations"]["nurture"];
    assert_eq!(nurture["status"], "waiting");
    assert_eq!(nurture["requests"], 2, "two attempts in the receive");
    assert_eq!(nurture["failed_receives"], 1);
    assert_eq!(nurture["timeline"][0]["outcome"], "answered 503");
    assert_eq!(v["destinations"]["zapier"]["status"], "delivered");
    let missing = events(&aws, &["show", &"0".repeat(64)]).await;
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("no archived event"),
        "{}",
        missing.stderr
    );

    // Replay: through the queue; the ledger keeps zapier's delivery to once...
    let replay = events(&aws, &["replay", &ok.id, "--destination", "zapier"]).await;
    assert_eq!(replay.code, 0, "{}", replay.stderr);
    assert!(
        replay.stdout.contains("replayed 1 lead(s) to zapier"),
        "{}",
        replay.stdout
    );
    let sent = aws.drain(1, Duration::from_secs(5)).await;
    assert_eq!(sent.len(), 1);
    let body = sent[0].body().unwrap().to_string();
    assert_eq!(
        Envelope::parse(&body)
            .unwrap()
            .replay
            .unwrap()
            .destinations
            .len(),
        1
    );
    route(&r, vec![body]).await;
    assert_eq!(
        hits(&server, "zapier", &format!("{}:zapier", ok.id)).await,
        1
    );
    // ...and --force sends it once more, to the named destination only.
    let forced = events(
        &aws,
        &["replay", &ok.id, "--destination", "zapier", "--force"],
    )
    .await;
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    let sent = aws.drain(1, Duration::from_secs(5)).await;
    let body = sent[0].body().unwrap().to_string();
    route(&r, vec![body.clone(), body]).await;
    assert_eq!(
        hits(&server, "zapier", &format!("{}:zapier", ok.id)).await,
        2
    );
    assert_eq!(
        hits(&server, "nurture", &format!("{}:nurture", ok.id)).await,
        1
    );

    // --since with a dry run sends nothing; bad arguments are clear errors.
    let dry = events(&aws, &["replay", "--since", "1h", "--dry-run"]).await;
    assert!(
        dry.stdout.contains("would replay 3 lead(s)"),
        "{}",
        dry.stdout
    );
    assert!(aws.drain(0, Duration::from_secs(1)).await.is_empty());
    let bad = events(&aws, &["replay", &ok.id, "--destination", "fax"]).await;
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("not a destination"), "{}", bad.stderr);
    let none = events(&aws, &["replay"]).await;
    assert_eq!(none.code, 1);
    assert!(none.stderr.contains("--since"), "{}", none.stderr);
}
