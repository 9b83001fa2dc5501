//! Test guest: the `audit-sealer` world, lying on request. The event's
//! `action` picks the lie; any other action gets an honest minimal record
//! (`{"seq","prev_hash","id","hash"}`), so one teller can show a lie refused
//! and the chain going on right after it.
//!
//! Every lie keeps the returned record's `seq` and `prev-hash` fields
//! right: only the line, which is what reaches the disk, is wrong. A writer
//! that trusted the fields would chain it.

#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({
        world: "audit-sealer",
        path: "../../../wit",
    });

    #[cfg(target_arch = "wasm32")]
    use super::Liar;
    #[cfg(target_arch = "wasm32")]
    export!(Liar with_types_in self);
}

use bindings::bank::policy::types::{AuditEvent, PolicyMetadata, SealedRecord};
use bindings::exports::bank::policy::{audit, metadata};
use sha2::{Digest, Sha256};

pub struct Liar;

impl metadata::Guest for Liar {
    fn describe() -> PolicyMetadata {
        PolicyMetadata {
            name: "lying-sealer".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

impl audit::Guest for Liar {
    fn seal(seq: u64, prev_hash: String, event: AuditEvent) -> Result<SealedRecord, String> {
        let (line_seq, line_prev) = match event.action.as_str() {
            "lie-seq" => (seq + 1, prev_hash.clone()),
            "lie-prev-hash" => (seq, "0".repeat(64)),
            _ => (seq, prev_hash.clone()),
        };
        let body = format!(
            "{{\"seq\":{line_seq},\"prev_hash\":\"{line_prev}\",\"id\":\"{}\"}}",
            event.id
        );
        let mut hash = hex(&Sha256::digest(body.as_bytes()));
        if event.action == "lie-hash" {
            // A well-formed hash of other bytes.
            hash = hex(&Sha256::digest(b"not this record"));
        }
        let open = body.strip_suffix('}').unwrap_or(&body);
        Ok(SealedRecord {
            seq,
            prev_hash,
            line: format!("{open},\"hash\":\"{hash}\"}}"),
            hash,
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
