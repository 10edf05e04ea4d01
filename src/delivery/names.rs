//! The destinations' names, as rules, the ledger, metrics and logs spell them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The five destinations the spec names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DestinationName {
    Crm,
    Outreach,
    Nurture,
    Slack,
    Zapier,
}

impl DestinationName {
    pub const ALL: [DestinationName; 5] = [
        DestinationName::Crm,
        DestinationName::Outreach,
        DestinationName::Nurture,
        DestinationName::Slack,
        DestinationName::Zapier,
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
        }
    }
}

impl fmt::Display for DestinationName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
