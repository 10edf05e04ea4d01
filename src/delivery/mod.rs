//! Delivering over HTTP, for the router's destinations and the feeder's Clay webhooks alike: the
//! destinations' names, one attempt (a shared client, a bounded answer, redaction), its failure
//! class and the retry policy. It knows neither the router nor the feeder: both depend on it.

pub mod control;
pub mod http;
pub mod names;
pub mod retry;
pub mod schedule;
