//! What a container runs, read from its arguments and image files (the
//! container's root, after containerd and the shim have set it up).

// The container's environment becomes the process's (`adopt_env`), and
// its stdin is reopened (`reopen_stdin`).
#![allow(unsafe_code)]

use anyhow::{Context, bail};
use containerd_shim_wasm::sandbox::context::Source;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;
use teller_engine::GuestLimits;
use teller_engine::cache::ArtifactCache;
use teller_wasmedge::WasmEdgeEngine;

/// The exit code of a container whose command teller could not run at all
/// (an unloadable module, a trap, a broken limit): the code container
/// runtimes use for a failure of their own, apart from the command's codes.
pub const COULD_NOT_RUN: i32 = 125;

/// The entrypoint that runs teller's command line.
const TELLER: &str = "teller";

pub enum Workload {
    /// `teller ARGS...` on the image's policies and configuration.
    Teller { files: BTreeMap<String, Vec<u8>> },
    /// A wasm32-wasip1 command.
    Command { name: String, wasm: Vec<u8> },
}

impl Workload {
    /// Reads the workload `args` name from the container's root.
    pub fn of(args: &[String], source: Source<'_>) -> anyhow::Result<Workload> {
        let arg0 = args
            .first()
            .context("the container has no arguments: its image should set an entrypoint")?;
        if arg0 == TELLER {
            return Ok(Workload::Teller {
                files: image_files(Path::new("/"))?,
            });
        }
        let wasm = source
            .as_bytes()
            .with_context(|| format!("cannot read the command {arg0}"))?
            .into_owned();
        if !wasm.starts_with(b"\0asm") {
            bail!("{arg0} is not a WebAssembly module (and the entrypoint is not `{TELLER}`)");
        }
        let name = Path::new(arg0)
            .file_stem()
            .map_or_else(|| arg0.clone(), |s| s.to_string_lossy().into_owned());
        Ok(Workload::Command { name, wasm })
    }

    /// Runs to the end and returns the container's exit code.
    pub fn run(self, args: &[String], envs: &[String]) -> i32 {
        // `teller check -` reads stdin to its end too.
        if let Err(e) = reopen_stdin() {
            eprintln!("teller: {e:#}");
            return COULD_NOT_RUN;
        }
        match self {
            Workload::Teller { files } => {
                if let Err(e) = adopt_env(envs) {
                    eprintln!("teller: {e:#}");
                    return COULD_NOT_RUN;
                }
                if let Err(e) = ensure_tmp() {
                    // teller can still serve: on the interpreter, unless
                    // compiled code is in its cache.
                    eprintln!("teller: warning: {e:#}; WasmEdge cannot compile the guests");
                }
                let image = teller_cli::Preloaded {
                    origin: "the container's image".to_string(),
                    files: Arc::new(files),
                };
                let argv: Vec<OsString> = args.iter().map(OsString::from).collect();
                // teller's command line starts its own tokio runtime, which
                // cannot nest in the one this function is polled on.
                std::thread::spawn(move || teller_cli::main(argv, Some(image)))
                    .join()
                    .map_or(COULD_NOT_RUN, i32::from)
            }
            Workload::Command { name, wasm } => {
                let limits = match command_limits(envs) {
                    Ok(limits) => limits,
                    Err(e) => {
                        eprintln!("teller: {e:#}");
                        return COULD_NOT_RUN;
                    }
                };
                let ran = WasmEdgeEngine::new(
                    ArtifactCache::disabled(),
                    limits,
                    teller_engine::state::GuestState::none(),
                )
                .and_then(|engine| engine.run_command(&name, &wasm, args, envs));
                match ran {
                    // A process's status has 8 bits: 256 would read as 0.
                    Ok(code) if code <= 255 => code as i32,
                    Ok(code) => {
                        eprintln!(
                            "teller: {name} exited with {code}, which no exit status can carry"
                        );
                        COULD_NOT_RUN
                    }
                    Err(e) => {
                        eprintln!("teller: {name}: {e}");
                        COULD_NOT_RUN
                    }
                }
            }
        }
    }
}

/// A command's limits from the container's environment, named as `teller
/// serve`'s: TELLER_GUEST_MEMORY_MIB (1 to
/// `limits::MEMORY_MIB_MAX`, default 64) and
/// TELLER_GUEST_FUEL (off by default). The deadline does not apply to a
/// command (see `WasmEdgeEngine::run_command`).
fn command_limits(envs: &[String]) -> anyhow::Result<GuestLimits> {
    let mut limits = GuestLimits::default();
    for (name, value) in envs.iter().filter_map(|e| e.split_once('=')) {
        let number = || -> anyhow::Result<u64> {
            value
                .parse()
                .ok()
                .filter(|n| *n >= 1)
                .with_context(|| format!("{name}={value:?} is not a positive whole number"))
        };
        match name {
            "TELLER_GUEST_MEMORY_MIB" => {
                let mib = number()?;
                let max = teller_contract::limits::MEMORY_MIB_MAX;
                if mib > max {
                    bail!("{name}={mib} is over {max}");
                }
                limits.memory_bytes = mib << 20;
            }
            "TELLER_GUEST_FUEL" => limits.fuel = Some(number()?),
            _ => {}
        }
    }
    Ok(limits)
}

