//! Local runs: destinations that are not configured print what they would have received,
//! so a developer sees the whole pipeline work without any downstream account.

use std::time::Duration;

use crate::delivery::names::DestinationName;
use crate::delivery::retry::Attempt;
use crate::destinations::warehouse::WarehouseRow;
use crate::destinations::{Destinations, slack, webhook};
use crate::envelope::Envelope;

pub struct PrintingDestinations<D> {
    pub inner: D,
}

/// What an unconfigured destination would have been sent.
pub fn would_receive(name: DestinationName, env: &Envelope) -> serde_json::Value {
    match name {
        DestinationName::Slack => slack::payload(env),
        DestinationName::Warehouse => {
            let version = env.lead_version();
            serde_json::to_value(WarehouseRow::new(env, &version, &[])).unwrap_or_default()
        }
        _ => webhook::payload_value(env),
    }
}

impl<D: Destinations> Destinations for PrintingDestinations<D> {
    fn configured(&self, _name: DestinationName) -> bool {
        true
    }

    fn batched(&self, name: DestinationName) -> bool {
        self.inner.configured(name) && self.inner.batched(name)
    }

    async fn deliver_batch(
        &self,
        name: DestinationName,
        rows: &[WarehouseRow<'_>],
        timeout: Duration,
    ) -> Vec<Attempt> {
        self.inner.deliver_batch(name, rows, timeout).await
    }

    async fn deliver(&self, name: DestinationName, env: &Envelope, timeout: Duration) -> Attempt {
        if self.inner.configured(name) {
            return self.inner.deliver(name, env, timeout).await;
        }
        let payload = would_receive(name, env);
        println!(
            "→ {name} (not configured) would receive, Idempotency-Key {}:\n{}",
            webhook::idempotency_key(env, name),
            serde_json::to_string_pretty(&payload).unwrap_or_default()
        );
        Attempt::Delivered
    }
}
