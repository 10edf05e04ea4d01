//! The integration tests, in one crate: each test crate links the whole AWS SDK, and seven of
//! them cost minutes of linking and gigabytes of `target/`. `make stress` and `make bench` keep
//! their own crates (`tests/stress.rs`, `tests/bench.rs`); all share `tests/support`.
//!
//! The end-to-end tests (`end_to_end::`) need `sam build` and are `#[ignore]`d here; `make e2e`
//! runs them.

#[path = "../support/mod.rs"]
mod support;

mod control;
mod dlq;
mod end_to_end;
mod events;
mod feeder;
mod held;
mod ingest;
mod local;
mod push;
mod router;
mod secrets;
mod standin;
mod warehouse;
