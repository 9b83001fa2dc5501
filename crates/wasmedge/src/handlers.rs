//! Keeps WasmEdge's fault handlers installed for the life of the process.
//!
//! WasmEdge 0.14 turns a trap in compiled code (an out-of-bounds access, a
//! division by zero) into an error through SIGSEGV, SIGBUS and SIGFPE
//! handlers. It installs them when a thread enters compiled code and no
//! other thread is in it, and restores the defaults when the last one
//! leaves: six `sigaction` calls per entry on an idle engine, and a
//! decision enters a guest about a dozen times (the call, `cabi_realloc`
//! for each string, `cabi_post_return`). The count of threads inside is
//! process-wide, so one call that never returns keeps the handlers in
//! place, as wasmtime keeps its own: a thread parked in a host function
//! called from a compiled module of two instructions, from when the
//! process starts serving.

use crate::raw;
use crate::raw::Config;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use teller_contract::{Error, ErrorCode};
use teller_engine::cache::ArtifactCache;

/// `(import "teller:handlers" "park" (func)) (func (export "hold") call 0)`.
const HOLD: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
    0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type 0: [] -> []
    0x02, 0x18, 0x01, 0x0f, b't', b'e', b'l', b'l', b'e', b'r', b':', b'h', b'a', b'n', b'd', b'l',
    b'e', b'r', b's', 0x04, b'p', b'a', b'r', b'k', 0x00, 0x00, // import func 0
    0x03, 0x02, 0x01, 0x00, // func 1: type 0
    0x07, 0x08, 0x01, 0x04, b'h', b'o', b'l', b'd', 0x00, 0x01, // export "hold"
    0x0a, 0x06, 0x01, 0x04, 0x00, 0x10, 0x00, 0x0b, // body: call 0
];

/// What parking needs, set by the first engine of the process.
struct Plan {
    config: Arc<Config>,
    cache: ArtifactCache,
    key: String,
    fuel: bool,
}

static PLAN: OnceLock<Plan> = OnceLock::new();
static STARTED: AtomicBool = AtomicBool::new(false);
/// Set once the thread is inside the compiled call.
static PARKED: AtomicBool = AtomicBool::new(false);

/// Notes how to park, once per process. Nothing runs yet.
pub(crate) fn arm(engine: &crate::WasmEdgeEngine) {
    let _ = PLAN.set(Plan {
        config: engine.config.clone(),
        cache: engine.cache.clone(),
        key: engine.key(&format!(
            "fault-handlers-{}",
            teller_engine::artifact::sha256_hex(HOLD)
        )),
        fuel: engine.limits.fuel.is_some(),
    });
}

/// Parks the thread, in the background, once the process serves (a
/// one-off command gains nothing from it). A failure only costs speed: the
/// handlers are then installed per call, as WasmEdge does by default.
pub(crate) fn start() {
    let Some(plan) = PLAN.get() else {
        return;
    };
    if STARTED.swap(true, Ordering::Relaxed) {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("teller-wasmedge-handlers".into())
        .spawn(move || {
            if let Err(e) = park(plan) {
                tracing::warn!("WasmEdge's fault handlers are installed per call: {e}");
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("WasmEdge's fault handlers are installed per call: {e}");
    }
}

/// Enters the compiled `hold` and never comes back.
fn park(plan: &Plan) -> Result<(), Error> {
    // Compiling, loading and instantiating are background work, which the
    // process waits for before it exits: its static destructors would crash
    // them.
    let Some(running) = crate::compile::BACKGROUND.start() else {
        return Ok(());
    };
    let module =
        crate::compile::compiled(&plan.config, &plan.cache, &plan.key, "fault-handlers", HOLD)?;
    let park = Arc::new(raw::host::HostModule {
        name: "teller:handlers".into(),
        funcs: vec![raw::host::HostFunc {
            name: "park".into(),
            params: vec![],
            results: vec![],
            call: Box::new(|_, _| {
                PARKED.store(true, Ordering::Release);
                tracing::debug!("WasmEdge's fault handlers stay installed");
                loop {
                    std::thread::park();
                }
            }),
        }],
    });
    let mut instance = raw::Instance::new(
        &plan.config,
        &module,
        plan.fuel,
        raw::Wasi::Shim,
        std::slice::from_ref(&park),
    )
    .map_err(|e| Error::internal(ErrorCode::EngineInit, e.to_string()))?;
    drop(running);
    // Never returns.
    instance
        .call("hold", &[])
        .map(drop)
        .map_err(|e| Error::internal(ErrorCode::EngineInit, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(memory 1) (func (export "oob") (result i32) (i32.load (i32.const 0x20000)))`.
    const OUT_OF_BOUNDS: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
        0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7f, // type 0: [] -> [i32]
        0x03, 0x02, 0x01, 0x00, // func 0: type 0
        0x05, 0x03, 0x01, 0x00, 0x01, // memory: 1 page
        0x07, 0x07, 0x01, 0x03, b'o', b'o', b'b', 0x00, 0x00, // export "oob"
        0x0a, 0x0b, 0x01, 0x09, 0x00, 0x41, 0x80, 0x80, 0x08, 0x28, 0x02, 0x00, 0x0b,
    ];

    #[allow(unsafe_code)]
    fn segv_handler() -> libc::sighandler_t {
        // SAFETY: reads the current action only.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            assert_eq!(
                libc::sigaction(libc::SIGSEGV, std::ptr::null(), &mut old),
                0
            );
            old.sa_sigaction
        }
    }

    /// Between calls WasmEdge's handler stays installed (without the held
    /// call the last one out resets SIGSEGV to the default), and a guest's
    /// out-of-bounds load in compiled code is still a trap, not a crash.
    #[test]
    fn the_handlers_stay_installed_between_calls_and_traps_still_trap() {
        let rust = segv_handler();
        let dir = tempfile::tempdir().unwrap();
        let engine = crate::WasmEdgeEngine::for_tests(dir.path());
        let (module, _) = engine.module("out-of-bounds", OUT_OF_BOUNDS).unwrap();
        let mut instance =
            raw::Instance::new(&engine.config, &module, false, raw::Wasi::Shim, &[]).unwrap();
        // A serving process parks the thread, in the background.
        start();
        let started = std::time::Instant::now();
        while !PARKED.load(Ordering::Acquire) {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(60),
                "the handlers were never held"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        for _ in 0..3 {
            let trapped = instance.call("oob", &[]).unwrap_err();
            assert!(
                trapped.message.contains("out of bounds"),
                "not a memory trap: {trapped}"
            );
            let now = segv_handler();
            assert_ne!(now, libc::SIG_DFL, "the handlers were taken down");
            assert_ne!(now, rust, "WasmEdge's handler is not the one installed");
        }
    }
}
