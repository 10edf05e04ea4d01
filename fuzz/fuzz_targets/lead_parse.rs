//! Any body: lead parsing returns a lead or a clear error, never panics, and keeps every key;
//! whatever ingest accepts (an object no deeper than `MAX_BODY_DEPTH`), the router reads back
//! exactly: `Envelope::parse(envelope.to_json()) == envelope`.
#![no_main]

use clayhook::envelope::{Envelope, MAX_BODY_DEPTH, object_depth};
use libfuzzer_sys::fuzz_target;

const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    if let Ok(object) = clayhook::lead::parse_object(data) {
        let accepted = object_depth(&object) <= MAX_BODY_DEPTH;
        let keys: Vec<String> = object.keys().cloned().collect();
        let (lead, _) = clayhook::lead::Lead::from_object(object);
        for k in keys {
            assert!(clayhook::lead::Field::from_key(&k).is_some() || lead.extra.contains_key(&k));
        }
        let envelope = Envelope::new(ID.into(), std::time::UNIX_EPOCH, Some("t".into()), lead);
        let back = Envelope::parse(&envelope.to_json());
        if accepted {
            assert_eq!(back.expect("the router reads back what ingest accepted"), envelope);
        }
    }
});
