//! WasmEdge 0.14's C API (`wasmedge/wasmedge.h`), opened when an engine is
//! first made rather than linked.
//!
//! Linked, libwasmedge and the LLVM it carries were loaded at exec by every
//! process of a WasmEdge build (about 25 ms here), `teller --version`,
//! `teller audit verify`, wasmtime runs and the shim's daemons included.
//! Now [`load`] opens the library (`dlopen`) and looks up each function
//! declared below once; the functions here call through that table, so
//! the rest of the crate reads as plain C API calls. The declarations
//! follow the header; a missing symbol is an error at [`load`], not later.

#![allow(
    unsafe_code,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals
)]

use std::ffi::{CStr, c_char, c_void};
use std::sync::OnceLock;

/// A value crossing into or out of WebAssembly.
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct WasmEdge_Value {
    pub Value: u128,
    pub Type: WasmEdge_ValType,
}

/// A value type, opaque to callers.
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct WasmEdge_ValType {
    pub Data: [u8; 8],
}

/// A call's outcome: 0 is success, otherwise category and code.
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct WasmEdge_Result {
    pub Code: u32,
}

/// A borrowed or owned string, not NUL-terminated.
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct WasmEdge_String {
    pub Length: u32,
    pub Buf: *const c_char,
}

macro_rules! opaque {
    ($($name:ident),* $(,)?) => {
        $(
            #[repr(C)]
            pub struct $name {
                _private: [u8; 0],
            }
        )*
    };
}

opaque!(
    WasmEdge_ASTModuleContext,
    WasmEdge_Async,
    WasmEdge_CallingFrameContext,
    WasmEdge_CompilerContext,
    WasmEdge_ConfigureContext,
    WasmEdge_ExecutorContext,
    WasmEdge_FunctionInstanceContext,
    WasmEdge_FunctionTypeContext,
    WasmEdge_GlobalInstanceContext,
    WasmEdge_LoaderContext,
    WasmEdge_MemoryInstanceContext,
    WasmEdge_ModuleInstanceContext,
    WasmEdge_StatisticsContext,
    WasmEdge_StoreContext,
    WasmEdge_ValidatorContext,
);

pub type WasmEdge_HostFunc_t = Option<
    unsafe extern "C" fn(
        Data: *mut c_void,
        CallFrameCxt: *const WasmEdge_CallingFrameContext,
        Params: *const WasmEdge_Value,
        Returns: *mut WasmEdge_Value,
    ) -> WasmEdge_Result,
>;

pub type WasmEdge_Proposal = u32;
pub const WasmEdge_Proposal_MultiMemories: WasmEdge_Proposal = 11;
pub const WasmEdge_Proposal_Threads: WasmEdge_Proposal = 12;

pub type WasmEdge_CompilerOptimizationLevel = u32;
pub const WasmEdge_CompilerOptimizationLevel_O3: WasmEdge_CompilerOptimizationLevel = 3;

pub type WasmEdge_CompilerOutputFormat = u32;
/// Native code in a custom section of a valid wasm module.
pub const WasmEdge_CompilerOutputFormat_Wasm: WasmEdge_CompilerOutputFormat = 1;

pub type WasmEdge_ErrCategory = u32;
pub const WasmEdge_ErrCategory_UserLevelError: WasmEdge_ErrCategory = 1;

pub type WasmEdge_ErrCode = u32;
pub const WasmEdge_ErrCode_Terminated: WasmEdge_ErrCode = 1;
pub const WasmEdge_ErrCode_CostLimitExceeded: WasmEdge_ErrCode = 3;
pub const WasmEdge_ErrCode_Interrupted: WasmEdge_ErrCode = 7;

/// Where the library is: next to the prefix this build was linked for
/// (`WASMEDGE_LIB_DIR` at build time), else the loader's search.
const LIBRARY: &str = match option_env!("TELLER_WASMEDGE_LIBRARY") {
    Some(path) => path,
    None => "libwasmedge.so.0",
};

