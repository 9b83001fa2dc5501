//! The WasmEdge 0.14.1 engine: runs each guest's `wasm32-wasip1` core module
//! and performs the canonical ABI itself ([`teller_abi`]), driven by the
//! same WIT the wasmtime engine's bindings come from.
//!
//! Modules are AOT-compiled by WasmEdge's LLVM compiler ("universal wasm"
//! output, with teller's deadline checks added first: [`instrument`]) into the
//! artifact cache. A WasmEdge instance must
//! not run two calls at once, and instantiating one costs far more than a
//! call, so each loaded guest keeps a pool of ready instances, one per
//! concurrent caller: a caller takes one, calls, and gives it back. An
//! instance whose call failed in any way is dropped, never reused, and every
//! instance is reset to the pool's snapshot ([`snapshot`]) after
//! [`MAX_CALLS_PER_INSTANCE`] calls, or retired if it cannot be.
//!
//! Limits: a watchdog thread stops a call at its deadline through the
//! guest's stop flag, or the executor's for a function command, which has
//! none ([`raw::StopHandle`]); the memory cap is WasmEdge's page limit;
//! the fuel budget is WasmEdge's cost limit, with the module compiled to
//! measure cost.

mod command;
mod compile;
mod ffi;
mod handlers;
mod instrument;
mod pool;
mod raw;
mod snapshot;
mod state;
mod watchdog;

pub use command::ValueGuest;
use compile::ModuleSlot;
pub use compile::quiesce;
use pool::Pool;
use raw::Config;
use std::sync::{Arc, Mutex, OnceLock};
use teller_abi::{AbiError, Contract, ExportFunc};
use teller_contract::{
    AuditEvent, Decision, Error, ErrorCode, PolicyConfig, PolicyMetadata, PolicyRef, SealedRecord,
    TransferRequest,
};
use teller_engine::artifact::Artifact;
use teller_engine::cache::ArtifactCache;
use teller_engine::{
    AuditSealer, CallMode, Engine, GuestLimits, TransferCheck, Workload, policy_failed,
    rego_load_error, rego_load_failed, rego_policy_ref,
};

/// The WasmEdge engine as a binary registers it.
pub const ENGINE: teller_engine::EngineKind = teller_engine::EngineKind {
    name: "wasmedge",
    about: "WasmEdge 0.14.1, running the guests' core modules through teller's canonical ABI (the production engine)",
    start: |cache, workload, limits, state| {
        Ok(Box::new(
            WasmEdgeEngine::new(cache, limits, state)?
                .tiered(workload == Workload::Service)
                .fresh(workload == Workload::Bench(CallMode::Fresh)),
        ))
    },
    quiesce,
    serving: handlers::start,
    load,
    open_early,
};

pub use teller_engine::MAX_CALLS_PER_INSTANCE;

/// Opens libwasmedge now rather than when the first engine is made: for a
/// process whose children run WasmEdge where its path is out of sight (the
/// shim's containers, inside their own root file system).
pub fn load() -> Result<(), String> {
    ffi::load()
}

/// Opens libwasmedge on a thread of its own. Opening it takes most of a
/// one-shot command's time (LLVM's relocations and constructors, about
/// 25 ms here), on one core. A failure is the engine's to report: making
/// it opens again and gets the same error. The thread counts as background
/// work, so a command that ends first waits for it before the process runs
/// the library's static destructors.
fn open_early() {
    let spawned = std::thread::Builder::new()
        .name("teller-open-wasmedge".into())
        .spawn(|| {
            if let Some(_running) = compile::BACKGROUND.start() {
                let _ = ffi::load();
            }
        });
    // Without the thread the engine opens the library itself, as before.
    drop(spawned);
}

pub struct WasmEdgeEngine {
    config: Arc<Config>,
    /// For loading bytes teller did not compile itself: a "universal wasm"
    /// module can carry native code, which must never run unchecked.
    interpreter: Arc<Config>,
    contract: Arc<Contract>,
    /// `bank:policy/state` and `bank:policy/digest`, linked into every
    /// instance (a guest imports what its world has).
    hosts: Arc<[Arc<raw::host::HostModule>]>,
    cache: ArtifactCache,
    version: String,
    limits: GuestLimits,
    /// Serve at once, interpreted, when a guest's compiled code is not
    /// cached, and switch to compiled code once it is built.
    tiered: bool,
    /// Fresh state for every call (`Workload::Bench(CallMode::Fresh)`).
    fresh: bool,
}

