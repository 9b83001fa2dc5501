//! Rego policies as guests: the bank's own `bank.rego` and policies written
//! for these tests, served from a policy directory on each engine, against
//! the built-in Rust guest and against regorus run natively (the oracle);
//! sets of policies; bad policies of every kind.

use crate::support::{ENGINES, EXAMPLE, Server, engine, teller};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as RunnerConfig, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Value, json};
use std::path::Path;
use teller_contract::{Verdict, decode_transfer};
use teller_engine::artifact::{PolicySource, sha256_hex};
use teller_policy_artifacts::{BANK_REGO, TRANSFER_CHECK};

/// A policy the guests were not written against: Rego v1, data, reasons,
/// a review rule and a version.
pub(crate) const LIMITS_REGO: &str = r#"package limits

import rego.v1

version := "1.4.0"

default allow := false

allow if {
	input.amount <= data.limits[input.currency]
	not blocked
}

deny if blocked

blocked if input.from_account in data.blocked

review if {
	input.amount > data.limits[input.currency]
	input.approval.required == true
}

reasons contains {"code": "over_currency_limit", "message": msg} if {
	input.amount > data.limits[input.currency]
	msg := sprintf("%v %v is over the limit", [input.amount, input.currency])
}

reasons contains {"code": "blocked_account", "message": "the account is blocked"} if blocked
"#;

pub(crate) const LIMITS_DATA: &str =
    r#"{"limits": {"CNY": 500000, "USD": 70000}, "blocked": ["6222020200000000001"]}"#;

pub(crate) fn write(dir: &Path, files: &[(&str, &[u8])]) {
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

pub(crate) fn install_guest(dir: &Path, name: &str, guest: teller_policy_artifacts::Guest) {
    write(
        dir,
        &[
            (&format!("{name}.component.wasm"), guest.component),
            (&format!("{name}.module.wasm"), guest.module),
        ],
    );
}

/// regorus, natively, on `files` with `data`: (allow, deny, review, reason codes).
fn oracle(file: &str, text: &str, data: &str, doc: &str) -> (bool, bool, bool, Vec<String>) {
    let mut engine = regorus::Engine::new();
    let package = engine
        .add_policy(file.into(), text.into())
        .or_else(|_| {
            engine = regorus::Engine::new();
            engine.set_rego_v0(true);
            engine.add_policy(file.into(), text.into())
        })
        .unwrap();
    if !data.is_empty() {
        engine
            .add_data(regorus::Value::from_json_str(data).unwrap())
            .unwrap();
    }
    engine.set_input(regorus::Value::from_json_str(doc).unwrap());
    let mut rule = |name: &str| match engine.eval_rule(format!("{package}.{name}")) {
        Ok(regorus::Value::Bool(b)) => b,
        Ok(regorus::Value::Undefined) | Err(_) => false,
        Ok(other) => panic!("{name} is {other:?}"),
    };
    let (allow, deny, review) = (rule("allow"), rule("deny"), rule("review"));
    let mut codes: Vec<String> = match engine.eval_rule(format!("{package}.reasons")) {
        Ok(regorus::Value::Set(set)) => set
            .iter()
            .map(|r| r["code"].as_string().unwrap().to_string())
            .collect(),
        _ => vec![],
    };
    codes.sort();
    (allow, deny, review, codes)
}

/// Transfer documents over the cases the policies tell apart.
fn document() -> impl Strategy<Value = String> {
    let amount = prop_oneof![
        prop::sample::select(vec![0u64, 1, 70_000, 70_001, 500_000, 500_001, 999_999]),
        prop::sample::select(vec![1_000_000u64, 1_000_001, i64::MAX as u64]),
        0..=2_000_000u64,
    ];
    let flag = |key: &'static str| {
        prop_oneof![
            Just(None),
            Just(Some(json!({}))),
            any::<bool>().prop_map(move |b| Some(json!({ key: b }))),
        ]
    };
    (
        prop::sample::select(vec!["transfer", "withdraw", "Transfer"]),
        amount,
        prop::sample::select(vec!["authorized", "teller", ""]),
        flag("enabled"),
        flag("required"),
        prop::option::of(prop::sample::select(vec!["CNY", "USD", "EUR"])),
        prop::sample::select(vec!["6222020200001234567", "6222020200000000001"]),
    )
        .prop_map(|(action, amount, role, audit, approval, currency, from)| {
            let mut doc = json!({
                "action": action,
                "amount": amount,
                "user": {"id": "u-1", "role": role},
                "from_account": from,
                "to_account": "6222020200007654321",
            });
            if let Some(c) = currency {
                doc["currency"] = json!(c);
            }
            if let Some(a) = audit {
                doc["audit"] = a;
            }
            if let Some(a) = approval {
                doc["approval"] = a;
            }
            doc.to_string()
        })
}

