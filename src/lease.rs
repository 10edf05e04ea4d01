//! The lease both claims take on an item of the table: ingest's on a callback while it is queued,
//! the router's on a (lead, destination) while it is sent. `status` says the item is held, and one
//! attribute carries the holder's deadline (epoch ms), which is also the holder's token:
//! - the lease lapses when the deadline passes (the holder's invocation is gone), and anyone may
//!   claim the item again (`lapsed!`, in each claim's condition);
//! - only the holder, naming the same deadline ([`OURS`]), may give it back: delete the item
//!   (ingest's abandon) or return it to a settled status (the ledger's release). A lease taken
//!   over since is left alone.
//!
//! Conditions use the names `#status` and `#lease` and the values `:held`, `:now_ms` (lapsed) and
//! `:lease` (ours); [`Lease::names`] and the `*_values` methods supply them.

use crate::aws_json::request::{Attr, n, s};

/// Held, and the holder's deadline has passed: free to claim. A macro, so claim conditions can
/// `concat!` it into one constant.
macro_rules! lapsed {
    () => {
        "(#status = :held AND #lease < :now_ms)"
    };
}
pub(crate) use lapsed;

/// Still held by the holder whose deadline is `:lease`.
pub const OURS: &str = "#status = :held AND #lease = :lease";

/// One kind of lease: the status that means held, and the attribute with the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub held: &'static str,
    pub attribute: &'static str,
}

impl Lease {
    pub fn names(&self) -> [(&'static str, &'static str); 2] {
        [("#status", "status"), ("#lease", self.attribute)]
    }

    /// Values for [`lapsed!`] at `now_ms`.
    pub fn lapsed_values(&self, now_ms: i64) -> [(&'static str, Attr<'static>); 2] {
        [(":held", s(self.held)), (":now_ms", n(now_ms))]
    }

    /// Values for [`OURS`], the holder's deadline being `until_ms`.
    pub fn ours_values(&self, until_ms: i64) -> [(&'static str, Attr<'static>); 2] {
        [(":held", s(self.held)), (":lease", n(until_ms))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The conditions name only what `names` and the values supply.
    #[test]
    fn conditions_use_the_names_and_values_supplied() {
        let lease = Lease {
            held: "HELD",
            attribute: "until",
        };
        let names: Vec<&str> = lease.names().iter().map(|(k, _)| *k).collect();
        let lapsed: Vec<&str> = lease.lapsed_values(0).iter().map(|(k, _)| *k).collect();
        let ours: Vec<&str> = lease.ours_values(0).iter().map(|(k, _)| *k).collect();
        for (condition, values) in [(lapsed!(), &lapsed), (OURS, &ours)] {
            for token in crate::aws_json::request::placeholders(condition) {
                if token.starts_with('#') {
                    assert!(names.contains(&token), "{token} in {condition}");
                }
                if token.starts_with(':') {
                    assert!(values.contains(&token), "{token} in {condition}");
                }
            }
        }
    }
}
