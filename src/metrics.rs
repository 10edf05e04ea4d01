//! CloudWatch metrics in the Embedded Metric Format: each invocation collects its counts and
//! timings in a [`Metrics`], and at the end prints one JSON document per dimension set to
//! standard output, where CloudWatch Logs turns them into metrics (no API call, no latency).
//!
//! The namespace and the function's name are set once at start ([`init`]); without that
//! (tests, the local pipeline) nothing is printed, but the documents can still be read.

use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `METRICS_NAMESPACE`'s default.
pub const DEFAULT_NAMESPACE: &str = "clayhook";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

#[derive(Debug, Clone)]
struct Target {
    namespace: String,
    function: &'static str,
}

static TARGET: OnceLock<Target> = OnceLock::new();

/// Turns metrics on for this process: `namespace` (`METRICS_NAMESPACE`; empty or `off` turns
/// them off) and the `Function` dimension every metric carries.
pub fn init_from_env(function: &'static str) {
    init(
        crate::config::process_env()
            .raw("METRICS_NAMESPACE")
            .as_deref(),
        function,
    );
}

/// [`init_from_env`] with the namespace given.
pub fn init(namespace: Option<&str>, function: &'static str) {
    let namespace = namespace.unwrap_or(DEFAULT_NAMESPACE).trim();
    if namespace.is_empty() || namespace.eq_ignore_ascii_case("off") {
        return;
    }
    let _ = TARGET.set(Target {
        namespace: namespace.to_string(),
        function,
    });
}

