//! Owners of the WasmEdge C API objects behind one guest instance, for what
//! wasmedge-sys does not offer: an executor whose running call another
//! thread can stop (the deadline), and a cost limit reset before each call
//! (the fuel budget).
//!
//! WasmEdge 0.14 has no call to stop a synchronous invoke. A policy's guest
//! tests a flag of its own ([`crate::instrument`]), compiled or
//! interpreted, and its flag's address is its [`StopHandle`]. A guest
//! without one (a function command, run as it came) is interpreted, and the
//! interpreter tests the executor's stop flag at each branch and call, which
//! `WasmEdge_AsyncCancel` sets: such an instance keeps one finished async
//! invocation (of a no-op host function, so no guest code runs for it) to
//! cancel. Only those pay for it: WasmEdge runs an async invocation on a
//! thread of its own. The flags stay set, which is why a stopped instance is
//! never reused.
//! (wasmedge-sys's own `call_func_with_timeout` instead `siglongjmp`s out of
//! WasmEdge's C++ frames, skipping their destructors and its fault guard.)

#![allow(unsafe_code)]

pub mod host;
mod wasi;

use crate::ffi;
use std::ffi::CStr;
use std::sync::Arc;
pub use wasi::PROC_EXIT;
pub(crate) use wasi::{POLICY_WASI_MODULE, policy_wasi};
use wasi::{wasi_command, wasi_shim};

/// A WasmEdge error: its code and message.
#[derive(Debug, Clone)]
pub struct RawError {
    pub code: u32,
    pub message: String,
}

impl std::fmt::Display for RawError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (WasmEdge error {:#x})", self.message, self.code)
    }
}

/// A command called `proc_exit` (its code is [`Instance::exit_code`]).
pub const TERMINATED: u32 = ffi::WasmEdge_ErrCode_Terminated;
/// The call was stopped through its executor's stop flag.
pub const INTERRUPTED: u32 = ffi::WasmEdge_ErrCode_Interrupted;
/// The call went past the statistics' cost limit.
pub const COST_LIMIT_EXCEEDED: u32 = ffi::WasmEdge_ErrCode_CostLimitExceeded;

fn check(result: ffi::WasmEdge_Result) -> Result<(), RawError> {
    // SAFETY: plain functions of a by-value result; the message is a static
    // string owned by WasmEdge.
    unsafe {
        if ffi::WasmEdge_ResultOK(result) {
            return Ok(());
        }
        let message = ffi::WasmEdge_ResultGetMessage(result);
        Err(RawError {
            code: ffi::WasmEdge_ResultGetCode(result),
            message: if message.is_null() {
                "unknown error".to_string()
            } else {
                CStr::from_ptr(message).to_string_lossy().into_owned()
            },
        })
    }
}

fn null(what: &str) -> RawError {
    RawError {
        code: 0,
        message: format!("WasmEdge could not create {what}"),
    }
}

fn name(s: &str) -> ffi::WasmEdge_String {
    // SAFETY: `StringWrap` borrows the bytes without copying; every use
    // below finishes before `s` goes away.
    unsafe { ffi::WasmEdge_StringWrap(s.as_ptr().cast(), s.len() as u32) }
}

/// A WasmEdge configuration: proposals, the memory cap, compiler settings.
/// Loaders, executors and compilers made from it only read it.
pub struct Config(*mut ffi::WasmEdge_ConfigureContext);

// SAFETY: WasmEdge reads a configuration when objects are made from it;
// teller changes it only before sharing it (`&mut self` setters).
unsafe impl Send for Config {}
unsafe impl Sync for Config {}

impl Config {
    pub fn create() -> Result<Self, RawError> {
        // SAFETY: a plain constructor; the value owns the result.
        let config = unsafe { ffi::WasmEdge_ConfigureCreate() };
        if config.is_null() {
            return Err(null("a configuration"));
        }
        Ok(Config(config))
    }

    pub fn as_ptr(&self) -> *const ffi::WasmEdge_ConfigureContext {
        self.0
    }

    pub fn set_max_memory_pages(&mut self, pages: u32) {
        // SAFETY: an owned configuration, not shared yet (`&mut self`).
        unsafe { ffi::WasmEdge_ConfigureSetMaxMemoryPage(self.0, pages) }
    }