impl WasmEdgeEngine {
    pub fn new(
        cache: ArtifactCache,
        limits: GuestLimits,
        guest_state: teller_engine::state::GuestState,
    ) -> Result<Self, Error> {
        // The WIT first: it needs no library, and the library may still be
        // opening on another thread (`open_early`).
        let contract = Contract::bank_policy().map_err(|e| {
            Error::internal(ErrorCode::EngineInit, format!("the WIT contract: {e}"))
        })?;
        let contract = Arc::new(contract);
        ffi::load().map_err(|e| Error::internal(ErrorCode::EngineInit, e))?;
        raw::log_off();
        let config = |interpreter: bool| -> Result<Config, Error> {
            let mut config = Config::create().map_err(|e| init_error(&e))?;
            let pages =
                u32::try_from(limits.memory_bytes / GuestLimits::WASM_PAGE).map_err(|_| {
                    Error::internal(ErrorCode::EngineInit, "the memory cap is over 4 GiB")
                })?;
            config.set_max_memory_pages(pages);
            // The deadline's checks are teller's own (`instrument`): an atomic
            // load from a memory of their own, instead of WasmEdge's atomic
            // exchange at every loop and call.
            config.interruptible(false);
            config.add_proposal(ffi::WasmEdge_Proposal_Threads);
            config.add_proposal(ffi::WasmEdge_Proposal_MultiMemories);
            if limits.fuel.is_some() {
                // Compiled into the AOT code, so part of the cache key too.
                config.measure_cost(true);
            }
            config.compile_optimized_into_wasm();
            config.interpreter_mode(interpreter);
            Ok(config)
        };
        let engine = Self {
            config: Arc::new(config(false)?),
            interpreter: Arc::new(config(true)?),
            hosts: Arc::new([
                state::state_module(&contract, guest_state)?,
                state::digest_module(&contract)?,
            ]),
            contract,
            cache,
            version: raw::version(),
            limits,
            tiered: false,
            fresh: false,
        };
        handlers::arm(&engine);
        Ok(engine)
    }

    /// For a server (`teller serve`, a pod): a guest whose compiled code
    /// is not in the cache starts on WasmEdge's interpreter, ready in
    /// milliseconds, while a background thread compiles it (seconds, with
    /// LLVM at O3); new instances then use the compiled code. Without this,
    /// a new pod or a server with an empty cache waits for the compiler
    /// before its first answer.
    pub fn tiered(mut self, tiered: bool) -> Self {
        self.tiered = tiered;
        self
    }

    /// Fresh state for every call, for benchmarks (production keeps
    /// instances for many calls).
    pub fn fresh(mut self, fresh: bool) -> Self {
        self.fresh = fresh;
        self
    }

    /// The WasmEdge library's version, as loaded at run time.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The cache key of a module's compiled code: everything that changes
    /// the compiler's output is in it.
    fn key(&self, sha256: &str) -> String {
        format!(
            "wasmedge-{}-{sha256}-o3-{}-{}{}",
            self.version,
            cpu(),
            instrument::VERSION,
            if self.limits.fuel.is_some() {
                "-cost"
            } else {
                ""
            }
        )
    }
}

/// The CPU compiled code is for: WasmEdge compiles for the instructions of
/// the CPU it runs on, so a cache shared by nodes of different CPUs must
/// keep their code apart. A short digest of the kernel's `flags` line.
fn cpu() -> &'static str {
    static CPU: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CPU.get_or_init(|| {
        let flags = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("flags"))
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let digest = teller_engine::artifact::sha256_hex(flags.as_bytes());
        format!("cpu{}", digest.get(..12).unwrap_or_default())
    })
}

