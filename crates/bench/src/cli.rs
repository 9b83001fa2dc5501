//! The `teller-bench` command line: the figures behind the bank's budgets,
//! printed as a table or one JSON document. A binary of its own, so that
//! the harness (histograms, the load generator, the native rule) does not
//! ship in `teller`.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use teller_contract::{Error, ErrorCode};
use teller_engine::cache::ArtifactCache;
use teller_engine::{Engine, GuestLimits, Workload};

/// Measure teller: cold start, per-call latency, HTTP load, audited
/// throughput. Benchmarks report figures; they never pass or fail on a time.
#[derive(Parser)]
#[command(name = "teller-bench", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: BenchCommand,
}

/// `--engine`: one of the engines this binary registered.
fn engine_parser() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        teller_engine::registered()
            .iter()
            .map(|e| clap::builder::PossibleValue::new(e.name).help(e.about)),
    )
}

/// The registered engine's own name (the process benches pass it on).
fn engine_name(name: &str) -> Result<&'static str, Error> {
    teller_engine::kind(name).map(|e| e.name)
}

/// Runs `argv` (`argv[0]` is the program's name); the exit status.
pub fn main(argv: Vec<std::ffi::OsString>) -> u8 {
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return u8::try_from(e.exit_code()).unwrap_or(2);
        }
    };
    let result = bench(cli.command);
    teller_engine::quiesce();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("teller-bench: {e}");
            e.exit_code()
        }
    }
}

#[derive(Subcommand)]
enum BenchCommand {
    /// The native floor `http` measures teller against: the built-in rule
    /// behind the same hyper stack, no wasm. Started by `http` itself.
    #[command(hide = true)]
    FloorServe {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
    /// Opens the engine's native library and exits: the process `cold-start`
    /// measures `teller check` against.
    #[command(hide = true)]
    LoadEngine {
        #[arg(long, value_parser = engine_parser())]
        engine: String,
    },
    /// Exec of `teller check` to the decision printed, RUNS times after a
    /// warm-up, next to a process that only opens the engine's library and
    /// one that does nothing (the floor).
    ColdStart {
        #[arg(long, default_value_t = 200)]
        runs: u64,
        /// A `teller` built without the `wasmedge` feature: its `--version`
        /// is measured next to this build's.
        #[arg(long, env = "TELLER_PLAIN_BIN")]
        plain_teller: Option<PathBuf>,
        #[command(flatten)]
        bench: BenchArgs,
    },
    /// In-process decisions: on fresh state and on warm instances, one
    /// thread and all cores, against the same rule compiled natively into
    /// teller.
    Call {
        /// Seconds in all, shared by the series.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        #[command(flatten)]
        bench: BenchArgs,
    },
    /// Decisions with a daily limit on the embedded store and on Redis,
    /// against the same decision without state and one store round trip.
    State {
        /// Seconds in all, shared by the series.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        /// The Redis to measure; without it a private redis-server is
        /// started on a free loopback port.
        #[arg(long, value_name = "URL")]
        redis: Option<String>,
        #[command(flatten)]
        bench: BenchArgs,
    },
    /// Replicas of `teller serve` behind haproxy, sharing Redis, under load
    /// at a fixed rate through a rolling restart, a kill -9, a reload on
    /// every replica and a stopped replica; exits 1 if a target fails.
    HaDrill {
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=16))]
        replicas: u32,
        /// Requests per second, scheduled.
        #[arg(long, default_value_t = 500.0)]
        rate: f64,
        /// Kept-alive connections opened before the load; a request due
        /// while all are busy opens another, as a client's pool does.
        #[arg(long, default_value_t = 16)]
        connections: usize,
        /// Seconds of load before the first event and after each one.
        #[arg(long, default_value_t = 3.0)]
        settle: f64,
        /// Seconds the slow replica stays stopped (SIGSTOP).
        #[arg(long, default_value_t = 10.0)]
        stop_seconds: f64,
        /// The replicas' --drain-delay-ms.
        #[arg(long, default_value_t = 1_000)]
        drain_delay_ms: u64,
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
    #[arg(long, env = "TELLER_ENGINE", value_parser = engine_parser(),
          default_value_t = teller_engine::default_name().to_string())]
    engine: String,
    /// Where compiled guests are cached.
    #[arg(long, env = "TELLER_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

