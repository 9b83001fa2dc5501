//! The `teller` command line, in the library so that the node's shim
//! (`containerd-shim-wasmedge-v1`) serves an image with the very code of
//! `teller serve`.

mod serve_settings;

use crate::audit::{AuditKeys, AuditSettings, Commit};
use crate::config::Config;
use crate::engine::{self, EngineName, GuestLimits, Workload, cache::ArtifactCache};
use crate::error::Error;
use crate::policy::PolicySource;
use crate::service::{Caller, Teller};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Runs a bank's compliance functions (transfer checks, audit sealing) as
/// sandboxed WebAssembly guests and serves them over HTTP.
#[derive(Parser)]
#[command(name = "teller", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API: POST /v1/transfer/check, POST /v1/audit/events,
    /// GET /healthz, GET /readyz.
    Serve(ServeArgs),
    /// Decide one transfer document read from FILE (or stdin with `-`) and
    /// print the decision as JSON. Exit status: 0 decided, 2 bad input,
    /// 1 failure, 3 denied (with --fail-on-deny).
    Check(CheckArgs),
    /// Work with an audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Compile the guest policies for an engine into the cache ahead of
    /// time (WasmEdge AOT, wasmtime .cwasm), so that no start pays for it.
    Compile(RunArgs),
    /// Write the guest policies (both forms) and their configuration, or one
    /// function command, as an OCI image layout tar for the wasm platform;
    /// `ctr images import` takes it, the node's shim
    /// (containerd-shim-wasmedge-v1) runs it, `teller serve --from-oci`
    /// serves it.
    Package(PackageArgs),
    /// Measure: cold start, per-call latency, HTTP load, audited throughput.
    /// Prints a table,
    /// or one JSON document with --json.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Exec of `teller check` to the decision printed, RUNS times after a
    /// warm-up, next to a process that does nothing (the floor).
    ColdStart {
        #[arg(long, default_value_t = 200)]
        runs: u64,
        #[command(flatten)]
        bench: BenchArgs,
    },
    /// In-process decisions: fresh and warm instances, one thread and all
    /// cores, against the same rule compiled natively into teller.
    Call {
        /// Seconds in all, shared by the series.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        #[command(flatten)]
        bench: BenchArgs,
    },
    /// Load `teller serve` (started as a child process) over loopback,
    /// without and then with the audit log.
    Http {
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Seconds per run.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Requests per second to schedule; without it each connection
        /// sends as fast as answers come.
        #[arg(long)]
        rate: Option<f64>,
        #[command(flatten)]
        bench: BenchArgs,
    },
    /// Audited decisions per second in-process, with group commit (plain
    /// and encrypted) and with one fsync per record.
    Audit {
        /// Concurrent callers, as concurrent HTTP requests would be.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
        threads: u32,
        /// Seconds in all, shared by the series.
        #[arg(long, default_value_t = 6.0)]
        duration: f64,
        /// Where the scratch logs go: the disk whose fsync is to be measured.
        #[arg(long, default_value_os_t = std::env::temp_dir())]
        dir: PathBuf,
        #[command(flatten)]
        bench: BenchArgs,
    },
}

