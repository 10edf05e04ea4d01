//! The SQS batch loop every queue consumer shares — the router and the feeder in Lambda, and the
//! local pollers that stand in for their event source mappings: a handler gets a batch, a
//! deadline and the invocation's metrics; its failed records become a partial batch response.

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use std::future::Future;
use std::time::SystemTime;

use crate::metrics::Metrics;

/// A function behind an SQS event source mapping with partial batch responses.
pub trait SqsBatchHandler: Sync {
    type Error: std::error::Error + Send + Sync + 'static;
    /// Handles one batch before `deadline`, counting into `metrics`.
    fn handle_with(
        &self,
        event: SqsEvent,
        deadline: SystemTime,
        metrics: &Metrics,
    ) -> impl Future<Output = Result<SqsBatchResponse, Self::Error>>;
}

/// A failed record without a message id cannot be named in a partial response: the whole batch
/// fails instead, so nothing is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a failed record has no message id; failing the whole batch")]
pub struct UnnamedFailure;

/// The partial batch response listing `failed` (message ids; never an empty one).
pub fn failures<I>(failed: I) -> Result<SqsBatchResponse, UnnamedFailure>
where
    I: IntoIterator<Item = Option<String>>,
{
    let mut response = SqsBatchResponse::default();
    for id in failed {
        let Some(id) = id.filter(|i| !i.is_empty()) else {
            return Err(UnnamedFailure);
        };
        let mut item = BatchItemFailure::default();
        item.item_identifier = id;
        response.batch_item_failures.push(item);
    }
    Ok(response)
}

/// One batch with its own metrics, printed when it is done (see [`crate::metrics`]).
pub async fn handle<H: SqsBatchHandler>(
    handler: &H,
    event: SqsEvent,
    deadline: SystemTime,
    request_id: Option<&str>,
) -> Result<SqsBatchResponse, H::Error> {
    let metrics = match request_id {
        Some(id) => Metrics::for_invocation().with_request_id(id),
        None => Metrics::for_invocation(),
    };
    let result = handler.handle_with(event, deadline, &metrics).await;
    metrics.flush();
    result
}

/// Serves `handler` under the Lambda runtime until it stops: each invocation's deadline and
/// request id come from its context.
pub async fn run_lambda<H: SqsBatchHandler>(handler: &H) -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<SqsEvent>| async move {
            let deadline = event.context.deadline();
            let request_id = event.context.request_id.clone();
            handle(handler, event.payload, deadline, Some(&request_id))
                .await
                .map_err(lambda_runtime::Error::from)
        },
    ))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_name_every_record_or_fail_the_batch() {
        let r = failures([Some("a".to_string()), Some("b".to_string())]).unwrap();
        let ids: Vec<&str> = r
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(failures(Vec::new()).unwrap().batch_item_failures.is_empty());
        assert_eq!(failures([Some("a".into()), None]), Err(UnnamedFailure));
        assert_eq!(failures([Some(String::new())]), Err(UnnamedFailure));
    }
}
