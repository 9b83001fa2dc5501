//! `teller-bench ha-drill`: replicas of `teller serve` behind a real
//! haproxy (health checks on `/readyz`, as a Service with readiness would
//! route), sharing daily totals through a private Redis, under load at a
//! fixed rate, while they are restarted one by one, one is killed with
//! `kill -9`, every one reloads a new configuration, and one is stopped
//! (SIGSTOP) for a while. It reports what the clients saw in each event's
//! window and checks the replicas' audit logs against the answers.

use crate::state::PrivateRedis;
use crate::{Series, new_histogram, run_error};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{Value as Json, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use teller_contract::{Error, ErrorCode};

/// What the drill does.
#[derive(Debug, Clone)]
pub struct Drill {
    pub engine: &'static str,
    pub replicas: usize,
    /// Requests per second, scheduled (open loop).
    pub rate: f64,
    pub connections: usize,
    /// Seconds of load before the first event and after each one.
    pub settle: f64,
    /// How long the slow replica stays stopped.
    pub stop_seconds: f64,
    /// The replicas' `--drain-delay-ms`.
    pub drain_delay_ms: u64,
    pub cache_dir: Option<PathBuf>,
}

/// haproxy's health check: every `CHECK_MS`, out after `FALL` failures.
const CHECK_MS: u64 = 100;
const FALL: u64 = 2;
const RISE: u64 = 2;
/// How long haproxy waits for one try's answer: two and a half times the
/// guest deadline, so only a replica that stopped answering reaches it. The
/// request is then sent to another replica (a decision is idempotent by its
/// `request_id`), and the replica is taken out at once (`observe layer7`,
/// `on-error mark-down`) until its health checks pass again. A 503 (the
/// state store did not answer in time, or the replica is overloaded) is
/// tried on another replica too: nothing was granted for it.
const SERVER_TIMEOUT_MS: u64 = 250;

/// One request as the client saw it.
#[derive(Debug, Clone)]
struct Sent {
    /// When it was due, from the start of the load.
    due: Duration,
    /// From due to answer (or to failure).
    latency: Duration,
    outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Ok(String),
    /// A status other than 200, with teller's error code when it sent one.
    Status(u16, String),
    Connection,
}

/// One event of the drill and when it ran, from the start of the load.
#[derive(Debug, Clone)]
struct Event {
    name: &'static str,
    start: Duration,
    end: Duration,
}

/// Runs the drill; the report says whether its targets held.
pub fn ha_drill(drill: &Drill) -> Result<DrillReport, Error> {
    flush_pending_writes()?;
    let dir = tempfile::tempdir().map_err(|e| run_error("a scratch directory", e))?;
    let redis = PrivateRedis::start()?;
    let config = dir.path().join("teller.toml");
    write_config(&config, 1_000_000)?;
    let mut replicas: Vec<Replica> = (0..drill.replicas)
        .map(|i| Replica::new(dir.path(), i))
        .collect::<Result<_, _>>()?;
    let args = ReplicaArgs {
        engine: drill.engine,
        config: config.clone(),
        state: redis.url(),
        drain_delay_ms: drill.drain_delay_ms,
        cache_dir: drill.cache_dir.clone(),
    };
    for r in &mut replicas {
        r.start(&args)?;
    }
    for r in &replicas {
        r.wait_ready()?;
    }
    let front = free_port()?;
    let haproxy = Haproxy::start(dir.path(), front, &replicas)?;
    eprintln!(
        "ha-drill: {} replicas ({}) behind haproxy on 127.0.0.1:{front}, {:.0} req/s",
        drill.replicas, drill.engine, drill.rate
    );
    let sent: Arc<Mutex<Vec<Sent>>> = Arc::new(Mutex::new(Vec::new()));
    STOP.store(false, Ordering::Relaxed);
    let (began, start) = std::sync::mpsc::channel();
    let load = {
        let sent = sent.clone();
        let (rate, connections) = (drill.rate, drill.connections);
        std::thread::spawn(move || drive(front, rate, connections, &began, &sent))
    };
    // The schedule starts once the load's connections are open.
    let started = start
        .recv()
        .map_err(|_| run_error("the drill's load", "it did not start"))?;
    let settle = Duration::from_secs_f64(drill.settle);
    let mut events = Vec::new();
    let mut event = |name: &'static str, run: &mut dyn FnMut() -> Result<(), Error>| {
        std::thread::sleep(settle);
        eprintln!("ha-drill: {name}");
        let start = started.elapsed();
        let result = run();
        events.push(Event {
            name,
            start,
            end: started.elapsed(),
        });
        result
    };
    let outcome = (|| -> Result<(), Error> {
        event("rolling restart", &mut || {
            for r in replicas.iter_mut() {
                r.stop()?;
                r.start(&args)?;
                r.wait_ready()?;
                // As a rollout waits for readiness, and then for the
                // balancer to see it (RISE checks).
                std::thread::sleep(Duration::from_millis(CHECK_MS * (RISE + 1)));
            }
            Ok(())
        })?;
        event("kill -9 of one replica, then its restart", &mut || {
            let r = replicas
                .first_mut()
                .ok_or_else(|| run_error("the drill", "no replicas"))?;
            r.kill()?;
            std::thread::sleep(Duration::from_secs(2));
            r.start(&args)?;
            r.wait_ready()
        })?;
        event(
            "reload of a new configuration on every replica",
            &mut || {
                write_config(&config, 1_000_001)?;
                for r in &replicas {
                    r.signal("HUP")?;
                }
                Ok(())
            },
        )?;
        let stop_for = Duration::from_secs_f64(drill.stop_seconds);
        event("one replica stopped (SIGSTOP) for a while", &mut || {
            let r = replicas
                .last()
                .ok_or_else(|| run_error("the drill", "no replicas"))?;
            r.signal("STOP")?;
            std::thread::sleep(stop_for);
            r.signal("CONT")
        })?;
        std::thread::sleep(settle);
        Ok(())
    })();
    STOP.store(true, Ordering::Relaxed);
    let _ = load.join();
    drop(haproxy);
    for r in &mut replicas {
        let _ = r.stop();
    }
    outcome?;
    let sent = std::mem::take(&mut *sent.lock().unwrap_or_else(|p| p.into_inner()));
    let audit = check_audit(&replicas, &sent)?;
    let mut report = DrillReport::new(drill, sent, events, audit)?;
    if !report.passed() {
        // The replicas' logs say why; keep them for whoever reads the report.
        report.kept = Some(dir.keep());
    }
    Ok(report)
}

