//! `IdempotencyStore` on DynamoDB: one conditional put (with `ALL_OLD` on failure, so a duplicate
//! costs no extra read), an update to `COMPLETED`, and a delete guarded by our lock token. Over
//! the lean JSON client: these are ingest's hot path.

use serde_json::{Value, json};

use super::{Begin, Claim, IdempotencyStore, Record, Status, StoreError};
use crate::aws_json::item::{CONDITION_FAILED, number, s, text};
use crate::aws_json::request::{self, Write};
use crate::aws_json::{AwsJsonClient, CallError};
use crate::lease::{Lease, lapsed};

/// The claim on a callback while it is queued.
const LEASE: Lease = Lease {
    held: "IN_PROGRESS",
    attribute: "in_progress_expires_at",
};

/// Ours when never seen, expired, or held by an invocation that is gone.
const BEGIN_CONDITION: &str = concat!("attribute_not_exists(#pk) OR #exp < :now OR ", lapsed!());

#[derive(Clone, Debug)]
pub struct DynamoDbIdempotencyStore {
    client: AwsJsonClient,
    table: String,
}

impl DynamoDbIdempotencyStore {
    pub fn new(client: AwsJsonClient, table: impl Into<String>) -> Self {
        DynamoDbIdempotencyStore {
            client,
            table: table.into(),
        }
    }

    pub fn pk(id: &str) -> String {
        crate::table::ingest_key(id)
    }

    /// The fallback when the failed condition did not return the item (older endpoints).
    async fn read(&self, pk: &str) -> Result<Option<Record>, StoreError> {
        let body = json!({
            "TableName": self.table,
            "Key": { "pk": s(pk) },
            "ConsistentRead": true,
        });
        let out = self
            .client
            .call("GetItem", &body)
            .await
            .map_err(unavailable)?;
        out.get("Item").map(record_from_item).transpose()
    }
}

fn unavailable(e: CallError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Reads a stored item back into a [`Record`].
pub fn record_from_item(item: &Value) -> Result<Record, StoreError> {
    let status = text(item, "status")
        .and_then(Status::parse)
        .ok_or(StoreError::Corrupt("status"))?;
    Ok(Record {
        status,
        expires_at: number(item, "expires_at").ok_or(StoreError::Corrupt("expires_at"))?,
        in_progress_expires_at: number(item, LEASE.attribute),
        message_id: text(item, "message_id").map(str::to_string),
        body_hash: text(item, "body_hash").map(str::to_string),
        lock_token: text(item, "lock_token").map(str::to_string),
    })
}

impl IdempotencyStore for DynamoDbIdempotencyStore {
    async fn begin(&self, claim: &Claim) -> Result<Begin, StoreError> {
        let pk = Self::pk(&claim.id);
        let mut item = vec![
            ("pk", request::s(pk.as_str())),
            ("status", request::s(LEASE.held)),
            ("expires_at", request::n(claim.expires_at)),
            (LEASE.attribute, request::n(claim.in_progress_expires_at)),
            ("lock_token", request::s(claim.token.as_str())),
        ];
        if let Some(h) = &claim.body_hash {
            item.push(("body_hash", request::s(h.as_str())));
        }
        let mut names = vec![("#pk", "pk"), ("#exp", "expires_at")];
        names.extend(LEASE.names());
        let mut values = vec![(":now", request::n(claim.now_s()))];
        values.extend(LEASE.lapsed_values(claim.now_ms));
        let body = Write {
            table_name: &self.table,
            item,
            condition_expression: Some(BEGIN_CONDITION),
            expression_attribute_names: names,
            expression_attribute_values: values,
            return_values_on_condition_check_failure: Some("ALL_OLD"),
            ..Write::default()
        };
        match self.client.write("PutItem", &body).await {
            Ok(_) => Ok(Begin::Claimed),
            Err(e) if e.code() == Some(CONDITION_FAILED) => {
                let held = match e.body().and_then(|b| b.get("Item")) {
                    Some(item) => Some(record_from_item(item)?),
                    None => self.read(&pk).await?,
                };
                // Gone between the put and the read: the caller simply tries again.
                Ok(match held {
                    // Our own put, applied on an attempt whose answer was lost.
                    Some(record) if record.held_by(claim) => Begin::Claimed,
                    Some(record) => Begin::Held(record),
                    None => Begin::Contended,
                })
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn complete(
        &self,
        id: &str,
        message_id: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let body = Write {
            table_name: &self.table,
            key: Some(Self::pk(id).into()),
            update_expression: Some(
                "SET #status = :done, #mid = :mid, #exp = :exp REMOVE #ipexp".into(),
            ),
            expression_attribute_names: vec![
                ("#status", "status"),
                ("#mid", "message_id"),
                ("#exp", "expires_at"),
                ("#ipexp", LEASE.attribute),
            ],
            expression_attribute_values: vec![
                (":done", request::s(Status::Completed.as_str())),
                (":mid", request::s(message_id)),
                (":exp", request::n(expires_at)),
            ],
            ..Write::default()
        };
        self.client
            .write("UpdateItem", &body)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn abandon(&self, claim: &Claim) -> Result<(), StoreError> {
        LEASE
            .give_up(
                &self.client,
                &self.table,
                &Self::pk(&claim.id),
                claim.in_progress_expires_at,
            )
            .await
            .map(|_| ())
            .map_err(StoreError::Unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_status_reads_back_as_in_progress() {
        assert_eq!(Status::parse(LEASE.held), Some(Status::InProgress));
    }

    #[test]
    fn a_stored_item_reads_back_and_a_broken_one_is_corrupt() {
        use crate::aws_json::item::n;
        let item = json!({
            "pk": s("ingest#x"), "status": s("COMPLETED"), "expires_at": n(9),
            "message_id": s("m-1"), "body_hash": s("h"),
        });
        let r = record_from_item(&item).unwrap();
        assert_eq!(r.status, Status::Completed);
        assert_eq!((r.expires_at, r.message_id.as_deref()), (9, Some("m-1")));
        assert!(record_from_item(&json!({ "status": s("SOMETHING") })).is_err());
        assert!(record_from_item(&json!({ "status": s("COMPLETED") })).is_err());
    }
}
