//! The destinations' names, as rules, the ledger, metrics and logs spell them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The five destinations the spec names, and the warehouse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DestinationName {
    Crm,
    Outreach,
    Nurture,
    Slack,
    Zapier,
    Warehouse,
}

impl DestinationName {
    pub const ALL: [DestinationName; 6] = [
        DestinationName::Crm,
        DestinationName::Outreach,
        DestinationName::Nurture,
        DestinationName::Slack,
        DestinationName::Zapier,
        DestinationName::Warehouse,
    ];

    /// The destination named `name` (`crm`, `slack`, ...).
    pub fn parse(name: &str) -> Option<DestinationName> {
        DestinationName::ALL
            .into_iter()
            .find(|d| d.as_str() == name.trim())
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DestinationName::Crm => "crm",
            DestinationName::Outreach => "outreach",
            DestinationName::Nurture => "nurture",
            DestinationName::Slack => "slack",
            DestinationName::Zapier => "zapier",
            DestinationName::Warehouse => "warehouse",
        }
    }
}

impl fmt::Display for DestinationName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
