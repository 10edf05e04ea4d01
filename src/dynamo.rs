//! Small pieces both DynamoDB adapters (idempotency records and the delivery ledger) share.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::types::AttributeValue;

pub fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

/// An SDK error as one line, with its causes (no request data in it).
pub fn describe<E: std::error::Error + 'static>(e: SdkError<E>) -> String {
    DisplayErrorContext(&e).to_string()
}

/// Deletes the item at `pk` only while it still has `status` and our `lock` in `lock_attr` (and,
/// with `unless`, lacks that attribute): a claim another invocation has taken over since is not
/// ours to delete (and is left alone). `Ok(false)` when the condition did not hold.
pub async fn delete_if_still_ours(
    client: &Client,
    table: &str,
    pk: &str,
    status: &str,
    (lock_attr, lock): (&str, i64),
    unless: Option<&str>,
) -> Result<bool, String> {
    let mut request = client
        .delete_item()
        .table_name(table)
        .key("pk", s(pk))
        .condition_expression(match unless {
            Some(_) => "#status = :status AND #lock = :lock AND attribute_not_exists(#unless)",
            None => "#status = :status AND #lock = :lock",
        })
        .expression_attribute_names("#status", "status")
        .expression_attribute_names("#lock", lock_attr)
        .expression_attribute_values(":status", s(status))
        .expression_attribute_values(":lock", n(lock));
    if let Some(attr) = unless {
        request = request.expression_attribute_names("#unless", attr);
    }
    match request.send().await {
        Ok(_) => Ok(true),
        Err(SdkError::ServiceError(ctx))
            if matches!(
                ctx.err(),
                DeleteItemError::ConditionalCheckFailedException(_)
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(describe(e)),
    }
}
