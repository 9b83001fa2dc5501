//! The built-in guest policies, built by this crate's build script for both
//! targets from the sources in `guest-policies/`.

/// One guest policy built both ways from one source.
#[derive(Debug, Clone, Copy)]
pub struct Guest {
    /// The policy's file stem, such as `transfer-check`.
    pub name: &'static str,
    /// The `wasm32-wasip2` component (wasmtime).
    pub component: &'static [u8],
    pub component_path: &'static str,
    /// The `wasm32-wasip1` core module with canonical-ABI exports (WasmEdge).
    pub module: &'static [u8],
    pub module_path: &'static str,
}

/// A guest function built as a `wasm32-wasip1` command: JSON in on stdin,
/// JSON out on stdout, what a node's WasmEdge runs as a wasm container.
#[derive(Debug, Clone, Copy)]
pub struct Command {
    pub name: &'static str,
    pub wasm: &'static [u8],
    pub path: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));

/// Every function command.
pub const COMMANDS: [Command; 2] = [TRANSFER_CHECK_COMMAND, AUDIT_SEAL_COMMAND];

/// Every built-in guest that serves on its own (`REGO` serves a policy
/// directory's Rego files; `ABI_ECHO` is a test program, not built in).
pub const ALL: [Guest; 2] = [TRANSFER_CHECK, AUDIT];

/// The bank's own policy as its compliance team wrote it for OPA (Rego v0):
/// the built-in transfer check implements exactly these rules, and teller
/// serves the file itself from a policy directory.
pub const BANK_REGO: &str = include_str!("../../transfer-check/bank.rego");
