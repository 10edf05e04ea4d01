//! The lead, and lenient parsing of what a Clay HTTP API column sends.
//!
//! Clay bodies are hand-written templates, so one field arrives in many shapes (`"85"`, `"1,200"`,
//! `"N/A"`, `"['a','b']"`, `Work Email`). Parsing never fails because of a field: a value that
//! cannot be understood leaves the field absent, is reported as a [`FieldWarning`] (which names
//! the field, never the value), and is kept verbatim under `extra` so nothing is lost.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A lead with its known fields normalised and everything else kept under `extra`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Lead {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_title: Option<String>,
    /// A count, or the lower bound of a range (`"51-200"` → 51; the range itself is kept in
    /// `employee_count_range`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub employee_count: Option<u64>,
    /// The range as sent (`"51-200"`, `"10,001+"`), when the count came as one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub employee_count_range: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub industry: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linkedin_url: Option<String>,
    /// Integral scores travel as integers (`"92"` → `92`, not `92.0`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "integral_when_whole"
    )]
    pub icp_score: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personalized_opener: Option<String>,
    /// Every field the model does not know (and every known field whose value could not be
    /// understood), under the key and with the value Clay sent.
    #[serde(default)]
    pub extra: Map<String, Value>,
}

/// The known fields, by canonical name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Email,
    FirstName,
    LastName,
    CompanyName,
    Domain,
    JobTitle,
    EmployeeCount,
    EmployeeCountRange,
    Industry,
    LinkedinUrl,
    IcpScore,
    PersonalizedOpener,
}

impl Field {
    pub const ALL: [Field; 12] = [
        Field::Email,
        Field::FirstName,
        Field::LastName,
        Field::CompanyName,
        Field::Domain,
        Field::JobTitle,
        Field::EmployeeCount,
        Field::EmployeeCountRange,
        Field::Industry,
        Field::LinkedinUrl,
        Field::IcpScore,
        Field::PersonalizedOpener,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Field::Email => "email",
            Field::FirstName => "first_name",
            Field::LastName => "last_name",
            Field::CompanyName => "company_name",
            Field::Domain => "domain",
            Field::JobTitle => "job_title",
            Field::EmployeeCount => "employee_count",
            Field::EmployeeCountRange => "employee_count_range",
            Field::Industry => "industry",
            Field::LinkedinUrl => "linkedin_url",
            Field::IcpScore => "icp_score",
            Field::PersonalizedOpener => "personalized_opener",
        }
    }

    /// The field a key names, matched case- and separator-insensitively, aliases included.
    pub fn from_key(key: &str) -> Option<Field> {
        let k = normalise_key(key);
        let field = match k.as_str() {
            "email" | "workemail" | "emailaddress" | "workemailaddress" | "businessemail"
            | "contactemail" | "personemail" | "mail" => Field::Email,
            "firstname" | "first" | "givenname" | "fname" => Field::FirstName,
            "lastname" | "last" | "surname" | "familyname" | "lname" => Field::LastName,
            "companyname" | "company" | "organization" | "organisation" | "organizationname"
            | "accountname" | "employer" => Field::CompanyName,
            "domain" | "companydomain" | "website" | "companywebsite" | "websiteurl" => {
                Field::Domain
            }
            "jobtitle" | "title" | "position" | "role" => Field::JobTitle,
            "employeecount" | "employees" | "numberofemployees" | "numemployees" | "headcount"
            | "companysize" | "employeesize" => Field::EmployeeCount,
            "employeecountrange" | "employeerange" | "headcountrange" | "companysizerange"
            | "employeesizerange" => Field::EmployeeCountRange,
            "industry" | "companyindustry" | "sector" => Field::Industry,
            "linkedinurl" | "linkedin" | "linkedinprofile" | "linkedinprofileurl"
            | "personlinkedinurl" => Field::LinkedinUrl,
            "icpscore" | "score" | "icp" | "leadscore" | "fitscore" => Field::IcpScore,
            "personalizedopener" | "personalisedopener" | "opener" | "icebreaker" | "firstline"
            | "personalizedline" => Field::PersonalizedOpener,
            _ => return None,
        };
        Some(field)
    }
}

/// Lowercase, letters and digits only: `Work Email`, `work_email`, `workEmail` → `workemail`.
pub fn normalise_key(key: &str) -> String {
    key.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// A field whose value could not be understood. Names the field and the original key, never the
/// value (it may be an email address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldWarning {
    pub field: &'static str,
    pub key: String,
    pub reason: &'static str,
}

