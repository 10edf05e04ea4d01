//! The adapter between `lambda_http` and the ingest use case. The local pipeline calls it too, so
//! the same code answers in Lambda and on a laptop.

use lambda_http::{Body, Request, RequestExt, Response};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::Instrument;

use super::{Ingest, IngestRequest, http};
use crate::idempotency::IdempotencyStore;
use crate::queue::LeadQueue;

/// Handles one API Gateway request. Never fails: every error is an HTTP answer.
pub async fn handle_request<S: IdempotencyStore, Q: LeadQueue>(
    ingest: &Ingest<S, Q>,
    req: Request,
) -> Result<Response<Body>, std::convert::Infallible> {
    let received_at = SystemTime::now();
    let request_id = req
        .lambda_context_ref()
        .map(|c| c.request_id.clone())
        .unwrap_or_default();
    let remaining = req.lambda_context_ref().and_then(|c| {
        let deadline = UNIX_EPOCH + Duration::from_millis(c.deadline);
        // A zero deadline means "unknown" (tests, local runs): use the configured default.
        (c.deadline > 0).then(|| deadline.duration_since(received_at).unwrap_or_default())
    });
    let raw_path = req.raw_http_path();
    let path = if raw_path.is_empty() {
        req.uri().path()
    } else {
        raw_path
    };
    let request = IngestRequest {
        method: req.method(),
        path,
        headers: req.headers(),
        body: req.body().as_ref(),
        received_at,
        remaining,
    };
    let span = tracing::info_span!("ingest", request_id = %request_id);
    let result = ingest.handle(request).instrument(span.clone()).await;
    let response = http::respond(&result);
    span.in_scope(|| match &result {
        Ok(_) => {}
        Err(e) => tracing::info!(status = response.status().as_u16(), error = %e, "refused"),
    });
    Ok(response)
}
