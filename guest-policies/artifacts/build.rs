//! Builds every guest policy twice from its one source: for `wasm32-wasip2`
//! (a component, for wasmtime) and for `wasm32-wasip1` (a core module that
//! keeps the canonical-ABI exports, for WasmEdge). The host embeds the
//! results; tests read them by path. No checked-in binaries, no manual step.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (file stem used by teller, cargo package, library name in the .wasm,
/// source directory in the workspace). The test guests are built here too
/// but only tests refer to them, so they never reach the teller binary. A
/// package without a library holds the function commands ([`COMMANDS`]).
const GUESTS: &[(&str, &str, &str, &str)] = &[
    (
        "transfer-check",
        "teller-transfer-check",
        "teller_transfer_check",
        "guest-policies/transfer-check",
    ),
    (
        "audit",
        "teller-audit",
        "teller_audit",
        "guest-policies/audit",
    ),
    ("rego", "teller-rego", "teller_rego", "guest-policies/rego"),
    ("commands", "teller-commands", "", "guest-policies/commands"),
    (
        "abi-echo",
        "teller-abi-echo",
        "teller_abi_echo",
        "tests/guests/abi-echo",
    ),
    (
        "hostile",
        "teller-hostile",
        "teller_hostile",
        "tests/guests/hostile",
    ),
    (
        "lying-sealer",
        "teller-lying-sealer",
        "teller_lying_sealer",
        "tests/guests/lying-sealer",
    ),
    (
        "clock-reader",
        "teller-clock-reader",
        "teller_clock_reader",
        "tests/guests/clock-reader",
    ),
];

const TARGETS: [&str; 2] = ["wasm32-wasip2", "wasm32-wasip1"];

/// The function commands: wasm32-wasip1 binaries of `teller-commands`.
const COMMANDS: [&str; 2] = ["transfer-check", "audit-seal"];

fn main() -> Result<(), String> {
    let manifest_dir = PathBuf::from(var("CARGO_MANIFEST_DIR")?);
    let guests_dir = manifest_dir
        .parent()
        .ok_or("artifacts crate has no parent directory")?;
    let workspace = guests_dir
        .parent()
        .ok_or("guest-policies has no parent directory")?;
    let out_dir = PathBuf::from(var("OUT_DIR")?);
    let target_dir = guest_target_dir(&out_dir);

    println!("cargo:rerun-if-changed={}", workspace.join("wit").display());
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("Cargo.lock").display()
    );
    for (_, _, _, dir) in GUESTS {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }

    let mut cargo = Command::new(var("CARGO")?);
    cargo
        .current_dir(workspace)
        .args(["build", "--release", "--quiet"])
        .args(TARGETS.iter().flat_map(|t| ["--target", t]))
        .args(
            GUESTS
                .iter()
                .flat_map(|(_, package, _, _)| ["--package", package]),
        )
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "s")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo")
        // Flags and wrappers meant for the host build (clippy, coverage,
        // native CPU tuning) must not leak into the wasm build.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_BUILD_TARGET");
    let status = cargo
        .status()
        .map_err(|e| format!("cannot run cargo to build the guest policies: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building the guest policies failed ({status}); if a target is missing, run \
             `rustup target add {}`",
            TARGETS.join(" ")
        ));
    }

    let mut code = String::new();
    for (stem, _, lib, _) in GUESTS.iter().filter(|g| !g.2.is_empty()) {
        let component = target_dir.join(format!("wasm32-wasip2/release/{lib}.wasm"));
        let module = target_dir.join(format!("wasm32-wasip1/release/{lib}.wasm"));
        for path in [&component, &module] {
            if !path.is_file() {
                return Err(format!(
                    "the guest build did not produce {}",
                    path.display()
                ));
            }
        }
        let konst = stem.to_uppercase().replace('-', "_");
        let _ = writeln!(
            code,
            "/// The `{stem}` guest policy.\npub const {konst}: Guest = Guest {{\n    \
             name: {stem:?},\n    component: include_bytes!({c:?}),\n    \
             component_path: {c:?},\n    module: include_bytes!({m:?}),\n    \
             module_path: {m:?},\n}};",
            c = component.display().to_string(),
            m = module.display().to_string(),
        );
    }
    for name in COMMANDS {
        let path = target_dir.join(format!("wasm32-wasip1/release/{name}.wasm"));
        if !path.is_file() {
            return Err(format!(
                "the guest build did not produce {}",
                path.display()
            ));
        }
        let konst = format!("{}_COMMAND", name.to_uppercase().replace('-', "_"));
        let _ = writeln!(
            code,
            "/// The `{name}` function as a wasm32-wasip1 command.\npub const {konst}: Command = Command {{\n    \
             name: {name:?},\n    wasm: include_bytes!({p:?}),\n    path: {p:?},\n}};",
            p = path.display().to_string(),
        );
    }
    std::fs::write(out_dir.join("artifacts.rs"), code)
        .map_err(|e| format!("cannot write artifacts.rs: {e}"))
}

/// One guest target directory for every host profile (`target/guests`), so a
/// release build, a test build and clippy share a single guest build.
fn guest_target_dir(out_dir: &Path) -> PathBuf {
    // OUT_DIR is <target>/<profile>/build/<crate>-<hash>/out.
    match out_dir.ancestors().nth(4) {
        Some(target)
            if out_dir
                .ancestors()
                .nth(2)
                .is_some_and(|b| b.ends_with("build")) =>
        {
            target.join("guests")
        }
        _ => out_dir.join("guests"),
    }
}

fn var(name: &str) -> Result<String, String> {
    env::var(name).map_err(|_| format!("cargo did not set {name}"))
}
