//! The audit log: every decision and event on disk before its answer, a
//! chain that `teller audit verify` recomputes, and tampering detected.

use crate::support::{ENGINES, EXAMPLE, Server, doc, teller};
use std::path::Path;

fn verify(path: &Path) -> (i32, String) {
    let out = teller()
        .args(["audit", "verify"])
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Every record of the log in `dir`, across its segments in order.
fn lines(dir: &Path) -> Vec<String> {
    segments(dir)
        .iter()
        .flat_map(|path| {
            std::fs::read_to_string(path)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The segment files of the log in `dir`, in order.
fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    found.sort();
    found
}

/// The first segment, where a log under the default size lives whole.
fn first_segment(dir: &Path) -> std::path::PathBuf {
    dir.join("audit-00000000000000000001.log")
}

/// A log of `n` decisions and `n` posted events, written on `engine`.
fn build_log_on(engine: &str, path: &Path, n: usize) -> Server {
    let server = Server::start(engine, &["--audit-dir", path.to_str().unwrap()]);
    for i in 0..n {
        let r = server.post("/v1/transfer/check", EXAMPLE);
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json()["audit"]["seq"], (2 * i + 1) as u64);
        let event = serde_json::json!({
            "actor": {"id": "ops-1", "role": "operator"},
            "action": "limit.change",
            "resource": ["account 6222020200001234567"],
            "outcome": "success",
            "details": {"note": format!("change {i} for card 4111111111111111")},
            "request_id": format!("e-{i}"),
        });
        let r = server.post("/v1/audit/events", &event.to_string());
        assert_eq!(r.status, 201, "{r:?}");
        assert_eq!(r.json()["seq"], (2 * i + 2) as u64);
        assert_eq!(r.json()["id"].as_str().unwrap().len(), 36);
    }
    server
}

/// A log written by the last engine this build has (the default one).
fn build_log(path: &Path, n: usize) -> Server {
    build_log_on(ENGINES[ENGINES.len() - 1], path, n)
}

fn restart(path: &Path) -> Server {
    Server::start(ENGINES[0], &["--audit-dir", path.to_str().unwrap()])
}

#[test]
fn every_decision_is_recorded_masked_and_the_chain_verifies() {
    for engine in ENGINES {
        decisions_recorded_on(engine);
    }
}

fn decisions_recorded_on(engine: &str) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit");
    let server = build_log_on(engine, &log, 5);
    let r = server.post(
        "/v1/transfer/check",
        &doc("transfer", 2_000_000, "authorized", Some(true), None),
    );
    let decision = r.json();
    assert_eq!(decision["audit"]["seq"], 11);

    let records = lines(&log);
    assert_eq!(records.len(), 11);
    let text = records.join("\n");
    for clear in [
        "6222020200001234567",
        "6222020200007654321",
        "4111111111111111",
    ] {
        assert!(!text.contains(clear), "account number {clear} in the clear");
    }
    let first: serde_json::Value = serde_json::from_str(&records[0]).unwrap();
    assert_eq!(first["seq"], 1);
    assert_eq!(first["prev_hash"], "0".repeat(64));
    assert_eq!(first["actor"]["id"], "u-17");
    assert_eq!(first["resource"][0], "***************4567");
    assert_eq!(first["outcome"], "allow");
    assert_eq!(first["origin"]["request_id"], "r-1");
    assert_eq!(first["policy"]["name"], "transfer-check");
    assert_eq!(first["engine"], engine);
    assert_eq!(first["details"]["amount"], "250000");
    assert_eq!(first["encrypted"], serde_json::Value::Null);
    // PCI DSS 10.2.2: user, event type, time, outcome, origin, resource.
    let time = first["timestamp"].as_str().unwrap();
    assert!(
        time.len() == 24
            && time.as_bytes()[10] == b'T'
            && time.as_bytes()[19] == b'.'
            && time.ends_with('Z'),
        "RFC 3339 UTC with milliseconds: {time}"
    );
    assert_eq!(first["actor"]["role"], "authorized");
    assert_eq!(first["action"], "transfer");
    assert!(
        first["origin"]["client"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{first}"
    );
    assert_eq!(first["policy"]["version"], "0.1.0");
    let sha = first["policy"]["sha256"].as_str().unwrap();
    assert!(sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()));
    let event: serde_json::Value = serde_json::from_str(&records[1]).unwrap();
    assert_eq!(event["actor"]["id"], "ops-1");
    assert_eq!(event["action"], "limit.change");
    assert_eq!(event["outcome"], "success");
    assert_eq!(event["resource"][0], "account ***************4567");
    assert_eq!(event["prev_hash"], first["hash"]);
    let last: serde_json::Value = serde_json::from_str(&records[10]).unwrap();
    assert_eq!(last["outcome"], "deny");
    assert_eq!(last["reasons"][0], "amount_over_limit");
    assert_eq!(last["hash"], decision["audit"]["hash"]);
    assert_eq!(last["id"], decision["decision_id"]);

    let (code, out) = verify(&log);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("11 records"), "{out}");
    let head = teller().args(["audit", "head"]).arg(&log).output().unwrap();
    assert!(head.status.success(), "{head:?}");
    let head: serde_json::Value = serde_json::from_slice(&head.stdout).unwrap();
    assert_eq!(head["seq"], 11);
    assert_eq!(head["hash"], decision["audit"]["hash"]);
    assert!(
        out.contains(head["hash"].as_str().unwrap()),
        "verify and head agree: {out}"
    );
    assert_eq!(server.stop().code(), Some(0));
}

