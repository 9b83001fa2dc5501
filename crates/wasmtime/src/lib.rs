//! The wasmtime engine: runs each guest's component through bindings
//! generated from `wit/`, one fresh instance per call from an `InstancePre`.

//!
//! Its one `unsafe` is wasmtime's: loading a precompiled component, which
//! only ever comes from teller's own cache.

mod bindings;
mod kept;

use bindings as wit;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use teller_contract::{
    AuditEvent, DailyReservation, Decision, Error, ErrorCode, PolicyConfig, PolicyMetadata,
    PolicyRef, Reservation, SealedRecord, TransferRequest,
};
use teller_engine::artifact::{Artifact, sha256_hex};
use teller_engine::cache::ArtifactCache;
use teller_engine::state::{GuestState, StateError, state_unavailable};
use teller_engine::{AuditSealer, CallMode, Engine, GuestLimits, TransferCheck, Workload};
use wasmtime::component::{Component, InstancePre, Linker, ResourceTable};
use wasmtime::{Config, Store};
use wasmtime_wasi::cli::{WasiCli, WasiCliCtx, WasiCliCtxView};
// Both worlds export `metadata`; one set of its bindings serves them all.
use wit::transfer_check::exports::bank::policy::metadata::GuestIndices as MetadataIndices;

/// How often the epoch advances: the resolution of the call deadline. A
/// 1 ms tick cost 1.5% of a loaded server's CPU in wake-ups.
const EPOCH_TICK: std::time::Duration = std::time::Duration::from_millis(5);

/// Core instances one component instance may create.
const MAX_CORE_INSTANCES: usize = 4;

/// Instances a server may have alive at once (the pooling allocator
/// reserves their memory up front).
const SERVER_INSTANCES: u32 = 1000;

/// Bytes of a reused slot reset by `memset` instead of being given back to
/// the kernel: with `pagemap_scan` (Linux 6.7+) only the pages a guest
/// touched are reset, which keeps instance turnover free of `madvise` and
/// the cross-core TLB shootdowns it causes.
const KEEP_RESIDENT: usize = 2 << 20;

/// Slots given back to the kernel together.
const DECOMMIT_BATCH: usize = 32;

/// The wasmtime engine as a binary registers it.
pub const ENGINE: teller_engine::EngineKind = teller_engine::EngineKind {
    name: "wasmtime",
    about: "wasmtime, running the guests' components",
    start: |cache, workload, limits, state| {
        Ok(Box::new(WasmtimeEngine::new(
            cache, workload, limits, state,
        )?))
    },
    quiesce: || {},
    serving: || {},
    // Linked in: nothing to open.
    load: || Ok(()),
    open_early: || {},
};

pub struct WasmtimeEngine {
    engine: wasmtime::Engine,
    linker: Linker<State>,
    cache: ArtifactCache,
    stores: Stores,
    workload: Workload,
}

/// Per-call store data: an empty `wasi:cli` context (std in the guests
/// imports it: no environment, closed stdio), the instance's limits and the
/// state store its `bank:policy/state` imports reach. Only the CLI part of
/// WASI: a full `WasiCtx` would seed random generators and clocks for every
/// call that no guest can reach (see [`link_wasi`]).
struct State {
    cli: WasiCliCtx,
    table: ResourceTable,
    limiter: Limiter,
    guest_state: GuestState,
    /// Why a state import failed, which ended the call.
    state_failed: Option<StateError>,
}

impl wit::state::Host for State {
    fn reserve(&mut self, request: DailyReservation) -> wasmtime::Result<Reservation> {
        self.guest_state
            .reserve(&request)
            .map_err(|e| self.state_failed(e))
    }

    fn daily_total(&mut self, key: String, day_offset_minutes: i32) -> wasmtime::Result<u64> {
        self.guest_state
            .daily_total(&key, day_offset_minutes)
            .map_err(|e| self.state_failed(e))
    }
}

impl wit::digest::Host for State {
    fn sha256(&mut self, data: String) -> (u64, u64, u64, u64) {
        teller_engine::sha256_words(data.as_bytes())
    }
}

impl State {
    fn state_failed(&mut self, e: StateError) -> wasmtime::Error {
        let trap = wasmtime::Error::msg(e.0.clone());
        self.state_failed = Some(e);
        trap
    }
}

/// Enforces the memory cap and remembers refusing a growth, so that the
/// trap that follows (an allocator giving up) is reported as what it is.
struct Limiter {
    memory_bytes: usize,
    memory_refused: bool,
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.memory_refused = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        MAX_CORE_INSTANCES
    }
}

/// Makes the store for each call with the guest limits applied, and says
/// what a failed call ran into.
#[derive(Clone)]
struct Stores {
    engine: wasmtime::Engine,
    limits: GuestLimits,
    deadline_ticks: u64,
    guest_state: GuestState,
}