/// An audited answer waits for its `fsync`, and while the kernel writes
/// back other work's data (a build's gigabytes), every `fsync` on the disk
/// can wait for seconds: past haproxy's per-try timeout, so requests fail
/// that teller would have answered. The drill measures teller, so it
/// starts once the disk has nothing pending.
fn flush_pending_writes() -> Result<(), Error> {
    eprintln!("ha-drill: writing back the disk's pending data first (sync)");
    let status = Command::new("sync")
        .status()
        .map_err(|e| run_error("sync", e))?;
    if !status.success() {
        return Err(run_error("sync", status));
    }
    Ok(())
}

fn write_config(path: &Path, amount_limit: u64) -> Result<(), Error> {
    // Written aside and renamed, as a ConfigMap update is, so no reload
    // reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        format!(
            "[transfer_check]\namount_limit = {amount_limit}\ndaily_limit = 4503599627370495\n"
        ),
    )
    .and_then(|()| std::fs::rename(&tmp, path))
    .map_err(|e| run_error("the drill's configuration", e))
}

fn free_port() -> Result<u16, Error> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| run_error("a free port", e))
}

struct ReplicaArgs {
    engine: &'static str,
    config: PathBuf,
    state: String,
    drain_delay_ms: u64,
    cache_dir: Option<PathBuf>,
}

