//! The `teller` command line.

use clap::{Args, Parser, Subcommand};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use teller::config::Config;
use teller::engine::{self, EngineName, Workload, cache::ArtifactCache};
use teller::error::Error;
use teller::policy::PolicySource;
use teller::service::{Caller, Teller};

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
    /// Measure: cold start, per-call latency, HTTP load. Prints a table,
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
#[derive(Args)]
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
    /// Where compiled guests are cached (default $XDG_CACHE_HOME/teller or
    /// ~/.cache/teller).
    #[arg(long, env = "TELLER_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile the guests at every start instead of caching them.
    #[arg(long, env = "TELLER_NO_CACHE")]
    no_cache: bool,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (printed at start).
    #[arg(long, env = "TELLER_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Append every decision and event to this hash-chained audit log;
    /// responses wait until their record is on disk.
    #[arg(long, env = "TELLER_AUDIT_LOG")]
    audit_log: Option<PathBuf>,
    /// Requests worked on at once; more wait in the queue.
    #[arg(long, env = "TELLER_MAX_CONCURRENCY", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    max_concurrency: u32,
    /// Requests that may wait for a slot; past that, 503 with Retry-After.
    #[arg(long, env = "TELLER_MAX_QUEUE", default_value_t = 1024)]
    max_queue: u32,
    #[command(flatten)]
    run: RunArgs,
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
    /// Recompute the hash chain of FILE. Exit status 0 when intact, 1 naming
    /// the first bad record, 2 when the file cannot be read.
    Verify { file: PathBuf },
    /// Print the last record's seq and hash as JSON, for anchoring the
    /// chain outside this machine (read-only; a torn tail is ignored).
    Head { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Check(args) => check(args).inspect_err(|e| {
            // The same body the HTTP API would answer, for scripts.
            println!("{}", e.to_json());
        }),
        Command::Audit(AuditCommand::Verify { file }) => verify(&file),
        Command::Audit(AuditCommand::Head { file }) => teller::audit::head(&file).map(|head| {
            println!("{{\"seq\":{},\"hash\":\"{}\"}}", head.seq, head.hash);
            ExitCode::SUCCESS
        }),
        Command::Compile(run) => compile(&run),
        Command::Bench(command) => bench(command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("teller: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn policies(run: &RunArgs) -> PolicySource {
    match &run.policy_dir {
        Some(dir) => PolicySource::Dir(dir.clone()),
        None => PolicySource::Builtin,
    }
}

fn cache(run: &RunArgs) -> Result<ArtifactCache, Error> {
    Ok(match (&run.cache_dir, run.no_cache) {
        (_, true) => ArtifactCache::disabled(),
        (Some(dir), false) => ArtifactCache::at(dir)?,
        (None, false) => match ArtifactCache::default_dir() {
            Some(dir) => ArtifactCache::at(dir).unwrap_or_else(|e| {
                eprintln!("teller: warning: {e}; compiling without a cache");
                ArtifactCache::disabled()
            }),
            None => ArtifactCache::disabled(),
        },
    })
}

fn start(run: &RunArgs, audit_log: Option<&Path>, workload: Workload) -> Result<Teller, Error> {
    let config = match &run.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let engine = engine::by_name(run.engine, cache(run)?, workload)?;
    let (teller, recovery) = Teller::start(engine.as_ref(), &policies(run), &config, audit_log)?;
    if let (Some(r), Some(path)) = (recovery, audit_log)
        && r.truncated_bytes > 0
    {
        eprintln!(
            "teller: audit log {}: cut off a torn last record ({} bytes) left by a crash",
            path.display(),
            r.truncated_bytes
        );
    }
    Ok(teller)
}

fn serve(args: ServeArgs) -> Result<ExitCode, Error> {
    let teller = start(&args.run, args.audit_log.as_deref(), Workload::Server)?;
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
        println!(
            "teller: listening on http://{addr} (engine {}, policy {} {} sha256:{}, audit log: {})",
            teller.engine(),
            policy.name,
            policy.version,
            policy.sha256.get(..12).unwrap_or_default(),
            args.audit_log
                .as_deref()
                .map_or("off".to_string(), |p| p.display().to_string()),
        );
        let _ = std::io::stdout().flush();
        let limits = teller::api::Limits {
            max_concurrency: args.max_concurrency as usize,
            max_queue: args.max_queue as usize,
        };
        teller::api::serve(listener, teller, limits, shutdown_signal())
            .await
            .map_err(|e| Error::internal("serve_failed", e.to_string()))?;
        eprintln!("teller: stopped");
        Ok(ExitCode::SUCCESS)
    })
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
    eprintln!("teller: shutting down: draining in-flight requests");
}

fn check(args: CheckArgs) -> Result<ExitCode, Error> {
    let body = if args.input == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .take(teller::api::MAX_BODY as u64 + 1)
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
    if body.len() > teller::api::MAX_BODY {
        return Err(Error::new(
            teller::error::Kind::TooLarge,
            "body_too_large",
            format!("the document is over {} bytes", teller::api::MAX_BODY),
        ));
    }
    let teller = start(&args.run, None, Workload::Once)?;
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
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

fn compile(run: &RunArgs) -> Result<ExitCode, Error> {
    let cache = cache(run)?;
    let Some(dir) = cache.dir().map(Path::to_path_buf) else {
        return Err(Error::bad_request(
            "no_cache",
            "compile fills the cache: give --cache-dir or set HOME",
        ));
    };
    let engine = engine::by_name(run.engine, cache, Workload::Once)?;
    let source = policies(run);
    for name in [teller::policy::TRANSFER_CHECK, teller::policy::AUDIT] {
        eprint!("teller: compiling {name} for {} ... ", engine.name());
        let started = std::time::Instant::now();
        let artifact = source.artifact(name)?;
        let policy = if name == teller::policy::AUDIT {
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
    Ok(ExitCode::SUCCESS)
}

fn bench(command: BenchCommand) -> Result<ExitCode, Error> {
    let (report, json) = match command {
        BenchCommand::ColdStart { runs, bench } => (
            teller::bench::cold_start(bench.engine.as_str(), runs, bench.cache_dir.as_deref())?,
            bench.json,
        ),
        BenchCommand::Call { duration, bench } => {
            let cache = match &bench.cache_dir {
                Some(dir) => ArtifactCache::at(dir)?,
                None => ArtifactCache::default_dir()
                    .map(ArtifactCache::at)
                    .transpose()?
                    .unwrap_or_else(ArtifactCache::disabled),
            };
            let engine = engine::by_name(bench.engine, cache, Workload::Server)?;
            (teller::bench::call(engine.as_ref(), duration)?, bench.json)
        }
        BenchCommand::Http {
            connections,
            duration,
            rate,
            bench,
        } => {
            let load = teller::bench::Load {
                connections,
                seconds: duration,
                rate,
            };
            (
                teller::bench::http(bench.engine.as_str(), load, bench.cache_dir.as_deref())?,
                bench.json,
            )
        }
    };
    report.print(json);
    Ok(ExitCode::SUCCESS)
}

fn verify(file: &Path) -> Result<ExitCode, Error> {
    match teller::audit::verify(file)? {
        Ok(head) => {
            println!(
                "ok: {} records, chain intact; head seq {} hash {}",
                head.seq, head.seq, head.hash
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(bad) => {
            println!("FAILED: {bad}");
            Ok(ExitCode::from(1))
        }
    }
}