/// The body is not a JSON object.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("body is not valid JSON: {message} at line {line}, column {column}")]
    InvalidJson {
        message: String,
        line: usize,
        column: usize,
    },
    #[error("body is JSON but not an object (found {found})")]
    NotAnObject { found: &'static str },
}

/// Parses the raw body as a JSON object.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, BodyError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| BodyError::InvalidJson {
        // serde_json's message names the problem and never quotes the input.
        message: strip_position(&e.to_string()),
        line: e.line(),
        column: e.column(),
    })?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(BodyError::NotAnObject {
            found: json_kind(&other),
        }),
    }
}

fn strip_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Lead {
    /// Builds a lead from a Clay body object. Never fails; see the module comment.
    pub fn from_object(object: Map<String, Value>) -> (Lead, Vec<FieldWarning>) {
        let mut lead = Lead::default();
        let mut warnings = Vec::new();
        for (key, value) in object {
            let Some(field) = Field::from_key(&key) else {
                lead.extra.insert(key, value);
                continue;
            };
            if lead.is_set(field) {
                // Two keys for one field: the first understood value wins, the other is kept.
                lead.extra.insert(key, value);
                continue;
            }
            match lead.set(field, &value) {
                Ok(()) => {}
                Err(Unparsed::Absent) => {}
                Err(Unparsed::Invalid(reason)) => {
                    warnings.push(FieldWarning {
                        field: field.name(),
                        key: key.clone(),
                        reason,
                    });
                    lead.extra.insert(key, value);
                }
            }
        }
        (lead, warnings)
    }

    /// Parses a raw body: JSON object first, then the lenient field rules.
    pub fn parse(body: &[u8]) -> Result<(Lead, Vec<FieldWarning>), BodyError> {
        parse_object(body).map(Lead::from_object)
    }

    fn is_set(&self, field: Field) -> bool {
        self.get_known(field).is_some()
    }

    fn set(&mut self, field: Field, value: &Value) -> Result<(), Unparsed> {
        match field {
            Field::Email => self.email = Some(email(value)?),
            Field::FirstName => self.first_name = Some(text(value)?),
            Field::LastName => self.last_name = Some(text(value)?),
            Field::CompanyName => self.company_name = Some(text(value)?),
            Field::Domain => self.domain = Some(domain(value)?),
            Field::JobTitle => self.job_title = Some(text(value)?),
            Field::EmployeeCount => {
                let (n, range) = count(value)?;
                self.employee_count = Some(n);
                if range.is_some() && self.employee_count_range.is_none() {
                    self.employee_count_range = range;
                }
            }
            Field::EmployeeCountRange => {
                let text = text(value)?;
                if self.employee_count.is_none()
                    && let Ok((n, _)) = count(&Value::String(text.clone()))
                {
                    self.employee_count = Some(n);
                }
                self.employee_count_range = Some(text);
            }
            Field::Industry => self.industry = Some(text(value)?),
            Field::LinkedinUrl => self.linkedin_url = Some(linkedin(value)?),
            Field::IcpScore => self.icp_score = Some(score(value)?),
            Field::PersonalizedOpener => self.personalized_opener = Some(text(value)?),
        }
        Ok(())
    }

    /// A known field as JSON, if present.
    pub fn get_known(&self, field: Field) -> Option<Value> {
        let s = |v: &Option<String>| v.as_ref().map(|s| Value::String(s.clone()));
        match field {
            Field::Email => s(&self.email),
            Field::FirstName => s(&self.first_name),
            Field::LastName => s(&self.last_name),
            Field::CompanyName => s(&self.company_name),
            Field::Domain => s(&self.domain),
            Field::JobTitle => s(&self.job_title),
            Field::EmployeeCount => self.employee_count.map(Value::from),
            Field::EmployeeCountRange => s(&self.employee_count_range),
            Field::Industry => s(&self.industry),
            Field::LinkedinUrl => s(&self.linkedin_url),
            Field::IcpScore => self.icp_score.map(number_value),
            Field::PersonalizedOpener => s(&self.personalized_opener),
        }
    }

    /// Any field by name: a known field (any spelling or alias) or an `extra` key matched
    /// case- and separator-insensitively. Absent markers count as absent.
    pub fn get(&self, name: &str) -> Option<Value> {
        if let Some(field) = Field::from_key(name) {
            return self.get_known(field);
        }
        let wanted = normalise_key(name);
        self.extra
            .iter()
            .find(|(k, _)| normalise_key(k) == wanted)
            .map(|(_, v)| v.clone())
            .filter(|v| !is_absent(v))
    }
}

