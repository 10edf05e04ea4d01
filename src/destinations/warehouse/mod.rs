//! The `warehouse` destination: every routed lead as a row of queryable data, either as JSON
//! Lines objects in S3 (`WAREHOUSE_S3_URI`, partitioned `source=<source>/date=YYYY-MM-DD/`, one
//! object per partition per router batch) or through Amazon Data Firehose
//! (`FIREHOSE_STREAM_NAME`, one record per lead). Each lead is written once in the ledger's
//! sense: the router claims (lead, `warehouse`) like any destination, and an object's key is
//! the hash of the leads it holds, so a batch written again after a crash overwrites itself.
//!
//! What is here is pure: the row, its partition, the object key, the URI. `s3.rs` and
//! `firehose.rs` are the adapters; docs/warehouse.md has the layout, the DDL and the costs.

pub mod firehose;
pub mod s3;

use serde::Serialize;
use std::future::Future;
use std::time::Duration;

use crate::config::{ConfigError, Env};
use crate::delivery::names::DestinationName;
use crate::delivery::retry::Attempt;
use crate::envelope::Envelope;
use crate::lead::Lead;

/// The partition of leads posted without a `{source}` (a table posting to `/none` shares it;
/// the row's own `source` field tells them apart).
pub const NO_SOURCE: &str = "none";
/// Firehose refuses records over 1,000 KiB.
pub const FIREHOSE_MAX_RECORD: usize = 1_000 * 1024;

/// One line of the warehouse: the lead with its ID, source, received time and the destinations
/// its rules chose.
#[derive(Debug, Clone, Serialize)]
pub struct WarehouseRow<'a> {
    pub id: &'a str,
    pub source: Option<&'a str>,
    pub received_at: &'a str,
    /// `YYYY-MM-DD` of `received_at` (UTC): the partition.
    pub date: String,
    pub destinations: &'a [DestinationName],
    pub lead: &'a Lead,
    /// The ledger's version of the lead (several versions of one ID are several rows).
    pub version: &'a str,
}

impl<'a> WarehouseRow<'a> {
    pub fn new(env: &'a Envelope, version: &'a str, destinations: &'a [DestinationName]) -> Self {
        WarehouseRow {
            id: &env.id,
            source: env.source.as_deref(),
            received_at: &env.received_at,
            date: env
                .received_at
                .get(..10)
                .unwrap_or("1970-01-01")
                .to_string(),
            destinations,
            lead: &env.lead,
            version,
        }
    }

    /// The row as one line of JSON, with its newline.
    pub fn line(&self) -> String {
        let mut text = serde_json::to_string(self).unwrap_or_default();
        text.push('\n');
        text
    }

    pub fn partition(&self) -> (String, String) {
        (
            self.source.unwrap_or(NO_SOURCE).to_string(),
            self.date.clone(),
        )
    }
}

/// `s3://bucket/prefix/`: where the objects go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Uri {
    pub bucket: String,
    /// Empty, or ending in `/`.
    pub prefix: String,
}

impl S3Uri {
    pub fn parse(text: &str) -> Option<S3Uri> {
        let rest = text.trim().strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        if !bucket_ok {
            return None;
        }
        let mut prefix = prefix.to_string();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Some(S3Uri {
            bucket: bucket.to_string(),
            prefix,
        })
    }

    /// The object for `rows` (all of one partition): named by the hash of their IDs and
    /// versions, so writing the same leads again replaces it rather than adding rows.
    pub fn object_key(
        &self,
        (source, date): &(String, String),
        rows: &[WarehouseRow<'_>],
    ) -> String {
        let mut ids: Vec<String> = rows
            .iter()
            .map(|r| format!("{}:{}", r.id, r.version))
            .collect();
        ids.sort();
        let hash = crate::idempotency::sha256_hex(ids.join(",").as_bytes());
        format!(
            "{}source={source}/date={date}/{}.jsonl",
            self.prefix,
            &hash[..32]
        )
    }
}

/// Where the warehouse writes, from `WAREHOUSE_S3_URI` or `FIREHOSE_STREAM_NAME` (not both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WarehouseTarget {
    S3(S3Uri),
    Firehose(String),
}

impl WarehouseTarget {
    pub fn read<F: Fn(&str) -> Option<String>>(
        env: &Env<F>,
    ) -> Result<Option<WarehouseTarget>, ConfigError> {
        let s3 = env.optional("WAREHOUSE_S3_URI");
        let firehose = env.optional("FIREHOSE_STREAM_NAME");
        match (s3, firehose) {
            (Some(_), Some(_)) => Err(ConfigError::Invalid {
                var: "FIREHOSE_STREAM_NAME",
                reason: "set WAREHOUSE_S3_URI or FIREHOSE_STREAM_NAME, not both".into(),
            }),
            (Some(uri), None) => S3Uri::parse(&uri)
                .map(|u| Some(WarehouseTarget::S3(u)))
                .ok_or_else(|| ConfigError::Invalid {
                    var: "WAREHOUSE_S3_URI",
                    reason: "expected s3://<bucket>/<prefix>/".into(),
                }),
            (None, Some(name)) => {
                let ok = (1..=64).contains(&name.len())
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
                if ok {
                    Ok(Some(WarehouseTarget::Firehose(name)))
                } else {
                    Err(ConfigError::Invalid {
                        var: "FIREHOSE_STREAM_NAME",
                        reason: "a stream name is 1-64 of [A-Za-z0-9_.-]".into(),
                    })
                }
            }
            (None, None) => Ok(None),
        }
    }
}

/// The port the warehouse writes through: one attempt at every row, one result per row (a
/// Firehose batch can take some records and refuse others).
pub trait WarehouseSink: Send + Sync {
    fn write(
        &self,
        rows: &[WarehouseRow<'_>],
        timeout: Duration,
    ) -> impl Future<Output = Vec<Attempt>> + Send;
}

/// Groups rows by partition, keeping each row's position.
pub fn by_partition<'r, 'a>(rows: &'r [WarehouseRow<'a>]) -> Vec<((String, String), Vec<usize>)> {
    let mut out: Vec<((String, String), Vec<usize>)> = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let p = r.partition();
        match out.iter_mut().find(|(k, _)| *k == p) {
            Some((_, v)) => v.push(i),
            None => out.push((p, vec![i])),
        }
    }
    out
}

#[cfg(test)]
mod tests;
