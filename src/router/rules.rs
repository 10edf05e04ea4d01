//! Routing rules: which destinations a lead goes to. Pure: a lead and its source in, names out.
//!
//! `ROUTING_RULES` is a JSON array of rules, applied in order (schema in docs/behaviour.md):
//!
//! ```json
//! [{"name": "hot", "when": [{"field": "icp_score", "gte": 80}, {"field": "email", "present": true}],
//!   "destinations": ["crm", "outreach"], "stop": false}]
//! ```

use serde::Deserialize;
use serde_json::Value;

pub use crate::delivery::names::DestinationName;

use crate::lead::{Lead, as_bool, as_number, is_absent};

/// One test on a lead. Exactly one kind per condition object.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawCondition")]
pub enum Condition {
    /// `{"source": "webinar"}` or `{"source": ["a", "b"]}`: the `{source}` path segment.
    Source(Vec<String>),
    /// `{"field": "email", "present": true}`.
    Present { field: String, present: bool },
    /// `{"field": "industry", "equals": "Software"}`; strings compare case-insensitively, numbers
    /// and booleans leniently (`"85"` equals `85`).
    Equals { field: String, equals: Value },
    /// `{"field": "industry", "one_of": ["Software", "SaaS"]}`.
    OneOf { field: String, one_of: Vec<Value> },
    /// `{"field": "icp_score", "gte": 50, "lt": 80}`: a number within every bound given.
    Range {
        field: String,
        gte: Option<f64>,
        gt: Option<f64>,
        lte: Option<f64>,
        lt: Option<f64>,
    },
}

/// The condition as written, before checking that it says exactly one thing.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    source: Option<OneOrMany>,
    field: Option<String>,
    present: Option<bool>,
    equals: Option<Value>,
    one_of: Option<Vec<Value>>,
    gte: Option<f64>,
    gt: Option<f64>,
    lte: Option<f64>,
    lt: Option<f64>,
}

impl TryFrom<RawCondition> for Condition {
    type Error = String;

