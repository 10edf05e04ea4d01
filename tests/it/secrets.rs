//! Secrets by reference against moto's Secrets Manager and SSM Parameter Store, over the AWS
//! wire protocol: what the functions fetch at start and on every refresh.

use clayhook::config::Env;
use clayhook::secret_refs::aws::AwsSecretStore;
use clayhook::secret_refs::{Refreshing, Resolved, SecretReferences};
use std::collections::HashMap;
use std::time::Duration;

use crate::support::{capture_logs, moto_url, sdk_config, unique};

fn env(vars: &[(&str, String)]) -> Env<impl Fn(&str) -> Option<String>> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    Env(move |k: &str| map.get(k).cloned())
}

struct Moto {
    sm: aws_sdk_secretsmanager::Client,
    ssm: aws_sdk_ssm::Client,
    sdk: aws_config::SdkConfig,
}

async fn moto() -> Moto {
    capture_logs();
    let sdk = sdk_config(moto_url()).await;
    Moto {
        sm: aws_sdk_secretsmanager::Client::new(&sdk),
        ssm: aws_sdk_ssm::Client::new(&sdk),
        sdk,
    }
}

impl Moto {
    /// A new secret; its ARN.
    async fn secret(&self, name: &str, value: &str) -> String {
        let out = self
            .sm
            .create_secret()
            .name(name)
            .secret_string(value)
            .send()
            .await
            .expect("create secret");
        out.arn.expect("arn")
    }

    async fn rotate(&self, name: &str, value: &str) {
        self.sm
            .put_secret_value()
            .secret_id(name)
            .secret_string(value)
            .send()
            .await
            .expect("put secret value");
    }

    async fn parameter(&self, name: &str, value: &str) {
        self.ssm
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .overwrite(true)
            .send()
            .await
            .expect("put parameter");
    }
}

#[tokio::test]
async fn references_by_name_arn_key_and_parameter_are_fetched_from_the_services() {
    let aws = moto().await;
    let name = unique("clayhook/app");
    let arn = aws
        .secret(
            &name,
            r#"{"CLAY_WEBHOOK_SECRETS":"tok-0123456789abcdef","SLACK_WEBHOOK_URL":"https://hooks.example/s"}"#,
        )
        .await;
    let whole = unique("clayhook/hubspot");
    aws.secret(&whole, "pat-na1-0123456789").await;
    let parameter = format!("/{}", unique("clayhook/zapier"));
    aws.parameter(&parameter, "https://hooks.example/z").await;
    let references = SecretReferences::read(&env(&[
        (
            "CLAY_WEBHOOK_SECRETS",
            format!("secretsmanager:{name}#CLAY_WEBHOOK_SECRETS"),
        ),
        ("SLACK_WEBHOOK_URL", format!("{arn}#SLACK_WEBHOOK_URL")),
        ("HUBSPOT_ACCESS_TOKEN", format!("secretsmanager:{whole}")),
        ("ZAPIER_WEBHOOK_URL", format!("ssm:{parameter}")),
    ]))
    .unwrap();
    let store = AwsSecretStore::new(&aws.sdk, &references);
    let resolved = references.resolve(&store).await.unwrap();
    assert_eq!(resolved["CLAY_WEBHOOK_SECRETS"], "tok-0123456789abcdef");
    assert_eq!(resolved["SLACK_WEBHOOK_URL"], "https://hooks.example/s");
    assert_eq!(resolved["HUBSPOT_ACCESS_TOKEN"], "pat-na1-0123456789");
    assert_eq!(resolved["ZAPIER_WEBHOOK_URL"], "https://hooks.example/z");
}

#[tokio::test]
async fn a_missing_secret_or_parameter_is_an_error_naming_the_reference() {
    let aws = moto().await;
    for (var, value) in [
        ("CLAY_WEBHOOK_SECRETS", "secretsmanager:clayhook/never-made"),
        ("ZAPIER_WEBHOOK_URL", "ssm:/clayhook/never-made"),
    ] {
        let references = SecretReferences::read(&env(&[(var, value.to_string())])).unwrap();
        let store = AwsSecretStore::new(&aws.sdk, &references);
        let err = references.resolve(&store).await.unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{var}: cannot fetch {value}")),
            "{err}"
        );
        assert!(
            err.contains("ResourceNotFound") || err.contains("ParameterNotFound"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn a_rotated_secret_is_in_use_after_the_refresh_interval_without_a_restart() {
    let aws = moto().await;
    let name = unique("clayhook/rotate");
    aws.secret(
        &name,
        r#"{"CLAY_WEBHOOK_SECRETS":"first-token-0123456789"}"#,
    )
    .await;
    let vars = [
        (
            "CLAY_WEBHOOK_SECRETS",
            format!("secretsmanager:{name}#CLAY_WEBHOOK_SECRETS"),
        ),
        ("SECRETS_REFRESH_SECONDS", "1".to_string()),
        ("IDEMPOTENCY_TABLE", "t".to_string()),
        ("LEAD_QUEUE_URL", "http://q".to_string()),
    ];
    let references = SecretReferences::read(&env(&vars)).unwrap();
    let store = AwsSecretStore::new(&aws.sdk, &references);
    let resolved = references.resolve(&store).await.unwrap();
    // The function here is the ingest configuration's first token: what authentication uses.
    let build = move |resolved: &Resolved| {
        let config = clayhook::ingest::config::IngestConfig::read(
            &clayhook::config::with_resolved(&env(&vars), resolved),
        )?;
        Ok(config
            .settings
            .secrets
            .first_static_token()
            .unwrap_or_default()
            .to_string())
    };
    let first = build(&resolved).unwrap();
    let function = Refreshing::new(first, resolved, references, store, build);
    assert_eq!(*function.current().await.unwrap(), "first-token-0123456789");
    aws.rotate(
        &name,
        r#"{"CLAY_WEBHOOK_SECRETS":"second-token-0123456789"}"#,
    )
    .await;
    // Within the interval the values fetched at start stay.
    assert_eq!(*function.current().await.unwrap(), "first-token-0123456789");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(
        *function.current().await.unwrap(),
        "second-token-0123456789"
    );
    // A rotation that removes the second token but adds an entry the configuration refuses
    // does not keep the second token working: nothing is served until it is fixed.
    aws.rotate(
        &name,
        r#"{"CLAY_WEBHOOK_SECRETS":"third-token-0123456789,short"}"#,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let refused = function.current().await.unwrap_err();
    assert!(!refused.to_string().contains(",short"), "{refused}");
    assert!(!refused.to_string().contains("third-token"), "{refused}");
    aws.rotate(
        &name,
        r#"{"CLAY_WEBHOOK_SECRETS":"third-token-0123456789"}"#,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(*function.current().await.unwrap(), "third-token-0123456789");
}
