//! Destinations: where a routed lead is sent. The router sees only the [`Destinations`] port;
//! [`HttpDestinations`] is the adapter that speaks to HubSpot, Slack, Zapier and webhooks.

pub mod hubspot;
pub mod slack;
pub mod warehouse;
pub mod webhook;

use std::future::Future;
use std::time::Duration;

use crate::config::{ConfigError, Env};
use crate::delivery::names::DestinationName;
use crate::delivery::retry::{Attempt, TransportKind};
use crate::envelope::Envelope;
use hubspot::HubSpot;
use warehouse::firehose::FirehoseWarehouse;
use warehouse::s3::S3Warehouse;
use warehouse::{WarehouseRow, WarehouseSink, WarehouseTarget};
use webhook::{SigningKey, Webhook};

/// The port the router delivers through.
pub trait Destinations: Send + Sync {
    /// Whether the destination has its settings; unconfigured ones are skipped.
    fn configured(&self, name: DestinationName) -> bool;
    /// One attempt, bounded by `timeout`.
    fn deliver(
        &self,
        name: DestinationName,
        envelope: &Envelope,
        timeout: Duration,
    ) -> impl Future<Output = Attempt> + Send;
    /// Whether `name` takes a batch's leads in one request ([`Destinations::deliver_batch`]).
    fn batched(&self, _name: DestinationName) -> bool {
        false
    }
    /// One attempt at `rows` together, bounded by `timeout`; one result per row.
    fn deliver_batch(
        &self,
        name: DestinationName,
        rows: &[WarehouseRow<'_>],
        _timeout: Duration,
    ) -> impl Future<Output = Vec<Attempt>> + Send {
        std::future::ready(vec![
            Attempt::Transport {
                kind: TransportKind::Other,
                detail: format!("{name} takes no batches"),
            };
            rows.len()
        ])
    }
}

/// Where the warehouse writes, with its client.
#[derive(Clone, Debug)]
pub enum Warehouse {
    S3(S3Warehouse),
    Firehose(FirehoseWarehouse),
}

impl Warehouse {
    /// The adapter for `target`, on the shared SDK configuration.
    pub fn new(target: WarehouseTarget, sdk: &aws_config::SdkConfig) -> Warehouse {
        match target {
            WarehouseTarget::S3(uri) => {
                // Path-style addressing only where an endpoint is set (S3 stand-ins such as
                // moto, which have no per-bucket host names); AWS itself gets virtual hosts.
                let config = aws_sdk_s3::config::Builder::from(sdk)
                    .force_path_style(sdk.endpoint_url().is_some())
                    .build();
                Warehouse::S3(S3Warehouse::new(aws_sdk_s3::Client::from_conf(config), uri))
            }
            WarehouseTarget::Firehose(name) => Warehouse::Firehose(FirehoseWarehouse::new(
                aws_sdk_firehose::Client::new(sdk),
                name,
            )),
        }
    }
}

/// How the `crm` destination is reached.
#[derive(Clone)]
pub enum Crm {
    HubSpot(hubspot::HubSpot),
    Webhook(webhook::Webhook),
}

/// Every destination's settings (docs/configuration.md has their variables).
#[derive(Clone, Default)]
pub struct DestinationSettings {
    pub crm: Option<Crm>,
    pub outreach: Option<webhook::Webhook>,
    pub nurture: Option<webhook::Webhook>,
    pub slack: Option<slack::Slack>,
    pub zapier: Option<webhook::Webhook>,
    /// `WAREHOUSE_S3_URI` or `FIREHOSE_STREAM_NAME` (the client is built in `wiring`).
    pub warehouse: Option<WarehouseTarget>,
}

impl DestinationSettings {
    /// Each destination from its variables; a set URL must be http(s).
    pub fn read<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let signing = match env.optional("OUTBOUND_SIGNING_SECRET") {
            None => None,
            Some(s) => {
                let key = SigningKey::parse(&s).ok_or(ConfigError::Invalid {
                    var: "OUTBOUND_SIGNING_SECRET",
                    reason: "expected whsec_ followed by base64".into(),
                })?;
                if key.len() < crate::auth::MIN_SECRET_BYTES {
                    return Err(ConfigError::Invalid {
                        var: "OUTBOUND_SIGNING_SECRET",
                        reason: format!(
                            "its key is shorter than {} bytes: use a long random value",
                            crate::auth::MIN_SECRET_BYTES
                        ),
                    });
                }
                Some(key)
            }
        };
        let webhook = |var| -> Result<Option<Webhook>, ConfigError> {
            Ok(env.url(var)?.map(|u| Webhook::new(u, signing.clone())))
        };
        if env.optional("HUBSPOT_ACCESS_TOKEN").is_some()
            && env.optional("CRM_WEBHOOK_URL").is_some()
        {
            return Err(ConfigError::Invalid {
                var: "CRM_WEBHOOK_URL",
                reason: "set together with HUBSPOT_ACCESS_TOKEN: the crm destination is one of \
                         them; unset the one you do not mean"
                    .into(),
            });
        }
        let crm = match env.optional("HUBSPOT_ACCESS_TOKEN") {
            Some(token) if token.len() < crate::auth::MIN_SECRET_BYTES => {
                return Err(ConfigError::Invalid {
                    var: "HUBSPOT_ACCESS_TOKEN",
                    reason: format!(
                        "shorter than {} bytes: not a HubSpot private-app token",
                        crate::auth::MIN_SECRET_BYTES
                    ),
                });
            }
            Some(token) => Some(Crm::HubSpot(HubSpot::new(
                &env.url("HUBSPOT_BASE_URL")?
                    .unwrap_or_else(|| hubspot::DEFAULT_BASE_URL.to_string()),
                &env.optional("HUBSPOT_UPSERT_PATH")
                    .unwrap_or_else(|| hubspot::DEFAULT_UPSERT_PATH.to_string()),
                token,
                env.optional("HUBSPOT_SCORE_PROPERTY"),
            ))),
            None => webhook("CRM_WEBHOOK_URL")?.map(Crm::Webhook),
        };
        Ok(DestinationSettings {
            crm,
            outreach: webhook("OUTREACH_WEBHOOK_URL")?,
            nurture: webhook("NURTURE_WEBHOOK_URL")?,
            slack: env.url("SLACK_WEBHOOK_URL")?.map(slack::Slack::new),
            zapier: webhook("ZAPIER_WEBHOOK_URL")?,
            warehouse: WarehouseTarget::read(env)?,
        })
    }
}