    /// Compiled code tests WasmEdge's own stop flag at loops and calls.
    pub fn interruptible(&mut self, on: bool) {
        // SAFETY: as above.
        unsafe { ffi::WasmEdge_ConfigureCompilerSetInterruptible(self.0, on) }
    }

    pub fn add_proposal(&mut self, proposal: ffi::WasmEdge_Proposal) {
        // SAFETY: as above.
        unsafe { ffi::WasmEdge_ConfigureAddProposal(self.0, proposal) }
    }

    /// Compiled code counts its cost against the statistics' limit.
    pub fn measure_cost(&mut self, on: bool) {
        // SAFETY: as above.
        unsafe { ffi::WasmEdge_ConfigureStatisticsSetCostMeasuring(self.0, on) }
    }

    /// LLVM at O3, native code kept in a custom section of the module.
    pub fn compile_optimized_into_wasm(&mut self) {
        // SAFETY: as above.
        unsafe {
            ffi::WasmEdge_ConfigureCompilerSetOptimizationLevel(
                self.0,
                ffi::WasmEdge_CompilerOptimizationLevel_O3,
            );
            ffi::WasmEdge_ConfigureCompilerSetOutputFormat(
                self.0,
                ffi::WasmEdge_CompilerOutputFormat_Wasm,
            );
        }
    }

    /// Run everything on the interpreter, ignoring compiled code.
    pub fn interpreter_mode(&mut self, on: bool) {
        // SAFETY: as above.
        unsafe { ffi::WasmEdge_ConfigureSetForceInterpreter(self.0, on) }
    }

    /// Compiles `wasm` to a module with native code, written to `out`.
    pub fn compile(&self, wasm: &[u8], out: &std::path::Path) -> Result<(), RawError> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(out.as_os_str().as_bytes()).map_err(|_| RawError {
            code: 0,
            message: format!("{} has a NUL byte", out.display()),
        })?;
        // SAFETY: the compiler lives only inside this block; the buffer and
        // path outlive the call.
        unsafe {
            let compiler = ffi::WasmEdge_CompilerCreate(self.0);
            if compiler.is_null() {
                return Err(null("a compiler"));
            }
            let compiled = check(ffi::WasmEdge_CompilerCompileFromBuffer(
                compiler,
                wasm.as_ptr(),
                wasm.len() as u64,
                path.as_ptr(),
            ));
            ffi::WasmEdge_CompilerDelete(compiler);
            compiled
        }
    }
}

impl Drop for Config {
    fn drop(&mut self) {
        // SAFETY: owned; whatever was made from it holds its own copy.
        unsafe { ffi::WasmEdge_ConfigureDelete(self.0) }
    }
}

/// WasmEdge's version, such as `0.14.1`.
pub fn version() -> String {
    // SAFETY: a static NUL-terminated string.
    unsafe { CStr::from_ptr(ffi::WasmEdge_VersionGet()) }
        .to_string_lossy()
        .into_owned()
}

/// WasmEdge logs every trap to stderr; teller reports them itself.
pub fn log_off() {
    // SAFETY: sets a global log level.
    unsafe { ffi::WasmEdge_LogOff() }
}

/// A loaded and validated module (AOT code included), shared by instances.
pub struct AstModule(*mut ffi::WasmEdge_ASTModuleContext);

// SAFETY: WasmEdge only reads a validated AST module when instantiating it.
unsafe impl Send for AstModule {}
unsafe impl Sync for AstModule {}

impl AstModule {
    pub fn load(config: &Config, bytes: &[u8]) -> Result<Self, RawError> {
        let len = u32::try_from(bytes.len()).map_err(|_| RawError {
            code: 0,
            message: "the module is over 4 GiB".into(),
        })?;
        // SAFETY: the loader and validator live only inside this block; the
        // AST is owned by the returned value (or deleted on failure).
        unsafe {
            let loader = ffi::WasmEdge_LoaderCreate(config.as_ptr());
            if loader.is_null() {
                return Err(null("a loader"));
            }
            let mut ast = std::ptr::null_mut();
            let parsed = check(ffi::WasmEdge_LoaderParseFromBuffer(
                loader,
                &mut ast,
                bytes.as_ptr(),
                len,
            ));
            ffi::WasmEdge_LoaderDelete(loader);
            parsed?;
            let module = AstModule(ast);
            let validator = ffi::WasmEdge_ValidatorCreate(config.as_ptr());
            if validator.is_null() {
                return Err(null("a validator"));
            }
            let valid = check(ffi::WasmEdge_ValidatorValidate(validator, module.0));
            ffi::WasmEdge_ValidatorDelete(validator);
            valid.map(|()| module)
        }
    }
}

