//! The WasmEdge 0.14.1 engine: runs each guest's `wasm32-wasip1` core module
//! and performs the canonical ABI itself ([`crate::abi`]), driven by the
//! same WIT the wasmtime engine's bindings come from.
//!
//! Modules are AOT-compiled by WasmEdge's LLVM compiler (interruptible code,
//! "universal wasm" output) into the artifact cache. A WasmEdge instance must
//! not run two calls at once, and instantiating one costs far more than a
//! call, so each loaded guest keeps a pool of ready instances, one per
//! concurrent caller: a caller takes one, calls, and gives it back. An
//! instance whose call failed in any way is dropped, never reused, and every
//! instance is retired after [`MAX_CALLS_PER_INSTANCE`] calls.
//!
//! Limits: a watchdog thread stops a call at its deadline through the
//! executor's stop flag ([`raw`]); the memory cap is WasmEdge's page limit;
//! the fuel budget is WasmEdge's cost limit, with the module compiled to
//! measure cost.

mod raw;
mod watchdog;

use super::cache::ArtifactCache;
use super::{AuditSealer, CallMode, Caller, Engine, GuestLimits, TransferCheck};
use crate::abi::bridge::{from_value, to_value};
use crate::abi::lift::Lifter;
use crate::abi::lower::{GuestAlloc, Lowerer};
use crate::abi::{AbiError, Contract, ExportFunc, Flat, Value};
use crate::error::Error;
use crate::policy::{Artifact, sha256_hex};
use crate::wit::{
    AuditEvent, Decision, PolicyConfig, PolicyMetadata, PolicyRef, SealedRecord, TransferRequest,
};
use raw::{AstModule, RawError, Val};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::{Arc, Mutex};
use wasmedge_sdk::error::WasmEdgeError;
use wasmedge_sdk::{CompilerOptimizationLevel, CompilerOutputFormat};
use wasmedge_sys::Config;
use watchdog::Watchdog;

/// Calls an instance serves before it is replaced by a fresh one.
pub const MAX_CALLS_PER_INSTANCE: u32 = 10_000;

pub struct WasmEdgeEngine {
    config: Arc<Config>,
    /// For loading bytes teller did not compile itself: a "universal wasm"
    /// module can carry native code, which must never run unchecked.
    interpreter: Arc<Config>,
    contract: Arc<Contract>,
    cache: ArtifactCache,
    version: String,
    limits: GuestLimits,
    /// Serve at once, interpreted, when a guest's compiled code is not
    /// cached, and switch to compiled code once it is built.
    tiered: bool,
}

