//! Rust types and bindings generated from `wit/`, the one contract.
//!
//! Both engines speak these types: wasmtime through the generated bindings,
//! WasmEdge through teller's canonical ABI driven by the same WIT.

#![allow(unsafe_code, clippy::all)]

/// Bindings for guests of the `transfer-check-policy` world.
pub mod transfer_check {
    wasmtime::component::bindgen!({
        world: "transfer-check-policy",
        path: "../wit",
        // Lets the WasmEdge engine move these types through its
        // WIT-driven canonical ABI (`crate::abi::bridge`).
        additional_derives: [serde::Serialize, serde::Deserialize],
    });
}

/// Bindings for guests of the `audit-sealer` world.
pub mod audit {
    wasmtime::component::bindgen!({
        world: "audit-sealer",
        path: "../wit",
        with: { "bank:policy/types": super::transfer_check::bank::policy::types },
        additional_derives: [serde::Serialize, serde::Deserialize],
    });
}

pub use transfer_check::bank::policy::types::*;