impl Drop for AstModule {
    fn drop(&mut self) {
        // SAFETY: owned; instances made from it are gone (they hold an Arc).
        unsafe { ffi::WasmEdge_ASTModuleDelete(self.0) }
    }
}

/// A core value crossing into or out of the guest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Val {
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
}

impl From<teller_abi::Flat> for Val {
    fn from(f: teller_abi::Flat) -> Val {
        use teller_abi::Flat;
        match f {
            Flat::I32(v) => Val::I32(v),
            Flat::I64(v) => Val::I64(v),
            Flat::F32(v) => Val::F32(v),
            Flat::F64(v) => Val::F64(v),
        }
    }
}

impl From<Val> for teller_abi::Flat {
    fn from(v: Val) -> teller_abi::Flat {
        use teller_abi::Flat;
        match v {
            Val::I32(v) => Flat::I32(v),
            Val::I64(v) => Flat::I64(v),
            Val::F32(v) => Flat::F32(v),
            Val::F64(v) => Flat::F64(v),
        }
    }
}

impl Val {
    /// As WasmEdge's C API takes it.
    fn to_ffi(self) -> ffi::WasmEdge_Value {
        // SAFETY: plain constructors.
        unsafe {
            match self {
                Val::I32(v) => ffi::WasmEdge_ValueGenI32(v),
                Val::I64(v) => ffi::WasmEdge_ValueGenI64(v),
                Val::F32(v) => ffi::WasmEdge_ValueGenF32(v),
                Val::F64(v) => ffi::WasmEdge_ValueGenF64(v),
            }
        }
    }
}

/// All of `memory`, as a slice valid while no guest code runs (which could
/// grow or move it).
///
/// # Safety
/// `memory` must be a live memory instance, not grown while the slice lives.
unsafe fn memory_slice<'a>(memory: *mut ffi::WasmEdge_MemoryInstanceContext) -> Option<&'a [u8]> {
    // SAFETY: the pointer covers the memory's current size (the caller
    // keeps it from changing).
    unsafe {
        let len = ffi::WasmEdge_MemoryInstanceGetPageSize(memory).checked_mul(65536)?;
        let ptr = ffi::WasmEdge_MemoryInstanceGetPointerConst(memory, 0, len);
        (!ptr.is_null()).then(|| std::slice::from_raw_parts(ptr, len as usize))
    }
}

/// Writes `bytes` at `offset` of `memory`, bounds-checked by WasmEdge.
///
/// # Safety
/// `memory` must be a live memory instance.
unsafe fn write_memory_at(
    memory: *mut ffi::WasmEdge_MemoryInstanceContext,
    offset: u32,
    bytes: &[u8],
) -> Result<(), RawError> {
    // SAFETY: `SetData` checks the range against the memory's size.
    unsafe {
        check(ffi::WasmEdge_MemoryInstanceSetData(
            memory,
            bytes.as_ptr(),
            offset,
            u32::try_from(bytes.len()).unwrap_or(u32::MAX),
        ))
    }
}

/// Sets an instance's stop flag (the guest's own, or its executor's for a
/// guest without one), from any thread. A copy of a pointer: whoever holds one must know the instance is still alive (the
/// watchdog knows because calls disarm it before they return).
#[derive(Debug, Clone, Copy)]
pub struct StopHandle {
    /// The finished async invocation whose cancelling stops the executor;
    /// null for a guest with its own flag.
    executor: *mut ffi::WasmEdge_Async,
    /// The guest's stop flag ([`crate::instrument`]), when it has one.
    flag: *mut u32,
}

// SAFETY: `WasmEdge_AsyncCancel` only stores to an atomic flag and wakes
// waiters; the guest's flag is only ever stored to atomically.
unsafe impl Send for StopHandle {}

