//! Daily limits kept in state: two `teller serve` processes sharing one real
//! Redis (Debian's `redis-server`, started here on a free port), Redis
//! killed under load, the embedded store under `kill -9`, and reservations
//! taken back when a set of policies denies.

use crate::support::{ENGINES, Server, teller};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A private `redis-server`: no persistence, loopback only, killed on drop.
struct Redis {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port)
    }

    fn start_on(port: u16) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/setup installs it)");
        let redis = Redis {
            port,
            child,
            _dir: dir,
        };
        let started = Instant::now();
        while redis.command("PING") != "+PONG" {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not answer on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// One inline command; its first reply line ("" if none came).
    fn command(&self, line: &str) -> String {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return String::new();
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        if stream.write_all(format!("{line}\r\n").as_bytes()).is_err() {
            return String::new();
        }
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    }

    fn kill(mut self) -> u16 {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.port
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A configuration with a daily limit.
fn limit_config(dir: &Path, daily_limit: u64) -> String {
    let path = dir.join("teller.toml");
    std::fs::write(
        &path,
        format!("[transfer_check]\ndaily_limit = {daily_limit}\nday_offset = \"+08:00\"\n"),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

/// A policy directory: the built-in transfer check and one Rego file, the
/// Rego policy first when `rego_first`.
fn policy_set(dir: &Path, rego_file: &str, rego: &str, rego_first: bool) -> std::path::PathBuf {
    let policies = dir.join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(policies.join(rego_file), rego).unwrap();
    crate::rego::install_guest(
        &policies,
        "transfer-check",
        teller_policy_artifacts::TRANSFER_CHECK,
    );
    let (rego, wasm) = (
        format!("[[policy]]\nrego = \"{rego_file}\"\n"),
        "[[policy]]\nwasm = \"transfer-check\"\n".to_string(),
    );
    let manifest = if rego_first {
        rego + &wasm
    } else {
        wasm + &rego
    };
    std::fs::write(policies.join("policies.toml"), manifest).unwrap();
    policies
}

fn transfer(account: &str, amount: u64, request_id: &str) -> String {
    serde_json::json!({
        "action": "transfer",
        "amount": amount,
        "from_account": account,
        "to_account": "6222020200007654321",
        "user": {"id": "u-1", "role": "authorized"},
        "audit": {"enabled": true},
        "request_id": request_id,
    })
    .to_string()
}

/// What one answer was: allow, refused by a rule, or an error code.
fn outcome(server: &Server, body: &str) -> (u16, String, String) {
    let r = server.post("/v1/transfer/check", body);
    let v = r.json();
    let said = if r.status == 200 {
        v["verdict"].as_str().unwrap().to_string()
    } else {
        v["error"]["code"].as_str().unwrap().to_string()
    };
    (
        r.status,
        said,
        v["decision_id"].as_str().unwrap_or("").to_string(),
    )
}

fn audit_lines(dir: &Path) -> String {
    let mut all = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            all.push_str(&std::fs::read_to_string(path).unwrap_or_default());
        }
    }
    all
}

#[test]
fn two_servers_sharing_redis_never_allow_more_than_the_daily_limit() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let config = limit_config(dir.path(), 100_000);
    let url = redis.url();
    // One server per engine (the same one twice in a build with one).
    let servers: Vec<(Server, std::path::PathBuf)> = [ENGINES[0], ENGINES[ENGINES.len() - 1]]
        .iter()
        .enumerate()
        .map(|(i, engine)| {
            let audit = dir.path().join(format!("audit-{i}"));
            let server = Server::start(
                engine,
                &[
                    "--config",
                    &config,
                    "--state",
                    &url,
                    "--audit-dir",
                    audit.to_str().unwrap(),
                ],
            );
            (server, audit)
        })
        .collect();
    // 320 transfers of 1,000 from one account, from 8 threads, alternating
    // between the servers; each thread also retries its first request on
    // the other server, which must give the same answer and count once.
    let next = AtomicUsize::new(0);
    let results: Vec<(u16, String, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let (servers, next) = (&servers, &next);
                s.spawn(move || {
                    let mut out = Vec::new();
                    let mut first: Option<(String, String)> = None;
                    for _ in 0..40 {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        let id = format!("req-{n}");
                        let got = outcome(&servers[n % 2].0, &transfer("ACC-7", 1_000, &id));
                        if first.is_none() {
                            first = Some((id.clone(), got.1.clone()));
                        }
                        out.push(got);
                    }
                    let (id, said) = first.unwrap();
                    let n: usize = id[4..].parse().unwrap();
                    let again = outcome(&servers[(n + 1) % 2].0, &transfer("ACC-7", 1_000, &id));
                    assert_eq!(again.1, said, "thread {t}: retry of {id}");
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(results.iter().all(|r| r.0 == 200), "{results:?}");
    let allowed: Vec<_> = results.iter().filter(|r| r.1 == "allow").collect();
    assert_eq!(allowed.len(), 100, "exactly the daily limit is allowed");
    assert!(results.iter().filter(|r| r.1 == "deny").count() == 220);
    assert_eq!(
        redis.command("EVAL \"return #redis.call('KEYS', '*')\" 0"),
        ":2"
    );
    // Both keys expire, a day after the day's end at the latest.
    for key in ["total", "requests"] {
        let script = if key == "total" {
            "return redis.call('TTL', 'teller:daily:{' .. ARGV[1] .. ':ACC-7}')"
        } else {
            "return redis.call('TTL', 'teller:daily:{' .. ARGV[1] .. ':ACC-7}:requests')"
        };
        let day = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 8 * 3600)
            / 86_400;
        let ttl = redis.command(&format!("EVAL \"{script}\" 0 {day}"));
        let ttl: u64 = ttl.trim_start_matches(':').parse().unwrap_or(0);
        assert!(ttl > 86_400 && ttl <= 2 * 86_400, "{key}: TTL {ttl}");
    }
    // One more, on either server: over the limit.
    assert_eq!(
        outcome(&servers[0].0, &transfer("ACC-7", 1, "late")).1,
        "deny"
    );
    // Every allow is in one of the audit logs.
    let logs: String = servers
        .into_iter()
        .map(|(server, audit)| {
            assert!(server.stop().success());
            audit_lines(&audit)
        })
        .collect();
    for (_, _, id) in allowed {
        assert_eq!(logs.matches(id.as_str()).count(), 1, "{id} is audited once");
    }
}

#[test]
fn a_redis_that_goes_down_refuses_every_transfer_until_it_is_back() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let config = limit_config(dir.path(), u64::pow(10, 15));
    let url = redis.url();
    let servers: Vec<Server> = [ENGINES[0], ENGINES[ENGINES.len() - 1]]
        .iter()
        .map(|engine| {
            Server::start(
                engine,
                // Generous: other tests share the machine's two cores.
                &[
                    "--config",
                    &config,
                    "--state",
                    &url,
                    "--state-timeout-ms",
                    "300",
                    "--guest-deadline-ms",
                    "2000",
                ],
            )
        })
        .collect();
    let started = Instant::now();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let next = AtomicUsize::new(0);
    // (sent, answered, server, status, said), times since `started`.
    type Answer = (Duration, Duration, usize, u16, String);
    let (answers, killing, down, up) = std::thread::scope(|s| {
        let load: Vec<_> = (0..4)
            .map(|_| {
                let (servers, stop, next) = (&servers, &stop, &next);
                s.spawn(move || {
                    let mut out: Vec<Answer> = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        let sent = started.elapsed();
                        let (status, said, _) =
                            outcome(&servers[n % 2], &transfer("ACC-9", 1, &format!("r-{n}")));
                        out.push((sent, started.elapsed(), n % 2, status, said));
                    }
                    out
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(700));
        let killing = started.elapsed();
        let port = redis.kill();
        let down = started.elapsed();
        std::thread::sleep(Duration::from_millis(1_500));
        let up = started.elapsed();
        let redis = Redis::start_on(port);
        std::thread::sleep(Duration::from_millis(2_500));
        stop.store(true, Ordering::Relaxed);
        let answers: Vec<Answer> = load.into_iter().flat_map(|h| h.join().unwrap()).collect();
        drop(redis);
        (answers, killing, down, up)
    });
    let before: Vec<_> = answers.iter().filter(|a| a.1 < killing).collect();
    assert!(
        before.len() > 5 && before.iter().all(|a| a.4 == "allow"),
        "Redis up: allowed: {before:?}"
    );
    let while_down: Vec<_> = answers.iter().filter(|a| a.0 > down && a.1 < up).collect();
    assert!(
        while_down.len() > 5,
        "{} answers while down",
        while_down.len()
    );
    for a in &while_down {
        assert_eq!((a.3, a.4.as_str()), (503, "state_unavailable"), "{a:?}");
    }
    for server in 0..2 {
        assert!(
            while_down.iter().any(|a| a.2 == server),
            "server {server} was asked while Redis was down"
        );
        let last = answers
            .iter()
            .filter(|a| a.2 == server)
            .max_by_key(|a| a.0)
            .unwrap();
        assert_eq!(
            last.4, "allow",
            "server {server} allows again once Redis is back"
        );
    }
    for server in &servers {
        let metrics = server.get("/metrics").body;
        assert!(
            metrics.contains("teller_state_unavailable_total{store=\"redis\"}"),
            "{metrics}"
        );
        assert_eq!(server.get("/readyz").status, 200);
    }
}

#[test]
fn the_embedded_store_keeps_every_counted_transfer_through_kill_9() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let config = limit_config(dir.path(), 10_000);
        let state = format!("file:{}", dir.path().join("state").display());
        let args = ["--config", config.as_str(), "--state", state.as_str()];
        let server = Server::start(engine, &args);
        let next = AtomicUsize::new(0);
        let first: Vec<_> = crate::support::concurrently(6, 10, || {
            let n = next.fetch_add(1, Ordering::Relaxed);
            outcome(&server, &transfer("ACC-3", 100, &format!("a-{n}"))).1
        });
        assert!(first.iter().all(|s| s == "allow"), "{engine}: {first:?}");
        server.kill();
        let server = Server::start(engine, &args);
        // The first 6,000 are still counted: 40 of 50 more fit.
        let second: Vec<_> = (0..50)
            .map(|n| outcome(&server, &transfer("ACC-3", 100, &format!("b-{n}"))).1)
            .collect();
        let allowed = second.iter().filter(|s| *s == "allow").count();
        assert_eq!(allowed, 40, "{engine}: {second:?}");
        // A retry from before the crash still has its first answer.
        assert_eq!(outcome(&server, &transfer("ACC-3", 100, "a-0")).1, "allow");
        // Another account has its own total.
        assert_eq!(outcome(&server, &transfer("ACC-4", 100, "c")).1, "allow");
    }
}

#[test]
fn a_set_that_denies_takes_back_what_the_built_in_check_reserved() {
    let redis = Redis::start();
    for (engine, store) in ENGINES
        .iter()
        .flat_map(|e| [(*e, "embedded"), (*e, "redis")])
    {
        let dir = tempfile::tempdir().unwrap();
        let config = limit_config(dir.path(), 1_000);
        let policies = policy_set(
            dir.path(),
            "small.rego",
            "package bank.small\nimport rego.v1\n\ndefault allow := false\n\
             allow if input.amount < 500\ndeny if input.amount >= 500\n",
            false,
        );
        let state = match store {
            "redis" => {
                // A fresh database of the shared Redis per run.
                let db = if engine == ENGINES[0] { 1 } else { 2 };
                format!("{}/{db}", redis.url())
            }
            _ => format!("file:{}", dir.path().join("state").display()),
        };
        let server = Server::start(
            engine,
            &[
                "--config",
                &config,
                "--state",
                &state,
                "--policy-dir",
                policies.to_str().unwrap(),
            ],
        );
        // Each fits the daily limit alone; the Rego policy denies them all.
        for n in 0..5 {
            let (status, said, _) = outcome(&server, &transfer("ACC-5", 600, &format!("big-{n}")));
            assert_eq!((status, said.as_str()), (200, "deny"), "{engine}");
        }
        // Nothing of them counts: 499 + 499 fit, a third does not.
        for (n, want) in ["allow", "allow", "deny"].iter().enumerate() {
            let r = server.post(
                "/v1/transfer/check",
                &transfer("ACC-5", 499, &format!("s-{n}")),
            );
            assert_eq!(r.json()["verdict"], *want, "{engine} {store}: {}", r.body);
            if *want == "deny" {
                assert_eq!(r.json()["reasons"][0]["code"], "daily_limit_exceeded");
            }
        }
        let metrics = server.get("/metrics").body;
        assert!(
            metrics.contains(&format!(
                "teller_state_releases_total{{store=\"{store}\"}} 5"
            )),
            "{metrics}"
        );
    }
}

#[test]
fn state_urls_that_name_no_store_stop_start_up() {
    for (url, says) in [
        ("memcached://x:1", "not a state store"),
        ("redis://:hunter2@[::1", "redis://***@"),
        ("rediss://r:6380", "TLS"),
    ] {
        let out = teller()
            .args(["serve", "--listen", "127.0.0.1:0", "--state", url])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{url}: {stderr}");
        assert!(
            stderr.contains("state_invalid") && stderr.contains(says),
            "{url}: {stderr}"
        );
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
    // A guest waits for the store within its call, so the store's timeout
    // must be below the call's deadline.
    let out = teller()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--state",
            "redis://127.0.0.1:1",
        ])
        .args(["--state-timeout-ms", "100", "--guest-deadline-ms", "100"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("must be below --guest-deadline-ms"),
        "{stderr}"
    );
    // A state directory in use by another process is refused too.
    let dir = tempfile::tempdir().unwrap();
    let state = format!("file:{}", dir.path().display());
    let _first = Server::start(ENGINES[0], &["--state", &state]);
    let out = teller()
        .args(["serve", "--listen", "127.0.0.1:0", "--state", &state])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("another teller process"), "{stderr}");
}

#[test]
fn a_rego_policy_reads_the_daily_total_on_every_engine() {
    const VELOCITY: &str = "package bank.velocity\nimport rego.v1\n\n\
        spent := teller.daily_total(input.from_account)\n\
        default allow := false\n\
        allow if spent + input.amount <= 800\n\
        deny if spent + input.amount > 800\n\
        reasons contains {\"code\": \"velocity\", \"message\": sprintf(\"%d spent today\", [spent])} if deny\n";
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let config = limit_config(dir.path(), 10_000);
        // The Rego policy reads the total before the built-in check adds
        // this transfer to it.
        let policies = policy_set(dir.path(), "velocity.rego", VELOCITY, true);
        let state = format!("file:{}", dir.path().join("state").display());
        let policy_dir = policies.to_str().unwrap();
        let server = Server::start(
            engine,
            &[
                "--config",
                &config,
                "--state",
                &state,
                "--policy-dir",
                policy_dir,
            ],
        );
        let mut said = Vec::new();
        for (n, amount) in [300, 300, 300, 200].into_iter().enumerate() {
            let r = server.post(
                "/v1/transfer/check",
                &transfer("ACC-8", amount, &format!("v-{n}")),
            );
            said.push(r.json()["verdict"].as_str().unwrap().to_string());
            if n == 2 {
                assert_eq!(r.json()["reasons"][0]["code"], "velocity", "{}", r.body);
                assert!(r.body.contains("600 spent today"), "{}", r.body);
            }
        }
        // The third is denied by the Rego policy, so the built-in check's
        // reservation of it is taken back and the fourth still fits.
        assert_eq!(said, ["allow", "allow", "deny", "allow"], "{engine}");
        drop(server);

        // Without a state store the read fails closed.
        let server = Server::start(engine, &["--policy-dir", policy_dir]);
        let r = server.post("/v1/transfer/check", &transfer("ACC-8", 1, "none"));
        assert_eq!(r.status, 503, "{engine}: {}", r.body);
        assert_eq!(r.json()["error"]["code"], "state_unavailable");
        assert!(r.body.contains("without a state store"), "{}", r.body);
    }
}

