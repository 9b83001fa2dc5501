//! The audit log's encryption, key rotation and segments, through the real
//! binary: `serve` writes, `audit decrypt|verify|head` read.

use crate::support::{ENGINES, EXAMPLE, Server, teller};
use std::path::{Path, PathBuf};
use std::process::Output;

const ACCOUNT: &str = "6222020200001234567";
const CARD: &str = "4111111111111111";

fn new_key(id: &str) -> String {
    let out = teller()
        .args(["audit", "new-key", "--id", id])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn key_file(dir: &Path, name: &str, lines: &[&str]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!("# audit keys, newest first\n{}\n", lines.join("\n")),
    )
    .unwrap();
    path
}

fn text(out: &Output) -> (i32, String, String) {
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn decrypt(log: &Path, keys: &Path, extra: &[&str]) -> (i32, String, String) {
    text(
        &teller()
            .args(["audit", "decrypt"])
            .arg(log)
            .arg("--key-file")
            .arg(keys)
            .args(extra)
            .output()
            .unwrap(),
    )
}

fn records(log: &Path) -> Vec<serde_json::Value> {
    let mut segments: Vec<_> = std::fs::read_dir(log)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segments.sort();
    segments
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn post_event(server: &Server) {
    let event = serde_json::json!({
        "actor": {"id": "ops-1", "role": "operator"},
        "action": "card.replace",
        "resource": [format!("account {ACCOUNT}")],
        "outcome": "success",
        "details": {"note": format!("card {CARD}")},
    });
    let r = server.post("/v1/audit/events", &event.to_string());
    assert_eq!(r.status, 201, "{r:?}");
}

#[test]
fn with_a_key_every_event_is_encrypted_and_opens_only_with_it() {
    for engine in ENGINES {
        encrypted_on(engine);
    }
}

fn encrypted_on(engine: &str) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit");
    let k1 = new_key("k1");
    let keys = key_file(dir.path(), "keys", &[&k1]);
    let args = ["--audit-dir", log.to_str().unwrap(), "--audit-key-file"];
    let server = Server::start(engine, &[&args[..], &[keys.to_str().unwrap()]].concat());
    assert_eq!(server.post("/v1/transfer/check", EXAMPLE).status, 200);
    post_event(&server);
    assert_eq!(server.stop().code(), Some(0));

    let written = records(&log);
    assert_eq!(written.len(), 2);
    for record in &written {
        assert_eq!(record["encrypted"]["key_id"], "k1", "{record}");
        let text = record.to_string();
        assert!(!text.contains(ACCOUNT) && !text.contains(CARD), "{text}");
    }
    let verify = teller()
        .args(["audit", "verify"])
        .arg(&log)
        .output()
        .unwrap();
    assert!(verify.status.success(), "{verify:?}");

    // The holder of the key reads the plaintext.
    let (code, out, err) = decrypt(&log, &keys, &[]);
    assert_eq!(code, 0, "{err}");
    let opened: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(opened.len(), 2, "{out}");
    assert_eq!(opened[0]["seq"], 1);
    assert_eq!(opened[0]["id"], written[0]["id"]);
    assert_eq!(opened[0]["event"]["resource"][0], ACCOUNT);
    assert_eq!(opened[0]["event"]["resource"][1], "6222020200007654321");
    assert_eq!(opened[1]["event"]["details"][0][1], format!("card {CARD}"));
    let (code, out, _) = decrypt(&log, &keys, &["--seq", "2"]);
    assert_eq!((code, out.lines().count()), (0, 1), "{out}");
    assert!(out.contains("\"seq\":2"), "{out}");
    // The key may come from the environment instead.
    let from_env = teller()
        .args(["audit", "decrypt", "--seq", "1"])
        .arg(&log)
        .env("TELLER_AUDIT_KEY", &k1)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&from_env.stdout).contains(ACCOUNT),
        "{from_env:?}"
    );

    // Wrong keys are told apart, and never shown.
    let impostor = new_key("k1");
    let wrong = key_file(dir.path(), "wrong", &[&impostor]);
    let (code, out, err) = decrypt(&log, &wrong, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("record 1") && err.contains("does not open"),
        "{err}"
    );
    assert!(!out.contains(ACCOUNT));
    let k2 = new_key("k2");
    let other = key_file(dir.path(), "other", &[&k2]);
    let (code, _, err) = decrypt(&log, &other, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("\"k1\"") && err.contains("\"k2\""), "{err}");
    assert!(!err.contains(k2.split(':').nth(1).unwrap()), "{err}");
    let no_key = text(
        &teller()
            .args(["audit", "decrypt"])
            .arg(&log)
            .output()
            .unwrap(),
    );
    assert_eq!(no_key.0, 2);
    assert!(no_key.2.contains("needs the key"), "{}", no_key.2);

    // Rotation: k2 encrypts from now on; k1 still opens the old records.
    let rotated = key_file(dir.path(), "rotated", &[&k2, &k1]);
    let server = Server::start(engine, &[&args[..], &[rotated.to_str().unwrap()]].concat());
    let r = server.post("/v1/transfer/check", EXAMPLE).json();
    assert_eq!(r["audit"]["seq"], 3, "{r}");
    assert_eq!(server.stop().code(), Some(0));
    assert_eq!(records(&log)[2]["encrypted"]["key_id"], "k2");
    let (code, out, err) = decrypt(&log, &rotated, &[]);
    assert_eq!((code, out.lines().count()), (0, 3), "{err}");
    let (code, _, err) = decrypt(&log, &keys, &[]);
    assert_eq!(code, 2);
    assert!(err.contains("record 3") && err.contains("\"k2\""), "{err}");
}