impl StopHandle {
    /// Stops whatever the instance runs: a guest with its own flag at its
    /// next function or loop start, compiled or interpreted; one without at
    /// its next branch or call (the executor's flag).
    pub fn stop(self) {
        // SAFETY: the instance, and so the handle and the flag's memory,
        // is alive (see above); the flag is 4-aligned (a page's start).
        unsafe {
            if !self.flag.is_null() {
                std::sync::atomic::AtomicU32::from_ptr(self.flag)
                    .store(1, std::sync::atomic::Ordering::SeqCst);
            }
            if !self.executor.is_null() {
                ffi::WasmEdge_AsyncCancel(self.executor)
            }
        }
    }
}

/// One instance of a module with the executor, store, WASI module and
/// statistics it runs on. Calls must not overlap (`&mut self`).
pub struct Instance {
    stopper: StopHandle,
    instance: *mut ffi::WasmEdge_ModuleInstanceContext,
    wasi: *mut ffi::WasmEdge_ModuleInstanceContext,
    /// The host functions the guest may import, one module instance per
    /// interface, and what they are made from.
    hosts: Vec<(
        *mut ffi::WasmEdge_ModuleInstanceContext,
        Arc<host::HostModule>,
    )>,
    store: *mut ffi::WasmEdge_StoreContext,
    executor: *mut ffi::WasmEdge_ExecutorContext,
    /// Present when the module was compiled to measure cost.
    stats: *mut ffi::WasmEdge_StatisticsContext,
    /// The guest's batch allocator ([`crate::instrument`]), when it has one.
    alloc: *mut ffi::WasmEdge_FunctionInstanceContext,
    /// The start of the flag's page, where the batch allocator's pairs go.
    stage: *mut u8,
    /// The exported `memory`, looked up once.
    memory: *mut ffi::WasmEdge_MemoryInstanceContext,
    /// Exported functions already looked up (a lookup takes a lock and
    /// walks a map of names).
    funcs: Vec<(Box<str>, *mut ffi::WasmEdge_FunctionInstanceContext)>,
    /// The guest's mutable globals, in index order, when its state can be
    /// reset ([`crate::instrument`]); `None` when it cannot.
    globals: Option<Vec<*mut ffi::WasmEdge_GlobalInstanceContext>>,
}

// SAFETY: all of it is owned by this value and used by one thread at a
// time (`&mut self`), except the stop handle, which is built for sharing.
unsafe impl Send for Instance {}

/// The executor's stop flag is tested by the interpreter; a no-op host
/// function gives the instance its [`StopHandle`] without running guest code.
unsafe extern "C" fn noop(
    _data: *mut std::ffi::c_void,
    _frame: *const ffi::WasmEdge_CallingFrameContext,
    _params: *const ffi::WasmEdge_Value,
    _returns: *mut ffi::WasmEdge_Value,
) -> ffi::WasmEdge_Result {
    ffi::WasmEdge_Result { Code: 0 }
}

/// The batch allocator's name, for errors.
const ALLOC_NAME: &str = crate::instrument::ALLOC_EXPORT;

/// What a guest's `wasi_snapshot_preview1` imports are bound to.
pub enum Wasi<'a> {
    /// A policy: [`wasi_shim`], with no stdio and no environment.
    Shim,
    /// A function command run as a container's process: WasmEdge's own
    /// WASI with these arguments and `NAME=VALUE` variables, on the
    /// process's stdin, stdout and stderr, and no files.
    Command {
        args: &'a [String],
        envs: &'a [String],
    },
}

