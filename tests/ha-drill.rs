//! The HA drill as a test: a short `scripts/ha-drill` (what CI runs).
//!
//! A test binary of its own, because cargo runs test binaries one after
//! another: the drill judges failed requests under load, and an audited
//! answer waits for its `fsync`, so it must not share two cores and one
//! disk with the end-to-end tests compiling guests and writing caches.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use serde_json::Value as Json;
use std::process::Command;

const ENGINES: &[&str] = if cfg!(feature = "wasmedge") {
    &["wasmtime", "wasmedge"]
} else {
    &["wasmtime"]
};

/// Three replicas behind a real haproxy under fixed-rate load lose no
/// acknowledged decision and fail no request in steady load, a rolling
/// restart or a reload. Failover times and latency are printed, not judged
/// here.
#[test]
fn a_short_drill_behind_haproxy_loses_no_acknowledged_decision() {
    for engine in ENGINES {
        let mut drill = Command::new(env!("CARGO_BIN_EXE_teller-bench"));
        // Only what the test sets: no TELLER_* setting leaks in from outside.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("TELLER_") {
                drill.env_remove(name);
            }
        }
        let out = drill
            .args(["ha-drill", "--engine", engine, "--json"])
            .args(["--settle", "1", "--stop-seconds", "4", "--rate", "150"])
            .arg("--cache-dir")
            .arg(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("teller-cache"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let report: Json = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{engine}: not a report ({e}): {stderr}"));
        println!("{engine}: {report}");
        // Every message is short, so that it survives a CI log's cut; the
        // whole report is printed above.
        let kept = format!("logs kept in {}", report["kept"]);
        assert!(report["sent"].as_u64().unwrap() > 800, "{engine}: sent");
        let events = report["events"].as_array().unwrap();
        assert_eq!(events.len(), 5, "{engine}: events");
        for event in events {
            let name = event["event"].as_str().unwrap();
            if ["steady", "rolling", "reload"]
                .iter()
                .any(|w| name.starts_with(w))
            {
                let failures = &event["failures"];
                assert_eq!(event["failed"], 0, "{engine}: {name}: {failures}; {kept}");
            }
        }
        let audit = &report["audit"];
        assert_eq!(audit["answered_not_once"], 0, "{engine}: {audit}; {kept}");
        assert_eq!(audit["logs_verified"], 3, "{engine}: {audit}; {kept}");
        // Every target that is a count holds; the timed ones (failover,
        // P99) are printed for whoever reads the log, never judged here.
        let targets = report["targets"].as_array().unwrap();
        assert!(targets.len() >= 6, "{engine}: targets");
        for t in targets {
            let name = &t["target"];
            if t["timed"] == false {
                assert_eq!(t["held"], true, "{engine}: {name}; {kept}");
            } else {
                println!("{engine}: timed target {name}: held {}", t["held"]);
            }
        }
    }
}
