//! `teller-bench`: the figures behind the bank's budgets (cold start, per
//! call, HTTP load, audited throughput), printed as a table or, with `--json`, as one JSON
//! document. Benchmarks report; they never pass or fail on a time.

#![forbid(unsafe_code)]

mod audit;
pub mod cli;
mod floor;
mod ha;
mod http;
mod state;

pub use audit::audit;
pub use ha::{Drill, DrillReport, ha_drill};
pub use http::{Load, http};
pub use state::state;

use hdrhistogram::Histogram;
use serde_json::{Value as Json, json};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use teller_contract::Error;
use teller_contract::ErrorCode;
use teller_contract::{PolicyConfig, TransferRequest};
use teller_engine::artifact::PolicySource;
use teller_engine::{CallMode, Engine, TransferCheck, Workload};
use teller_server::policy_set::PolicySet;
use teller_server::service::{Caller, decision_event};

/// The README's example: an allowed transfer.
pub use teller_contract::EXAMPLE_REQUEST as EXAMPLE;

/// The `teller` binary the process benches run: beside this one (both are
/// built together), or `TELLER_BIN`.
pub fn teller_binary() -> Result<std::path::PathBuf, Error> {
    if let Some(path) = std::env::var_os("TELLER_BIN") {
        return Ok(path.into());
    }
    let me =
        std::env::current_exe().map_err(|e| run_error("cannot find teller-bench itself", e))?;
    let teller = me.with_file_name("teller");
    if teller.is_file() {
        return Ok(teller);
    }
    Err(run_error(
        "cannot find teller",
        format!("no {} (set TELLER_BIN)", teller.display()),
    ))
}

/// One measured series.
pub struct Series {
    pub name: String,
    /// Latencies in nanoseconds.
    pub histogram: Histogram<u64>,
    /// Operations per second, where that means something.
    pub per_second: Option<f64>,
}

impl Series {
    fn new(name: impl Into<String>) -> Result<Self, Error> {
        Ok(Series {
            name: name.into(),
            histogram: new_histogram()?,
            per_second: None,
        })
    }

    fn quantile_us(&self, q: f64) -> f64 {
        self.histogram.value_at_quantile(q) as f64 / 1000.0
    }

    fn to_json(&self) -> Json {
        json!({
            "name": self.name,
            "count": self.histogram.len(),
            "p50_us": self.quantile_us(0.5),
            "p90_us": self.quantile_us(0.9),
            "p99_us": self.quantile_us(0.99),
            "p999_us": self.quantile_us(0.999),
            "max_us": self.histogram.max() as f64 / 1000.0,
            "per_second": self.per_second,
        })
    }
}

/// Nanosecond histogram from 1 ns to 100 s, 3 significant digits.
pub fn new_histogram() -> Result<Histogram<u64>, Error> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).map_err(|e| run_error("histogram", e))
}

/// What a bench prints: its series, and the ratios that are its headline.
pub struct Report {
    pub bench: &'static str,
    pub engine: &'static str,
    pub series: Vec<Series>,
    pub ratios: Vec<(String, f64)>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn print(&self, as_json: bool) {
        if as_json {
            let doc = json!({
                "bench": self.bench,
                "engine": self.engine,
                "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
                "features": features(),
                "teller_version": env!("CARGO_PKG_VERSION"),
                "series": self.series.iter().map(Series::to_json).collect::<Vec<_>>(),
                "ratios": self.ratios.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
                "notes": self.notes,
            });
            println!("{doc}");
            return;
        }
        println!(
            "\nteller-bench {} — engine {}, {} cores, engines in this build [{}]",
            self.bench,
            self.engine,
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            features().join(", ")
        );
        println!(
            "{:<44} {:>9} {:>9} {:>9} {:>9} {:>9} {:>12}",
            "series", "P50", "P90", "P99", "P99.9", "max", "per second"
        );
        for s in &self.series {
            println!(
                "{:<44} {:>9} {:>9} {:>9} {:>9} {:>9} {:>12}",
                s.name,
                human(s.quantile_us(0.5)),
                human(s.quantile_us(0.9)),
                human(s.quantile_us(0.99)),
                human(s.quantile_us(0.999)),
                human(s.histogram.max() as f64 / 1000.0),
                s.per_second.map_or("-".to_string(), |r| format!("{r:.0}")),
            );
        }
        for (name, value) in &self.ratios {
            println!("{name}: {value:.2}x");
        }
        for note in &self.notes {
            println!("note: {note}");
        }
    }
}