type Dimensions = Vec<(&'static str, String)>;
/// One dimension set's metrics: name → unit and the values recorded.
type Series = BTreeMap<&'static str, (Unit, Vec<f64>)>;

/// One invocation's metrics.
#[derive(Debug)]
pub struct Metrics {
    namespace: String,
    function: &'static str,
    /// The invocation's request id, carried by every document (not a dimension): metrics and
    /// log lines of one invocation join on it.
    request_id: Option<String>,
    /// Per dimension set: metric name → unit and values.
    values: Mutex<BTreeMap<Dimensions, Series>>,
}

impl Metrics {
    /// For this process's function, as set by [`init`].
    pub fn for_invocation() -> Metrics {
        match TARGET.get() {
            Some(t) => Metrics::new(&t.namespace, t.function),
            None => Metrics::new("", ""),
        }
    }

    pub fn new(namespace: &str, function: &'static str) -> Metrics {
        Metrics {
            namespace: namespace.to_string(),
            function,
            request_id: None,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn with_request_id(mut self, request_id: &str) -> Metrics {
        self.request_id = (!request_id.is_empty()).then(|| request_id.to_string());
        self
    }

    fn put(&self, name: &'static str, unit: Unit, value: f64, dims: &[(&'static str, &str)]) {
        let dims: Dimensions = dims.iter().map(|(k, v)| (*k, v.to_string())).collect();
        if let Ok(mut values) = self.values.lock() {
            let entry = values
                .entry(dims)
                .or_default()
                .entry(name)
                .or_insert((unit, Vec::new()));
            entry.1.push(value);
        }
    }

    /// Adds one to a count.
    pub fn count(&self, name: &'static str, dims: &[(&'static str, &str)]) {
        self.add(name, 1.0, dims);
    }

    pub fn add(&self, name: &'static str, n: f64, dims: &[(&'static str, &str)]) {
        self.put(name, Unit::Count, n, dims);
    }

    pub fn duration(&self, name: &'static str, d: Duration, dims: &[(&'static str, &str)]) {
        self.put(name, Unit::Milliseconds, d.as_secs_f64() * 1000.0, dims);
    }

    /// The EMF documents so far: one per dimension set. Counts are summed; timings are kept as
    /// the list of values (CloudWatch takes up to 100 per document).
    pub fn documents(&self) -> Vec<Value> {
        let Ok(values) = self.values.lock() else {
            return Vec::new();
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        values
            .iter()
            .map(|(dims, metrics)| {
                let mut names = vec![Value::from("Function")];
                names.extend(dims.iter().map(|(k, _)| Value::from(*k)));
                let mut doc = Map::new();
                doc.insert("Function".into(), self.function.into());
                if let Some(id) = &self.request_id {
                    doc.insert("requestId".into(), id.as_str().into());
                }
                for (k, v) in dims {
                    doc.insert((*k).into(), v.as_str().into());
                }
                let mut defs = Vec::new();
                for (name, (unit, vals)) in metrics {
                    defs.push(json!({"Name": name, "Unit": unit.as_str()}));
                    let value = match unit {
                        Unit::Count => json!(vals.iter().sum::<f64>()),
                        Unit::Milliseconds if vals.len() == 1 => json!(vals[0]),
                        Unit::Milliseconds => json!(vals.iter().take(100).collect::<Vec<_>>()),
                    };
                    doc.insert((*name).into(), value);
                }
                doc.insert(
                    "_aws".into(),
                    json!({
                        "Timestamp": now,
                        "CloudWatchMetrics": [{
                            "Namespace": self.namespace,
                            "Dimensions": [names],
                            "Metrics": defs,
                        }]
                    }),
                );
                Value::Object(doc)
            })
            .collect()
    }

    /// Prints the documents, one line each, when metrics are on; empties the collection.
    pub fn flush(&self) {
        if !self.namespace.is_empty() {
            // One buffer, one write: serde straight to bytes, not through `Display`.
            let mut lines = Vec::with_capacity(512);
            for d in self.documents() {
                if serde_json::to_writer(&mut lines, &d).is_ok() {
                    lines.push(b'\n');
                }
            }
            let _ = std::io::stdout().lock().write_all(&lines);
        }
        if let Ok(mut values) = self.values.lock() {
            values.clear();
        }
    }

    /// The total of a count (tests, and the summary log line).
    pub fn total(&self, name: &str, dims: &[(&str, &str)]) -> f64 {
        let Ok(values) = self.values.lock() else {
            return 0.0;
        };
        values
            .iter()
            .filter(|(d, _)| {
                d.len() == dims.len()
                    && d.iter()
                        .zip(dims)
                        .all(|((k, v), (k2, v2))| k == k2 && v == v2)
            })
            .filter_map(|(_, m)| m.get(name))
            .map(|(_, vals)| vals.iter().sum::<f64>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_follow_the_embedded_metric_format() {
        let m = Metrics::new("clayhook-test", "router").with_request_id("req-9");
        m.count("Routed", &[("Destination", "crm")]);
        m.count("Routed", &[("Destination", "crm")]);
        m.count("Retries", &[("Destination", "crm")]);
        m.count("Routed", &[("Destination", "slack")]);
        m.duration("EnqueueLatency", Duration::from_millis(12), &[]);
        m.duration("EnqueueLatency", Duration::from_millis(30), &[]);
        let docs = m.documents();
        assert_eq!(docs.len(), 3);
        let crm = docs
            .iter()
            .find(|d| d["Destination"] == "crm")
            .expect("crm document");
        assert_eq!(crm["Function"], "router");
        assert_eq!(crm["requestId"], "req-9");
        assert_eq!(crm["Routed"], 2.0);
        assert_eq!(crm["Retries"], 1.0);
        let cw = &crm["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(cw["Namespace"], "clayhook-test");
        assert_eq!(cw["Dimensions"], json!([["Function", "Destination"]]));
        assert_eq!(
            cw["Metrics"],
            json!([{"Name": "Retries", "Unit": "Count"}, {"Name": "Routed", "Unit": "Count"}])
        );
        assert!(crm["_aws"]["Timestamp"].as_u64().unwrap() > 1_700_000_000_000);
        let latency = docs
            .iter()
            .find(|d| d.get("Destination").is_none())
            .unwrap();
        assert_eq!(latency["EnqueueLatency"], json!([12.0, 30.0]));
        assert_eq!(
            latency["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"],
            "Milliseconds"
        );
        assert_eq!(m.total("Routed", &[("Destination", "crm")]), 2.0);
        m.flush();
        assert!(m.documents().is_empty());
    }
}
