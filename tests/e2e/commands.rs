//! Each guest function built as a `wasm32-wasip1` command, run by the
//! `wasmedge` command line as a node's WasmEdge runs a wasm container,
//! answers exactly as teller does.

use crate::rules::TABLE;
use crate::support::{EXAMPLE, doc, engine, teller};
use std::process::Command;
use teller_audit_log::GENESIS;
use teller_contract::{Actor, AuditEvent, Origin, PolicyRef};
use teller_policy_artifacts::{AUDIT_SEAL_COMMAND, TRANSFER_CHECK_COMMAND};

/// Runs `cmd` with `stdin`; its exit status and stdout.
fn run(cmd: Command, stdin: &[u8]) -> (i32, String) {
    let out = crate::support::output_with_stdin(cmd, stdin);
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// `wasmedge [--env K=V]... COMMAND.wasm`.
fn wasmedge(path: &str, env: &[&str]) -> Command {
    let mut cmd = Command::new(env!("WASMEDGE_BIN"));
    for var in env {
        cmd.args(["--env", var]);
    }
    cmd.arg(path);
    cmd
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
}

/// The decision fields both print.
fn decision(v: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "allow": v["allow"], "deny": v["deny"], "verdict": v["verdict"], "reasons": v["reasons"],
    })
}

#[test]
fn transfer_check_command_decides_like_teller_check() {
    let mut docs: Vec<String> = TABLE
        .iter()
        .map(|(action, amount, role, audit, approval, _)| {
            doc(action, *amount, role, *audit, *approval)
        })
        .collect();
    docs.push(EXAMPLE.to_string());
    // Refused documents: the same code and field.
    docs.extend(
        [
            "{",
            "",
            r#"{"action":"transfer","amount":"6222020200001234567","user":{"role":"a"}}"#,
            r#"{"action":"transfer","amount":1.5,"user":{"role":"a"}}"#,
            r#"{"action":"transfer","amount":5,"user":{}}"#,
            r#"{"action":"transfer","amount":5,"user":{"role":"a"},"audit":null}"#,
        ]
        .map(String::from),
    );
    docs.push("x".repeat(70 * 1024));
    for body in &docs {
        let mut check = teller();
        check.args(["check", "--engine", "wasmedge", "-"]);
        let (teller_code, teller_out) = run(check, body.as_bytes());
        let (code, out) = run(wasmedge(TRANSFER_CHECK_COMMAND.path, &[]), body.as_bytes());
        let (want, got) = (json(&teller_out), json(&out));
        let shown = body.get(..80).unwrap_or(body);
        if teller_code == 0 {
            assert_eq!(decision(&got), decision(&want), "{shown}");
            let allowed = want["verdict"] == "allow";
            assert_eq!(code, if allowed { 0 } else { 3 }, "{shown}: {out}");
        } else {
            assert_eq!(teller_code, 2, "{shown}: {teller_out}");
            assert_eq!(code, 2, "{shown}: {out}");
            assert_eq!(got["error"]["code"], want["error"]["code"], "{shown}");
            assert_eq!(got["error"]["field"], want["error"]["field"], "{shown}");
            assert!(!out.contains("6222020200001234567"), "{out}");
        }
    }

    // Parameters from the environment, as a pod spec would set them.
    let over = doc("transfer", 6, "teller", Some(true), None);
    let env = [
        "TELLER_AMOUNT_LIMIT=5",
        "TELLER_AUTHORIZED_ROLES=teller,ops",
    ];
    let (code, out) = run(wasmedge(TRANSFER_CHECK_COMMAND.path, &env), over.as_bytes());
    assert_eq!(code, 3, "{out}");
    assert_eq!(json(&out)["reasons"][0]["code"], "amount_over_limit");
    let within = doc("transfer", 5, "ops", Some(true), None);
    let (code, out) = run(
        wasmedge(TRANSFER_CHECK_COMMAND.path, &env),
        within.as_bytes(),
    );
    assert_eq!(
        (code, json(&out)["verdict"].as_str()),
        (0, Some("allow")),
        "{out}"
    );
    let (code, out) = run(
        wasmedge(TRANSFER_CHECK_COMMAND.path, &["TELLER_AMOUNT_LIMIT=lots"]),
        within.as_bytes(),
    );
    assert_eq!(
        (code, json(&out)["error"]["code"].as_str()),
        (2, Some("config_invalid"))
    );
}

#[test]
fn audit_seal_command_seals_like_teller() {
    let event = AuditEvent {
        id: "01a22533-9363-7434-bb37-681758080538".into(),
        timestamp: "2026-11-29T02:32:13.123Z".into(),
        actor: Actor {
            id: "u-17".into(),
            role: "authorized".into(),
        },
        action: "transfer".into(),
        resource: vec!["6222020200001234567".into()],
        outcome: "allow".into(),
        reasons: vec![],
        origin: Origin {
            client: "127.0.0.1:5000".into(),
            request_id: "r-1".into(),
        },
        policy: Some(PolicyRef {
            name: "transfer-check".into(),
            version: "0.1.0".into(),
            sha256: "ab".repeat(32),
        }),
        policies: vec![],
        engine: "wasmedge".into(),
        details: vec![("amount".into(), "250000".into())],
        encrypted: None,
    };
    let sealer = engine("wasmedge")
        .load_audit(
            &teller_engine::artifact::PolicySource::Builtin
                .audit()
                .unwrap(),
        )
        .unwrap();
    let want = sealer.seal(7, GENESIS, &event).unwrap();
    let input = serde_json::json!({"seq": 7, "prev_hash": GENESIS, "event": event}).to_string();
    let (code, out) = run(wasmedge(AUDIT_SEAL_COMMAND.path, &[]), input.as_bytes());
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.trim_end(), want.line);
    assert!(!out.contains("6222020200001234567"));

    let refused = serde_json::json!({"seq": 1, "prev_hash": "nope", "event": event}).to_string();
    let (code, out) = run(wasmedge(AUDIT_SEAL_COMMAND.path, &[]), refused.as_bytes());
    assert_eq!(
        (code, json(&out)["error"]["code"].as_str()),
        (1, Some("guest_refused")),
        "{out}"
    );
    let (code, out) = run(wasmedge(AUDIT_SEAL_COMMAND.path, &[]), br#"{"seq":1}"#);
    assert_eq!(code, 2, "{out}");
}
