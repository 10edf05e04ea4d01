//! A function built from fetched secrets, built again when they change. Lambda freezes an
//! instance between invocations, so there is no background timer: the first invocation after
//! the interval fetches again (bounded by [`FETCH_TIMEOUT`]) before it runs. A failed fetch keeps
//! the function as it was (the store is unreachable, the values did not change). A fetched value
//! the configuration refuses stops the function, as it stops a cold start: the list it replaced
//! may hold the very token being removed after a leak, so nothing is served until the values
//! are fixed (ingest answers 503, a batch fails whole and comes back), and every refusal is the
//! `SecretsRefused` metric, which the template alarms on.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::{Resolved, SecretReferences, SecretStore};
use crate::config::ConfigError;

/// How long an invocation may wait for a refresh.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(2);
/// After a failed refresh, when to try again (sooner than the interval).
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

type Build<T> = Box<dyn Fn(&Resolved) -> Result<T, ConfigError> + Send + Sync>;

struct State {
    next_fetch: Instant,
    last: Resolved,
}

/// The fetched secrets are refused by the configuration: nothing is served until they are fixed.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "the secrets in use are refused by the configuration ({0}); fix them, nothing is served until then"
)]
pub struct SecretsRefused(pub String);

/// Counts a refusal where CloudWatch sees it (the `SecretsRefused` alarm).
pub fn count_refusal() {
    let metrics = crate::metrics::Metrics::for_invocation();
    metrics.count("SecretsRefused", &[]);
    metrics.flush();
}

pub struct Refreshing<T, S> {
    current: RwLock<Arc<T>>,
    /// Set while the latest fetched values are refused: the reason (no secret in it).
    refused: RwLock<Option<String>>,
    state: tokio::sync::Mutex<State>,
    references: SecretReferences,
    pub(crate) store: S,
    build: Build<T>,
}

impl<T, S: SecretStore> Refreshing<T, S> {
    /// `first` was built from `resolved`, fetched just now.
    pub fn new(
        first: T,
        resolved: Resolved,
        references: SecretReferences,
        store: S,
        build: impl Fn(&Resolved) -> Result<T, ConfigError> + Send + Sync + 'static,
    ) -> Self {
        Refreshing {
            current: RwLock::new(Arc::new(first)),
            refused: RwLock::new(None),
            state: tokio::sync::Mutex::new(State {
                next_fetch: Instant::now() + references.refresh,
                last: resolved,
            }),
            references,
            store,
            build: Box::new(build),
        }
    }

    /// The function to run this invocation with, fetched again first when the interval passed;
    /// an error while the fetched values are refused.
    pub async fn current(&self) -> Result<Arc<T>, SecretsRefused> {
        if !self.references.is_empty() {
            // One refresh at a time; a concurrent caller runs with what is there.
            if let Ok(mut state) = self.state.try_lock()
                && Instant::now() >= state.next_fetch
            {
                self.refresh(&mut state).await;
            }
        }
        let refused = match self.refused.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        match refused {
            Some(reason) => {
                count_refusal();
                Err(SecretsRefused(reason))
            }
            None => Ok(self.snapshot()),
        }
    }

    fn set_refused(&self, reason: Option<String>) {
        match self.refused.write() {
            Ok(mut guard) => *guard = reason,
            Err(poisoned) => *poisoned.into_inner() = reason,
        }
    }

    fn snapshot(&self) -> Arc<T> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    async fn refresh(&self, state: &mut State) {
        let started = Instant::now();
        state.next_fetch = started + RETRY_AFTER_FAILURE.min(self.references.refresh);
        let resolved = match tokio::time::timeout(
            FETCH_TIMEOUT,
            self.references.resolve(&self.store),
        )
        .await
        {
            Err(_) => {
                tracing::warn!(
                    timeout_ms = FETCH_TIMEOUT.as_millis() as u64,
                    "secret refresh timed out; keeping the values fetched before"
                );
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "secret refresh failed; keeping the values fetched before");
                return;
            }
            Ok(Ok(resolved)) => resolved,
        };
        state.next_fetch = started + self.references.refresh;
        if resolved == state.last {
            return;
        }
        let changed: Vec<&str> = resolved
            .iter()
            .filter(|(var, value)| state.last.get(*var) != Some(value))
            .map(|(var, _)| *var)
            .collect();
        match (self.build)(&resolved) {
            Ok(next) => {
                match self.current.write() {
                    Ok(mut guard) => *guard = Arc::new(next),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(next),
                }
                self.set_refused(None);
                tracing::info!(variables = ?changed, "secrets changed; in use from this invocation");
                state.last = resolved;
            }
            Err(e) => {
                // The previous values are not kept: they may hold the token being removed.
                tracing::error!(
                    variables = ?changed,
                    error = %e,
                    "the changed secrets are refused; nothing is served until they are fixed"
                );
                self.set_refused(Some(e.to_string()));
                state.last = resolved;
            }
        }
    }
}

impl<H, S> crate::batch::SqsBatchHandler for Refreshing<H, S>
where
    H: crate::batch::SqsBatchHandler + Send + Sync,
    H::Error: From<SecretsRefused>,
    S: SecretStore,
{
    type Error = H::Error;

    async fn handle_with(
        &self,
        event: aws_lambda_events::sqs::SqsEvent,
        deadline: std::time::SystemTime,
        metrics: &crate::metrics::Metrics,
    ) -> Result<aws_lambda_events::sqs::SqsBatchResponse, H::Error> {
        // Refused: the whole batch fails and comes back, nothing sent with stale secrets.
        let handler = self.current().await?;
        handler.handle_with(event, deadline, metrics).await
    }
}