/// What to do when the library is missing or wrong: the same binary runs
/// in this repository and, as the shim, on a Kubernetes node.
const INSTALL: &str = "install WasmEdge 0.14.1 where this build expects it \
     (in teller's repository: scripts/wasmedge-setup; on a node: Debian 13's libwasmedge0, \
     as runtimeclass/README.md says)";

static API: OnceLock<Result<Api, String>> = OnceLock::new();

/// Opens libwasmedge and looks up every function; the first call does the
/// work, later ones return its outcome.
pub fn load() -> Result<(), String> {
    match API.get_or_init(open) {
        Ok(_) => Ok(()),
        Err(e) => Err(e.clone()),
    }
}

fn open() -> Result<Api, String> {
    let path = format!("{LIBRARY}\0");
    // SAFETY: a NUL-terminated path; the handle is never closed, so the
    // functions stay valid for the life of the process.
    unsafe {
        let lib = libc::dlopen(path.as_ptr().cast(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if lib.is_null() {
            return Err(format!(
                "cannot load WasmEdge ({LIBRARY}): {}; {INSTALL}",
                dl_error()
            ));
        }
        Api::open(lib)
    }
}

fn dl_error() -> String {
    // SAFETY: dlerror returns null or a NUL-terminated string of its own.
    unsafe {
        let e = libc::dlerror();
        if e.is_null() {
            "unknown error".into()
        } else {
            CStr::from_ptr(e).to_string_lossy().into_owned()
        }
    }
}

/// # Safety
/// `lib` is an open handle; `name` ends in NUL.
unsafe fn symbol(lib: *mut c_void, name: &str) -> Result<*mut c_void, String> {
    // SAFETY: as the caller promises.
    let f = unsafe { libc::dlsym(lib, name.as_ptr().cast()) };
    if f.is_null() {
        return Err(format!(
            "{LIBRARY} has no {}: not WasmEdge 0.14; {INSTALL}",
            name.trim_end_matches('\0')
        ));
    }
    Ok(f)
}

/// The table, once [`load`] has succeeded. Nothing calls into WasmEdge
/// before an engine exists, and making one loads the library, so the
/// other case is a bug in teller; it stops the process rather than call a
/// null function.
fn api() -> &'static Api {
    match API.get() {
        Some(Ok(api)) => api,
        _ => {
            eprintln!("teller: a WasmEdge function was called before WasmEdge was loaded");
            std::process::abort()
        }
    }
}

macro_rules! api {
    ($(fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?;)*) => {
        struct Api {
            $($name: unsafe extern "C" fn($($ty),*) $(-> $ret)?,)*
        }

        impl Api {
            /// # Safety
            /// `lib` is an open handle of libwasmedge.
            unsafe fn open(lib: *mut c_void) -> Result<Api, String> {
                Ok(Api {
                    $($name: {
                        // SAFETY: an open handle, a NUL-terminated name.
                        let f = unsafe { symbol(lib, concat!(stringify!($name), "\0"))? };
                        // SAFETY: the symbol is this function of the C API,
                        // declared here as the header declares it.
                        unsafe {
                            std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($ty),*) $(-> $ret)?>(f)
                        }
                    },)*
                })
            }
        }

        $(
            /// # Safety
            /// As WasmEdge's C API requires of this function.
            #[inline]
            pub unsafe fn $name($($arg: $ty),*) $(-> $ret)? {
                // SAFETY: the caller keeps the C API's rules.
                unsafe { (api().$name)($($arg),*) }
            }
        )*
    };
}

