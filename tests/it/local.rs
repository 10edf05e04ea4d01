//! `clayhook local` (what `make local` runs), as the real binary: it starts its own moto_server,
//! serves ingest, routes queued leads to real local HTTP servers, feeds Clay from the intake
//! queue, and stops cleanly on SIGTERM.

use crate::support::clay::FakeClay;
use crate::support::{free_port, moto_path, sdk_config, wait_for_port};
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "local-test-token";
const CLAY_TOKEN: &str = "local-clay-table-token";

/// The pipeline's process; killed if the test fails before it stops it.
struct Pipeline(Child);

impl Drop for Pipeline {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn until<T>(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_pipeline_receives_routes_and_feeds_clay_then_stops_on_sigterm() {
    let downstream = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .mount(&downstream)
        .await;
    let clay = FakeClay::start(Some(CLAY_TOKEN)).await;
    let (listen, moto_port) = (free_port(), free_port());
    let log_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/local-logs");
    std::fs::create_dir_all(&log_dir).unwrap();
    let log = std::fs::File::create(log_dir.join("pipeline.log")).unwrap();

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clayhook"));
    cmd.args(["local", "--listen", &format!("127.0.0.1:{listen}")])
        .args(["--moto-port", &moto_port.to_string()])
        .env("MOTO_SERVER", moto_path())
        .env("CLAY_WEBHOOK_SECRETS", TOKEN)
        .env("CLAY_WEBHOOK_URLS", clay.webhook(1))
        .env("CLAY_WEBHOOK_AUTH_TOKENS", CLAY_TOKEN)
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .env_remove("AWS_ENDPOINT_URL")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log));
    for (var, path) in [
        ("CRM_WEBHOOK_URL", "crm"),
        ("OUTREACH_WEBHOOK_URL", "outreach"),
        ("NURTURE_WEBHOOK_URL", "nurture"),
        ("SLACK_WEBHOOK_URL", "slack"),
        ("ZAPIER_WEBHOOK_URL", "zapier"),
    ] {
        cmd.env(var, format!("{}/{path}", downstream.uri()));
    }
    let mut pipeline = Pipeline(cmd.spawn().expect("clayhook local"));
    // moto starts first, then ingest listens: the port opening means everything is up.
    tokio::task::spawn_blocking(move || wait_for_port(listen, Duration::from_secs(60)))
        .await
        .unwrap();