enum Unparsed {
    /// An absent marker: `null`, `""`, `"N/A"`, ... Not a warning.
    Absent,
    /// A value we could not understand.
    Invalid(&'static str),
}

/// `null`, `""` and the strings Clay templates produce for empty cells.
pub fn is_absent(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => is_absent_text(s),
        Value::Array(items) => items.iter().all(is_absent),
        _ => false,
    }
}

fn is_absent_text(s: &str) -> bool {
    let t = s.trim();
    t.is_empty()
        || [
            "null",
            "n/a",
            "na",
            "none",
            "undefined",
            "nil",
            "nan",
            "-",
            "[]",
            "{}",
        ]
        .iter()
        .any(|m| t.eq_ignore_ascii_case(m))
}

/// Items of a list sent as a JSON array, `"['a','b']"`, `"[\"a\"]"` or (with `split_commas`)
/// `"a, b"`. A plain string is a list of one.
pub fn list_items(value: &Value, split_commas: bool) -> Vec<String> {
    match value {
        Value::Array(items) => items
            .iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s.trim().to_string()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .filter(|s| !is_absent_text(s))
            .collect(),
        Value::String(s) => {
            let t = s.trim();
            if let Some(inner) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
                if let Ok(Value::Array(items)) = serde_json::from_str::<Value>(t) {
                    return list_items(&Value::Array(items), split_commas);
                }
                // Python-style repr: ['a', 'b'].
                return inner
                    .split(',')
                    .map(|i| i.trim().trim_matches(|c| c == '\'' || c == '"').trim())
                    .filter(|i| !is_absent_text(i))
                    .map(str::to_string)
                    .collect();
            }
            let parts: Vec<String> = if split_commas {
                t.split([',', ';'])
                    .map(str::trim)
                    .filter(|i| !is_absent_text(i))
                    .map(str::to_string)
                    .collect()
            } else if is_absent_text(t) {
                Vec::new()
            } else {
                vec![t.to_string()]
            };
            parts
        }
        Value::Number(n) => vec![n.to_string()],
        _ => Vec::new(),
    }
}

/// `true`/`false` as booleans or strings (`"yes"`, `"1"`, ... too). For rules on extra fields.
pub fn as_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_f64().map(|f| f != 0.0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" | "1" => Some(true),
            "false" | "no" | "n" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// A number sent as a number or as text: `85`, `"85"`, `" 85 "`, `"85.0"`, `"1,200"`, `"85%"`.
pub fn as_number(value: &Value) -> Option<f64> {
    let n = match value {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => {
            let cleaned: String = s
                .trim()
                .trim_end_matches('%')
                .chars()
                .filter(|c| !matches!(c, ',' | '_' | ' '))
                .collect();
            if cleaned.is_empty()
                || !cleaned
                    .bytes()
                    .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
            {
                return None;
            }
            cleaned.parse::<f64>().ok()?
        }
        _ => return None,
    };
    n.is_finite().then_some(n)
}

/// One value out of a scalar-or-list. Lists give their first item.
fn single(value: &Value, split_commas: bool) -> Result<String, Unparsed> {
    if is_absent(value) {
        return Err(Unparsed::Absent);
    }
    match value {
        Value::Bool(_) | Value::Object(_) => Err(Unparsed::Invalid("not text")),
        _ => list_items(value, split_commas)
            .into_iter()
            .next()
            .ok_or(Unparsed::Absent),
    }
}

fn text(value: &Value) -> Result<String, Unparsed> {
    if is_absent(value) {
        return Err(Unparsed::Absent);
    }
    match value {
        Value::String(s) => {
            let t = s.trim();
            // A stringified list stays a list; anything else is the text itself ("Acme, Inc.").
            if t.starts_with('[') && t.ends_with(']') {
                single(value, false)
            } else {
                Ok(t.to_string())
            }
        }
        Value::Number(n) => Ok(n.to_string()),
        Value::Array(_) => single(value, false),
        _ => Err(Unparsed::Invalid("not text")),
    }
}

fn email(value: &Value) -> Result<String, Unparsed> {
    let raw = single(value, true)?;
    let e = raw
        .trim()
        .trim_start_matches("mailto:")
        .trim_matches(|c| c == '<' || c == '>')
        .to_lowercase();
    let valid = match e.split_once('@') {
        Some((local, host)) => {
            !local.is_empty()
                && host.contains('.')
                && !host.starts_with('.')
                && !host.ends_with('.')
                && !host.contains('@')
                && !e.chars().any(char::is_whitespace)
        }
        None => false,
    };
    if valid {
        Ok(e)
    } else {
        Err(Unparsed::Invalid("not an email address"))
    }
}

fn domain(value: &Value) -> Result<String, Unparsed> {
    let raw = single(value, true)?.to_lowercase();
    let no_scheme = raw.split_once("://").map(|(_, rest)| rest).unwrap_or(&raw);
    let host = no_scheme
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default()
        .rsplit('@')
        .next()
        .unwrap_or_default();
    let host = host.split(':').next().unwrap_or_default();
    let host = host
        .strip_prefix("www.")
        .unwrap_or(host)
        .trim_end_matches('.');
    let valid = host.contains('.')
        && host
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '.');
    if valid {
        Ok(host.to_string())
    } else {
        Err(Unparsed::Invalid("not a domain"))
    }
}