impl WasmEdgeEngine {
    /// An engine with default limits, no state and its cache in `dir`,
    /// for this crate's tests.
    #[cfg(test)]
    fn for_tests(dir: &std::path::Path) -> Self {
        let engine = ArtifactCache::at(dir).and_then(|cache| {
            Self::new(
                cache,
                GuestLimits::default(),
                teller_engine::state::GuestState::none(),
            )
        });
        match engine {
            Ok(engine) => engine,
            Err(e) => unreachable!("WasmEdge does not start: {e}"),
        }
    }

    /// AOT-compiles a core module as it is, or takes it from the cache.
    #[cfg(test)]
    fn module(&self, name: &str, wasm: &[u8]) -> Result<(Arc<raw::AstModule>, String), Error> {
        let sha256 = teller_engine::artifact::sha256_hex(wasm);
        let key = self.key(&sha256);
        let module = compile::compiled(&self.config, &self.cache, &key, name, wasm)?;
        Ok((Arc::new(module), sha256))
    }

    fn pool(&self, artifact: &Artifact) -> Result<(Pool, String), Error> {
        self.pool_for(&artifact.name, &artifact.module()?, self.contract.clone())
    }

    fn pool_for(
        &self,
        name: &str,
        wasm: &[u8],
        contract: Arc<Contract>,
    ) -> Result<(Pool, String), Error> {
        let (module, sha256) = self.module_slot(name, wasm)?;
        let pool = Pool {
            config: self.config.clone(),
            contract,
            module,
            limits: self.limits,
            hosts: self.hosts.clone(),
            idle: Mutex::new(Vec::new()),
            init: None,
            snapshot: OnceLock::new(),
        };
        // Instantiate one now: a module that cannot be instantiated fails at
        // start-up, not on the first request.
        let first = pool.instantiate_anew().map_err(|e| Error {
            code: ErrorCode::PolicyInvalid,
            message: format!("policy {name} cannot be instantiated: {}", e.message),
            ..e
        })?;
        pool.give_back(first);
        Ok((pool, sha256))
    }

    fn policy_ref(pool: &Pool, sha256: String) -> Result<PolicyRef, Error> {
        let describe = pool.export("metadata", "describe")?;
        let meta: PolicyMetadata = pool.call(&describe, &[])?;
        Ok(PolicyRef {
            name: meta.name,
            version: meta.version,
            sha256,
        })
    }
}

impl Engine for WasmEdgeEngine {
    fn name(&self) -> &'static str {
        "wasmedge"
    }

    fn load_transfer_check(&self, artifact: &Artifact) -> Result<Arc<dyn TransferCheck>, Error> {
        if artifact.rego().is_some() {
            return Ok(Arc::new(self.load_rego(artifact)?));
        }
        let (pool, sha256) = self.pool(artifact)?;
        Ok(Arc::new(WasmEdgeTransferCheck {
            policy: Self::policy_ref(&pool, sha256)?,
            check: pool.export("transfer-check", "check")?,
            pool,
            fresh: self.fresh,
        }))
    }

    fn load_audit(&self, artifact: &Artifact) -> Result<Arc<dyn AuditSealer>, Error> {
        let (pool, sha256) = self.pool(artifact)?;
        Ok(Arc::new(WasmEdgeAuditSealer {
            policy: Self::policy_ref(&pool, sha256)?,
            seal: pool.export("audit", "seal")?,
            pool,
        }))
    }
}