/// One `teller serve`, on a port it keeps across restarts.
struct Replica {
    port: u16,
    audit: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Replica {
    fn new(dir: &Path, i: usize) -> Result<Replica, Error> {
        Ok(Replica {
            port: free_port()?,
            audit: dir.join(format!("audit-{i}")),
            log: dir.join(format!("replica-{i}.log")),
            child: None,
        })
    }

    fn start(&mut self, a: &ReplicaArgs) -> Result<(), Error> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| run_error("a replica's log", e))?;
        let mut cmd = Command::new(crate::teller_binary()?);
        cmd.args(["serve", "--engine", a.engine])
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--audit-dir")
            .arg(&self.audit)
            .arg("--config")
            .arg(&a.config)
            .args(["--state", &a.state])
            .args(["--drain-delay-ms", &a.drain_delay_ms.to_string()])
            .stdout(Stdio::piped())
            .stderr(log);
        if let Some(dir) = &a.cache_dir {
            cmd.arg("--cache-dir").arg(dir);
        }
        let mut child = cmd.spawn().map_err(|e| run_error("teller serve", e))?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        if !line.contains("listening on") {
            let _ = child.kill();
            return Err(run_error(
                "a replica did not start",
                format!("{line:?} (see {})", self.log.display()),
            ));
        }
        self.child = Some(child);
        Ok(())
    }

    /// Waits until the replica's own `/readyz` answers 200, as a rollout
    /// waits for readiness.
    fn wait_ready(&self) -> Result<(), Error> {
        let started = Instant::now();
        loop {
            if ready(self.port) {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err(run_error("a replica", "not ready within 30 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pid(&self) -> Result<String, Error> {
        self.child
            .as_ref()
            .map(|c| c.id().to_string())
            .ok_or_else(|| run_error("a replica", "it is not running"))
    }

    fn signal(&self, name: &str) -> Result<(), Error> {
        let pid = self.pid()?;
        Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .map(drop)
            .map_err(|e| run_error("kill", e))
    }

    /// SIGTERM, and the clean exit after the drain.
    fn stop(&mut self) -> Result<(), Error> {
        if self.child.is_none() {
            return Ok(());
        }
        self.signal("TERM")?;
        let status = self.child.take().map(|mut c| c.wait());
        match status {
            Some(Ok(s)) if s.success() => Ok(()),
            other => Err(run_error("a replica's shutdown", format!("{other:?}"))),
        }
    }

    fn kill(&mut self) -> Result<(), Error> {
        if let Some(mut child) = self.child.take() {
            child.kill().map_err(|e| run_error("kill -9", e))?;
            let _ = child.wait();
        }
        Ok(())
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether `GET /readyz` on `port` answers 200.
fn ready(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let request =
        format!("GET /readyz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

/// Debian's haproxy in the foreground, routing to the replicas that pass
/// `GET /readyz`.
struct Haproxy(Child);

impl Haproxy {
    fn start(dir: &Path, front: u16, replicas: &[Replica]) -> Result<Haproxy, Error> {
        let servers: String = replicas
            .iter()
            .enumerate()
            .map(|(i, r)| format!("  server r{i} 127.0.0.1:{} check\n", r.port))
            .collect();
        let config = format!(
            "global\n  maxconn 4096\n\
             defaults\n  mode http\n  timeout connect 500ms\n  timeout client 30s\n  timeout server {SERVER_TIMEOUT_MS}ms\n  timeout check {CHECK_MS}ms\n  retries 3\n  retry-on conn-failure empty-response response-timeout 503\n  option redispatch 1\n\
             frontend teller\n  bind 127.0.0.1:{front}\n  default_backend replicas\n\
             backend replicas\n  balance roundrobin\n  option httpchk GET /readyz\n  http-check expect status 200\n  default-server inter {CHECK_MS}ms fall {FALL} rise {RISE} observe layer7 error-limit 1 on-error mark-down\n{servers}"
        );
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config).map_err(|e| run_error("haproxy.cfg", e))?;
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                Error::bad_request(
                    ErrorCode::BenchFailed,
                    format!("cannot start haproxy ({e}): scripts/setup installs it"),
                )
            })?;
        let haproxy = Haproxy(child);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", front)).is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                return Err(run_error("haproxy", "it did not listen within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Every server up (RISE checks) before the load starts.
        std::thread::sleep(Duration::from_millis(CHECK_MS * (RISE + 1)));
        Ok(haproxy)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Set when the drill's load must end.
static STOP: AtomicBool = AtomicBool::new(false);

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Open-loop load at `rate` to haproxy until [`STOP`], each request a fresh
/// `request_id`, sent at its due time on an idle kept-alive connection or,
/// when every one is busy, on a new one: as a service's connection pool
/// does, so one stalled answer delays only its own request. `connections`
/// are opened before the load starts.
fn drive(
    port: u16,
    rate: f64,
    connections: usize,
    began: &std::sync::mpsc::Sender<Instant>,
    sent: &Mutex<Vec<Sent>>,
) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| run_error("tokio", e))?;
    runtime.block_on(async {
        let idle: Arc<Mutex<Vec<Sender>>> = Arc::default();
        for _ in 0..connections {
            if let Some(s) = connect(port).await {
                idle.lock().unwrap_or_else(|p| p.into_inner()).push(s);
            }
        }
        let started = Instant::now();
        let _ = began.send(started);
        let step = Duration::from_secs_f64(1.0 / rate.max(1.0));
        let mut tasks = tokio::task::JoinSet::new();
        let mut due = Duration::ZERO;
        let mut n: u64 = 0;
        while !STOP.load(Ordering::Relaxed) {
            let at = started + due;
            let now = Instant::now();
            if at > now {
                tokio::time::sleep(at - now).await;
            }
            let body = crate::EXAMPLE.replace("\"r-1\"", &format!("\"drill-{n}\""));
            tasks.spawn(one_request(port, idle.clone(), body, due, at));
            n += 1;
            due += step;
            // Collect what is done so far, so the set stays small.
            while let Some(done) = tasks.try_join_next() {
                if let Ok(s) = done {
                    sent.lock().unwrap_or_else(|p| p.into_inner()).push(s);
                }
            }
        }
        while let Some(done) = tasks.join_next().await {
            if let Ok(s) = done {
                sent.lock().unwrap_or_else(|p| p.into_inner()).push(s);
            }
        }
        Ok(())
    })
}

/// One request, sent once: a broken connection is counted as a failure,
/// never hidden by sending again. Latency counts from when it was due (no
/// coordinated omission).
async fn one_request(
    port: u16,
    idle: Arc<Mutex<Vec<Sender>>>,
    body: String,
    due: Duration,
    at: Instant,
) -> Sent {
    let pooled = {
        let mut idle = idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|s| !s.is_closed());
        idle.pop()
    };
    let sender = match pooled {
        Some(s) => Some(s),
        None => connect(port).await,
    };
    let outcome = match sender {
        Some(mut s) => {
            let outcome = send(&mut s, port, body).await;
            if outcome != Outcome::Connection {
                idle.lock().unwrap_or_else(|p| p.into_inner()).push(s);
            }
            outcome
        }
        None => Outcome::Connection,
    };
    Sent {
        due,
        latency: at.elapsed(),
        outcome,
    }
}

async fn connect(port: u16) -> Option<Sender> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(sender)
}

async fn send(sender: &mut Sender, port: u16, body: String) -> Outcome {
    if sender.ready().await.is_err() {
        return Outcome::Connection;
    }
    let Ok(request) = Request::post("/v1/transfer/check")
        .header(hyper::header::HOST, format!("127.0.0.1:{port}"))
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
    else {
        return Outcome::Connection;
    };
    let Ok(response) = sender.send_request(request).await else {
        return Outcome::Connection;
    };
    let status = response.status().as_u16();
    let Ok(body) = response.into_body().collect().await else {
        return Outcome::Connection;
    };
    let doc = serde_json::from_slice::<Json>(&body.to_bytes()).ok();
    if status != 200 {
        // teller's error code, or the balancer's own page.
        let code = doc
            .as_ref()
            .and_then(|d| d.get("error")?.get("code")?.as_str())
            .unwrap_or("from haproxy");
        return Outcome::Status(status, code.to_string());
    }
    // A 200 without a decision id is a failure too.
    doc.as_ref()
        .and_then(|d| d.get("decision_id").and_then(Json::as_str))
        .map_or(
            Outcome::Status(status, "no decision_id".to_string()),
            |id| Outcome::Ok(id.to_string()),
        )
}

/// What the audit logs say about the answers.
#[derive(Debug, Clone)]
pub struct AuditCheck {
    pub logs_verified: usize,
    pub records: usize,
    /// 2xx answers whose decision is in no log, or in more than one.
    pub answered_not_once: usize,
    /// Records of decisions no client got a 2xx for.
    pub records_without_answer: usize,
    pub failures: Vec<String>,
}

fn check_audit(replicas: &[Replica], sent: &[Sent]) -> Result<AuditCheck, Error> {
    let mut failures = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut verified = 0;
    for r in replicas {
        match teller_audit_log::verify(&r.audit)? {
            Ok(_) => verified += 1,
            Err(bad) => failures.push(format!("{}: {bad}", r.audit.display())),
        }
        let mut segments: Vec<PathBuf> = std::fs::read_dir(&r.audit)
            .map_err(|e| run_error("an audit log", e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        segments.sort();
        for segment in segments {
            let text = std::fs::read_to_string(&segment).unwrap_or_default();
            for line in text.lines() {
                if let Ok(record) = serde_json::from_str::<Json>(line)
                    && let Some(id) = record.get("id").and_then(Json::as_str)
                {
                    *seen.entry(id.to_string()).or_default() += 1;
                }
            }
        }
    }
    let answered: BTreeSet<&str> = sent
        .iter()
        .filter_map(|s| match &s.outcome {
            Outcome::Ok(id) => Some(id.as_str()),
            _ => None,
        })
        .collect();
    let answered_not_once = answered
        .iter()
        .filter(|id| seen.get(**id).copied() != Some(1))
        .count();
    // The self-tests of reloads are decisions too, but are not recorded;
    // every record is a client's decision.
    let records_without_answer = seen
        .keys()
        .filter(|id| !answered.contains(id.as_str()))
        .count();
    Ok(AuditCheck {
        logs_verified: verified,
        records: seen.values().sum(),
        answered_not_once,
        records_without_answer,
        failures,
    })
}

/// The drill's findings.
pub struct DrillReport {
    drill: Drill,
    /// Where the replicas' logs and audit logs were kept, when a target
    /// failed.
    kept: Option<PathBuf>,
    sent: usize,
    ok: usize,
    http_5xx: usize,
    other_status: usize,
    connection_errors: usize,
    overall: Series,
    events: Vec<EventReport>,
    audit: AuditCheck,
    targets: Vec<Target>,
}

/// One target of the drill and whether it held. A timed one (failover,
/// latency) is judged by `scripts/ha-drill`, never by a test.
struct Target {
    name: String,
    held: bool,
    timed: bool,
}

struct EventReport {
    name: &'static str,
    seconds: f64,
    failed: usize,
    /// The failures by kind: status and error code, or a connection error.
    kinds: BTreeMap<String, usize>,
    /// From the event's start to its window's last disrupted request: one
    /// that failed, or waited out a try's timeout before another replica
    /// answered it.
    failover: Option<Duration>,
    latency: Series,
}

impl DrillReport {
    fn new(
        drill: &Drill,
        sent: Vec<Sent>,
        events: Vec<Event>,
        audit: AuditCheck,
    ) -> Result<DrillReport, Error> {
        let count = |f: &dyn Fn(&Outcome) -> bool| sent.iter().filter(|s| f(&s.outcome)).count();
        let series =
            |name: &str, items: &mut dyn Iterator<Item = &Sent>| -> Result<Series, Error> {
                let mut s = Series {
                    name: name.to_string(),
                    histogram: new_histogram()?,
                    per_second: None,
                };
                for item in items.filter(|i| i.outcome != Outcome::Connection) {
                    let _ = s.histogram.record(item.latency.as_nanos().max(1) as u64);
                }
                Ok(s)
            };
        // An event's window runs from its start to the next one's: a request
        // counts there by when it was due, a failure by when it failed (a
        // request sent just before a replica stopped fails because of it).
        let mut events = events;
        events.insert(
            0,
            Event {
                name: "steady load before the events",
                start: Duration::ZERO,
                end: Duration::ZERO,
            },
        );
        let starts: Vec<Duration> = events.iter().map(|e| e.start).collect();
        let events: Vec<EventReport> = events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let until = starts.get(i + 1).copied().unwrap_or(Duration::MAX);
                let within = |t: Duration| t >= e.start && t < until;
                let failures: Vec<&Sent> = sent
                    .iter()
                    .filter(|s| !matches!(s.outcome, Outcome::Ok(_)))
                    .filter(|s| within(s.due + s.latency))
                    .collect();
                let mut kinds = BTreeMap::new();
                for f in &failures {
                    let kind = match &f.outcome {
                        Outcome::Status(status, code) => format!("{status} {code}"),
                        _ => "connection error".to_string(),
                    };
                    *kinds.entry(kind).or_default() += 1;
                }
                Ok(EventReport {
                    name: e.name,
                    seconds: (e.end - e.start).as_secs_f64(),
                    failed: failures.len(),
                    kinds,
                    failover: sent
                        .iter()
                        .filter(|s| {
                            !matches!(s.outcome, Outcome::Ok(_))
                                || s.latency >= Duration::from_millis(SERVER_TIMEOUT_MS)
                        })
                        .map(|s| s.due + s.latency)
                        .filter(|t| within(*t))
                        .max()
                        .map(|t| t.saturating_sub(e.start)),
                    latency: series(e.name, &mut sent.iter().filter(|s| within(s.due)))?,
                })
            })
            .collect::<Result<_, Error>>()?;
        let overall = series("whole drill", &mut sent.iter())?;
        let ok = count(&|o| matches!(o, Outcome::Ok(_)));
        let http_5xx = count(&|o| matches!(o, Outcome::Status(s, _) if *s >= 500));
        let mut report = DrillReport {
            drill: drill.clone(),
            kept: None,
            sent: sent.len(),
            ok,
            http_5xx,
            other_status: count(&|o| matches!(o, Outcome::Status(s, _) if *s < 500)),
            connection_errors: count(&|o| *o == Outcome::Connection),
            overall,
            events,
            audit,
            targets: Vec::new(),
        };
        report.targets = report.judge();
        Ok(report)
    }

    fn judge(&self) -> Vec<Target> {
        let failed = |name: &str| {
            self.events
                .iter()
                .find(|e| e.name.starts_with(name))
                .map_or(usize::MAX, |e| e.failed)
        };
        let failover = |name: &str| {
            self.events
                .iter()
                .find(|e| e.name.starts_with(name))
                .map_or(Duration::MAX, |e| e.failover.unwrap_or(Duration::ZERO))
        };
        let p99_ms = self.overall.quantile_us(0.99) / 1000.0;
        let target = |name: &str, held: bool, timed: bool| Target {
            name: name.to_string(),
            held,
            timed,
        };
        vec![
            target(
                "steady load: 0 failed requests",
                failed("steady") == 0,
                false,
            ),
            target(
                "rolling restart: 0 failed requests",
                failed("rolling") == 0,
                false,
            ),
            target(
                "reload on every replica: 0 failed requests",
                failed("reload") == 0,
                false,
            ),
            target(
                "every 2xx decision is in exactly one replica's audit log",
                self.audit.answered_not_once == 0,
                false,
            ),
            target(
                "every replica's audit log verifies",
                self.audit.failures.is_empty(),
                false,
            ),
            target(
                "kill -9: failover within 5 s",
                failover("kill") < Duration::from_secs(5),
                true,
            ),
            target(
                "stopped replica: out of rotation (its disruption ends before it resumes)",
                failover("one replica stopped") < Duration::from_secs_f64(self.drill.stop_seconds),
                true,
            ),
            target(
                &format!("whole drill: P99 {p99_ms:.1} ms < 100 ms"),
                p99_ms < 100.0,
                true,
            ),
        ]
    }

    /// Whether every target held.
    pub fn passed(&self) -> bool {
        self.targets.iter().all(|t| t.held)
    }

    pub fn print(&self, as_json: bool) {
        let ms = |s: &Series, q: f64| s.quantile_us(q) / 1000.0;
        if as_json {
            let events: Vec<Json> = self
                .events
                .iter()
                .map(|e| {
                    json!({
                        "event": e.name,
                        "seconds": e.seconds,
                        "failed": e.failed,
                        "failures": e.kinds,
                        "failover_seconds": e.failover.map(|f| f.as_secs_f64()),
                        "p50_ms": ms(&e.latency, 0.5),
                        "p99_ms": ms(&e.latency, 0.99),
                        "p999_ms": ms(&e.latency, 0.999),
                    })
                })
                .collect();
            let doc = json!({
                "bench": "ha-drill",
                "engine": self.drill.engine,
                "replicas": self.drill.replicas,
                "rate": self.drill.rate,
                "sent": self.sent,
                "ok": self.ok,
                "http_5xx": self.http_5xx,
                "other_status": self.other_status,
                "connection_errors": self.connection_errors,
                "p50_ms": ms(&self.overall, 0.5),
                "p99_ms": ms(&self.overall, 0.99),
                "p999_ms": ms(&self.overall, 0.999),
                "events": events,
                "audit": {
                    "logs_verified": self.audit.logs_verified,
                    "records": self.audit.records,
                    "answered_not_once": self.audit.answered_not_once,
                    "records_without_answer": self.audit.records_without_answer,
                    "failures": self.audit.failures,
                },
                "kept": self.kept,
                "targets": self
                    .targets
                    .iter()
                    .map(|t| json!({"target": t.name, "held": t.held, "timed": t.timed}))
                    .collect::<Vec<_>>(),
            });
            println!("{doc}");
            return;
        }
        println!(
            "\nteller-bench ha-drill — {} replicas on {}, haproxy (checks every {CHECK_MS} ms, out after {FALL}), {:.0} req/s from a pool of {}+ connections, per-try timeout {SERVER_TIMEOUT_MS} ms, drain delay {} ms",
            self.drill.replicas,
            self.drill.engine,
            self.drill.rate,
            self.drill.connections,
            self.drill.drain_delay_ms
        );
        println!(
            "sent {}, answered 2xx {}, 5xx {}, other status {}, connection errors {}",
            self.sent, self.ok, self.http_5xx, self.other_status, self.connection_errors
        );
        println!(
            "{:<48} {:>7} {:>7} {:>10} {:>9} {:>9} {:>9}",
            "window", "secs", "failed", "failover", "P50 ms", "P99 ms", "P999 ms"
        );
        println!(
            "{:<48} {:>7} {:>7} {:>10} {:>9.2} {:>9.2} {:>9.2}   (budget 50 / 100 / 200 ms)",
            "whole drill",
            "",
            self.sent - self.ok,
            "",
            ms(&self.overall, 0.5),
            ms(&self.overall, 0.99),
            ms(&self.overall, 0.999)
        );
        for e in &self.events {
            println!(
                "{:<48} {:>7.1} {:>7} {:>10} {:>9.2} {:>9.2} {:>9.2}",
                e.name,
                e.seconds,
                e.failed,
                e.failover
                    .map_or("none".to_string(), |f| format!("{:.2} s", f.as_secs_f64())),
                ms(&e.latency, 0.5),
                ms(&e.latency, 0.99),
                ms(&e.latency, 0.999)
            );
            for (kind, n) in &e.kinds {
                println!("    {n} × {kind}");
            }
        }
        println!(
            "audit: {} logs verified, {} records, {} 2xx answers not in exactly one log, {} records without a 2xx answer (requests cut by kill -9 or stuck in the stopped replica)",
            self.audit.logs_verified,
            self.audit.records,
            self.audit.answered_not_once,
            self.audit.records_without_answer
        );
        for f in &self.audit.failures {
            println!("audit: {f}");
        }
        for t in &self.targets {
            println!("{} {}", if t.held { "held:  " } else { "FAILED:" }, t.name);
        }
        if let Some(dir) = &self.kept {
            println!(
                "the replicas' logs and audit logs are kept in {}",
                dir.display()
            );
        }
    }
}
