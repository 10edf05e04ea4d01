//! Any body: lead parsing returns a lead or a clear error, never panics, and keeps every key.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(object) = clayhook::lead::parse_object(data) {
        let keys: Vec<String> = object.keys().cloned().collect();
        let (lead, _) = clayhook::lead::Lead::from_object(object);
        for k in keys {
            assert!(clayhook::lead::Field::from_key(&k).is_some() || lead.extra.contains_key(&k));
        }
        let text = serde_json_text(&lead);
        let _ = clayhook::envelope::Envelope::parse(&text);
    }
});

fn serde_json_text(lead: &clayhook::lead::Lead) -> String {
    clayhook::envelope::Envelope::new("id".into(), std::time::UNIX_EPOCH, None, lead.clone()).to_json()
}