impl WasmEdgeEngine {
    pub fn new(cache: ArtifactCache, limits: GuestLimits) -> Result<Self, Error> {
        // WasmEdge logs every trap to stderr; teller reports them itself.
        wasmedge_sdk::LogManager::log_off();
        let config = |interpreter: bool| -> Result<Config, Error> {
            let mut config = Config::create().map_err(|e| init_error(&e))?;
            let pages = u32::try_from(limits.memory_bytes / GuestLimits::WASM_PAGE)
                .map_err(|_| Error::internal("engine_init", "the memory cap is over 4 GiB"))?;
            config.set_max_memory_pages(pages);
            config.interruptible(true);
            if limits.fuel.is_some() {
                // Compiled into the AOT code, so part of the cache key too.
                config.measure_cost(true);
            }
            config.set_aot_optimization_level(CompilerOptimizationLevel::O3);
            config.set_aot_compiler_output_format(CompilerOutputFormat::Wasm);
            config.interpreter_mode(interpreter);
            Ok(config)
        };
        let contract = Contract::bank_policy()
            .map_err(|e| Error::internal("engine_init", format!("the WIT contract: {e}")))?;
        Ok(Self {
            config: Arc::new(config(false)?),
            interpreter: Arc::new(config(true)?),
            contract: Arc::new(contract),
            cache,
            version: wasmedge_sys::utils::version_string(),
            limits,
            tiered: false,
        })
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

    /// The WasmEdge library's version, as loaded at run time.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The cache key of a module's compiled code: everything that changes
    /// the compiler's output is in it.
    fn key(&self, sha256: &str) -> String {
        format!(
            "wasmedge-{}-{sha256}-o3-interruptible{}",
            self.version,
            if self.limits.fuel.is_some() {
                "-cost"
            } else {
                ""
            }
        )
    }

    /// AOT-compiles a core module, or takes it from the cache.
    fn module(&self, name: &str, wasm: &[u8]) -> Result<(Arc<AstModule>, String), Error> {
        let sha256 = sha256_hex(wasm);
        let compiled = self
            .cache
            .get_or_build(&self.key(&sha256), || compile(&self.config, name, wasm))?;
        Ok((Arc::new(load(&self.config, name, &compiled)?), sha256))
    }

    /// The module's slot: its compiled code if cached (or not tiered),
    /// else the interpreted module now and the compiled one when built.
    fn module_slot(&self, name: &str, wasm: &[u8]) -> Result<(ModuleSlot, String), Error> {
        let sha256 = sha256_hex(wasm);
        let key = self.key(&sha256);
        if let Some(compiled) = self.cache.get(&key) {
            let module = Arc::new(load(&self.config, name, &compiled)?);
            return Ok((Arc::new(std::sync::RwLock::new(module)), sha256));
        }
        if !self.tiered {
            let (module, sha256) = self.module(name, wasm)?;
            return Ok((Arc::new(std::sync::RwLock::new(module)), sha256));
        }
        let slot: ModuleSlot = Arc::new(std::sync::RwLock::new(Arc::new(load(
            &self.interpreter,
            name,
            wasm,
        )?)));
        let (config, cache, weak) = (
            self.config.clone(),
            self.cache.clone(),
            Arc::downgrade(&slot),
        );
        let (name, wasm) = (name.to_string(), wasm.to_vec());
        let measure_cost = self.limits.fuel.is_some();
        let spawned = std::thread::Builder::new()
            .name(format!("compile {name}"))
            .spawn(move || {
                let Some(_running) = BACKGROUND.start() else {
                    return;
                };
                if weak.strong_count() == 0 {
                    return; // replaced (a reload) while waiting its turn
                }
                let started = std::time::Instant::now();
                let compiled = cache
                    .get_or_build(&key, || compile(&config, &name, &wasm))
                    .and_then(|code| load(&config, &name, &code))
                    .and_then(|module| {
                        // Only a module that instantiates replaces one that does.
                        raw::Instance::new(&config, &module, measure_cost, raw::Wasi::Shim)
                            .map(|_| module)
                            .map_err(|e| {
                                Error::internal(
                                    "policy_invalid",
                                    format!("cannot instantiate: {e}"),
                                )
                            })
                    });
                match (compiled, weak.upgrade()) {
                    (Ok(module), Some(slot)) => {
                        *slot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(module);
                        tracing::info!(
                            policy = %name,
                            ms = started.elapsed().as_millis() as u64,
                            "compiled: new instances run native code instead of the interpreter"
                        );
                    }
                    (Ok(_), None) => {}
                    (Err(e), _) => tracing::error!(
                        policy = %name,
                        "cannot compile, so it stays interpreted: {e}"
                    ),
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the compiler thread, so the guest stays interpreted: {e}");
        }
        Ok((slot, sha256))
    }

    fn pool(&self, artifact: &Artifact) -> Result<(Pool, String), Error> {
        self.pool_for(artifact.name, &artifact.module()?, self.contract.clone())
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
            idle: Mutex::new(Vec::new()),
            capacity: std::thread::available_parallelism().map_or(4, |n| n.get()) * 2 + 8,
        };
        // Instantiate one now: a module that cannot be instantiated fails at
        // start-up, not on the first request.
        let first = pool.instantiate().map_err(|e| Error {
            code: "policy_invalid",
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

/// A `wasm32-wasip1` command run as a container's process (the node's
/// shim runs function images this way): WasmEdge's WASI with the given
/// arguments and environment on the process's own stdin, stdout and stderr.
/// The engine's memory cap and fuel budget apply; the deadline does not, because a
/// command's time also covers waiting for its input: a container's
/// wall-clock limit is its orchestrator's (`activeDeadlineSeconds`).
///
/// A command runs once, so it is interpreted, not AOT-compiled: WasmEdge's
/// interpreter loads it in milliseconds, and LLVM would take far longer to
/// compile it than the interpreter takes to decide.
impl WasmEdgeEngine {
    /// Runs `_start` and returns the exit code the command gave
    /// `proc_exit`, or 0 if it returned. A trap or a broken limit is an
    /// error.
    pub fn run_command(
        &self,
        name: &str,
        wasm: &[u8],
        args: &[String],
        envs: &[String],
    ) -> Result<u32, Error> {
        let module = Arc::new(load(&self.interpreter, name, wasm)?);
        let wasi = raw::Wasi::Command { args, envs };
        let raw = raw::Instance::new(&self.config, &module, self.limits.fuel.is_some(), wasi)
            .map_err(|e| {
                Error::internal(
                    "policy_invalid",
                    format!("command {name} cannot be instantiated: {e}"),
                )
            })?;
        let mut guest = GuestInstance {
            raw,
            module,
            limits: self.limits,
            calls: 1,
            stopped: false,
            failure: None,
        };
        if let Some(fuel) = self.limits.fuel {
            guest.raw.set_cost_limit(fuel);
        }
        // WasmEdge ends a call that reached `proc_exit` either way,
        // depending on where it was; the code is kept in the WASI module.
        match guest.raw.call("_start", &[]) {
            Ok(_) => Ok(guest.raw.exit_code()),
            Err(e) if e.code == raw::TERMINATED => Ok(guest.raw.exit_code()),
            Err(e) => Err(guest.classify(&e, name)),
        }
    }
}

/// Any core module built from any WIT, called with [`Value`]s: for tests
/// and tools that exercise the canonical ABI beyond teller's own guests.
pub struct ValueGuest {
    pool: Pool,
}

impl WasmEdgeEngine {
    pub fn load_values(&self, wasm: &[u8], contract: Arc<Contract>) -> Result<ValueGuest, Error> {
        Ok(ValueGuest {
            pool: self.pool_for("module", wasm, contract)?.0,
        })
    }
}

impl ValueGuest {
    pub fn call(&self, func: &ExportFunc, args: &[Value]) -> Result<Option<Value>, Error> {
        self.pool.call_values(func, args)
    }
}

impl Engine for WasmEdgeEngine {
    fn name(&self) -> &'static str {
        "wasmedge"
    }

    fn load_transfer_check(&self, artifact: &Artifact) -> Result<Arc<dyn TransferCheck>, Error> {
        let (pool, sha256) = self.pool(artifact)?;
        Ok(Arc::new(WasmEdgeTransferCheck {
            policy: Self::policy_ref(&pool, sha256)?,
            check: pool.export("transfer-check", "check")?,
            pool,
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

struct WasmEdgeTransferCheck {
    policy: PolicyRef,
    check: ExportFunc,
    pool: Pool,
}

impl TransferCheck for WasmEdgeTransferCheck {
    fn policy(&self) -> &PolicyRef {
        &self.policy
    }

    fn instances_pooled(&self) -> usize {
        self.pool.idle.lock().map_or(0, |idle| idle.len())
    }

    fn check(&self, config: &PolicyConfig, request: &TransferRequest) -> Result<Decision, Error> {
        let args = [
            self.pool.arg(&self.check, 0, config)?,
            self.pool.arg(&self.check, 1, request)?,
        ];
        self.pool.call(&self.check, &args)
    }

    fn caller(&self, mode: CallMode) -> Result<Caller<'_>, Error> {
        let mut warm = match mode {
            CallMode::Warm => Some(self.pool.instantiate()?),
            CallMode::Fresh => None,
        };
        Ok(Box::new(move |config, request| {
            let args = [
                self.pool.arg(&self.check, 0, config)?,
                self.pool.arg(&self.check, 1, request)?,
            ];
            let value = match &mut warm {
                Some(guest) => guest.invoke(&self.pool.contract, &self.check, &args)?,
                None => self
                    .pool
                    .instantiate()?
                    .invoke(&self.pool.contract, &self.check, &args)?,
            };
            self.pool.lift_result(&self.check, value)
        }))
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
        sealed.map_err(|refusal| Error::guest("guest_refused", refusal))
    }
}

/// Ready instances of one module.
struct Pool {
    config: Arc<Config>,
    contract: Arc<Contract>,
    module: ModuleSlot,
    limits: GuestLimits,
    idle: Mutex<Vec<GuestInstance>>,
    capacity: usize,
}

impl Pool {
    fn export(&self, interface: &str, func: &str) -> Result<ExportFunc, Error> {
        self.contract
            .export(interface, func)
            .map_err(|e| Error::internal("policy_invalid", e.to_string()))
    }

    /// Argument `index` of `func`, as a [`Value`] of its WIT type.
    fn arg<T: Serialize + ?Sized>(
        &self,
        func: &ExportFunc,
        index: usize,
        v: &T,
    ) -> Result<Value, Error> {
        let ty = func.params.get(index).ok_or_else(|| {
            Error::internal(
                "internal",
                format!("{} has no parameter {index}", func.name),
            )
        })?;
        to_value(&self.contract, ty, v)
            .map_err(|e| Error::internal("internal", format!("{}: {e}", func.name)))
    }

    /// Calls `func` on a ready instance.
    fn call_values(&self, func: &ExportFunc, args: &[Value]) -> Result<Option<Value>, Error> {
        let mut guest = match self.take() {
            Some(guest) => guest,
            None => self.instantiate()?,
        };
        let value = guest.invoke(&self.contract, func, args)?;
        self.give_back(guest);
        Ok(value)
    }

    /// Calls `func` and converts its result to `R`.
    fn call<R: DeserializeOwned>(&self, func: &ExportFunc, args: &[Value]) -> Result<R, Error> {
        let value = self.call_values(func, args)?;
        self.lift_result(func, value)
    }

    /// `func`'s result as the Rust type `R`.
    fn lift_result<R: DeserializeOwned>(
        &self,
        func: &ExportFunc,
        value: Option<Value>,
    ) -> Result<R, Error> {
        let ty = func
            .result
            .as_ref()
            .ok_or_else(|| Error::internal("internal", format!("{} returns nothing", func.name)))?;
        let value = value.ok_or_else(|| bad_output(AbiError("no result".into())))?;
        from_value(&self.contract, ty, value).map_err(bad_output)
    }

    fn take(&self) -> Option<GuestInstance> {
        let current = self.current();
        let mut idle = self.idle.lock().ok()?;
        // Instances of a replaced (interpreted) module are dropped.
        idle.retain(|guest| Arc::ptr_eq(&guest.module, &current));
        idle.pop()
    }

    /// The module new instances are made from.
    fn current(&self) -> Arc<AstModule> {
        self.module
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn give_back(&self, guest: GuestInstance) {
        if guest.calls >= MAX_CALLS_PER_INSTANCE
            || guest.stopped
            || !Arc::ptr_eq(&guest.module, &self.current())
        {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.capacity
        {
            idle.push(guest);
        }
    }

    fn instantiate(&self) -> Result<GuestInstance, Error> {
        let module = self.current();
        let raw = raw::Instance::new(
            &self.config,
            &module,
            self.limits.fuel.is_some(),
            raw::Wasi::Shim,
        )
        .map_err(|e| Error::guest("guest_trap", format!("cannot instantiate: {e}")))?;
        Ok(GuestInstance {
            raw,
            module,
            limits: self.limits,
            calls: 0,
            stopped: false,
            failure: None,
        })
    }
}

/// One instantiated module, its limits, and how it has been used.
struct GuestInstance {
    raw: raw::Instance,
    /// What it was instantiated from, kept alive as long as it is.
    module: Arc<AstModule>,
    limits: GuestLimits,
    calls: u32,
    /// The watchdog stopped a call: the stop flag may still be set, so the
    /// instance must not be reused.
    stopped: bool,
    /// Why the last core call failed, kept while the canonical-ABI code
    /// (which only sees `AbiError`s) unwinds.
    failure: Option<Error>,
}

impl GuestInstance {
    /// The canonical-ABI call: lower, call, lift, post-return, all within
    /// one deadline and one fuel budget.
    fn invoke(
        &mut self,
        contract: &Contract,
        func: &ExportFunc,
        args: &[Value],
    ) -> Result<Option<Value>, Error> {
        self.calls += 1;
        self.failure = None;
        if let Some(fuel) = self.limits.fuel {
            self.raw.set_cost_limit(fuel);
        }
        let watchdog = Watchdog::get();
        let armed = watchdog.arm(self.limits.deadline, self.raw.stop_handle());
        let result = self.invoke_within_limits(contract, func, args);
        if watchdog.disarm(armed) {
            self.stopped = true;
        }
        result.map_err(|e| self.failure.take().unwrap_or(e))
    }

    fn invoke_within_limits(
        &mut self,
        contract: &Contract,
        func: &ExportFunc,
        args: &[Value],
    ) -> Result<Option<Value>, Error> {
        let flat = Lowerer::new(contract, self)
            .params(func, args)
            .map_err(bad_output)?;
        let results = self.call_core(&func.name, &flat)?;
        let value = {
            let memory = self.memory()?;
            Lifter::new(contract, memory)
                .results(func, &results)
                .map_err(bad_output)?
        };
        if func.result.is_some() && self.raw.has_func(&func.post_return) {
            self.call_core(&func.post_return, &results)?;
        }
        Ok(value)
    }

    fn call_core(&mut self, name: &str, args: &[Flat]) -> Result<Vec<Flat>, Error> {
        let params: Vec<Val> = args
            .iter()
            .map(|a| match *a {
                Flat::I32(v) => Val::I32(v),
                Flat::I64(v) => Val::I64(v),
                Flat::F32(v) => Val::F32(v),
                Flat::F64(v) => Val::F64(v),
            })
            .collect();
        let results = self.raw.call(name, &params).map_err(|e| {
            let error = self.classify(&e, name);
            self.failure = Some(error.clone());
            error
        })?;
        Ok(results
            .into_iter()
            .map(|v| match v {
                Val::I32(v) => Flat::I32(v),
                Val::I64(v) => Flat::I64(v),
                Val::F32(v) => Flat::F32(v),
                Val::F64(v) => Flat::F64(v),
            })
            .collect())
    }

    /// Sorts a failed core call into the guest error codes clients see.
    fn classify(&self, e: &RawError, what: &str) -> Error {
        match e.code {
            raw::INTERRUPTED => Error::guest(
                "guest_timeout",
                format!(
                    "the guest ran past its {} ms deadline",
                    self.limits.deadline.as_millis()
                ),
            ),
            raw::COST_LIMIT_EXCEEDED => Error::guest(
                "guest_out_of_fuel",
                format!(
                    "the guest used up its fuel ({})",
                    self.limits.fuel.unwrap_or_default()
                ),
            ),
            0 => Error::guest("guest_bad_output", format!("{what}: {e}")),
            raw::PROC_EXIT => {
                Error::guest("guest_trap", format!("{what}: the guest called proc_exit"))
            }
            _ => {
                // WasmEdge does not say that a trap followed a refused
                // memory.grow (an allocator giving up); a trap with memory
                // past half the cap is reported as that.
                let used = u64::from(self.raw.memory_pages().unwrap_or(0)) * GuestLimits::WASM_PAGE;
                if used > self.limits.memory_bytes / 2 {
                    Error::guest(
                        "guest_memory_limit",
                        format!(
                            "the guest trapped with {} of its {} MiB of memory in use: {e}",
                            used >> 20,
                            self.limits.memory_bytes >> 20
                        ),
                    )
                } else {
                    Error::guest("guest_trap", format!("{what}: the guest trapped: {e}"))
                }
            }
        }
    }

    /// All of linear memory, for lifting (no guest code runs meanwhile).
    fn memory(&self) -> Result<&[u8], Error> {
        self.raw
            .memory_bytes()
            .ok_or_else(|| Error::guest("guest_bad_output", "the guest exports no memory"))
    }
}

impl GuestAlloc for GuestInstance {
    fn realloc(
        &mut self,
        old_ptr: u32,
        old_size: u32,
        align: u32,
        new_size: u32,
    ) -> Result<u32, AbiError> {
        let args = [old_ptr, old_size, align, new_size].map(|v| Flat::I32(v as i32));
        match self
            .call_core("cabi_realloc", &args)
            .map_err(|e| AbiError(e.message))?
            .as_slice()
        {
            [Flat::I32(ptr)] => Ok(*ptr as u32),
            _ => Err(AbiError("cabi_realloc must return one i32".into())),
        }
    }

    fn write(&mut self, ptr: u32, bytes: &[u8]) -> Result<(), AbiError> {
        self.raw
            .write_memory(ptr, bytes)
            .map_err(|e| AbiError(format!("writing {} bytes at {ptr:#x}: {e}", bytes.len())))
    }
}

/// A module as WasmEdge runs it: AOT code when `bytes` carry it, else
/// interpreted.
fn load(config: &Config, name: &str, bytes: &[u8]) -> Result<AstModule, Error> {
    AstModule::load(config, bytes).map_err(|e| {
        Error::internal(
            "policy_invalid",
            format!("policy {name} cannot be loaded: {e}"),
        )
    })
}

/// WasmEdge's AOT compiler (LLVM): the module with native code added.
fn compile(config: &Config, name: &str, wasm: &[u8]) -> Result<Vec<u8>, Error> {
    let failed = |what: String| {
        Error::internal(
            "policy_invalid",
            format!("policy {name} does not compile: {what}"),
        )
    };
    let dir = tempfile::tempdir().map_err(|e| failed(e.to_string()))?;
    let out = dir.path().join("guest.aot.wasm");
    // WasmEdge's AOT compiler links with LLVM's lld in-process, which is
    // not safe to run twice at once (duplicate symbols, then a crash).
    static COMPILER: Mutex<()> = Mutex::new(());
    let _one_at_a_time = COMPILER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    wasmedge_sys::Compiler::create(Some(config))
        .and_then(|c| c.compile_from_bytes(wasm, &out))
        .map_err(|e| failed(e.to_string()))?;
    std::fs::read(&out).map_err(|e| failed(e.to_string()))
}

/// Background compilations of this process.
static BACKGROUND: Background = Background::new();

/// Runs background work one at a time, and stops it for good before the
/// process exits: exit runs WasmEdge's and LLVM's static destructors, which
/// crash a compilation still going.
struct Background {
    running: Mutex<()>,
    stopping: std::sync::atomic::AtomicBool,
}

impl Background {
    const fn new() -> Self {
        Background {
            running: Mutex::new(()),
            stopping: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Permission to work, held until the work is done; `None` once
    /// stopped.
    fn start(&self) -> Option<std::sync::MutexGuard<'_, ()>> {
        let guard = self.running.lock().unwrap_or_else(|p| p.into_inner());
        (!self.stopping.load(std::sync::atomic::Ordering::SeqCst)).then_some(guard)
    }

    /// Waits for the work in progress and lets no more start.
    fn stop(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        drop(self.running.lock());
    }
}

/// Lets a background compilation finish and starts no other: call it
/// before the process exits.
pub fn quiesce() {
    BACKGROUND.stop();
}

/// The module new instances of a guest are made from; tiered start
/// replaces the interpreted one with compiled code.
type ModuleSlot = Arc<std::sync::RwLock<Arc<AstModule>>>;

fn bad_output(e: AbiError) -> Error {
    Error::guest(
        "guest_bad_output",
        format!("the guest broke the canonical ABI: {e}"),
    )
}

fn init_error(e: &WasmEdgeError) -> Error {
    Error::internal("engine_init", format!("cannot start WasmEdge: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn stopping_waits_for_background_work_and_lets_no_more_start() {
        static BACKGROUND: Background = Background::new();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let worker = std::thread::spawn(move || {
            let _running = BACKGROUND.start().unwrap();
            started_tx.send(Instant::now()).unwrap();
            std::thread::sleep(Duration::from_millis(200));
            Instant::now()
        });
        let started = started_rx.recv().unwrap();
        BACKGROUND.stop();
        let quiesced = Instant::now();
        let finished = worker.join().unwrap();
        assert!(quiesced >= finished, "quiesce returned while the work ran");
        assert!(quiesced - started >= Duration::from_millis(200));
        assert!(BACKGROUND.start().is_none(), "work may not start any more");
    }
}
