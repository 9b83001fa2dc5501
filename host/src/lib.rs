//! teller: a bank's compliance functions as sandboxed WebAssembly.
//!
//! - [`wit`]: types generated from the `bank:policy` contract;
//! - [`engine`]: the `Engine` trait and its implementations;
//! - [`service`]: decide a transfer, record an event (transport-neutral);
//! - [`api`]: the HTTP server; [`audit`]: the hash-chained log;
//! - [`request`], [`config`], [`policy`], [`error`]: inputs and errors;
//! - [`oci`]: the policies as an OCI image (`teller package`);
//! - [`cli`]: the `teller` command line.

pub mod abi;
pub mod api;
pub mod audit;
pub mod bench;
pub mod cli;
pub mod config;
pub mod engine;
pub mod error;
pub mod log;
pub mod metrics;
pub mod oci;
pub mod policy;
pub mod request;
pub mod service;
pub mod wit;
pub mod workers;
