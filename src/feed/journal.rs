//! `clayhook push`'s state file: an append-only JSON Lines journal, one line per row submitted.
//! Folding it gives the submissions each webhook has used (Clay's 50,000 are for good) and the
//! rows already accepted (so a second run skips them). Each line is written and synced to disk
//! (`fdatasync`) before the next row is sent, so a run killed at any point, or a machine that
//! loses power, loses at most the row in flight. The file is locked for the whole run: two runs
//! at once would each count submissions on their own and pass Clay's limit together.

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The webhook's key (a hash of its URL; the URL itself is a credential).
    pub webhook: String,
    /// The row's key (content hash and occurrence).
    pub row: String,
    pub accepted: bool,
    /// Submissions this row may have used on the webhook.
    pub counted: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("state file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "state file {path} is in use by another clayhook push: wait for it to finish (two runs at once would each count submissions on their own and together pass Clay's limit)"
    )]
    Locked { path: PathBuf },
    #[error("no state directory: set XDG_STATE_HOME or HOME, or give --state")]
    NoStateDirectory,
}

/// Where a run keeps its state by default: `$XDG_STATE_HOME/clayhook/` (else
/// `$HOME/.local/state/clayhook/`), one file named after the run's first webhook, so every run
/// for that webhook finds it whatever the working directory.
pub fn default_path<F: Fn(&str) -> Option<String>>(
    env: &crate::config::Env<F>,
    first_webhook_key: &str,
) -> Result<PathBuf, JournalError> {
    let base = match env.optional("XDG_STATE_HOME") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        _ => PathBuf::from(env.optional("HOME").ok_or(JournalError::NoStateDirectory)?)
            .join(".local/state"),
    };
    Ok(base
        .join("clayhook")
        .join(format!("push-{first_webhook_key}.jsonl")))
}

pub struct Journal {
    path: PathBuf,
    file: File,
    submissions: HashMap<String, u64>,
    accepted: HashSet<String>,
    /// Webhooks with at least one line.
    known: HashSet<String>,
    /// Lines that were not entries (a line cut short by a crash): skipped, reported once.
    pub unreadable_lines: usize,
}

impl Journal {
    /// Opens (or creates) the journal at `path` and folds what it holds.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        let err = |source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        // The lock first, then the read: what is folded is what no other run can change.
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(JournalError::Locked {
                    path: path.to_path_buf(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(err(e)),
        }
        let mut submissions: HashMap<String, u64> = HashMap::new();
        let mut accepted = HashSet::new();
        let mut known = HashSet::new();
        let mut unreadable_lines = 0;
        for line in BufReader::new(File::open(path).map_err(err)?).lines() {
            let line = line.map_err(err)?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Entry>(&line) {
                Ok(e) => {
                    *submissions.entry(e.webhook.clone()).or_default() += u64::from(e.counted);
                    known.insert(e.webhook);
                    if e.accepted {
                        accepted.insert(e.row);
                    }
                }
                Err(_) => unreadable_lines += 1,
            }
        }
        // A line cut short by a crash must not swallow the next entry.
        if unreadable_lines > 0 {
            file.write_all(b"\n").map_err(err)?;
        }
        Ok(Journal {
            path: path.to_path_buf(),
            file,
            submissions,
            accepted,
            known,
            unreadable_lines,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this state has any line for the webhook: a webhook it does not know may have
    /// been used from elsewhere, and its count here starts at 0.
    pub fn knows(&self, webhook_key: &str) -> bool {
        self.known.contains(webhook_key)
    }

    pub fn submissions(&self, webhook_key: &str) -> u64 {
        self.submissions.get(webhook_key).copied().unwrap_or(0)
    }

    pub fn is_accepted(&self, row: &str) -> bool {
        self.accepted.contains(row)
    }

    pub fn record(&mut self, entry: Entry) -> Result<(), JournalError> {
        let mut line = serde_json::to_vec(&entry).map_err(|e| JournalError::Io {
            path: self.path.clone(),
            source: e.into(),
        })?;
        line.push(b'\n');
        // Synced before the next row goes out: the count never lags what Clay has seen.
        self.file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
            .map_err(|source| JournalError::Io {
                path: self.path.clone(),
                source,
            })?;
        self.known.insert(entry.webhook.clone());
        *self.submissions.entry(entry.webhook).or_default() += u64::from(entry.counted);
        if entry.accepted {
            self.accepted.insert(entry.row);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_counts_and_accepted_rows_and_survives_a_torn_line() {
        let dir = std::env::temp_dir().join(format!("clayhook-journal-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.jsonl");
        let mut j = Journal::open(&path).unwrap();
        j.record(Entry {
            webhook: "w1".into(),
            row: "r1".into(),
            accepted: true,
            counted: 1,
        })
        .unwrap();
        j.record(Entry {
            webhook: "w1".into(),
            row: "r2".into(),
            accepted: false,
            counted: 2,
        })
        .unwrap();
        drop(j);
        // A crash in the middle of a line.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"webhook\":\"w1\",\"ro")
            .unwrap();
        let mut j = Journal::open(&path).unwrap();
        assert_eq!(j.unreadable_lines, 1);
        assert_eq!(j.submissions("w1"), 3);
        assert!(j.is_accepted("r1") && !j.is_accepted("r2"));
        j.record(Entry {
            webhook: "w2".into(),
            row: "r2".into(),
            accepted: true,
            counted: 1,
        })
        .unwrap();
        drop(j);
        let j = Journal::open(&path).unwrap();
        assert_eq!((j.submissions("w1"), j.submissions("w2")), (3, 1));
        assert!(j.is_accepted("r2"));
        assert!(j.knows("w1") && j.knows("w2") && !j.knows("w3"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_second_run_on_the_same_state_is_refused_until_the_first_ends() {
        let dir = std::env::temp_dir().join(format!("clayhook-journal-{}", fastrand::u64(..)));
        let path = dir.join("nested/state.jsonl");
        let first = Journal::open(&path).unwrap();
        let second = Journal::open(&path).err().expect("locked");
        assert!(matches!(second, JournalError::Locked { .. }));
        assert!(
            second
                .to_string()
                .contains("in use by another clayhook push")
        );
        drop(first);
        assert!(Journal::open(&path).is_ok(), "free once the first run ends");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_default_state_lives_in_the_users_state_directory() {
        use crate::config::env_of;
        let xdg = env_of(&[("XDG_STATE_HOME", "/s"), ("HOME", "/h")]);
        assert_eq!(
            default_path(&xdg, "k1").unwrap(),
            Path::new("/s/clayhook/push-k1.jsonl")
        );
        // A relative XDG_STATE_HOME is ignored, as the spec says.
        let home = env_of(&[("XDG_STATE_HOME", "rel"), ("HOME", "/h")]);
        assert_eq!(
            default_path(&home, "k1").unwrap(),
            Path::new("/h/.local/state/clayhook/push-k1.jsonl")
        );
        assert!(matches!(
            default_path(&env_of(&[]), "k1"),
            Err(JournalError::NoStateDirectory)
        ));
    }
}