/// `n` documents, the same ones on every run.
fn documents(n: usize) -> Vec<String> {
    let mut runner = TestRunner::new_with_rng(
        RunnerConfig::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let strategy = document();
    (0..n)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect()
}

fn codes(answer: &Value) -> Vec<String> {
    let mut codes: Vec<String> = answer["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap().to_string())
        .collect();
    codes.sort();
    codes
}

/// In process, on each engine: `bank.rego` from a directory decides as the
/// built-in guest on thousands of documents, and both agree with regorus.
#[test]
fn bank_rego_decides_as_the_builtin_guest_in_process() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &[("bank.rego", BANK_REGO.as_bytes())]);
    let config = teller_server::config::Config::default().policy_config();
    let docs = documents(5000);
    for name in ENGINES {
        let engine = engine(name);
        let rego = engine
            .load_transfer_check(
                &PolicySource::Dir(dir.path().to_path_buf())
                    .transfer_checks()
                    .unwrap()
                    .remove(0),
            )
            .unwrap();
        assert_eq!(rego.policy().name, "bank");
        // `sha256sum bank.rego | sha256sum`
        let listing = format!("{}  bank.rego\n", sha256_hex(BANK_REGO.as_bytes()));
        assert_eq!(rego.policy().sha256, sha256_hex(listing.as_bytes()));
        let builtin = engine
            .load_transfer_check(&PolicySource::Builtin.transfer_checks().unwrap().remove(0))
            .unwrap();
        let mut reviews = 0;
        for doc in &docs {
            let request = decode_transfer(doc.as_bytes()).unwrap();
            let by_rego = rego.check(&config, &request).unwrap();
            let by_rust = builtin.check(&config, &request).unwrap();
            let (allow, deny, _, _) = oracle("bank.rego", BANK_REGO, "", doc);
            assert_eq!(
                (by_rego.allow, by_rego.deny),
                (allow, deny),
                "{name}: {doc}"
            );
            assert_eq!(
                (by_rust.allow, by_rust.deny),
                (allow, deny),
                "{name}: {doc}"
            );
            // bank.rego has no review rule: where the built-in guest asks a
            // human, the file alone refuses.
            if by_rust.verdict == Verdict::Review {
                reviews += 1;
                assert_eq!(by_rego.verdict, Verdict::Deny, "{name}: {doc}");
            } else {
                assert_eq!(by_rego.verdict, by_rust.verdict, "{name}: {doc}");
            }
        }
        assert!(reviews > 5, "the documents cover review ({reviews})");
        println!(
            "{name}: bank.rego and the built-in guest agree on {} documents",
            docs.len()
        );
    }
}

