//! The credentials requests are signed with: asked of the SDK's provider chain once, kept until
//! five minutes before they expire. Lambda's (from the environment) never expire within an
//! execution environment's life, so a function asks once.

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use super::sigv4::Keys;

/// How long before their expiry credentials are asked for again.
const REFRESH_BEFORE: Duration = Duration::from_secs(300);

#[derive(Debug)]
pub struct CredentialCache {
    provider: Option<SharedCredentialsProvider>,
    cached: RwLock<Option<(Arc<Keys>, Option<SystemTime>)>>,
}

impl CredentialCache {
    pub fn new(provider: Option<SharedCredentialsProvider>) -> CredentialCache {
        CredentialCache {
            provider,
            cached: RwLock::new(None),
        }
    }

    /// The current keys; an error says why there are none (never what they are).
    pub async fn keys(&self) -> Result<Arc<Keys>, String> {
        if let Some((keys, expiry)) = self
            .cached
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            && expiry.is_none_or(|e| e > SystemTime::now() + REFRESH_BEFORE)
        {
            return Ok(keys.clone());
        }
        let provider = self
            .provider
            .as_ref()
            .ok_or("no credentials provider is configured")?;
        let creds = provider
            .provide_credentials()
            .await
            .map_err(|e| super::error_chain(&e))?;
        let keys = Arc::new(Keys {
            access_key_id: creds.access_key_id().to_string(),
            secret_access_key: creds.secret_access_key().to_string(),
            session_token: creds.session_token().map(str::to_string),
        });
        *self.cached.write().unwrap_or_else(|p| p.into_inner()) =
            Some((keys.clone(), creds.expiry()));
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::Credentials;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug)]
    struct Counting {
        calls: Arc<AtomicUsize>,
        lifetime: Option<Duration>,
    }

    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(
            &'a self,
        ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let expiry = self.lifetime.map(|l| SystemTime::now() + l);
            aws_credential_types::provider::future::ProvideCredentials::ready(Ok(Credentials::new(
                format!("AKID{n}"),
                "secret",
                None,
                expiry,
                "test",
            )))
        }
    }

    async fn asked(lifetime: Option<Duration>) -> (usize, String) {
        let calls = Arc::new(AtomicUsize::new(0));
        let cache = CredentialCache::new(Some(SharedCredentialsProvider::new(Counting {
            calls: calls.clone(),
            lifetime,
        })));
        let mut last = String::new();
        for _ in 0..3 {
            last = cache.keys().await.unwrap().access_key_id.clone();
        }
        (calls.load(Ordering::SeqCst), last)
    }

    #[tokio::test]
    async fn lasting_credentials_are_asked_for_once_expiring_ones_again() {
        assert_eq!(asked(None).await, (1, "AKID0".to_string()));
        assert_eq!(asked(Some(Duration::from_secs(3600))).await.0, 1);
        // Within the refresh margin: asked for on every use.
        assert_eq!(
            asked(Some(Duration::from_secs(60))).await,
            (3, "AKID2".to_string())
        );
    }

    #[tokio::test]
    async fn no_provider_is_a_clear_error() {
        let err = CredentialCache::new(None).keys().await.unwrap_err();
        assert!(err.contains("no credentials provider"));
    }
}
