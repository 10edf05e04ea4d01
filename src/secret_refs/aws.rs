//! The [`SecretStore`] adapter: Secrets Manager's `GetSecretValue` and SSM's `GetParameter`
//! (decrypted), with clients made only for the services the references name.

use aws_sdk_secretsmanager::error::DisplayErrorContext;

use super::{SecretReferences, SecretSource, SecretStore};

#[derive(Clone, Debug, Default)]
pub struct AwsSecretStore {
    secrets_manager: Option<aws_sdk_secretsmanager::Client>,
    parameters: Option<aws_sdk_ssm::Client>,
}

impl AwsSecretStore {
    pub fn new(sdk: &aws_config::SdkConfig, references: &SecretReferences) -> Self {
        let (sm, ssm) = references.uses();
        AwsSecretStore {
            secrets_manager: sm.then(|| aws_sdk_secretsmanager::Client::new(sdk)),
            parameters: ssm.then(|| aws_sdk_ssm::Client::new(sdk)),
        }
    }
}

const NO_CLIENT: &str = "no client for this service (not named at start)";

impl SecretStore for AwsSecretStore {
    async fn fetch(&self, source: &SecretSource) -> Result<String, String> {
        match source {
            SecretSource::SecretsManager(id) => {
                let client = self.secrets_manager.as_ref().ok_or(NO_CLIENT)?;
                let out = client
                    .get_secret_value()
                    .secret_id(id)
                    .send()
                    .await
                    .map_err(|e| DisplayErrorContext(&e).to_string())?;
                match (out.secret_string, out.secret_binary) {
                    (Some(text), _) => Ok(text),
                    (None, Some(blob)) => String::from_utf8(blob.into_inner())
                        .map_err(|_| "the secret is binary, not UTF-8 text".to_string()),
                    (None, None) => Err("the secret has no value".into()),
                }
            }
            SecretSource::Parameter(name) => {
                let client = self.parameters.as_ref().ok_or(NO_CLIENT)?;
                let out = client
                    .get_parameter()
                    .name(name)
                    .with_decryption(true)
                    .send()
                    .await
                    .map_err(|e| DisplayErrorContext(&e).to_string())?;
                out.parameter
                    .and_then(|p| p.value)
                    .ok_or_else(|| "the parameter has no value".into())
            }
        }
    }
}
