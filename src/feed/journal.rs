//! `clayhook push`'s state file: an append-only JSON Lines journal, one line per row submitted.
//! Folding it gives the submissions each webhook has used (Clay's 50,000 are for good) and the
//! rows already accepted (so a second run skips them). Appending a line and flushing it after
//! every row means a run killed at any point loses at most the row in flight.

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
#[error("state file {path}: {source}")]
pub struct JournalError {
    path: PathBuf,
    source: std::io::Error,
}

pub struct Journal {
    path: PathBuf,
    file: File,
    submissions: HashMap<String, u64>,
    accepted: HashSet<String>,
    /// Lines that were not entries (a line cut short by a crash): skipped, reported once.
    pub unreadable_lines: usize,
}

impl Journal {
    /// Opens (or creates) the journal at `path` and folds what it holds.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        let err = |source| JournalError {
            path: path.to_path_buf(),
            source,
        };
        let mut submissions: HashMap<String, u64> = HashMap::new();
        let mut accepted = HashSet::new();
        let mut unreadable_lines = 0;
        match File::open(path) {
            Ok(f) => {
                for line in BufReader::new(f).lines() {
                    let line = line.map_err(err)?;
                    if line.trim().is_empty() {
                        continue;
                    }
                    match serde_json::from_str::<Entry>(&line) {
                        Ok(e) => {
                            *submissions.entry(e.webhook).or_default() += u64::from(e.counted);
                            if e.accepted {
                                accepted.insert(e.row);
                            }
                        }
                        Err(_) => unreadable_lines += 1,
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(err)?;
        // A line cut short by a crash must not swallow the next entry.
        if unreadable_lines > 0 {
            file.write_all(b"\n").map_err(err)?;
        }
        Ok(Journal {
            path: path.to_path_buf(),
            file,
            submissions,
            accepted,
            unreadable_lines,
        })
    }

    pub fn submissions(&self, webhook_key: &str) -> u64 {
        self.submissions.get(webhook_key).copied().unwrap_or(0)
    }

    pub fn is_accepted(&self, row: &str) -> bool {
        self.accepted.contains(row)
    }

    pub fn record(&mut self, entry: Entry) -> Result<(), JournalError> {
        let mut line = serde_json::to_vec(&entry).map_err(|e| JournalError {
            path: self.path.clone(),
            source: e.into(),
        })?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.flush())
            .map_err(|source| JournalError {
                path: self.path.clone(),
                source,
            })?;
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
        std::fs::remove_dir_all(dir).unwrap();
    }
}
