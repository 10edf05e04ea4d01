//! A keep-alive stand-in for DynamoDB and SQS, for benchmarks only (moto stays the stand-in for
//! correctness). moto answers every call with `Connection: close`, so each call a function makes
//! against it opens a new TCP connection and the benchmark measures the kernel's connect path
//! more than the function. This server speaks the AWS JSON 1.0 protocol both services use for the
//! calls our functions and the Node.js peer make, keeps connections alive (HTTP/1.1), turns
//! Nagle off, and writes each response in one `write` (a header written apart from its body
//! meets the client's delayed ACK: about 40 ms a call, to both sides).
//!
//! State is what the calls need to take their usual paths, no more: items by key (a put whose
//! condition starts `attribute_not_exists` fails on an existing item, with the item when asked),
//! update expressions are not evaluated (the item keeps its key), every send is accepted with
//! the body's MD5, which the JavaScript SDK checks.

use md5::{Digest, Md5};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct AwsStandin {
    pub url: String,
    state: Arc<State>,
    _server: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct State {
    items: Mutex<HashMap<String, Map<String, Value>>>,
    calls: Mutex<HashMap<String, u64>>,
    /// Updates by the start of their expression: which writes a path makes.
    updates: Mutex<HashMap<String, u64>>,
    connections: Mutex<u64>,
    sent: Mutex<u64>,
    /// `UpdateItem`s whose expression contains this are answered this much later.
    slow_update: Mutex<Option<(String, std::time::Duration)>>,
    /// The next this many `BatchGetItem`s leave every key unprocessed (throttling).
    unprocessed_batch_gets: Mutex<u32>,
}

impl AwsStandin {
    pub async fn start() -> AwsStandin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let state = Arc::new(State::default());
        let shared = state.clone();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move { serve(stream, state).await });
            }
        });
        AwsStandin {
            url,
            state,
            _server: server,
        }
    }

    /// Answers every `UpdateItem` whose expression contains `marker` after `latency`: a table
    /// slow on one kind of write.
    #[allow(dead_code)]
    pub fn slow_updates(&self, marker: &str, latency: std::time::Duration) {
        if let Ok(mut s) = self.state.slow_update.lock() {
            *s = Some((marker.to_string(), latency));
        }
    }

    /// The next `calls` `BatchGetItem`s return every key as `UnprocessedKeys`.
    #[allow(dead_code)]
    pub fn throttle_batch_gets(&self, calls: u32) {
        if let Ok(mut n) = self.state.unprocessed_batch_gets.lock() {
            *n = calls;
        }
    }

    /// Calls answered so far, by `X-Amz-Target` (`DynamoDB_20120810.PutItem`, `AmazonSQS.SendMessage`).
    pub fn calls(&self) -> HashMap<String, u64> {
        self.state
            .calls
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    /// `UpdateItem` calls by the first words of their update expression.
    pub fn updates(&self) -> HashMap<String, u64> {
        self.state
            .updates
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    /// All calls answered so far.
    pub fn total_calls(&self) -> u64 {
        self.calls().values().sum()
    }

    /// TCP connections accepted so far: with keep-alive, about one per client, not one per call.
    pub fn connections(&self) -> u64 {
        self.state.connections.lock().map(|c| *c).unwrap_or(0)
    }
}

async fn serve(mut stream: TcpStream, state: Arc<State>) {
    if let Ok(mut c) = state.connections.lock() {
        *c += 1;
    }
    let _ = stream.set_nodelay(true);
    let mut buffer: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        let Some((head_len, content_length, target)) = read_head(&mut stream, &mut buffer).await
        else {
            return;
        };
        while buffer.len() < head_len + content_length {
            let mut chunk = [0u8; 16 * 1024];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Value = serde_json::from_slice(&buffer[head_len..head_len + content_length])
            .unwrap_or(Value::Null);
        buffer.drain(..head_len + content_length);
        if let Ok(mut calls) = state.calls.lock() {
            *calls.entry(target.clone()).or_default() += 1;
        }
        let slow = state.slow_update.lock().ok().and_then(|s| s.clone());
        if let Some((marker, latency)) = slow
            && target.ends_with(".UpdateItem")
            && body["UpdateExpression"]
                .as_str()
                .is_some_and(|e| e.contains(&marker))
        {
            tokio::time::sleep(latency).await;
        }
        let (status, answer) = answer(&state, &target, &body);
        let payload = answer.to_string();
        let reason = if status == 200 { "OK" } else { "Bad Request" };
        let mut response = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/x-amz-json-1.0\r\n\
             x-amzn-RequestId: standin\r\nContent-Length: {}\r\n\r\n",
            payload.len()
        )
        .into_bytes();
        response.extend_from_slice(payload.as_bytes());
        if stream.write_all(&response).await.is_err() {
            return;
        }
    }
}

