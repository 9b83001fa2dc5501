//! teller's contract and vocabulary, defined once and shared by the host,
//! the guests, the function commands and the node's shim:
//!
//! - [`types`]: the WIT's `bank:policy/types`, owned by teller rather than
//!   by one engine's bindings, with the API names of verdicts and reasons;
//! - [`error`]: every error code, whose fault it is, and the error body;
//! - [`request`]: the transfer document (the bank's OPA input) and its
//!   decoding; [`mask`]: account-number masking;
//! - the limits every entry point applies alike.
//!
//! It builds for the host and for `wasm32-wasip1`/`wasm32-wasip2` alike, and
//! depends on no engine.

#![forbid(unsafe_code)]

pub mod error;
pub mod mask;
pub mod request;
pub mod types;

pub use error::{Error, ErrorCode, Kind};
pub use request::decode_transfer;
pub use types::*;

/// The WIT package every guest implements (`wit/bank-policy.wit`): the
/// host's canonical ABI reads it at start-up.
pub const WIT: &str = include_str!("../../../wit/bank-policy.wit");

/// Largest accepted amount: 2^63-1 minor units, the range every JSON and
/// Rego implementation the bank uses agrees on.
pub const MAX_AMOUNT: u64 = i64::MAX as u64;

/// The bank's limit, in minor units, when the configuration sets none.
pub const DEFAULT_AMOUNT_LIMIT: u64 = 1_000_000;

/// The roles allowed to transfer when the configuration sets none.
pub const DEFAULT_AUTHORIZED_ROLES: [&str; 1] = ["authorized"];

/// Largest request body (a transfer document, an audit event) read by the
/// HTTP API, `teller check` and the function commands.
pub const MAX_BODY: usize = 64 * 1024;

/// The README's example transfer: what a reloaded policy must decide before
/// it serves, and what the benchmarks send.
pub const EXAMPLE_REQUEST: &str = r#"{"action":"transfer","amount":250000,"currency":"CNY","from_account":"6222020200001234567","to_account":"6222020200007654321","user":{"id":"u-17","role":"authorized"},"audit":{"enabled":true},"approval":{"required":false},"request_id":"r-1"}"#;

/// Bounds of the per-call guest limits, checked by `teller serve`'s flags
/// and by the shim for a container's environment alike.
pub mod limits {
    /// `--guest-deadline-ms` when not given, and the most it may be.
    pub const DEADLINE_MS_DEFAULT: u64 = 100;
    pub const DEADLINE_MS_MAX: u64 = 60_000;
    /// `--guest-memory-mib` when not given, and the most it may be.
    pub const MEMORY_MIB_DEFAULT: u64 = 64;
    pub const MEMORY_MIB_MAX: u64 = 4096;
}
