//! The engine boundary: load a guest policy, then call its typed functions
//! (wasmtime on a fresh instance per call, WasmEdge on pooled ones; a Rego
//! policy on instances that keep only its parsed text).
//!
//! The HTTP layer and the CLI only see these traits; which engine runs is a
//! start-up choice among the [`EngineKind`]s a binary [`register`]s (the
//! `teller` binary both engines, the node's shim WasmEdge only). Each engine
//! is a crate of its own that implements these traits.

#![forbid(unsafe_code)]

pub mod artifact;
pub mod cache;
pub mod state;

use crate::artifact::Artifact;
use std::sync::Arc;
use teller_contract::{
    AuditEvent, Decision, PolicyConfig, PolicyRef, SealedRecord, TransferRequest,
};
use teller_contract::{Error, ErrorCode};

/// A WebAssembly engine able to run teller's guest policies.
pub trait Engine: Send + Sync {
    /// The name reported in every response (`"wasmtime"`, `"wasmedge"`).
    fn name(&self) -> &'static str;

    /// Prepares a `transfer-check` guest for repeated calls.
    fn load_transfer_check(&self, artifact: &Artifact) -> Result<Arc<dyn TransferCheck>, Error>;

    /// Prepares an `audit` guest for repeated calls.
    fn load_audit(&self, artifact: &Artifact) -> Result<Arc<dyn AuditSealer>, Error>;
}

/// A loaded `bank:policy/transfer-check` guest.
pub trait TransferCheck: Send + Sync {
    /// Name, version and the SHA-256 of the exact artifact this engine runs.
    fn policy(&self) -> &PolicyRef;

    fn check(&self, config: &PolicyConfig, request: &TransferRequest) -> Result<Decision, Error>;
}

/// How a benchmark's calls get their instance (see [`Workload::Bench`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallMode {
    /// No state survives a call: wasmtime makes a new instance for every
    /// call, WasmEdge resets a kept one to its snapshot (a new instance for
    /// a guest that cannot be reset).
    Fresh,
    /// Keep instances across calls, each serving many.
    Warm,
}

/// What a Rego policy's runtime failure (an error in a rule, a rule of the
/// wrong type) becomes: a `guest_trap` that says why, digit runs masked, as
/// the policy may quote the transfer.
pub fn policy_failed(policy: &str, message: &str) -> Error {
    Error::guest(
        ErrorCode::GuestTrap,
        format!(
            "policy {policy} failed: {}",
            teller_contract::mask::digit_runs(message)
        ),
    )
}

/// A Rego policy's reference: the name it has in its directory, the version
/// it declares, and the digest of its text and data.
pub fn rego_policy_ref(
    artifact: &Artifact,
    meta: teller_contract::PolicyMetadata,
) -> Result<PolicyRef, Error> {
    let source = artifact.rego().ok_or_else(|| {
        Error::internal(
            ErrorCode::Internal,
            format!("{} is not a Rego policy", artifact.name),
        )
    })?;
    Ok(PolicyRef {
        name: artifact.name.clone(),
        version: meta.version,
        sha256: source.sha256.clone(),
    })
}

/// A Rego policy the guest refused to load: its message names the file,
/// line and column.
pub fn rego_load_failed(policy: &str, message: &str) -> Error {
    Error::bad_request(
        ErrorCode::PolicyInvalid,
        format!("Rego policy {policy}: {message}"),
    )
}

/// Whether a pool that keeps `idle` ready instances keeps one more: one per
/// caller that can be running at once (two per core), and some slack. The
/// core count is asked only once a pool holds the slack: finding it reads
/// the cgroup's files, which a one-shot `teller check` never needs.
pub fn pool_keeps(idle: usize) -> bool {
    const SLACK: usize = 8;
    static CAPACITY: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    idle < SLACK
        || idle
            < *CAPACITY.get_or_init(|| {
                std::thread::available_parallelism().map_or(4, |n| n.get()) * 2 + SLACK
            })
}

/// A failure while a Rego policy loaded (a timeout, the memory cap): its
/// code kept, the policy named.
pub fn rego_load_error(artifact_name: &str, e: Error) -> Error {
    Error {
        message: format!("Rego policy {artifact_name}, loading: {}", e.message),
        ..e
    }
}

/// Wall-clock time a Rego guest instance may take to parse its policy
/// (`source.load`), which is not a decision and may be slow on WasmEdge's
/// interpreter before the compiled code is in.
pub const LOAD_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Calls an instance kept across calls (WasmEdge's pooled instances; the
/// Rego guest's on every engine, whose parsed policy is its only state)
/// serves before it is reset to its snapshot (WasmEdge) or replaced by a
/// fresh one.
pub const MAX_CALLS_PER_INSTANCE: u32 = 10_000;

/// A loaded `bank:policy/audit` guest.
pub trait AuditSealer: Send + Sync {
    fn policy(&self) -> &PolicyRef;

    /// Seals `event` as record `seq` chained on `prev_hash`. A refusal by the
    /// guest (its `result::err`) is an error too.
    fn seal(&self, seq: u64, prev_hash: &str, event: &AuditEvent) -> Result<SealedRecord, Error>;
}

/// What the engine is set up for: a server trades start-up time for
/// cheaper instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// One decision, then exit (`teller check`): start fast.
    Once,
    /// Many decisions, concurrently: compiled code from the start
    /// (benchmarks, tests).
    Server,
    /// `teller serve` (a pod): as `Server`, but a guest not compiled yet
    /// may answer on an interpreter while it compiles (WasmEdge), so that
    /// the first answer does not wait for the compiler.
    Service,
    /// `teller bench call`: as `Server`, but compiled guests get their
    /// instances the way the [`CallMode`] says, whatever the engine does in
    /// production (wasmtime instantiates per call, WasmEdge keeps a pool),
    /// so that both ways are measured on each engine. Rego policies always
    /// keep theirs.
    Bench(CallMode),
}

