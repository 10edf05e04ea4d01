//! The warehouse destination against moto_server's S3 and Firehose (delivering to S3), read back
//! with DuckDB (`scripts/warehouse_query.py`): rows per source and date match what was sent, and
//! a redelivered batch adds no row. Firehose's per-record refusals come from a local stand-in
//! speaking its JSON protocol (moto never refuses a record).

use crate::support::{Aws, moto_url, sdk_config};
use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use base64::Engine;
use clayhook::delivery::retry::RetryPolicy;
use clayhook::destinations::warehouse::{S3Uri, WarehouseTarget};
use clayhook::destinations::webhook::Webhook;
use clayhook::destinations::{DestinationSettings, HttpDestinations};
use clayhook::envelope::Envelope;
use clayhook::lead::Lead;
use clayhook::router::ledger::DynamoDbDeliveryLedger;
use clayhook::router::rules::default_rules;
use clayhook::router::{Router, RouterSettings};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

type R = Router<DynamoDbDeliveryLedger, HttpDestinations>;

/// The router with the warehouse and, with `webhooks`, nurture and zapier on that server.
async fn router(
    aws: &Aws,
    target: WarehouseTarget,
    sdk: &aws_config::SdkConfig,
    webhooks: Option<&MockServer>,
) -> R {
    let hook = |p: &str| webhooks.map(|s| Webhook::new(format!("{}/{p}", s.uri()), None));
    Router {
        settings: RouterSettings {
            rules: default_rules(),
            concurrency: 10,
            retry: RetryPolicy {
                max_attempts: 3,
                base: Duration::from_millis(5),
                cap: Duration::from_millis(20),
                safety_margin: Duration::from_millis(200),
            },
            request_timeout: Duration::from_secs(5),
            delivery_ttl_seconds: 3600,
            max_receive_count: None,
            schedule: Default::default(),
            control: Default::default(),
            archive_days: 0,
        },
        ledger: DynamoDbDeliveryLedger::new(aws.dynamodb.clone(), &aws.table),
        destinations: HttpDestinations::new(
            DestinationSettings {
                nurture: hook("nurture"),
                zapier: hook("zapier"),
                warehouse: Some(target),
                ..DestinationSettings::default()
            },
            Duration::from_millis(500),
        )
        .unwrap()
        .with_warehouse(sdk),
        redelivery: clayhook::queue::NoRedelivery,
        control: clayhook::delivery::control::NoControl,
    }
}

/// Lead `i` of `source`, received on day `day` (0 or 1) of January 2027.
fn envelope(source: &str, i: usize, day: u64) -> Envelope {
    let body = format!(
        r#"{{"email":"{source}{i}@warehouse.invalid","company":"C{i}","icp_score":{}}}"#,
        (i * 13) % 100
    );
    let (lead, _) = Lead::parse(body.as_bytes()).unwrap();
    Envelope::new(
        crate::support::lead_id(&format!("{source}-{i}")),
        UNIX_EPOCH + Duration::from_secs(1_798_761_600 + day * 86_400 + i as u64),
        Some(source.into()),
        lead,
    )
}

async fn route(r: &R, envs: &[Envelope]) -> Vec<String> {
    let mut event = SqsEvent::default();
    event.records = envs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut m = SqsMessage::default();
            m.message_id = Some(format!("m{i}"));
            m.body = Some(e.to_json());
            m
        })
        .collect();
    r.handle(event, SystemTime::now() + Duration::from_secs(20))
        .await
        .unwrap()
        .batch_item_failures
        .into_iter()
        .map(|f| f.item_identifier)
        .collect()
}

fn s3(sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(true)
            .build(),
    )
}

