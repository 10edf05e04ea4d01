//! The adapter between `lambda_http` and the ingest use case. The local pipeline calls it too, so
//! the same code answers in Lambda and on a laptop.

use lambda_http::{Body, Request, RequestExt, Response};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::Instrument;

use super::{Ingest, IngestError, IngestRequest, Outcome, http};
use crate::idempotency::IdempotencyStore;
use crate::metrics::Metrics;
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
        trace_header: req
            .lambda_context_ref()
            .and_then(|c| c.xray_trace_id.as_deref()),
    };
    // In Lambda the runtime's span carries requestId too; locally this one does.
    let span = tracing::info_span!(
        "ingest",
        requestId = %request_id,
        lead_id = tracing::field::Empty
    );
    let result = ingest.handle(request).instrument(span.clone()).await;
    let response = http::respond(&result);
    let metrics = Metrics::for_invocation().with_request_id(&request_id);
    record_metrics(&metrics, &result, response.status().as_u16());
    metrics.flush();
    span.in_scope(|| match &result {
        Ok(_) => {}
        Err(e) => tracing::info!(status = response.status().as_u16(), error = %e, "refused"),
    });
    Ok(response)
}

/// `Accepted` (with `EnqueueLatency`), `Duplicate`, `Rejected` by `Reason` (the error code), or
/// `Unavailable` (every 5xx).
pub fn record_metrics(metrics: &Metrics, result: &Result<Outcome, IngestError>, status: u16) {
    match result {
        Ok(Outcome::Accepted { enqueue, .. }) => {
            metrics.count("Accepted", &[]);
            metrics.duration("EnqueueLatency", *enqueue, &[]);
        }
        Ok(Outcome::Duplicate { .. }) => metrics.count("Duplicate", &[]),
        Err(_) if status >= 500 => metrics.count("Unavailable", &[]),
        Err(e) => metrics.count("Rejected", &[("Reason", &http::error_code(e))]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthError;
    use std::time::Duration;

    #[test]
    fn every_answer_is_counted_once_under_its_name() {
        let m = Metrics::new("test", "ingest");
        let accepted = Ok(Outcome::Accepted {
            id: "a".into(),
            message_id: "m".into(),
            enqueue: Duration::from_millis(7),
        });
        record_metrics(&m, &accepted, 202);
        record_metrics(
            &m,
            &Ok(Outcome::Duplicate {
                id: "a".into(),
                message_id: None,
            }),
            200,
        );
        let unauthorized = Err(IngestError::Unauthorized(AuthError::Missing));
        record_metrics(&m, &unauthorized, 401);
        record_metrics(&m, &unauthorized, 401);
        record_metrics(&m, &Err(IngestError::InProgress { id: "a".into() }), 409);
        record_metrics(
            &m,
            &Err(IngestError::Queue(crate::queue::QueueError("down".into()))),
            503,
        );
        assert_eq!(m.total("Accepted", &[]), 1.0);
        assert_eq!(m.total("Duplicate", &[]), 1.0);
        assert_eq!(m.total("Rejected", &[("Reason", "unauthorized")]), 2.0);
        assert_eq!(m.total("Rejected", &[("Reason", "in_progress")]), 1.0);
        assert_eq!(m.total("Unavailable", &[]), 1.0);
        let latency = m
            .documents()
            .into_iter()
            .find(|d| d.get("EnqueueLatency").is_some())
            .expect("latency document");
        assert_eq!(latency["EnqueueLatency"], 7.0);
    }
}