impl Instance {
    /// Instantiates `module` with `wasi` for its WASI imports and `hosts`
    /// for teller's own. `measure_cost` must match how `config` was set.
    pub fn new(
        config: &Config,
        module: &AstModule,
        measure_cost: bool,
        wasi: Wasi<'_>,
        hosts: &[Arc<host::HostModule>],
    ) -> Result<Self, RawError> {
        // Made first, as it can fail before anything else exists.
        let wasi = match wasi {
            Wasi::Shim => wasi_shim(),
            Wasi::Command { args, envs } => wasi_command(args, envs)?,
        };
        // SAFETY: every object is created here, checked for null, and owned
        // by `Instance` (whose `Drop` deletes it) before anything can fail.
        unsafe {
            let stats = if measure_cost {
                let stats = ffi::WasmEdge_StatisticsCreate();
                if stats.is_null() {
                    if !wasi.is_null() {
                        ffi::WasmEdge_ModuleInstanceDelete(wasi);
                    }
                    return Err(null("statistics"));
                }
                stats
            } else {
                std::ptr::null_mut()
            };
            let executor = ffi::WasmEdge_ExecutorCreate(config.as_ptr(), stats);
            let store = ffi::WasmEdge_StoreCreate();
            let mut this = Instance {
                stopper: StopHandle {
                    executor: std::ptr::null_mut(),
                    flag: std::ptr::null_mut(),
                },
                instance: std::ptr::null_mut(),
                wasi,
                hosts: Vec::new(),
                store,
                executor,
                stats,
                alloc: std::ptr::null_mut(),
                stage: std::ptr::null_mut(),
                memory: std::ptr::null_mut(),
                funcs: Vec::new(),
                globals: None,
            };
            if executor.is_null() || store.is_null() || wasi.is_null() {
                return Err(null("an executor, store or WASI module"));
            }
            check(ffi::WasmEdge_ExecutorRegisterImport(executor, store, wasi))?;
            for module in hosts {
                let instance = host::instantiate(module)?;
                this.hosts.push((instance, module.clone()));
                check(ffi::WasmEdge_ExecutorRegisterImport(
                    executor, store, instance,
                ))?;
            }
            check(ffi::WasmEdge_ExecutorInstantiate(
                executor,
                &mut this.instance,
                store,
                module.0,
            ))?;
            let flag = ffi::WasmEdge_ModuleInstanceFindMemory(
                this.instance,
                name(crate::instrument::EXPORT),
            );
            if !flag.is_null() {
                this.stage = ffi::WasmEdge_MemoryInstanceGetPointer(flag, 0, 65536);
                this.stopper.flag = this.stage.cast();
            }
            if !this.stage.is_null() {
                this.alloc = ffi::WasmEdge_ModuleInstanceFindFunction(
                    this.instance,
                    name(crate::instrument::ALLOC_EXPORT),
                );
            }
            this.memory = ffi::WasmEdge_ModuleInstanceFindMemory(this.instance, name("memory"));
            let reset = name(crate::instrument::RESET_EXPORT);
            if !ffi::WasmEdge_ModuleInstanceFindMemory(this.instance, reset).is_null() {
                let mut globals = Vec::new();
                loop {
                    let export = crate::instrument::global_export(globals.len());
                    let global =
                        ffi::WasmEdge_ModuleInstanceFindGlobal(this.instance, name(&export));
                    if global.is_null() {
                        break;
                    }
                    globals.push(global);
                }
                this.globals = Some(globals);
            }
            // Without a flag of its own, only the executor's can stop it.
            if this.stopper.flag.is_null() {
                this.stopper.executor = Self::stopper(executor)?;
            }
            Ok(this)
        }
    }

    /// Runs the no-op host function asynchronously on `executor` and keeps
    /// the finished handle: cancelling it later stops the executor.
    unsafe fn stopper(
        executor: *mut ffi::WasmEdge_ExecutorContext,
    ) -> Result<*mut ffi::WasmEdge_Async, RawError> {
        if executor.is_null() {
            return Err(null("an executor"));
        }
        // SAFETY: the type and function are deleted once the async run has
        // finished (`AsyncWait`); the handle then refers only to `executor`.
        unsafe {
            let ty = ffi::WasmEdge_FunctionTypeCreate(std::ptr::null(), 0, std::ptr::null(), 0);
            if ty.is_null() {
                return Err(null("a function type"));
            }
            let func =
                ffi::WasmEdge_FunctionInstanceCreate(ty, Some(noop), std::ptr::null_mut(), 0);
            ffi::WasmEdge_FunctionTypeDelete(ty);
            if func.is_null() {
                return Err(null("a host function"));
            }
            let handle = ffi::WasmEdge_ExecutorAsyncInvoke(executor, func, std::ptr::null(), 0);
            if handle.is_null() {
                ffi::WasmEdge_FunctionInstanceDelete(func);
                return Err(null("an async invocation"));
            }
            ffi::WasmEdge_AsyncWait(handle);
            let done = check(ffi::WasmEdge_AsyncGet(handle, std::ptr::null_mut(), 0));
            ffi::WasmEdge_FunctionInstanceDelete(func);
            if let Err(e) = done {
                ffi::WasmEdge_AsyncDelete(handle);
                return Err(e);
            }
            Ok(handle)
        }
    }

