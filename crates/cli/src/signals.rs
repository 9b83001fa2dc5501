//! SIGHUP, SIGINT and SIGTERM for `teller serve`: blocked in every thread
//! teller starts and taken by one thread with sigwait(3), so that no signal
//! handler runs for them.
//!
//! A handler is not enough. WasmEdge's AOT compiler (LLVM) installs its own
//! for these signals while it links a guest's native code; it deletes the
//! linker's half-written output, and the linker then ends the whole process
//! with status 1. A pod stopped while it compiled would neither drain nor
//! exit cleanly.

#![allow(unsafe_code)]

use std::sync::atomic::{AtomicI32, Ordering};
use teller_contract::{Error, ErrorCode};
use tokio::sync::{mpsc, oneshot};

const SIGNALS: [libc::c_int; 3] = [libc::SIGHUP, libc::SIGINT, libc::SIGTERM];

/// What the signal thread tells the server.
pub(crate) struct Signals {
    /// One message per SIGHUP: reload the policies.
    pub hangup: mpsc::UnboundedReceiver<()>,
    /// The first SIGTERM or SIGINT, by name: drain and stop.
    pub terminate: oneshot::Receiver<&'static str>,
}

/// The thread in sigwait(3), for the forwarding handler.
static WAITER: AtomicI32 = AtomicI32::new(0);

/// Blocks the three signals in this thread, and so in every thread started
/// from it afterwards, and starts the thread that waits for them. Call it
/// before any other thread starts.
pub(crate) fn watch() -> Result<Signals, Error> {
    let failed = |what: &str, e: std::io::Error| {
        Error::internal(
            ErrorCode::Runtime,
            format!("cannot take SIGHUP, SIGINT and SIGTERM: {what}: {e}"),
        )
    };
    block().map_err(|e| failed("pthread_sigmask", e))?;
    let (hangup_tx, hangup) = mpsc::unbounded_channel();
    let (terminate_tx, terminate) = oneshot::channel();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("teller-signals".into())
        .spawn(move || {
            // SAFETY: gettid has no preconditions.
            WAITER.store(unsafe { libc::gettid() }, Ordering::Release);
            let _ = ready_tx.send(());
            wait(hangup_tx, terminate_tx);
        })
        .map_err(|e| failed("starting its thread", e))?;
    let _ = ready.recv();
    forward_from_other_threads().map_err(|e| failed("sigaction", e))?;
    Ok(Signals { hangup, terminate })
}

/// Blocks SIGHUP, SIGINT and SIGTERM in this thread, and so in every
/// thread started from it afterwards. The node's shim calls it first thing,
/// so that the container processes it forks start with them blocked.
pub fn block() -> std::io::Result<()> {
    let set = signal_set();
    // SAFETY: `set` is an initialised signal set; the old mask is not asked.
    match unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) } {
        0 => Ok(()),
        e => Err(std::io::Error::from_raw_os_error(e)),
    }
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set; sigaddset is given valid
    // signal numbers.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in SIGNALS {
            libc::sigaddset(&mut set, signal);
        }
        set
    }
}

fn wait(hangup: mpsc::UnboundedSender<()>, terminate: oneshot::Sender<&'static str>) {
    let set = signal_set();
    let mut terminate = Some(terminate);
    loop {
        let mut signal = 0;
        // SAFETY: the set is initialised and blocked in this thread.
        if unsafe { libc::sigwait(&set, &mut signal) } != 0 {
            continue;
        }
        match signal {
            libc::SIGHUP => {
                let _ = hangup.send(());
            }
            // A second SIGTERM while draining changes nothing.
            libc::SIGTERM => drop(terminate.take().map(|t| t.send("SIGTERM"))),
            _ => drop(terminate.take().map(|t| t.send("SIGINT"))),
        }
    }
}

/// Threads that teller did not start may not block the signals (the node's
/// shim blocks them before its first thread, so a container's process
/// inherits the mask; another host of `teller_cli` may not), and the kernel
/// may hand one of them the signal. A handler there passes it on to the
/// waiting thread.
fn forward_from_other_threads() -> std::io::Result<()> {
    extern "C" fn forward(signal: libc::c_int) {
        // SAFETY: getpid and tgkill are async-signal-safe.
        unsafe {
            libc::syscall(
                libc::SYS_tgkill,
                libc::getpid(),
                WAITER.load(Ordering::Acquire),
                signal,
            );
        }
    }
    for signal in SIGNALS {
        // SAFETY: a zeroed sigaction with a handler, an empty mask and
        // SA_RESTART is valid; the handler only calls async-signal-safe
        // functions.
        let installed = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = forward as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if installed != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
