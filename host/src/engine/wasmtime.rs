//! The wasmtime engine: runs each guest's component through bindings
//! generated from `wit/`, one fresh instance per call from an `InstancePre`.

use super::cache::ArtifactCache;
use super::{AuditSealer, CallMode, Caller, Engine, TransferCheck, Workload};
use crate::error::Error;
use crate::policy::{Artifact, sha256_hex};
use crate::wit::{
    self, AuditEvent, Decision, PolicyConfig, PolicyMetadata, PolicyRef, SealedRecord,
    TransferRequest,
};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use wasmtime::component::{Component, InstancePre, Linker, ResourceTable};
use wasmtime::{Config, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
// Both worlds export `metadata`; one set of its bindings serves them all.
use wit::transfer_check::exports::bank::policy::metadata::GuestIndices as MetadataIndices;

/// Linear memory a single instance may grow to.
const MEMORY_LIMIT: usize = 64 << 20;

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

pub struct WasmtimeEngine {
    engine: wasmtime::Engine,
    linker: Linker<State>,
    cache: ArtifactCache,
}

/// Per-call store data: an empty WASI context (std in the guests imports
/// WASI; nothing is granted) and the instance's limits.
struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasmtimeEngine {
    pub fn new(cache: ArtifactCache, workload: Workload) -> Result<Self, Error> {
        let mut config = Config::new();
        if workload == Workload::Server {
            // An instance per request: take it from pre-reserved slots
            // instead of mapping and unmapping memory (which serializes
            // threads on the kernel's mm lock). Costs ≈ 1.5 ms at start-up.
            let mut pool = wasmtime::PoolingAllocationConfig::default();
            pool.total_component_instances(SERVER_INSTANCES)
                .total_core_instances(SERVER_INSTANCES * 4)
                .total_memories(SERVER_INSTANCES * 2)
                .total_tables(SERVER_INSTANCES * 4)
                .max_memory_size(MEMORY_LIMIT)
                .pagemap_scan(wasmtime::Enabled::Auto)
                .linear_memory_keep_resident(KEEP_RESIDENT)
                .table_keep_resident(KEEP_RESIDENT)
                .decommit_batch_size(DECOMMIT_BATCH);
            config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = wasmtime::Engine::new(&config)
            .map_err(|e| Error::internal("engine_init", format!("cannot start wasmtime: {e:#}")))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| Error::internal("engine_init", format!("cannot link WASI: {e:#}")))?;
        Ok(Self {
            engine,
            linker,
            cache,
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
                    "policy_invalid",
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
                    "policy_invalid",
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

/// A store for one call, with the instance limits applied.
fn new_store(engine: &wasmtime::Engine) -> Store<State> {
    let state = State {
        wasi: WasiCtx::builder().build(),
        table: ResourceTable::new(),
        limits: StoreLimitsBuilder::new()
            .memory_size(MEMORY_LIMIT)
            .instances(4)
            .build(),
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limits);
    store
}

impl Engine for WasmtimeEngine {
    fn name(&self) -> &'static str {
        "wasmtime"
    }

    fn load_transfer_check(&self, artifact: &Artifact) -> Result<Arc<dyn TransferCheck>, Error> {
        let (policy, pre) =
            self.load(artifact, wit::transfer_check::TransferCheckPolicyPre::new)?;
        Ok(Arc::new(WasmtimeTransferCheck {
            policy,
            engine: self.engine.clone(),
            pre,
        }))
    }

    fn load_audit(&self, artifact: &Artifact) -> Result<Arc<dyn AuditSealer>, Error> {
        let (policy, pre) = self.load(artifact, wit::audit::AuditSealerPre::new)?;
        Ok(Arc::new(WasmtimeAuditSealer {
            policy,
            engine: self.engine.clone(),
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
            let mut store = new_store(&self.engine);
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
    engine: wasmtime::Engine,
    pre: wit::transfer_check::TransferCheckPolicyPre<State>,
}

impl TransferCheck for WasmtimeTransferCheck {
    fn policy(&self) -> &PolicyRef {
        &self.policy
    }

    fn check(&self, config: &PolicyConfig, request: &TransferRequest) -> Result<Decision, Error> {
        let mut store = new_store(&self.engine);
        let guest = self.pre.instantiate(&mut store).map_err(call_error)?;
        guest
            .bank_policy_transfer_check()
            .call_check(&mut store, config, request)
            .map_err(call_error)
    }

    fn caller(&self, mode: CallMode) -> Result<Caller<'_>, Error> {
        match mode {
            CallMode::Fresh => Ok(Box::new(|config, request| self.check(config, request))),
            CallMode::Warm => {
                let mut store = new_store(&self.engine);
                let guest = self.pre.instantiate(&mut store).map_err(call_error)?;
                Ok(Box::new(move |config, request| {
                    guest
                        .bank_policy_transfer_check()
                        .call_check(&mut store, config, request)
                        .map_err(call_error)
                }))
            }
        }
    }
}

struct WasmtimeAuditSealer {
    policy: PolicyRef,
    engine: wasmtime::Engine,
    pre: wit::audit::AuditSealerPre<State>,
}

impl AuditSealer for WasmtimeAuditSealer {
    fn policy(&self) -> &PolicyRef {
        &self.policy
    }

    fn seal(&self, seq: u64, prev_hash: &str, event: &AuditEvent) -> Result<SealedRecord, Error> {
        let mut store = new_store(&self.engine);
        let guest = self.pre.instantiate(&mut store).map_err(call_error)?;
        guest
            .bank_policy_audit()
            .call_seal(&mut store, seq, prev_hash, event)
            .map_err(call_error)?
            .map_err(|refusal| Error::guest("guest_refused", refusal))
    }
}

fn load_error(artifact: &Artifact, e: wasmtime::Error) -> Error {
    Error::internal(
        "policy_invalid",
        format!(
            "policy {} cannot be instantiated as a bank:policy guest: {e:#}",
            artifact.name
        ),
    )
}

/// Sorts a failed call into the guest error codes clients see.
fn call_error(e: wasmtime::Error) -> Error {
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt | wasmtime::Trap::OutOfFuel) => {
            Error::guest("guest_timeout", format!("the guest ran out of time: {e:#}"))
        }
        Some(_) => Error::guest("guest_trap", format!("the guest trapped: {e:#}")),
        None => Error::guest(
            "guest_bad_output",
            format!("the guest's call failed: {e:#}"),
        ),
    }
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
        let engine = WasmtimeEngine::new(ArtifactCache::disabled(), Workload::Server).unwrap();
        let component =
            Component::new(&engine.engine, teller_policy_artifacts::ABI_ECHO.component).unwrap();
        let pre = engine.linker.instantiate_pre(&component).unwrap();
        let iface = component
            .get_export_index(None, "test:abi/misbehave@0.1.0")
            .unwrap();
        let count = component.get_export_index(Some(&iface), "count").unwrap();
        for round in 0..200 {
            let mut store = new_store(&engine.engine);
            let instance = pre.instantiate(&mut store).unwrap();
            let f: TypedFunc<(), (u32,)> = instance.get_typed_func(&mut store, count).unwrap();
            assert_eq!(f.call(&mut store, ()).unwrap(), (1,), "round {round}");
            assert_eq!(f.call(&mut store, ()).unwrap(), (2,), "round {round}");
        }
    }
}
