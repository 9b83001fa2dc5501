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
