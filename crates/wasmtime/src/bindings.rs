//! Bindings generated from `wit/` for wasmtime's component linker, and the
//! conversions between their types and teller's own (`teller_contract`).
//!
//! Every conversion names every field (no `..`), so a field added to the
//! WIT fails to compile here until it is carried across.

#![allow(unsafe_code, clippy::all)]

use teller_contract as c;

/// Bindings for guests of the `transfer-check-policy` world.
pub mod transfer_check {
    wasmtime::component::bindgen!({
        world: "transfer-check-policy",
        path: "../../wit",
    });
}

/// Bindings for guests of the `audit-sealer` world.
pub mod audit {
    wasmtime::component::bindgen!({
        world: "audit-sealer",
        path: "../../wit",
        with: { "bank:policy/types": super::transfer_check::bank::policy::types },
    });
}

use transfer_check::bank::policy::types as w;

pub fn policy_config(
    c::PolicyConfig {
        amount_limit,
        authorized_roles,
    }: &c::PolicyConfig,
) -> w::PolicyConfig {
    w::PolicyConfig {
        amount_limit: *amount_limit,
        authorized_roles: authorized_roles.clone(),
    }
}

pub fn transfer_request(r: &c::TransferRequest) -> w::TransferRequest {
    let c::TransferRequest {
        action,
        amount,
        currency,
        from_account,
        to_account,
        user: c::User { id, role },
        audit_enabled,
        approval_required,
        request_id,
    } = r;
    w::TransferRequest {
        action: action.clone(),
        amount: *amount,
        currency: currency.clone(),
        from_account: from_account.clone(),
        to_account: to_account.clone(),
        user: w::User {
            id: id.clone(),
            role: role.clone(),
        },
        audit_enabled: *audit_enabled,
        approval_required: *approval_required,
        request_id: request_id.clone(),
    }
}

pub fn decision(d: w::Decision) -> c::Decision {
    let w::Decision {
        allow,
        deny,
        verdict,
        reasons,
    } = d;
    c::Decision {
        allow,
        deny,
        verdict: match verdict {
            w::Verdict::Allow => c::Verdict::Allow,
            w::Verdict::Deny => c::Verdict::Deny,
            w::Verdict::Review => c::Verdict::Review,
        },
        reasons: reasons
            .into_iter()
            .map(|w::Reason { code, message }| c::Reason {
                code: match code {
                    w::ReasonCode::ActionNotTransfer => c::ReasonCode::ActionNotTransfer,
                    w::ReasonCode::AmountOverLimit => c::ReasonCode::AmountOverLimit,
                    w::ReasonCode::RoleNotAuthorized => c::ReasonCode::RoleNotAuthorized,
                    w::ReasonCode::AuditDisabled => c::ReasonCode::AuditDisabled,
                    w::ReasonCode::ApprovalRequired => c::ReasonCode::ApprovalRequired,
                },
                message,
            })
            .collect(),
    }
}

pub fn policy_metadata(
    w::PolicyMetadata { name, version }: w::PolicyMetadata,
) -> c::PolicyMetadata {
    c::PolicyMetadata { name, version }
}

pub fn audit_event(e: &c::AuditEvent) -> w::AuditEvent {
    let c::AuditEvent {
        id,
        timestamp,
        actor: c::Actor { id: actor_id, role },
        action,
        resource,
        outcome,
        reasons,
        origin: c::Origin { client, request_id },
        policy,
        engine,
        details,
        encrypted,
    } = e;
    w::AuditEvent {
        id: id.clone(),
        timestamp: timestamp.clone(),
        actor: w::Actor {
            id: actor_id.clone(),
            role: role.clone(),
        },
        action: action.clone(),
        resource: resource.clone(),
        outcome: outcome.clone(),
        reasons: reasons.clone(),
        origin: w::Origin {
            client: client.clone(),
            request_id: request_id.clone(),
        },
        policy: policy.as_ref().map(
            |c::PolicyRef {
                 name,
                 version,
                 sha256,
             }| w::PolicyRef {
                name: name.clone(),
                version: version.clone(),
                sha256: sha256.clone(),
            },
        ),
        engine: engine.clone(),
        details: details.clone(),
        encrypted: encrypted.as_ref().map(
            |c::EncryptedEvent {
                 key_id,
                 salt,
                 nonce,
                 ciphertext,
             }| w::EncryptedEvent {
                key_id: key_id.clone(),
                salt: salt.clone(),
                nonce: nonce.clone(),
                ciphertext: ciphertext.clone(),
            },
        ),
    }
}

pub fn sealed_record(
    w::SealedRecord {
        seq,
        prev_hash,
        hash,
        line,
    }: w::SealedRecord,
) -> c::SealedRecord {
    c::SealedRecord {
        seq,
        prev_hash,
        hash,
        line,
    }
}
