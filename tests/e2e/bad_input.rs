//! Bad input of every kind gets a clear error, and the server keeps serving.

use crate::support::{ENGINES, EXAMPLE, Server, raw, teller};

fn assert_error(r: &crate::support::Response, status: u16, code: &str, field: Option<&str>) {
    assert_eq!(r.status, status, "{r:?}");
    let e = &r.json()["error"];
    assert_eq!(e["code"], code, "{r:?}");
    assert!(!e["message"].as_str().unwrap().is_empty());
    match field {
        Some(f) => assert_eq!(e["field"], f, "{r:?}"),
        None => assert!(e.get("field").is_none(), "{r:?}"),
    }
}

#[test]
fn bad_requests_get_400_or_413_and_the_server_keeps_serving() {
    for engine in ENGINES {
        bad_requests_on(engine);
    }
}

fn bad_requests_on(engine: &str) {
    let server = Server::start(engine, &[]);
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("", "malformed_json", None),
        ("{", "malformed_json", None),
        ("not json", "malformed_json", None),
        (
            r#"{"action":"transfer","amount":1,"user":{"role":"a"}} trailing"#,
            "malformed_json",
            None,
        ),
        ("[]", "invalid_field", Some(".")),
        (
            r#"{"action":"transfer","amount":"100","user":{"role":"authorized"}}"#,
            "invalid_field",
            Some("amount"),
        ),
        (
            r#"{"action":"transfer","amount":-1,"user":{"role":"authorized"}}"#,
            "invalid_field",
            Some("amount"),
        ),
        (
            r#"{"action":"transfer","amount":1.5,"user":{"role":"authorized"}}"#,
            "invalid_field",
            Some("amount"),
        ),
        (
            r#"{"action":"transfer","amount":1e3,"user":{"role":"authorized"}}"#,
            "invalid_field",
            Some("amount"),
        ),
        (
            r#"{"action":"transfer","amount":9223372036854775808,"user":{"role":"authorized"}}"#,
            "invalid_field",
            Some("amount"),
        ),
        (
            r#"{"action":"transfer","amount":99999999999999999999999,"user":{"role":"a"}}"#,
            "invalid_field",
            Some("amount"),
        ),
        (
            r#"{"action":"transfer","user":{"role":"authorized"}}"#,
            "missing_field",
            Some("amount"),
        ),
        (
            r#"{"amount":5,"user":{"role":"authorized"}}"#,
            "missing_field",
            Some("action"),
        ),
        (
            r#"{"action":"transfer","amount":5}"#,
            "missing_field",
            Some("user"),
        ),
        (
            r#"{"action":"transfer","amount":5,"user":{}}"#,
            "missing_field",
            Some("user.role"),
        ),
        (
            r#"{"action":"transfer","amount":5,"user":{"role":7}}"#,
            "invalid_field",
            Some("user.role"),
        ),
        (
            r#"{"action":5,"amount":5,"user":{"role":"a"}}"#,
            "invalid_field",
            Some("action"),
        ),
        (
            r#"{"action":"transfer","amount":5,"user":{"role":"a"},"audit":{"enabled":"true"}}"#,
            "invalid_field",
            Some("audit.enabled"),
        ),
        (
            r#"{"action":"transfer","amount":5,"user":{"role":"a"},"approval":{"required":1}}"#,
            "invalid_field",
            Some("approval.required"),
        ),
        (
            r#"{"action":"transfer","amount":5,"user":{"role":"a"},"audit":null}"#,
            "invalid_field",
            Some("audit"),
        ),
    ];
    for (body, code, field) in cases {
        let r = server.post("/v1/transfer/check", body);
        assert_error(&r, 400, code, *field);
    }

    let huge = format!(
        r#"{{"action":"transfer","pad":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    assert_error(
        &server.post("/v1/transfer/check", &huge),
        413,
        "body_too_large",
        None,
    );
    // Chunked with no Content-Length: the limit holds while streaming.
    let chunk = "y".repeat(8192);
    let mut chunked = "POST /v1/transfer/check HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                       Transfer-Encoding: chunked\r\n\r\n"
        .to_string();
    for _ in 0..10 {
        chunked.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    chunked.push_str("0\r\n\r\n");
    assert_error(
        &raw(server.addr, chunked.as_bytes()),
        413,
        "body_too_large",
        None,
    );

    assert_error(
        &server.get("/v1/transfer/check"),
        405,
        "method_not_allowed",
        None,
    );
    assert_error(&server.get("/nope"), 404, "not_found", None);
    assert_error(
        &server.post("/v1/audit/events", "{}"),
        503,
        "audit_log_disabled",
        None,
    );
    assert!(raw(server.addr, b"GARBAGE\r\n\r\n").status >= 400);

    // Still serving, and still right.
    let r = server.post("/v1/transfer/check", EXAMPLE);
    assert_eq!(
        (r.status, r.json()["verdict"].clone()),
        (200, "allow".into())
    );
    assert_eq!(server.get("/healthz").status, 200);
    assert_eq!(server.get("/readyz").status, 200);
}