/// A latency in µs, printed in the unit that reads best.
fn human(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else if us >= 1.0 {
        format!("{us:.1}µs")
    } else {
        format!("{:.0}ns", us * 1000.0)
    }
}

pub fn features() -> Vec<&'static str> {
    teller_engine::registered().iter().map(|e| e.name).collect()
}

/// Progress on stderr: a line that updates itself on a terminal, a line
/// per quarter in a log.
fn progress(label: &str, done: u64, total: u64) {
    use std::io::IsTerminal;
    let tty = std::io::stderr().is_terminal();
    let step = (total / if tty { 10 } else { 4 }).max(1);
    if !done.is_multiple_of(step) && done != total {
        return;
    }
    if tty {
        eprint!("\r{label}: {done}/{total}  ");
        let _ = std::io::stderr().flush();
        if done == total {
            eprintln!();
        }
    } else {
        eprintln!("{label}: {done}/{total}");
    }
}

fn run_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::internal(ErrorCode::BenchFailed, format!("{what}: {e}"))
}

/// A process to time: its series' label, its command line and its stdin.
struct Process<'a> {
    label: String,
    argv: Vec<&'a str>,
    stdin: &'a [u8],
}

/// Runs `process` once, from spawn to exit with its output read.
fn run_once(process: &Process<'_>) -> Result<Duration, Error> {
    let (program, args) = process
        .argv
        .split_first()
        .ok_or_else(|| run_error("bench", "empty command"))?;
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| run_error(&format!("cannot run {program}"), e))?;
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(process.stdin);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| run_error(&format!("waiting for {program}"), e))?;
    let elapsed = started.elapsed();
    if !out.status.success() {
        return Err(run_error(
            &format!("{} failed ({})", process.argv.join(" "), out.status),
            String::from_utf8_lossy(&out.stderr),
        ));
    }
    Ok(elapsed)
}