#[derive(Args)]
struct BenchArgs {
    /// The engine to measure.
    #[arg(long, value_enum, env = "TELLER_ENGINE", default_value = EngineName::DEFAULT.as_str())]
    engine: EngineName,
    /// Where compiled guests are cached.
    #[arg(long, env = "TELLER_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

/// How to load and run the guest policies.
#[derive(Args, Clone)]
struct RunArgs {
    /// The WebAssembly engine that runs the guests (default: wasmedge when
    /// this build has it, else wasmtime).
    #[arg(long, value_enum, env = "TELLER_ENGINE", default_value = EngineName::DEFAULT.as_str())]
    engine: EngineName,
    /// A directory with NAME.component.wasm and NAME.module.wasm for
    /// `transfer-check` and `audit`, instead of the built-in policies.
    #[arg(long, env = "TELLER_POLICY_DIR")]
    policy_dir: Option<PathBuf>,
    /// TOML policy parameters: [transfer_check] amount_limit,
    /// authorized_roles. Defaults: 1000000 and ["authorized"].
    #[arg(long, env = "TELLER_CONFIG")]
    config: Option<PathBuf>,
    /// An image written by `teller package` (OCI image layout tar): its
    /// policies and configuration, every digest checked, instead of
    /// --policy-dir and --config.
    #[arg(long, env = "TELLER_FROM_OCI", conflicts_with_all = ["policy_dir", "config"])]
    from_oci: Option<PathBuf>,
    /// An image already read (see [`main`]), instead of the three above.
    #[arg(skip)]
    image: Option<Preloaded>,
    /// Where compiled guests are cached (default $XDG_CACHE_HOME/teller or
    /// ~/.cache/teller).
    #[arg(long, env = "TELLER_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile the guests at every start instead of caching them.
    #[arg(long, env = "TELLER_NO_CACHE")]
    no_cache: bool,
    /// Wall-clock time one guest call may take; past it the call fails with
    /// guest_timeout and its instance is thrown away.
    #[arg(long, env = "TELLER_GUEST_DEADLINE_MS", default_value_t = GuestLimits::DEFAULT_DEADLINE_MS,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    guest_deadline_ms: u64,
    /// Linear memory one guest instance may grow to; past it the call fails
    /// with guest_memory_limit.
    #[arg(long, env = "TELLER_GUEST_MEMORY_MIB", default_value_t = GuestLimits::DEFAULT_MEMORY_MIB,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    guest_memory_mib: u64,
    /// Work one guest call may do (wasmtime fuel, WasmEdge instruction
    /// cost); past it the call fails with guest_out_of_fuel. Off by default:
    /// counting costs time on every call.
    #[arg(long, env = "TELLER_GUEST_FUEL", value_parser = clap::value_parser!(u64).range(1..))]
    guest_fuel: Option<u64>,
}

impl RunArgs {
    fn limits(&self) -> GuestLimits {
        GuestLimits {
            deadline: std::time::Duration::from_millis(self.guest_deadline_ms),
            memory_bytes: self.guest_memory_mib << 20,
            fuel: self.guest_fuel,
        }
    }
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (printed at start).
    #[arg(long, env = "TELLER_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    audit: AuditArgs,
    /// Which log lines to write: a level (error, warn, info, debug) or a
    /// tracing filter such as `teller=debug,warn`.
    #[arg(long, env = "TELLER_LOG", default_value = "info")]
    log_level: String,
    /// JSON lines for a log pipeline, or text for people; auto picks text
    /// on a terminal.
    #[arg(long, env = "TELLER_LOG_FORMAT", value_enum, default_value = "auto")]
    log_format: crate::log::LogFormat,
    /// A TOML file setting any of these flags by name (`listen =
    /// "0.0.0.0:8080"`); a flag or its TELLER_* variable wins over it.
    #[arg(long, env = "TELLER_SETTINGS")]
    settings: Option<PathBuf>,
    /// Print the effective settings and where each came from (secrets
    /// redacted), then exit.
    #[arg(long)]
    print_config: bool,
    /// Requests worked on at once; more wait in the queue.
    #[arg(long, env = "TELLER_MAX_CONCURRENCY", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    max_concurrency: u32,
    /// Requests that may wait for a slot; past that, 503 with Retry-After.
    #[arg(long, env = "TELLER_MAX_QUEUE", default_value_t = 1024)]
    max_queue: u32,
    /// How long a client may take to send its request headers (or to start
    /// its next request on a kept-alive connection), and then its body.
    #[arg(long, env = "TELLER_CLIENT_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(10..=600_000))]
    client_timeout_ms: u64,
    #[command(flatten)]
    run: RunArgs,
}

/// The audit log of `teller serve`.
#[derive(Args)]
struct AuditArgs {
    /// Append every decision and event to the hash-chained audit log in
    /// this directory (created if missing); responses wait until their
    /// record is on disk.
    #[arg(long, env = "TELLER_AUDIT_DIR")]
    audit_dir: Option<PathBuf>,
    /// Start a new segment once the current one reaches this many bytes.
    #[arg(long, env = "TELLER_AUDIT_SEGMENT_BYTES", default_value_t = crate::audit::DEFAULT_SEGMENT_BYTES,
          value_parser = clap::value_parser!(u64).range(crate::audit::MIN_SEGMENT_BYTES..))]
    audit_segment_bytes: u64,
    /// Encrypt each event (AES-256-GCM) with the first key in this file:
    /// lines of ID:BASE64, as `teller audit new-key` prints. The key may
    /// instead come from the TELLER_AUDIT_KEY environment variable.
    #[arg(long, env = "TELLER_AUDIT_KEY_FILE")]
    audit_key_file: Option<PathBuf>,
}

