//! The one place where an ingest result becomes an HTTP answer: status, headers, small JSON body.
//! Bodies never echo the request or a secret.

use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::{Body, Response};
use serde_json::{Value, json};

use super::{IngestError, Outcome};
use crate::lead::BodyError;

/// Seconds a client should wait after a 503.
pub const UNAVAILABLE_RETRY_AFTER: &str = "5";

pub fn respond(result: &Result<Outcome, IngestError>) -> Response<Body> {
    let (status, body, retry_after) = match result {
        Ok(Outcome::Accepted { id, message_id, .. }) => (
            StatusCode::ACCEPTED,
            json!({"status": "accepted", "id": id, "message_id": message_id}),
            None,
        ),
        Ok(Outcome::Duplicate { id, message_id }) => (
            StatusCode::OK,
            json!({"status": "duplicate", "id": id, "message_id": message_id}),
            None,
        ),
        Err(e) => {
            let (status, body) = error_body(e);
            let retry_after = match e {
                IngestError::InProgress { .. } => Some("1"),
                IngestError::Store(_) | IngestError::Queue(_) | IngestError::SecretsRefused(_) => {
                    Some(UNAVAILABLE_RETRY_AFTER)
                }
                _ => None,
            };
            (status, body, retry_after)
        }
    };
    let mut response = Response::new(Body::Text(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(seconds) = retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static(seconds));
    }
    if matches!(result, Err(IngestError::MethodNotAllowed)) {
        headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
    }
    response
}

/// The error code an answer carries (`unauthorized`, `invalid_json`, ...): the `Reason` of the
/// `Rejected` metric.
pub fn error_code(e: &IngestError) -> String {
    error_body(e).1["error"]["code"]
        .as_str()
        .unwrap_or("unknown")
        .to_string()
}

fn error(code: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message}})
}

fn error_body(e: &IngestError) -> (StatusCode, Value) {
    match e {
        IngestError::NotFound => (StatusCode::NOT_FOUND, error("not_found", "no such route")),
        IngestError::MethodNotAllowed => (
            StatusCode::METHOD_NOT_ALLOWED,
            error("method_not_allowed", "use POST"),
        ),
        IngestError::InvalidSource => (
            StatusCode::BAD_REQUEST,
            error("invalid_source", "source must be 1-64 of [A-Za-z0-9_-]"),
        ),
        IngestError::PayloadTooLarge { limit, .. } => (
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": {"code": "payload_too_large",
                "message": format!("body is over the {limit}-byte limit"), "limit": limit}}),
        ),
        IngestError::MessageTooLarge { size, limit } => (
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": {"code": "payload_too_large",
                "message": format!("the queue message for this body would be {size} bytes, over the queue's {limit}-byte limit"),
                "limit": limit}}),
        ),
        IngestError::TooDeep { limit } => (
            StatusCode::BAD_REQUEST,
            json!({"error": {"code": "too_deep",
                "message": format!("body nests deeper than {limit} levels of objects and arrays, which the router cannot read back"),
                "limit": limit}}),
        ),
        IngestError::UnsupportedMediaType => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            error(
                "unsupported_media_type",
                "Content-Type must be application/json",
            ),
        ),
        // One answer whatever was wrong: no oracle for which part failed.
        IngestError::Unauthorized(_) => (
            StatusCode::UNAUTHORIZED,
            error("unauthorized", "missing or invalid credentials"),
        ),
        IngestError::InvalidJson(BodyError::InvalidJson {
            message,
            line,
            column,
        }) => (
            StatusCode::BAD_REQUEST,
            json!({"error": {"code": "invalid_json",
                "message": format!("body is not valid JSON: {message} at line {line}, column {column}"),
                "line": line, "column": column}}),
        ),
        IngestError::InvalidJson(e @ BodyError::NotAnObject { .. }) => (
            StatusCode::BAD_REQUEST,
            json!({"error": {"code": "invalid_json", "message": e.to_string(),
                "line": 1, "column": 1}}),
        ),
        IngestError::KeyReused { id } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"error": {"code": "idempotency_key_reused",
                "message": "this idempotency key was used with a different body", "id": id}}),
        ),
        IngestError::InProgress { id } => (
            StatusCode::CONFLICT,
            json!({"error": {"code": "in_progress",
                "message": "the same request is still being processed; retry shortly", "id": id}}),
        ),
        IngestError::Store(_) | IngestError::Queue(_) | IngestError::SecretsRefused(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            error("unavailable", "temporarily unavailable; retry later"),
        ),
    }
}

/// The answer while the function's secrets are refused: 503 `unavailable`, as for an outage
/// (the reason stays in the log, never in the answer).
pub fn refused_configuration(
    refused: &crate::secret_refs::refreshing::SecretsRefused,
) -> Response<Body> {
    respond(&Err(IngestError::SecretsRefused(refused.clone())))
}
