//! `clayhook push`, the real binary, against a local server playing Clay's webhook sources.

use crate::support::clay::{FakeClay, Script};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const TOKEN: &str = "clay-table-token-5f2e";

fn workdir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(crate::support::unique("push"));
    std::fs::create_dir_all(&dir).expect("workdir");
    dir
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run_in(dir: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clayhook"));
    cmd.current_dir(dir)
        .arg("push")
        .args(args)
        .env_remove("CLAY_WEBHOOK_AUTH_TOKEN")
        .env_remove("CLAY_SUBMISSION_LIMIT")
        // The default state goes under the user's state directory: this test's own.
        .env("XDG_STATE_HOME", dir.join("state"))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("clayhook push");
    if let Some(text) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("wait");
    let run = Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    };
    // Whatever happened, the token never reaches the terminal.
    assert!(
        !run.stdout.contains(TOKEN) && !run.stderr.contains(TOKEN),
        "token leaked:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    run
}

/// Each case runs its own blocking child process; the fake Clay needs a runtime of its own.
async fn run(dir: &Path, args: Vec<String>, stdin: Option<String>) -> Run {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_in(&dir, &args, stdin.as_deref())
    })
    .await
    .expect("join")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn rows(clay: &FakeClay) -> Vec<Value> {
    clay.accepted().into_iter().map(|(_, v)| v).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn csv_rows_go_one_object_per_post_with_the_token_and_a_rerun_skips_them() {
    let clay = FakeClay::start(Some(TOKEN)).await;
    let dir = workdir();
    std::fs::write(
        dir.join("leads.csv"),
        "email,Company Name,score\njane@acme.com,\"Acme, Inc.\",91\nbob@globex.io,Globex,40\n,Initech,\n",
    )
    .unwrap();
    let hook = clay.webhook(1);
    let a = args(&[
        "--webhook",
        &hook,
        "--auth-token",
        TOKEN,
        "--rate",
        "10",
        "leads.csv",
    ]);
    let r = run(&dir, a.clone(), None).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("sent 3 · failed 0 · skipped 0"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("3 of 50000 submissions used"),
        "{}",
        r.stdout
    );
    assert_eq!(
        rows(&clay),
        vec![
            json!({"email": "jane@acme.com", "Company Name": "Acme, Inc.", "score": "91"}),
            json!({"email": "bob@globex.io", "Company Name": "Globex", "score": "40"}),
            json!({"email": "", "Company Name": "Initech", "score": ""}),
        ]
    );
    // Resumable: the same file again sends nothing.
    let r = run(&dir, a, None).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("sent 0 · failed 0 · skipped 3"),
        "{}",
        r.stdout
    );
    assert_eq!(clay.hits().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn jsonl_on_standard_input_and_identical_rows_are_both_sent() {
    let clay = FakeClay::start(None).await;
    let dir = workdir();
    let input = "{\"email\":\"a@x.io\"}\n\n{\"email\":\"a@x.io\"}\n{\"nested\":{\"k\":[1,2]}}\n";
    let r = run(
        &dir,
        args(&["--webhook", &clay.webhook(1), "--rate", "10", "-"]),
        Some(input.into()),
    )
    .await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(rows(&clay).len(), 3);
    assert_eq!(rows(&clay)[2], json!({"nested": {"k": [1, 2]}}));
    let r = run(
        &dir,
        args(&["--webhook", &clay.webhook(1), "-"]),
        Some(input.into()),
    )
    .await;
    assert!(r.stdout.contains("skipped 3"), "{}", r.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_429_5xx_and_slow_ones_are_retried_until_accepted() {
    let clay = FakeClay::start(Some(TOKEN)).await;
    clay.script([
        Script::Status(429, Some(1)),
        Script::Status(503, None),
        Script::Slow(Duration::from_secs(3)),
        Script::Status(500, None),
    ]);
    let dir = workdir();
    std::fs::write(dir.join("leads.jsonl"), "{\"n\":1}\n{\"n\":2}\n").unwrap();
    let a = args(&[
        "--webhook",
        &clay.webhook(1),
        "--auth-token",
        TOKEN,
        "--rate",
        "10",
        "--timeout-ms",
        "500",
        "--max-attempts",
        "5",
        "leads.jsonl",
    ]);
    let r = run(&dir, a, None).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(rows(&clay), vec![json!({"n": 1}), json!({"n": 2})]);
    assert_eq!(clay.hits().len(), 6, "four refusals, then two rows");
    // The 429 asked for a second: the retry came no sooner.
    let hits = clay.hits();
    assert!(hits[1].0 - hits[0].0 >= Duration::from_millis(990));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_token_stops_the_run_with_a_clear_message_and_a_rerun_finishes() {
    let clay = FakeClay::start(Some(TOKEN)).await;
    let dir = workdir();
    std::fs::write(dir.join("leads.jsonl"), "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n").unwrap();
    let r = run(
        &dir,
        args(&[
            "--webhook",
            &clay.webhook(1),
            "--auth-token",
            "wrong",
            "leads.jsonl",
        ]),
        None,
    )
    .await;
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("stopped: Clay answered 401 for webhook #1"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("x-clay-webhook-auth") && r.stdout.contains("not sent 3"),
        "{}",
        r.stdout
    );
    assert_eq!(clay.hits().len(), 1, "one refusal is enough to stop");
    assert!(
        !dir.join("leads.jsonl.failed.jsonl").exists(),
        "not the rows' fault"
    );
    let r = run(
        &dir,
        args(&[
            "--webhook",
            &clay.webhook(1),
            "--auth-token",
            TOKEN,
            "--rate",
            "10",
            "leads.jsonl",
        ]),
        None,
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(rows(&clay).len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_limit_reached_mid_file_rotates_webhooks_then_stops_naming_it() {
    let clay = FakeClay::start(None).await;
    let dir = workdir();
    let lines: String = (1..=5).map(|i| format!("{{\"n\":{i}}}\n")).collect();
    std::fs::write(dir.join("leads.jsonl"), lines).unwrap();
    let (w1, w2, w3) = (clay.webhook(1), clay.webhook(2), clay.webhook(3));
    let r = run(
        &dir,
        args(&[
            "--webhook",
            &w1,
            "--webhook",
            &w2,
            "--limit",
            "2",
            "--rate",
            "10",
            "leads.jsonl",
        ]),
        None,
    )
    .await;
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("every webhook has used Clay's limit of 2 submissions"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("sent 4") && r.stdout.contains("not sent 1"),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr
            .contains("webhook #1 (…ok-1) has used its 2 submissions; going on with webhook #2"),
        "{}",
        r.stderr
    );
    let by_hook: Vec<usize> = clay.accepted().iter().map(|(h, _)| *h).collect();
    assert_eq!(by_hook, vec![1, 1, 2, 2]);
    // The counts live in the state file: a new webhook picks up the last row only.
    let r = run(
        &dir,
        args(&[
            "--webhook",
            &w1,
            "--webhook",
            &w2,
            "--webhook",
            &w3,
            "--limit",
            "2",
            "leads.jsonl",
        ]),
        None,
    )
    .await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("sent 1 · failed 0 · skipped 4"),
        "{}",
        r.stdout
    );
    assert_eq!(
        clay.accepted().last().map(|(h, v)| (*h, v.clone())),
        Some((3, json!({"n": 5})))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_5xx_on_a_webhooks_last_submission_sends_the_retry_to_the_next_webhook() {
    // Clay, like this fake, answers 200 past the limit and creates nothing. Row 2's 503 may
    // have used webhook #1's last submission, so its retry must not go there.
    let clay = FakeClay::start(None).await;
    clay.silent_limit(2);
    clay.script([Script::Take, Script::Status(503, None)]);
    let dir = workdir();
    let lines: String = (1..=3).map(|i| format!("{{\"n\":{i}}}\n")).collect();
    std::fs::write(dir.join("leads.jsonl"), lines).unwrap();
    let r = run(
        &dir,
        args(&[
            "--webhook",
            &clay.webhook(1),
            "--webhook",
            &clay.webhook(2),
            "--limit",
            "2",
            "--rate",
            "10",
            "leads.jsonl",
        ]),
        None,
    )
    .await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("sent 3 · failed 0"), "{}", r.stdout);
    assert_eq!(clay.dropped(), vec![], "rows Clay would have dropped");
    assert_eq!(
        clay.accepted(),
        vec![
            (1, json!({"n": 1})),
            (2, json!({"n": 2})),
            (2, json!({"n": 3}))
        ]
    );
    assert!(r.stdout.contains("2 of 2 submissions used"), "{}", r.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_and_broken_rows_are_rejected_one_by_one_into_the_failed_file() {
    let clay = FakeClay::start(None).await;
    let dir = workdir();
    let big = json!({"notes": "x".repeat(150_000)}).to_string();
    let input = format!("{{\"n\":1}}\n{big}\nnot json\n[1,2]\n{{\"n\":2}}\n");
    std::fs::write(dir.join("leads.jsonl"), input).unwrap();
    let r = run(
        &dir,
        args(&["--webhook", &clay.webhook(1), "--rate", "10", "leads.jsonl"]),
        None,
    )
    .await;
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("line 2: not sent: 150012 bytes, over Clay's 100 KB payload limit"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("line 3: not sent: not JSON"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("line 4: not sent: an array, not a JSON object"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.contains("sent 2 · failed 3"), "{}", r.stdout);
    let failed = std::fs::read_to_string(dir.join("leads.jsonl.failed.jsonl")).unwrap();
    assert_eq!(failed.lines().count(), 3);
    assert!(failed.lines().nth(1) == Some("not json"));
    assert_eq!(rows(&clay), vec![json!({"n": 1}), json!({"n": 2})]);
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_clay_keeps_refusing_are_written_out_and_a_rerun_of_that_file_sends_them() {
    let clay = FakeClay::start(None).await;
    clay.script([Script::Status(500, None), Script::Status(502, None)]);
    let dir = workdir();
    std::fs::write(dir.join("leads.jsonl"), "{\"n\":1}\n{\"n\":2}\n").unwrap();
    let r = run(
        &dir,
        args(&[
            "--webhook",
            &clay.webhook(1),
            "--max-attempts",
            "2",
            "--rate",
            "10",
            "leads.jsonl",
        ]),
        None,
    )
    .await;
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("line 1: not sent after 2 attempt(s): Clay answered 502"),
        "{}",
        r.stderr
    );
    assert!(
        r.stdout
            .contains("failed rows written to leads.jsonl.failed.jsonl"),
        "{}",
        r.stdout
    );
    // Two 5xx may each have reached Clay: both count against the limit.
    assert!(
        r.stdout.contains("3 of 50000 submissions used"),
        "{}",
        r.stdout
    );
    let r = run(
        &dir,
        args(&["--webhook", &clay.webhook(1), "leads.jsonl.failed.jsonl"]),
        None,
    )
    .await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(rows(&clay), vec![json!({"n": 2}), json!({"n": 1})]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rate_limit_spaces_posts_and_rates_over_clays_limit_are_refused() {
    let clay = FakeClay::start(None).await;
    let dir = workdir();
    let lines: String = (1..=6).map(|i| format!("{{\"n\":{i}}}\n")).collect();
    std::fs::write(dir.join("leads.jsonl"), lines).unwrap();
    let r = run(
        &dir,
        args(&["--webhook", &clay.webhook(1), "--rate", "10", "leads.jsonl"]),
        None,
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let hits = clay.hits();
    for pair in hits.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(
            gap >= Duration::from_millis(90),
            "posts {gap:?} apart at 10/s"
        );
    }
    let r = run(
        &dir,
        args(&["--webhook", &clay.webhook(1), "--rate", "11", "leads.jsonl"]),
        None,
    )
    .await;
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("at most 10 per second"), "{}", r.stderr);
    let r = run(
        &dir,
        args(&[
            "--webhook",
            &clay.webhook(1),
            "--auth-token",
            "a",
            "--auth-token",
            "b",
            "leads.jsonl",
        ]),
        None,
    )
    .await;
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("2 auth tokens for 1 webhooks"),
        "{}",
        r.stderr
    );
}

/// The default state lives under the user's state directory, a webhook it has never seen gets a
/// note, and a second run on the same state is refused while the first holds it.
#[tokio::test(flavor = "multi_thread")]
async fn the_state_is_kept_per_user_and_one_run_at_a_time_uses_it() {
    let clay = FakeClay::start(None).await;
    let dir = workdir();
    let lines: String = (1..=15).map(|i| format!("{{\"n\":{i}}}\n")).collect();
    std::fs::write(dir.join("leads.jsonl"), lines).unwrap();
    let hook = clay.webhook(1);
    // The first run, in the background: 15 rows at 10 a second.
    let first = Command::new(env!("CARGO_BIN_EXE_clayhook"))
        .current_dir(&dir)
        .args([
            "push",
            "--webhook",
            &hook,
            "--rate",
            "10",
            "--quiet",
            "leads.jsonl",
        ])
        .env("XDG_STATE_HOME", dir.join("state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("first push");
    let started = std::time::Instant::now();
    while clay.accepted().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the first run never sent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = run(
        &dir,
        args(&["--webhook", &hook, "--rate", "10", "leads.jsonl"]),
        None,
    )
    .await;
    assert_eq!(second.code, 2, "{}\n{}", second.stdout, second.stderr);
    assert!(
        second.stderr.contains("is in use by another clayhook push"),
        "{}",
        second.stderr
    );
    let first = tokio::task::spawn_blocking(move || first.wait_with_output())
        .await
        .expect("join")
        .expect("first push output");
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert_eq!(first.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("note: no earlier state for webhook #1"),
        "{stderr}"
    );
    assert_eq!(clay.accepted().len(), 15, "every row once");
    // The state is in the user's state directory, not the working directory.
    let states: Vec<_> = std::fs::read_dir(dir.join("state/clayhook"))
        .expect("state directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        states.len() == 1 && states[0].starts_with("push-") && states[0].ends_with(".jsonl"),
        "{states:?}"
    );
    // The next run knows the webhook: no note, nothing sent again.
    let again = run(&dir, args(&["--webhook", &hook, "leads.jsonl"]), None).await;
    assert_eq!(again.code, 0, "{}\n{}", again.stdout, again.stderr);
    assert!(
        !again.stderr.contains("no earlier state"),
        "{}",
        again.stderr
    );
    assert!(again.stdout.contains("skipped 15"), "{}", again.stdout);
    // An earlier version's state in the working directory stops a run that would ignore it.
    std::fs::write(dir.join(".clayhook-push-state.jsonl"), "").unwrap();
    let legacy = run(&dir, args(&["--webhook", &hook, "leads.jsonl"]), None).await;
    assert_eq!(legacy.code, 2, "{}\n{}", legacy.stdout, legacy.stderr);
    assert!(
        legacy
            .stderr
            .contains("pass --state .clayhook-push-state.jsonl to keep using it"),
        "{}",
        legacy.stderr
    );
    assert_eq!(clay.accepted().len(), 15, "nothing sent again");
}