#[test]
fn a_restart_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit");
    // Written on one engine, continued on the other: the chain is the
    // guests' contract, not an engine's.
    build_log(&log, 2).kill();
    let server = restart(&log);
    let r = server.post("/v1/transfer/check", EXAMPLE).json();
    assert_eq!(r["audit"]["seq"], 5, "{r}");
    assert_eq!(verify(&log).0, 0);
}

#[test]
fn a_torn_last_record_is_cut_off_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit");
    build_log(&log, 2).kill();
    let segment = first_segment(&log);
    let whole = std::fs::read(&segment).unwrap();
    let mut torn = whole.clone();
    torn.extend_from_slice(br#"{"seq":5,"timestamp":"2026-"#);
    std::fs::write(&segment, &torn).unwrap();
    let (code, out) = verify(&log);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("record 5") && out.contains("torn"), "{out}");

    let server = restart(&log);
    assert_eq!(
        std::fs::read(&segment).unwrap(),
        whole,
        "torn tail not cut back"
    );
    let r = server.post("/v1/transfer/check", EXAMPLE).json();
    assert_eq!(r["audit"]["seq"], 5, "{r}");
    assert_eq!(verify(&log).0, 0);
}

#[test]
fn tampering_is_detected_and_the_record_named() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit");
    build_log(&log, 3).kill();
    let original = lines(&log);
    assert_eq!(original.len(), 6);
    let segment = first_segment(&log);
    let write = |records: &[String]| {
        let mut text = records.join("\n");
        text.push('\n');
        std::fs::write(&segment, text).unwrap();
    };

    // Modify: deny turned into allow in record 3 (a decision).
    let mut modified = original.clone();
    modified[2] = modified[2].replacen("\"outcome\":\"allow\"", "\"outcome\":\"deny\"", 1);
    assert_ne!(modified[2], original[2]);
    write(&modified);
    let (code, out) = verify(&log);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("record 3") && out.contains("modified"),
        "{out}"
    );

    // Flip one byte of record 4's hash.
    let mut flipped = original.clone();
    let at = flipped[3].len() - 5;
    let c = if &flipped[3][at..at + 1] == "0" {
        "1"
    } else {
        "0"
    };
    flipped[3].replace_range(at..at + 1, c);
    write(&flipped);
    let (code, out) = verify(&log);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("record 4"), "{out}");

    // Delete record 2.
    let mut deleted = original.clone();
    deleted.remove(1);
    write(&deleted);
    let (code, out) = verify(&log);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("record 2") && out.contains("seq 3"), "{out}");

    // Swap records 5 and 6.
    let mut swapped = original.clone();
    swapped.swap(4, 5);
    write(&swapped);
    let (code, out) = verify(&log);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("record 5"), "{out}");

    // Delete the last record: the chain alone cannot tell (anchor the head
    // elsewhere for that), but the head moves back.
    write(&original[..5]);
    let (code, out) = verify(&log);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("5 records"), "{out}");

    // Truncate mid-record.
    let mut text = original.join("\n");
    text.push('\n');
    std::fs::write(&segment, &text.as_bytes()[..text.len() - 40]).unwrap();
    let (code, out) = verify(&log);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("record 6") && out.contains("torn"), "{out}");

    // Modify record 3 and re-seal it with a correct hash, as a forger
    // would: record 4's prev_hash still names the original.
    let mut resealed = original.clone();
    let forged = resealed[2].replacen("\"outcome\":\"allow\"", "\"outcome\":\"deny\"", 1);
    let body = format!("{}}}", forged.rsplit_once(",\"hash\":\"").unwrap().0);
    resealed[2] = format!(
        "{},\"hash\":\"{}\"}}",
        &body[..body.len() - 1],
        teller_engine::artifact::sha256_hex(body.as_bytes())
    );
    write(&resealed);
    let (code, out) = verify(&log);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("record 4") && out.contains("prev_hash"),
        "{out}"
    );

    write(&original);
    assert_eq!(verify(&log).0, 0);
    let (code, out) = verify(Path::new("/no/such/log"));
    assert_eq!(code, 2, "{out}");
}

