//! A pool of ready instances of one module, and one instance's
//! canonical-ABI call within its deadline, memory cap and fuel budget.

use crate::raw::Config;
use crate::raw::{self, AstModule, RawError, Val};
use crate::snapshot::Snapshot;
use crate::watchdog::Watchdog;
use crate::{MAX_CALLS_PER_INSTANCE, ModuleSlot, bad_output};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::{Arc, Mutex, OnceLock};
use teller_abi::bridge::{from_value, to_value};
use teller_abi::lift::Lifter;
use teller_abi::lower::{GuestAlloc, Lowerer, allocations};
use teller_abi::{AbiError, Contract, ExportFunc, Flat, Value};
use teller_contract::{Error, ErrorCode};
use teller_engine::GuestLimits;

/// Ready instances of one module.
pub(crate) struct Pool {
    pub(crate) config: Arc<Config>,
    pub(crate) contract: Arc<Contract>,
    pub(crate) module: ModuleSlot,
    pub(crate) limits: GuestLimits,
    /// The host functions instances may import (`bank:policy/state`,
    /// `bank:policy/digest`).
    pub(crate) hosts: Arc<[Arc<raw::host::HostModule>]>,
    pub(crate) idle: Mutex<Vec<GuestInstance>>,
    /// Called on every new instance before it serves (the Rego guest's
    /// `source.load`); its `result::err` fails the instantiation.
    pub(crate) init: Option<(ExportFunc, Vec<Value>)>,
    /// An instance's state once `init` had run, when the guest can be
    /// reset: new instances start from it instead of running `init`, and
    /// kept ones go back to it instead of being replaced. Taken when first
    /// needed, so that a process that makes one instance (`teller check`)
    /// does not pay for it.
    pub(crate) snapshot: OnceLock<Option<Snapshot>>,
}

impl Pool {
    pub(crate) fn export(&self, interface: &str, func: &str) -> Result<ExportFunc, Error> {
        self.contract
            .export(interface, func)
            .map_err(|e| Error::internal(ErrorCode::PolicyInvalid, e.to_string()))
    }

    /// Argument `index` of `func`, as a [`Value`] of its WIT type.
    pub(crate) fn arg<T: Serialize + ?Sized>(
        &self,
        func: &ExportFunc,
        index: usize,
        v: &T,
    ) -> Result<Value, Error> {
        let ty = func.params.get(index).ok_or_else(|| {
            Error::internal(
                ErrorCode::Internal,
                format!("{} has no parameter {index}", func.name),
            )
        })?;
        to_value(&self.contract, ty, v)
            .map_err(|e| Error::internal(ErrorCode::Internal, format!("{}: {e}", func.name)))
    }

    /// Calls `func` on a ready instance.
    pub(crate) fn call_values(
        &self,
        func: &ExportFunc,
        args: &[Value],
    ) -> Result<Option<Value>, Error> {
        let mut guest = match self.take() {
            Some(guest) => guest,
            None => self.instantiate()?,
        };
        let value = match guest.invoke(&self.contract, func, args) {
            // The last call's post-return, run in this call's first entry,
            // failed: that call's answer stands (its results had been read),
            // and this one starts over, once, on a new instance.
            Err(e) if guest.cleanup_failed => {
                tracing::warn!(
                    "a guest's post-return failed, so its instance was dropped: {}",
                    e.message
                );
                guest = self.instantiate()?;
                guest.invoke(&self.contract, func, args)?
            }
            other => other?,
        };
        self.give_back(guest);
        Ok(value)
    }

    /// Calls `func` on fresh state: an instance reset to the snapshot, or a
    /// new one for a guest that cannot be reset.
    pub(crate) fn call_fresh(
        &self,
        func: &ExportFunc,
        args: &[Value],
    ) -> Result<Option<Value>, Error> {
        let mut guest = match self.take() {
            Some(mut guest) => {
                if self.reset(&mut guest) {
                    guest
                } else {
                    self.instantiate()?
                }
            }
            None => self.instantiate()?,
        };
        let value = guest.invoke(&self.contract, func, args)?;
        if self.snapshot().is_some() {
            self.give_back(guest);
        }
        Ok(value)
    }

