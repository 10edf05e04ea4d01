//! The lease both claims take on an item of the table: ingest's on a callback while it is queued,
//! the router's on a (lead, destination) while it is sent. `status` says the item is held, and one
//! attribute carries the holder's deadline (epoch ms), which is also the holder's token:
//! - the lease lapses when the deadline passes (the holder's invocation is gone), and anyone may
//!   claim the item again (`lapsed!`, in each claim's condition);
//! - only the holder, naming the same deadline, may give it back: delete the item
//!   ([`Lease::give_up`]) or return it to a settled status ([`Lease::hand_back`]). A lease taken
//!   over since is left alone.
//!
//! Conditions use the names `#status` and `#lease` and the values `:held`, `:now_ms` (lapsed) and
//! `:lease` (ours); [`Lease::names`] and the `*_values` methods supply them.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;

use crate::aws_json::{AwsJsonClient, item};
use crate::dynamo::{n, s, written};
use crate::table::PARTITION_KEY;

/// Held, and the holder's deadline has passed: free to claim. A macro, so claim conditions can
/// `concat!` it into one constant.
macro_rules! lapsed {
    () => {
        "(#status = :held AND #lease < :now_ms)"
    };
}
pub(crate) use lapsed;

/// Still held by the holder whose deadline is `:lease`.
macro_rules! ours {
    () => {
        "#status = :held AND #lease = :lease"
    };
}
const OURS: &str = ours!();

/// One kind of lease: the status that means held, and the attribute with the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub held: &'static str,
    pub attribute: &'static str,
}

impl Lease {
    pub fn names(&self) -> [(&'static str, &'static str); 2] {
        [("#status", "status"), ("#lease", self.attribute)]
    }

    /// Values for [`lapsed!`] at `now_ms`.
    pub fn lapsed_values(&self, now_ms: i64) -> [(&'static str, AttributeValue); 2] {
        [(":held", s(self.held)), (":now_ms", n(now_ms))]
    }

    fn ours_values(&self, until_ms: i64) -> [(&'static str, AttributeValue); 2] {
        [(":held", s(self.held)), (":lease", n(until_ms))]
    }

    /// [`Lease::lapsed_values`] for the JSON protocol.
    pub fn lapsed_json(&self, now_ms: i64) -> [(&'static str, serde_json::Value); 2] {
        [(":held", item::s(self.held)), (":now_ms", item::n(now_ms))]
    }

    /// The names and the values of `extra` and the lease's own, as a request's
    /// `ExpressionAttributeNames` and `ExpressionAttributeValues`.
    pub fn expression(
        &self,
        names: &[(&str, &str)],
        values: Vec<(&str, serde_json::Value)>,
    ) -> (serde_json::Value, serde_json::Value) {
        let names: serde_json::Map<String, serde_json::Value> = names
            .iter()
            .chain(self.names().iter())
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        let values: serde_json::Map<String, serde_json::Value> = values
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        (names.into(), values.into())
    }

    /// [`Lease::give_up`] over the JSON protocol.
    pub async fn give_up_json(
        &self,
        client: &AwsJsonClient,
        table: &str,
        pk: &str,
        until_ms: i64,
    ) -> Result<bool, String> {
        let (names, values) = self.expression(
            &[],
            vec![(":held", item::s(self.held)), (":lease", item::n(until_ms))],
        );
        let body = serde_json::json!({
            "TableName": table,
            "Key": { PARTITION_KEY: item::s(pk) },
            "ConditionExpression": OURS,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        });
        item::written(client.call("DeleteItem", &body).await)
    }

    /// Deletes the item at `pk` while the lease ending at `until_ms` still holds it (and, with
    /// `unless`, while it lacks that attribute). `Ok(false)` when it did not.
    pub async fn give_up(
        &self,
        client: &Client,
        table: &str,
        pk: &str,
        until_ms: i64,
        unless: Option<&str>,
    ) -> Result<bool, String> {
        let mut request = client
            .delete_item()
            .table_name(table)
            .key(PARTITION_KEY, s(pk))
            .condition_expression(match unless {
                Some(_) => concat!(ours!(), " AND attribute_not_exists(#unless)"),
                None => OURS,
            });
        for (k, v) in self.names() {
            request = request.expression_attribute_names(k, v);
        }
        for (k, v) in self.ours_values(until_ms) {
            request = request.expression_attribute_values(k, v);
        }
        if let Some(attr) = unless {
            request = request.expression_attribute_names("#unless", attr);
        }
        written(request.send().await)
    }

    /// Sets the item at `pk` back to `status` and drops the deadline, while the lease ending at
    /// `until_ms` still holds it. `Ok(false)` when it did not.
    pub async fn hand_back(
        &self,
        client: &Client,
        table: &str,
        pk: &str,
        until_ms: i64,
        status: &str,
    ) -> Result<bool, String> {
        let mut request = client
            .update_item()
            .table_name(table)
            .key(PARTITION_KEY, s(pk))
            .update_expression("SET #status = :settled REMOVE #lease")
            .condition_expression(OURS)
            .expression_attribute_values(":settled", s(status));
        for (k, v) in self.names() {
            request = request.expression_attribute_names(k, v);
        }
        for (k, v) in self.ours_values(until_ms) {
            request = request.expression_attribute_values(k, v);
        }
        written(request.send().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The conditions name only what `names` and the values supply.
    #[test]
    fn conditions_use_the_names_and_values_supplied() {
        let lease = Lease {
            held: "HELD",
            attribute: "until",
        };
        let names: Vec<&str> = lease.names().iter().map(|(k, _)| *k).collect();
        let lapsed: Vec<&str> = lease.lapsed_values(0).iter().map(|(k, _)| *k).collect();
        let ours: Vec<&str> = lease.ours_values(0).iter().map(|(k, _)| *k).collect();
        for (condition, values) in [(lapsed!(), &lapsed), (OURS, &ours)] {
            for token in condition.split(|c: char| !(c.is_alphanumeric() || "#:_".contains(c))) {
                if token.starts_with('#') {
                    assert!(names.contains(&token), "{token} in {condition}");
                }
                if token.starts_with(':') {
                    assert!(values.contains(&token), "{token} in {condition}");
                }
            }
        }
    }
}