#[test]
fn bad_audit_events_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit");
    let server = restart(&log);
    for (body, code) in [
        ("{", "malformed_json"),
        (
            r#"{"actor":{"id":"a","role":"r"},"action":"x"}"#,
            "missing_field",
        ),
        (
            r#"{"actor":{"id":"a","role":"r"},"action":"x","outcome":"ok","colour":"red"}"#,
            "invalid_field",
        ),
        (
            r#"{"actor":{"id":"a","role":"r"},"action":"x","outcome":"ok","details":{"n":5}}"#,
            "invalid_field",
        ),
    ] {
        let r = server.post("/v1/audit/events", body);
        assert_eq!(
            (r.status, r.json()["error"]["code"].as_str().unwrap()),
            (400, code),
            "{body}"
        );
    }
    let r = server.post("/v1/transfer/check", r#"{"action":"transfer"}"#);
    assert_eq!(r.status, 400);
    assert_eq!(
        std::fs::read(first_segment(&log)).unwrap().len(),
        0,
        "bad input must leave no record"
    );
}

#[test]
fn concurrent_audited_requests_share_fsyncs_and_all_land_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit");
    let server = restart(&log);
    let mut seqs = crate::support::concurrently(8, 25, || {
        let r = server.post("/v1/transfer/check", EXAMPLE);
        assert_eq!(r.status, 200, "{r:?}");
        r.json()["audit"]["seq"].as_u64().unwrap()
    });
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
    let (code, out) = verify(&log);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("200 records"), "{out}");
}

/// Sends the README example from 8 threads until `halt` (run after
/// `after`) has stopped the server and its connections fail; returns every
/// response received and what `halt` returned.
fn load_until_halted<T>(
    addr: std::net::SocketAddr,
    after: std::time::Duration,
    halt: impl FnOnce() -> T,
) -> (Vec<crate::support::Response>, T) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let clients: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    let mut answered = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        // Once the server is gone, connections fail: stop.
                        let Ok(r) = std::panic::catch_unwind(|| {
                            crate::support::request(
                                addr,
                                "POST",
                                "/v1/transfer/check",
                                EXAMPLE.as_bytes(),
                            )
                        }) else {
                            break;
                        };
                        answered.push(r);
                    }
                    answered
                })
            })
            .collect();
        std::thread::sleep(after);
        let halted = halt();
        stop.store(true, Ordering::Relaxed);
        let answered = clients
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        (answered, halted)
    })
}

