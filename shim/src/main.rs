//! `containerd-shim-wasmedge-v1`: what a node's containerd starts for a pod
//! whose RuntimeClass handler is `wasmedge` (`runtime_type =
//! "io.containerd.wasmedge.v1"`).
//!
//! containerd-shim-wasm does the containerd side (the shim API, the
//! container's namespaces, cgroups, rootfs and stdio); inside the container
//! the process runs teller's own WasmEdge engine and nothing else. What it
//! runs depends on the image's entrypoint (`teller package` sets it):
//! - `teller ...`: teller's command line (`teller_cli`, the code of the
//!   `teller` binary) on the policies and `teller.toml` the image holds, so
//!   the default `teller serve` answers the HTTP API inside the pod;
//! - `/NAME.wasm`: a function command (wasm32-wasip1): JSON on stdin, the
//!   decision on stdout, its exit code as the container's.

mod workload;

use containerd_shim_wasm::sandbox::Sandbox;
use containerd_shim_wasm::sandbox::context::RuntimeContext;
use containerd_shim_wasm::shim::{Cli, Shim, Version, version};

struct TellerShim;

/// One container's process.
#[derive(Default)]
struct TellerSandbox;

impl Shim for TellerShim {
    type Sandbox = TellerSandbox;

    /// containerd finds the binary by this name: `containerd-shim-wasmedge-v1`.
    fn name() -> &'static str {
        "wasmedge"
    }

    fn version() -> Version {
        version!()
    }
}

impl Sandbox for TellerSandbox {
    async fn run_wasi(&self, ctx: &impl RuntimeContext) -> anyhow::Result<i32> {
        let workload = workload::Workload::of(ctx.args(), ctx.entrypoint().source)?;
        Ok(workload.run(ctx.args(), ctx.envs()))
    }

    /// Checked when the container is created, so that a wrong entrypoint
    /// fails `ctr run` / the pod's start rather than the process.
    async fn can_handle(&self, ctx: &impl RuntimeContext) -> anyhow::Result<()> {
        workload::Workload::of(ctx.args(), ctx.entrypoint().source).map(drop)
    }
}

fn main() {
    // The shim's containers run on WasmEdge only: it links no other engine.
    teller_engine::register(&[teller_wasmedge::ENGINE]);
    // containerd runs this binary as `start` and `delete` (short, no
    // WasmEdge) and as the daemon that creates containers. A container's
    // process runs inside its own root file system, where the node's
    // WasmEdge is out of sight, so the daemon opens it for them to inherit.
    let args: Vec<String> = std::env::args().collect();
    if is_daemon(&args) {
        // SIGHUP, SIGINT and SIGTERM blocked before the daemon's first
        // thread, so that every thread of it and of the containers'
        // processes it forks blocks them too. `teller serve` in a container
        // then takes them with sigwait(3) alone: a handler running on any
        // other thread would meet LLVM's, which ends the process if it
        // comes while WasmEdge links a guest. The daemon loses nothing:
        // containerd stops it through the shim API, and its own handler
        // only logs these signals. A function command's container ignored
        // SIGTERM before (it inherited that handler) and still does; it
        // ends on its own or on SIGKILL.
        if let Err(e) = teller_cli::block_signals() {
            eprintln!("containerd-shim-wasmedge-v1: cannot block SIGTERM: {e}");
        }
        if let Err(e) = teller_wasmedge::load() {
            eprintln!("containerd-shim-wasmedge-v1: {e}");
        }
    }
    TellerShim::run(None);
}

/// Whether containerd started this process as the shim's daemon: no action
/// after its Go-style flags, and not `-v` or `-info`.
fn is_daemon(args: &[String]) -> bool {
    let mut rest = args.iter().skip(1);
    while let Some(arg) = rest.next() {
        let Some(flag) = arg.strip_prefix('-') else {
            return false;
        };
        match flag.trim_start_matches('-') {
            // `--` ends the flags: an action may follow.
            "" => return rest.next().is_none(),
            "v" | "info" => return false,
            v if v.starts_with("v=") || v.starts_with("info=") => return false,
            "debug" => {}
            with_value if with_value.contains('=') => {}
            _ => {
                rest.next();
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::is_daemon;

    #[test]
    fn only_the_daemon_opens_wasmedge() {
        let args = |a: &[&str]| -> Vec<String> {
            std::iter::once("shim")
                .chain(a.iter().copied())
                .map(String::from)
                .collect()
        };
        let flags = [
            "-namespace",
            "default",
            "-id",
            "start",
            "-address",
            "/run/c.sock",
        ];
        assert!(is_daemon(&args(&flags)));
        assert!(is_daemon(&args(&[&flags[..], &["-debug"]].concat())));
        assert!(!is_daemon(&args(&[&flags[..], &["start"]].concat())));
        assert!(!is_daemon(&args(&[&flags[..], &["delete"]].concat())));
        assert!(!is_daemon(&args(&["-v"])));
        assert!(!is_daemon(&args(&["-info=true"])));
        assert!(!is_daemon(&args(&["-id", "x", "--", "delete"])));
        assert!(is_daemon(&args(&["-id", "x", "--"])));
    }
}
