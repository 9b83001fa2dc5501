//! Differential tests: the same generated inputs on wasmtime (component,
//! generated bindings) and WasmEdge (core module, teller's canonical ABI)
//! must give identical decisions and byte-identical audit records.

use crate::support::engine;
use proptest::prelude::*;
use teller_contract::{
    Actor, AuditEvent, EncryptedEvent, Origin, PolicyConfig, PolicyOutcome, PolicyRef,
    TransferRequest, User, Verdict,
};
use teller_engine::artifact::PolicySource;

const CASES: u32 = 1000;

/// Strings that stress the string lowering: empty, ASCII, multi-byte
/// UTF-8 (CJK, emoji, combining marks), control characters, long ones.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("transfer".to_string()),
        Just("authorized".to_string()),
        "[a-z]{1,12}",
        "\\PC{0,24}",
        ".{0,8}",
        "[\\u{1F600}-\\u{1F64F}\\u{4E00}-\\u{4E2F}\\u{0300}-\\u{036F}]{1,6}",
        "[0-9]{10,20}",
        "x{300,2000}",
    ]
}

fn amount() -> impl Strategy<Value = u64> {
    prop_oneof![
        prop::sample::select(vec![
            0u64,
            1,
            999_999,
            1_000_000,
            1_000_001,
            i64::MAX as u64
        ]),
        any::<u64>(),
    ]
}

fn request() -> impl Strategy<Value = TransferRequest> {
    (
        (
            text(),
            amount(),
            prop::option::of(text()),
            prop::option::of(text()),
        ),
        (prop::option::of(text()), prop::option::of(text()), text()),
        (
            prop::option::of(any::<bool>()),
            prop::option::of(any::<bool>()),
            prop::option::of(text()),
        ),
    )
        .prop_map(
            |((action, amount, currency, from), (to, id, role), (audit, approval, rid))| {
                TransferRequest {
                    action,
                    amount,
                    currency,
                    from_account: from,
                    to_account: to,
                    user: User { id, role },
                    audit_enabled: audit,
                    approval_required: approval,
                    request_id: rid,
                }
            },
        )
}

fn config() -> impl Strategy<Value = PolicyConfig> {
    (amount(), prop::collection::vec(text(), 0..4)).prop_map(|(limit, mut roles)| {
        roles.push("authorized".to_string());
        PolicyConfig {
            amount_limit: limit,
            authorized_roles: roles,
            daily_limit: None,
            day_offset_minutes: 0,
        }
    })
}

fn event() -> impl Strategy<Value = AuditEvent> {
    (
        (text(), text(), text(), text(), text()),
        (
            prop::collection::vec(text(), 0..4),
            text(),
            prop::collection::vec(text(), 0..3),
        ),
        (
            text(),
            text(),
            prop::option::of((text(), text(), "[0-9a-f]{64}")),
            text(),
        ),
        (
            prop::collection::vec((text(), text()), 0..5),
            prop::option::of((text(), text(), text(), text())),
        ),
    )
        .prop_map(
            |(
                (id, ts, actor_id, role, action),
                (resource, outcome, reasons),
                (client, rid, policy, engine),
                (details, encrypted),
            )| {
                let policy = policy.map(|(name, version, sha256)| PolicyRef {
                    name,
                    version,
                    sha256,
                });
                let policies = policy
                    .iter()
                    .map(|p| PolicyOutcome {
                        policy: p.clone(),
                        allow: p.name.len() % 2 == 0,
                        deny: p.version.len() % 2 == 0,
                        verdict: Verdict::ALL[p.sha256.len() % 3],
                    })
                    .collect();
                AuditEvent {
                    id,
                    timestamp: ts,
                    actor: Actor { id: actor_id, role },
                    action,
                    resource,
                    outcome,
                    reasons,
                    origin: Origin {
                        client,
                        request_id: rid,
                    },
                    policy,
                    policies,
                    engine,
                    details,
                    encrypted: encrypted.map(|(key_id, salt, nonce, ciphertext)| EncryptedEvent {
                        key_id,
                        salt,
                        nonce,
                        ciphertext,
                    }),
                }
            },
        )
}

fn prev_hash() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[0-9a-f]{64}",
        1 => text(),
    ]
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap()
}

#[test]
fn decisions_are_identical_on_both_engines() {
    let load = |name| {
        engine(name)
            .load_transfer_check(&PolicySource::Builtin.transfer_checks().unwrap().remove(0))
            .unwrap()
    };
    let (wasmtime, wasmedge) = (load("wasmtime"), load("wasmedge"));
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(CASES));
    runner
        .run(&(config(), request()), |(config, request)| {
            let a = wasmtime.check(&config, &request).unwrap();
            let b = wasmedge.check(&config, &request).unwrap();
            prop_assert_eq!(json(&a), json(&b), "{}", json(&request));
            Ok(())
        })
        .unwrap();
}

#[test]
fn audit_records_are_byte_identical_on_both_engines() {
    let load = |name| {
        engine(name)
            .load_audit(&PolicySource::Builtin.audit().unwrap())
            .unwrap()
    };
    let (wasmtime, wasmedge) = (load("wasmtime"), load("wasmedge"));
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(CASES));
    let sealed = std::cell::Cell::new(0);
    runner
        .run(
            &(any::<u64>(), prev_hash(), event()),
            |(seq, prev, event)| {
                let a = wasmtime.seal(seq, &prev, &event);
                let b = wasmedge.seal(seq, &prev, &event);
                match (&a, &b) {
                    (Ok(a), Ok(b)) => {
                        prop_assert_eq!(&a.line, &b.line);
                        prop_assert_eq!(&a.hash, &b.hash);
                        sealed.set(sealed.get() + 1);
                    }
                    (Err(a), Err(b)) => prop_assert_eq!(&a.message, &b.message),
                    _ => prop_assert!(false, "one engine failed: {:?} / {:?}", a, b),
                }
                Ok(())
            },
        )
        .unwrap();
    assert!(
        sealed.get() > CASES / 2,
        "only {} records were sealed",
        sealed.get()
    );
}
