//! `teller bench state`: what a decision with a daily limit costs, on the
//! embedded store and on Redis, next to the same decision without state
//! and to one store round trip alone, all in one run.

use crate::{Report, Series, measure_threads, run_error};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use teller_contract::{Error, ErrorCode, PolicyConfig, TransferRequest};
use teller_engine::artifact::PolicySource;
use teller_engine::state::{Day, GuestState, StateStore};
use teller_engine::{Engine, Workload};

/// A daily limit no bench reaches: every decision reserves and is allowed.
const UNREACHED: u64 = 1 << 52;

/// Runs the series; `start` starts the engine with the given state. Without
/// `redis`, a private `redis-server` is started on a free port.
pub fn state(
    start: &dyn Fn(Workload, GuestState) -> Result<Box<dyn Engine>, Error>,
    redis: Option<&str>,
    seconds: f64,
) -> Result<Report, Error> {
    let slice = Duration::from_secs_f64(seconds / 5.0);
    let dir = tempfile::tempdir().map_err(|e| run_error("a scratch directory", e))?;
    let private = match redis {
        Some(_) => None,
        None => Some(PrivateRedis::start()?),
    };
    let redis_url = redis.map_or_else(
        || private.as_ref().map(PrivateRedis::url).unwrap_or_default(),
        str::to_string,
    );
    let timeout = Duration::from_millis(teller_state_timeout());
    let embedded = open(&format!("file:{}", dir.path().display()), timeout)?;
    let redis = open(&redis_url, timeout)?;
    let request = teller_contract::decode_transfer(crate::EXAMPLE.as_bytes())?;
    let mut config = teller_server::config::Config::default().policy_config();
    let mut series = Vec::new();
    let mut name = "";
    for (label, store) in [
        ("decision, no daily limit", None),
        (
            "decision with daily limit, embedded store",
            Some(embedded.clone()),
        ),
        ("decision with daily limit, Redis", Some(redis.clone())),
    ] {
        config.daily_limit = store.as_ref().map(|_| UNREACHED);
        let state = store.map_or_else(GuestState::none, GuestState::new);
        let engine = start(Workload::Server, state)?;
        name = engine.name();
        eprintln!("state: {name} {label}");
        series.push(decisions(engine.as_ref(), &config, &request, slice, label)?);
    }
    for (label, store) in [
        ("embedded store read alone", embedded),
        ("Redis round trip alone (one script)", redis),
    ] {
        eprintln!("state: {label}");
        let day = Day::today(0);
        series.push(measure_threads(1, slice, label, || {
            let store = store.clone();
            Ok(move || {
                store
                    .daily_total(day, "bench")
                    .map(drop)
                    .map_err(|e| run_error("a state read", e))
            })
        })?);
    }
    let p50 = |i: usize| series.get(i).map_or(0.0, |s: &Series| s.quantile_us(0.5));
    let ratios = vec![
        (
            "P50 with embedded store / P50 without state".to_string(),
            p50(1) / p50(0).max(0.001),
        ),
        (
            "P50 with Redis / P50 without state".to_string(),
            p50(2) / p50(0).max(0.001),
        ),
        (
            "(P50 with Redis − P50 without state) / P50 Redis round trip".to_string(),
            (p50(2) - p50(0)) / p50(4).max(0.001),
        ),
    ];
    let costs = format!(
        "what state adds to a decision's P50: {:.1} µs on the embedded store, {:.1} µs with Redis (one script, one round trip)",
        p50(1) - p50(0),
        p50(2) - p50(0)
    );
    Ok(Report {
        bench: "state",
        engine: name,
        series,
        ratios,
        notes: vec![
            costs,
            format!(
                "1 thread; each series ran {:.1} s; every decision is the README example with a fresh request id, allowed and reserved",
                slice.as_secs_f64()
            ),
            format!(
                "Redis: {}",
                if private.is_some() {
                    "a private redis-server on loopback"
                } else {
                    "the --redis given"
                }
            ),
        ],
    })
}

fn teller_state_timeout() -> u64 {
    // A bench measures speed: a slow answer is a figure, not a failure.
    1_000
}

fn open(url: &str, timeout: Duration) -> Result<Arc<dyn StateStore>, Error> {
    teller_state::open(url, timeout)
}

fn decisions(
    engine: &dyn Engine,
    config: &PolicyConfig,
    request: &TransferRequest,
    time: Duration,
    label: &str,
) -> Result<Series, Error> {
    let builtin = PolicySource::Builtin.transfer_checks()?;
    let builtin = builtin
        .first()
        .ok_or_else(|| Error::internal(ErrorCode::UnknownPolicy, "no built-in transfer check"))?;
    let check = engine.load_transfer_check(builtin)?;
    let next = AtomicU64::new(0);
    let check = check.as_ref();
    let next = &next;
    measure_threads(1, time, label, move || {
        let mut request = request.clone();
        Ok(move || {
            request.request_id = Some(format!("bench-{}", next.fetch_add(1, Ordering::Relaxed)));
            let decision = check.check(config, &request)?;
            if !decision.allow {
                return Err(run_error("a stateful decision", "it was not allowed"));
            }
            Ok(())
        })
    })
}

/// A `redis-server` of the bench's own on a free loopback port.
pub(crate) struct PrivateRedis {
    port: u16,
    child: Child,
}

impl PrivateRedis {
    pub(crate) fn start() -> Result<PrivateRedis, Error> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| run_error("a free port", e))?
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| {
                Error::bad_request(
                    ErrorCode::BenchFailed,
                    format!("cannot start redis-server ({e}): give --redis URL or install redis-server (scripts/setup does)"),
                )
            })?;
        let redis = PrivateRedis { port, child };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                return Err(run_error("redis-server", "it did not listen within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(redis)
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