#[test]
fn guest_pointers_into_the_state_import_are_checked() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir(&policies).unwrap();
        crate::containment::hostile_policies(&policies);
        let state = format!("file:{}", dir.path().join("state").display());
        let server = Server::start(
            engine,
            &[
                "--policy-dir",
                policies.to_str().unwrap(),
                "--state",
                &state,
            ],
        );
        for action in ["state-key-out-of-bounds", "state-return-out-of-bounds"] {
            let body =
                serde_json::json!({"action": action, "amount": 1, "user": {"role": "authorized"}});
            let r = server.post("/v1/transfer/check", &body.to_string());
            assert_eq!(r.status, 500, "{engine} {action}: {}", r.body);
            let code = r.json()["error"]["code"].as_str().unwrap().to_string();
            assert!(
                code == "guest_bad_output" || code == "guest_trap",
                "{engine} {action}: {}",
                r.body
            );
            // The next ordinary request is answered.
            let r = server.post("/v1/transfer/check", &transfer("ACC-1", 1, "ok"));
            assert_eq!(r.status, 200, "{engine}: {}", r.body);
        }
    }
}

#[test]
fn reloads_neither_count_their_self_test_nor_turn_a_daily_limit_on_without_a_store() {
    let reloads = |server: &Server, result: &str| -> f64 {
        let prefix = format!("teller_policy_reloads_total{{result=\"{result}\"}} ");
        server
            .get("/metrics")
            .body
            .lines()
            .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
            .unwrap_or(0.0)
    };
    let wait_for = |server: &Server, result: &str| {
        let started = Instant::now();
        while reloads(server, result) < 1.0 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no {result} reload"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let example = crate::support::EXAMPLE.replace("\"r-1\"", "\"after-reload\"");
    for engine in ENGINES {
        // The reload's self-test decides the README example; with a daily
        // limit of 300,000 a counted 250,000 would leave no room for it.
        let dir = tempfile::tempdir().unwrap();
        let config = limit_config(dir.path(), 300_000);
        let state = format!("file:{}", dir.path().join("state").display());
        let server = Server::start(engine, &["--config", &config, "--state", &state]);
        server.signal("HUP");
        wait_for(&server, "ok");
        let r = server.post("/v1/transfer/check", &example);
        assert_eq!(r.json()["verdict"], "allow", "{engine}: {}", r.body);

        // Started without a store, a daily limit cannot be turned on by a
        // reload: it would refuse every transfer.
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("teller.toml");
        std::fs::write(&config, "[transfer_check]\n").unwrap();
        let server = Server::start(engine, &["--config", config.to_str().unwrap()]);
        limit_config(dir.path(), 1_000);
        server.signal("HUP");
        wait_for(&server, "rejected");
        let r = server.post("/v1/transfer/check", &example);
        assert_eq!(r.json()["verdict"], "allow", "{engine}: {}", r.body);
    }
}

#[test]
fn a_replica_is_not_ready_until_redis_has_answered() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    let server = Server::start(ENGINES[0], &["--state", &url]);
    let r = server.get("/readyz");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("state store"), "{}", r.body);
    let _redis = Redis::start_on(port);
    let started = Instant::now();
    while server.get("/readyz").status != 200 {
        assert!(started.elapsed() < Duration::from_secs(10), "never ready");
        std::thread::sleep(Duration::from_millis(50));
    }
}