/// Every object under `prefix`, downloaded into a fresh directory with the same keys.
async fn download(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> (std::path::PathBuf, usize) {
    let dir = std::env::temp_dir().join(crate::support::unique("warehouse"));
    let listed = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .unwrap();
    let mut n = 0;
    for o in listed.contents() {
        let key = o.key().unwrap();
        let body = s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap();
        let bytes = body.body.collect().await.unwrap().into_bytes();
        let path = dir.join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
        n += 1;
    }
    (dir.join(prefix.trim_end_matches('/')), n)
}

/// `scripts/warehouse_query.py` (DuckDB) over what was downloaded.
fn duckdb(dir: &std::path::Path, layout: &str) -> Value {
    let out = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/warehouse_query.py"
        ))
        .arg(dir)
        .arg(layout)
        .output()
        .expect("python3 (make test puts .venv/bin first on PATH)");
    assert!(
        out.status.success(),
        "warehouse_query.py: {} (is duckdb installed? make venv)",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn expected(envs: &[Envelope]) -> Vec<Value> {
    let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
    for e in envs {
        *counts
            .entry((e.source.clone().unwrap(), e.received_at[..10].to_string()))
            .or_default() += 1;
    }
    counts
        .into_iter()
        .map(|((s, d), n)| json!([s, d, n]))
        .collect()
}

fn print_queries(label: &str, v: &Value) {
    println!(
        "{label}: {} rows, {} distinct leads",
        v["rows"], v["distinct"]
    );
    for (name, table) in v["queries"].as_object().unwrap() {
        println!("-- {name}\n{}", table.as_str().unwrap());
    }
}

#[tokio::test]
async fn s3_rows_are_partitioned_queryable_and_written_once() {
    let aws = Aws::fresh().await;
    let sdk = sdk_config(moto_url()).await;
    let s3 = s3(&sdk);
    let bucket = crate::support::unique("wh").to_lowercase();
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let uri = S3Uri::parse(&format!("s3://{bucket}/leads/")).unwrap();
    let hooks = MockServer::start().await;
    Mock::given(wiremock::matchers::method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&hooks)
        .await;
    let r = router(&aws, WarehouseTarget::S3(uri), &sdk, Some(&hooks)).await;

    // 30 leads from three tables over two days, in three batches of ten.
    let envs: Vec<Envelope> = (0..30)
        .map(|i| envelope(["webinar", "signup", "import"][i % 3], i, (i / 15) as u64))
        .collect();
    for batch in envs.chunks(10) {
        assert!(route(&r, batch).await.is_empty());
    }
    let (_, objects) = download(&s3, &bucket, "leads/").await;
    // One object per partition per batch: each batch of ten spans at most 3 sources x 2 days.
    assert!((6..=12).contains(&objects), "{objects} objects");

    // A batch delivered again (SQS redelivery), and one mixing old and new leads: no row twice.
    assert!(route(&r, &envs[..10]).await.is_empty());
    let extra = envelope("webinar", 30, 1);
    let mixed: Vec<Envelope> = envs[10..13]
        .iter()
        .cloned()
        .chain([extra.clone()])
        .collect();
    assert!(route(&r, &mixed).await.is_empty());
    let (dir, after) = download(&s3, &bucket, "leads/").await;
    assert_eq!(after, objects + 1, "only the new lead's object was added");

    let v = duckdb(&dir, "s3");
    let mut all = envs.clone();
    all.push(extra);
    assert_eq!(v["counts"].as_array().unwrap(), &expected(&all));
    assert_eq!(v["rows"], 31);
    assert_eq!(v["distinct"], 31);
    let share = v["queries"]["share of leads per destination"]
        .as_str()
        .unwrap();
    for d in ["warehouse", "zapier", "nurture"] {
        assert!(share.contains(d), "{share}");
    }
    print_queries("S3 (DuckDB read-back)", &v);
}

#[tokio::test]
async fn firehose_rows_land_in_s3_once_per_lead() {
    let aws = Aws::fresh().await;
    let sdk = sdk_config(moto_url()).await;
    let s3 = s3(&sdk);
    let bucket = crate::support::unique("fh").to_lowercase();
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let stream = crate::support::unique("leads");
    aws_sdk_firehose::Client::new(&sdk)
        .create_delivery_stream()
        .delivery_stream_name(&stream)
        .extended_s3_destination_configuration(
            aws_sdk_firehose::types::ExtendedS3DestinationConfiguration::builder()
                .bucket_arn(format!("arn:aws:s3:::{bucket}"))
                .role_arn("arn:aws:iam::123456789012:role/firehose")
                .prefix("firehose/")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let r = router(&aws, WarehouseTarget::Firehose(stream), &sdk, None).await;
    let envs: Vec<Envelope> = (0..20).map(|i| envelope(["a", "b"][i % 2], i, 0)).collect();
    for batch in envs.chunks(10) {
        assert!(route(&r, batch).await.is_empty());
    }
    assert!(route(&r, &envs[..10]).await.is_empty(), "redelivered");
    let (dir, objects) = download(&s3, &bucket, "firehose/").await;
    assert_eq!(
        objects, 2,
        "one PutRecordBatch per router batch, none for the redelivery"
    );
    let v = duckdb(&dir, "firehose");
    assert_eq!(v["counts"].as_array().unwrap(), &expected(&envs));
    assert_eq!(
        (v["rows"].as_u64(), v["distinct"].as_u64()),
        (Some(20), Some(20))
    );
    print_queries("Firehose -> S3 (DuckDB read-back)", &v);
}

/// Answers `PutRecordBatch`, refusing each record whose data holds `refuse` while `times` lasts.
#[derive(Clone)]
struct FirehoseStandIn {
    refuse: &'static str,
    times: Arc<Mutex<u32>>,
    taken: Arc<Mutex<Vec<String>>>,
}

impl Respond for FirehoseStandIn {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let mut failed = 0;
        let mut answers = Vec::new();
        let mut times = self.times.lock().unwrap();
        for record in body["Records"].as_array().cloned().unwrap_or_default() {
            let data = base64::engine::general_purpose::STANDARD
                .decode(record["Data"].as_str().unwrap_or_default())
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&data).into_owned();
            if text.contains(self.refuse) && *times > 0 {
                *times -= 1;
                failed += 1;
                answers.push(json!({"ErrorCode": "ServiceUnavailableException", "ErrorMessage": "Slow down."}));
            } else {
                self.taken.lock().unwrap().push(text);
                answers.push(json!({"RecordId": format!("r{}", answers.len())}));
            }
        }
        ResponseTemplate::new(200).set_body_raw(
            json!({"FailedPutCount": failed, "Encrypted": false, "RequestResponses": answers})
                .to_string(),
            "application/x-amz-json-1.1",
        )
    }
}