impl Stores {
    fn new_store(&self) -> Store<State> {
        let state = State {
            cli: WasiCliCtx::default(),
            table: ResourceTable::new(),
            limiter: Limiter {
                memory_bytes: usize::try_from(self.limits.memory_bytes).unwrap_or(usize::MAX),
                memory_refused: false,
            },
            guest_state: self.guest_state.clone(),
            state_failed: None,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        self.arm(&mut store);
        store
    }

    /// A full deadline and fuel budget for the next call on `store`.
    fn arm(&self, store: &mut Store<State>) {
        self.arm_for(store, self.deadline_ticks);
    }

    /// As [`Stores::arm`], with [`teller_engine::LOAD_DEADLINE`] for a Rego
    /// guest's `source.load`.
    fn arm_for_load(&self, store: &mut Store<State>) {
        let ticks = teller_engine::LOAD_DEADLINE.as_nanos() / EPOCH_TICK.as_nanos();
        self.arm_for(
            store,
            u64::try_from(ticks)
                .unwrap_or(u64::MAX)
                .max(self.deadline_ticks),
        );
    }

    fn arm_for(&self, store: &mut Store<State>, ticks: u64) {
        store.set_epoch_deadline(ticks);
        if let Some(fuel) = self.limits.fuel {
            // Only fails when fuel is not enabled, and it is.
            let _ = store.set_fuel(fuel);
        }
    }

    /// Sorts a failed call into the guest error codes clients see.
    fn error(&self, e: wasmtime::Error, store: &Store<State>) -> Error {
        if let Some(failed) = &store.data().state_failed {
            return state_unavailable(&failed.0);
        }
        if store.data().limiter.memory_refused {
            return Error::guest(
                ErrorCode::GuestMemoryLimit,
                format!(
                    "the guest needed more than its {} MiB of memory",
                    self.limits.memory_bytes >> 20
                ),
            );
        }
        match e.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => Error::guest(
                ErrorCode::GuestTimeout,
                format!(
                    "the guest ran past its {} ms deadline",
                    self.limits.deadline.as_millis()
                ),
            ),
            Some(wasmtime::Trap::OutOfFuel) => Error::guest(
                ErrorCode::GuestOutOfFuel,
                format!(
                    "the guest used up its fuel ({})",
                    self.limits.fuel.unwrap_or_default()
                ),
            ),
            // The trap alone: the wasm backtrace would spread one log line
            // over many.
            Some(trap) => Error::guest(ErrorCode::GuestTrap, format!("the guest trapped: {trap}")),
            None => Error::guest(
                ErrorCode::GuestBadOutput,
                format!("the guest's call failed: {e:#}"),
            ),
        }
    }
}

/// Advances `engine`'s epoch every [`EPOCH_TICK`] for as long as the engine
/// lives, so that every store's epoch deadline is wall-clock time.
fn start_epoch_ticker(engine: &wasmtime::Engine) -> Result<(), Error> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("teller-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .map(|_| ())
        .map_err(|e| {
            Error::internal(
                ErrorCode::EngineInit,
                format!("cannot start the epoch ticker: {e}"),
            )
        })
}

/// The WASI a guest gets: what std's imports need and nothing more, as on
/// WasmEdge (`raw::wasi`). No clocks, randomness, files or sockets: a
/// decision depends on its inputs only, and a guest that imports any of
/// them is refused at load on both engines alike, naming the import.
fn link_wasi(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    use wasmtime_wasi::p2::bindings::{cli, sync::io};
    io::error::add_to_linker::<State, Table>(linker, |s| &mut s.table)?;
    io::poll::add_to_linker::<State, Table>(linker, |s| &mut s.table)?;
    io::streams::add_to_linker::<State, Table>(linker, |s| &mut s.table)?;
    cli::exit::add_to_linker::<State, WasiCli>(linker, State::cli)?;
    cli::environment::add_to_linker::<State, WasiCli>(linker, State::cli)?;
    cli::stdin::add_to_linker::<State, WasiCli>(linker, State::cli)?;
    cli::stdout::add_to_linker::<State, WasiCli>(linker, State::cli)?;
    cli::stderr::add_to_linker::<State, WasiCli>(linker, State::cli)?;
    cli::terminal_input::add_to_linker::<State, WasiCli>(linker, State::cli)?;
    cli::terminal_output::add_to_linker::<State, WasiCli>(linker, State::cli)?;
    cli::terminal_stdin::add_to_linker::<State, WasiCli>(linker, State::cli)?;
    cli::terminal_stdout::add_to_linker::<State, WasiCli>(linker, State::cli)?;
    cli::terminal_stderr::add_to_linker::<State, WasiCli>(linker, State::cli)?;
    Ok(())
}

/// The store's resource table, which WASI's streams live in.
struct Table;

