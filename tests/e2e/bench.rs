//! `teller-bench` runs and reports. Only the shape of the report is
//! checked: benchmarks print figures, tests never judge times.

use crate::support::{ENGINES, cache_dir, teller_bench};

fn bench(args: &[&str]) -> serde_json::Value {
    let out = teller_bench()
        .args(args)
        .arg("--json")
        .arg("--cache-dir")
        .arg(cache_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: not one JSON document ({e}): {out:?}"));
    assert!(doc["cores"].as_u64().unwrap() >= 1);
    assert!(doc["features"].is_array());
    for series in doc["series"].as_array().unwrap() {
        assert!(series["count"].as_u64().unwrap() > 0, "{series}");
        let p50 = series["p50_us"].as_f64().unwrap();
        let p99 = series["p99_us"].as_f64().unwrap();
        assert!(p50 > 0.0 && p50 <= p99, "{series}");
    }
    doc
}

fn names(doc: &serde_json::Value) -> Vec<String> {
    doc["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn cold_start_reports_teller_next_to_the_floor() {
    for engine in ENGINES {
        let doc = bench(&["cold-start", "--engine", engine, "--runs", "5"]);
        assert_eq!(doc["engine"], *engine);
        let names = names(&doc);
        assert!(
            names[0].contains("teller check")
                && names[1].contains("teller --version")
                && names[2].contains("only opens")
                && names[3].contains("/bin/true"),
            "{names:?}"
        );
        assert_eq!(doc["ratios"].as_array().unwrap().len(), 3);
        assert!(doc["ratios"][0]["value"].as_f64().unwrap() > 0.0);
        assert!(
            doc.to_string().contains("no build without WasmEdge"),
            "{doc}"
        );
    }
    // Given a build without WasmEdge (here the same binary: only the
    // report's shape is checked), its --version is measured and compared.
    let teller = std::path::PathBuf::from(env!("CARGO_BIN_EXE_teller"));
    let doc = bench(&[
        "cold-start",
        "--engine",
        ENGINES[0],
        "--runs",
        "5",
        "--plain-teller",
        teller.to_str().unwrap(),
    ]);
    let names = names(&doc);
    assert!(names[2].contains("built without WasmEdge"), "{names:?}");
    let ratios = doc["ratios"].as_array().unwrap();
    assert_eq!(ratios.len(), 4);
    assert!(
        ratios[3]["name"]
            .as_str()
            .unwrap()
            .contains("without WasmEdge")
    );
}

#[test]
fn call_reports_fresh_warm_and_native() {
    for engine in ENGINES {
        let doc = bench(&["call", "--engine", engine, "--duration", "0.5"]);
        let names = names(&doc).join("|");
        for want in [
            "fresh state, 1 thread",
            "warm instance",
            "audit seal, 1 thread",
            "native Rust",
        ] {
            assert!(names.contains(want), "{want} missing from {names}");
        }
        for series in doc["series"].as_array().unwrap() {
            assert!(series["per_second"].as_f64().unwrap() > 0.0, "{series}");
        }
    }
}

#[test]
fn http_reports_teller_without_and_with_the_audit_log_beside_the_native_floor_in_turns() {
    let engine = ENGINES[ENGINES.len() - 1];
    let doc = bench(&[
        "http",
        "--engine",
        engine,
        "--connections",
        "4",
        "--duration",
        "2",
    ]);
    let names = names(&doc);
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names[0].starts_with("native floor"), "{names:?}");
    for series in doc["series"].as_array().unwrap() {
        assert!(series["per_second"].as_f64().unwrap() > 0.0, "{series}");
    }
    // Each teller series as a fraction of the floor: throughput, P99 and
    // the server's CPU time per request.
    let ratios = doc["ratios"].as_array().unwrap();
    assert_eq!(ratios.len(), 6, "{ratios:?}");
    let cpu = ratios
        .iter()
        .filter(|r| {
            r["name"]
                .as_str()
                .unwrap()
                .starts_with("server CPU per request")
        })
        .count();
    assert_eq!(cpu, 2, "{ratios:?}");
    for r in ratios {
        assert!(r["name"].as_str().unwrap().contains("native floor"), "{r}");
        assert!(r["value"].as_f64().unwrap() > 0.0, "{r}");
    }
    let notes = doc["notes"][0].as_str().unwrap();
    assert!(!notes.contains("wrote 0 records"), "{notes}");
    assert!(notes.contains("2 s each in turns of 1.0 s"), "{notes}");
    // The audited server's counters saw every record the log holds, and
    // no more fsyncs than records.
    let number_after = |text: &str, marker: &str| -> u64 {
        let rest = text
            .split(marker)
            .nth(1)
            .unwrap_or_else(|| panic!("{text}"));
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().unwrap_or_else(|_| panic!("{text}"))
    };
    let written = number_after(notes, "wrote ");
    let groups = doc["notes"][1].as_str().unwrap();
    assert_eq!(number_after(groups, "audit log: "), written, "{groups}");
    let fsyncs = number_after(groups, "records in ");
    assert!(fsyncs > 0 && fsyncs <= written, "{groups}");
    let notes = doc["notes"].to_string();
    assert!(
        notes.contains("server CPU per request (user + system, all threads)"),
        "{notes}"
    );
    let doc = bench(&[
        "http",
        "--engine",
        engine,
        "--connections",
        "2",
        "--duration",
        "1",
        "--rate",
        "200",
    ]);
    assert!(
        doc["notes"][0]
            .as_str()
            .unwrap()
            .contains("200 req/s scheduled")
    );
}

#[test]
fn audit_reports_group_commit_next_to_one_fsync_per_record() {
    let dir = tempfile::tempdir().unwrap();
    let doc = bench(&[
        "audit",
        "--engine",
        ENGINES[0],
        "--threads",
        "8",
        "--duration",
        "1.5",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    let names = names(&doc).join("|");
    for want in ["group commit", "AES-256-GCM", "one fsync per record"] {
        assert!(names.contains(want), "{want} missing from {names}");
    }
    let ratio = &doc["ratios"][0];
    assert!(
        ratio["name"]
            .as_str()
            .unwrap()
            .contains("one fsync per record")
    );
    assert!(ratio["value"].as_f64().unwrap() > 0.0, "{ratio}");
    // The scratch logs are cleaned up.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn state_reports_decisions_with_and_without_a_daily_limit() {
    for engine in ENGINES {
        let doc = bench(&["state", "--engine", engine, "--duration", "0.5"]);
        assert_eq!(doc["engine"], *engine);
        let names = names(&doc).join("|");
        for want in [
            "no daily limit",
            "embedded store",
            "daily limit, Redis",
            "Redis round trip alone",
        ] {
            assert!(names.contains(want), "{want} missing from {names}");
        }
        assert_eq!(doc["ratios"].as_array().unwrap().len(), 3, "{doc}");
        assert!(
            doc["notes"][0]
                .as_str()
                .unwrap()
                .contains("what state adds")
        );
    }
}