#[test]
fn a_bad_or_missing_key_stops_teller_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit");
    let good = new_key("k1");
    let secret = good.split(':').nth(1).unwrap().to_string();
    let twice = key_file(dir.path(), "twice", &[&good, &good]);
    let short = key_file(dir.path(), "short", &["k1:AAAA"]);
    let missing = dir.path().join("no-such-key");
    let cases: [(Vec<&str>, Option<&str>, &str); 5] = [
        (
            vec!["--audit-key-file", missing.to_str().unwrap()],
            None,
            "cannot read audit key file",
        ),
        (
            vec!["--audit-key-file", twice.to_str().unwrap()],
            None,
            "line 3: key id \"k1\" appears twice",
        ),
        (
            vec!["--audit-key-file", short.to_str().unwrap()],
            None,
            "32 bytes; this one is 3",
        ),
        (
            vec!["--audit-key-file", twice.to_str().unwrap()],
            Some(good.as_str()),
            "both set",
        ),
        (
            vec![],
            Some("k1"),
            "TELLER_AUDIT_KEY line 1: expected ID:BASE64",
        ),
    ];
    for (args, env, says) in cases {
        let mut cmd = teller();
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--audit-dir"])
            .arg(&log)
            .args(&args);
        if let Some(value) = env {
            cmd.env("TELLER_AUDIT_KEY", value);
        }
        let (code, out, err) = text(&cmd.output().unwrap());
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains(&secret), "the key leaked: {err}");
    }
    let (code, _, err) = text(
        &teller()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("TELLER_AUDIT_KEY", &good)
            .output()
            .unwrap(),
    );
    assert_eq!(code, 2);
    assert!(err.contains("no --audit-dir"), "{err}");
}

