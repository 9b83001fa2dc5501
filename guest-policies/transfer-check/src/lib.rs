//! The bank's transfer gate, compiled to WebAssembly: the rule of
//! `teller-transfer-rule` behind the WIT's `transfer-check-policy` world,
//! its daily limit kept through the host's `bank:policy/state` (atomic
//! across replicas).

#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({
        world: "transfer-check-policy",
        path: "../../wit",
    });

    // Exports only exist in the wasm builds; native builds are for unit
    // tests, and native symbols cannot carry WIT names.
    #[cfg(target_arch = "wasm32")]
    use super::Policy;
    #[cfg(target_arch = "wasm32")]
    export!(Policy with_types_in self);
}

/// The guest's exports.
pub struct Policy;

/// The rule works on teller's own types; the bindings' types are converted
/// at the export.
pub use teller_transfer_rule::*;

use bindings::bank::policy::state;
use bindings::bank::policy::types as wit;
use bindings::exports::bank::policy::{metadata, transfer_check};

impl metadata::Guest for Policy {
    fn describe() -> wit::PolicyMetadata {
        wit::PolicyMetadata {
            name: env!("CARGO_PKG_NAME")
                .trim_start_matches("teller-")
                .to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

impl transfer_check::Guest for Policy {
    fn check(config: wit::PolicyConfig, request: wit::TransferRequest) -> wit::Decision {
        let wit::PolicyConfig {
            amount_limit,
            authorized_roles,
            daily_limit,
            day_offset_minutes,
        } = config;
        let wit::TransferRequest {
            action,
            amount,
            currency,
            from_account,
            to_account,
            user: wit::User { id, role },
            audit_enabled,
            approval_required,
            request_id,
        } = request;
        let config = PolicyConfig {
            amount_limit,
            authorized_roles,
            daily_limit,
            day_offset_minutes,
        };
        let request = TransferRequest {
            action,
            amount,
            currency,
            from_account,
            to_account,
            user: User { id, role },
            audit_enabled,
            approval_required,
            request_id,
        };
        let decision = decide(&config, &request);
        let decision = within_daily_limit(&config, &request, decision, |r| {
            let wit::Reservation { granted, total } = state::reserve(&wit::DailyReservation {
                key: r.key.clone(),
                amount: r.amount,
                limit: r.limit,
                day_offset_minutes: r.day_offset_minutes,
                request_id: r.request_id.clone(),
            });
            Reservation { granted, total }
        });
        wit::Decision {
            allow: decision.allow,
            deny: decision.deny,
            verdict: match decision.verdict {
                Verdict::Allow => wit::Verdict::Allow,
                Verdict::Deny => wit::Verdict::Deny,
                Verdict::Review => wit::Verdict::Review,
            },
            reasons: decision
                .reasons
                .into_iter()
                .map(|Reason { code, message }| wit::Reason { code, message })
                .collect(),
        }
    }
}