impl AuditArgs {
    fn settings(&self) -> Result<Option<AuditSettings>, Error> {
        let keys = audit_keys(self.audit_key_file.as_deref())?;
        let Some(dir) = &self.audit_dir else {
            if keys.is_some() {
                return Err(Error::bad_request(
                    "audit_key_without_log",
                    "an audit key was given but no --audit-dir: there is nothing to encrypt",
                ));
            }
            return Ok(None);
        };
        Ok(Some(AuditSettings {
            dir: dir.clone(),
            segment_bytes: self.audit_segment_bytes,
            keys,
            commit: Commit::Group,
        }))
    }
}

/// The audit keys from `file` or from TELLER_AUDIT_KEY; both is an error,
/// so that it is never unclear which key encrypted a record.
fn audit_keys(file: Option<&Path>) -> Result<Option<AuditKeys>, Error> {
    match (file, AuditKeys::from_env()?) {
        (Some(_), Some(_)) => Err(Error::bad_request(
            "audit_key_ambiguous",
            format!(
                "an audit key file and {} are both set; give the key one way",
                crate::audit::KEY_ENV
            ),
        )),
        (Some(path), None) => AuditKeys::from_file(path).map(Some),
        (None, env) => Ok(env),
    }
}

#[derive(Args)]
struct PackageArgs {
    /// The image file to write (an OCI image layout, as a tar).
    #[arg(long, short)]
    output: PathBuf,
    /// The image's name, as containerd and registries will know it
    /// (default: teller-policies:VERSION, or teller-COMMAND:VERSION).
    #[arg(long)]
    name: Option<String>,
    /// Package these policies instead of the built-in ones.
    #[arg(long)]
    policy_dir: Option<PathBuf>,
    /// The policy configuration to package (validated first); without it,
    /// the defaults are written out.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Package one built-in function command instead (wasm32-wasip1: JSON
    /// on stdin, the answer on stdout), the image's entrypoint.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(
        teller_policy_artifacts::COMMANDS.map(|c| c.name)),
        conflicts_with_all = ["policy_dir", "config"])]
    command: Option<String>,
}

#[derive(Args)]
struct CheckArgs {
    /// The transfer document (JSON); `-` or nothing reads stdin.
    #[arg(default_value = "-")]
    input: String,
    /// Exit with status 3 when the verdict is deny.
    #[arg(long)]
    fail_on_deny: bool,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the hash chain of the log in DIR across all its segments.
    /// Exit status 0 when intact, 1 naming the first bad record, 2 when the
    /// log cannot be read.
    Verify { dir: PathBuf },
    /// Print the last record's seq and hash as JSON, for anchoring the
    /// chain outside this machine (read-only; a torn tail is ignored).
    Head { dir: PathBuf },
    /// Print the plaintext events of the encrypted records in DIR (or of
    /// record --seq), one JSON line each. Needs the key that encrypted
    /// them: --key-file, or TELLER_AUDIT_KEY.
    Decrypt {
        dir: PathBuf,
        /// Only this record.
        #[arg(long)]
        seq: Option<u64>,
        /// Lines of ID:BASE64; every key id in it can open records.
        #[arg(long, env = "TELLER_AUDIT_KEY_FILE")]
        key_file: Option<PathBuf>,
    },
    /// Print a new random AES-256 key as a key-file line, ID:BASE64.
    NewKey {
        /// The key id records will name (A-Z a-z 0-9 . _ -), e.g. 2026-11.
        #[arg(long)]
        id: String,
    },
}

/// An image's files handed over by whoever read them (the node's shim
/// reads them from containerd's content store), used as `--from-oci` uses
/// a tar's.
#[derive(Debug, Clone)]
pub struct Preloaded {
    /// Where the files came from, as messages name it.
    pub origin: String,
    /// Layer title (`transfer-check.module.wasm`, `teller.toml`) → bytes.
    pub files: std::sync::Arc<std::collections::BTreeMap<String, Vec<u8>>>,
}