/// The image's files teller reads: `*.wasm` and `teller.toml` at the root.
fn image_files(root: &Path) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    let entries =
        std::fs::read_dir(root).with_context(|| format!("cannot list {}", root.display()))?;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.ends_with(".wasm") || name == teller_oci::CONFIG_FILE)
            || !entry.file_type()?.is_file()
        {
            continue;
        }
        let bytes = std::fs::read(entry.path()).with_context(|| format!("cannot read /{name}"))?;
        files.insert(name, bytes);
    }
    if !files.contains_key(teller_oci::CONFIG_FILE) {
        bail!(
            "the entrypoint is `{TELLER}` but the image has no /{}: it is not a teller image",
            teller_oci::CONFIG_FILE
        );
    }
    Ok(files)
}

/// WasmEdge's AOT compiler writes its output to a temporary file ($TMPDIR,
/// else /tmp); a container's root may have no /tmp (a pod with a read-only
/// root sets TMPDIR to a volume, as deployment.yaml does).
fn ensure_tmp() -> anyhow::Result<()> {
    let tmp = std::env::temp_dir();
    if tmp.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(&tmp).with_context(|| {
        format!(
            "{} is missing and cannot be made (a read-only root needs a writable volume there)",
            tmp.display()
        )
    })
}

/// containerd-shim-wasm hands the container its stdin FIFO opened for
/// reading and writing, so the container itself holds a writer and never
/// sees the end of its input: a command reading its request to EOF would
/// wait forever. Reopened read-only in place, the FIFO ends when the
/// client (`ctr`, or the kubelet's attach) closes it.
fn reopen_stdin() -> anyhow::Result<()> {
    // SAFETY: fcntl and fstat on fd 0 only read its flags and type.
    let (flags, is_fifo) = unsafe {
        let flags = libc::fcntl(0, libc::F_GETFL);
        let mut stat: libc::stat = std::mem::zeroed();
        let is_fifo =
            libc::fstat(0, &mut stat) == 0 && stat.st_mode & libc::S_IFMT == libc::S_IFIFO;
        (flags, is_fifo)
    };
    if flags < 0 || !is_fifo || flags & libc::O_ACCMODE != libc::O_RDWR {
        return Ok(());
    }
    // Opening the FIFO for reading does not block: fd 0 is a writer.
    let read_only = std::fs::File::open("/proc/self/fd/0").context("reopening stdin")?;
    // SAFETY: dup2 replaces fd 0 atomically; `read_only` is closed after.
    if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&read_only), 0) } < 0 {
        return Err(std::io::Error::last_os_error()).context("reopening stdin");
    }
    Ok(())
}

/// Makes the container's environment (`NAME=VALUE`, from the pod spec or
/// `ctr run --env`) the process's, as an exec would have: teller reads its
/// TELLER_* settings from there.
fn adopt_env(envs: &[String]) -> anyhow::Result<()> {
    // Changing the environment is sound only while no other thread can
    // read it through libc. Besides this one, the container's process runs
    // only the shim's async runtime workers (tokio-rt-worker), parked:
    // run_wasi is polled on this thread. Anything else, and teller refuses
    // to go on.
    let me = std::fs::read_link("/proc/thread-self").context("reading /proc")?;
    let others: Vec<String> = std::fs::read_dir("/proc/self/task")
        .context("listing the process's threads")?
        .flatten()
        .filter(|task| me.file_name() != Some(task.file_name().as_os_str()))
        .map(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .collect();
    if let Some(other) = others.iter().find(|comm| !comm.starts_with("tokio-r")) {
        bail!(
            "cannot set the container's environment: thread {other:?} runs besides the shim's own"
        );
    }
    let vars: Vec<(&str, &str)> = envs
        .iter()
        .map(|e| e.split_once('=').unwrap_or((e.as_str(), "")))
        .collect();
    for (name, _) in std::env::vars_os() {
        // `remove_var` refuses (panics on) a name holding `=`.
        if name.is_empty() || name.as_encoded_bytes().contains(&b'=') {
            continue;
        }
        // SAFETY: no other thread reads the environment (checked above).
        unsafe { std::env::remove_var(name) };
    }
    for (name, value) in vars {
        if !name.is_empty() && !name.contains(['\0', '=']) && !value.contains('\0') {
            // SAFETY: as above.
            unsafe { std::env::set_var(name, value) };
        }
    }
    Ok(())
}
