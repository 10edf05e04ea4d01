//! The warehouse straight to S3: one JSON Lines object per partition per batch.

use aws_sdk_s3::Client;
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use std::time::Duration;

use super::{S3Uri, WarehouseRow, WarehouseSink, by_partition};
use crate::delivery::retry::{Attempt, TransportKind};

#[derive(Clone, Debug)]
pub struct S3Warehouse {
    client: Client,
    uri: S3Uri,
}

impl S3Warehouse {
    pub fn new(client: Client, uri: S3Uri) -> Self {
        S3Warehouse { client, uri }
    }
}

/// An SDK failure as an attempt: the service's HTTP status when it answered (403, 404 are
/// permanent; 5xx and throttling transient), the transport's kind when it did not.
pub fn sdk_attempt<E: std::error::Error + 'static>(e: SdkError<E>) -> Attempt {
    let detail = DisplayErrorContext(&e).to_string();
    match &e {
        SdkError::ServiceError(ctx) => Attempt::Status {
            status: ctx.raw().status().as_u16(),
            retry_after: None,
            detail,
        },
        SdkError::TimeoutError(_) => Attempt::Transport {
            kind: TransportKind::Timeout,
            detail,
        },
        SdkError::DispatchFailure(f) if f.is_timeout() => Attempt::Transport {
            kind: TransportKind::Timeout,
            detail,
        },
        SdkError::DispatchFailure(_) => Attempt::Transport {
            kind: TransportKind::Connect,
            detail,
        },
        _ => Attempt::Transport {
            kind: TransportKind::Other,
            detail,
        },
    }
}

fn timed_out() -> Attempt {
    Attempt::Transport {
        kind: TransportKind::Timeout,
        detail: "the warehouse write timed out".into(),
    }
}

impl WarehouseSink for S3Warehouse {
    async fn write(&self, rows: &[WarehouseRow<'_>], timeout: Duration) -> Vec<Attempt> {
        let mut results = vec![Attempt::Delivered; rows.len()];
        let puts = by_partition(rows).into_iter().map(|(partition, members)| {
            let chosen: Vec<WarehouseRow<'_>> = members.iter().map(|i| rows[*i].clone()).collect();
            let key = self.uri.object_key(&partition, &chosen);
            let body: String = chosen.iter().map(WarehouseRow::line).collect();
            let put = self
                .client
                .put_object()
                .bucket(&self.uri.bucket)
                .key(key)
                .content_type("application/x-ndjson")
                .body(ByteStream::from(body.into_bytes()))
                .send();
            async move {
                let attempt = match tokio::time::timeout(timeout, put).await {
                    Ok(Ok(_)) => Attempt::Delivered,
                    Ok(Err(e)) => sdk_attempt(e),
                    Err(_) => timed_out(),
                };
                (members, attempt)
            }
        });
        for (members, attempt) in futures::future::join_all(puts).await {
            for i in members {
                results[i] = attempt.clone();
            }
        }
        results
    }
}