impl wasmtime::component::HasData for Table {
    type Data<'a> = &'a mut ResourceTable;
}

impl State {
    /// The view `wasi:cli`'s host functions take.
    fn cli(&mut self) -> WasiCliCtxView<'_> {
        WasiCliCtxView {
            ctx: &mut self.cli,
            table: &mut self.table,
        }
    }
}

impl WasmtimeEngine {
    pub fn new(
        cache: ArtifactCache,
        workload: Workload,
        limits: GuestLimits,
        guest_state: GuestState,
    ) -> Result<Self, Error> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.consume_fuel(limits.fuel.is_some());
        let memory_bytes = usize::try_from(limits.memory_bytes).map_err(|_| {
            Error::internal(
                ErrorCode::EngineInit,
                "the memory cap does not fit this machine",
            )
        })?;
        if workload != Workload::Once {
            // An instance per request: take it from pre-reserved slots
            // instead of mapping and unmapping memory (which serializes
            // threads on the kernel's mm lock). Costs ≈ 1.5 ms at start-up.
            let mut pool = wasmtime::PoolingAllocationConfig::default();
            pool.total_component_instances(SERVER_INSTANCES)
                .total_core_instances(SERVER_INSTANCES * 4)
                .total_memories(SERVER_INSTANCES * 2)
                .total_tables(SERVER_INSTANCES * 4)
                .max_memory_size(memory_bytes)
                .pagemap_scan(wasmtime::Enabled::Auto)
                .linear_memory_keep_resident(KEEP_RESIDENT)
                .table_keep_resident(KEEP_RESIDENT)
                .decommit_batch_size(DECOMMIT_BATCH);
            config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = wasmtime::Engine::new(&config).map_err(|e| {
            Error::internal(
                ErrorCode::EngineInit,
                format!("cannot start wasmtime: {e:#}"),
            )
        })?;
        let mut linker = Linker::new(&engine);
        link_wasi(&mut linker).map_err(|e| {
            Error::internal(ErrorCode::EngineInit, format!("cannot link WASI: {e:#}"))
        })?;
        wit::state::add_to_linker::<State, wasmtime::component::HasSelf<State>>(
            &mut linker,
            |state| state,
        )
        .map_err(|e| {
            Error::internal(
                ErrorCode::EngineInit,
                format!("cannot link bank:policy/state: {e:#}"),
            )
        })?;
        wit::digest::add_to_linker::<State, wasmtime::component::HasSelf<State>>(
            &mut linker,
            |state| state,
        )
        .map_err(|e| {
            Error::internal(
                ErrorCode::EngineInit,
                format!("cannot link bank:policy/digest: {e:#}"),
            )
        })?;
        start_epoch_ticker(&engine)?;
        let ticks = limits
            .deadline
            .as_nanos()
            .div_ceil(EPOCH_TICK.as_nanos())
            .max(1);
        let stores = Stores {
            engine: engine.clone(),
            limits,
            deadline_ticks: u64::try_from(ticks).unwrap_or(u64::MAX),
            guest_state,
        };
        Ok(Self {
            engine,
            linker,
            cache,
            stores,
            workload,
        })
    }

    /// Compiles `artifact`'s component, or loads it from the cache.
    fn component(&self, artifact: &Artifact) -> Result<(Component, String), Error> {
        let wasm = artifact.component()?;
        let sha256 = sha256_hex(&wasm);
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        let key = format!("wasmtime-{sha256}-{:016x}", hasher.finish());
        let compiled = self.cache.get_or_build(&key, || {
            self.engine.precompile_component(&wasm).map_err(|e| {
                Error::internal(
                    ErrorCode::PolicyInvalid,
                    format!("policy {} does not compile: {e:#}", artifact.name),
                )
            })
        })?;
        // SAFETY: the bytes are either what `precompile_component` just
        // produced or a cache entry teller wrote itself, checked against its
        // SHA-256 and keyed on this engine's compatibility hash.
        #[allow(unsafe_code)]
        let component =
            unsafe { Component::deserialize(&self.engine, &compiled) }.map_err(|e| {
                Error::internal(
                    ErrorCode::PolicyInvalid,
                    format!("policy {} cannot be loaded: {e:#}", artifact.name),
                )
            })?;
        Ok((component, sha256))
    }

    fn policy_ref(&self, meta: PolicyMetadata, sha256: String) -> PolicyRef {
        PolicyRef {
            name: meta.name,
            version: meta.version,
            sha256,
        }
    }
}