#[test]
fn check_prints_the_same_error_and_exits_2() {
    let mut check = teller();
    check.arg("check");
    let out = crate::support::output_with_stdin(
        check,
        br#"{"action":"transfer","amount":-3,"user":{"role":"a"}}"#,
    );
    assert_eq!(out.status.code(), Some(2));
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["error"]["code"], "invalid_field");
    assert_eq!(e["error"]["field"], "amount");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("amount") && stderr.contains("negative"),
        "{stderr}"
    );

    let out = teller()
        .args(["check", "/no/such/file.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/file.json"));
}

#[test]
fn bad_configuration_stops_start_up_naming_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    for (text, needle) in [
        ("[transfer_check]\namount_limt = 5\n", "amount_limt"),
        (
            "[transfer_check]\namount_limit = \"lots\"\n",
            "amount_limit",
        ),
        (
            "[transfer_check]\nauthorized_roles = []\n",
            "authorized_roles",
        ),
        ("[transfer_check\n", "bad.toml"),
    ] {
        std::fs::write(&config, text).unwrap();
        let out = teller()
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(
            stderr.contains(needle) && stderr.contains("bad.toml"),
            "{text}: {stderr}"
        );
    }
    let out = teller()
        .args(["check", "--policy-dir", "/no/such/dir"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/dir"));

    // Impossible limits: refused by name before anything starts.
    for (flag, value) in [
        ("--guest-deadline-ms", "0"),
        ("--guest-memory-mib", "99999"),
        ("--guest-fuel", "0"),
        ("--max-concurrency", "0"),
        ("--client-timeout-ms", "1"),
        ("--audit-segment-bytes", "10"),
        ("--listen", "localhost:http"),
    ] {
        let out = teller().args(["serve", flag, value]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }
    // A memory cap below what the guest starts with: the guest cannot be
    // instantiated, and start-up says so.
    for engine in ENGINES {
        let out = teller()
            .args(["check", "--engine", engine, "--guest-memory-mib", "1", "-"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{engine}: {stderr}");
        assert!(stderr.contains("transfer-check"), "{engine}: {stderr}");
    }
}

#[test]
fn overload_gets_503_with_retry_after_and_the_server_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit");
    // One slot and no queue; the audit log's fsync keeps the slot busy.
    let server = Server::start(
        ENGINES[0],
        &[
            "--max-concurrency",
            "1",
            "--max-queue",
            "0",
            "--audit-dir",
            log.to_str().unwrap(),
        ],
    );
    let responses =
        crate::support::concurrently(16, 10, || server.post("/v1/transfer/check", EXAMPLE));
    let refused: Vec<_> = responses.iter().filter(|r| r.status == 503).collect();
    let allowed = responses.iter().filter(|r| r.status == 200).count();
    assert_eq!(
        refused.len() + allowed,
        responses.len(),
        "only 200 or 503 expected"
    );
    assert!(
        !refused.is_empty() && allowed > 0,
        "{} refused, {allowed} allowed",
        refused.len()
    );
    for r in &refused {
        assert_eq!(r.json()["error"]["code"], "overloaded");
        assert!(
            r.headers.to_ascii_lowercase().contains("retry-after: 1"),
            "{r:?}"
        );
    }
    let r = server.post("/v1/transfer/check", EXAMPLE);
    assert_eq!(r.status, 200, "{r:?}");
    // Every allowed decision was recorded; no refused one was.
    let records = std::fs::read_to_string(log.join("audit-00000000000000000001.log"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(records, allowed + 1);
}

/// Oversized heads get 431; clients too slow with their headers lose the
/// connection and those too slow with their body get 408; meanwhile and
/// afterwards everyone else is answered.
#[test]
fn huge_heads_and_slow_clients_are_cut_off() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let server = Server::start(ENGINES[0], &["--client-timeout-ms", "500"]);

    let big = format!(
        "POST /v1/transfer/check HTTP/1.1\r\nHost: x\r\nX-Padding: {}\r\nContent-Length: 2\r\n\r\n{{}}",
        "a".repeat(20 * 1024)
    );
    let r = crate::support::raw(server.addr, big.as_bytes());
    assert_eq!(r.status, 431, "{r:?}");
    let many: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = crate::support::raw(
        server.addr,
        format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}Connection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 431, "{r:?}");

    // Headers that never finish: the connection is closed.
    let started = std::time::Instant::now();
    let mut slow = TcpStream::connect(server.addr).unwrap();
    slow.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    slow.write_all(b"POST /v1/transfer/check HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // A silent kept-open connection, too.
    let mut idle = TcpStream::connect(server.addr).unwrap();
    idle.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    assert_eq!(
        server.post("/v1/transfer/check", EXAMPLE).status,
        200,
        "answered while slow clients hang on"
    );
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    let _ = idle.read_to_end(&mut rest);
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(10),
        "slow connections held for {took:?}"
    );

    // A body that stops halfway: 408.
    let mut stalled = TcpStream::connect(server.addr).unwrap();
    stalled
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    stalled
        .write_all(b"POST /v1/transfer/check HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"action\":")
        .unwrap();
    let mut answer = String::new();
    let _ = stalled.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains("body_timeout"), "{answer:?}");

    assert_eq!(server.post("/v1/transfer/check", EXAMPLE).status, 200);
}
