//! The warehouse through Amazon Data Firehose: one record per lead (a line of JSON with its
//! newline), `PutRecordBatch` in chunks of at most 500 records and 4 MiB. Firehose can take
//! some records of a batch and refuse others: each refused record is a failed attempt of its
//! own lead (retried, never reported delivered). Firehose delivers at least once: the event
//! `id` is the key to deduplicate on (docs/warehouse.md shows the query).

use aws_sdk_firehose::Client;
use aws_sdk_firehose::primitives::Blob;
use aws_sdk_firehose::types::Record;
use std::time::Duration;

use super::s3::sdk_attempt;
use super::{FIREHOSE_MAX_RECORD, WarehouseRow, WarehouseSink};
use crate::delivery::retry::{Attempt, TransportKind};

/// `PutRecordBatch` limits.
const MAX_RECORDS: usize = 500;
const MAX_BYTES: usize = 4 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct FirehoseWarehouse {
    client: Client,
    stream: String,
}

impl FirehoseWarehouse {
    pub fn new(client: Client, stream: String) -> Self {
        FirehoseWarehouse { client, stream }
    }
}

/// Splits record sizes into chunks within both limits (indexes into the input).
pub fn chunks(sizes: &[usize]) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut bytes = 0;
    for (i, size) in sizes.iter().enumerate() {
        let fits = out
            .last()
            .is_some_and(|c| c.len() < MAX_RECORDS && bytes + size <= MAX_BYTES);
        if !fits {
            out.push(Vec::new());
            bytes = 0;
        }
        if let Some(c) = out.last_mut() {
            c.push(i);
        }
        bytes += size;
    }
    out
}

/// A record Firehose refused in a batch it otherwise took: throttling and internal failures
/// are worth retrying, as the API reference says.
pub fn refused(code: &str, message: &str) -> Attempt {
    Attempt::Status {
        status: 503,
        retry_after: None,
        detail: format!("firehose refused the record: {code}: {message}"),
    }
}

impl WarehouseSink for FirehoseWarehouse {
    async fn write(&self, rows: &[WarehouseRow<'_>], timeout: Duration) -> Vec<Attempt> {
        let lines: Vec<String> = rows.iter().map(WarehouseRow::line).collect();
        let mut results: Vec<Attempt> = lines
            .iter()
            .map(|l| {
                if l.len() > FIREHOSE_MAX_RECORD {
                    Attempt::Status {
                        status: 413,
                        retry_after: None,
                        detail: format!(
                            "the row is {} bytes; Firehose takes records up to 1,000 KiB",
                            l.len()
                        ),
                    }
                } else {
                    Attempt::Delivered
                }
            })
            .collect();
        let sendable: Vec<usize> = (0..rows.len())
            .filter(|i| results[*i] == Attempt::Delivered)
            .collect();
        let sizes: Vec<usize> = sendable.iter().map(|i| lines[*i].len()).collect();
        for chunk in chunks(&sizes) {
            let members: Vec<usize> = chunk.iter().map(|c| sendable[*c]).collect();
            let records: Vec<Record> = members
                .iter()
                .filter_map(|i| {
                    Record::builder()
                        .data(Blob::new(lines[*i].as_bytes()))
                        .build()
                        .ok()
                })
                .collect();
            let call = self
                .client
                .put_record_batch()
                .delivery_stream_name(&self.stream)
                .set_records(Some(records))
                .send();
            match tokio::time::timeout(timeout, call).await {
                Ok(Ok(out)) => {
                    let answers = out.request_responses();
                    for (k, i) in members.iter().enumerate() {
                        results[*i] = match answers.get(k) {
                            Some(a) if a.error_code().is_some() => refused(
                                a.error_code().unwrap_or_default(),
                                a.error_message().unwrap_or_default(),
                            ),
                            Some(_) => Attempt::Delivered,
                            // An answer without an entry for the record: not known to be taken.
                            None => refused("NoAnswer", "no response entry for the record"),
                        };
                    }
                }
                Ok(Err(e)) => {
                    let a = sdk_attempt(e);
                    for i in &members {
                        results[*i] = a.clone();
                    }
                }
                Err(_) => {
                    for i in &members {
                        results[*i] = Attempt::Transport {
                            kind: TransportKind::Timeout,
                            detail: "the Firehose write timed out".into(),
                        };
                    }
                }
            }
        }
        results
    }
}
