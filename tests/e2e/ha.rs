//! Behaviour a load balancer relies on: after SIGTERM, teller says it is
//! draining and goes on serving for the drain delay before it stops
//! accepting, so that health checks take it out of rotation first.

use crate::support::{ENGINES, EXAMPLE, Server};
use std::time::{Duration, Instant};

#[test]
fn after_sigterm_the_drain_delay_serves_on_while_readyz_says_draining() {
    for engine in ENGINES {
        // What is tested is the drain, not the deadline: a generous one, so
        // that a first call on two cores busy with the other tests is not
        // taken for a runaway guest.
        let server = Server::start(
            engine,
            &["--drain-delay-ms", "1500", "--guest-deadline-ms", "2000"],
        );
        assert_eq!(server.get("/readyz").status, 200);
        let signalled = Instant::now();
        server.signal("TERM");
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(server.get("/readyz").status, 503, "{engine}: draining");
        // New connections are still accepted and answered meanwhile.
        for _ in 0..5 {
            let r = server.post("/v1/transfer/check", EXAMPLE);
            assert_eq!(r.status, 200, "{engine}: {}", r.body);
            std::thread::sleep(Duration::from_millis(100));
        }
        let status = server.stop();
        assert!(status.success(), "{engine}: {status:?}");
        assert!(
            signalled.elapsed() >= Duration::from_millis(1_500),
            "{engine}: stopped before the drain delay was over"
        );
    }
}

/// A short `scripts/ha-drill` (what CI runs): three replicas behind a real
/// haproxy under fixed-rate load lose no acknowledged decision and fail no
/// request in steady load, a rolling restart or a reload. Failover times and
/// latency are printed, not judged here.
#[test]
fn a_short_drill_behind_haproxy_loses_no_acknowledged_decision() {
    let _heavy = crate::support::heavy();
    for engine in ENGINES {
        let out = crate::support::teller_bench()
            .args(["ha-drill", "--engine", engine, "--json"])
            .args(["--settle", "1", "--stop-seconds", "4", "--rate", "150"])
            .arg("--cache-dir")
            .arg(crate::support::cache_dir())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{engine}: not a report ({e}): {stderr}"));
        println!("{engine}: {report}");
        assert!(report["sent"].as_u64().unwrap() > 800, "{report}");
        let events = report["events"].as_array().unwrap();
        assert_eq!(events.len(), 5, "{report}");
        for event in events {
            let name = event["event"].as_str().unwrap();
            if name.starts_with("rolling")
                || name.starts_with("reload")
                || name.starts_with("steady")
            {
                assert_eq!(event["failed"], 0, "{engine}: {name}: {report}");
            }
        }
        let audit = &report["audit"];
        assert_eq!(audit["answered_not_once"], 0, "{engine}: {report}");
        assert_eq!(audit["logs_verified"], 3, "{engine}: {report}");
        // Every target that is a count holds; the timed ones (failover,
        // P99) are printed for whoever reads the log, never judged here.
        let targets = report["targets"].as_array().unwrap();
        assert!(targets.len() >= 6, "{report}");
        for t in targets {
            if t["timed"] == false {
                assert_eq!(t["held"], true, "{engine}: {}: {report}", t["target"]);
            } else {
                println!("{engine}: timed target {}: held {}", t["target"], t["held"]);
            }
        }
    }
}
