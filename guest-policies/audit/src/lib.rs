//! The audit sealer, compiled to WebAssembly: the record of
//! `teller-audit-record` behind the WIT's `audit-sealer` world, its hash
//! taken by the host (`bank:policy/digest`).

#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({
        world: "audit-sealer",
        path: "../../wit",
    });

    // Exports only exist in the wasm builds; native builds are for unit
    // tests, and native symbols cannot carry WIT names.
    #[cfg(target_arch = "wasm32")]
    use super::Sealer;
    #[cfg(target_arch = "wasm32")]
    export!(Sealer with_types_in self);
}

use bindings::bank::policy::types as wit;
use bindings::exports::bank::policy::{audit, metadata};
use teller_audit_record::seal_with;
use teller_contract::{
    Actor, AuditEvent, EncryptedEvent, Origin, PolicyOutcome, PolicyRef, Verdict,
};

/// The guest's exports.
pub struct Sealer;

impl metadata::Guest for Sealer {
    fn describe() -> wit::PolicyMetadata {
        wit::PolicyMetadata {
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
    fn seal(
        seq: u64,
        prev_hash: String,
        event: wit::AuditEvent,
    ) -> Result<wit::SealedRecord, String> {
        let record = seal_with(seq, &prev_hash, &audit_event(event), |body| {
            let (a, b, c, d) = bindings::bank::policy::digest::sha256(body);
            let mut hash = [0; 32];
            for (chunk, word) in hash.chunks_exact_mut(8).zip([a, b, c, d]) {
                chunk.copy_from_slice(&word.to_be_bytes());
            }
            hash
        })?;
        Ok(wit::SealedRecord {
            seq: record.seq,
            prev_hash: record.prev_hash,
            hash: record.hash,
            line: record.line,
        })
    }
}

/// The bindings' event as teller's own type, field by field, so that a
/// field added to the WIT fails to compile here rather than go unsealed.
fn audit_event(event: wit::AuditEvent) -> AuditEvent {
    let wit::AuditEvent {
        id,
        timestamp,
        actor: wit::Actor { id: actor_id, role },
        action,
        resource,
        outcome,
        reasons,
        origin: wit::Origin { client, request_id },
        policy,
        policies,
        engine,
        details,
        encrypted,
    } = event;
    AuditEvent {
        id,
        timestamp,
        actor: Actor { id: actor_id, role },
        action,
        resource,
        outcome,
        reasons,
        origin: Origin { client, request_id },
        policy: policy.map(policy_ref),
        policies: policies
            .into_iter()
            .map(
                |wit::PolicyOutcome {
                     policy,
                     allow,
                     deny,
                     verdict,
                 }| PolicyOutcome {
                    policy: policy_ref(policy),
                    allow,
                    deny,
                    verdict: match verdict {
                        wit::Verdict::Allow => Verdict::Allow,
                        wit::Verdict::Deny => Verdict::Deny,
                        wit::Verdict::Review => Verdict::Review,
                    },
                },
            )
            .collect(),
        engine,
        details,
        encrypted: encrypted.map(
            |wit::EncryptedEvent {
                 key_id,
                 salt,
                 nonce,
                 ciphertext,
             }| EncryptedEvent {
                key_id,
                salt,
                nonce,
                ciphertext,
            },
        ),
    }
}

fn policy_ref(
    wit::PolicyRef {
        name,
        version,
        sha256,
    }: wit::PolicyRef,
) -> PolicyRef {
    PolicyRef {
        name,
        version,
        sha256,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field distinct, so that two fields swapped in the conversion
    /// cannot go unnoticed.
    #[test]
    fn the_bindings_event_becomes_the_same_event_of_tellers_types() {
        let policy = |n: &str| wit::PolicyRef {
            name: format!("name-{n}"),
            version: format!("version-{n}"),
            sha256: format!("sha-{n}"),
        };
        let ours = |n: &str| PolicyRef {
            name: format!("name-{n}"),
            version: format!("version-{n}"),
            sha256: format!("sha-{n}"),
        };
        let event = wit::AuditEvent {
            id: "id".into(),
            timestamp: "timestamp".into(),
            actor: wit::Actor {
                id: "actor-id".into(),
                role: "role".into(),
            },
            action: "action".into(),
            resource: vec!["r1".into(), "r2".into()],
            outcome: "outcome".into(),
            reasons: vec!["why".into()],
            origin: wit::Origin {
                client: "client".into(),
                request_id: "request-id".into(),
            },
            policy: Some(policy("set")),
            policies: [
                wit::Verdict::Allow,
                wit::Verdict::Deny,
                wit::Verdict::Review,
            ]
            .into_iter()
            .enumerate()
            .map(|(i, verdict)| wit::PolicyOutcome {
                policy: policy(&i.to_string()),
                allow: i == 0,
                deny: i == 1,
                verdict,
            })
            .collect(),
            engine: "engine".into(),
            details: vec![("k".into(), "v".into())],
            encrypted: Some(wit::EncryptedEvent {
                key_id: "key".into(),
                salt: "salt".into(),
                nonce: "nonce".into(),
                ciphertext: "ciphertext".into(),
            }),
        };
        let expected = AuditEvent {
            id: "id".into(),
            timestamp: "timestamp".into(),
            actor: Actor {
                id: "actor-id".into(),
                role: "role".into(),
            },
            action: "action".into(),
            resource: vec!["r1".into(), "r2".into()],
            outcome: "outcome".into(),
            reasons: vec!["why".into()],
            origin: Origin {
                client: "client".into(),
                request_id: "request-id".into(),
            },
            policy: Some(ours("set")),
            policies: Verdict::ALL
                .into_iter()
                .enumerate()
                .map(|(i, verdict)| PolicyOutcome {
                    policy: ours(&i.to_string()),
                    allow: i == 0,
                    deny: i == 1,
                    verdict,
                })
                .collect(),
            engine: "engine".into(),
            details: vec![("k".into(), "v".into())],
            encrypted: Some(EncryptedEvent {
                key_id: "key".into(),
                salt: "salt".into(),
                nonce: "nonce".into(),
                ciphertext: "ciphertext".into(),
            }),
        };
        assert_eq!(audit_event(event), expected);
    }
}
