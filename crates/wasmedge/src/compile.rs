//! Compiled code for guests: WasmEdge's AOT compiler, the cache, and
//! tiered start (the interpreter first, compiled code swapped in once built
//! in the background).

use crate::raw::Config;
use crate::raw::{self, AstModule};
use crate::{WasmEdgeEngine, instrument};
use std::sync::{Arc, Mutex};
use teller_contract::{Error, ErrorCode};
use teller_engine::artifact::sha256_hex;
use teller_engine::cache::ArtifactCache;

impl WasmEdgeEngine {
    /// The module's slot: its compiled code if cached (or not tiered),
    /// else the interpreted module now and the compiled one when built.
    pub(crate) fn module_slot(
        &self,
        name: &str,
        wasm: &[u8],
    ) -> Result<(ModuleSlot, String), Error> {
        // Before the cache: an entry compiled before this check existed is
        // refused as a new policy would be.
        instrument::granted_imports(wasm, &self.hosts).map_err(|e| {
            Error::internal(ErrorCode::PolicyInvalid, format!("policy {name}: {e}"))
        })?;
        // The policy is known by the sha256 of what it is; what runs has
        // the deadline's checks added.
        let sha256 = sha256_hex(wasm);
        let key = self.key(&sha256);
        if let Some(compiled) = self.cache.get(&key) {
            // Cached under these bytes' sha256: instrumented (and checked)
            // when it was compiled.
            let module = Arc::new(load(&self.config, name, &compiled)?);
            return Ok((Arc::new(std::sync::RwLock::new(module)), sha256));
        }
        let wasm = &instrument::instrument(wasm).map_err(|e| {
            Error::internal(ErrorCode::PolicyInvalid, format!("policy {name}: {e}"))
        })?;
        if !self.tiered {
            let module = Arc::new(compiled(&self.config, &self.cache, &key, name, wasm)?);
            return Ok((Arc::new(std::sync::RwLock::new(module)), sha256));
        }
        let slot: ModuleSlot = Arc::new(std::sync::RwLock::new(Arc::new(load(
            &self.interpreter,
            name,
            wasm,
        )?)));
        let (config, cache, weak, host) = (
            self.config.clone(),
            self.cache.clone(),
            Arc::downgrade(&slot),
            self.hosts.clone(),
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
                let compiled = compiled(&config, &cache, &key, &name, &wasm).and_then(|module| {
                    // Only a module that instantiates replaces one that does.
                    raw::Instance::new(&config, &module, measure_cost, raw::Wasi::Shim, &host)
                        .map(|_| module)
                        .map_err(|e| {
                            Error::internal(
                                ErrorCode::PolicyInvalid,
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
}

/// `wasm` compiled, from the cache under `key` or built (and cached) now.
pub(crate) fn compiled(
    config: &Config,
    cache: &ArtifactCache,
    key: &str,
    name: &str,
    wasm: &[u8],
) -> Result<AstModule, Error> {
    let code = cache.get_or_build(key, || compile(config, name, wasm))?;
    load(config, name, &code)
}

/// A module as WasmEdge runs it: AOT code when `bytes` carry it, else
/// interpreted.
pub(crate) fn load(config: &Config, name: &str, bytes: &[u8]) -> Result<AstModule, Error> {
    AstModule::load(config, bytes).map_err(|e| {
        Error::internal(
            ErrorCode::PolicyInvalid,
            format!("policy {name} cannot be loaded: {e}"),
        )
    })
}

/// WasmEdge's AOT compiler (LLVM): the module with native code added.
pub(crate) fn compile(config: &Config, name: &str, wasm: &[u8]) -> Result<Vec<u8>, Error> {
    let failed = |what: String| {
        Error::internal(
            ErrorCode::PolicyInvalid,
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
    config
        .compile(wasm, &out)
        .map_err(|e| failed(e.to_string()))?;
    std::fs::read(&out).map_err(|e| failed(e.to_string()))
}

/// Background compilations of this process.
pub(crate) static BACKGROUND: Background = Background::new();

/// Runs background work one at a time, and stops it for good before the
/// process exits: exit runs WasmEdge's and LLVM's static destructors, which
/// crash a compilation still going.
pub(crate) struct Background {
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
    pub(crate) fn start(&self) -> Option<std::sync::MutexGuard<'_, ()>> {
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
pub(crate) type ModuleSlot = Arc<std::sync::RwLock<Arc<AstModule>>>;

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