/// Over HTTP and through `teller check --policy-dir`, on each engine: the
/// Rego guest with a policy it was not written for agrees with regorus run
/// natively, reasons included, and `bank.rego` with the built-in guest.
#[test]
fn rego_policies_over_http_and_check_agree_with_the_oracle() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            ("limits.rego", LIMITS_REGO.as_bytes()),
            ("data.json", LIMITS_DATA.as_bytes()),
        ],
    );
    let bank = tempfile::tempdir().unwrap();
    write(bank.path(), &[("bank.rego", BANK_REGO.as_bytes())]);
    let docs = documents(1500);
    for name in ENGINES {
        let limits = Server::start(name, &["--policy-dir", dir.path().to_str().unwrap()]);
        let bank_server = Server::start(name, &["--policy-dir", bank.path().to_str().unwrap()]);
        let builtin = Server::start(name, &[]);
        let mut verdicts = std::collections::BTreeMap::new();
        for doc in &docs {
            let got = limits.post("/v1/transfer/check", doc);
            assert_eq!(got.status, 200, "{name}: {doc}: {}", got.body);
            let got = got.json();
            let (allow, deny, review, want_codes) =
                oracle("limits.rego", LIMITS_REGO, LIMITS_DATA, doc);
            assert_eq!(got["allow"], allow, "{name}: {doc}");
            assert_eq!(got["deny"], deny, "{name}: {doc}");
            let verdict = if allow && !deny {
                "allow"
            } else if review && !deny {
                "review"
            } else {
                "deny"
            };
            assert_eq!(got["verdict"], verdict, "{name}: {doc}");
            assert_eq!(codes(&got), want_codes, "{name}: {doc}");
            assert_eq!(got["policy"]["name"], "limits");
            assert_eq!(got["policy"]["version"], "1.4.0");
            *verdicts.entry(verdict).or_insert(0) += 1;

            let a = bank_server.post("/v1/transfer/check", doc).json();
            let b = builtin.post("/v1/transfer/check", doc).json();
            assert_eq!(
                (&a["allow"], &a["deny"]),
                (&b["allow"], &b["deny"]),
                "{name}: {doc}"
            );
        }
        assert_eq!(
            verdicts.len(),
            3,
            "{name}: every verdict is covered: {verdicts:?}"
        );
        println!(
            "{name}: limits.rego over HTTP agrees with regorus on {} documents: {verdicts:?}",
            docs.len()
        );

        for doc in docs.iter().take(12) {
            let out = crate::support::output_with_stdin(
                {
                    let mut cmd = teller();
                    cmd.args(["check", "--engine", name, "--policy-dir"])
                        .arg(dir.path())
                        .arg("-");
                    cmd
                },
                doc.as_bytes(),
            );
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let got: Value = serde_json::from_slice(&out.stdout).unwrap();
            let (allow, deny, _, want_codes) = oracle("limits.rego", LIMITS_REGO, LIMITS_DATA, doc);
            assert_eq!(
                (got["allow"].as_bool(), got["deny"].as_bool()),
                (Some(allow), Some(deny))
            );
            assert_eq!(codes(&got), want_codes);
        }
    }
}

