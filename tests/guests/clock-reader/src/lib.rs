//! Test guest: a transfer check that decides by the wall clock and by a
//! `HashMap` (whose keys std seeds from the host's randomness). Its core
//! module imports WASI's `clock_time_get` and `random_get`, its component
//! `wasi:clocks` and `wasi:random`: neither engine may load it, since a
//! decision must depend on its inputs only.

#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({
        world: "transfer-check-policy",
        path: "../../../wit",
    });

    #[cfg(target_arch = "wasm32")]
    use super::Policy;
    #[cfg(target_arch = "wasm32")]
    export!(Policy with_types_in self);
}

use bindings::bank::policy::types::{
    Decision, PolicyConfig, PolicyMetadata, TransferRequest, Verdict,
};
use bindings::exports::bank::policy::{metadata, transfer_check};
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

pub struct Policy;

impl metadata::Guest for Policy {
    fn describe() -> PolicyMetadata {
        PolicyMetadata {
            name: "clock-reader".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

impl transfer_check::Guest for Policy {
    fn check(_config: PolicyConfig, request: TransferRequest) -> Decision {
        let seconds = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut seen = HashMap::new();
        seen.insert(request.request_id, seconds);
        let allow = seconds.is_multiple_of(2) && seen.len() == 1;
        Decision {
            allow,
            deny: !allow,
            verdict: if allow { Verdict::Allow } else { Verdict::Deny },
            reasons: Vec::new(),
        }
    }
}
