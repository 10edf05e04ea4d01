//! Table-driven: shapes Clay templates really produce, one row each.

use super::*;
use serde_json::json;

/// (body, field looked up with `Lead::get`, expected value or None for absent)
fn cases() -> Vec<(&'static str, &'static str, Option<Value>)> {
    vec![
        // Scores: numbers, numbers as text, padded, decimals, thousands, percent.
        (r#"{"icp_score":85}"#, "icp_score", Some(json!(85))),
        (r#"{"icp_score":"85"}"#, "icp_score", Some(json!(85))),
        (r#"{"icp_score":" 85 "}"#, "icp_score", Some(json!(85))),
        (r#"{"icp_score":"85.0"}"#, "icp_score", Some(json!(85))),
        (r#"{"icp_score":"72.5"}"#, "icp_score", Some(json!(72.5))),
        (r#"{"icp_score":"1,200"}"#, "icp_score", Some(json!(1200))),
        (r#"{"icp_score":"90%"}"#, "icp_score", Some(json!(90))),
        (r#"{"ICP Score":"91"}"#, "icp_score", Some(json!(91))),
        (r#"{"score":77}"#, "icp_score", Some(json!(77))),
        (r#"{"Lead Score":"64"}"#, "icp_score", Some(json!(64))),
        (r#"{"icpScore":["88"]}"#, "icp_score", Some(json!(88))),
        // Absent markers.
        (r#"{"icp_score":""}"#, "icp_score", None),
        (r#"{"icp_score":null}"#, "icp_score", None),
        (r#"{"icp_score":"null"}"#, "icp_score", None),
        (r#"{"icp_score":"N/A"}"#, "icp_score", None),
        (r#"{"icp_score":"undefined"}"#, "icp_score", None),
        (r#"{"icp_score":"high"}"#, "icp_score", None),
        (r#"{"icp_score":true}"#, "icp_score", None),
        (r#"{"icp_score":"NaN"}"#, "icp_score", None),
        // Emails: spellings, case, padding, lists, junk.
        (
            r#"{"email":"Jane@Acme.com"}"#,
            "email",
            Some(json!("jane@acme.com")),
        ),
        (
            r#"{"Work Email":" jane@acme.com "}"#,
            "email",
            Some(json!("jane@acme.com")),
        ),
        (
            r#"{"work_email":"jane@acme.com"}"#,
            "email",
            Some(json!("jane@acme.com")),
        ),
        (
            r#"{"workEmail":"jane@acme.com"}"#,
            "email",
            Some(json!("jane@acme.com")),
        ),
        (
            r#"{"Email Address":"jane@acme.com"}"#,
            "email",
            Some(json!("jane@acme.com")),
        ),
        (
            r#"{"email":"['jane@acme.com', 'j@acme.com']"}"#,
            "email",
            Some(json!("jane@acme.com")),
        ),
        (
            r#"{"email":"jane@acme.com, j@acme.com"}"#,
            "email",
            Some(json!("jane@acme.com")),
        ),
        (
            r#"{"email":["jane@acme.com"]}"#,
            "email",
            Some(json!("jane@acme.com")),
        ),
        (
            r#"{"email":"mailto:jane@acme.com"}"#,
            "email",
            Some(json!("jane@acme.com")),
        ),
        (r#"{"email":"not an email"}"#, "email", None),
        (r#"{"email":"[]"}"#, "email", None),
        (
            r#"{"email":"", "work_email":"jane@acme.com"}"#,
            "email",
            Some(json!("jane@acme.com")),
        ),
        // Names and text.
        (
            r#"{"First Name":"Jane","last_name":"Doe"}"#,
            "first_name",
            Some(json!("Jane")),
        ),
        (
            r#"{"firstName":"  Jane "}"#,
            "first_name",
            Some(json!("Jane")),
        ),
        (
            r#"{"Last Name":"O'Brien"}"#,
            "last_name",
            Some(json!("O'Brien")),
        ),
        (
            r#"{"company":"Acme, Inc."}"#,
            "company_name",
            Some(json!("Acme, Inc.")),
        ),
        (
            r#"{"Company Name":"Acme"}"#,
            "company_name",
            Some(json!("Acme")),
        ),
        (
            r#"{"title":"VP Sales"}"#,
            "job_title",
            Some(json!("VP Sales")),
        ),
        (r#"{"Job Title":"undefined"}"#, "job_title", None),
        (
            r#"{"industry":"['Software', 'SaaS']"}"#,
            "industry",
            Some(json!("Software")),
        ),
        (
            r#"{"personalized_opener":"Loved your talk, \"really\".\nThanks!"}"#,
            "personalized_opener",
            Some(json!("Loved your talk, \"really\".\nThanks!")),
        ),
        // Employee counts.
        (
            r#"{"employee_count":"1,200"}"#,
            "employee_count",
            Some(json!(1200)),
        ),
        (
            r#"{"Employee Count":1200}"#,
            "employee_count",
            Some(json!(1200)),
        ),
        (
            r#"{"employees":"250.0"}"#,
            "employee_count",
            Some(json!(250)),
        ),
        (
            r#"{"employeeCount":"10,000+"}"#,
            "employee_count",
            Some(json!(10000)),
        ),
        (
            r#"{"headcount":"1.2k"}"#,
            "employee_count",
            Some(json!(1200)),
        ),
        // LinkedIn's ranges: the lower bound, and the range kept as sent.
        (
            r#"{"Employee Count":"51-200"}"#,
            "employee_count",
            Some(json!(51)),
        ),
        (
            r#"{"Employee Count":"51-200"}"#,
            "employee_count_range",
            Some(json!("51-200")),
        ),
        (
            r#"{"company_size":"1,001 – 5,000"}"#,
            "employee_count",
            Some(json!(1001)),
        ),
        (
            r#"{"employees":"11 to 50"}"#,
            "employee_count",
            Some(json!(11)),
        ),
        (
            r#"{"Employee Range":"201-500"}"#,
            "employee_count",
            Some(json!(201)),
        ),
        (r#"{"employee_count":"200-51"}"#, "employee_count", None),
        (r#"{"employee_count":"2020-01-01"}"#, "employee_count", None),
        (r#"{"employee_count":-5}"#, "employee_count", None),
        (r#"{"employee_count":"-5"}"#, "employee_count", None),
        // Domains and LinkedIn.
        (
            r#"{"domain":"https://www.Acme.com/about"}"#,
            "domain",
            Some(json!("acme.com")),
        ),
        (r#"{"website":"acme.io"}"#, "domain", Some(json!("acme.io"))),
        (r#"{"Company Domain":"localhost"}"#, "domain", None),
        (
            r#"{"linkedin":"linkedin.com/in/jane"}"#,
            "linkedin_url",
            Some(json!("https://linkedin.com/in/jane")),
        ),
        (
            r#"{"LinkedIn URL":"https://www.linkedin.com/in/jane/"}"#,
            "linkedin_url",
            Some(json!("https://www.linkedin.com/in/jane/")),
        ),
        (
            r#"{"linkedin_url":"https://example.com/jane"}"#,
            "linkedin_url",
            None,
        ),
        // Unknown fields are kept verbatim and reachable by any spelling.
        (r#"{"Row ID":"r_123"}"#, "row_id", Some(json!("r_123"))),
        (
            r#"{"is_customer":"true"}"#,
            "isCustomer",
            Some(json!("true")),
        ),
        (r#"{"tags":["a","b"]}"#, "tags", Some(json!(["a", "b"]))),
        (r#"{"nested":{"k":1}}"#, "nested", Some(json!({"k": 1}))),
    ]
}

#[test]
fn clay_shapes_table() {
    let cases = cases();
    assert!(cases.len() >= 40, "the table covers at least 40 shapes");
    for (body, field, expected) in cases {
        let (lead, _) = Lead::parse(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"));
        assert_eq!(lead.get(field), expected, "body {body} field {field}");
    }
}

#[test]
fn unparseable_known_value_is_kept_in_extra_and_warned_without_the_value() {
    let (lead, warnings) =
        Lead::parse(br#"{"Work Email":"jane at acme","employee_count":"lots"}"#).unwrap();
    assert_eq!(lead.email, None);
    assert_eq!(lead.extra.get("Work Email"), Some(&json!("jane at acme")));
    assert_eq!(lead.extra.get("employee_count"), Some(&json!("lots")));
    assert_eq!(warnings.len(), 2);
    assert_eq!(warnings[0].field, "email");
    assert_eq!(warnings[0].key, "Work Email");
    let shown = format!("{warnings:?}");
    assert!(
        !shown.contains("jane"),
        "warnings never carry values: {shown}"
    );
}

/// `"ICP Score": "92"` travels on as `92`, not `92.0`; fractions stay fractions.
#[test]
fn whole_scores_stay_integers_downstream() {
    let (lead, _) = Lead::parse(br#"{"ICP Score":"92","Employee Count":"51-200"}"#).unwrap();
    let text = serde_json::to_string(&lead).unwrap();
    assert_eq!(
        text,
        r#"{"employee_count":51,"employee_count_range":"51-200","icp_score":92,"extra":{}}"#
    );
    let back: Lead = serde_json::from_str(&text).unwrap();
    assert_eq!(back, lead);
    let (lead, _) = Lead::parse(br#"{"score":"79.5"}"#).unwrap();
    assert_eq!(
        serde_json::to_value(&lead).unwrap()["icp_score"],
        json!(79.5)
    );
    assert_eq!(lead.get("icp_score"), Some(json!(79.5)));
}

#[test]
fn absent_markers_are_not_warnings() {
    let (lead, warnings) = Lead::parse(br#"{"email":"N/A","icp_score":"","title":null}"#).unwrap();
    assert!(warnings.is_empty());
    assert_eq!(lead, Lead::default());
}

#[test]
fn second_spelling_of_a_set_field_is_kept() {
    let (lead, _) = Lead::parse(br#"{"email":"a@x.io","Work Email":"b@x.io"}"#).unwrap();
    assert_eq!(lead.email.as_deref(), Some("a@x.io"));
    assert_eq!(lead.extra.get("Work Email"), Some(&json!("b@x.io")));
}

#[test]
fn serialises_known_fields_then_extra() {
    let (lead, _) =
        Lead::parse(br#"{"Work Email":"Jane@Acme.com","score":"85","Row ID":7}"#).unwrap();
    let v = serde_json::to_value(&lead).unwrap();
    assert_eq!(
        v,
        json!({"email":"jane@acme.com","icp_score":85,"extra":{"Row ID":7}})
    );
    let back: Lead = serde_json::from_value(v).unwrap();
    assert_eq!(back, lead);
}

#[test]
fn invalid_json_reports_position_without_echoing_the_body() {
    let err = Lead::parse(b"{\"email\": \"secret@acme.com\",\n  oops}").unwrap_err();
    match &err {
        BodyError::InvalidJson { line, column, .. } => {
            assert_eq!(*line, 2);
            assert!(*column > 0);
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.to_string().contains("secret@acme.com"));
}

#[test]
fn non_objects_are_refused() {
    for (body, found) in [
        ("[1,2]", "an array"),
        ("\"x\"", "a string"),
        ("42", "a number"),
        ("null", "null"),
        ("true", "a boolean"),
    ] {
        assert_eq!(
            Lead::parse(body.as_bytes()).unwrap_err(),
            BodyError::NotAnObject { found }
        );
    }
    assert!(matches!(
        Lead::parse(b"").unwrap_err(),
        BodyError::InvalidJson { .. }
    ));
    assert!(matches!(
        Lead::parse(&[0xff, 0xfe]).unwrap_err(),
        BodyError::InvalidJson { .. }
    ));
}

#[test]
fn helpers_for_rules() {
    assert_eq!(as_bool(&json!("true")), Some(true));
    assert_eq!(as_bool(&json!("FALSE")), Some(false));
    assert_eq!(as_bool(&json!("maybe")), None);
    assert_eq!(as_number(&json!(" 1,200 ")), Some(1200.0));
    assert_eq!(as_number(&json!("12abc")), None);
    assert_eq!(list_items(&json!("a, b"), true), vec!["a", "b"]);
    assert_eq!(list_items(&json!("['a','b']"), false), vec!["a", "b"]);
    assert_eq!(list_items(&json!("[\"a\",\"b\"]"), false), vec!["a", "b"]);
    assert_eq!(normalise_key("Work_E-mail Address"), "workemailaddress");
}

/// The README's Clay column guide sends every field the seed's table has, gates rows as the seed
/// does, and covers auto-run and the column's rate limit.
#[test]
fn the_clay_column_guide_sends_the_seed_fields() {
    let readme = include_str!("../../README.md");
    let guide = readme
        .split("## Set up the Clay HTTP API column")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("the README has the Clay column guide");
    for field in [
        "email",
        "first_name",
        "last_name",
        "company_name",
        "job_title",
        "employee_count",
        "industry",
        "linkedin_url",
        "icp_score",
        "personalized_opener",
    ] {
        let line = format!("\"{field}\": Clay.formatForJSON(");
        assert!(guide.contains(&line), "the body template lacks {field}");
        assert!(Field::from_key(field).is_some());
    }
    assert!(guide.contains("!!{{Work Email}} && Number({{ICP Score}}) >= 50"));
    assert!(guide.contains("**Auto-run:**") && guide.contains("**Request limit**"));
}
