//! Host functions a guest imports (`bank:policy/state`): a module of Rust
//! closures over core values, each seeing the calling instance's memory.
//! The canonical ABI around them is [`crate::state`]'s.

#![allow(unsafe_code)]

use super::{RawError, Val, memory_slice, name, null, write_memory_at};
use crate::ffi;
use std::cell::RefCell;
use teller_abi::FlatType;
use teller_contract::Error;

/// A host function: the guest's core arguments in, core results out.
pub type HostFn = dyn Fn(&mut Caller, &[Val]) -> Result<Vec<Val>, Error> + Send + Sync;

pub struct HostFunc {
    pub name: String,
    pub params: Vec<FlatType>,
    pub results: Vec<FlatType>,
    pub call: Box<HostFn>,
}

/// An import module: its name and functions. Shared by every instance
/// that links it, which keeps it alive.
pub struct HostModule {
    pub name: String,
    pub funcs: Vec<HostFunc>,
}

/// The instance calling a host function: its memory, bounds-checked.
pub struct Caller {
    frame: *const ffi::WasmEdge_CallingFrameContext,
}

impl Caller {
    fn memory_instance(&self) -> Option<*mut ffi::WasmEdge_MemoryInstanceContext> {
        // SAFETY: the frame is the one WasmEdge passed to the running host
        // function, valid for the duration of the call.
        let memory = unsafe { ffi::WasmEdge_CallingFrameGetMemoryInstance(self.frame, 0) };
        (!memory.is_null()).then_some(memory)
    }

    /// All of the caller's linear memory. No guest code runs (and no
    /// memory grows) while a host function runs.
    pub fn memory(&self) -> Option<&[u8]> {
        // SAFETY: the caller's memory, which no guest code grows while its
        // host function runs.
        unsafe { memory_slice(self.memory_instance()?) }
    }

    /// Writes `bytes` at `offset`, bounds-checked by WasmEdge.
    pub fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), RawError> {
        let memory = self.memory_instance().ok_or_else(|| RawError {
            code: 0,
            message: "the guest has no memory".into(),
        })?;
        // SAFETY: the caller's memory, alive for the call.
        unsafe { write_memory_at(memory, offset, bytes) }
    }
}

/// The user-level error a failed host function raises; its [`Error`] waits
/// in [`take_failure`] on the calling thread.
pub const HOST_FAILED: u32 = 0xE518;

thread_local! {
    static FAILURE: RefCell<Option<Error>> = const { RefCell::new(None) };
}

/// Why the last host function on this thread failed (the call that raised
/// [`HOST_FAILED`] ran on this thread: WasmEdge calls synchronously).
pub fn take_failure() -> Option<Error> {
    FAILURE.with(|f| f.borrow_mut().take())
}

fn val_type(t: FlatType) -> ffi::WasmEdge_ValType {
    // SAFETY: plain constructors.
    unsafe {
        match t {
            FlatType::I32 => ffi::WasmEdge_ValTypeGenI32(),
            FlatType::I64 => ffi::WasmEdge_ValTypeGenI64(),
            FlatType::F32 => ffi::WasmEdge_ValTypeGenF32(),
            FlatType::F64 => ffi::WasmEdge_ValTypeGenF64(),
        }
    }
}

/// Builds `module`'s WasmEdge module instance. `module` must outlive it:
/// each function's data pointer is its [`HostFunc`].
pub(super) fn instantiate(
    module: &HostModule,
) -> Result<*mut ffi::WasmEdge_ModuleInstanceContext, RawError> {
    // SAFETY: the module instance takes ownership of each function; types
    // are deleted once their function is made; names are copied.
    unsafe {
        let instance = ffi::WasmEdge_ModuleInstanceCreate(name(&module.name));
        if instance.is_null() {
            return Err(null("a host module"));
        }
        for func in &module.funcs {
            let p: Vec<_> = func.params.iter().map(|t| val_type(*t)).collect();
            let r: Vec<_> = func.results.iter().map(|t| val_type(*t)).collect();
            let ty = ffi::WasmEdge_FunctionTypeCreate(
                p.as_ptr(),
                p.len() as u32,
                r.as_ptr(),
                r.len() as u32,
            );
            let data = std::ptr::from_ref(func)
                .cast_mut()
                .cast::<std::ffi::c_void>();
            let f = ffi::WasmEdge_FunctionInstanceCreate(ty, Some(trampoline), data, 0);
            ffi::WasmEdge_FunctionTypeDelete(ty);
            if f.is_null() {
                ffi::WasmEdge_ModuleInstanceDelete(instance);
                return Err(null("a host function"));
            }
            ffi::WasmEdge_ModuleInstanceAddFunction(instance, name(&func.name), f);
        }
        Ok(instance)
    }
}

unsafe extern "C" fn trampoline(
    data: *mut std::ffi::c_void,
    frame: *const ffi::WasmEdge_CallingFrameContext,
    params: *const ffi::WasmEdge_Value,
    returns: *mut ffi::WasmEdge_Value,
) -> ffi::WasmEdge_Result {
    // SAFETY: `data` is the `HostFunc` this function was made from (alive
    // as long as the instance); `params` and `returns` are sized by its
    // type, which its `params` and `results` made.
    unsafe {
        let func = &*data.cast::<HostFunc>();
        let args: Vec<Val> = func
            .params
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let v = *params.add(i);
                match t {
                    FlatType::I32 => Val::I32(ffi::WasmEdge_ValueGetI32(v)),
                    FlatType::I64 => Val::I64(ffi::WasmEdge_ValueGetI64(v)),
                    FlatType::F32 => Val::F32(ffi::WasmEdge_ValueGetF32(v)),
                    FlatType::F64 => Val::F64(ffi::WasmEdge_ValueGetF64(v)),
                }
            })
            .collect();
        let mut caller = Caller { frame };
        // A panic must not unwind into WasmEdge's C++ frames.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            (func.call)(&mut caller, &args)
        }))
        .unwrap_or_else(|_| {
            Err(Error::internal(
                teller_contract::ErrorCode::Internal,
                format!("host function {} panicked", func.name),
            ))
        });
        match outcome {
            Ok(values) if values.len() == func.results.len() => {
                for (i, v) in values.into_iter().enumerate() {
                    *returns.add(i) = v.to_ffi();
                }
                ffi::WasmEdge_Result { Code: 0 }
            }
            Ok(_) => fail(Error::internal(
                teller_contract::ErrorCode::Internal,
                format!(
                    "host function {} returned the wrong number of values",
                    func.name
                ),
            )),
            Err(e) => fail(e),
        }
    }
}

fn fail(e: Error) -> ffi::WasmEdge_Result {
    FAILURE.with(|f| *f.borrow_mut() = Some(e));
    // SAFETY: a plain constructor.
    unsafe { ffi::WasmEdge_ResultGen(ffi::WasmEdge_ErrCategory_UserLevelError, HOST_FAILED) }
}
