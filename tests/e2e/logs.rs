//! Structured logs: one JSON object per line, the request's `request_id`
//! and `decision_id` on the lines of that request, no account numbers.

use crate::support::{ENGINES, Server, doc, request};
use std::time::Duration;
use teller_policy_artifacts::{AUDIT, HOSTILE};

/// Lines until one satisfies `want`; all lines seen so far.
fn until(
    rx: &std::sync::mpsc::Receiver<String>,
    want: impl Fn(&serde_json::Value) -> bool,
) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no such log line in: {seen:#?}"));
        let value: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
        seen.push(line);
        if want(&value) {
            return seen;
        }
    }
}

#[test]
fn json_log_lines_carry_request_and_decision_ids() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        for (name, guest) in [("transfer-check", HOSTILE), ("audit", AUDIT)] {
            std::fs::write(
                dir.path().join(format!("{name}.component.wasm")),
                guest.component,
            )
            .unwrap();
            std::fs::write(dir.path().join(format!("{name}.module.wasm")), guest.module).unwrap();
        }
        let (server, rx) = Server::start_logged(
            engine,
            &[
                "--policy-dir",
                dir.path().to_str().unwrap(),
                "--log-format",
                "json",
            ],
        );
        let started = until(&rx, |v| v["message"] == "listening");
        assert!(
            started.last().unwrap().contains("\"level\":\"INFO\""),
            "{started:?}"
        );

        // A guest that traps, with the client's request id.
        let mut body = doc("trap", 5, "a", Some(true), None);
        body = body.replace("\"u-1\"", "\"6222020200001234567\"");
        let head = format!(
            "POST /v1/transfer/check HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Request-Id: pay-42\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let r = crate::support::raw(server.addr, head.as_bytes());
        assert_eq!(r.status, 500);
        assert!(
            r.headers
                .to_ascii_lowercase()
                .contains("x-request-id: pay-42"),
            "{}",
            r.headers
        );
        let lines = until(&rx, |v| v["code"] == "guest_trap");
        let line: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
        assert_eq!(line["level"], "ERROR", "{line}");
        assert_eq!(line["span"]["request_id"], "pay-42", "{line}");
        assert_eq!(
            line["span"]["decision_id"].as_str().unwrap().len(),
            36,
            "{line}"
        );
        for l in &lines {
            assert!(
                !l.contains("6222020200001234567"),
                "an account number was logged: {l}"
            );
        }
        // Without an id (or with one that looks like an account number),
        // teller makes one up and answers with it.
        let r = request(
            server.addr,
            "POST",
            "/v1/transfer/check",
            doc("transfer", 5, "a", Some(true), None).as_bytes(),
        );
        assert_eq!(r.status, 200);
        let id = r
            .headers
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("x-request-id: ")
                    .map(str::to_string)
            })
            .unwrap();
        assert_eq!(id.len(), 36, "{id}");
        drop(server);
    }
}