/// Ready guest instances waiting in the engines' pools, process-wide: what
/// `teller_guest_instances_pooled` reports.
static POOLED: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

pub fn instances_pooled() -> i64 {
    POOLED.load(std::sync::atomic::Ordering::Relaxed)
}

/// For engines: `delta` instances entered (positive) or left (negative) a
/// pool.
pub fn count_pooled(delta: i64) {
    POOLED.fetch_add(delta, std::sync::atomic::Ordering::Relaxed);
}

/// What one call into a guest may use. Past a limit the call fails with
/// `guest_timeout`, `guest_memory_limit` or `guest_out_of_fuel`, the
/// instance is thrown away and the host goes on serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestLimits {
    /// Wall-clock time for one call.
    pub deadline: std::time::Duration,
    /// Linear memory one instance may grow to.
    pub memory_bytes: u64,
    /// Work one call may do, in the engine's units (wasmtime fuel, WasmEdge
    /// instruction cost); `None` is no budget but the deadline.
    pub fuel: Option<u64>,
}

impl GuestLimits {
    pub const DEFAULT_DEADLINE_MS: u64 = teller_contract::limits::DEADLINE_MS_DEFAULT;
    pub const DEFAULT_MEMORY_MIB: u64 = teller_contract::limits::MEMORY_MIB_DEFAULT;
    pub const WASM_PAGE: u64 = 64 * 1024;
}

impl Default for GuestLimits {
    fn default() -> Self {
        GuestLimits {
            deadline: std::time::Duration::from_millis(Self::DEFAULT_DEADLINE_MS),
            memory_bytes: Self::DEFAULT_MEMORY_MIB << 20,
            fuel: None,
        }
    }
}

/// Starts an engine with a cache, a workload, per-call limits and the state
/// its guests' `bank:policy/state` imports reach.
pub type StartEngine = fn(
    cache::ArtifactCache,
    Workload,
    GuestLimits,
    state::GuestState,
) -> Result<Box<dyn Engine>, Error>;

/// How a binary starts one engine it was built with.
#[derive(Debug, Clone, Copy)]
pub struct EngineKind {
    /// What `--engine` takes and every response reports (`"wasmedge"`).
    pub name: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
    pub start: StartEngine,
    /// Lets the engine's background work finish before the process exits.
    pub quiesce: fn(),
    /// Told once a server has set up its signal handling and is about to
    /// serve: work that only pays off over many calls starts here.
    pub serving: fn(),
    /// Opens the engine's native library, if it has one, without making an
    /// engine: what the cold-start benchmark measures teller against.
    pub load: fn() -> Result<(), String>,
    /// Starts opening that library on a thread of its own, so that a
    /// command's own start (its settings, its policies, the WIT) runs on
    /// the other core meanwhile; making the engine waits for it. Nothing
    /// for an engine linked in.
    pub open_early: fn(),
}

static REGISTERED: std::sync::OnceLock<&'static [EngineKind]> = std::sync::OnceLock::new();

/// Records the engines this binary has, the default first. The first call
/// wins: which engines a binary links is fixed for its whole life.
pub fn register(engines: &'static [EngineKind]) {
    let _ = REGISTERED.set(engines);
}

/// The engines this binary has, the default first (none before
/// [`register`]).
pub fn registered() -> &'static [EngineKind] {
    REGISTERED.get().copied().unwrap_or_default()
}

/// The default engine's name: the first registered.
pub fn default_name() -> &'static str {
    registered().first().map_or("none", |e| e.name)
}

/// Starts the registered engine called `name`.
pub fn by_name(
    name: &str,
    cache: cache::ArtifactCache,
    workload: Workload,
    limits: GuestLimits,
    state: state::GuestState,
) -> Result<Box<dyn Engine>, Error> {
    (kind(name)?.start)(cache, workload, limits, state)
}

/// The registered engine called `name`.
pub fn kind(name: &str) -> Result<&'static EngineKind, Error> {
    registered().iter().find(|e| e.name == name).ok_or_else(|| {
        let names: Vec<_> = registered().iter().map(|e| e.name).collect();
        Error::bad_request(
            ErrorCode::EngineInit,
            format!("no engine {name:?} in this build; it has {names:?}"),
        )
    })
}

/// Tells every engine that this process now serves (see
/// [`EngineKind::serving`]).
pub fn serving() {
    for kind in registered() {
        (kind.serving)();
    }
}

/// Lets every engine's background work finish before the process exits.
pub fn quiesce() {
    for kind in registered() {
        (kind.quiesce)();
    }
}

/// `bank:policy/digest`'s `sha256`, as both engines answer it: the digest
/// as four big-endian 64-bit words.
pub fn sha256_words(data: &[u8]) -> (u64, u64, u64, u64) {
    use sha2::{Digest, Sha256};
    let hash = Sha256::digest(data);
    let mut words = hash
        .chunks_exact(8)
        .map(|bytes| <[u8; 8]>::try_from(bytes).map_or(0, u64::from_be_bytes));
    let mut next = || words.next().unwrap_or_default();
    (next(), next(), next(), next())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_pool_keeps_two_instances_per_core_and_the_slack() {
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        let capacity = cores * 2 + 8;
        assert!(super::pool_keeps(0));
        assert!(super::pool_keeps(capacity - 1));
        assert!(!super::pool_keeps(capacity));
        assert!(!super::pool_keeps(capacity + 100));
    }
}