impl std::fmt::Debug for DestinationSettings {
    // URLs and tokens are credentials: show only what is configured.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let crm = match &self.crm {
            Some(Crm::HubSpot(_)) => "hubspot",
            Some(Crm::Webhook(_)) => "webhook",
            None => "none",
        };
        f.debug_struct("DestinationSettings")
            .field("crm", &crm)
            .field("outreach", &self.outreach.is_some())
            .field("nurture", &self.nurture.is_some())
            .field("slack", &self.slack.is_some())
            .field("zapier", &self.zapier.is_some())
            .field("warehouse", &self.warehouse)
            .finish()
    }
}

/// The HTTP adapter: one `reqwest` client (built once, connection pool shared) for all.
#[derive(Clone, Debug)]
pub struct HttpDestinations {
    client: reqwest::Client,
    settings: DestinationSettings,
    warehouse: Option<Warehouse>,
}

impl HttpDestinations {
    pub fn new(
        settings: DestinationSettings,
        connect_timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let client = crate::delivery::http::client(connect_timeout)?;
        Ok(HttpDestinations {
            client,
            settings,
            warehouse: None,
        })
    }

    /// With the warehouse's client (when its settings name one).
    pub fn with_warehouse(mut self, sdk: &aws_config::SdkConfig) -> Self {
        self.warehouse = self
            .settings
            .warehouse
            .clone()
            .map(|t| Warehouse::new(t, sdk));
        self
    }
}

impl Destinations for HttpDestinations {
    fn configured(&self, name: DestinationName) -> bool {
        let s = &self.settings;
        match name {
            DestinationName::Crm => s.crm.is_some(),
            DestinationName::Outreach => s.outreach.is_some(),
            DestinationName::Nurture => s.nurture.is_some(),
            DestinationName::Slack => s.slack.is_some(),
            DestinationName::Zapier => s.zapier.is_some(),
            DestinationName::Warehouse => self.warehouse.is_some(),
        }
    }

    fn batched(&self, name: DestinationName) -> bool {
        name == DestinationName::Warehouse
    }

    async fn deliver_batch(
        &self,
        name: DestinationName,
        rows: &[WarehouseRow<'_>],
        timeout: Duration,
    ) -> Vec<Attempt> {
        match (name, &self.warehouse) {
            (DestinationName::Warehouse, Some(Warehouse::S3(w))) => w.write(rows, timeout).await,
            (DestinationName::Warehouse, Some(Warehouse::Firehose(w))) => {
                w.write(rows, timeout).await
            }
            _ => vec![
                Attempt::Transport {
                    kind: TransportKind::Other,
                    detail: format!("{name} is not configured for batches"),
                };
                rows.len()
            ],
        }
    }

    async fn deliver(&self, name: DestinationName, env: &Envelope, timeout: Duration) -> Attempt {
        let s = &self.settings;
        let c = &self.client;
        let not_configured = || Attempt::Transport {
            kind: TransportKind::Other,
            detail: format!("{name} is not configured"),
        };
        match name {
            DestinationName::Crm => match &s.crm {
                Some(Crm::HubSpot(h)) => h.deliver(c, env, timeout).await,
                Some(Crm::Webhook(w)) => w.deliver(c, name, env, timeout).await,
                None => not_configured(),
            },
            DestinationName::Outreach => match &s.outreach {
                Some(w) => w.deliver(c, name, env, timeout).await,
                None => not_configured(),
            },
            DestinationName::Nurture => match &s.nurture {
                Some(w) => w.deliver(c, name, env, timeout).await,
                None => not_configured(),
            },
            DestinationName::Zapier => match &s.zapier {
                Some(w) => w.deliver(c, name, env, timeout).await,
                None => not_configured(),
            },
            DestinationName::Slack => match &s.slack {
                Some(sl) => sl.deliver(c, env, timeout).await,
                None => not_configured(),
            },
            // Batched: the router sends it through `deliver_batch`.
            DestinationName::Warehouse => not_configured(),
        }
    }
}