    fn try_from(r: RawCondition) -> Result<Self, String> {
        let has_range = r.gte.is_some() || r.gt.is_some() || r.lte.is_some() || r.lt.is_some();
        let kinds = [
            r.present.is_some(),
            r.equals.is_some(),
            r.one_of.is_some(),
            has_range,
        ]
        .iter()
        .filter(|k| **k)
        .count();
        if let Some(source) = r.source {
            if r.field.is_some() || kinds > 0 {
                return Err("a source condition takes no other keys".into());
            }
            let values = match source {
                OneOrMany::One(s) => vec![s],
                OneOrMany::Many(v) => v,
            };
            if values.is_empty() {
                return Err("source needs at least one value".into());
            }
            return Ok(Condition::Source(values));
        }
        let Some(field) = r.field.filter(|f| !f.trim().is_empty()) else {
            return Err("a condition needs `source` or `field`".into());
        };
        if kinds != 1 {
            return Err(format!(
                "condition on `{field}` needs exactly one of present, equals, one_of, or bounds (gte, gt, lte, lt)"
            ));
        }
        Ok(if let Some(present) = r.present {
            Condition::Present { field, present }
        } else if let Some(equals) = r.equals {
            Condition::Equals { field, equals }
        } else if let Some(one_of) = r.one_of {
            if one_of.is_empty() {
                return Err("one_of needs at least one value".into());
            }
            Condition::OneOf { field, one_of }
        } else {
            Condition::Range {
                field,
                gte: r.gte,
                gt: r.gt,
                lte: r.lte,
                lt: r.lt,
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// A rule: when every condition holds, the lead goes to these destinations.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingRule {
    #[serde(default)]
    pub name: Option<String>,
    /// All must hold; empty (or absent) matches every lead.
    #[serde(default)]
    pub when: Vec<Condition>,
    pub destinations: Vec<DestinationName>,
    /// When this rule matches, later rules are not applied.
    #[serde(default)]
    pub stop: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("ROUTING_RULES is invalid at {path}: {message}")]
pub struct RulesError {
    pub path: String,
    pub message: String,
}

/// The seed's rules (the spec's table), in the `ROUTING_RULES` format. The seed's `else if`
/// (`score >= 80 && email` → outreach, else `score >= 50` → nurture) is two rules: 50-79, and
/// 80+ without an email.
pub const DEFAULT_RULES_JSON: &str = r#"[
  {"name": "hot", "when": [{"field": "icp_score", "gte": 80}, {"field": "email", "present": true}],
   "destinations": ["crm", "outreach"]},
  {"name": "warm", "when": [{"field": "icp_score", "gte": 50, "lt": 80}], "destinations": ["nurture"]},
  {"name": "hot without an email", "when": [{"field": "icp_score", "gte": 80}, {"field": "email", "present": false}],
   "destinations": ["nurture"]},
  {"name": "very hot", "when": [{"field": "icp_score", "gte": 90}], "destinations": ["slack"]},
  {"name": "everyone", "destinations": ["zapier", "warehouse"]}
]"#;

pub fn default_rules() -> Vec<RoutingRule> {
    // A constant, checked by the tests; not input.
    parse_rules(DEFAULT_RULES_JSON).expect("the built-in rules are valid")
}

/// Parses `ROUTING_RULES`, pointing at the first mistake (`[1].when[0]`, ...).
pub fn parse_rules(text: &str) -> Result<Vec<RoutingRule>, RulesError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    let rules: Vec<RoutingRule> = serde_path_to_error::deserialize(de).map_err(|e| RulesError {
        path: match e.path().to_string().as_str() {
            "." => "the top level (expected a JSON array of rules)".to_string(),
            p => p.to_string(),
        },
        message: e.inner().to_string(),
    })?;
    for (i, rule) in rules.iter().enumerate() {
        if rule.destinations.is_empty() {
            return Err(RulesError {
                path: format!("[{i}].destinations"),
                message: "a rule needs at least one destination".into(),
            });
        }
    }
    Ok(rules)
}

fn loosely_equal(a: &Value, b: &Value) -> bool {
    if let (Some(x), Some(y)) = (as_number(a), as_number(b)) {
        return x == y;
    }
    if matches!(a, Value::Bool(_)) || matches!(b, Value::Bool(_)) {
        return as_bool(a).is_some() && as_bool(a) == as_bool(b);
    }
    match (a, b) {
        (Value::String(x), Value::String(y)) => x.trim().eq_ignore_ascii_case(y.trim()),
        _ => a == b,
    }
}

impl Condition {
    pub fn holds(&self, lead: &Lead, source: Option<&str>) -> bool {
        match self {
            Condition::Source(wanted) => source.is_some_and(|s| wanted.iter().any(|w| w == s)),
            Condition::Present { field, present } => {
                lead.get(field).is_some_and(|v| !is_absent(&v)) == *present
            }
            Condition::Equals { field, equals } => {
                lead.get(field).is_some_and(|v| loosely_equal(&v, equals))
            }
            Condition::OneOf { field, one_of } => lead
                .get(field)
                .is_some_and(|v| one_of.iter().any(|w| loosely_equal(&v, w))),
            Condition::Range {
                field,
                gte,
                gt,
                lte,
                lt,
            } => {
                let Some(n) = lead.get(field).as_ref().and_then(as_number) else {
                    return false;
                };
                gte.is_none_or(|b| n >= b)
                    && gt.is_none_or(|b| n > b)
                    && lte.is_none_or(|b| n <= b)
                    && lt.is_none_or(|b| n < b)
            }
        }
    }
}

/// The source `clayhook smoke` posts to: its leads go through ingest and the queue like any
/// other and are routed nowhere, so a check of a deployed stack reaches no real tool.
pub const SMOKE_SOURCE: &str = "clayhook-smoke";

/// The destinations for a lead, each once, in the order rules name them.
pub fn route(rules: &[RoutingRule], lead: &Lead, source: Option<&str>) -> Vec<DestinationName> {
    let mut out: Vec<DestinationName> = Vec::new();
    if source == Some(SMOKE_SOURCE) {
        return out;
    }
    for rule in rules {
        if rule.when.iter().all(|c| c.holds(lead, source)) {
            for d in &rule.destinations {
                if !out.contains(d) {
                    out.push(*d);
                }
            }
            if rule.stop {
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use DestinationName::*;

    fn lead(body: &str) -> Lead {
        Lead::parse(body.as_bytes()).unwrap().0
    }

    #[test]
    fn default_rules_follow_the_spec_table() {
        let r = default_rules();
        let cases = [
            (
                r#"{"email":"a@b.co","icp_score":95}"#,
                vec![Crm, Outreach, Slack, Zapier],
            ),
            (
                r#"{"email":"a@b.co","icp_score":"80"}"#,
                vec![Crm, Outreach, Zapier],
            ),
            // The seed's `else if`: 80+ without an email is nurtured.
            (r#"{"icp_score":85}"#, vec![Nurture, Zapier]),
            (r#"{"icp_score":85,"email":"N/A"}"#, vec![Nurture, Zapier]),
            (
                r#"{"icp_score":85,"email":"not an email"}"#,
                vec![Nurture, Zapier],
            ),
            (r#"{"icp_score":92}"#, vec![Nurture, Slack, Zapier]),
            (
                r#"{"email":"a@b.co","icp_score":79.9}"#,
                vec![Nurture, Zapier],
            ),
            (r#"{"icp_score":"50"}"#, vec![Nurture, Zapier]),
            (r#"{"email":"a@b.co","icp_score":49}"#, vec![Zapier]),
            (r#"{"email":"a@b.co"}"#, vec![Zapier]),
            (r#"{"email":"a@b.co","icp_score":"N/A"}"#, vec![Zapier]),
        ];
        for (body, mut want) in cases {
            // Every lead also goes to the warehouse (when configured).
            want.push(Warehouse);
            assert_eq!(route(&r, &lead(body), None), want, "{body}");
        }
    }

    #[test]
    fn custom_rules_with_every_condition_kind() {
        let rules = parse_rules(
            r#"[
              {"name":"webinar vips","when":[{"source":["webinar","event"]},{"field":"is_vip","equals":true}],
               "destinations":["slack"],"stop":true},
              {"when":[{"field":"industry","one_of":["software","saas"]},{"field":"employee_count","gt":100,"lte":5000}],
               "destinations":["crm"]},
              {"when":[{"field":"linkedin_url","present":false}],"destinations":["nurture"]}
            ]"#,
        )
        .unwrap();
        let vip = lead(r#"{"is_vip":"true","industry":"Software","employee_count":"1,200"}"#);
        assert_eq!(
            route(&rules, &vip, Some("webinar")),
            vec![Slack],
            "stop ends the list"
        );
        assert_eq!(route(&rules, &vip, Some("other")), vec![Crm, Nurture]);
        assert_eq!(route(&rules, &vip, None), vec![Crm, Nurture]);
        let small =
            lead(r#"{"industry":"SaaS","employee_count":50,"linkedin":"linkedin.com/in/x"}"#);
        assert_eq!(route(&rules, &small, None), Vec::<DestinationName>::new());
    }

    #[test]
    fn invalid_rules_point_at_the_mistake() {
        let cases = [
            ("{}", "top level"),
            (
                r#"[{"destinations":["crm"]},{"destinations":["fax"]}]"#,
                "[1].destinations[0]",
            ),
            (
                r#"[{"when":[{"field":"x"}],"destinations":["crm"]}]"#,
                "[0].when[0]",
            ),
            (
                r#"[{"when":[{"field":"x","gtee":1}],"destinations":["crm"]}]"#,
                "unknown field `gtee`",
            ),
            (
                r#"[{"when":[{"field":"x","gte":1,"present":true}],"destinations":["crm"]}]"#,
                "[0].when[0]",
            ),
            (
                r#"[{"when":[{"source":[]}],"destinations":["crm"]}]"#,
                "[0].when[0]",
            ),
            (r#"[{"destinations":[]}]"#, "[0].destinations"),
            (r#"[{"destinations":["crm"],"stpo":true}]"#, "[0]"),
            ("not json", "top level"),
        ];
        for (text, where_) in cases {
            let e = parse_rules(text).unwrap_err();
            assert!(e.to_string().contains(where_), "{text}: {e}");
            assert!(e.to_string().starts_with("ROUTING_RULES is invalid"), "{e}");
        }
    }

    #[test]
    fn equality_is_lenient() {
        assert!(loosely_equal(&"85".into(), &85.into()));
        assert!(loosely_equal(&" Software ".into(), &"software".into()));
        assert!(loosely_equal(&"true".into(), &true.into()));
        assert!(!loosely_equal(&"maybe".into(), &true.into()));
        assert!(!loosely_equal(&"a".into(), &"b".into()));
    }

    #[test]
    fn the_smoke_source_is_routed_nowhere_whatever_the_rules() {
        let hot = lead(r#"{"email":"a@b.co","icp_score":99}"#);
        assert!(!route(&default_rules(), &hot, Some("q3-webinar")).is_empty());
        assert!(route(&default_rules(), &hot, Some(SMOKE_SOURCE)).is_empty());
    }
}
