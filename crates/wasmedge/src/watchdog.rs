//! One thread that stops WasmEdge calls past their deadline.
//!
//! A call arms the watchdog with its deadline and its instance's
//! [`StopHandle`], and disarms it when it returns. Arming and disarming take
//! one mutex, and the watchdog stops a call only while holding it, so a
//! handle is never used after its call has disarmed. The watchdog wakes
//! every [`TICK`] rather than being woken by each call: a futex wake per
//! call cost more than the call.

use super::raw::StopHandle;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// How late past its deadline a call may be stopped.
pub const TICK: Duration = Duration::from_millis(5);

pub struct Watchdog {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    armed: BTreeMap<(Instant, u64), StopHandle>,
    /// Calls stopped but not yet disarmed.
    fired: HashSet<u64>,
}

/// An armed deadline; disarm it when the call returns.
pub struct Armed {
    key: (Instant, u64),
    done: bool,
}

impl Watchdog {
    /// The process's watchdog, started on first use.
    pub fn get() -> &'static Watchdog {
        static WATCHDOG: OnceLock<&'static Watchdog> = OnceLock::new();
        WATCHDOG.get_or_init(|| {
            let watchdog: &'static Watchdog = Box::leak(Box::new(Watchdog {
                state: Mutex::new(State::default()),
            }));
            let spawned = std::thread::Builder::new()
                .name("teller-watchdog".into())
                .spawn(move || watchdog.run());
            if let Err(e) = spawned {
                // Without it no deadline fires; say so loudly, keep serving.
                tracing::error!(
                    "cannot start the WasmEdge watchdog: {e}; guest calls have no deadline"
                );
            }
            watchdog
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the call running on `handle`'s instance if it is still running
    /// `after` from now.
    pub fn arm(&self, after: Duration, handle: StopHandle) -> Armed {
        let at = Instant::now() + after;
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        state.armed.insert((at, id), handle);
        drop(state);
        Armed {
            key: (at, id),
            done: false,
        }
    }

    /// Whether the call was stopped; it is no longer armed either way.
    pub fn disarm(&self, mut armed: Armed) -> bool {
        armed.done = true;
        self.release(armed.key)
    }

    fn release(&self, key: (Instant, u64)) -> bool {
        let mut state = self.lock();
        if state.armed.remove(&key).is_some() {
            return false;
        }
        state.fired.remove(&key.1)
    }

    fn run(&self) {
        loop {
            std::thread::sleep(TICK);
            let now = Instant::now();
            let mut state = self.lock();
            while let Some(entry) = state.armed.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                let ((_, id), handle) = entry.remove_entry();
                handle.stop();
                state.fired.insert(id);
            }
        }
    }
}

impl Drop for Armed {
    /// A call that unwinds still disarms.
    fn drop(&mut self) {
        if !self.done {
            Watchdog::get().release(self.key);
        }
    }
}
