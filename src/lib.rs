//! clayhook: receive Clay enrichment callbacks, prove they are yours, deduplicate them, queue
//! them on SQS and route them downstream.
//!
//! Pure domain modules (`auth`, `lead`, `envelope`, the decisions in `idempotency`, the routing
//! rules in `router::rules`, the retry policy in `delivery::retry`) know nothing of AWS. The use
//! cases are `ingest`, `router` and `feed::feeder`, one Lambda function each; the DynamoDB, SQS
//! and HTTP adapters sit beside their ports, and `wiring` puts them together. Modules behind the
//! `cli` feature serve only the `clayhook` binary. The module map is in docs/architecture.md.

pub mod archive;
pub mod auth;
pub mod aws;
pub mod aws_json;
pub mod batch;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod destinations;
#[cfg(feature = "cli")]
pub mod dlq;
pub mod dynamo;
pub mod envelope;
#[cfg(feature = "cli")]
pub mod events;
pub mod feed;
pub mod idempotency;
pub mod ingest;
pub mod lead;
pub mod lease;
#[cfg(feature = "cli")]
pub mod local;
pub mod logging;
pub mod metrics;
pub mod queue;
pub mod router;
pub mod secret_refs;
#[cfg(feature = "cli")]
pub mod smoke;
pub mod table;
pub mod wiring;
