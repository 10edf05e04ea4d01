//! `clayhook sam-local`: what `sam local start-api` / `start-lambda` / `invoke` need around them
//! to run the real pipeline in SAM's containers: moto_server reachable from the containers (on
//! 0.0.0.0) with the table and queues `events/env.json` names, a server on the port env.json sends
//! the destinations (and the feeder's Clay webhook) to, which prints what arrives, and, given
//! `sam local start-lambda`'s address, the lead and intake queues polled into the router and the
//! feeder as their event source mappings would.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::poller::{Poller, SqsBatchHandler};
use super::{LOCAL_TABLE, LocalError, create_resources, moto_clients, poll_forever, start_moto};

#[derive(Debug, Clone)]
pub struct SamLocalOptions {
    /// moto_server's port; it listens on every interface so containers reach it.
    pub moto_port: u16,
    pub moto_server: PathBuf,
    /// Where the destination printer listens (events/env.json: port 9000).
    pub destinations: SocketAddr,
    /// `sam local start-lambda`'s address: poll the queues into RouterFunction/FeederFunction.
    pub lambda_endpoint: Option<String>,
}

/// A function behind `sam local start-lambda`, invoked through the Lambda Invoke API.
pub struct InvokedFunction {
    client: reqwest::Client,
    url: String,
}

impl InvokedFunction {
    pub fn new(endpoint: &str, function: &str) -> Result<Self, reqwest::Error> {
        Ok(InvokedFunction {
            // A cold container start under SAM takes seconds; the invocation itself up to the
            // function's timeout.
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(960))
                .build()?,
            url: format!(
                "{}/2015-03-31/functions/{function}/invocations",
                endpoint.trim_end_matches('/')
            ),
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invoking {url}: {reason}")]
pub struct InvokeError {
    url: String,
    reason: String,
}

impl SqsBatchHandler for InvokedFunction {
    type Error = InvokeError;

    async fn handle_with(
        &self,
        event: SqsEvent,
        _deadline: SystemTime,
        _metrics: &crate::metrics::Metrics,
    ) -> Result<SqsBatchResponse, InvokeError> {
        let error = |reason: String| InvokeError {
            url: self.url.clone(),
            reason,
        };
        let answer = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&event).unwrap_or_default())
            .send()
            .await
            .map_err(|e| error(e.without_url().to_string()))?;
        let status = answer.status();
        let text = answer
            .text()
            .await
            .map_err(|e| error(e.without_url().to_string()))?;
        if !status.is_success() {
            return Err(error(format!("status {status}: {text}")));
        }
        // A function error comes back as 200 with an errorType: the whole batch returns.
        serde_json::from_str::<SqsBatchResponse>(&text)
            .map_err(|_| error(format!("not a batch response: {text}")))
    }
}

/// Runs until Ctrl-C or SIGTERM.
pub async fn run(opts: SamLocalOptions) -> Result<(), LocalError> {
    let _moto = start_moto(&opts.moto_server, "0.0.0.0", opts.moto_port)?;
    let (endpoint, clients) = moto_clients(opts.moto_port).await?;
    let (ddb, sqs) = (clients.ddb, clients.sqs);
    let resources = create_resources(&ddb, &sqs).await?;
    let listener = tokio::net::TcpListener::bind(opts.destinations)
        .await
        .map_err(|source| LocalError::Listen {
            addr: opts.destinations,
            source,
        })?;
    let printer = tokio::spawn(serve_destinations(listener));
    println!("services for `sam local` are up");
    println!("  DynamoDB and SQS  {endpoint} (on every interface)  table {LOCAL_TABLE}");
    println!("  lead queue        {}", resources.leads.url);
    println!("  intake queue      {}", resources.intake.url);
    println!(
        "  destinations      http://{}/<crm|outreach|nurture|slack|zapier>, Clay at /v3/sources/webhook/..., printed here",
        opts.destinations
    );
    let functions = match &opts.lambda_endpoint {
        Some(url) => {
            println!(
                "  event sources     lead queue -> RouterFunction, intake -> FeederFunction at {url}"
            );
            Some((
                InvokedFunction::new(url, "RouterFunction")?,
                InvokedFunction::new(url, "FeederFunction")?,
            ))
        }
        None => None,
    };
    let polling = async {
        match &functions {
            Some((router, feeder)) => {
                let leads = Poller {
                    sqs: &sqs,
                    queue_url: &resources.leads.url,
                    queue_arn: &resources.leads.arn,
                    handler: router,
                    invocation_time: Duration::from_secs(60),
                };
                let intake = Poller {
                    sqs: &sqs,
                    queue_url: &resources.intake.url,
                    queue_arn: &resources.intake.arn,
                    handler: feeder,
                    invocation_time: Duration::from_secs(60),
                };
                futures::future::join(poll_forever(&leads), poll_forever(&intake)).await;
            }
            None => std::future::pending().await,
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| LocalError::Setup(e.to_string()))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => println!("\nstopping"),
        _ = term.recv() => println!("\nstopping"),
        _ = polling => {}
    }
    printer.abort();
    Ok(())
}

/// Answers 200 to every POST and prints it: the five destinations, and Clay for the feeder.
async fn serve_destinations(listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let service = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                let path = req.uri().path().to_string();
                let key = req
                    .headers()
                    .get("idempotency-key")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let body = Limited::new(req.into_body(), 10 * 1024 * 1024)
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                Ok::<_, Infallible>(received(&path, key.as_deref(), &body))
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// One line per request: `→ <name> received[ (Idempotency-Key K)]: <body as compact JSON>`.
fn received(path: &str, key: Option<&str>, body: &[u8]) -> hyper::Response<Full<Bytes>> {
    let shown = serde_json::from_slice::<serde_json::Value>(body)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned());
    let name = path.trim_start_matches('/');
    let name = if name.starts_with("v3/sources/webhook/") {
        "clay"
    } else {
        name
    };
    match key {
        Some(k) => println!("→ {name} received (Idempotency-Key {k}): {shown}"),
        None => println!("→ {name} received: {shown}"),
    }
    let reply = if name == "slack" { "ok" } else { "{}" };
    hyper::Response::new(Full::new(Bytes::from(reply)))
}
