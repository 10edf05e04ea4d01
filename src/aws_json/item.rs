//! DynamoDB's attribute values as the JSON protocol writes them (`{"S": "..."}`, `{"N": "1"}`),
//! and reading them back out of an item.

use serde_json::{Value, json};

use super::CallError;

pub fn s(v: &str) -> Value {
    json!({ "S": v })
}

pub fn n(v: i64) -> Value {
    json!({ "N": v.to_string() })
}

/// A list attribute (`{"L": [...]}`).
pub fn list(values: Vec<Value>) -> Value {
    json!({ "L": values })
}

/// A request's `ExpressionAttributeNames`.
pub fn names(pairs: &[(&str, &str)]) -> Value {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Value::from(*v)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// A request's `ExpressionAttributeValues`.
pub fn values(pairs: Vec<(&str, Value)>) -> Value {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect::<serde_json::Map<_, _>>()
        .into()
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
        let item = json!({ "l": list(vec![s("a"), n(1)]) });
        assert_eq!(items_of(&item, "l"), &[s("a"), n(1)]);
        assert!(items_of(&item, "missing").is_empty());
        assert_eq!(
            names(&[("#a", "b")]).to_string(),
            r##"{"#a":"b"}"##.to_string()
        );
        assert_eq!(values(vec![(":v", n(2))]), json!({ ":v": { "N": "2" } }));
    }
}
