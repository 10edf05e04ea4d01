//! The built `bootstrap` files under the AWS Lambda Runtime Interface Emulator.

use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::free_port;

pub fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn required_env(name: &str) -> PathBuf {
    let v = std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run this test through `make e2e`"));
    PathBuf::from(v)
}

/// One function under the emulator, killed on drop.
pub struct Emulated {
    child: Child,
    pub invoke_url: String,
    pub log: PathBuf,
}

impl Emulated {
    /// The emulator's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL to the emulator and the function process: a Lambda dying mid-invocation.
    pub fn kill(&mut self) {
        let pgid = self.child.id() as i32;
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Emulated {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn emulate(name: &str, bootstrap: &Path, env: &HashMap<String, String>) -> Emulated {
    let rie = required_env("AWS_LAMBDA_RIE");
    assert!(
        bootstrap.exists(),
        "{} is missing: run `sam build`",
        bootstrap.display()
    );
    let log_dir = manifest()
        .join(std::env::var("CLAYHOOK_LOG_DIR").unwrap_or_else(|_| "target/e2e-logs".into()));
    std::fs::create_dir_all(&log_dir).unwrap();
    let log = log_dir.join(format!("{name}.log"));
    // A free port can be taken by a parallel test between the check and the emulator's bind:
    // an emulator that exits at once is started again on other ports.
    for _ in 0..5 {
        let port = free_port();
        let api_port = free_port();
        let out = std::fs::File::create(&log).unwrap();
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(&rie)
            .arg("--runtime-interface-emulator-address")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--runtime-api-address")
            .arg(format!("127.0.0.1:{api_port}"))
            .arg(bootstrap)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_FUNCTION_TIMEOUT", "30")
            .envs(env)
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .process_group(0)
            .spawn()
            .expect("start aws-lambda-rie");
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if child.try_wait().ok().flatten().is_some() {
                break;
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Emulated {
                    child,
                    invoke_url: format!(
                        "http://127.0.0.1:{port}/2015-03-31/functions/function/invocations"
                    ),
                    log,
                };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!(
        "aws-lambda-rie did not start for {name}; see {}",
        log.display()
    );
}

pub async fn invoke(f: &Emulated, event: &Value) -> Value {
    let resp = reqwest::Client::new()
        .post(&f.invoke_url)
        .body(event.to_string())
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("invoke");
    let text = resp.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("invocation answer is not JSON: {text}"))
}

pub fn event_file(name: &str) -> Value {
    let path = manifest().join("events").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The router's variables for every webhook destination, each at `<base>/<destination>`.
pub fn destination_vars(base: &str) -> Vec<(&'static str, String)> {
    [
        ("CRM_WEBHOOK_URL", "crm"),
        ("OUTREACH_WEBHOOK_URL", "outreach"),
        ("NURTURE_WEBHOOK_URL", "nurture"),
        ("SLACK_WEBHOOK_URL", "slack"),
        ("ZAPIER_WEBHOOK_URL", "zapier"),
    ]
    .into_iter()
    .map(|(var, path)| (var, format!("{base}/{path}")))
    .collect()
}

/// A function's variables from events/env.json, pointed at this test's resources.
pub fn function_env(function: &str, overrides: &[(&str, String)]) -> HashMap<String, String> {
    let all = event_file("env.json");
    let mut env: HashMap<String, String> = all[function]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    // events/env.json points the router at `sam local`'s queues (host.docker.internal); the
    // tests here hand it batches themselves, with no queue to change unless they name one.
    if function == "RouterFunction" {
        env.remove("LEAD_QUEUE_URL");
        env.remove("LEAD_DLQ_URL");
    }
    for (k, v) in overrides {
        env.insert(k.to_string(), v.clone());
    }
    env
}

/// A function's log as the emulator captured it, checked line by line: every line the function
/// wrote is one JSON object; each line written while an invocation runs (between the emulator's
/// INVOKE START and END) carries the `requestId` of an invocation the emulator ran, log lines and metric
/// documents alike. Lines outside any invocation (start-up, and the runtime's last words when the
/// emulator goes away) may carry none, but any id they do carry must be real. Returns the objects.
pub fn function_log_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).expect("function log");
    let is_emulator_line = |l: &str| {
        l.starts_with("START RequestId: ")
            || l.starts_with("END RequestId: ")
            || l.starts_with("REPORT RequestId: ")
            || (l.len() > 25 && l.as_bytes()[2] == b' ' && l.contains(" (rapid) "))
    };
    let ids: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("START RequestId: "))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    let mut running = false;
    let mut inside = 0;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if is_emulator_line(line) {
            // The emulator prints START before the function's init; INVOKE START is the handler.
            if line.contains("INVOKE START") {
                running = true;
            } else if line.starts_with("END RequestId: ") {
                running = false;
            }
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{}:{}: not JSON ({e}): {line}", path.display(), n + 1));
        assert!(
            value.is_object(),
            "{}:{}: not an object",
            path.display(),
            n + 1
        );
        let id = value["requestId"].as_str();
        if running || id.is_some() {
            assert!(
                ids.contains(id.unwrap_or_default()),
                "{}:{}: no requestId of an invocation: {line}",
                path.display(),
                n + 1
            );
            inside += 1;
        }
        out.push(value);
    }
    assert!(
        inside > 0,
        "{}: no line written during an invocation",
        path.display()
    );
    out
}