/// kill -9 in the middle of a concurrent audited load: after a restart,
/// every request that was answered 2xx has its record, the chain verifies
/// and the sequence continues without a gap.
#[test]
fn kill_9_under_load_loses_no_answered_record() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit");
    let server = restart(&log);
    let (responses, ()) =
        load_until_halted(server.addr, std::time::Duration::from_millis(700), || {
            server.kill_now()
        });
    let answered: Vec<(u64, String)> = responses
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| {
            let j = r.json();
            (
                j["audit"]["seq"].as_u64().unwrap(),
                j["decision_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        answered.len() > 20,
        "only {} requests were answered",
        answered.len()
    );
    drop(server);

    let server = restart(&log);
    let (code, out) = verify(&log);
    assert_eq!(code, 0, "{out}");
    let records: Vec<serde_json::Value> = lines(&log)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (seq, id) in &answered {
        let record = &records[*seq as usize - 1];
        assert_eq!(record["seq"], *seq);
        assert_eq!(
            record["id"],
            id.as_str(),
            "answered decision {id} is not record {seq}"
        );
    }
    let next = server.post("/v1/transfer/check", EXAMPLE).json();
    assert_eq!(next["audit"]["seq"], records.len() as u64 + 1, "{next}");
    println!(
        "kill -9: {} requests answered 2xx, {} records on disk after restart, all answered ones found; next seq {}",
        answered.len(),
        records.len(),
        next["audit"]["seq"]
    );
}

/// SIGTERM under concurrent audited load: teller stops accepting, answers
/// what it took, exits 0, and leaves a whole log with every answered record.
#[test]
fn sigterm_drains_and_leaves_a_whole_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit");
    let server = restart(&log);
    let addr = server.addr;
    let (responses, status) =
        load_until_halted(addr, std::time::Duration::from_millis(500), || {
            server.stop()
        });
    let answered: Vec<u64> = responses
        .iter()
        .map(|r| {
            assert_eq!(r.status, 200, "{r:?}");
            r.json()["audit"]["seq"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(
        status.code(),
        Some(0),
        "teller did not exit cleanly on SIGTERM"
    );
    assert!(answered.len() > 20, "only {} answered", answered.len());
    let (code, out) = verify(&log);
    assert_eq!(code, 0, "{out}");
    let records = lines(&log).len() as u64;
    assert!(
        answered.iter().all(|seq| *seq <= records),
        "an answered record is missing"
    );
    assert_eq!(
        records,
        answered.len() as u64,
        "every record was answered, every answer recorded"
    );
}

/// An audit guest that returns a record whose line does not continue the
/// chain (a hash of other bytes, a seq or prev_hash inside the line that is
/// not the one asked for) gets a 500 and nothing is written; the chain goes
/// on from the last good record.
#[test]
fn a_lying_sealer_writes_nothing() {
    use teller_policy_artifacts::{LYING_SEALER, TRANSFER_CHECK};
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir(&policies).unwrap();
        for (name, guest) in [("transfer-check", TRANSFER_CHECK), ("audit", LYING_SEALER)] {
            std::fs::write(
                policies.join(format!("{name}.component.wasm")),
                guest.component,
            )
            .unwrap();
            std::fs::write(policies.join(format!("{name}.module.wasm")), guest.module).unwrap();
        }
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
        let post = |action: &str| {
            let event = serde_json::json!({
                "actor": {"id": "ops-1", "role": "operator"},
                "action": action, "outcome": "success",
            });
            server.post("/v1/audit/events", &event.to_string())
        };
        let r = post("honest");
        assert_eq!(
            (r.status, r.json()["seq"].as_u64()),
            (201, Some(1)),
            "{r:?}"
        );
        for (lie, why) in [
            ("lie-hash", "its hash does not match its content"),
            ("lie-seq", "it has seq 3 (line)"),
            (
                "lie-prev-hash",
                "its prev_hash is not the previous record's hash",
            ),
        ] {
            let r = post(lie);
            assert_eq!(r.status, 500, "{engine} {lie}: {r:?}");
            assert_eq!(r.json()["error"]["code"], "guest_bad_output", "{r:?}");
            let message = r.json()["error"]["message"].as_str().unwrap().to_string();
            assert!(message.contains(why), "{engine} {lie}: {message}");
        }
        let r = post("honest");
        assert_eq!(
            (r.status, r.json()["seq"].as_u64()),
            (201, Some(2)),
            "{r:?}"
        );
        assert_eq!(lines(&log).len(), 2, "{engine}: {:?}", lines(&log));
        let (code, out) = verify(&log);
        assert_eq!(code, 0, "{engine}: {out}");
        server.stop();
    }
}