impl WasmEdgeEngine {
    /// The Rego guest with `artifact`'s policy loaded into every instance
    /// the pool makes; the first is made now, so that a policy that does not
    /// parse stops start-up (or a reload) with its file, line and column.
    fn load_rego(&self, artifact: &Artifact) -> Result<WasmEdgeRegoCheck, Error> {
        let source = artifact
            .rego()
            .ok_or_else(|| Error::internal(ErrorCode::Internal, "not a Rego policy"))?;
        let (module, _) = self.module_slot("rego", &artifact.module()?)?;
        let mut pool = Pool {
            config: self.config.clone(),
            contract: self.contract.clone(),
            module,
            limits: self.limits,
            hosts: self.hosts.clone(),
            idle: Mutex::new(Vec::new()),
            init: None,
            snapshot: OnceLock::new(),
        };
        let load = pool.export("source", "load")?;
        let args = vec![
            pool.arg(&load, 0, source.file.as_str())?,
            pool.arg(&load, 1, source.text.as_str())?,
            pool.arg(&load, 2, source.data.as_str())?,
        ];
        let value = pool
            .instantiate_anew()
            .and_then(|mut guest| {
                let deadline = teller_engine::LOAD_DEADLINE.max(self.limits.deadline);
                let value = guest.invoke_within(&pool.contract, &load, &args, deadline)?;
                Ok((guest, value))
            })
            .map_err(|e| rego_load_error(&artifact.name, e))?;
        let (mut first, value) = value;
        let meta: Result<PolicyMetadata, String> = pool.lift_result(&load, value)?;
        let meta = meta.map_err(|message| rego_load_failed(&artifact.name, &message))?;
        first.calls = 0;
        pool.init = Some((load, args));
        pool.give_back(first);
        Ok(WasmEdgeRegoCheck {
            policy: rego_policy_ref(artifact, meta)?,
            name: artifact.name.clone(),
            check: pool.export("source", "check")?,
            pool,
        })
    }
}

/// A Rego policy on WasmEdge: pooled instances, each with the policy loaded
/// once when it is made.
struct WasmEdgeRegoCheck {
    policy: PolicyRef,
    name: String,
    check: ExportFunc,
    pool: Pool,
}

impl WasmEdgeRegoCheck {
    fn answer(&self, answer: Result<Decision, String>) -> Result<Decision, Error> {
        answer.map_err(|message| policy_failed(&self.name, &message))
    }
}

impl TransferCheck for WasmEdgeRegoCheck {
    fn policy(&self) -> &PolicyRef {
        &self.policy
    }

    fn check(&self, config: &PolicyConfig, request: &TransferRequest) -> Result<Decision, Error> {
        let args = [
            self.pool.arg(&self.check, 0, config)?,
            self.pool.arg(&self.check, 1, request)?,
        ];
        self.answer(self.pool.call(&self.check, &args)?)
    }
}

struct WasmEdgeTransferCheck {
    policy: PolicyRef,
    check: ExportFunc,
    pool: Pool,
    /// `teller bench call`'s fresh series: every call on fresh state, an
    /// instance reset to the pool's snapshot (or a new one).
    fresh: bool,
}

impl TransferCheck for WasmEdgeTransferCheck {
    fn policy(&self) -> &PolicyRef {
        &self.policy
    }

    fn check(&self, config: &PolicyConfig, request: &TransferRequest) -> Result<Decision, Error> {
        let args = [
            self.pool.arg(&self.check, 0, config)?,
            self.pool.arg(&self.check, 1, request)?,
        ];
        if self.fresh {
            let value = self.pool.call_fresh(&self.check, &args)?;
            return self.pool.lift_result(&self.check, value);
        }
        self.pool.call(&self.check, &args)
    }
}

struct WasmEdgeAuditSealer {
    policy: PolicyRef,
    seal: ExportFunc,
    pool: Pool,
}

impl AuditSealer for WasmEdgeAuditSealer {
    fn policy(&self) -> &PolicyRef {
        &self.policy
    }

    fn seal(&self, seq: u64, prev_hash: &str, event: &AuditEvent) -> Result<SealedRecord, Error> {
        let args = [
            self.pool.arg(&self.seal, 0, &seq)?,
            self.pool.arg(&self.seal, 1, prev_hash)?,
            self.pool.arg(&self.seal, 2, event)?,
        ];
        let sealed: Result<SealedRecord, String> = self.pool.call(&self.seal, &args)?;
        sealed.map_err(|refusal| Error::guest(ErrorCode::GuestRefused, refusal))
    }
}

pub(crate) fn bad_output(e: AbiError) -> Error {
    Error::guest(
        ErrorCode::GuestBadOutput,
        format!("the guest broke the canonical ABI: {e}"),
    )
}

fn init_error(e: &raw::RawError) -> Error {
    Error::internal(ErrorCode::EngineInit, format!("cannot start WasmEdge: {e}"))
}
