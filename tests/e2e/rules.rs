//! The bank's rule table, over HTTP and through `teller check`.

use crate::support::{ENGINES, EXAMPLE, Server, doc, teller};

/// (action, amount, role, audit.enabled, approval.required) →
/// (allow, deny, verdict, reason codes)
type Case = (
    &'static str,
    u64,
    &'static str,
    Option<bool>,
    Option<bool>,
    (bool, bool, &'static str, &'static [&'static str]),
);

const LIMIT: u64 = 1_000_000;
const MAX: u64 = i64::MAX as u64;

pub const TABLE: &[Case] = &[
    (
        "transfer",
        LIMIT,
        "authorized",
        Some(true),
        None,
        (true, false, "allow", &[]),
    ),
    (
        "transfer",
        0,
        "authorized",
        Some(true),
        Some(false),
        (true, false, "allow", &[]),
    ),
    (
        "transfer",
        LIMIT + 1,
        "authorized",
        Some(true),
        None,
        (false, true, "deny", &["amount_over_limit"]),
    ),
    (
        "transfer",
        LIMIT + 1,
        "authorized",
        Some(true),
        Some(false),
        (false, true, "deny", &["amount_over_limit"]),
    ),
    (
        "transfer",
        LIMIT + 1,
        "authorized",
        Some(true),
        Some(true),
        (
            false,
            false,
            "review",
            &["amount_over_limit", "approval_required"],
        ),
    ),
    (
        "transfer",
        MAX,
        "authorized",
        Some(true),
        None,
        (false, true, "deny", &["amount_over_limit"]),
    ),
    // An approved request under the limit is simply allowed.
    (
        "transfer",
        LIMIT,
        "authorized",
        Some(true),
        Some(true),
        (true, false, "allow", &[]),
    ),
    (
        "transfer",
        10,
        "authorized",
        None,
        None,
        (false, false, "deny", &["audit_disabled"]),
    ),
    (
        "transfer",
        10,
        "authorized",
        Some(false),
        None,
        (false, false, "deny", &["audit_disabled"]),
    ),
    (
        "transfer",
        10,
        "teller",
        Some(true),
        None,
        (false, false, "deny", &["role_not_authorized"]),
    ),
    (
        "transfer",
        10,
        "Authorized",
        Some(true),
        None,
        (false, false, "deny", &["role_not_authorized"]),
    ),
    (
        "withdraw",
        10,
        "authorized",
        Some(true),
        None,
        (false, false, "deny", &["action_not_transfer"]),
    ),
    // Over the limit, but not a transfer: the deny rule does not apply.
    (
        "withdraw",
        LIMIT + 1,
        "authorized",
        Some(true),
        None,
        (
            false,
            false,
            "deny",
            &["action_not_transfer", "amount_over_limit"],
        ),
    ),
    (
        "Transfer",
        10,
        "authorized",
        Some(true),
        None,
        (false, false, "deny", &["action_not_transfer"]),
    ),
    // Over the limit with approval, but unauthorized: not reviewable.
    (
        "transfer",
        LIMIT + 1,
        "guest",
        Some(true),
        Some(true),
        (
            false,
            false,
            "deny",
            &[
                "amount_over_limit",
                "role_not_authorized",
                "approval_required",
            ],
        ),
    ),
    (
        "transfer",
        LIMIT + 1,
        "guest",
        None,
        None,
        (
            false,
            true,
            "deny",
            &["amount_over_limit", "role_not_authorized", "audit_disabled"],
        ),
    ),
];

pub fn assert_case(case: &Case, got: &serde_json::Value, engine: &str) {
    let (action, amount, role, audit, approval, (allow, deny, verdict, reasons)) = case;
    let context =
        format!("{engine}: {action} {amount} {role} audit={audit:?} approval={approval:?}: {got}");
    assert_eq!(got["allow"], *allow, "{context}");
    assert_eq!(got["deny"], *deny, "{context}");
    assert_eq!(got["verdict"], *verdict, "{context}");
    let codes: Vec<&str> = got["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, *reasons, "{context}");
    assert_eq!(got["policy"]["name"], "transfer-check", "{context}");
    assert_eq!(
        got["policy"]["sha256"].as_str().unwrap().len(),
        64,
        "{context}"
    );
    assert_eq!(got["engine"], engine, "{context}");
}

#[test]
fn rule_table_over_http() {
    for engine in ENGINES {
        rule_table_over_http_on(engine);
    }
}

fn rule_table_over_http_on(engine: &str) {
    let server = Server::start(engine, &[]);
    for case in TABLE {
        let (action, amount, role, audit, approval, _) = case;
        let r = server.post(
            "/v1/transfer/check",
            &doc(action, *amount, role, *audit, *approval),
        );
        assert_eq!(r.status, 200, "{r:?}");
        assert!(
            r.headers
                .to_ascii_lowercase()
                .contains("content-type: application/json")
        );
        assert_case(case, &r.json(), engine);
    }
}

#[test]
fn rule_table_through_check() {
    for (engine, case) in ENGINES
        .iter()
        .flat_map(|e| TABLE.iter().map(move |c| (e, c)))
    {
        let (action, amount, role, audit, approval, (_, _, verdict, _)) = case;
        let mut check = teller();
        check.args(["check", "-", "--fail-on-deny", "--engine", engine]);
        let out = crate::support::output_with_stdin(
            check,
            doc(action, *amount, role, *audit, *approval).as_bytes(),
        );
        let expected_status = if *verdict == "deny" { 3 } else { 0 };
        assert_eq!(out.status.code(), Some(expected_status), "{out:?}");
        assert_case(case, &serde_json::from_slice(&out.stdout).unwrap(), engine);
    }
}

#[test]
fn readme_example_is_allowed_with_a_fresh_decision_id() {
    for engine in ENGINES {
        readme_example_on(engine);
    }
}

fn readme_example_on(engine: &str) {
    let server = Server::start(engine, &[]);
    let a = server.post("/v1/transfer/check", EXAMPLE).json();
    let b = server.post("/v1/transfer/check", EXAMPLE).json();
    assert_eq!(
        (a["allow"].clone(), a["verdict"].clone()),
        (true.into(), "allow".into())
    );
    assert_ne!(a["decision_id"], b["decision_id"]);
    assert_eq!(a["policy"], b["policy"]);
    assert!(a.get("audit").is_none(), "no audit log configured: {a}");
}

#[test]
fn limit_and_roles_come_from_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("teller.toml");
    std::fs::write(
        &config,
        "[transfer_check]\namount_limit = 500\nauthorized_roles = [\"teller\", \"manager\"]\n",
    )
    .unwrap();
    for engine in ENGINES {
        let server = Server::start(engine, &["--config", config.to_str().unwrap()]);
        limits_from_config_on(&server);
    }
}

fn limits_from_config_on(server: &Server) {
    let r = server
        .post(
            "/v1/transfer/check",
            &doc("transfer", 500, "manager", Some(true), None),
        )
        .json();
    assert_eq!(r["verdict"], "allow", "{r}");
    let r = server
        .post(
            "/v1/transfer/check",
            &doc("transfer", 501, "teller", Some(true), None),
        )
        .json();
    assert_eq!(
        (r["deny"].clone(), r["verdict"].clone()),
        (true.into(), "deny".into()),
        "{r}"
    );
    let r = server
        .post(
            "/v1/transfer/check",
            &doc("transfer", 10, "authorized", Some(true), None),
        )
        .json();
    assert_eq!(r["reasons"][0]["code"], "role_not_authorized", "{r}");
}

#[test]
fn policies_load_from_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    for guest in teller_policy_artifacts::ALL {
        std::fs::write(
            dir.path().join(format!("{}.component.wasm", guest.name)),
            guest.component,
        )
        .unwrap();
        std::fs::write(
            dir.path().join(format!("{}.module.wasm", guest.name)),
            guest.module,
        )
        .unwrap();
    }
    for engine in ENGINES {
        let server = Server::start(engine, &["--policy-dir", dir.path().to_str().unwrap()]);
        let r = server.post("/v1/transfer/check", EXAMPLE).json();
        assert_eq!(r["verdict"], "allow", "{r}");
        // Each engine names the artifact it runs.
        let guest = teller_policy_artifacts::TRANSFER_CHECK;
        let ran = if *engine == "wasmtime" {
            guest.component
        } else {
            guest.module
        };
        assert_eq!(
            r["policy"]["sha256"],
            teller_engine::artifact::sha256_hex(ran).as_str(),
            "{engine}"
        );
    }
}