/// Runs the command line `argv` (`argv[0]` is the program's name) and
/// returns its exit status. `image`, if given, stands for `--from-oci`.
pub fn main(argv: Vec<std::ffi::OsString>, image: Option<Preloaded>) -> u8 {
    let Some(serve_command) = Cli::command().find_subcommand("serve").cloned() else {
        return 1;
    };
    let expanded = match serve_settings::expand(argv, &serve_command) {
        Ok(expanded) => expanded,
        Err(e) => {
            eprintln!("teller: {e}");
            return e.exit_code();
        }
    };
    let matches = match Cli::command().try_get_matches_from(&expanded.argv) {
        Ok(matches) => matches,
        Err(e) => {
            // A value clap refused may have come from the file.
            if let Some(note) = expanded.note() {
                eprintln!("teller: note: {note}");
            }
            return clap_refused(&e);
        }
    };
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => return clap_refused(&e),
    };
    if let Some(image) = image {
        let run = match &mut cli.command {
            Command::Serve(args) => Some(&mut args.run),
            Command::Check(args) => Some(&mut args.run),
            Command::Compile(run) => Some(run),
            _ => None,
        };
        if let Some(run) = run {
            if run.policy_dir.is_some() || run.config.is_some() || run.from_oci.is_some() {
                eprintln!(
                    "teller: {} is served: --policy-dir, --config and --from-oci cannot be given too",
                    image.origin
                );
                return 2;
            }
            run.image = Some(image);
        }
    }
    if let Command::Serve(args) = &cli.command
        && args.print_config
        && let Some(serve_matches) = matches.subcommand_matches("serve")
    {
        print!(
            "{}",
            serve_settings::print(serve_matches, &serve_command, &expanded.from_file)
        );
        return 0;
    }
    let logging = match &cli.command {
        Command::Serve(args) => crate::log::init(&args.log_level, args.log_format),
        _ => crate::log::init("warn", crate::log::LogFormat::Text),
    };
    if let Err(e) = logging {
        eprintln!("teller: {e}");
        return e.exit_code();
    }
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Check(args) => check(args).inspect_err(|e| {
            // The same body the HTTP API would answer, for scripts.
            println!("{}", e.to_json());
        }),
        Command::Audit(command) => audit(command),
        Command::Compile(run) => compile(&run),
        Command::Package(args) => package(&args),
        Command::Bench(command) => bench(command),
    };
    engine::quiesce();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("teller: {e}");
            e.exit_code()
        }
    }
}

/// Prints clap's message (help and version too) and gives its status.
fn clap_refused(e: &clap::Error) -> u8 {
    let _ = e.print();
    u8::try_from(e.exit_code()).unwrap_or(2)
}

/// The policies and their configuration `run` names.
fn policies(run: &RunArgs) -> Result<(PolicySource, Config), Error> {
    if let Some(image) = &run.image {
        return image_policies(image.origin.clone(), image.files.clone());
    }
    if let Some(path) = &run.from_oci {
        let image = crate::oci::read(path)?;
        let origin = format!(
            "image {}@{} ({})",
            image.name.as_deref().unwrap_or("unnamed"),
            image.manifest_digest,
            path.display()
        );
        return image_policies(origin, std::sync::Arc::new(image.files));
    }
    let config = match &run.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    Ok((
        PolicySource::dir_or_builtin(run.policy_dir.as_deref()),
        config,
    ))
}

/// An image's policies and its `teller.toml` (the defaults without one).
fn image_policies(
    origin: String,
    files: std::sync::Arc<std::collections::BTreeMap<String, Vec<u8>>>,
) -> Result<(PolicySource, Config), Error> {
    let config = match files.get(crate::oci::CONFIG_FILE) {
        Some(bytes) => {
            let text = std::str::from_utf8(bytes).map_err(|_| {
                Error::bad_request(
                    "config_invalid",
                    format!("{origin}: teller.toml is not UTF-8"),
                )
            })?;
            Config::parse(text).map_err(|e| Error {
                message: format!("{origin}: teller.toml: {}", e.message),
                ..e
            })?
        }
        None => Config::default(),
    };
    Ok((PolicySource::Files { origin, files }, config))
}

fn cache(run: &RunArgs) -> Result<ArtifactCache, Error> {
    Ok(match (&run.cache_dir, run.no_cache) {
        (_, true) => ArtifactCache::disabled(),
        (Some(dir), false) => ArtifactCache::at(dir)?,
        (None, false) => match ArtifactCache::default_dir() {
            Some(dir) => ArtifactCache::at(dir).unwrap_or_else(|e| {
                tracing::warn!("{e}; compiling without a cache");
                ArtifactCache::disabled()
            }),
            None => ArtifactCache::disabled(),
        },
    })
}

