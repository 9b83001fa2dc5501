//! A guest's results read from arbitrary memory: teller's canonical-ABI
//! lifting (the WasmEdge engine's) must return a value or an error for
//! every byte pattern and result word, never panic or read out of bounds,
//! and whatever it lifts must convert to the WIT's Rust type or fail
//! cleanly.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use teller_abi::bridge::from_value;
use teller_abi::lift::Lifter;
use teller_abi::{Contract, ExportFunc, Flat, FlatType};
use teller_contract::{Decision, PolicyMetadata, SealedRecord};

#[derive(Debug, Arbitrary)]
struct Input {
    export: u8,
    words: Vec<u64>,
    memory: Vec<u8>,
}

fn contract() -> &'static (Contract, Vec<ExportFunc>) {
    static CONTRACT: OnceLock<(Contract, Vec<ExportFunc>)> = OnceLock::new();
    CONTRACT.get_or_init(|| {
        let contract = Contract::bank_policy().expect("the WIT parses");
        let funcs = [
            ("transfer-check", "check"),
            ("audit", "seal"),
            ("metadata", "describe"),
        ]
        .iter()
        .map(|(i, f)| contract.export(i, f).expect("export exists"))
        .collect();
        (contract, funcs)
    })
}

fuzz_target!(|input: Input| {
    let (contract, funcs) = contract();
    let func = &funcs[input.export as usize % funcs.len()];
    // The core results: one pointer when they go through memory, else the
    // flattened result types, each filled from the fuzzer's words.
    let mut types = Vec::new();
    if func.result_indirect {
        types.push(FlatType::I32);
    } else if let Some(ty) = &func.result {
        contract.flatten(ty, &mut types).expect("flattens");
    }
    let flat: Vec<Flat> = types
        .iter()
        .zip(input.words.iter().chain(std::iter::repeat(&0)))
        .map(|(ty, w)| match ty {
            FlatType::I32 => Flat::I32(*w as i32),
            FlatType::I64 => Flat::I64(*w as i64),
            FlatType::F32 => Flat::F32(f32::from_bits(*w as u32)),
            FlatType::F64 => Flat::F64(f64::from_bits(*w)),
        })
        .collect();
    let Ok(Some(value)) = Lifter::new(contract, &input.memory).results(func, &flat) else {
        return;
    };
    let Some(ty) = &func.result else { return };
    match input.export as usize % funcs.len() {
        0 => drop(from_value::<Decision>(contract, ty, value)),
        1 => drop(from_value::<Result<SealedRecord, String>>(contract, ty, value)),
        _ => drop(from_value::<PolicyMetadata>(contract, ty, value)),
    }
});
