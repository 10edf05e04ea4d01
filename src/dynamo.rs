//! Small pieces the DynamoDB adapters (idempotency records, the delivery ledger, the feed store)
//! share.

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
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

/// A conditional write's result: `Ok(true)` when it was made, `Ok(false)` when its condition did
/// not hold, the error (as one line) otherwise.
pub fn written<T, E>(result: Result<T, SdkError<E>>) -> Result<bool, String>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match result {
        Ok(_) => Ok(true),
        Err(SdkError::ServiceError(ctx))
            if ctx.err().code() == Some("ConditionalCheckFailedException") =>
        {
            Ok(false)
        }
        Err(e) => Err(describe(e)),
    }
}
