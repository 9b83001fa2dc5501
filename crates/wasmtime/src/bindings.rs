//! Bindings generated from `wit/` for wasmtime's component linker. The
//! WIT's types are teller's own (`teller_contract`, with wasmtime's
//! component traits derived), so a call takes and returns them as they are:
//! nothing is copied between two sets of types.

#![allow(unsafe_code, clippy::all)]

/// The bindings as generated, for the linker glue of `bank:policy/types`
/// (an interface with types only), which [`types`] reuses.
mod generated {
    wasmtime::component::bindgen!({
        world: "transfer-check-policy",
        path: "../../wit",
    });
}

/// `bank:policy/types` as the worlds below see it: teller's types and the
/// generated linker glue.
pub mod types {
    pub use super::generated::bank::policy::types::{Host, HostWithStore, add_to_linker};
    pub use teller_contract::types::*;
}

/// Bindings for guests of the `transfer-check-policy` world. Its state
/// imports may trap: a store that cannot answer ends the call.
pub mod transfer_check {
    wasmtime::component::bindgen!({
        world: "transfer-check-policy",
        path: "../../wit",
        with: { "bank:policy/types": super::types },
        imports: { default: trappable },
    });
}

/// `bank:policy/state`, which the host provides to every world that imports
/// it: one `Host` trait, one `add_to_linker`.
pub use transfer_check::bank::policy::state;

/// Bindings for guests of the `audit-sealer` world.
pub mod audit {
    wasmtime::component::bindgen!({
        world: "audit-sealer",
        path: "../../wit",
        with: { "bank:policy/types": super::types },
    });
}

/// `bank:policy/digest`, which the host provides to the audit sealer.
pub use audit::bank::policy::digest;

/// Bindings for guests of the `source-policy` world (the Rego guest).
pub mod source {
    wasmtime::component::bindgen!({
        world: "source-policy",
        path: "../../wit",
        with: { "bank:policy/types": super::types, "bank:policy/state": super::state },
    });
}