api! {
    fn WasmEdge_ASTModuleDelete(Cxt: *mut WasmEdge_ASTModuleContext);
    fn WasmEdge_AsyncCancel(Cxt: *mut WasmEdge_Async);
    fn WasmEdge_AsyncDelete(Cxt: *mut WasmEdge_Async);
    fn WasmEdge_AsyncGet(Cxt: *const WasmEdge_Async, Returns: *mut WasmEdge_Value, ReturnLen: u32) -> WasmEdge_Result;
    fn WasmEdge_AsyncWait(Cxt: *const WasmEdge_Async);
    fn WasmEdge_CallingFrameGetMemoryInstance(Cxt: *const WasmEdge_CallingFrameContext, Idx: u32) -> *mut WasmEdge_MemoryInstanceContext;
    fn WasmEdge_CompilerCompileFromBuffer(Cxt: *mut WasmEdge_CompilerContext, InBuffer: *const u8, InBufferLen: u64, OutPath: *const c_char) -> WasmEdge_Result;
    fn WasmEdge_CompilerCreate(ConfCxt: *const WasmEdge_ConfigureContext) -> *mut WasmEdge_CompilerContext;
    fn WasmEdge_CompilerDelete(Cxt: *mut WasmEdge_CompilerContext);
    fn WasmEdge_ConfigureAddProposal(Cxt: *mut WasmEdge_ConfigureContext, Prop: WasmEdge_Proposal);
    fn WasmEdge_ConfigureCompilerSetInterruptible(Cxt: *mut WasmEdge_ConfigureContext, IsInterruptible: bool);
    fn WasmEdge_ConfigureCompilerSetOptimizationLevel(Cxt: *mut WasmEdge_ConfigureContext, Level: WasmEdge_CompilerOptimizationLevel);
    fn WasmEdge_ConfigureCompilerSetOutputFormat(Cxt: *mut WasmEdge_ConfigureContext, Format: WasmEdge_CompilerOutputFormat);
    fn WasmEdge_ConfigureCreate() -> *mut WasmEdge_ConfigureContext;
    fn WasmEdge_ConfigureDelete(Cxt: *mut WasmEdge_ConfigureContext);
    fn WasmEdge_ConfigureSetForceInterpreter(Cxt: *mut WasmEdge_ConfigureContext, IsForceInterpreter: bool);
    fn WasmEdge_ConfigureSetMaxMemoryPage(Cxt: *mut WasmEdge_ConfigureContext, Page: u32);
    fn WasmEdge_ConfigureStatisticsSetCostMeasuring(Cxt: *mut WasmEdge_ConfigureContext, IsMeasure: bool);
    fn WasmEdge_ExecutorAsyncInvoke(Cxt: *mut WasmEdge_ExecutorContext, FuncCxt: *const WasmEdge_FunctionInstanceContext, Params: *const WasmEdge_Value, ParamLen: u32) -> *mut WasmEdge_Async;
    fn WasmEdge_ExecutorCreate(ConfCxt: *const WasmEdge_ConfigureContext, StatCxt: *mut WasmEdge_StatisticsContext) -> *mut WasmEdge_ExecutorContext;
    fn WasmEdge_ExecutorDelete(Cxt: *mut WasmEdge_ExecutorContext);
    fn WasmEdge_ExecutorInstantiate(Cxt: *mut WasmEdge_ExecutorContext, ModuleCxt: *mut *mut WasmEdge_ModuleInstanceContext, StoreCxt: *mut WasmEdge_StoreContext, ASTCxt: *const WasmEdge_ASTModuleContext) -> WasmEdge_Result;
    fn WasmEdge_ExecutorInvoke(Cxt: *mut WasmEdge_ExecutorContext, FuncCxt: *const WasmEdge_FunctionInstanceContext, Params: *const WasmEdge_Value, ParamLen: u32, Returns: *mut WasmEdge_Value, ReturnLen: u32) -> WasmEdge_Result;
    fn WasmEdge_ExecutorRegisterImport(Cxt: *mut WasmEdge_ExecutorContext, StoreCxt: *mut WasmEdge_StoreContext, ImportCxt: *const WasmEdge_ModuleInstanceContext) -> WasmEdge_Result;
    fn WasmEdge_FunctionInstanceCreate(Type: *const WasmEdge_FunctionTypeContext, HostFunc: WasmEdge_HostFunc_t, Data: *mut c_void, Cost: u64) -> *mut WasmEdge_FunctionInstanceContext;
    fn WasmEdge_FunctionInstanceDelete(Cxt: *mut WasmEdge_FunctionInstanceContext);
    fn WasmEdge_FunctionInstanceGetFunctionType(Cxt: *const WasmEdge_FunctionInstanceContext) -> *const WasmEdge_FunctionTypeContext;
    fn WasmEdge_FunctionTypeCreate(ParamList: *const WasmEdge_ValType, ParamLen: u32, ReturnList: *const WasmEdge_ValType, ReturnLen: u32) -> *mut WasmEdge_FunctionTypeContext;
    fn WasmEdge_FunctionTypeDelete(Cxt: *mut WasmEdge_FunctionTypeContext);
    fn WasmEdge_FunctionTypeGetReturns(Cxt: *const WasmEdge_FunctionTypeContext, List: *mut WasmEdge_ValType, Len: u32) -> u32;
    fn WasmEdge_FunctionTypeGetReturnsLength(Cxt: *const WasmEdge_FunctionTypeContext) -> u32;
    fn WasmEdge_GlobalInstanceGetValue(Cxt: *const WasmEdge_GlobalInstanceContext) -> WasmEdge_Value;
    fn WasmEdge_GlobalInstanceSetValue(Cxt: *mut WasmEdge_GlobalInstanceContext, Value: WasmEdge_Value) -> WasmEdge_Result;
    fn WasmEdge_LoaderCreate(ConfCxt: *const WasmEdge_ConfigureContext) -> *mut WasmEdge_LoaderContext;
    fn WasmEdge_LoaderDelete(Cxt: *mut WasmEdge_LoaderContext);
    fn WasmEdge_LoaderParseFromBuffer(Cxt: *mut WasmEdge_LoaderContext, Module: *mut *mut WasmEdge_ASTModuleContext, Buf: *const u8, BufLen: u32) -> WasmEdge_Result;
    fn WasmEdge_LogOff();
    fn WasmEdge_MemoryInstanceGrowPage(Cxt: *mut WasmEdge_MemoryInstanceContext, Page: u32) -> WasmEdge_Result;
    fn WasmEdge_MemoryInstanceGetPageSize(Cxt: *const WasmEdge_MemoryInstanceContext) -> u32;
    fn WasmEdge_MemoryInstanceGetPointer(Cxt: *mut WasmEdge_MemoryInstanceContext, Offset: u32, Length: u32) -> *mut u8;
    fn WasmEdge_MemoryInstanceGetPointerConst(Cxt: *const WasmEdge_MemoryInstanceContext, Offset: u32, Length: u32) -> *const u8;
    fn WasmEdge_MemoryInstanceSetData(Cxt: *mut WasmEdge_MemoryInstanceContext, Data: *const u8, Offset: u32, Length: u32) -> WasmEdge_Result;
    fn WasmEdge_ModuleInstanceAddFunction(Cxt: *mut WasmEdge_ModuleInstanceContext, Name: WasmEdge_String, FuncCxt: *mut WasmEdge_FunctionInstanceContext);
    fn WasmEdge_ModuleInstanceCreate(ModuleName: WasmEdge_String) -> *mut WasmEdge_ModuleInstanceContext;
    fn WasmEdge_ModuleInstanceCreateWASI(Args: *const *const c_char, ArgLen: u32, Envs: *const *const c_char, EnvLen: u32, Preopens: *const *const c_char, PreopenLen: u32) -> *mut WasmEdge_ModuleInstanceContext;
    fn WasmEdge_ModuleInstanceDelete(Cxt: *mut WasmEdge_ModuleInstanceContext);
    fn WasmEdge_ModuleInstanceFindFunction(Cxt: *const WasmEdge_ModuleInstanceContext, Name: WasmEdge_String) -> *mut WasmEdge_FunctionInstanceContext;
    fn WasmEdge_ModuleInstanceFindGlobal(Cxt: *const WasmEdge_ModuleInstanceContext, Name: WasmEdge_String) -> *mut WasmEdge_GlobalInstanceContext;
    fn WasmEdge_ModuleInstanceFindMemory(Cxt: *const WasmEdge_ModuleInstanceContext, Name: WasmEdge_String) -> *mut WasmEdge_MemoryInstanceContext;
    fn WasmEdge_ModuleInstanceWASIGetExitCode(Cxt: *const WasmEdge_ModuleInstanceContext) -> u32;
    fn WasmEdge_ResultGen(Category: WasmEdge_ErrCategory, Code: u32) -> WasmEdge_Result;
    fn WasmEdge_ResultGetCode(Res: WasmEdge_Result) -> u32;
    fn WasmEdge_ResultGetMessage(Res: WasmEdge_Result) -> *const c_char;
    fn WasmEdge_ResultOK(Res: WasmEdge_Result) -> bool;
    fn WasmEdge_StatisticsClear(Cxt: *mut WasmEdge_StatisticsContext);
    fn WasmEdge_StatisticsCreate() -> *mut WasmEdge_StatisticsContext;
    fn WasmEdge_StatisticsDelete(Cxt: *mut WasmEdge_StatisticsContext);
    fn WasmEdge_StatisticsSetCostLimit(Cxt: *mut WasmEdge_StatisticsContext, Limit: u64);
    fn WasmEdge_StoreCreate() -> *mut WasmEdge_StoreContext;
    fn WasmEdge_StoreDelete(Cxt: *mut WasmEdge_StoreContext);
    fn WasmEdge_StringWrap(Buf: *const c_char, Len: u32) -> WasmEdge_String;
    fn WasmEdge_ValTypeGenF32() -> WasmEdge_ValType;
    fn WasmEdge_ValTypeGenF64() -> WasmEdge_ValType;
    fn WasmEdge_ValTypeGenI32() -> WasmEdge_ValType;
    fn WasmEdge_ValTypeGenI64() -> WasmEdge_ValType;
    fn WasmEdge_ValTypeIsF32(ValType: WasmEdge_ValType) -> bool;
    fn WasmEdge_ValTypeIsF64(ValType: WasmEdge_ValType) -> bool;
    fn WasmEdge_ValTypeIsI32(ValType: WasmEdge_ValType) -> bool;
    fn WasmEdge_ValTypeIsI64(ValType: WasmEdge_ValType) -> bool;
    fn WasmEdge_ValidatorCreate(ConfCxt: *const WasmEdge_ConfigureContext) -> *mut WasmEdge_ValidatorContext;
    fn WasmEdge_ValidatorDelete(Cxt: *mut WasmEdge_ValidatorContext);
    fn WasmEdge_ValidatorValidate(Cxt: *mut WasmEdge_ValidatorContext, ASTCxt: *const WasmEdge_ASTModuleContext) -> WasmEdge_Result;
    fn WasmEdge_ValueGenF32(Val: f32) -> WasmEdge_Value;
    fn WasmEdge_ValueGenF64(Val: f64) -> WasmEdge_Value;
    fn WasmEdge_ValueGenI32(Val: i32) -> WasmEdge_Value;
    fn WasmEdge_ValueGenI64(Val: i64) -> WasmEdge_Value;
    fn WasmEdge_ValueGetF32(Val: WasmEdge_Value) -> f32;
    fn WasmEdge_ValueGetF64(Val: WasmEdge_Value) -> f64;
    fn WasmEdge_ValueGetI32(Val: WasmEdge_Value) -> i32;
    fn WasmEdge_ValueGetI64(Val: WasmEdge_Value) -> i64;
    fn WasmEdge_VersionGet() -> *const c_char;
}