fn bench(command: BenchCommand) -> Result<u8, Error> {
    let (report, json) = match command {
        BenchCommand::FloorServe { listen } => {
            crate::floor::serve(&listen)?;
            return Ok(0);
        }
        BenchCommand::HaDrill {
            replicas,
            rate,
            connections,
            settle,
            stop_seconds,
            drain_delay_ms,
            bench,
        } => {
            let drill = crate::Drill {
                engine: engine_name(&bench.engine)?,
                replicas: replicas as usize,
                rate,
                connections: connections.max(1),
                settle,
                stop_seconds,
                drain_delay_ms,
                cache_dir: bench.cache_dir.clone(),
            };
            let report = crate::ha_drill(&drill)?;
            report.print(bench.json);
            return Ok(if report.passed() { 0 } else { 1 });
        }
        BenchCommand::LoadEngine { engine } => {
            (teller_engine::kind(&engine)?.load)()
                .map_err(|e| Error::internal(ErrorCode::EngineInit, e))?;
            return Ok(0);
        }
        BenchCommand::ColdStart {
            runs,
            plain_teller,
            bench,
        } => (
            crate::cold_start(
                engine_name(&bench.engine)?,
                runs,
                bench.cache_dir.as_deref(),
                plain_teller.as_deref(),
            )?,
            bench.json,
        ),
        BenchCommand::Call { duration, bench } => (
            crate::call(&|workload| start_engine(&bench, workload), duration)?,
            bench.json,
        ),
        BenchCommand::State {
            duration,
            redis,
            bench,
        } => (
            crate::state(
                &|workload, state| start_engine_with(&bench, workload, state),
                redis.as_deref(),
                duration,
            )?,
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
                crate::audit(engine.as_ref(), threads as usize, duration, &dir)?,
                bench.json,
            )
        }
        BenchCommand::Http {
            connections,
            duration,
            rate,
            bench,
        } => {
            let load = crate::Load {
                connections,
                seconds: duration,
                rate,
            };
            (
                crate::http(
                    engine_name(&bench.engine)?,
                    load,
                    bench.cache_dir.as_deref(),
                )?,
                bench.json,
            )
        }
    };
    report.print(json);
    Ok(0)
}

/// The engine for in-process benches, caching in the given or default
/// directory, with the default memory cap and a 10 s deadline: a bench
/// measures speed, and on a loaded machine a thread may wait past the
/// default 100 ms for a core, which is not what a bench should fail on.
fn bench_engine(bench: &BenchArgs) -> Result<Box<dyn Engine>, Error> {
    start_engine(bench, Workload::Server)
}

fn start_engine(bench: &BenchArgs, workload: Workload) -> Result<Box<dyn Engine>, Error> {
    start_engine_with(bench, workload, teller_engine::state::GuestState::none())
}

/// As [`start_engine`], with the guests' state imports on `state`.
fn start_engine_with(
    bench: &BenchArgs,
    workload: Workload,
    state: teller_engine::state::GuestState,
) -> Result<Box<dyn Engine>, Error> {
    let cache = match &bench.cache_dir {
        Some(dir) => ArtifactCache::at(dir)?,
        None => ArtifactCache::default_dir()
            .map(ArtifactCache::at)
            .transpose()?
            .unwrap_or_else(ArtifactCache::disabled),
    };
    let engine = teller_engine::by_name(
        &bench.engine,
        cache,
        workload,
        GuestLimits {
            deadline: std::time::Duration::from_secs(10),
            ..GuestLimits::default()
        },
        state,
    )?;
    // Measured as a server runs: what engines start once serving, started.
    teller_engine::serving();
    Ok(engine)
}