    /// The snapshot, taken now if it has not been.
    pub(crate) fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot
            .get_or_init(|| {
                // A new instance, never called but by `init`: its state is
                // the one to keep. It joins the pool afterwards.
                let taken = self.instantiate_anew().and_then(|mut guest| {
                    guest.settle()?;
                    let snapshot = Snapshot::take(&guest.raw).map_err(|e| {
                        Error::internal(
                            ErrorCode::EngineInit,
                            format!("cannot keep a guest's state: {e}"),
                        )
                    })?;
                    guest.calls = 0;
                    self.give_back(guest);
                    Ok(snapshot)
                });
                taken.unwrap_or_else(|e| {
                    tracing::warn!(
                        "guest instances will be made anew, not reset: {}",
                        e.message
                    );
                    None
                })
            })
            .as_ref()
    }

    /// Puts `guest` back into the snapshot's state; false when there is no
    /// snapshot or the guest cannot go back to it (its memory grew), and the
    /// guest must then be dropped.
    pub(crate) fn reset(&self, guest: &mut GuestInstance) -> bool {
        let Some(snapshot) = self.snapshot() else {
            return false;
        };
        // What the last call left to free is gone with the rest.
        guest.pending_post = None;
        guest.cleanup_failed = false;
        guest.calls = 0;
        match snapshot.restore(&mut guest.raw, &mut guest.mapped) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!("a guest instance was dropped, not reset: {e}");
                false
            }
        }
    }

    /// Calls `func` and converts its result to `R`.
    pub(crate) fn call<R: DeserializeOwned>(
        &self,
        func: &ExportFunc,
        args: &[Value],
    ) -> Result<R, Error> {
        let value = self.call_values(func, args)?;
        self.lift_result(func, value)
    }

    /// `func`'s result as the Rust type `R`.
    pub(crate) fn lift_result<R: DeserializeOwned>(
        &self,
        func: &ExportFunc,
        value: Option<Value>,
    ) -> Result<R, Error> {
        let ty = func.result.as_ref().ok_or_else(|| {
            Error::internal(
                ErrorCode::Internal,
                format!("{} returns nothing", func.name),
            )
        })?;
        let value = value.ok_or_else(|| bad_output(AbiError("no result".into())))?;
        from_value(&self.contract, ty, value).map_err(bad_output)
    }

    pub(crate) fn take(&self) -> Option<GuestInstance> {
        let current = self.current();
        let mut idle = self.idle.lock().ok()?;
        // Instances of a replaced (interpreted) module are dropped.
        let before = idle.len();
        idle.retain(|guest| Arc::ptr_eq(&guest.module, &current));
        let guest = idle.pop();
        teller_engine::count_pooled(idle.len() as i64 - before as i64);
        guest
    }

    /// The module new instances are made from.
    pub(crate) fn current(&self) -> Arc<AstModule> {
        self.module
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn give_back(&self, mut guest: GuestInstance) {
        if guest.stopped || !Arc::ptr_eq(&guest.module, &self.current()) {
            return;
        }
        if guest.calls >= MAX_CALLS_PER_INSTANCE && !self.reset(&mut guest) {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && teller_engine::pool_keeps(idle.len())
        {
            idle.push(guest);
            teller_engine::count_pooled(1);
        }
    }

    /// A new instance, from the snapshot when the guest has one.
    pub(crate) fn instantiate(&self) -> Result<GuestInstance, Error> {
        let Some(snapshot) = self.snapshot() else {
            return self.instantiate_anew();
        };
        let mut guest = self.bare_instance()?;
        // The state `init` left, without running it again.
        snapshot
            .restore(&mut guest.raw, &mut guest.mapped)
            .map_err(|e| {
                Error::guest(
                    ErrorCode::GuestTrap,
                    format!("cannot start an instance from its snapshot: {e}"),
                )
            })?;
        Ok(guest)
    }

    /// A new instance made as its module says, with `init` run on it.
    pub(crate) fn instantiate_anew(&self) -> Result<GuestInstance, Error> {
        let mut guest = self.bare_instance()?;
        if let Some((load, args)) = &self.init {
            let value = guest.invoke_within(
                &self.contract,
                load,
                args,
                teller_engine::LOAD_DEADLINE.max(self.limits.deadline),
            )?;
            let loaded: Result<teller_contract::PolicyMetadata, String> =
                self.lift_result(load, value)?;
            // The policy loaded when the pool was made; refusing now is the
            // guest's fault, not the client's.
            loaded.map_err(|message| {
                Error::guest(
                    ErrorCode::GuestRefused,
                    format!("the policy no longer loads: {message}"),
                )
            })?;
            guest.calls = 0;
        }
        Ok(guest)
    }

    /// A new instance of the current module, its data as the module says.
    fn bare_instance(&self) -> Result<GuestInstance, Error> {
        let module = self.current();
        let raw = raw::Instance::new(
            &self.config,
            &module,
            self.limits.fuel.is_some(),
            raw::Wasi::Shim,
            &self.hosts,
        )
        .map_err(|e| Error::guest(ErrorCode::GuestTrap, format!("cannot instantiate: {e}")))?;
        // Without its flag, compiled code would run past every deadline.
        if !raw.has_stop_flag() {
            return Err(Error::internal(
                ErrorCode::PolicyInvalid,
                "the guest has no stop flag, so its deadline could not be kept",
            ));
        }
        Ok(GuestInstance {
            raw,
            module,
            limits: self.limits,
            calls: 0,
            stopped: false,
            failure: None,
            pending_post: None,
            cleanup_failed: false,
            mapped: false,
        })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let idle = self.idle.get_mut().map_or(0, |idle| idle.len());
        teller_engine::count_pooled(-(idle as i64));
    }
}

/// One instantiated module, its limits, and how it has been used.
pub(crate) struct GuestInstance {
    pub(crate) raw: raw::Instance,
    /// What it was instantiated from, kept alive as long as it is.
    pub(crate) module: Arc<AstModule>,
    pub(crate) limits: GuestLimits,
    pub(crate) calls: u32,
    /// The watchdog stopped a call: the stop flag may still be set, so the
    /// instance must not be reused.
    pub(crate) stopped: bool,
    /// Why the last core call failed, kept while the canonical-ABI code
    /// (which only sees `AbiError`s) unwinds.
    pub(crate) failure: Option<Error>,
    /// The last call's post-return function and its argument, to run first
    /// in the next call's first entry ([`crate::instrument::after`]).
    pub(crate) pending_post: Option<(String, i32)>,
    /// The entry that ran the pending post-return failed.
    pub(crate) cleanup_failed: bool,
    /// Its memory is a private mapping of the pool's snapshot.
    pub(crate) mapped: bool,
}

impl GuestInstance {
    /// The canonical-ABI call: lower, call, lift, post-return, all within
    /// one deadline and one fuel budget.
    pub(crate) fn invoke(
        &mut self,
        contract: &Contract,
        func: &ExportFunc,
        args: &[Value],
    ) -> Result<Option<Value>, Error> {
        self.invoke_within(contract, func, args, self.limits.deadline)
    }

    /// [`GuestInstance::invoke`] with its own deadline (a Rego guest's
    /// `source.load`).
    pub(crate) fn invoke_within(
        &mut self,
        contract: &Contract,
        func: &ExportFunc,
        args: &[Value],
        deadline: std::time::Duration,
    ) -> Result<Option<Value>, Error> {
        self.calls += 1;
        self.failure = None;
        if let Some(fuel) = self.limits.fuel {
            self.raw.set_cost_limit(fuel);
        }
        let watchdog = Watchdog::get();
        let armed = watchdog.arm(deadline, self.raw.stop_handle());
        let result = self.invoke_within_limits(contract, func, args);
        let fired = watchdog.disarm(armed);
        if fired {
            self.stopped = true;
        }
        result.map_err(|e| {
            let e = self.failure.take().unwrap_or(e);
            // Stopped by its flag, the guest traps (`unreachable`), which may
            // read as a memory trap: it ran past its deadline. A host
            // function's failure or used-up fuel stays what it is.
            if fired && matches!(e.code, ErrorCode::GuestTrap | ErrorCode::GuestMemoryLimit) {
                self.timed_out(deadline)
            } else {
                e
            }
        })
    }

    pub(crate) fn invoke_within_limits(
        &mut self,
        contract: &Contract,
        func: &ExportFunc,
        args: &[Value],
    ) -> Result<Option<Value>, Error> {
        let pending = self.pending_post.take();
        let flat = if self.raw.has_batch_alloc() {
            // The allocations first, planned without storing anything; one
            // entry into the guest makes them all (after the last call's
            // post-return); then the lowering writes into them.
            let requests = allocations(contract, func, args).map_err(bad_output)?;
            let mut ptrs = Vec::with_capacity(requests.len());
            let post = pending.as_ref().map(|(post, arg)| (post.as_str(), *arg));
            let batch = self.raw.alloc_batch(post, &requests, &mut ptrs);
            batch.map_err(|e| {
                self.cleanup_failed = pending.is_some();
                let error = self.classify(&e, crate::instrument::ALLOC_EXPORT);
                self.failure = Some(error.clone());
                error
            })?;
            let memory = self.raw.memory_bytes_mut().ok_or_else(|| {
                Error::guest(ErrorCode::GuestBadOutput, "the guest exports no memory")
            })?;
            let mut replay = Replay {
                memory,
                requests: &requests,
                ptrs: &ptrs,
                next: 0,
            };
            Lowerer::new(contract, &mut replay)
                .params(func, args)
                .map_err(bad_output)?
        } else {
            Lowerer::new(contract, self)
                .params(func, args)
                .map_err(bad_output)?
        };
        let results = self.call_core(&func.name, &flat)?;
        let value = {
            let memory = self.memory()?;
            Lifter::new(contract, memory)
                .results(func, &results)
                .map_err(bad_output)?
        };
        if func.result.is_some() && self.raw.has_func(&func.post_return) {
            match results.as_slice() {
                // Not with fuel: each call's cost must be its own.
                [Flat::I32(arg)]
                    if self.limits.fuel.is_none() && self.raw.can_defer(&func.post_return) =>
                {
                    self.pending_post = Some((func.post_return.clone(), *arg));
                }
                _ => {
                    self.call_core(&func.post_return, &results)?;
                }
            }
        }
        Ok(value)
    }

    /// Runs the last call's post-return now, rather than in the next call.
    pub(crate) fn settle(&mut self) -> Result<(), Error> {
        match self.pending_post.take() {
            Some((post, arg)) => self.call_core(&post, &[Flat::I32(arg)]).map(drop),
            None => Ok(()),
        }
    }

    pub(crate) fn call_core(&mut self, name: &str, args: &[Flat]) -> Result<Vec<Flat>, Error> {
        let params: Vec<Val> = args.iter().map(|a| Val::from(*a)).collect();
        let results = self.raw.call(name, &params).map_err(|e| {
            let error = self.classify(&e, name);
            self.failure = Some(error.clone());
            error
        })?;
        Ok(results.into_iter().map(Flat::from).collect())
    }

    fn timed_out(&self, deadline: std::time::Duration) -> Error {
        Error::guest(
            ErrorCode::GuestTimeout,
            format!(
                "the guest ran past its {} ms deadline",
                deadline.as_millis()
            ),
        )
    }

    /// Sorts a failed core call into the guest error codes clients see.
    pub(crate) fn classify(&self, e: &RawError, what: &str) -> Error {
        match e.code {
            raw::INTERRUPTED => self.timed_out(self.limits.deadline),
            raw::COST_LIMIT_EXCEEDED => Error::guest(
                ErrorCode::GuestOutOfFuel,
                format!(
                    "the guest used up its fuel ({})",
                    self.limits.fuel.unwrap_or_default()
                ),
            ),
            0 => Error::guest(ErrorCode::GuestBadOutput, format!("{what}: {e}")),
            // A host function failed (the state store, or the guest's
            // arguments to it): its own error says which.
            raw::host::HOST_FAILED => raw::host::take_failure().unwrap_or_else(|| {
                Error::guest(
                    ErrorCode::GuestTrap,
                    format!("{what}: a host function failed"),
                )
            }),
            raw::PROC_EXIT => Error::guest(
                ErrorCode::GuestTrap,
                format!("{what}: the guest called proc_exit"),
            ),
            _ => {
                // WasmEdge does not say that a trap followed a refused
                // memory.grow (an allocator giving up); a trap with memory
                // past half the cap is reported as that.
                let used = u64::from(self.raw.memory_pages().unwrap_or(0)) * GuestLimits::WASM_PAGE;
                if used > self.limits.memory_bytes / 2 {
                    Error::guest(
                        ErrorCode::GuestMemoryLimit,
                        format!(
                            "the guest trapped with {} of its {} MiB of memory in use: {e}",
                            used >> 20,
                            self.limits.memory_bytes >> 20
                        ),
                    )
                } else {
                    Error::guest(
                        ErrorCode::GuestTrap,
                        format!("{what}: the guest trapped: {e}"),
                    )
                }
            }
        }
    }

    /// All of linear memory, for lifting (no guest code runs meanwhile).
    pub(crate) fn memory(&self) -> Result<&[u8], Error> {
        self.raw
            .memory_bytes()
            .ok_or_else(|| Error::guest(ErrorCode::GuestBadOutput, "the guest exports no memory"))
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

/// The lowering after the batch: the planned allocations, answered with
/// what the guest's `cabi_realloc` returned, and the writes made.
struct Replay<'a> {
    /// The guest's memory (no guest code runs until the call).
    memory: &'a mut [u8],
    requests: &'a [(u32, u32)],
    ptrs: &'a [u32],
    next: usize,
}

impl GuestAlloc for Replay<'_> {
    fn realloc(
        &mut self,
        old_ptr: u32,
        old_size: u32,
        align: u32,
        new_size: u32,
    ) -> Result<u32, AbiError> {
        let planned = self.requests.get(self.next).copied();
        let ptr = self.ptrs.get(self.next).copied();
        self.next += 1;
        match (planned, ptr) {
            (Some(planned), Some(ptr))
                if (old_ptr, old_size, planned) == (0, 0, (align, new_size)) =>
            {
                Ok(ptr)
            }
            _ => Err(AbiError(
                "the lowering asked for other allocations than it planned".into(),
            )),
        }
    }

    fn write(&mut self, ptr: u32, bytes: &[u8]) -> Result<(), AbiError> {
        let start = ptr as usize;
        self.memory
            .get_mut(start..start.saturating_add(bytes.len()))
            .ok_or_else(|| {
                AbiError(format!(
                    "writing {} bytes at {ptr:#x}: out of the guest's memory",
                    bytes.len()
                ))
            })?
            .copy_from_slice(bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use teller_contract::PolicyMetadata;

    /// `describe` answers from static data; its post-return traps.
    const TRAPPING_POST_RETURN: &str = r#"(module
      (memory (export "memory") 1)
      (global $next (mut i32) (i32.const 1024))
      (data (i32.const 100) "trap-post")
      (data (i32.const 120) "1.0")
      (data (i32.const 200) "\64\00\00\00\09\00\00\00\78\00\00\00\03\00\00\00")
      (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
        (local $ptr i32)
        (local.set $ptr (global.get $next))
        (global.set $next (i32.add (global.get $next) (i32.add (local.get 3) (i32.const 8))))
        (local.get $ptr))
      (func (export "bank:policy/metadata@0.2.0#describe") (result i32) (i32.const 200))
      (func (export "cabi_post_bank:policy/metadata@0.2.0#describe") (param i32) unreachable))"#;

    /// A post-return runs in the next call's first entry. When it traps,
    /// the call it cleaned up after has already answered, and the next call
    /// starts over on a new instance: every call answers.
    #[test]
    fn a_trapping_post_return_fails_no_call() {
        let wasm = wat::parse_str(TRAPPING_POST_RETURN).unwrap();
        let (_dir, pool) = pool_of("trap-post", &wasm);
        let describe = pool.export("metadata", "describe").unwrap();
        for _ in 0..4 {
            let meta: PolicyMetadata = pool.call(&describe, &[]).unwrap();
            assert_eq!(
                (meta.name.as_str(), meta.version.as_str()),
                ("trap-post", "1.0")
            );
        }
        // The instance that ran the last call waits with its post-return.
        let guest = pool.take().unwrap();
        assert!(guest.pending_post.is_some());
    }

    /// `describe` counts its calls in a global and in a byte of memory and
    /// answers `"{global}{memory}"` as its version, after running `extra`;
    /// its memory has `pages`, `top` is the module's other fields.
    fn counting_guest(pages: u32, top: &str, extra: &str) -> Vec<u8> {
        wat::parse_str(format!(
            r#"(module
              (memory (export "memory") {pages})
              (global $calls (mut i32) (i32.const 0))
              (global $next (mut i32) (i32.const 1024))
              (data (i32.const 100) "count")
              (data (i32.const 120) "00")
              (data (i32.const 200) "\64\00\00\00\05\00\00\00\78\00\00\00\02\00\00\00")
              {top}
              (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
                (local $ptr i32)
                (local.set $ptr (global.get $next))
                (global.set $next (i32.add (global.get $next) (i32.add (local.get 3) (i32.const 8))))
                (local.get $ptr))
              (func (export "bank:policy/metadata@0.2.0#describe") (result i32)
                {extra}
                (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
                (i32.store8 (i32.const 120) (i32.add (i32.const 48) (global.get $calls)))
                (i32.store8 (i32.const 121) (i32.add (i32.load8_u (i32.const 121)) (i32.const 1)))
                (i32.const 200)))"#
        ))
        .unwrap()
    }

    fn versions(pool: &super::Pool, n: usize, fresh: bool) -> Vec<String> {
        let describe = pool.export("metadata", "describe").unwrap();
        (0..n)
            .map(|_| {
                let value = if fresh {
                    pool.call_fresh(&describe, &[]).unwrap()
                } else {
                    pool.call_values(&describe, &[]).unwrap()
                };
                let meta: PolicyMetadata = pool.lift_result(&describe, value).unwrap();
                meta.version
            })
            .collect()
    }

    /// A pool of `wasm` on an engine of its own, with the directory that
    /// holds its compiled code.
    fn pool_of(name: &str, wasm: &[u8]) -> (tempfile::TempDir, super::Pool) {
        let dir = tempfile::tempdir().unwrap();
        let engine = crate::WasmEdgeEngine::for_tests(dir.path());
        let (pool, _) = engine
            .pool_for(name, wasm, engine.contract.clone())
            .unwrap();
        (dir, pool)
    }

    /// A kept instance counts on; reset, its memory and globals are the
    /// snapshot's again, as are those of a new instance made from it.
    #[test]
    fn a_reset_instance_and_a_new_one_start_from_the_snapshot() {
        let wasm = counting_guest(1, "", "");
        let (_dir, pool) = pool_of("count", &wasm);
        assert!(pool.snapshot().is_some(), "the guest could not be reset");
        assert_eq!(versions(&pool, 3, false), ["11", "22", "33"]);
        let mut guest = pool.take().unwrap();
        assert!(pool.reset(&mut guest));
        pool.give_back(guest);
        assert_eq!(versions(&pool, 2, false), ["11", "22"]);
        // Every call on fresh state, reset after the first each time.
        assert_eq!(versions(&pool, 3, true), ["11", "11", "11"]);
        let mut new = pool.instantiate().unwrap();
        assert!(
            new.mapped,
            "a new instance does not start from the snapshot"
        );
        let describe = pool.export("metadata", "describe").unwrap();
        let value = new.invoke(&pool.contract, &describe, &[]).unwrap();
        let meta: PolicyMetadata = pool.lift_result(&describe, value).unwrap();
        assert_eq!(meta.version, "11");
    }

    /// An instance that has served its calls is reset, not replaced: the
    /// same instance (its memory where it was) answers next, from the
    /// snapshot's state.
    #[test]
    fn an_instance_that_served_its_calls_is_reset_not_replaced() {
        let wasm = counting_guest(1, "", "");
        let (_dir, pool) = pool_of("count", &wasm);
        assert_eq!(versions(&pool, 2, false), ["11", "22"]);
        let mut guest = pool.take().unwrap();
        let base = guest.raw.memory_bytes().unwrap().as_ptr();
        guest.calls = crate::MAX_CALLS_PER_INSTANCE - 1;
        pool.give_back(guest);
        // Its last call, after which it is given back reset.
        assert_eq!(versions(&pool, 1, false), ["33"]);
        let guest = pool.take().unwrap();
        assert_eq!(guest.calls, 0);
        assert_eq!(
            guest.raw.memory_bytes().unwrap().as_ptr(),
            base,
            "the instance was replaced"
        );
        pool.give_back(guest);
        assert_eq!(versions(&pool, 1, false), ["11"]);
    }

    /// Pages written past what a reset copies back are dropped instead, and
    /// read as the snapshot's again all the same.
    #[test]
    fn a_reset_after_many_written_pages_drops_them() {
        // 448 KiB of 0x78 from 64 KiB on: more than `MAX_COPY`.
        let fill = "(memory.fill (i32.const 65536) (i32.const 120) (i32.const 458752))";
        let wasm = counting_guest(8, "", fill);
        let (_dir, pool) = pool_of("fill", &wasm);
        assert!(pool.snapshot().is_some());
        for _ in 0..3 {
            assert_eq!(versions(&pool, 1, true), ["11"]);
            let guest = pool.take().unwrap();
            let memory = guest.raw.memory_bytes().unwrap();
            assert!(memory[65536..65536 + 458752].iter().all(|&b| b == 120));
            pool.give_back(guest);
        }
        let mut guest = pool.take().unwrap();
        assert!(pool.reset(&mut guest));
        let memory = guest.raw.memory_bytes().unwrap();
        assert!(
            memory[65536..].iter().all(|&b| b == 0),
            "written pages survived a reset"
        );
        assert_eq!(&memory[120..122], b"00");
    }

    /// A Rego guest's later instances start from the snapshot taken once
    /// its policy had loaded, and decide as its first does, without loading
    /// the policy again (a load now would fail: its source is made invalid).
    #[test]
    fn a_rego_instance_made_from_the_snapshot_decides_without_loading() {
        use teller_engine::TransferCheck;
        let dir = tempfile::tempdir().unwrap();
        let engine = crate::WasmEdgeEngine::for_tests(&dir.path().join("cache"));
        let policies = dir.path().join("policies");
        std::fs::create_dir(&policies).unwrap();
        std::fs::write(
            policies.join("bank.rego"),
            teller_policy_artifacts::BANK_REGO,
        )
        .unwrap();
        let members = teller_engine::artifact::PolicySource::Dir(policies)
            .transfer_checks()
            .unwrap();
        let mut rego = engine.load_rego(&members[0]).unwrap();
        assert!(
            rego.pool.snapshot().is_some(),
            "the Rego guest could not be reset"
        );
        let (load, mut args) = rego.pool.init.take().unwrap();
        args[1] = rego.pool.arg(&load, 1, "package bank\nallow {").unwrap();
        rego.pool.init = Some((load, args));
        let first = rego.pool.take().unwrap();
        let config = teller_contract::PolicyConfig {
            amount_limit: 1_000_000,
            authorized_roles: vec!["authorized".into()],
            daily_limit: None,
            day_offset_minutes: 0,
        };
        let allowed =
            teller_contract::decode_transfer(teller_contract::EXAMPLE_REQUEST.as_bytes()).unwrap();
        let mut denied = allowed.clone();
        denied.amount = 2_000_000;
        // Two instances besides the first, each made from the snapshot.
        let second = rego.pool.instantiate().unwrap();
        assert!(second.mapped);
        rego.pool.give_back(second);
        assert!(rego.check(&config, &allowed).unwrap().allow);
        assert!(!rego.check(&config, &denied).unwrap().allow);
        rego.pool.give_back(first);
    }

    /// An instance whose memory grew is not reset but dropped; a guest that
    /// could keep state outside its memory and globals gets no snapshot and
    /// fresh state from new instances.
    #[test]
    fn a_grown_or_unresettable_guest_gets_new_instances() {
        let grows = counting_guest(1, "", "(drop (memory.grow (i32.const 1)))");
        let (_dir, pool) = pool_of("grow", &grows);
        assert_eq!(versions(&pool, 1, false), ["11"]);
        let mut guest = pool.take().unwrap();
        assert!(!pool.reset(&mut guest), "a grown memory was reset");
        assert_eq!(versions(&pool, 3, true), ["11", "11", "11"]);
        let table = counting_guest(
            1,
            "(table 1 funcref)",
            "(table.set (i32.const 0) (ref.null func))",
        );
        let (_table_dir, pool) = pool_of("table", &table);
        assert!(
            pool.snapshot().is_none(),
            "a guest changing its table got a snapshot"
        );
        assert_eq!(versions(&pool, 2, false), ["11", "22"]);
        assert_eq!(versions(&pool, 2, true), ["11", "11"]);
    }
}