    /// The code a command passed to `proc_exit` (0 if it returned).
    pub fn exit_code(&self) -> u32 {
        // SAFETY: `wasi` is owned; for a policy's shim module WasmEdge
        // reports a mismatched module as exit code 1 rather than failing.
        unsafe { ffi::WasmEdge_ModuleInstanceWASIGetExitCode(self.wasi) }
    }

    pub fn stop_handle(&self) -> StopHandle {
        self.stopper
    }

    /// The values of the guest's mutable globals, when its whole state is
    /// them and its memory (`None` when it may keep state elsewhere).
    pub fn global_values(&self) -> Option<Vec<ffi::WasmEdge_Value>> {
        let globals = self.globals.as_ref()?;
        // SAFETY: the globals belong to the owned instance.
        Some(
            globals
                .iter()
                .map(|&g| unsafe { ffi::WasmEdge_GlobalInstanceGetValue(g) })
                .collect(),
        )
    }

    /// Sets the guest's mutable globals to `values`, read from an instance
    /// of the same module by [`Instance::global_values`].
    pub fn set_global_values(&mut self, values: &[ffi::WasmEdge_Value]) -> Result<(), RawError> {
        let globals = self.globals.as_deref().unwrap_or_default();
        if globals.len() != values.len() {
            return Err(RawError {
                code: 0,
                message: format!(
                    "{} global values for {} mutable globals",
                    values.len(),
                    globals.len()
                ),
            });
        }
        for (&global, &value) in globals.iter().zip(values) {
            // SAFETY: the global belongs to the owned instance; WasmEdge
            // checks the value's type and the global's mutability.
            check(unsafe { ffi::WasmEdge_GlobalInstanceSetValue(global, value) })?;
        }
        Ok(())
    }

    /// Grows the exported memory by `pages`, as `memory.grow` would.
    pub fn grow_memory(&mut self, pages: u32) -> Result<(), RawError> {
        let memory = self.memory().ok_or_else(|| null("a memory"))?;
        // SAFETY: the memory belongs to the owned instance; WasmEdge checks
        // the new size against the memory's and the configuration's limits.
        check(unsafe { ffi::WasmEdge_MemoryInstanceGrowPage(memory, pages) })
    }

    /// Whether compiled code can be stopped: the module carries teller's
    /// stop flag ([`crate::instrument`]).
    pub fn has_stop_flag(&self) -> bool {
        !self.stopper.flag.is_null()
    }

    /// Resets the cost count and sets the budget for the next call.
    pub fn set_cost_limit(&mut self, limit: u64) {
        if self.stats.is_null() {
            return;
        }
        // SAFETY: owned statistics; no call is running (`&mut self`).
        unsafe {
            ffi::WasmEdge_StatisticsClear(self.stats);
            ffi::WasmEdge_StatisticsSetCostLimit(self.stats, limit);
        }
    }

    /// Whether the instance exports a function called `func`.
    pub fn has_func(&mut self, func: &str) -> bool {
        !self.func(func).is_null()
    }

    /// The exported function `func` (null if there is none), looked up
    /// once per instance.
    fn func(&mut self, func: &str) -> *mut ffi::WasmEdge_FunctionInstanceContext {
        if let Some((_, f)) = self.funcs.iter().find(|(n, _)| **n == *func) {
            return *f;
        }
        // SAFETY: a lookup in the owned, instantiated module.
        let f = unsafe { ffi::WasmEdge_ModuleInstanceFindFunction(self.instance, name(func)) };
        self.funcs.push((func.into(), f));
        f
    }

    /// Whether the guest has teller's batch allocator.
    pub fn has_batch_alloc(&self) -> bool {
        !self.alloc.is_null()
    }

