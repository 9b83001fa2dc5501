//! The guests are built both ways from one source: a component for wasmtime
//! and a core module carrying the canonical-ABI exports WasmEdge will call.

use teller_policy_artifacts::{AUDIT, Guest, TRANSFER_CHECK};
use wasmparser::{Parser, Payload};

fn exports(module: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    for payload in Parser::new(0).parse_all(module) {
        if let Payload::ExportSection(section) = payload.unwrap() {
            for export in section {
                names.push(export.unwrap().name.to_string());
            }
        }
    }
    names
}

fn kinds(guest: &Guest) -> (bool, bool) {
    let is_component = |bytes: &[u8]| Parser::is_component(bytes);
    (is_component(guest.component), is_component(guest.module))
}

#[test]
fn each_guest_is_a_component_and_a_core_module() {
    for guest in [TRANSFER_CHECK, AUDIT] {
        assert_eq!(kinds(&guest), (true, false), "{}", guest.name);
        assert!(Parser::is_core_wasm(guest.module), "{}", guest.name);
        assert!(guest.component_path.contains("wasm32-wasip2"));
        assert!(guest.module_path.contains("wasm32-wasip1"));
    }
}

#[test]
fn core_modules_carry_the_canonical_abi_exports() {
    let check = exports(TRANSFER_CHECK.module);
    for name in [
        "memory",
        "cabi_realloc",
        "bank:policy/transfer-check@0.1.0#check",
        "cabi_post_bank:policy/transfer-check@0.1.0#check",
        "bank:policy/metadata@0.1.0#describe",
    ] {
        assert!(check.iter().any(|e| e == name), "{name} not in {check:?}");
    }
    let audit = exports(AUDIT.module);
    for name in [
        "memory",
        "cabi_realloc",
        "bank:policy/audit@0.1.0#seal",
        "cabi_post_bank:policy/audit@0.1.0#seal",
    ] {
        assert!(audit.iter().any(|e| e == name), "{name} not in {audit:?}");
    }
}
