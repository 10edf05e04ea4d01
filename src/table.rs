//! The one DynamoDB table every function shares: its definition and its key scheme. Each item's
//! partition key is built here, so the prefixes (`ingest#`, `delivery#`, `feed#`) that keep the
//! three kinds of item apart live in one place; template.yaml's `LeadsTable` is checked against
//! [`PARTITION_KEY`] and [`TTL_ATTRIBUTE`] by a test below.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};

use crate::delivery::names::DestinationName;

/// The partition key (a string); there is no sort key.
pub const PARTITION_KEY: &str = "pk";
/// Epoch seconds after which DynamoDB may delete an item.
pub const TTL_ATTRIBUTE: &str = "expires_at";

/// Each function's items start with its prefix: template.yaml limits each function's DynamoDB
/// access to its own (`dynamodb:LeadingKeys`), and `scripts/check_template.py` checks that these
/// are the prefixes it names.
pub const INGEST_PREFIX: &str = "ingest#";
pub const DELIVERY_PREFIX: &str = "delivery#";
pub const FEED_PREFIX: &str = "feed#";

/// Ingest's idempotency record of one callback.
pub fn ingest_key(id: &str) -> String {
    format!("{INGEST_PREFIX}{id}")
}

/// The router's ledger item of one (lead, destination).
pub fn delivery_key(id: &str, destination: DestinationName) -> String {
    format!("{DELIVERY_PREFIX}{id}#{destination}")
}

/// The archived envelope of one lead (`clayhook events`).
pub fn archive_key(id: &str) -> String {
    format!("{DELIVERY_PREFIX}{ARCHIVE_INFIX}{id}")
}

/// What follows [`DELIVERY_PREFIX`] in an archive key (never hex, so never a lead ID).
pub const ARCHIVE_INFIX: &str = "event#";

/// The router's shared delivery control (breaker, rate limit, pause) of one destination.
pub fn delivery_control_key(destination: DestinationName) -> String {
    format!("{DELIVERY_PREFIX}control#{destination}")
}

/// The key a function reads at start to open its connection (never written): inside its own
/// prefix, so the read is allowed.
pub fn warm_up_key(prefix: &str) -> String {
    format!("{prefix}warm-up")
}

/// The feeder's submission counter of one Clay webhook.
pub fn feed_webhook_key(webhook_key: &str) -> String {
    format!("{FEED_PREFIX}webhook#{webhook_key}")
}

/// The feeder's daily budget counter.
pub fn feed_budget_key(day: &str) -> String {
    format!("{FEED_PREFIX}budget#{day}")
}

/// The feeder's shared circuit breaker.
pub const FEED_BREAKER_KEY: &str = "feed#breaker";

/// One row Clay accepted, by its intake message id.
pub fn feed_sent_key(message_id: &str) -> String {
    format!("{FEED_PREFIX}sent#{message_id}")
}

/// Creates the table as template.yaml defines it (on-demand, `pk` a string), for the local
/// pipeline and the tests.
pub async fn create(ddb: &aws_sdk_dynamodb::Client, name: &str) -> Result<(), String> {
    let key = KeySchemaElement::builder()
        .attribute_name(PARTITION_KEY)
        .key_type(KeyType::Hash)
        .build()
        .map_err(|e| e.to_string())?;
    let attribute = AttributeDefinition::builder()
        .attribute_name(PARTITION_KEY)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(|e| e.to_string())?;
    ddb.create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute)
        .key_schema(key)
        .send()
        .await
        .map_err(|e| aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// template.yaml's table has the key and TTL attribute the code writes.
    #[test]
    fn the_template_defines_the_same_table() {
        let template = include_str!("../template.yaml");
        let table = template
            .split("\n  LeadsTable:\n")
            .nth(1)
            .and_then(|rest| rest.split("\n\n").next())
            .expect("template.yaml has LeadsTable");
        let compact: String = table.split_whitespace().collect::<Vec<_>>().join(" ");
        for want in [
            format!("AttributeDefinitions: - AttributeName: {PARTITION_KEY} AttributeType: S"),
            format!("KeySchema: - AttributeName: {PARTITION_KEY} KeyType: HASH"),
            format!("AttributeName: {TTL_ATTRIBUTE} Enabled: true"),
            "BillingMode: PAY_PER_REQUEST".to_string(),
        ] {
            assert!(
                compact.contains(&want),
                "LeadsTable lacks `{want}`: {compact}"
            );
        }
    }

    #[test]
    fn each_kind_of_item_has_its_own_prefix() {
        let keys = [
            ingest_key("a"),
            delivery_key("a", DestinationName::Crm),
            feed_webhook_key("a"),
            feed_budget_key("2026-11-25"),
            FEED_BREAKER_KEY.to_string(),
            feed_sent_key("a"),
        ];
        assert!(keys[0].starts_with(INGEST_PREFIX) && keys[1].starts_with(DELIVERY_PREFIX));
        assert!(keys[2..].iter().all(|k| k.starts_with(FEED_PREFIX)));
        let distinct: std::collections::HashSet<&String> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len());
    }
}
