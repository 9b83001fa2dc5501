//! Micro-benchmarks of the request path's pure parts: JSON decoding, the
//! serde bridge and the canonical-ABI lowering and lifting that the WasmEdge
//! engine performs on every call. Run with `cargo bench -p teller-abi`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use divan::{Bencher, black_box};
use teller_abi::lift::Lifter;
use teller_abi::lower::Lowerer;
use teller_abi::{Contract, Flat, Value, VecMemory, bridge};
use teller_contract::EXAMPLE_REQUEST as EXAMPLE;
use teller_contract::decode_transfer;

fn main() {
    divan::main();
}

#[divan::bench]
fn decode_transfer_json(bencher: Bencher) {
    bencher.bench(|| decode_transfer(black_box(EXAMPLE.as_bytes())).unwrap());
}

#[divan::bench]
fn malformed_json_error(bencher: Bencher) {
    let bad = br#"{"action":"transfer","amount":-1,"user":{"role":"authorized"}}"#;
    bencher.bench(|| decode_transfer(black_box(bad)).unwrap_err());
}

/// The `check` arguments as [`Value`]s.
fn check_args(c: &Contract) -> (teller_abi::ExportFunc, Vec<Value>) {
    let check = c.export("transfer-check", "check").unwrap();
    let request = decode_transfer(EXAMPLE.as_bytes()).unwrap();
    let config = teller_contract::PolicyConfig {
        amount_limit: 1_000_000,
        authorized_roles: vec!["authorized".to_string()],
        daily_limit: None,
        day_offset_minutes: 0,
    };
    let args = vec![
        bridge::to_value(c, &check.params[0], &config).unwrap(),
        bridge::to_value(c, &check.params[1], &request).unwrap(),
    ];
    (check, args)
}

#[divan::bench]
fn bridge_request_to_value(bencher: Bencher) {
    let c = Contract::bank_policy().unwrap();
    let check = c.export("transfer-check", "check").unwrap();
    let request = decode_transfer(EXAMPLE.as_bytes()).unwrap();
    bencher.bench(|| bridge::to_value(&c, &check.params[1], black_box(&request)).unwrap());
}

#[divan::bench]
fn lower_check_arguments(bencher: Bencher) {
    let c = Contract::bank_policy().unwrap();
    let (check, args) = check_args(&c);
    let mut memory = VecMemory::new();
    bencher.bench_local(|| {
        memory.reset();
        Lowerer::new(&c, &mut memory)
            .params(&check, black_box(&args))
            .unwrap()
    });
}

/// What the WasmEdge engine's first pass does: the allocations lowering
/// will make, planned without storing anything.
#[divan::bench]
fn plan_check_allocations(bencher: Bencher) {
    let c = Contract::bank_policy().unwrap();
    let (check, args) = check_args(&c);
    bencher.bench_local(|| teller_abi::lower::allocations(&c, &check, black_box(&args)).unwrap());
}

#[divan::bench]
fn lift_check_arguments(bencher: Bencher) {
    let c = Contract::bank_policy().unwrap();
    let (check, args) = check_args(&c);
    let mut memory = VecMemory::new();
    let flat = Lowerer::new(&c, &mut memory).params(&check, &args).unwrap();
    let [Flat::I32(ptr)] = flat[..] else {
        unreachable!("check's parameters spill to memory")
    };
    // The spilled parameters are a tuple; lift its two fields.
    let config_size = {
        let size = c.sizes.size(&check.params[0]).size_wasm32();
        let align = c.sizes.align(&check.params[1]).align_wasm32();
        size.div_ceil(align) * align
    };
    bencher.bench(|| {
        let mut lifter = Lifter::new(&c, &memory.bytes);
        let config = lifter.load(&check.params[0], ptr as usize).unwrap();
        let request = lifter
            .load(&check.params[1], ptr as usize + config_size)
            .unwrap();
        black_box((config, request))
    });
}

/// A decision's audit event, as the server builds it for the README's
/// example (one policy, allowed).
fn decision_event() -> teller_contract::AuditEvent {
    use teller_contract::{Actor, AuditEvent, Origin, PolicyOutcome, PolicyRef, Verdict};
    let policy = PolicyRef {
        name: "transfer-check".to_string(),
        version: "0.1.0".to_string(),
        sha256: "fa4dd292b5e0c947d61adee91c1b6998d6f8b5e3cbf1c4d36aadb8ac9795a3de".to_string(),
    };
    AuditEvent {
        id: "01a23c00-7296-7256-9de0-6f2f276f6bd3".to_string(),
        timestamp: "2026-12-03T13:01:52.797449Z".to_string(),
        actor: Actor {
            id: "u-17".to_string(),
            role: "authorized".to_string(),
        },
        action: "transfer".to_string(),
        resource: vec![
            "6222020200001234567".to_string(),
            "6222020200007654321".to_string(),
        ],
        outcome: "allow".to_string(),
        reasons: vec![],
        origin: Origin {
            client: "127.0.0.1:46681".to_string(),
            request_id: "r-1".to_string(),
        },
        policy: Some(policy.clone()),
        policies: vec![PolicyOutcome {
            policy,
            allow: true,
            deny: false,
            verdict: Verdict::Allow,
        }],
        engine: "wasmedge".to_string(),
        details: [
            ("allow", "true"),
            ("amount", "250000"),
            ("deny", "false"),
            ("currency", "CNY"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .to_vec(),
        encrypted: None,
    }
}

/// The `seal` arguments (seq, previous hash, event) as [`Value`]s.
fn seal_args(c: &Contract) -> (teller_abi::ExportFunc, Vec<Value>) {
    let seal = c.export("audit", "seal").unwrap();
    let prev = "0".repeat(64);
    let args = vec![
        bridge::to_value(c, &seal.params[0], &41u64).unwrap(),
        bridge::to_value(c, &seal.params[1], prev.as_str()).unwrap(),
        bridge::to_value(c, &seal.params[2], &decision_event()).unwrap(),
    ];
    (seal, args)
}

/// The audit writer's share of the ABI, per record: the event into
/// [`Value`]s, the allocations planned, then lowered.
#[divan::bench]
fn bridge_audit_event_to_value(bencher: Bencher) {
    let c = Contract::bank_policy().unwrap();
    let seal = c.export("audit", "seal").unwrap();
    let event = decision_event();
    bencher.bench(|| bridge::to_value(&c, &seal.params[2], black_box(&event)).unwrap());
}

#[divan::bench]
fn plan_seal_allocations(bencher: Bencher) {
    let c = Contract::bank_policy().unwrap();
    let (seal, args) = seal_args(&c);
    bencher.bench_local(|| teller_abi::lower::allocations(&c, &seal, black_box(&args)).unwrap());
}

#[divan::bench]
fn lower_seal_arguments(bencher: Bencher) {
    let c = Contract::bank_policy().unwrap();
    let (seal, args) = seal_args(&c);
    let mut memory = VecMemory::new();
    bencher.bench_local(|| {
        memory.reset();
        Lowerer::new(&c, &mut memory)
            .params(&seal, black_box(&args))
            .unwrap()
    });
}
