//! Seals audit events into a SHA-256 hash chain, compiled to WebAssembly.
//!
//! A record is one line of canonical JSON: fixed key order, no insignificant
//! whitespace, one escaping rule, details sorted by key. Its hash covers the
//! record up to and including `prev_hash`:
//!
//! ```text
//! body = {"seq":..,...,"prev_hash":"<64 hex>"}
//! hash = sha256(body)
//! line = body without its final '}' + ,"hash":"<64 hex>"}
//! ```
//!
//! so a verifier recovers `body` from the line alone and needs no knowledge of
//! the serialization. Account numbers never reach the line in clear: every
//! digit of a resource but its last four is masked, and so is every run of
//! twelve or more digits anywhere in free text. The unmasked event reaches
//! the line only as the host's ciphertext (`encrypted`), covered by the hash.

#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({
        world: "audit-sealer",
        path: "../../wit",
        // The `audit-seal` command reads events as teller's API writes them.
        additional_derives: [serde::Deserialize],
    });

    // Exports only exist in the wasm builds; native builds are for unit
    // tests, and native symbols cannot carry WIT names.
    #[cfg(target_arch = "wasm32")]
    use super::Sealer;
    #[cfg(target_arch = "wasm32")]
    export!(Sealer with_types_in self);
}

pub use bindings::bank::policy::types::{
    Actor, AuditEvent, EncryptedEvent, Origin, PolicyMetadata, PolicyRef, SealedRecord, Verdict,
};
use bindings::exports::bank::policy::{audit, metadata};
pub use record::seal;
use record::seal_with;

mod record;

/// The guest's exports.
pub struct Sealer;

impl metadata::Guest for Sealer {
    fn describe() -> PolicyMetadata {
        PolicyMetadata {
            name: env!("CARGO_PKG_NAME")
                .trim_start_matches("teller-")
                .to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

impl audit::Guest for Sealer {
    /// Hashes through the host (`bank:policy/digest`): the CPU's SHA
    /// instructions instead of SHA-256 in wasm, 1–2 µs less a record.
    fn seal(seq: u64, prev_hash: String, event: AuditEvent) -> Result<SealedRecord, String> {
        seal_with(seq, &prev_hash, &event, |body| {
            let (a, b, c, d) = bindings::bank::policy::digest::sha256(body);
            let mut hash = [0; 32];
            for (chunk, word) in hash.chunks_exact_mut(8).zip([a, b, c, d]) {
                chunk.copy_from_slice(&word.to_be_bytes());
            }
            hash
        })
    }
}

#[cfg(test)]
mod tests {
    use super::record::hex;
    use super::*;
    use bindings::bank::policy::types::{Actor, Origin};
    use sha2::{Digest, Sha256};

    fn event() -> AuditEvent {
        AuditEvent {
            id: "01a22533-9363-7434-bb37-681758080538".to_string(),
            timestamp: "2026-11-29T02:32:13.123Z".to_string(),
            actor: Actor {
                id: "u-17".to_string(),
                role: "authorized".to_string(),
            },
            action: "transfer".to_string(),
            resource: vec!["6222020200001234567".to_string()],
            outcome: "allow".to_string(),
            reasons: vec![],
            origin: Origin {
                client: "127.0.0.1:5000".to_string(),
                request_id: "r-1".to_string(),
            },
            policy: None,
            policies: vec![],
            engine: "wasmtime".to_string(),
            details: vec![(
                "note".to_string(),
                "card 4111111111111111 \"x\"\n".to_string(),
            )],
            encrypted: None,
        }
    }

    #[test]
    fn masks_and_chains() {
        let zero = "0".repeat(64);
        let r = seal(1, &zero, &event()).unwrap();
        assert!(r.line.contains("\"***************4567\""), "{}", r.line);
        assert!(
            r.line.contains("card ************1111 \\\"x\\\"\\n"),
            "{}",
            r.line
        );
        assert!(!r.line.contains("6222020200001234567"));
        assert!(
            r.line
                .contains("\"id\":\"01a22533-9363-7434-bb37-681758080538\"")
        );
        let body = format!("{}}}", r.line.split(",\"hash\":").next().unwrap());
        assert_eq!(hex(&Sha256::digest(body.as_bytes())), r.hash);
        let again = seal(1, &zero, &event()).unwrap();
        assert_eq!(again.line, r.line);
        let next = seal(2, &r.hash, &event()).unwrap();
        assert_ne!(next.hash, r.hash);
    }

    #[test]
    fn rejects_bad_prev_hash_and_duplicate_details() {
        assert!(seal(1, "abc", &event()).is_err());
        let mut e = event();
        e.details.push(("note".to_string(), "again".to_string()));
        assert!(
            seal(1, &"0".repeat(64), &e)
                .unwrap_err()
                .contains("more than once")
        );
    }
}