#[tokio::test]
async fn firehose_records_it_refuses_are_retried_and_never_reported_delivered() {
    let aws = Aws::fresh().await;
    let server = MockServer::start().await;
    let stand_in = FirehoseStandIn {
        refuse: "1@warehouse",
        times: Arc::new(Mutex::new(1)),
        taken: Arc::default(),
    };
    Mock::given(wiremock::matchers::header(
        "x-amz-target",
        "Firehose_20150804.PutRecordBatch",
    ))
    .respond_with(stand_in.clone())
    .mount(&server)
    .await;
    let sdk = sdk_config(&server.uri()).await;
    let r = router(&aws, WarehouseTarget::Firehose("leads".into()), &sdk, None).await;
    let envs: Vec<Envelope> = (0..3).map(|i| envelope("b", i, 0)).collect();
    // Refused once: retried within the invocation, delivered.
    assert!(route(&r, &envs).await.is_empty());
    assert_eq!(stand_in.taken.lock().unwrap().len(), 3);
    assert_eq!(
        requests(&server).await,
        2,
        "the retry sent only the refused record"
    );
    // Refused every time: that record (and only it) fails, and stays owed.
    *stand_in.times.lock().unwrap() = 100;
    let more: Vec<Envelope> = [
        envelope("b", 12, 0),
        envelope("b", 13, 0),
        envelope("x", 1, 0),
    ]
    .into();
    let failed = route(&r, &more).await;
    assert_eq!(failed, ["m2"], "only the refused lead's record fails");
    *stand_in.times.lock().unwrap() = 0;
    assert!(
        route(&r, &more).await.is_empty(),
        "the redelivery sends what is owed"
    );
    let taken = stand_in.taken.lock().unwrap().clone();
    assert_eq!(taken.len(), 6, "each lead once: {taken:?}");
}

async fn requests(server: &MockServer) -> usize {
    server.received_requests().await.unwrap_or_default().len()
}
