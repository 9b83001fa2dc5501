//! The guests are built both ways from one source: a component for wasmtime
//! and a core module carrying the canonical-ABI exports WasmEdge will call.

use teller_policy_artifacts::{AUDIT, TRANSFER_CHECK};

/// The export names of a core module, read by wasmtime.
fn exports(module: &[u8]) -> Vec<String> {
    let engine = wasmtime::Engine::default();
    let module = wasmtime::Module::new(&engine, module).unwrap();
    module.exports().map(|e| e.name().to_string()).collect()
}

/// The binary preamble: magic, then version and layer (1 = component).
fn layer(bytes: &[u8]) -> &[u8] {
    assert_eq!(&bytes[..4], b"\0asm");
    &bytes[4..8]
}

#[test]
fn each_guest_is_a_component_and_a_core_module() {
    for guest in [TRANSFER_CHECK, AUDIT] {
        assert_eq!(layer(guest.component), [0x0d, 0, 1, 0], "{}", guest.name);
        assert_eq!(layer(guest.module), [1, 0, 0, 0], "{}", guest.name);
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
        "bank:policy/transfer-check@0.2.0#check",
        "cabi_post_bank:policy/transfer-check@0.2.0#check",
        "bank:policy/metadata@0.2.0#describe",
    ] {
        assert!(check.iter().any(|e| e == name), "{name} not in {check:?}");
    }
    let audit = exports(AUDIT.module);
    for name in [
        "memory",
        "cabi_realloc",
        "bank:policy/audit@0.2.0#seal",
        "cabi_post_bank:policy/audit@0.2.0#seal",
    ] {
        assert!(audit.iter().any(|e| e == name), "{name} not in {audit:?}");
    }
}

/// The import modules of a core module, read by wasmtime.
fn import_modules(module: &[u8]) -> Vec<String> {
    let engine = wasmtime::Engine::default();
    let module = wasmtime::Module::new(&engine, module).unwrap();
    let mut modules: Vec<String> = module.imports().map(|i| i.module().to_string()).collect();
    modules.dedup();
    modules
}

/// The sealer hashes through the host (`bank:policy/digest`), both as a
/// component and as a core module; the `audit-seal` command, built from
/// the same record code, asks for WASI alone, as a stock WasmEdge gives.
#[test]
fn the_sealer_imports_the_host_digest_and_the_audit_seal_command_only_wasi() {
    let digest = "bank:policy/digest@0.2.0";
    let audit = import_modules(AUDIT.module);
    assert!(audit.iter().any(|m| m == digest), "{audit:?}");
    let engine = wasmtime::Engine::default();
    let component = wasmtime::component::Component::new(&engine, AUDIT.component).unwrap();
    let imports: Vec<String> = component
        .component_type()
        .imports(&engine)
        .map(|(name, _)| name.to_string())
        .collect();
    assert!(imports.iter().any(|i| i == digest), "{imports:?}");
    let command = import_modules(teller_policy_artifacts::AUDIT_SEAL_COMMAND.wasm);
    assert_eq!(command, ["wasi_snapshot_preview1"]);
}