impl Engine for WasmtimeEngine {
    fn name(&self) -> &'static str {
        "wasmtime"
    }

    fn load_transfer_check(&self, artifact: &Artifact) -> Result<Arc<dyn TransferCheck>, Error> {
        if artifact.rego().is_some() {
            return Ok(Arc::new(kept::RegoCheck::load(self, artifact)?));
        }
        let (policy, pre) =
            self.load(artifact, wit::transfer_check::TransferCheckPolicyPre::new)?;
        if self.workload == Workload::Bench(CallMode::Warm) {
            return Ok(Arc::new(kept::WarmCheck::new(
                policy,
                self.stores.clone(),
                pre,
            )));
        }
        Ok(Arc::new(WasmtimeTransferCheck {
            policy,
            stores: self.stores.clone(),
            pre,
        }))
    }

    fn load_audit(&self, artifact: &Artifact) -> Result<Arc<dyn AuditSealer>, Error> {
        let (policy, pre) = self.load(artifact, wit::audit::AuditSealerPre::new)?;
        Ok(Arc::new(WasmtimeAuditSealer {
            policy,
            stores: self.stores.clone(),
            pre,
        }))
    }
}

impl WasmtimeEngine {
    /// Compiles (or fetches) `artifact`, links it, asks it what it is, and
    /// wraps its `InstancePre` in the world's bindings with `bind`.
    fn load<P>(
        &self,
        artifact: &Artifact,
        bind: impl FnOnce(InstancePre<State>) -> wasmtime::Result<P>,
    ) -> Result<(PolicyRef, P), Error> {
        let (component, sha256) = self.component(artifact)?;
        let loaded = self.linker.instantiate_pre(&component).and_then(|pre| {
            let indices = MetadataIndices::new(&pre)?;
            let mut store = self.stores.new_store();
            let instance = pre.instantiate(&mut store)?;
            let meta = indices
                .load(&mut store, &instance)?
                .call_describe(&mut store)?;
            Ok((meta, bind(pre)?))
        });
        let (meta, bound) = loaded.map_err(|e| load_error(artifact, e))?;
        Ok((self.policy_ref(meta, sha256), bound))
    }
}

struct WasmtimeTransferCheck {
    policy: PolicyRef,
    stores: Stores,
    pre: wit::transfer_check::TransferCheckPolicyPre<State>,
}

impl TransferCheck for WasmtimeTransferCheck {
    fn policy(&self) -> &PolicyRef {
        &self.policy
    }

    fn check(&self, config: &PolicyConfig, request: &TransferRequest) -> Result<Decision, Error> {
        let mut store = self.stores.new_store();
        self.pre
            .instantiate(&mut store)
            .and_then(|guest| {
                guest
                    .bank_policy_transfer_check()
                    .call_check(&mut store, config, request)
            })
            .map_err(|e| self.stores.error(e, &store))
    }
}

struct WasmtimeAuditSealer {
    policy: PolicyRef,
    stores: Stores,
    pre: wit::audit::AuditSealerPre<State>,
}

impl AuditSealer for WasmtimeAuditSealer {
    fn policy(&self) -> &PolicyRef {
        &self.policy
    }

    fn seal(&self, seq: u64, prev_hash: &str, event: &AuditEvent) -> Result<SealedRecord, Error> {
        let mut store = self.stores.new_store();
        self.pre
            .instantiate(&mut store)
            .and_then(|guest| {
                guest
                    .bank_policy_audit()
                    .call_seal(&mut store, seq, prev_hash, event)
            })
            .map_err(|e| self.stores.error(e, &store))?
            .map_err(|refusal| Error::guest(ErrorCode::GuestRefused, refusal))
    }
}

fn load_error(artifact: &Artifact, e: wasmtime::Error) -> Error {
    Error::internal(
        ErrorCode::PolicyInvalid,
        format!(
            "policy {} cannot be instantiated as a bank:policy guest: {e:#}",
            artifact.name
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::component::TypedFunc;

    /// Pooled slots are reset between instances (`memset` of the touched
    /// pages, not `madvise`): a guest that counts its calls in a static must
    /// see 1 every time, however often its slot is reused.
    #[test]
    fn no_state_survives_a_pooled_instance() {
        let engine = WasmtimeEngine::new(
            ArtifactCache::disabled(),
            Workload::Server,
            GuestLimits::default(),
            GuestState::none(),
        )
        .unwrap();
        let component =
            Component::new(&engine.engine, teller_policy_artifacts::ABI_ECHO.component).unwrap();
        let pre = engine.linker.instantiate_pre(&component).unwrap();
        let iface = component
            .get_export_index(None, "test:abi/misbehave@0.1.0")
            .unwrap();
        let count = component.get_export_index(Some(&iface), "count").unwrap();
        for round in 0..200 {
            let mut store = engine.stores.new_store();
            let instance = pre.instantiate(&mut store).unwrap();
            let f: TypedFunc<(), (u32,)> = instance.get_typed_func(&mut store, count).unwrap();
            assert_eq!(f.call(&mut store, ()).unwrap(), (1,), "round {round}");
            assert_eq!(f.call(&mut store, ()).unwrap(), (2,), "round {round}");
        }
    }
}