/// Times `runs` executions of each process after a warm-up, taking the
/// processes in turn, one run of each per round: this VM's speed drifts
/// over seconds, and a drift then shifts every series alike instead of
/// whichever ran during it, so the ratios between them hold.
fn time_processes(processes: &[Process<'_>], runs: u64) -> Result<Vec<Series>, Error> {
    let mut series = processes
        .iter()
        .map(|p| Series::new(&p.label))
        .collect::<Result<Vec<_>, _>>()?;
    let warmup = (runs / 10).clamp(3, 20);
    for round in 0..warmup + runs {
        for (process, series) in processes.iter().zip(&mut series) {
            let elapsed = run_once(process)?;
            if round >= warmup {
                let _ = series.histogram.record(elapsed.as_nanos() as u64);
            }
        }
        if round >= warmup {
            progress("cold-start rounds", round + 1 - warmup, runs);
        }
    }
    Ok(series)
}

/// `teller bench cold-start`: exec of `teller check` to the decision
/// printed, next to a process that does nothing.
pub fn cold_start(
    engine: &'static str,
    runs: u64,
    cache_dir: Option<&Path>,
    plain_teller: Option<&Path>,
) -> Result<Report, Error> {
    let exe = teller_binary()?;
    let exe = exe.to_string_lossy().to_string();
    let mut check = vec![exe.as_str(), "check", "--engine", engine];
    let cache;
    if let Some(dir) = cache_dir {
        cache = dir.to_string_lossy().to_string();
        check.extend(["--cache-dir", cache.as_str()]);
    }
    let bench = std::env::current_exe().map_err(|e| {
        Error::internal(ErrorCode::Internal, format!("the bench's own binary: {e}"))
    })?;
    let bench = bench.to_string_lossy().to_string();
    let plain = plain_teller.map(|p| p.to_string_lossy().to_string());
    let mut processes = vec![
        Process {
            label: format!("teller check ({engine}), cached guests"),
            argv: check,
            stdin: EXAMPLE.as_bytes(),
        },
        Process {
            label: "teller --version (loads, runs no wasm)".into(),
            argv: vec![&exe, "--version"],
            stdin: b"",
        },
        Process {
            label: format!("a process that only opens {engine}'s library"),
            argv: vec![&bench, "load-engine", "--engine", engine],
            stdin: b"",
        },
        Process {
            label: "/bin/true (a process doing nothing)".into(),
            argv: vec!["/bin/true"],
            stdin: b"",
        },
    ];
    if let Some(plain) = &plain {
        processes.push(Process {
            label: "teller --version, built without WasmEdge".into(),
            argv: vec![plain, "--version"],
            stdin: b"",
        });
    }
    let mut timed = time_processes(&processes, runs)?.into_iter();
    let mut next = || {
        timed
            .next()
            .ok_or_else(|| Error::internal(ErrorCode::Internal, "a series is missing"))
    };
    let (teller, version, library, floor) = (next()?, next()?, next()?, next()?);
    let without = if plain.is_some() { Some(next()?) } else { None };
    let p50 = |s: &Series| s.quantile_us(0.5).max(0.001);
    let mut ratios = vec![
        (
            "P50 teller check / P50 /bin/true".to_string(),
            p50(&teller) / p50(&floor),
        ),
        (
            "P50 teller check / P50 teller --version".to_string(),
            p50(&teller) / p50(&version),
        ),
        (
            format!("P50 teller check / P50 a process that only opens {engine}'s library"),
            p50(&teller) / p50(&library),
        ),
    ];
    let mut notes = vec![format!(
        "{runs} runs each after a warm-up, the processes taken in turn (one run of each per round); the cache of compiled guests was filled by the warm-up"
    )];
    match &without {
        Some(without) => ratios.push((
            "P50 teller --version / P50 the same built without WasmEdge".to_string(),
            p50(&version) / p50(without),
        )),
        None => notes.push(
            "no build without WasmEdge was given (--plain-teller), so its --version was not measured"
                .to_string(),
        ),
    }
    let mut series = vec![teller, version];
    series.extend(without);
    series.extend([library, floor]);
    Ok(Report {
        bench: "cold-start",
        engine,
        ratios,
        notes,
        series,
    })
}

/// The bank's `bank.rego`, served by the Rego guest from a policy
/// directory as a user's policy would be.
fn rego_bank_policy(engine: &dyn Engine) -> Result<std::sync::Arc<dyn TransferCheck>, Error> {
    let dir = tempfile::tempdir().map_err(|e| {
        Error::internal(ErrorCode::Internal, format!("cannot make a directory: {e}"))
    })?;
    std::fs::write(
        dir.path().join("bank.rego"),
        teller_policy_artifacts::BANK_REGO,
    )
    .map_err(|e| Error::internal(ErrorCode::Internal, format!("cannot write bank.rego: {e}")))?;
    let members = PolicySource::Dir(dir.path().to_path_buf()).transfer_checks()?;
    let artifact = members
        .first()
        .ok_or_else(|| Error::internal(ErrorCode::UnknownPolicy, "bank.rego was not found"))?;
    engine.load_transfer_check(artifact)
}

/// `teller bench call`: in-process decision latency and throughput, on
/// fresh state and on warm instances, one thread and all cores, a Rego
/// policy, against the same rule compiled natively into the host. `start`
/// starts the engine for a workload: one with fresh state per call, one
/// with kept instances.
pub fn call(
    start: &dyn Fn(Workload) -> Result<Box<dyn Engine>, Error>,
    seconds: f64,
) -> Result<Report, Error> {
    let builtin = PolicySource::Builtin.transfer_checks()?;
    let builtin = builtin
        .first()
        .ok_or_else(|| Error::internal(ErrorCode::UnknownPolicy, "no built-in transfer check"))?;
    let request = teller_contract::decode_transfer(EXAMPLE.as_bytes())?;
    let config = teller_server::config::Config::default().policy_config();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let slice = Duration::from_secs_f64(seconds / 8.0);
    let mut series = Vec::new();
    let mut name = "";
    for (mode, label) in [
        (CallMode::Fresh, "fresh state"),
        (CallMode::Warm, "warm instance"),
    ] {
        let engine = start(Workload::Bench(mode))?;
        name = engine.name();
        let check = engine.load_transfer_check(builtin)?;
        let mut runs = vec![(label, check.clone())];
        if mode == CallMode::Warm {
            runs.push(("Rego bank.rego", rego_bank_policy(engine.as_ref())?));
        }
        for (label, check) in runs {
            for n in [1, threads] {
                let label = format!("{label}, {n} thread{}", if n == 1 { "" } else { "s" });
                eprintln!("call: {name} {label}");
                series.push(measure_calls(
                    check.as_ref(),
                    &config,
                    &request,
                    n,
                    slice,
                    &label,
                )?);
            }
        }
        if mode == CallMode::Warm {
            // The audit writer seals one record after another on one thread:
            // this bounds audited decisions per second.
            let sealer = engine.load_audit(&PolicySource::Builtin.audit()?)?;
            let set = PolicySet::new(vec![check.clone()])?;
            let decided = set.decide(&config, &request)?;
            let caller = Caller {
                client: "127.0.0.1:50000".into(),
            };
            let id = uuid::Uuid::now_v7().to_string();
            let event = decision_event(set.identity(), &request, &decided, &id, &caller, name);
            let label = "audit seal, 1 thread";
            eprintln!("call: {name} {label}");
            series.push(measure_threads(1, slice, label, || {
                Ok(|| {
                    sealer
                        .seal(1, teller_audit_log::GENESIS, &event)
                        .map(|record| drop(std::hint::black_box(record)))
                })
            })?);
        }
    }
    eprintln!("call: native Rust");
    series.push(measure_native(&config, &request, slice)?);
    let native = series.last().map_or(1.0, |s| s.quantile_us(0.5)).max(0.001);
    let ratios = series
        .iter()
        .take(6)
        .filter(|s| s.name.contains("1 thread"))
        .map(|s| {
            (
                format!("P50 {} / P50 native", s.name),
                s.quantile_us(0.5) / native,
            )
        })
        .collect();
    Ok(Report {
        bench: "call",
        engine: name,
        series,
        ratios,
        notes: vec![format!(
            "each series ran {:.1} s; a decision is the README example, allowed",
            slice.as_secs_f64()
        )],
    })
}

fn measure_calls(
    check: &dyn TransferCheck,
    config: &PolicyConfig,
    request: &TransferRequest,
    threads: usize,
    time: Duration,
    label: &str,
) -> Result<Series, Error> {
    measure_threads(threads, time, label, || {
        Ok(move || {
            check
                .check(config, request)
                .map(|decision| drop(std::hint::black_box(decision)))
        })
    })
}

/// Runs `threads` threads for `time`, each calling, as often as it can, the
/// operation `make` gives it; one latency per call, and calls per second.
fn measure_threads<C>(
    threads: usize,
    time: Duration,
    label: &str,
    make: impl Fn() -> Result<C, Error> + Sync,
) -> Result<Series, Error>
where
    C: FnMut() -> Result<(), Error>,
{
    let make = &make;
    let results: Vec<Result<(Histogram<u64>, u64), Error>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(move || {
                    let mut op = make()?;
                    let mut histogram = new_histogram()?;
                    let mut calls = 0u64;
                    let started = Instant::now();
                    while started.elapsed() < time {
                        let t = Instant::now();
                        op()?;
                        let _ = histogram.record(t.elapsed().as_nanos() as u64);
                        calls += 1;
                    }
                    Ok((histogram, calls))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(run_error("bench thread", "panicked")))
            })
            .collect()
    });
    let mut series = Series::new(label)?;
    let mut calls = 0;
    for result in results {
        let (histogram, n) = result?;
        let _ = series.histogram.add(&histogram);
        calls += n;
    }
    series.per_second = Some(calls as f64 / time.as_secs_f64());
    Ok(series)
}

/// The same rule, compiled into the host: the wasm/native ratio's base.
fn measure_native(
    config: &PolicyConfig,
    request: &TransferRequest,
    time: Duration,
) -> Result<Series, Error> {
    // The guest's rule works on teller's own types: no conversion here.
    use teller_transfer_rule as native;
    let mut series = Series::new("native Rust, same rule, 1 thread")?;
    let mut calls = 0u64;
    let started = Instant::now();
    while started.elapsed() < time {
        let t = Instant::now();
        std::hint::black_box(native::decide(
            std::hint::black_box(config),
            std::hint::black_box(request),
        ));
        let _ = series
            .histogram
            .record(t.elapsed().as_nanos().max(1) as u64);
        calls += 1;
    }
    series.per_second = Some(calls as f64 / time.as_secs_f64());
    Ok(series)
}