    /// Whether the guest's batch allocator can first run the post-return
    /// function `post` (one taking an `i32`).
    pub fn can_defer(&mut self, post: &str) -> bool {
        !self.alloc.is_null() && !self.func(&crate::instrument::after(post)).is_null()
    }

    /// `cabi_realloc(0, 0, align, size)` for each `(align, size)` of
    /// `requests`, in order, in one entry into the guest per
    /// [`STAGE_PAIRS`](crate::instrument::STAGE_PAIRS); the pointers go to
    /// `out`. `post`, a post-return function and its argument, runs first,
    /// in the same entry (see [`Instance::can_defer`]).
    pub fn alloc_batch(
        &mut self,
        mut post: Option<(&str, i32)>,
        requests: &[(u32, u32)],
        out: &mut Vec<u32>,
    ) -> Result<(), RawError> {
        use crate::instrument::{STAGE, STAGE_PAIRS};
        if self.alloc.is_null() {
            return Err(RawError {
                code: 0,
                message: format!("the guest has no {}", crate::instrument::ALLOC_EXPORT),
            });
        }
        if requests.is_empty() && post.is_none() {
            return Ok(());
        }
        // One entry per page of pairs, and one for a post-return alone.
        let mut rest = requests;
        loop {
            let batch = rest.chunks(STAGE_PAIRS).next().unwrap_or_default();
            rest = rest.get(batch.len()..).unwrap_or_default();
            let pairs = STAGE as usize..STAGE as usize + batch.len() * 8;
            let mut bytes = Vec::with_capacity(pairs.len());
            for &(align, size) in batch {
                bytes.extend_from_slice(&align.to_le_bytes());
                bytes.extend_from_slice(&size.to_le_bytes());
            }
            // SAFETY: the page is 64 KiB and `pairs` ends inside it
            // (STAGE_PAIRS); nothing else writes there (the watchdog writes
            // only the flag, before STAGE), and no guest code runs now.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    bytes.as_ptr(),
                    self.stage.add(pairs.start),
                    bytes.len(),
                );
            }
            let count = Val::I32(batch.len() as i32);
            match post.take() {
                None => self.call_func(self.alloc, ALLOC_NAME, &[count])?,
                Some((post, arg)) => {
                    let after = crate::instrument::after(post);
                    let f = self.func(&after);
                    self.call_func(f, &after, &[count, Val::I32(arg)])?
                }
            };
            // SAFETY: as above; the guest has returned.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    self.stage.add(pairs.start),
                    bytes.as_mut_ptr(),
                    bytes.len(),
                );
            }
            out.extend(
                bytes
                    .chunks_exact(8)
                    .filter_map(|pair| pair.first_chunk::<4>())
                    .map(|ptr| u32::from_le_bytes(*ptr)),
            );
            if rest.is_empty() {
                return Ok(());
            }
        }
    }

    /// Calls the exported function `func`.
    pub fn call(&mut self, func: &str, args: &[Val]) -> Result<Vec<Val>, RawError> {
        let f = self.func(func);
        self.call_func(f, func, args)
    }

    /// Calls `f`, a function of this instance (or null: `func` is missing).
    fn call_func(
        &mut self,
        f: *mut ffi::WasmEdge_FunctionInstanceContext,
        func: &str,
        args: &[Val],
    ) -> Result<Vec<Val>, RawError> {
        let missing = || RawError {
            code: 0,
            message: format!("the guest has no export {func}"),
        };
        // SAFETY: the function belongs to the owned instance; the argument
        // and result buffers are sized from its type.
        unsafe {
            if f.is_null() {
                return Err(missing());
            }
            let ty = ffi::WasmEdge_FunctionInstanceGetFunctionType(f);
            if ty.is_null() {
                return Err(missing());
            }
            let n = ffi::WasmEdge_FunctionTypeGetReturnsLength(ty);
            let mut types = vec![ffi::WasmEdge_ValType { Data: [0; 8] }; n as usize];
            ffi::WasmEdge_FunctionTypeGetReturns(ty, types.as_mut_ptr(), n);
            let params: Vec<ffi::WasmEdge_Value> = args.iter().map(|a| a.to_ffi()).collect();
            let mut returns = vec![ffi::WasmEdge_ValueGenI32(0); n as usize];
            check(ffi::WasmEdge_ExecutorInvoke(
                self.executor,
                f,
                params.as_ptr(),
                params.len() as u32,
                returns.as_mut_ptr(),
                n,
            ))?;
            returns
                .into_iter()
                .zip(types)
                .map(|(v, t)| {
                    if ffi::WasmEdge_ValTypeIsI32(t) {
                        Ok(Val::I32(ffi::WasmEdge_ValueGetI32(v)))
                    } else if ffi::WasmEdge_ValTypeIsI64(t) {
                        Ok(Val::I64(ffi::WasmEdge_ValueGetI64(v)))
                    } else if ffi::WasmEdge_ValTypeIsF32(t) {
                        Ok(Val::F32(ffi::WasmEdge_ValueGetF32(v)))
                    } else if ffi::WasmEdge_ValTypeIsF64(t) {
                        Ok(Val::F64(ffi::WasmEdge_ValueGetF64(v)))
                    } else {
                        Err(RawError {
                            code: 0,
                            message: format!("{func} returns a reference or vector"),
                        })
                    }
                })
                .collect()
        }
    }

    fn memory(&self) -> Option<*mut ffi::WasmEdge_MemoryInstanceContext> {
        (!self.memory.is_null()).then_some(self.memory)
    }

    /// The exported memory's size in 64 KiB pages.
    pub fn memory_pages(&self) -> Option<u32> {
        // SAFETY: the memory belongs to the owned instance.
        self.memory()
            .map(|m| unsafe { ffi::WasmEdge_MemoryInstanceGetPageSize(m) })
    }

    /// All of the exported linear memory. No guest code can run (and grow
    /// or move it) while the slice borrows `self`.
    pub fn memory_bytes(&self) -> Option<&[u8]> {
        // SAFETY: the memory belongs to the owned instance, and no guest code
        // runs while the slice borrows `self`.
        unsafe { memory_slice(self.memory()?) }
    }

    /// All of the exported linear memory, to write to. No guest code can run
    /// while the slice borrows `self`.
    pub fn memory_bytes_mut(&mut self) -> Option<&mut [u8]> {
        // SAFETY: as for `memory_bytes`; the borrow is exclusive.
        unsafe {
            let memory = self.memory()?;
            let len = ffi::WasmEdge_MemoryInstanceGetPageSize(memory).checked_mul(65536)?;
            let ptr = ffi::WasmEdge_MemoryInstanceGetPointer(memory, 0, len);
            (!ptr.is_null()).then(|| std::slice::from_raw_parts_mut(ptr, len as usize))
        }
    }

    /// Writes `bytes` at `offset` of the exported memory, bounds-checked by
    /// WasmEdge.
    pub fn write_memory(&mut self, offset: u32, bytes: &[u8]) -> Result<(), RawError> {
        let memory = self.memory().ok_or_else(|| RawError {
            code: 0,
            message: "the guest exports no memory".into(),
        })?;
        // SAFETY: the memory belongs to the owned instance.
        unsafe { write_memory_at(memory, offset, bytes) }
    }
}

impl Drop for Instance {
    /// The stopper first (it refers to the executor), then the instances
    /// before the store and executor they were registered with.
    fn drop(&mut self) {
        // SAFETY: each pointer is owned and deleted once; null ones skipped.
        unsafe {
            if !self.stopper.executor.is_null() {
                ffi::WasmEdge_AsyncDelete(self.stopper.executor);
            }
            if !self.instance.is_null() {
                ffi::WasmEdge_ModuleInstanceDelete(self.instance);
            }
            if !self.wasi.is_null() {
                ffi::WasmEdge_ModuleInstanceDelete(self.wasi);
            }
            for (host, _) in self.hosts.drain(..) {
                ffi::WasmEdge_ModuleInstanceDelete(host);
            }
            if !self.store.is_null() {
                ffi::WasmEdge_StoreDelete(self.store);
            }
            if !self.executor.is_null() {
                ffi::WasmEdge_ExecutorDelete(self.executor);
            }
            if !self.stats.is_null() {
                ffi::WasmEdge_StatisticsDelete(self.stats);
            }
        }
    }
}