    // Ingest: a hot lead is accepted once; the same callback again is a duplicate.
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{listen}/api/clay/enriched");
    let lead = json!({"Work Email": "jane@example.com", "First Name": "Jane",
                      "Company": "Acme", "ICP Score": "95"});
    let post = || {
        http.post(&url)
            .header("x-clay-signature", TOKEN)
            .header("content-type", "application/json")
            .body(lead.to_string())
            .send()
    };
    assert_eq!(post().await.unwrap().status(), 202);
    let again = post().await.unwrap();
    assert_eq!(again.status(), 200);
    let wrong = http
        .post(&url)
        .header("x-clay-signature", "not-the-token")
        .header("content-type", "application/json")
        .body(lead.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    // The router, polling the lead queue, delivers it to crm, outreach, slack and zapier, once each.
    let paths = until("deliveries", Duration::from_secs(30), async || {
        let mut paths: Vec<String> = downstream
            .received_requests()
            .await?
            .iter()
            .map(|r| r.url.path().trim_start_matches('/').to_string())
            .collect();
        paths.sort();
        (paths.len() >= 4).then_some(paths)
    })
    .await;
    assert_eq!(paths, ["crm", "outreach", "slack", "zapier"]);

    // `clayhook smoke`, as the deploy docs end with it: 202, 200 duplicate, 401, and its test
    // lead reaches no destination.
    let smoke = Command::new(env!("CARGO_BIN_EXE_clayhook"))
        .args(["smoke", &url])
        .env("CLAY_WEBHOOK_SECRETS", TOKEN)
        .output()
        .expect("clayhook smoke");
    let report = String::from_utf8_lossy(&smoke.stdout);
    assert!(
        smoke.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&smoke.stderr)
    );
    for line in [
        "ok    new lead",
        "ok    same lead again",
        "ok    wrong token",
        "routed nowhere",
    ] {
        assert!(report.contains(line), "{line}: {report}");
    }
    assert!(!report.contains(TOKEN), "{report}");
    until(
        "the smoke lead through the router",
        Duration::from_secs(30),
        async || {
            let log = std::fs::read_to_string(log_dir.join("pipeline.log")).ok()?;
            log.contains("smoke test lead (clayhook smoke): routed nowhere")
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        downstream.received_requests().await.unwrap().len(),
        4,
        "the smoke lead reached a destination"
    );

    // The feeder, polling the intake queue, sends a row to Clay with the table's token; a row
    // that is not a JSON object goes to the intake DLQ with the reason.
    let sqs = aws_sdk_sqs::Client::new(&sdk_config(&format!("http://127.0.0.1:{moto_port}")).await);
    let queue = |name: &'static str| {
        let sqs = sqs.clone();
        async move {
            sqs.get_queue_url()
                .queue_name(name)
                .send()
                .await
                .unwrap()
                .queue_url
                .unwrap()
        }
    };
    let intake = queue("clayhook-intake").await;
    let row = json!({"email": "sam@example.org", "company": "Globex"});
    for body in [row.to_string(), "[1, 2]".to_string()] {
        sqs.send_message()
            .queue_url(&intake)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }
    let sent = until("a row in Clay", Duration::from_secs(30), async || {
        let accepted = clay.accepted();
        (!accepted.is_empty()).then_some(accepted)
    })
    .await;
    assert_eq!(sent, vec![(1, row)]);
    let dlq = queue("clayhook-intake-dlq").await;
    let dead = until("the DLQ", Duration::from_secs(30), async || {
        let out = sqs
            .receive_message()
            .queue_url(&dlq)
            .message_attribute_names("All")
            .wait_time_seconds(1)
            .send()
            .await
            .ok()?;
        out.messages.filter(|m| !m.is_empty())
    })
    .await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body.as_deref(), Some("[1, 2]"));
    let reason = dead[0]
        .message_attributes
        .as_ref()
        .and_then(|a| a.get("clayhook_reason"))
        .and_then(|v| v.string_value.clone())
        .unwrap_or_default();
    assert!(reason.contains("array"), "{reason}");

    // Nothing was delivered twice while the feeder worked.
    assert_eq!(downstream.received_requests().await.unwrap().len(), 4);

    // SIGTERM stops everything, moto included, with success.
    unsafe { libc::kill(pipeline.0.id() as i32, libc::SIGTERM) };
    let start = Instant::now();
    let status = loop {
        if let Some(status) = pipeline.0.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "still running");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status}");
    let text = std::fs::read_to_string(log_dir.join("pipeline.log")).unwrap();
    assert!(text.contains("clayhook local pipeline is up"), "{text}");
    assert!(text.contains("stopping"), "{text}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", moto_port)).is_err(),
        "moto_server outlived the pipeline"
    );
}

/// A secret reference in `clayhook local` would be taken for the value (moto holds no secrets):
/// it stops with a message naming the variable instead.
#[test]
fn the_local_pipeline_refuses_secret_references() {
    let out = Command::new(env!("CARGO_BIN_EXE_clayhook"))
        .args(["local", "--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--moto-port", &free_port().to_string()])
        .env("MOTO_SERVER", moto_path())
        .env("CLAY_WEBHOOK_SECRETS", "local-test-token-0123456789")
        .env(
            "SLACK_WEBHOOK_URL",
            "secretsmanager:clayhook/app#SLACK_WEBHOOK_URL",
        )
        .env_remove("AWS_ENDPOINT_URL")
        .output()
        .expect("clayhook local");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("takes secret values, not references")
            && stderr.contains("SLACK_WEBHOOK_URL=secretsmanager:clayhook/app#SLACK_WEBHOOK_URL"),
        "{stderr}"
    );
}
