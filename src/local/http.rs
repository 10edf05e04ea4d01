//! A small HTTP server in front of the ingest handler, standing in for API Gateway.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lambda_http::Body;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;

use crate::idempotency::IdempotencyStore;
use crate::ingest::{Ingest, lambda::handle_request};
use crate::queue::LeadQueue;

/// API Gateway HTTP APIs refuse payloads over 10 MB before the function runs.
const GATEWAY_LIMIT: usize = 10 * 1024 * 1024;

/// Serves until the task is dropped.
pub async fn serve<S, Q>(listener: TcpListener, ingest: Arc<Ingest<S, Q>>)
where
    S: IdempotencyStore + 'static,
    Q: LeadQueue + 'static,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let ingest = ingest.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let ingest = ingest.clone();
                async move { Ok::<_, Infallible>(answer(&ingest, req).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer<S: IdempotencyStore, Q: LeadQueue>(
    ingest: &Ingest<S, Q>,
    req: hyper::Request<Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let bytes = match Limited::new(body, GATEWAY_LIMIT).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            let mut r = hyper::Response::new(Full::new(Bytes::from_static(
                br#"{"message":"Request Entity Too Large"}"#,
            )));
            *r.status_mut() = hyper::StatusCode::PAYLOAD_TOO_LARGE;
            return r;
        }
    };
    let request = lambda_http::http::Request::from_parts(parts, Body::Binary(bytes.to_vec()));
    let response = match handle_request(ingest, request).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let (parts, body) = response.into_parts();
    hyper::Response::from_parts(parts, Full::new(Bytes::copy_from_slice(body.as_ref())))
}
