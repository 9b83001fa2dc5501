//! Hot reload under continuous load over real HTTP: no request fails, the
//! answers name the old and then the new policy, and a broken policy is
//! rejected while the last good one keeps serving.

use crate::support::{ENGINES, EXAMPLE, Server};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use teller_policy_artifacts::{AUDIT, Guest, HOSTILE, TRANSFER_CHECK};

fn install(dir: &Path, transfer_check: Guest) {
    // Written aside and renamed, as a deployment tool (or a ConfigMap
    // update) would, so that no reload ever sees half a file.
    for (name, guest) in [("transfer-check", transfer_check), ("audit", AUDIT)] {
        for (form, bytes) in [("component", guest.component), ("module", guest.module)] {
            let path = dir.join(format!("{name}.{form}.wasm"));
            let tmp = dir.join(format!(".{name}.{form}.wasm.tmp"));
            std::fs::write(&tmp, bytes).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        }
    }
}

fn sha(engine: &str, guest: Guest) -> String {
    teller_engine::artifact::sha256_hex(if engine == "wasmtime" {
        guest.component
    } else {
        guest.module
    })
}

fn metric(server: &Server, prefix: &str) -> f64 {
    server
        .get("/metrics")
        .body
        .lines()
        .find_map(|l| l.strip_prefix(prefix)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Waits until `cond` holds (the reload runs in the background).
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what}: not within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn reload_under_load_drops_nothing_and_rejects_a_broken_policy() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir(&policies).unwrap();
        install(&policies, TRANSFER_CHECK);
        let log = dir.path().join("audit");
        let server = Server::start(
            engine,
            &[
                "--policy-dir",
                policies.to_str().unwrap(),
                "--audit-dir",
                log.to_str().unwrap(),
            ],
        );
        let (v1, v2) = (sha(engine, TRANSFER_CHECK), sha(engine, HOSTILE));
        let stop = AtomicBool::new(false);
        let seen = std::thread::scope(|s| {
            let clients: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        let mut seen: BTreeMap<String, u64> = BTreeMap::new();
                        while !stop.load(Ordering::Relaxed) {
                            let r = server.post("/v1/transfer/check", EXAMPLE);
                            assert_eq!(
                                r.status, 200,
                                "{engine}: a request failed during reload: {r:?}"
                            );
                            let sha = r.json()["policy"]["sha256"].as_str().unwrap().to_string();
                            *seen.entry(sha).or_default() += 1;
                        }
                        seen
                    })
                })
                .collect();
            let served_by = |sha: &str| {
                server.post("/v1/transfer/check", EXAMPLE).json()["policy"]["sha256"] == sha
            };

            // A new version, announced by SIGHUP.
            std::thread::sleep(Duration::from_millis(300));
            install(&policies, HOSTILE);
            server.signal("HUP");
            eventually("the new version serves", || served_by(&v2));

            // A broken version: rejected, the last good one goes on.
            std::fs::write(
                policies.join("transfer-check.component.wasm"),
                b"\0asm broken",
            )
            .unwrap();
            std::fs::write(policies.join("transfer-check.module.wasm"), b"\0asm broken").unwrap();
            server.signal("HUP");
            eventually("the broken version is rejected", || {
                metric(&server, "teller_policy_reloads_total{result=\"rejected\"}") >= 1.0
            });
            assert!(
                served_by(&v2),
                "{engine}: the last good version must keep serving"
            );

            // Back to the first version, noticed from the files alone.
            install(&policies, TRANSFER_CHECK);
            eventually("the directory change is noticed", || served_by(&v1));
            std::thread::sleep(Duration::from_millis(300));
            stop.store(true, Ordering::Relaxed);
            clients.into_iter().map(|c| c.join().unwrap()).fold(
                BTreeMap::<String, u64>::new(),
                |mut all, one| {
                    for (k, v) in one {
                        *all.entry(k).or_default() += v;
                    }
                    all
                },
            )
        });
        assert!(
            seen.get(&v1).copied().unwrap_or(0) > 0,
            "{engine}: {seen:?}"
        );
        assert!(
            seen.get(&v2).copied().unwrap_or(0) > 0,
            "{engine}: {seen:?}"
        );
        assert_eq!(
            seen.len(),
            2,
            "{engine}: only the two good versions answered: {seen:?}"
        );
        assert!(metric(&server, "teller_policy_reloads_total{result=\"ok\"}") >= 2.0);
        let m = server.get("/metrics").body;
        for (sha, value) in [(&v1, 1), (&v2, 0)] {
            assert!(
                m.lines()
                    .any(|l| l.contains(sha.as_str()) && l.ends_with(&format!(" {value}"))),
                "{engine}: policy {sha} should be {value}: {m}"
            );
        }
        println!("{engine}: answers by policy sha256 during the reload test: {seen:?}");
        assert_eq!(server.stop().code(), Some(0));
        // Every answered decision is in the audit log, under the version
        // that made it.
        let verify = crate::support::teller()
            .args(["audit", "verify"])
            .arg(&log)
            .output()
            .unwrap();
        assert!(verify.status.success(), "{verify:?}");
    }
}
