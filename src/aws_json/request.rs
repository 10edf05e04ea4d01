//! The hot path's requests as types that serialize straight into the body: a `serde_json::Value`
//! tree built with `json!` costs an allocation per node, and copies every value put in it (the
//! router's profile had a fifth of its CPU there). Reading answers stays on `Value` ([`super::item`]).

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use std::borrow::Cow;

use crate::table::PARTITION_KEY;

/// An attribute value as DynamoDB's JSON protocol writes it (`{"S": "x"}`, `{"N": "1"}`, ...),
/// borrowing its strings where it can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attr<'a> {
    S(Cow<'a, str>),
    N(i64),
    L(Vec<Attr<'a>>),
    M(Vec<(&'a str, Attr<'a>)>),
}

/// A string attribute.
pub fn s<'a>(v: impl Into<Cow<'a, str>>) -> Attr<'a> {
    Attr::S(v.into())
}

/// A whole-number attribute.
pub fn n(v: impl Into<i64>) -> Attr<'static> {
    Attr::N(v.into())
}

/// A number written as the string the protocol wants, without an intermediate `String`.
struct Number(i64);

impl Serialize for Number {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl Serialize for Attr<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        match self {
            Attr::S(v) => map.serialize_entry("S", v)?,
            Attr::N(v) => map.serialize_entry("N", &Number(*v))?,
            Attr::L(v) => map.serialize_entry("L", v)?,
            Attr::M(v) => map.serialize_entry("M", &Object(v))?,
        }
        map.end()
    }
}

/// Pairs written as one JSON object, in their order.
struct Object<'s, K, V>(&'s [(K, V)]);

impl<K: Serialize, V: Serialize> Serialize for Object<'_, K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

fn object<K: Serialize, V: Serialize, S: Serializer>(
    pairs: &[(K, V)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    Object(pairs).serialize(serializer)
}

/// `{"pk": {"S": <key>}}`: every item of the table is keyed by its partition key alone.
fn key<S: Serializer>(pk: &Option<Cow<'_, str>>, serializer: S) -> Result<S::Ok, S::Error> {
    let mut map = serializer.serialize_map(Some(1))?;
    if let Some(pk) = pk {
        map.serialize_entry(PARTITION_KEY, &Attr::S(Cow::Borrowed(pk)))?;
    }
    map.end()
}

/// A `PutItem`, `UpdateItem` or `DeleteItem`: the fields the three share; those left empty are
/// not written.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Write<'a> {
    pub table_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "key")]
    pub key: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "object")]
    pub item: Vec<(&'a str, Attr<'a>)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_expression: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition_expression: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "object")]
    pub expression_attribute_names: Vec<(&'a str, &'a str)>,
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "object")]
    pub expression_attribute_values: Vec<(&'a str, Attr<'a>)>,
    /// `ALL_OLD`, `ALL_NEW`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_values: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_values_on_condition_check_failure: Option<&'static str>,
}

/// The `#name` and `:value` placeholders an expression uses, in order.
pub fn placeholders(expression: &str) -> impl Iterator<Item = &str> {
    expression
        .split(|c: char| !(c.is_alphanumeric() || "#:_".contains(c)))
        .filter(|t| t.starts_with('#') || t.starts_with(':'))
}

impl Write<'_> {
    /// What DynamoDB would reject in this request's expressions before running it: a `#name` or
    /// `:value` they use that is not supplied, one supplied that they do not use, or one supplied
    /// twice (written as a JSON object, the second would silently replace the first).
    pub fn expression_mistake(&self) -> Option<String> {
        let expressions = [self.update_expression.as_deref(), self.condition_expression];
        let used: Vec<&str> = expressions
            .into_iter()
            .flatten()
            .flat_map(placeholders)
            .collect();
        let names = self.expression_attribute_names.iter().map(|(k, _)| *k);
        let values = self.expression_attribute_values.iter().map(|(k, _)| *k);
        let supplied: Vec<&str> = names.chain(values).collect();
        if let Some(missing) = used.iter().find(|t| !supplied.contains(t)) {
            return Some(format!("{missing} is used but not supplied"));
        }
        if let Some(unused) = supplied.iter().find(|t| !used.contains(t)) {
            return Some(format!("{unused} is supplied but not used"));
        }
        let twice = supplied
            .iter()
            .enumerate()
            .find(|(i, t)| supplied[..*i].contains(t));
        twice.map(|(_, t)| format!("{t} is supplied twice"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_what_the_protocol_reads() {
        let w = Write {
            table_name: "t",
            key: Some("delivery#x".into()),
            update_expression: Some("SET #a = :a".into()),
            condition_expression: Some("attribute_exists(#a)"),
            expression_attribute_names: vec![("#a", "a")],
            expression_attribute_values: vec![
                (":a", s("x\"y")),
                (":n", n(-12)),
                (
                    ":l",
                    Attr::L(vec![Attr::M(vec![("at", n(1)), ("what", s("ok"))])]),
                ),
            ],
            return_values: Some("ALL_NEW"),
            ..Write::default()
        };
        assert_eq!(
            serde_json::to_value(&w).unwrap(),
            json!({
                "TableName": "t",
                "Key": { "pk": { "S": "delivery#x" } },
                "UpdateExpression": "SET #a = :a",
                "ConditionExpression": "attribute_exists(#a)",
                "ExpressionAttributeNames": { "#a": "a" },
                "ExpressionAttributeValues": {
                    ":a": { "S": "x\"y" },
                    ":n": { "N": "-12" },
                    ":l": { "L": [{ "M": { "at": { "N": "1" }, "what": { "S": "ok" } } }] },
                },
                "ReturnValues": "ALL_NEW",
            })
        );
        let put = Write {
            table_name: "t",
            item: vec![("pk", s("k")), ("n", n(i64::MAX))],
            ..Write::default()
        };
        assert_eq!(
            serde_json::to_string(&put).unwrap(),
            r#"{"TableName":"t","Item":{"pk":{"S":"k"},"n":{"N":"9223372036854775807"}}}"#
        );
    }

    #[test]
    fn expression_mistakes_are_found_before_dynamodb_finds_them() {
        let good = Write {
            table_name: "t",
            update_expression: Some("SET #a = :a ADD #n :one".into()),
            condition_expression: Some("attribute_not_exists(#a) OR #a < :a"),
            expression_attribute_names: vec![("#a", "a"), ("#n", "n")],
            expression_attribute_values: vec![(":a", n(1)), (":one", n(1))],
            ..Write::default()
        };
        assert_eq!(good.expression_mistake(), None);
        let missing = Write {
            expression_attribute_values: vec![(":a", n(1))],
            ..good
        };
        assert_eq!(
            missing.expression_mistake().as_deref(),
            Some(":one is used but not supplied")
        );
        let unused = Write {
            expression_attribute_values: vec![(":a", n(1)), (":one", n(1)), (":two", n(2))],
            ..missing
        };
        assert_eq!(
            unused.expression_mistake().as_deref(),
            Some(":two is supplied but not used")
        );
        let twice = Write {
            expression_attribute_names: vec![("#a", "a"), ("#n", "n"), ("#a", "b")],
            expression_attribute_values: vec![(":a", n(1)), (":one", n(1))],
            ..unused
        };
        assert_eq!(
            twice.expression_mistake().as_deref(),
            Some("#a is supplied twice")
        );
        let put = Write {
            table_name: "t",
            item: vec![("pk", s("k"))],
            ..Write::default()
        };
        assert_eq!(put.expression_mistake(), None);
    }
}