/// A ready teller and the engine it loaded its policies on (kept for
/// reloads).
fn start(
    run: &RunArgs,
    audit: Option<&AuditSettings>,
    workload: Workload,
) -> Result<(Teller, Box<dyn engine::Engine>), Error> {
    let (source, config) = policies(run)?;
    let engine = engine::by_name(run.engine, cache(run)?, workload, run.limits())?;
    let (teller, recovery) = Teller::start(engine.as_ref(), &source, &config, audit)?;
    if let (Some(r), Some(settings)) = (recovery, audit)
        && r.truncated_bytes > 0
    {
        tracing::warn!(
            "audit log {}: cut off a torn last record ({} bytes) left by a crash",
            settings.dir.display(),
            r.truncated_bytes
        );
    }
    Ok((teller, engine))
}

fn serve(args: ServeArgs) -> Result<u8, Error> {
    let audit = args.audit.settings()?;
    let (teller, engine) = start(&args.run, audit.as_ref(), Workload::Service)?;
    let teller = std::sync::Arc::new(teller);
    let engine: std::sync::Arc<dyn engine::Engine> = std::sync::Arc::from(engine);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal("runtime", format!("cannot start tokio: {e}")))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| {
                Error::internal(
                    "listen_failed",
                    format!("cannot listen on {}: {e}", args.listen),
                )
            })?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::internal("listen_failed", e.to_string()))?;
        let policy = teller.transfer_policy();
        // Errors ignored: whoever started teller may have closed its
        // stdout, and that must not stop the server.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "teller: listening on http://{addr} (engine {}, policy {} {} sha256:{}, audit log: {})",
            teller.engine(),
            policy.name,
            policy.version,
            policy.sha256.get(..12).unwrap_or_default(),
            audit.as_ref().map_or("off".to_string(), |a| format!(
                "{}{}",
                a.dir.display(),
                a.keys.as_ref().map_or(String::new(), |k| format!(
                    ", encrypted with key {}",
                    k.current_id()
                ))
            )),
        );
        let _ = writeln!(
            out,
            "teller: ask it: curl -s http://{addr}/v1/transfer/check -d '{{\"action\":\"transfer\",\"amount\":250000,\"user\":{{\"role\":\"authorized\"}},\"audit\":{{\"enabled\":true}}}}'"
        );
        let _ = out.flush();
        drop(out);
        tracing::info!(
            %addr,
            engine = teller.engine(),
            policy = %policy.name,
            sha256 = %policy.sha256,
            "listening"
        );
        let limits = crate::api::Limits {
            max_concurrency: args.max_concurrency as usize,
            max_queue: args.max_queue as usize,
            client_timeout: std::time::Duration::from_millis(args.client_timeout_ms),
        };
        tokio::spawn(watch_policies(args.run.clone(), teller.clone(), engine));
        crate::api::serve(listener, teller, limits, shutdown_signal())
            .await
            .map_err(|e| Error::internal("serve_failed", e.to_string()))?;
        tracing::info!("stopped");
        Ok(0)
    })
}

/// Reloads the policies on SIGHUP, and when the files they come from
/// (policy directory, configuration, image) change, checked every second.
async fn watch_policies(
    run: RunArgs,
    teller: std::sync::Arc<Teller>,
    engine: std::sync::Arc<dyn engine::Engine>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("cannot watch for SIGHUP ({e}); reloads follow file changes only");
            None
        }
    };
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let run = std::sync::Arc::new(run);
    let mut seen = fingerprint(&run);
    loop {
        let why = tokio::select! {
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
            _ = tick.tick() => {
                let now = fingerprint(&run);
                if now == seen { continue; }
                seen = now;
                "the policy files changed"
            }
        };
        let (run, teller, engine) = (run.clone(), teller.clone(), engine.clone());
        let outcome = tokio::task::spawn_blocking(move || {
            let (source, config) = policies(&run)?;
            teller.reload(engine.as_ref(), &source, &config)
        })
        .await;
        match outcome {
            Ok(Ok(done)) => tracing::info!(
                "reloaded on {why}: {} {} sha256:{} now serves (was sha256:{})",
                done.new.name,
                done.new.version,
                done.new.sha256.get(..12).unwrap_or_default(),
                done.old.sha256.get(..12).unwrap_or_default(),
            ),
            Ok(Err(e)) => {
                tracing::error!("reload on {why} rejected, the old policies keep serving: {e}")
            }
            Err(e) => tracing::error!("reload on {why} failed: {e}"),
        }
    }
}