#[test]
fn segments_rotate_by_size_and_verify_checks_across_them() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit");
    let args = [
        "--audit-dir",
        log.to_str().unwrap(),
        "--audit-segment-bytes",
        "4096",
    ];
    let server = Server::start(ENGINES[0], &args);
    for seq in 1..=30u64 {
        let r = server.post("/v1/transfer/check", EXAMPLE).json();
        assert_eq!(r["audit"]["seq"], seq);
    }
    assert_eq!(server.stop().code(), Some(0));
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&log)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segments.sort();
    assert!(segments.len() >= 4, "{segments:?}");
    for segment in &segments[..segments.len() - 1] {
        let len = std::fs::metadata(segment).unwrap().len();
        assert!((4096..4096 + 2048).contains(&len), "{segment:?}: {len}");
    }
    let verify = text(
        &teller()
            .args(["audit", "verify"])
            .arg(&log)
            .output()
            .unwrap(),
    );
    assert_eq!(verify.0, 0, "{verify:?}");
    assert!(
        verify
            .1
            .contains(&format!("30 records in {} segments", segments.len())),
        "{verify:?}"
    );

    // The chain continues across a restart, in the last segment.
    let server = Server::start(ENGINES[ENGINES.len() - 1], &args);
    let r = server.post("/v1/transfer/check", EXAMPLE).json();
    assert_eq!(r["audit"]["seq"], 31, "{r}");
    assert_eq!(server.stop().code(), Some(0));
    let head = text(&teller().args(["audit", "head"]).arg(&log).output().unwrap());
    assert!(head.1.contains("\"seq\":31"), "{head:?}");

    // A whole segment lost from the middle: verify names the first record
    // it held and the segment where the chain picks up again.
    let lost = &segments[1];
    let first_lost: u64 = lost.file_name().unwrap().to_str().unwrap()[6..26]
        .parse()
        .unwrap();
    std::fs::remove_file(lost).unwrap();
    let (code, out, _) = text(
        &teller()
            .args(["audit", "verify"])
            .arg(&log)
            .output()
            .unwrap(),
    );
    assert_eq!(code, 1, "{out}");
    let next = segments[2].file_name().unwrap().to_str().unwrap();
    assert!(
        out.contains(&format!("record {first_lost} ({next} line 1)")) && out.contains("deleted"),
        "{out}"
    );

    let (code, _, err) = text(
        &teller()
            .args(["serve", "--audit-segment-bytes", "100", "--audit-dir"])
            .arg(&log)
            .output()
            .unwrap(),
    );
    assert_eq!(code, 2);
    assert!(err.contains("--audit-segment-bytes"), "{err}");
    let (code, _, err) = text(
        &teller()
            .args(["audit", "verify"])
            .arg(lost)
            .output()
            .unwrap(),
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("No such file") || err.contains("is a file"),
        "{err}"
    );
}

/// Values quoted back in errors (serde names the bad value) are masked like
/// the audit log masks them.
#[test]
fn no_account_number_reaches_an_error() {
    let server = Server::start(ENGINES[0], &[]);
    for body in [
        format!(r#"{{"action":"transfer","amount":"{ACCOUNT}","user":{{"role":"r"}}}}"#),
        format!(
            r#"{{"action":"transfer","amount":1,"from_account":{ACCOUNT},"user":{{"role":"r"}}}}"#
        ),
        format!(r#"{{"action":"transfer","amount":1,"user":{{"id":{ACCOUNT},"role":"r"}}}}"#),
        format!(
            r#"{{"action":"transfer","amount":1,"user":{{"role":"{CARD}","x":1}},"audit":"{CARD}"}}"#
        ),
    ] {
        let r = server.post("/v1/transfer/check", &body);
        assert_eq!(r.status, 400, "{r:?}");
        assert!(
            !r.body.contains(ACCOUNT) && !r.body.contains(CARD),
            "{}",
            r.body
        );
        let mut check = teller();
        check.args(["check", "-", "--engine", ENGINES[0]]);
        let cli = crate::support::output_with_stdin(check, body.as_bytes());
        let (code, out, err) = text(&cli);
        assert_eq!(code, 2, "{out}{err}");
        assert!(!(out.clone() + &err).contains(ACCOUNT), "{out}{err}");
    }
    let event = format!(
        r#"{{"actor":{{"id":"a","role":"r"}},"action":"x","outcome":"ok","details":{{"n":{ACCOUNT}}}}}"#
    );
    let r = server.post("/v1/audit/events", &event);
    assert!(!r.body.contains(ACCOUNT), "{}", r.body);
}
