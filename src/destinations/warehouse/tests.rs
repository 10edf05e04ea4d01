use super::firehose::chunks;
use super::*;
use crate::config::env_of;
use std::time::{Duration, UNIX_EPOCH};

fn envelope(id: char, source: Option<&str>, received_s: u64) -> Envelope {
    let lead = Lead::parse(br#"{"email":"w@x.co","icp_score":"72","Row ID":"r1"}"#)
        .unwrap()
        .0;
    Envelope::new(
        id.to_string().repeat(64),
        UNIX_EPOCH + Duration::from_secs(received_s),
        source.map(str::to_string),
        lead,
    )
}

#[test]
fn a_row_is_the_lead_with_its_id_source_time_and_destinations() {
    let e = envelope('a', Some("tbl"), 1_800_000_000);
    let routed = [DestinationName::Zapier, DestinationName::Warehouse];
    let row = WarehouseRow::new(&e, "v1", &routed);
    let line = row.line();
    assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["id"], "a".repeat(64));
    assert_eq!(v["source"], "tbl");
    assert_eq!(v["received_at"], "2027-01-15T08:00:00Z");
    assert_eq!(v["date"], "2027-01-15");
    assert_eq!(
        v["destinations"],
        serde_json::json!(["zapier", "warehouse"])
    );
    assert_eq!(v["lead"]["icp_score"], 72.0);
    assert_eq!(v["lead"]["extra"]["Row ID"], "r1");
    assert_eq!(row.partition(), ("tbl".into(), "2027-01-15".into()));
    let none = envelope('b', None, 0);
    assert_eq!(
        WarehouseRow::new(&none, "v", &routed).partition(),
        (NO_SOURCE.into(), "1970-01-01".into())
    );
}

#[test]
fn the_object_key_names_the_partition_and_the_leads_in_any_order() {
    let uri = S3Uri::parse("s3://my-bucket/leads").unwrap();
    assert_eq!(uri.prefix, "leads/");
    let (a, b) = (envelope('a', Some("t"), 0), envelope('b', Some("t"), 0));
    let routed = [DestinationName::Warehouse];
    let rows = [
        WarehouseRow::new(&a, "1", &routed),
        WarehouseRow::new(&b, "1", &routed),
    ];
    let p = rows[0].partition();
    let key = uri.object_key(&p, &rows);
    assert!(key.starts_with("leads/source=t/date=1970-01-01/"), "{key}");
    assert!(key.ends_with(".jsonl"));
    let reversed = [rows[1].clone(), rows[0].clone()];
    assert_eq!(
        uri.object_key(&p, &reversed),
        key,
        "the same leads, the same object"
    );
    let other = [WarehouseRow::new(&a, "2", &routed)];
    assert_ne!(
        uri.object_key(&p, &other),
        key,
        "another version, another object"
    );
    assert_eq!(S3Uri::parse("s3://b-1.x").unwrap().prefix, "");
    for bad in [
        "http://bucket/x",
        "s3://",
        "s3://UPPER/x",
        "s3://ab/x",
        "bucket/x",
    ] {
        assert!(S3Uri::parse(bad).is_none(), "{bad}");
    }
}

#[test]
fn rows_group_by_partition() {
    let (a, b, c) = (
        envelope('a', Some("t"), 0),
        envelope('b', Some("u"), 0),
        envelope('c', Some("t"), 90_000),
    );
    let routed = [DestinationName::Warehouse];
    let rows = [
        WarehouseRow::new(&a, "1", &routed),
        WarehouseRow::new(&b, "1", &routed),
        WarehouseRow::new(&c, "1", &routed),
        WarehouseRow::new(&a, "2", &routed),
    ];
    let groups = by_partition(&rows);
    assert_eq!(groups.len(), 3);
    assert_eq!(groups[0].1, [0, 3]);
}

#[test]
fn firehose_batches_keep_within_500_records_and_4_mib() {
    let sizes = vec![10_000; 1_200];
    let got = chunks(&sizes);
    assert!(
        got.iter().all(
            |c| c.len() <= 419 && c.iter().map(|i| sizes[*i]).sum::<usize>() <= 4 * 1024 * 1024
        )
    );
    assert_eq!(got.iter().map(Vec::len).sum::<usize>(), 1_200);
    let small = chunks(&vec![10; 1_001]);
    assert_eq!(
        small.iter().map(Vec::len).collect::<Vec<_>>(),
        [500, 500, 1]
    );
    assert!(chunks(&[]).is_empty());
}

#[test]
fn the_target_is_s3_or_firehose_never_both() {
    assert_eq!(WarehouseTarget::read(&env_of(&[])).unwrap(), None);
    assert_eq!(
        WarehouseTarget::read(&env_of(&[("WAREHOUSE_S3_URI", "s3://bkt/p/")])).unwrap(),
        Some(WarehouseTarget::S3(S3Uri {
            bucket: "bkt".into(),
            prefix: "p/".into()
        }))
    );
    assert_eq!(
        WarehouseTarget::read(&env_of(&[("FIREHOSE_STREAM_NAME", "leads-stream")])).unwrap(),
        Some(WarehouseTarget::Firehose("leads-stream".into()))
    );
    let both = WarehouseTarget::read(&env_of(&[
        ("WAREHOUSE_S3_URI", "s3://bkt/p/"),
        ("FIREHOSE_STREAM_NAME", "s"),
    ]));
    assert!(both.unwrap_err().to_string().contains("not both"));
    assert!(WarehouseTarget::read(&env_of(&[("WAREHOUSE_S3_URI", "bkt")])).is_err());
    assert!(WarehouseTarget::read(&env_of(&[("FIREHOSE_STREAM_NAME", "a b")])).is_err());
}
