//! `clayhook push`: rows from a CSV or JSON Lines file (or standard input) into Clay table
//! webhooks, one object per POST, paced, retried, counted against the 50,000 limit per webhook
//! in a state file, resumable, with failed rows written to a file to run again.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::clay::ClayClient;
use super::journal::{Entry, Journal, JournalError};
use super::{ClayWebhook, Pace, prepare_raw, prepare_row, row_key, webhook_refused};
use crate::delivery::retry::{Attempt, RetryPolicy};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Jsonl,
}

#[derive(Debug, Clone)]
pub struct PushOptions {
    pub webhooks: Vec<ClayWebhook>,
    /// `-` reads standard input.
    pub input: PathBuf,
    /// Guessed from the extension, or from the first byte on standard input.
    pub format: Option<Format>,
    pub state: PathBuf,
    pub failed: PathBuf,
    pub rate: f64,
    pub limit: u64,
    pub retry: RetryPolicy,
    pub progress: bool,
}

/// Why a run stopped before the end of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// Every webhook has used `limit` submissions.
    LimitReached { limit: u64 },
    /// Clay refused the webhook itself (wrong token, deleted source).
    WebhookRefused { webhook: String, status: u16 },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushSummary {
    pub sent: u64,
    pub failed: u64,
    pub skipped: u64,
    /// Rows left when the run stopped early; a re-run sends them.
    pub not_sent: u64,
    pub stop: Option<Stop>,
    /// Each webhook's label and the submissions it has used.
    pub usage: Vec<(String, u64)>,
    pub failed_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{path}: {reason}")]
    Input { path: String, reason: String },
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("failed-rows file {path}: {source}")]
    FailedFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One input row: where it was, and its POST body or why it cannot be sent.
struct InputRow {
    line: u64,
    body: Result<Vec<u8>, String>,
    /// The text to write to the failed-rows file when the row cannot even be parsed.
    raw: String,
}

fn format_of(path: &Path, text: &str) -> Format {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("csv") => Format::Csv,
        Some("jsonl" | "ndjson" | "json") => Format::Jsonl,
        _ if text.trim_start().starts_with('{') => Format::Jsonl,
        _ => Format::Csv,
    }
}

fn read_input(opts: &PushOptions) -> Result<Vec<InputRow>, PushError> {
    let name = opts.input.display().to_string();
    let input_err = |reason: String| PushError::Input {
        path: name.clone(),
        reason,
    };
    let mut bytes = Vec::new();
    if opts.input.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut bytes)
    } else {
        std::fs::File::open(&opts.input).and_then(|mut f| f.read_to_end(&mut bytes))
    }
    .map_err(|e| input_err(e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|e| input_err(format!("not UTF-8 text ({e})")))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    match opts.format.unwrap_or_else(|| format_of(&opts.input, text)) {
        Format::Jsonl => Ok(text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| InputRow {
                line: i as u64 + 1,
                body: prepare_raw(l.as_bytes()).map_err(|e| e.to_string()),
                raw: l.to_string(),
            })
            .collect()),
        Format::Csv => read_csv(text).map_err(input_err),
    }
}

/// A CSV file with a header row: each record becomes a flat object of strings, in column order.
fn read_csv(text: &str) -> Result<Vec<InputRow>, String> {
    let mut reader = csv::ReaderBuilder::new().from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| format!("CSV header: {e}"))?
        .clone();
    let mut seen = std::collections::HashSet::new();
    for h in &headers {
        if !seen.insert(h) {
            return Err(format!("CSV header names the column {h:?} twice"));
        }
    }
    Ok(reader
        .records()
        .map(|record| match record {
            Ok(r) => {
                let object: serde_json::Map<String, serde_json::Value> = headers
                    .iter()
                    .zip(r.iter())
                    .map(|(h, v)| (h.to_string(), serde_json::Value::String(v.to_string())))
                    .collect();
                let value = serde_json::Value::Object(object);
                InputRow {
                    line: r.position().map_or(0, |p| p.line()),
                    body: prepare_row(&value).map_err(|e| e.to_string()),
                    raw: value.to_string(),
                }
            }
            Err(e) => InputRow {
                line: e.position().map_or(0, |p| p.line()),
                body: Err(format!("CSV: {e}")),
                raw: String::new(),
            },
        })
        .collect())
}

fn why(attempt: &Attempt) -> String {
    match attempt {
        Attempt::Delivered => "accepted".into(),
        Attempt::Status { status, detail, .. } => format!("Clay answered {status}: {detail}"),
        Attempt::Transport { detail, .. } => format!("no answer from Clay: {detail}"),
    }
}