/// Reads until the end of a request's head; returns its length, the body's length and the
/// target operation. `None` when the client closed the connection.
async fn read_head(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<(usize, usize, String)> {
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_string();
            let header = |name: &str| {
                head.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| v.trim().to_string())
                })
            };
            let length = header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let target = header("x-amz-target").unwrap_or_default();
            return Some((end + 4, length, target));
        }
        let mut chunk = [0u8; 16 * 1024];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The key an item is stored under: its key attributes' values, in name order.
fn key_of(item: &Value) -> String {
    let Some(map) = item.as_object() else {
        return String::new();
    };
    ["pk", "sk"]
        .iter()
        .filter_map(|k| map.get(*k).map(|v| v.to_string()))
        .collect::<Vec<_>>()
        .join("|")
}

fn answer(state: &State, target: &str, body: &Value) -> (u16, Value) {
    let operation = target.rsplit('.').next().unwrap_or_default();
    let mut items = match state.items.lock() {
        Ok(items) => items,
        Err(_) => return (500, json!({"__type": "InternalFailure"})),
    };
    match (target.starts_with("DynamoDB"), operation) {
        (true, "PutItem") => {
            let item = body["Item"].clone();
            let key = key_of(&item);
            let guarded = body["ConditionExpression"]
                .as_str()
                .is_some_and(|c| c.trim_start().starts_with("attribute_not_exists"));
            if guarded && let Some(old) = items.get(&key) {
                let mut refusal = json!({
                    "__type": "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException",
                    "message": "The conditional request failed"
                });
                if body["ReturnValuesOnConditionCheckFailure"] == "ALL_OLD" {
                    refusal["Item"] = Value::Object(old.clone());
                }
                return (400, refusal);
            }
            if let Value::Object(map) = item {
                items.insert(key, map);
            }
            (200, json!({}))
        }
        (true, "UpdateItem") => {
            let expression: String = body["UpdateExpression"]
                .as_str()
                .unwrap_or_default()
                .chars()
                .take(40)
                .collect();
            if let Ok(mut updates) = state.updates.lock() {
                *updates.entry(expression).or_default() += 1;
            }
            let key = key_of(&body["Key"]);
            let item = items
                .entry(key)
                .or_insert_with(|| body["Key"].as_object().cloned().unwrap_or_default());
            match body["ReturnValues"].as_str() {
                Some("ALL_NEW") | Some("ALL_OLD") => (200, json!({"Attributes": item.clone()})),
                _ => (200, json!({})),
            }
        }
        (true, "DeleteItem") => {
            items.remove(&key_of(&body["Key"]));
            (200, json!({}))
        }
        (true, "GetItem") => match items.get(&key_of(&body["Key"])) {
            Some(item) => (200, json!({"Item": item})),
            None => (200, json!({})),
        },
        (true, "BatchGetItem") => {
            if let Ok(mut n) = state.unprocessed_batch_gets.lock()
                && *n > 0
            {
                *n -= 1;
                return (
                    200,
                    json!({"Responses": {}, "UnprocessedKeys": body["RequestItems"].clone()}),
                );
            }
            let mut responses = Map::new();
            if let Some(tables) = body["RequestItems"].as_object() {
                for (table, request) in tables {
                    let found: Vec<Value> = request["Keys"]
                        .as_array()
                        .map(|keys| {
                            keys.iter()
                                .filter_map(|k| items.get(&key_of(k)).cloned().map(Value::Object))
                                .collect()
                        })
                        .unwrap_or_default();
                    responses.insert(table.clone(), Value::Array(found));
                }
            }
            (200, json!({"Responses": responses, "UnprocessedKeys": {}}))
        }
        (false, "SendMessage") => (200, sent(state, body)),
        (false, "SendMessageBatch") => {
            let successful: Vec<Value> = body["Entries"]
                .as_array()
                .map(|entries| {
                    entries
                        .iter()
                        .map(|e| {
                            let mut ok = sent(state, e);
                            ok["Id"] = e["Id"].clone();
                            ok
                        })
                        .collect()
                })
                .unwrap_or_default();
            (200, json!({"Successful": successful, "Failed": []}))
        }
        (false, "ChangeMessageVisibility") | (false, "DeleteMessage") => (200, json!({})),
        (false, "GetQueueAttributes") => (
            200,
            json!({"Attributes": {"QueueArn": "arn:aws:sqs:us-east-1:123456789012:standin"}}),
        ),
        _ => (
            400,
            json!({"__type": "UnknownOperationException", "message": format!("{target} is not served by the stand-in")}),
        ),
    }
}

fn sent(state: &State, message: &Value) -> Value {
    let body = message["MessageBody"].as_str().unwrap_or_default();
    let digest = Md5::digest(body.as_bytes());
    let n = state
        .sent
        .lock()
        .map(|mut s| {
            *s += 1;
            *s
        })
        .unwrap_or(0);
    json!({
        "MD5OfMessageBody": digest.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        "MessageId": format!("00000000-0000-4000-8000-{n:012x}"),
    })
}
