//! Test harness: a real `moto_server` (DynamoDB and SQS over the AWS wire protocol) on a free
//! loopback port, shared by the tests of one binary, with a fresh table and queue per test.
#![allow(dead_code)]

pub mod chaos;
pub mod clay;
pub mod emulator;
pub mod standin;

use aws_config::Region;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The moto_server to run: `$MOTO_SERVER`, else `scripts/moto_server` (moto with atomic
/// DynamoDB writes, as the real service's are; it runs under the project venv).
pub fn moto_path() -> PathBuf {
    if let Ok(p) = std::env::var("MOTO_SERVER") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/moto_server")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Starts moto once per test binary. The server dies with the test process (PR_SET_PDEATHSIG
/// from a thread that lives as long as the process), so no server outlives a run.
pub fn moto_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let port = free_port();
            let path = moto_path();
            let mut cmd = Command::new(&path);
            cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            unsafe {
                use std::os::unix::process::CommandExt;
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let mut child = cmd.spawn().unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}); run `make venv` or set MOTO_SERVER",
                    path.display()
                )
            });
            let _ = tx.send((port, child.id()));
            // This thread is the child's "parent" for PDEATHSIG: it lives as long as the server.
            let _ = child.wait();
        });
        let (port, _pid) = rx.recv().expect("moto thread");
        wait_for_port(port, Duration::from_secs(30));
        format!("http://127.0.0.1:{port}")
    })
}

pub fn wait_for_port(port: u16, limit: Duration) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < limit,
            "port {port} did not open in {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An SDK config pointing at `endpoint` with dummy credentials, the project's own timeouts.
pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    clayhook::aws::loader()
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .endpoint_url(endpoint)
        .load()
        .await
}

/// The functions' lean DynamoDB and SQS clients (src/aws_json) on `sdk`.
pub fn lean_clients(
    sdk: &aws_config::SdkConfig,
) -> (
    clayhook::aws_json::AwsJsonClient,
    clayhook::aws_json::AwsJsonClient,
) {
    let c = clayhook::wiring::Clients::new(sdk.clone()).expect("clients");
    (c.dynamodb, c.queue)
}

/// An attribute read through the SDK, as the JSON protocol (and so `clayhook`'s parsers) has it.
#[allow(dead_code)]
pub fn json_attribute(v: &aws_sdk_dynamodb::types::AttributeValue) -> serde_json::Value {
    use aws_sdk_dynamodb::types::AttributeValue as A;
    match v {
        A::S(s) => serde_json::json!({ "S": s }),
        A::N(n) => serde_json::json!({ "N": n }),
        A::Bool(b) => serde_json::json!({ "BOOL": b }),
        A::Null(_) => serde_json::json!({ "NULL": true }),
        A::L(l) => serde_json::json!({ "L": l.iter().map(json_attribute).collect::<Vec<_>>() }),
        A::M(m) => serde_json::json!({ "M": m
            .iter()
            .map(|(k, v)| (k.clone(), json_attribute(v)))
            .collect::<serde_json::Map<_, _>>() }),
        other => panic!("no JSON form for {other:?} in these tests"),
    }
}

/// A loopback URL where nothing listens.
pub fn dead_endpoint() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

/// Sends every log line of this test binary, as JSON, to `target/test-logs/<binary>.log`, where
/// `scripts/check_logs.py` looks for secrets and email addresses after the run.
pub fn capture_logs() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-logs");
        std::fs::create_dir_all(&dir).expect("log dir");
        let file = std::fs::File::create(dir.join(format!("{}.log", env!("CARGO_CRATE_NAME"))))
            .expect("log file");
        // The functions' own line format; clayhook at DEBUG so more lines meet the hygiene check.
        clayhook::logging::init_with(true, "info,clayhook=debug", std::sync::Mutex::new(file));
    });
}

/// A lead ID as ingest derives them (64 lowercase hex), named for the test's reading.
pub fn lead_id(name: &str) -> String {
    clayhook::idempotency::sha256_hex(name.as_bytes())
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fresh table and queue on the shared moto server.
#[derive(Clone)]
pub struct Aws {
    pub ddb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    /// The lean clients the functions' hot path uses, on the same moto.
    pub dynamodb: clayhook::aws_json::AwsJsonClient,
    pub queue: clayhook::aws_json::AwsJsonClient,
    pub table: String,
    pub queue_url: String,
}

impl Aws {
    pub async fn fresh() -> Aws {
        Self::fresh_with(false).await
    }

    pub async fn fresh_with(fifo: bool) -> Aws {
        capture_logs();
        let sdk = sdk_config(moto_url()).await;
        let ddb = aws_sdk_dynamodb::Client::new(&sdk);
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let (dynamodb, queue) = lean_clients(&sdk);
        let table = unique("clayhook");
        create_table(&ddb, &table).await;
        let mut name = unique("leads");
        let mut q = sqs.create_queue();
        if fifo {
            name.push_str(".fifo");
            q = q.attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true");
        }
        let queue_url = q
            .queue_name(name)
            .send()
            .await
            .expect("create queue")
            .queue_url
            .expect("queue url");
        Aws {
            ddb,
            sqs,
            dynamodb,
            queue,
            table,
            queue_url,
        }
    }

    /// Every message on the queue (received, not deleted), waiting up to `wait` for `at_least`.
    pub async fn drain(&self, at_least: usize, wait: Duration) -> Vec<aws_sdk_sqs::types::Message> {
        let start = Instant::now();
        let mut all = Vec::new();
        loop {
            let out = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .visibility_timeout(300)
                .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
                .send()
                .await
                .expect("receive");
            let got = out.messages.unwrap_or_default();
            let empty = got.is_empty();
            all.extend(got);
            if empty && (all.len() >= at_least || start.elapsed() > wait) {
                return all;
            }
        }
    }

    pub async fn items(
        &self,
    ) -> Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
        self.ddb
            .scan()
            .table_name(&self.table)
            .consistent_read(true)
            .send()
            .await
            .expect("scan")
            .items
            .unwrap_or_default()
    }
}

pub async fn create_table(ddb: &aws_sdk_dynamodb::Client, table: &str) {
    clayhook::table::create(ddb, table)
        .await
        .expect("create table");
}