/// Sizes and modification times of the files the policies come from.
fn fingerprint(run: &RunArgs) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
    let mut files: Vec<PathBuf> = [&run.config, &run.from_oci]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    if let Some(dir) = &run.policy_dir
        && let Ok(entries) = std::fs::read_dir(dir)
    {
        files.extend(entries.flatten().map(|e| e.path()));
    }
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let meta = std::fs::metadata(&path).ok();
            let len = meta.as_ref().map_or(0, |m| m.len());
            let modified = meta.and_then(|m| m.modified().ok());
            (path, len, modified)
        })
        .collect()
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
    tracing::info!("shutting down: draining in-flight requests");
}

fn check(args: CheckArgs) -> Result<u8, Error> {
    let body = if args.input == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .take(crate::api::MAX_BODY as u64 + 1)
            .read_to_end(&mut buf)
            .map(|_| buf)
    } else {
        std::fs::read(&args.input)
    }
    .map_err(|e| {
        Error::bad_request(
            "input_unreadable",
            format!("cannot read {}: {e}", args.input),
        )
    })?;
    if body.len() > crate::api::MAX_BODY {
        return Err(Error::new(
            crate::error::Kind::TooLarge,
            "body_too_large",
            format!("the document is over {} bytes", crate::api::MAX_BODY),
        ));
    }
    let (teller, _engine) = start(&args.run, None, Workload::Once)?;
    let decision = teller.check(
        &body,
        &Caller {
            client: "cli".to_string(),
        },
    )?;
    let json = serde_json::to_string(&decision)
        .map_err(|e| Error::internal("internal", format!("cannot encode: {e}")))?;
    println!("{json}");
    if args.fail_on_deny && decision.verdict == "deny" {
        return Ok(3);
    }
    Ok(0)
}

fn package(args: &PackageArgs) -> Result<u8, Error> {
    let version = env!("CARGO_PKG_VERSION");
    let (name, entrypoint, cmd, layers) = match &args.command {
        Some(command) => {
            let command = teller_policy_artifacts::COMMANDS
                .iter()
                .find(|c| c.name == command)
                .ok_or_else(|| {
                    Error::bad_request("unknown_command", format!("no command {command}"))
                })?;
            let file = format!("{}.wasm", command.name);
            (
                format!("teller-{}:{version}", command.name),
                format!("/{file}"),
                None,
                vec![crate::oci::Layer {
                    title: file,
                    bytes: command.wasm.to_vec(),
                }],
            )
        }
        None => (
            format!("teller-policies:{version}"),
            "teller".to_string(),
            Some("serve"),
            policy_layers(args)?,
        ),
    };
    let name = args.name.clone().unwrap_or(name);
    let cmd: Vec<&str> = cmd.into_iter().collect();
    let written = crate::oci::write(&args.output, &name, &[&entrypoint], &cmd, &layers)?;
    println!(
        "wrote {}: image {name}, manifest {}, {} layers, {} bytes, runs {entrypoint} {}",
        args.output.display(),
        written.manifest_digest,
        written.layers,
        written.bytes,
        cmd.join(" ")
    );
    Ok(0)
}

