//! Any SQS record body: the router's parse and routing never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(env) = clayhook::envelope::Envelope::parse(text) {
        let rules = clayhook::router::rules::default_rules();
        let _ = clayhook::router::rules::route(&rules, &env.lead, env.source.as_deref());
    }
    let _ = clayhook::router::rules::parse_rules(text);
});
