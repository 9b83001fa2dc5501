//! `teller bench http`: load from this process against `teller serve` in
//! another, over loopback, with and without the audit log.
//!
//! Without `--rate` each connection sends its next request when the last
//! one is answered (closed loop: the throughput ceiling). With `--rate` the
//! requests are scheduled at fixed times and latency counts from the time a
//! request was due, not when it could be sent, so a stalled server shows up
//! in the percentiles (no coordinated omission).

use super::{EXAMPLE, Report, Series, new_histogram, run_error};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use teller_contract::Error;
use tokio::time::Instant;

/// What to load the server with.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub connections: usize,
    pub seconds: f64,
    /// Requests per second across all connections; `None` is closed-loop.
    pub rate: Option<f64>,
}

/// Runs the load against the floor and against teller without and with an
/// audit log. The three servers run side by side and take the load in
/// turns of about a second, so that every series sees the same phases of a
/// machine whose speed drifts, and the ratios to the floor compare like
/// with like.
pub fn http(engine: &'static str, load: Load, cache_dir: Option<&Path>) -> Result<Report, Error> {
    let dir = tempfile::tempdir().map_err(|e| run_error("temporary directory", e))?;
    let log = dir.path().join("audit");
    let servers = [
        (FLOOR, Server::floor()?),
        (
            "transfer checks, no audit log",
            Server::start(engine, None, cache_dir)?,
        ),
        (
            "transfer checks, audit log on",
            Server::start(engine, Some(log.as_path()), cache_dir)?,
        ),
    ];
    let turns = load.seconds.ceil().max(1.0) as usize;
    let turn = Load {
        seconds: load.seconds / turns as f64,
        ..load
    };
    eprintln!(
        "http: {} connections, {turns} turns of {:.1} s against each of {}",
        load.connections,
        turn.seconds,
        servers
            .iter()
            .map(|(label, server)| format!("{label} ({})", server.addr))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut totals = servers
        .iter()
        .map(|(label, _)| Totals::new(label))
        .collect::<Result<Vec<_>, _>>()?;
    for t in 1..=turns {
        let mut rates = Vec::new();
        for ((label, server), total) in servers.iter().zip(&mut totals) {
            let before = server.cpu_seconds();
            let slice = drive(server.addr, turn, label)?;
            let used = server.cpu_seconds().zip(before).map(|(after, b)| after - b);
            rates.push(format!("{:.0}", slice.answered as f64 / slice.seconds));
            total.add(slice, used);
        }
        eprintln!("http: turn {t}/{turns}: req/s {}", rates.join(" / "));
    }
    // How many records each `fsync` covered, from the audited server's own
    // counters: group commit's effect, in the run that loaded it.
    let groups = servers.last().map(|(_, audited)| audited.audit_groups());
    // Every server stops (the audited one syncs its last group) before its
    // log is verified.
    drop(servers);
    // The server's CPU time per answered request, per series: steadier
    // than req/s on a machine whose speed drifts, and not shared with the
    // client.
    let cpu: Vec<Option<f64>> = totals.iter().map(Totals::cpu_per_request).collect();
    let series: Vec<Series> = totals.into_iter().map(Totals::series).collect();
    // Each of teller's series as a fraction of the floor, measured in this
    // run: throughput (closed loop) and P99.
    let mut ratios = Vec::new();
    if let Some((floor, teller)) = series.split_first() {
        for s in teller {
            if let (Some(mine), Some(base)) = (s.per_second, floor.per_second) {
                ratios.push((
                    format!("req/s {} / req/s native floor", s.name),
                    mine / base.max(1.0),
                ));
            }
            ratios.push((
                format!("P99 {} / P99 native floor", s.name),
                s.quantile_us(0.99) / floor.quantile_us(0.99).max(0.001),
            ));
        }
    }
    if let Some(Some(base)) = cpu.first() {
        for (s, mine) in series.iter().zip(&cpu).skip(1) {
            if let Some(mine) = mine {
                ratios.push((
                    format!("server CPU per request {} / native floor's", s.name),
                    mine / base.max(0.001),
                ));
            }
        }
    }
    let records = teller_audit_log::verify(&log)?
        .map_err(|bad| run_error("the bench's audit log does not verify", bad))?
        .head
        .seq;
    let mut notes = vec![format!(
        "{} connections, {:.0} s each in turns of {:.1} s, {}; the audit run wrote {records} records",
        load.connections,
        load.seconds,
        turn.seconds,
        match load.rate {
            Some(r) => format!("{r:.0} req/s scheduled, latency from each request's due time"),
            None => "closed loop (each connection waits for its answer)".to_string(),
        }
    )];
    match groups {
        Some(Ok((records, fsyncs))) if fsyncs > 0 => notes.push(format!(
            "audit log: {records} records in {fsyncs} fsyncs, {:.1} records per fsync",
            records as f64 / fsyncs as f64
        )),
        Some(Ok(_)) => notes.push("audit log: no fsync counted".to_string()),
        Some(Err(e)) => notes.push(format!("audit log: records per fsync unknown ({e})")),
        None => {}
    }
    notes.push("client and server share this machine's cores".to_string());
    let per_request: Vec<String> = series
        .iter()
        .zip(&cpu)
        .filter_map(|(s, c)| c.map(|c| format!("{} {c:.1} µs", s.name)))
        .collect();
    if !per_request.is_empty() {
        notes.push(format!(
            "server CPU per request (user + system, all threads): {}",
            per_request.join("; ")
        ));
    }
    Ok(Report {
        bench: "http",
        engine,
        series,
        ratios,
        notes,
    })
}

/// The floor's series name.
const FLOOR: &str = "native floor: same rule, same hyper stack, no wasm";

/// One series' load, summed over its turns.
struct Totals {
    series: Series,
    answered: u64,
    seconds: f64,
    /// `None` once any turn's CPU time could not be read.
    cpu_seconds: Option<f64>,
}

impl Totals {
    fn new(label: &str) -> Result<Self, Error> {
        Ok(Totals {
            series: Series::new(label)?,
            answered: 0,
            seconds: 0.0,
            cpu_seconds: Some(0.0),
        })
    }

    fn add(&mut self, slice: Slice, cpu_seconds: Option<f64>) {
        let _ = self.series.histogram.add(&slice.histogram);
        self.answered += slice.answered;
        self.seconds += slice.seconds;
        self.cpu_seconds = self.cpu_seconds.zip(cpu_seconds).map(|(a, b)| a + b);
    }

    /// Microseconds of the server's CPU per answered request.
    fn cpu_per_request(&self) -> Option<f64> {
        self.cpu_seconds
            .filter(|_| self.answered > 0)
            .map(|s| s * 1e6 / self.answered as f64)
    }

    fn series(self) -> Series {
        Series {
            per_second: Some(self.answered as f64 / self.seconds.max(1e-9)),
            ..self.series
        }
    }
}

/// What one turn against one server gave.
struct Slice {
    histogram: hdrhistogram::Histogram<u64>,
    answered: u64,
    seconds: f64,
}

/// `teller serve` in a child process on an ephemeral port.
struct Server {
    addr: SocketAddr,
    child: Child,
}

impl Server {
    fn start(
        engine: &str,
        audit: Option<&Path>,
        cache_dir: Option<&Path>,
    ) -> Result<Server, Error> {
        let exe = super::teller_binary()?;
        // A server serves at once and compiles in the background; compiled
        // first, every series measures compiled code, not the interpreter.
        let mut compile = Command::new(&exe);
        compile.args(["compile", "--engine", engine]);
        if let Some(dir) = cache_dir {
            compile.arg("--cache-dir").arg(dir);
        }
        match compile.stdout(Stdio::null()).stderr(Stdio::null()).status() {
            Ok(status) if status.success() => {}
            other => eprintln!(
                "teller-bench: could not compile the guests first ({other:?}); the first seconds may run on the interpreter"
            ),
        }
        let mut cmd = Command::new(exe);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--engine", engine]);
        if let Some(log) = audit {
            cmd.arg("--audit-dir").arg(log);
        }
        if let Some(dir) = cache_dir {
            cmd.arg("--cache-dir").arg(dir);
        }
        Self::spawn(cmd)
    }

    /// This harness's own native floor (`teller-bench floor-serve`), a
    /// process of its own as `teller serve` is.
    fn floor() -> Result<Server, Error> {
        let exe = std::env::current_exe().map_err(|e| run_error("the bench's own binary", e))?;
        let mut cmd = Command::new(exe);
        cmd.args(["floor-serve", "--listen", "127.0.0.1:0"]);
        Self::spawn(cmd)
    }

    /// CPU time the server's threads have used so far, from
    /// `/proc/PID/stat`; `None` where there is no such file.
    fn cpu_seconds(&self) -> Option<f64> {
        /// The unit of `/proc`'s times: Linux's `USER_HZ`, 100 on every
        /// architecture it runs on.
        const USER_HZ: f64 = 100.0;
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // Fields after the command name, which is in parentheses and may
        // hold spaces: state is the first, utime the 12th, stime the 13th.
        let rest = stat.rsplit_once(')')?.1;
        let mut fields = rest.split_whitespace().skip(11);
        let user: f64 = fields.next()?.parse().ok()?;
        let system: f64 = fields.next()?.parse().ok()?;
        Some((user + system) / USER_HZ)
    }

    /// The audit records made durable and the `fsync`s that did it, from
    /// `GET /metrics`.
    fn audit_groups(&self) -> Result<(u64, u64), Error> {
        use std::io::{Read, Write};
        let mut stream =
            std::net::TcpStream::connect(self.addr).map_err(|e| run_error("GET /metrics", e))?;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let request = format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        let mut answer = String::new();
        stream
            .write_all(request.as_bytes())
            .and_then(|()| stream.read_to_string(&mut answer))
            .map_err(|e| run_error("GET /metrics", e))?;
        let counter = |name: &str| {
            answer
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
                .ok_or_else(|| run_error("GET /metrics", format!("no {name}")))
        };
        Ok((
            counter("teller_audit_records_total")?,
            counter("teller_audit_fsync_seconds_count")?,
        ))
    }

    fn spawn(mut cmd: Command) -> Result<Server, Error> {
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .map_err(|e| run_error("cannot start the server", e))?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let addr = line
            .split("listening on http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok());
        match addr {
            Some(addr) => Ok(Server { addr, child }),
            None => {
                let _ = child.kill();
                Err(run_error("the server did not start", line))
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Loads the server at `addr` for `load.seconds`; every request must be
/// answered 200.
fn drive(addr: SocketAddr, load: Load, label: &str) -> Result<Slice, Error> {
    // One client thread: the server keeps the other cores.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| run_error("tokio", e))?;
    runtime.block_on(async move {
        let started = Instant::now();
        let deadline = started + Duration::from_secs_f64(load.seconds);
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..load.connections {
            let interval = load
                .rate
                .map(|r| Duration::from_secs_f64(load.connections as f64 / r.max(1.0)));
            // Spread the connections' schedules over one interval.
            let offset = interval.map_or(Duration::ZERO, |i| {
                i.mul_f64(c as f64 / load.connections as f64)
            });
            tasks.spawn(connection(addr, deadline, interval, started + offset));
        }
        let mut histogram = new_histogram()?;
        let (mut ok, mut failed) = (0u64, 0u64);
        while let Some(joined) = tasks.join_next().await {
            let (connection, good, bad) = joined.map_err(|e| run_error("client task", e))??;
            let _ = histogram.add(&connection);
            ok += good;
            failed += bad;
        }
        if failed > 0 {
            return Err(run_error(
                label,
                format!("{failed} of {} requests were not answered 200", ok + failed),
            ));
        }
        Ok(Slice {
            histogram,
            answered: ok,
            seconds: started.elapsed().as_secs_f64(),
        })
    })
}

async fn connection(
    addr: SocketAddr,
    deadline: Instant,
    interval: Option<Duration>,
    first: Instant,
) -> Result<(hdrhistogram::Histogram<u64>, u64, u64), Error> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| run_error("connect", e))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| run_error("handshake", e))?;
    tokio::spawn(conn);
    let body = Bytes::from_static(EXAMPLE.as_bytes());
    let mut histogram = new_histogram()?;
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut due = first;
    while Instant::now() < deadline {
        let sent_at = match interval {
            Some(step) => {
                // tokio's timer has 1 ms ticks: sleep to within a tick of
                // the due time, then yield until it, so that a request is
                // not sent (and its latency counted) up to 1 ms late.
                let tick = Duration::from_millis(1);
                if due > Instant::now() + tick {
                    tokio::time::sleep_until(due - tick).await;
                }
                while Instant::now() < due {
                    tokio::task::yield_now().await;
                }
                let at = due;
                due += step;
                at
            }
            None => Instant::now(),
        };
        let request = Request::post("/v1/transfer/check")
            .header(hyper::header::HOST, addr.to_string())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()))
            .map_err(|e| run_error("request", e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| run_error("send", e))?;
        let status = response.status();
        let _ = response
            .into_body()
            .collect()
            .await
            .map_err(|e| run_error("response body", e))?;
        let _ = histogram.record(sent_at.elapsed().as_nanos() as u64);
        if status == 200 {
            ok += 1;
        } else {
            failed += 1;
        }
    }
    Ok((histogram, ok, failed))
}