/// The policies (both forms of each) and `teller.toml`.
fn policy_layers(args: &PackageArgs) -> Result<Vec<crate::oci::Layer>, Error> {
    let source = PolicySource::dir_or_builtin(args.policy_dir.as_deref());
    let config_text = match &args.config {
        Some(path) => {
            Config::load(path)?;
            std::fs::read_to_string(path).map_err(|e| {
                Error::bad_request(
                    "config_unreadable",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?
        }
        None => Config::default().to_toml()?,
    };
    let mut layers = Vec::new();
    for name in [crate::policy::TRANSFER_CHECK, crate::policy::AUDIT] {
        let artifact = source.artifact(name)?;
        layers.push(crate::oci::Layer {
            title: format!("{name}.module.wasm"),
            bytes: artifact.module()?.into_owned(),
        });
        layers.push(crate::oci::Layer {
            title: format!("{name}.component.wasm"),
            bytes: artifact.component()?.into_owned(),
        });
    }
    layers.push(crate::oci::Layer {
        title: crate::oci::CONFIG_FILE.to_string(),
        bytes: config_text.into_bytes(),
    });
    Ok(layers)
}

fn compile(run: &RunArgs) -> Result<u8, Error> {
    let cache = cache(run)?;
    let Some(dir) = cache.dir().map(Path::to_path_buf) else {
        return Err(Error::bad_request(
            "no_cache",
            "compile fills the cache: give --cache-dir or set HOME",
        ));
    };
    let engine = engine::by_name(run.engine, cache, Workload::Once, run.limits())?;
    let (source, _) = policies(run)?;
    for name in [crate::policy::TRANSFER_CHECK, crate::policy::AUDIT] {
        eprint!("teller: compiling {name} for {} ... ", engine.name());
        let started = std::time::Instant::now();
        let artifact = source.artifact(name)?;
        let policy = if name == crate::policy::AUDIT {
            engine.load_audit(&artifact)?.policy().clone()
        } else {
            engine.load_transfer_check(&artifact)?.policy().clone()
        };
        eprintln!(
            "done in {:.2} s ({} {}, sha256:{})",
            started.elapsed().as_secs_f64(),
            policy.name,
            policy.version,
            policy.sha256.get(..12).unwrap_or_default()
        );
    }
    println!("compiled guests cached in {}", dir.display());
    Ok(0)
}

fn bench(command: BenchCommand) -> Result<u8, Error> {
    let (report, json) = match command {
        BenchCommand::ColdStart { runs, bench } => (
            crate::bench::cold_start(bench.engine.as_str(), runs, bench.cache_dir.as_deref())?,
            bench.json,
        ),
        BenchCommand::Call { duration, bench } => (
            crate::bench::call(bench_engine(&bench)?.as_ref(), duration)?,
            bench.json,
        ),
        BenchCommand::Audit {
            threads,
            duration,
            dir,
            bench,
        } => {
            let engine = bench_engine(&bench)?;
            (
                crate::bench::audit(engine.as_ref(), threads as usize, duration, &dir)?,
                bench.json,
            )
        }
        BenchCommand::Http {
            connections,
            duration,
            rate,
            bench,
        } => {
            let load = crate::bench::Load {
                connections,
                seconds: duration,
                rate,
            };
            (
                crate::bench::http(bench.engine.as_str(), load, bench.cache_dir.as_deref())?,
                bench.json,
            )
        }
    };
    report.print(json);
    Ok(0)
}

/// The engine for in-process benches, caching in the given or default
/// directory, with the default guest limits.
fn bench_engine(bench: &BenchArgs) -> Result<Box<dyn engine::Engine>, Error> {
    let cache = match &bench.cache_dir {
        Some(dir) => ArtifactCache::at(dir)?,
        None => ArtifactCache::default_dir()
            .map(ArtifactCache::at)
            .transpose()?
            .unwrap_or_else(ArtifactCache::disabled),
    };
    engine::by_name(
        bench.engine,
        cache,
        Workload::Server,
        GuestLimits::default(),
    )
}

fn audit(command: AuditCommand) -> Result<u8, Error> {
    match command {
        AuditCommand::Verify { dir } => verify(&dir),
        AuditCommand::Head { dir } => crate::audit::head(&dir).map(|head| {
            println!("{{\"seq\":{},\"hash\":\"{}\"}}", head.seq, head.hash);
            0
        }),
        AuditCommand::Decrypt { dir, seq, key_file } => {
            let keys = audit_keys(key_file.as_deref())?.ok_or_else(|| {
                Error::bad_request(
                    "audit_key_missing",
                    format!(
                        "decrypt needs the key: give --key-file or set {}",
                        crate::audit::KEY_ENV
                    ),
                )
            })?;
            let stdout = std::io::stdout();
            let done = crate::audit::decrypt(&dir, &keys, seq, &mut stdout.lock())?;
            eprintln!(
                "teller: decrypted {} records{}",
                done.opened,
                if done.plain > 0 {
                    format!("; {} were written without a key", done.plain)
                } else {
                    String::new()
                }
            );
            Ok(0)
        }
        AuditCommand::NewKey { id } => {
            println!("{}", AuditKeys::generate_line(&id)?);
            Ok(0)
        }
    }
}

fn verify(dir: &Path) -> Result<u8, Error> {
    match crate::audit::verify(dir)? {
        Ok(verified) => {
            println!(
                "ok: {} records in {} segments, chain intact; head seq {} hash {}",
                verified.head.seq, verified.segments, verified.head.seq, verified.head.hash
            );
            Ok(0)
        }
        Err(bad) => {
            println!("FAILED: {bad}");
            Ok(1)
        }
    }
}