/// A Rust guest and a Rego policy decide together; the answer, the audit
/// record and the metrics name both.
#[test]
fn a_set_of_a_rust_guest_and_a_rego_policy_combines() {
    for name in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let audit = tempfile::tempdir().unwrap();
        install_guest(dir.path(), "transfer-check", TRANSFER_CHECK);
        write(
            dir.path(),
            &[
                ("limits.rego", LIMITS_REGO.as_bytes()),
                ("data.json", LIMITS_DATA.as_bytes()),
            ],
        );
        let server = Server::start(
            name,
            &[
                "--policy-dir",
                dir.path().to_str().unwrap(),
                "--audit-dir",
                audit.path().to_str().unwrap(),
            ],
        );
        // Allowed by both.
        let both = server.post("/v1/transfer/check", EXAMPLE).json();
        assert_eq!(both["verdict"], "allow", "{name}: {both}");
        let policies = both["policies"].as_array().unwrap();
        assert_eq!(policies.len(), 2);
        assert_eq!(policies[0]["name"], "transfer-check");
        assert_eq!(policies[1]["name"], "limits");
        assert_eq!(both["policy"]["name"], "transfer-check+limits");
        // Over the Rego policy's CNY limit, under the bank's: the Rego
        // policy alone refuses, and the set does.
        let over = EXAMPLE.replace("250000", "600000");
        let got = server.post("/v1/transfer/check", &over).json();
        assert_eq!(got["allow"], false, "{name}: {got}");
        assert_eq!(got["verdict"], "deny");
        assert_eq!(got["policies"][0]["allow"], true);
        assert_eq!(got["policies"][1]["allow"], false);
        assert_eq!(codes(&got), ["over_currency_limit"]);
        // Over both limits with approval requested: both ask for review.
        let review = EXAMPLE
            .replace("250000", "1500000")
            .replace(r#""required":false"#, r#""required":true"#);
        let got = server.post("/v1/transfer/check", &review).json();
        assert_eq!(got["verdict"], "review", "{name}: {got}");
        assert_eq!(
            codes(&got),
            [
                "amount_over_limit",
                "approval_required",
                "over_currency_limit"
            ]
        );
        // A blocked account: the Rego policy denies, whatever the bank's
        // rule says.
        let blocked = EXAMPLE.replace("6222020200001234567", "6222020200000000001");
        let got = server.post("/v1/transfer/check", &blocked).json();
        assert_eq!(
            (&got["deny"], &got["verdict"]),
            (&json!(true), &json!("deny"))
        );

        let metrics = server.get("/metrics").body;
        for line in [
            format!(
                "teller_policy_verdicts_total{{policy=\"limits\",verdict=\"deny\",engine=\"{name}\"}} 2"
            ),
            format!(
                "teller_policy_verdicts_total{{policy=\"transfer-check\",verdict=\"allow\",engine=\"{name}\"}} 3"
            ),
        ] {
            assert!(metrics.contains(&line), "{name}: no {line} in\n{metrics}");
        }
        assert!(server.stop().success());

        let log = std::fs::read_dir(audit.path())
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect::<String>();
        let records: Vec<Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(records.len(), 4, "{name}");
        let first = &records[0];
        assert_eq!(first["policy"]["name"], "transfer-check+limits");
        assert_eq!(first["policies"][0]["name"], "transfer-check");
        assert_eq!(first["policies"][1]["name"], "limits");
        assert_eq!(first["policies"][1]["version"], "1.4.0");
        let listing = format!(
            "{}  limits.rego\n{}  data.json\n",
            sha256_hex(LIMITS_REGO.as_bytes()),
            sha256_hex(LIMITS_DATA.as_bytes())
        );
        assert_eq!(
            first["policies"][1]["sha256"],
            sha256_hex(listing.as_bytes())
        );
        assert_eq!(first["policies"][1]["verdict"], "allow");
        assert_eq!(records[1]["policies"][1]["allow"], false);
        let verify = teller()
            .args(["audit", "verify"])
            .arg(audit.path())
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "{}",
            String::from_utf8_lossy(&verify.stdout)
        );

        // The same set, in an order a manifest gives, packaged as one image
        // and served from it.
        write(
            dir.path(),
            &[(
                "policies.toml",
                b"[[policy]]\nrego = \"limits.rego\"\n[[policy]]\nwasm = \"transfer-check\"\nname = \"bank-rules\"\n",
            )],
        );
        let image = dir.path().join("set.tar");
        let out = teller()
            .args(["package", "--policy-dir"])
            .arg(dir.path())
            .arg("-o")
            .arg(&image)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let server = Server::start(name, &["--from-oci", image.to_str().unwrap()]);
        let got = server.post("/v1/transfer/check", &over).json();
        assert_eq!(got["policy"]["name"], "limits+bank-rules", "{name}: {got}");
        assert_eq!(got["policies"][0]["allow"], false);
        assert_eq!(got["policies"][1]["allow"], true);
        assert_eq!(got["verdict"], "deny");
        assert!(server.stop().success());
    }
}
