//! Guests run otherwise than as pooled policies: a function command as a
//! container's process, and any core module called with [`Value`]s.

use crate::compile::load;
use crate::pool::{GuestInstance, Pool};
use crate::{WasmEdgeEngine, raw};
use std::sync::Arc;
use teller_abi::{Contract, ExportFunc, Value};
use teller_contract::{Error, ErrorCode};

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
        let raw = raw::Instance::new(&self.config, &module, self.limits.fuel.is_some(), wasi, &[])
            .map_err(|e| {
                Error::internal(
                    ErrorCode::PolicyInvalid,
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
            pending_post: None,
            cleanup_failed: false,
            mapped: false,
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
