//! DynamoDB's attribute values as `serde_json::Value`s (`{"S": "..."}`, `{"N": "1"}`): reading
//! them back out of an answer, and the odd request off the hot path ([`super::request`] writes
//! the hot path's).

use serde_json::{Value, json};

use super::CallError;

pub fn s(v: &str) -> Value {
    json!({ "S": v })
}

pub fn n(v: i64) -> Value {
    json!({ "N": v.to_string() })
}

/// The string attribute `k` of `item`.
pub fn text<'a>(item: &'a Value, k: &str) -> Option<&'a str> {
    item.get(k)?.get("S")?.as_str()
}

/// The whole-number attribute `k` of `item`.
pub fn number(item: &Value, k: &str) -> Option<i64> {
    item.get(k)?.get("N")?.as_str()?.parse().ok()
}

/// The list attribute `k` of `item`.
pub fn items_of<'a>(item: &'a Value, k: &str) -> &'a [Value] {
    item.get(k)
        .and_then(|v| v.get("L"))
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// A conditional write's result: `Ok(true)` when it was made, `Ok(false)` when its condition did
/// not hold, the error (as one line) otherwise.
pub fn written(result: Result<Value, CallError>) -> Result<bool, String> {
    match result {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Some(CONDITION_FAILED) => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

pub const CONDITION_FAILED: &str = "ConditionalCheckFailedException";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_back() {
        let item = json!({ "a": s("x"), "b": n(-42), "c": { "N": "1.5" } });
        assert_eq!(text(&item, "a"), Some("x"));
        assert_eq!(number(&item, "b"), Some(-42));
        assert_eq!(number(&item, "c"), None);
        assert_eq!(text(&item, "b"), None);
        assert_eq!(number(&item, "missing"), None);
        let item = json!({ "l": { "L": [s("a"), n(1)] } });
        assert_eq!(items_of(&item, "l"), &[s("a"), n(1)]);
        assert!(items_of(&item, "missing").is_empty());
    }
}
