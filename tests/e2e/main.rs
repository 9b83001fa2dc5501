//! End-to-end tests: the real `teller` binary, real guests built from
//! `guest-policies/`, real HTTP over loopback, real files.
//!
//! One test binary with modules, as wasmtime does, to keep link time down.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[cfg(feature = "wasmedge")]
mod abi;
mod artifacts;
mod audit;
mod audit_keys;
mod authoring;
mod bad_input;
mod bench;
mod cli;
#[cfg(feature = "wasmedge")]
mod commands;
mod containment;
#[cfg(feature = "wasmedge")]
mod differential;
mod ha;
mod kubernetes;
mod logs;
mod metrics;
mod oci;
mod oracle;
mod rego;
mod rego_bad;
mod reload;
mod rules;
mod settings;
mod setup;
#[cfg(feature = "wasmedge")]
mod shim;
mod state;
mod support;