fn linkedin(value: &Value) -> Result<String, Unparsed> {
    let raw = single(value, true)?;
    let url = if raw.contains("://") {
        raw
    } else {
        format!("https://{raw}")
    };
    if url.to_lowercase().contains("linkedin.com/") && !url.chars().any(char::is_whitespace) {
        Ok(url)
    } else {
        Err(Unparsed::Invalid("not a LinkedIn URL"))
    }
}

/// A count as Clay sends it: `250`, `"1,200"`, `"5k"`, `"10,001+"`, or a range such as
/// LinkedIn's `"51-200"` (also `"51 – 200"`, `"51 to 200"`), which gives its lower bound and the
/// range's text.
fn count(value: &Value) -> Result<(u64, Option<String>), Unparsed> {
    if is_absent(value) {
        return Err(Unparsed::Absent);
    }
    let invalid = Unparsed::Invalid("not a count");
    match value {
        Value::String(s) => {
            let t = s.trim();
            let bounds: Vec<&str> = t
                .split(['-', '–', '—'])
                .flat_map(|part| part.split(" to "))
                .map(str::trim)
                .collect();
            match bounds.as_slice() {
                [one] => Ok((
                    one_count(one).ok_or(invalid)?,
                    t.ends_with('+').then(|| t.to_string()),
                )),
                [low, high] if !low.is_empty() && !high.is_empty() => {
                    let (lo, hi) = (one_count(low).ok_or(invalid)?, one_count(high));
                    match hi {
                        Some(hi) if hi >= lo => Ok((lo, Some(t.to_string()))),
                        _ => Err(Unparsed::Invalid("not a count")),
                    }
                }
                _ => Err(invalid),
            }
        }
        Value::Array(_) => count(&Value::String(single(value, false)?)),
        other => match as_number(other) {
            Some(n) if (0.0..1e15).contains(&n) => Ok((n.round() as u64, None)),
            _ => Err(invalid),
        },
    }
}

/// One count: `1,200`, `5k`, `1.5M`, `10,001+`.
fn one_count(text: &str) -> Option<u64> {
    let t = text.trim().trim_end_matches('+').trim();
    let (digits, factor) = if let Some(d) = t.strip_suffix(['k', 'K']) {
        (d, 1_000.0)
    } else if let Some(d) = t.strip_suffix(['m', 'M']) {
        (d, 1_000_000.0)
    } else {
        (t, 1.0)
    };
    let n = as_number(&Value::String(digits.to_string()))? * factor;
    (0.0..1e15).contains(&n).then(|| n.round() as u64)
}

/// A whole number as a JSON integer, anything else as a float.
pub fn number_value(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9e15 {
        Value::from(n as i64)
    } else {
        Value::from(n)
    }
}

fn integral_when_whole<S: serde::Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(n) => number_value(*n).serialize(s),
        None => s.serialize_none(),
    }
}

fn score(value: &Value) -> Result<f64, Unparsed> {
    if is_absent(value) {
        return Err(Unparsed::Absent);
    }
    let v = match value {
        Value::Array(_) => Value::String(single(value, false)?),
        other => other.clone(),
    };
    as_number(&v).ok_or(Unparsed::Invalid("not a number"))
}

#[cfg(test)]
mod tests;
