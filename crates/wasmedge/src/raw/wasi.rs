//! The WASI a guest's `wasi_snapshot_preview1` imports are bound to:
//! WasmEdge's own for a command, teller's minimal one for a policy.

#![allow(unsafe_code)]

use super::{RawError, name, null};
use crate::ffi;

/// WasmEdge's WASI for a command: `args` (the first is the program's name)
/// and `envs`, the process's stdio, no preopened directories.
pub(super) fn wasi_command(
    args: &[String],
    envs: &[String],
) -> Result<*mut ffi::WasmEdge_ModuleInstanceContext, RawError> {
    let c_strings = |list: &[String], what: &str| {
        list.iter()
            .map(|s| {
                std::ffi::CString::new(s.as_str()).map_err(|_| RawError {
                    code: 0,
                    message: format!("a command {what} holds a NUL byte"),
                })
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let (args, envs) = (c_strings(args, "argument")?, c_strings(envs, "variable")?);
    let arg_ptrs: Vec<*const std::ffi::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    let env_ptrs: Vec<*const std::ffi::c_char> = envs.iter().map(|e| e.as_ptr()).collect();
    // SAFETY: the arrays and their strings outlive the call; WasmEdge copies
    // them.
    let module = unsafe {
        ffi::WasmEdge_ModuleInstanceCreateWASI(
            arg_ptrs.as_ptr(),
            arg_ptrs.len() as u32,
            env_ptrs.as_ptr(),
            env_ptrs.len() as u32,
            std::ptr::null(),
            0,
        )
    };
    if module.is_null() {
        return Err(null("a WASI module"));
    }
    Ok(module)
}

type HostFn = unsafe extern "C" fn(
    *mut std::ffi::c_void,
    *const ffi::WasmEdge_CallingFrameContext,
    *const ffi::WasmEdge_Value,
    *mut ffi::WasmEdge_Value,
) -> ffi::WasmEdge_Result;

/// The part of `wasi_snapshot_preview1` a policy gets, each function with
/// its count of `i32` parameters and results: no arguments, no environment,
/// output accepted and thrown away (a guest must not write into teller's
/// own logs), `proc_exit` as a trap, `sched_yield`. No files, clocks or
/// randomness: a decision depends on its inputs only. A guest that imports
/// any other WASI function is refused when it loads, naming it
/// (`instrument::granted_imports`). (WasmEdge's own WASI module would hand
/// the guest teller's stdio.)
const POLICY_WASI: [(&str, usize, usize, HostFn); 7] = [
    ("args_get", 2, 1, wasi_empty),
    ("args_sizes_get", 2, 1, wasi_no_sizes),
    ("environ_get", 2, 1, wasi_empty),
    ("environ_sizes_get", 2, 1, wasi_no_sizes),
    ("fd_write", 4, 1, wasi_fd_write),
    ("proc_exit", 1, 0, wasi_proc_exit),
    ("sched_yield", 0, 1, wasi_empty),
];

/// The import module [`POLICY_WASI`] serves, which a policy's WASI imports
/// name.
pub(crate) const POLICY_WASI_MODULE: &str = "wasi_snapshot_preview1";

/// The WASI functions teller grants a policy, each with how many `i32`
/// parameters and results it takes.
pub(crate) fn policy_wasi() -> impl Iterator<Item = (&'static str, usize, usize)> {
    POLICY_WASI
        .iter()
        .map(|(name, params, results, _)| (*name, *params, *results))
}

/// The module of [`POLICY_WASI`].
pub(super) fn wasi_shim() -> *mut ffi::WasmEdge_ModuleInstanceContext {
    // SAFETY: the module takes ownership of each function; types are
    // deleted once their function is made; names are copied by WasmEdge.
    unsafe {
        let module = ffi::WasmEdge_ModuleInstanceCreate(name(POLICY_WASI_MODULE));
        if module.is_null() {
            return module;
        }
        for (func, params, results, host) in POLICY_WASI {
            let i32s = |n: usize| vec![ffi::WasmEdge_ValTypeGenI32(); n];
            let (p, r) = (i32s(params), i32s(results));
            let ty = ffi::WasmEdge_FunctionTypeCreate(
                p.as_ptr(),
                p.len() as u32,
                r.as_ptr(),
                r.len() as u32,
            );
            let instance =
                ffi::WasmEdge_FunctionInstanceCreate(ty, Some(host), std::ptr::null_mut(), 0);
            ffi::WasmEdge_FunctionTypeDelete(ty);
            if instance.is_null() {
                ffi::WasmEdge_ModuleInstanceDelete(module);
                return std::ptr::null_mut();
            }
            ffi::WasmEdge_ModuleInstanceAddFunction(module, name(func), instance);
        }
        module
    }
}

const WASI_SUCCESS: i32 = 0;
const WASI_EFAULT: i32 = 21;

/// Writes `value` little-endian at `offset` of the caller's memory.
unsafe fn store_u32(
    frame: *const ffi::WasmEdge_CallingFrameContext,
    offset: i32,
    value: u32,
) -> bool {
    // SAFETY: the frame is the one WasmEdge passed in; `GetPointer` checks
    // the range and returns null outside the memory.
    unsafe {
        let memory = ffi::WasmEdge_CallingFrameGetMemoryInstance(frame, 0);
        if memory.is_null() {
            return false;
        }
        let ptr = ffi::WasmEdge_MemoryInstanceGetPointer(memory, offset as u32, 4);
        if ptr.is_null() {
            return false;
        }
        std::ptr::copy_nonoverlapping(value.to_le_bytes().as_ptr(), ptr, 4);
        true
    }
}

/// Reads a little-endian `u32` at `offset` of the caller's memory.
unsafe fn load_u32(frame: *const ffi::WasmEdge_CallingFrameContext, offset: u32) -> Option<u32> {
    // SAFETY: as in `store_u32`.
    unsafe {
        let memory = ffi::WasmEdge_CallingFrameGetMemoryInstance(frame, 0);
        if memory.is_null() {
            return None;
        }
        let ptr = ffi::WasmEdge_MemoryInstanceGetPointerConst(memory, offset, 4);
        if ptr.is_null() {
            return None;
        }
        let mut bytes = [0u8; 4];
        std::ptr::copy_nonoverlapping(ptr, bytes.as_mut_ptr(), 4);
        Some(u32::from_le_bytes(bytes))
    }
}

fn errno(returns: *mut ffi::WasmEdge_Value, value: i32) -> ffi::WasmEdge_Result {
    // SAFETY: WasmEdge sizes `returns` from the function type: one i32.
    unsafe { *returns = ffi::WasmEdge_ValueGenI32(value) };
    ffi::WasmEdge_Result { Code: 0 }
}

unsafe extern "C" fn wasi_empty(
    _data: *mut std::ffi::c_void,
    _frame: *const ffi::WasmEdge_CallingFrameContext,
    _params: *const ffi::WasmEdge_Value,
    returns: *mut ffi::WasmEdge_Value,
) -> ffi::WasmEdge_Result {
    errno(returns, WASI_SUCCESS)
}

unsafe extern "C" fn wasi_no_sizes(
    _data: *mut std::ffi::c_void,
    frame: *const ffi::WasmEdge_CallingFrameContext,
    params: *const ffi::WasmEdge_Value,
    returns: *mut ffi::WasmEdge_Value,
) -> ffi::WasmEdge_Result {
    // SAFETY: two i32 parameters, by the function type.
    let stored = unsafe {
        let count = ffi::WasmEdge_ValueGetI32(*params);
        let size = ffi::WasmEdge_ValueGetI32(*params.add(1));
        store_u32(frame, count, 0) && store_u32(frame, size, 0)
    };
    errno(returns, if stored { WASI_SUCCESS } else { WASI_EFAULT })
}

unsafe extern "C" fn wasi_fd_write(
    _data: *mut std::ffi::c_void,
    frame: *const ffi::WasmEdge_CallingFrameContext,
    params: *const ffi::WasmEdge_Value,
    returns: *mut ffi::WasmEdge_Value,
) -> ffi::WasmEdge_Result {
    // SAFETY: four i32 parameters, by the function type; memory accesses
    // are bounds-checked by WasmEdge.
    unsafe {
        let iovs = ffi::WasmEdge_ValueGetI32(*params.add(1)) as u32;
        let count = ffi::WasmEdge_ValueGetI32(*params.add(2)) as u32;
        let nwritten = ffi::WasmEdge_ValueGetI32(*params.add(3));
        let mut total: u32 = 0;
        for i in 0..count.min(1024) {
            let Some(len) = iovs
                .checked_add(i * 8 + 4)
                .and_then(|at| load_u32(frame, at))
            else {
                return errno(returns, WASI_EFAULT);
            };
            total = total.saturating_add(len);
        }
        let stored = store_u32(frame, nwritten, total);
        errno(returns, if stored { WASI_SUCCESS } else { WASI_EFAULT })
    }
}

/// `proc_exit` ends the call as a trap: a policy has no process to end.
unsafe extern "C" fn wasi_proc_exit(
    _data: *mut std::ffi::c_void,
    _frame: *const ffi::WasmEdge_CallingFrameContext,
    _params: *const ffi::WasmEdge_Value,
    _returns: *mut ffi::WasmEdge_Value,
) -> ffi::WasmEdge_Result {
    // SAFETY: a plain constructor.
    unsafe { ffi::WasmEdge_ResultGen(ffi::WasmEdge_ErrCategory_UserLevelError, PROC_EXIT) }
}

/// The user-level error `proc_exit` raises.
pub const PROC_EXIT: u32 = 0xE517;