/// Runs one push. Progress and per-row problems go to standard error; the summary is returned.
pub async fn push(opts: &PushOptions, client: &ClayClient) -> Result<PushSummary, PushError> {
    let rows = read_input(opts)?;
    let mut journal = Journal::open(&opts.state)?;
    let bar = ProgressBar::with_draw_target(
        Some(rows.len() as u64),
        if opts.progress {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    if let Ok(style) =
        ProgressStyle::with_template("{bar:30} {pos}/{len} rows · {per_sec} · ETA {eta} · {msg}")
    {
        bar.set_style(style);
    }
    let say = |text: String| bar.suspend(|| eprintln!("{text}"));
    for w in opts.webhooks.iter().filter(|w| !journal.knows(&w.key)) {
        say(format!(
            "note: no earlier state for webhook {} in {}: its count of Clay's {} submissions starts at 0 here; if rows went to it from another machine or state file, stop and pass that file with --state",
            w.label,
            journal.path().display(),
            opts.limit
        ));
    }
    if journal.unreadable_lines > 0 {
        say(format!(
            "note: {} unreadable line(s) in {} skipped (a run cut short)",
            journal.unreadable_lines,
            opts.state.display()
        ));
    }
    let mut pace = Pace::per_second(opts.rate);
    let mut summary = PushSummary::default();
    let mut failed_rows: Vec<String> = Vec::new();
    let mut occurrences: HashMap<Vec<u8>, u32> = HashMap::new();
    let mut current = 0usize;
    let total = rows.len() as u64;
    for (done, row) in rows.into_iter().enumerate() {
        let body = match row.body {
            Ok(b) => b,
            Err(reason) => {
                say(format!("line {}: not sent: {reason}", row.line));
                summary.failed += 1;
                failed_rows.push(row.raw);
                bar.inc(1);
                continue;
            }
        };
        let n = occurrences.entry(body.clone()).or_insert(0);
        let key = row_key(&body, *n);
        *n += 1;
        if journal.is_accepted(&key) {
            summary.skipped += 1;
            bar.inc(1);
            continue;
        }
        let webhook = loop {
            let Ok(found) = super::next_with_room(
                &opts.webhooks,
                current,
                |w| {
                    std::future::ready(Ok::<_, std::convert::Infallible>(
                        journal.submissions(&w.key) < opts.limit,
                    ))
                },
                |w, next| {
                    say(format!(
                        "webhook {} has used its {} submissions; going on with webhook {}",
                        w.label, opts.limit, next.label
                    ))
                },
            )
            .await;
            let Some((index, webhook)) = found else {
                summary.stop = Some(Stop::LimitReached { limit: opts.limit });
                summary.not_sent = total - done as u64;
                break None;
            };
            current = index;
            bar.set_message(format!("webhook {}", webhook.label));
            let deadline = SystemTime::now() + Duration::from_secs(86_400);
            // Submissions this webhook has left beyond the one the first attempt uses.
            let mut left = opts.limit - journal.submissions(&webhook.key) - 1;
            let more_submissions = || {
                let granted = left > 0;
                left = left.saturating_sub(1);
                std::future::ready(granted)
            };
            let sub = client
                .submit(
                    webhook,
                    &body,
                    &opts.retry,
                    &mut pace,
                    deadline,
                    more_submissions,
                )
                .await;
            journal.record(Entry {
                webhook: webhook.key.clone(),
                row: key.clone(),
                accepted: sub.accepted(),
                counted: sub.counted,
            })?;
            // The webhook ran out mid-row: the row goes on with the next one.
            if !sub.out_of_submissions {
                break Some((webhook, sub));
            }
        };
        let Some((webhook, sub)) = webhook else {
            break;
        };
        bar.inc(1);
        if sub.accepted() {
            summary.sent += 1;
        } else if webhook_refused(&sub.last) {
            let status = match sub.last {
                Attempt::Status { status, .. } => status,
                _ => 0,
            };
            summary.stop = Some(Stop::WebhookRefused {
                webhook: webhook.label.clone(),
                status,
            });
            summary.not_sent = total - done as u64;
            break;
        } else {
            say(format!(
                "line {}: not sent after {} attempt(s): {}",
                row.line,
                sub.attempts,
                why(&sub.last)
            ));
            summary.failed += 1;
            failed_rows.push(String::from_utf8_lossy(&body).into_owned());
        }
    }
    bar.finish_and_clear();
    if !failed_rows.is_empty() {
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&opts.failed)?;
            for r in &failed_rows {
                f.write_all(r.as_bytes())?;
                f.write_all(b"\n")?;
            }
            f.flush()
        };
        write().map_err(|source| PushError::FailedFile {
            path: opts.failed.clone(),
            source,
        })?;
        summary.failed_file = Some(opts.failed.clone());
    }
    summary.usage = opts
        .webhooks
        .iter()
        .map(|w| (w.label.clone(), journal.submissions(&w.key)))
        .collect();
    Ok(summary)
}

impl PushSummary {
    /// The lines printed at the end of a run.
    pub fn report(&self, limit: u64, state: &Path) -> String {
        let mut out = format!(
            "sent {} · failed {} · skipped {} (already accepted)",
            self.sent, self.failed, self.skipped
        );
        if self.not_sent > 0 {
            out.push_str(&format!(" · not sent {}", self.not_sent));
        }
        out.push('\n');
        for (label, used) in &self.usage {
            out.push_str(&format!(
                "webhook {label}: {used} of {limit} submissions used\n"
            ));
        }
        if let Some(f) = &self.failed_file {
            out.push_str(&format!(
                "failed rows written to {} (fix them and push that file)\n",
                f.display()
            ));
        }
        match &self.stop {
            Some(Stop::LimitReached { limit }) => out.push_str(&format!(
                "stopped: every webhook has used Clay's limit of {limit} submissions (counted in {}). \
                 Create a new webhook source in Clay and add it with --webhook; a re-run sends the rows not sent.\n",
                state.display()
            )),
            Some(Stop::WebhookRefused { webhook, status }) => out.push_str(&format!(
                "stopped: Clay answered {status} for webhook {webhook}: check the URL and the --auth-token \
                 (sent as x-clay-webhook-auth); a re-run sends the rows not sent.\n"
            )),
            None => {}
        }
        out
    }
}
