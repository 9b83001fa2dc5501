//! Differential test: the wasm guest against the bank's own Rego, evaluated
//! by regorus, on generated documents. `allow` and `deny` must agree exactly
//! (Rego's undefined `deny` counts as false).

use crate::support::{ENGINES, engine};
use proptest::prelude::*;
use serde_json::{Value, json};
use teller_contract::decode_transfer;
use teller_engine::artifact::PolicySource;
use teller_server::config::Config;

const REGO: &str = include_str!("../../guest-policies/transfer-check/bank.rego");

fn rego_decision(doc: &str) -> (bool, bool) {
    let mut engine = regorus::Engine::new();
    engine.set_rego_v0(true);
    engine.add_policy("bank.rego".into(), REGO.into()).unwrap();
    engine.set_input(regorus::Value::from_json_str(doc).unwrap());
    let mut rule = |name: &str| match engine.eval_rule(format!("data.bank.{name}")).unwrap() {
        regorus::Value::Bool(b) => b,
        regorus::Value::Undefined => false,
        other => panic!("{name} is {other:?}"),
    };
    (rule("allow"), rule("deny"))
}

fn amount() -> impl Strategy<Value = u64> {
    prop_oneof![
        prop::sample::select(vec![0, 1, 999_999, 1_000_000, 1_000_001, i64::MAX as u64]),
        0..=2_000_000u64,
        0..=i64::MAX as u64,
    ]
}

/// A flag object that may be absent, empty, or hold a boolean.
fn flag(key: &'static str) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        Just(Some(json!({}))),
        any::<bool>().prop_map(move |b| Some(json!({ key: b }))),
    ]
}

fn document() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["transfer", "withdraw", "Transfer", "", "transfer "]),
        amount(),
        prop_oneof![
            prop::sample::select(vec!["authorized", "teller", "", "Authorized", "授权"])
                .prop_map(str::to_string),
            "\\PC{0,12}",
        ],
        flag("enabled"),
        flag("required"),
        "\\PC{0,20}",
    )
        .prop_map(|(action, amount, role, audit, approval, id)| {
            let mut doc = json!({
                "action": action,
                "amount": amount,
                "user": {"id": id, "role": role},
                "from_account": "6222020200001234567",
            });
            if let Some(a) = audit {
                doc["audit"] = a;
            }
            if let Some(a) = approval {
                doc["approval"] = a;
            }
            doc.to_string()
        })
}

#[test]
fn guest_agrees_with_the_rego_policy() {
    for name in ENGINES {
        agrees_on(name);
    }
}

fn agrees_on(name: &str) {
    let check = engine(name)
        .load_transfer_check(&PolicySource::Builtin.transfer_checks().unwrap().remove(0))
        .unwrap();
    let config = Config::default().policy_config();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(1000));
    runner
        .run(&document(), |doc| {
            let request = decode_transfer(doc.as_bytes()).unwrap();
            let decision = check.check(&config, &request).unwrap();
            prop_assert_eq!(
                (decision.allow, decision.deny),
                rego_decision(&doc),
                "{}",
                doc
            );
            Ok(())
        })
        .unwrap();
}
