//! The README's "Write your own policy", step by step: `teller new`, an
//! edit, `teller test`, `teller package`, `teller serve`, a decision; in
//! Rego and in Rust.

use crate::support::{ENGINES, EXAMPLE, Server, teller};
use std::path::Path;
use std::process::Output;

fn run(args: &[&str], dir: &Path) -> Output {
    teller().args(args).current_dir(dir).output().unwrap()
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The case the README adds after lowering the limit.
const NEW_CASE: &str = r#"
[[case]]
name = "the README example is now over the limit"
expect = { verdict = "deny", reasons = ["over_limit"] }
[case.input]
action = "transfer"
amount = 250000
user = { role = "authorized" }
"#;

#[test]
fn a_rego_policy_from_teller_new_to_a_decision() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    ok(&run(&["new", "policy", "limits", "--lang", "rego"], dir));
    // As generated, its tests pass on every engine.
    let out = ok(&run(&["test", "limits"], dir));
    assert!(out.contains("PASS: 8/8 cases passed"), "{out}");

    // Edit: a lower limit, and a case for it.
    let rego = dir.join("limits/limits.rego");
    let text = std::fs::read_to_string(&rego).unwrap();
    std::fs::write(&rego, text.replace("limit := 500000", "limit := 200000")).unwrap();
    let tests = dir.join("limits/limits.test.toml");
    let mut cases = std::fs::read_to_string(&tests).unwrap();
    // The first case asked for 250000: now over the limit, so it fails,
    // and `teller test` says how.
    let out = run(&["test", "limits"], dir);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "\"a transfer within the limit is allowed\" on wasmtime: verdict: want \"allow\", got \"deny\""
        ),
        "{stdout}"
    );
    assert!(stdout.contains("FAIL: 6/8 cases passed"), "{stdout}");
    cases = cases.replacen("amount = 250000", "amount = 150000", 1);
    cases.push_str(NEW_CASE);
    std::fs::write(&tests, cases).unwrap();
    let out = ok(&run(&["test", "limits"], dir));
    assert!(out.contains("PASS: 10/10 cases passed"), "{out}");

    // Package, serve from the image, decide.
    ok(&run(
        &["package", "--policy-dir", "limits", "-o", "limits.tar"],
        dir,
    ));
    for engine in ENGINES {
        let server = Server::start(
            engine,
            &["--from-oci", dir.join("limits.tar").to_str().unwrap()],
        );
        let r = server.post("/v1/transfer/check", EXAMPLE).json();
        assert_eq!(r["verdict"], "deny", "{engine}: {r}");
        assert_eq!(r["policy"]["name"], "limits");
        assert_eq!(r["policy"]["version"], "0.1.0");
        assert_eq!(r["reasons"][0]["code"], "over_limit");
        let small = EXAMPLE.replace("250000", "150000");
        let r = server.post("/v1/transfer/check", &small).json();
        assert_eq!(r["verdict"], "allow", "{engine}: {r}");
        assert!(server.stop().success());
    }
}

#[test]
fn a_rust_policy_from_teller_new_to_a_decision() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    ok(&run(
        &["new", "policy", "big-spender", "--lang", "rust"],
        dir,
    ));
    // Edit: a lower limit.
    let lib = dir.join("big-spender/src/lib.rs");
    let text = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(
        &lib,
        text.replace("const LIMIT: u64 = 500_000;", "const LIMIT: u64 = 200_000;"),
    )
    .unwrap();
    let tests = dir.join("big-spender/policy/big-spender.test.toml");
    let cases =
        std::fs::read_to_string(&tests)
            .unwrap()
            .replacen("amount = 250000", "amount = 150000", 1)
            + NEW_CASE;
    std::fs::write(&tests, cases).unwrap();
    // The one build command, for both guest forms. Its own target
    // directory: the crate is a workspace of its own.
    let build = std::process::Command::new(dir.join("big-spender/build.sh"))
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .unwrap();
    ok(&build);
    let out = ok(&run(&["test", "big-spender/policy"], dir));
    assert!(out.contains("PASS: 10/10 cases passed"), "{out}");
    for engine in ENGINES {
        let server = Server::start(
            engine,
            &[
                "--policy-dir",
                dir.join("big-spender/policy").to_str().unwrap(),
            ],
        );
        let r = server.post("/v1/transfer/check", EXAMPLE).json();
        assert_eq!(r["verdict"], "deny", "{engine}: {r}");
        assert_eq!(r["policy"]["name"], "big-spender");
        assert_eq!(r["reasons"][0]["code"], "over_limit");
        assert!(server.stop().success());
    }
}

#[test]
fn teller_new_and_test_refuse_bad_input() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let out = run(&["new", "policy", "Bad Name", "--lang", "rego"], dir);
    assert_eq!(out.status.code(), Some(2));
    ok(&run(&["new", "policy", "p", "--lang", "rego"], dir));
    let out = run(&["new", "policy", "p", "--lang", "rego"], dir);
    assert_eq!(out.status.code(), Some(2), "an existing directory is kept");
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists already"));
    std::fs::write(dir.join("p/p.test.toml"), "[[case]]\nname = 1\n").unwrap();
    let out = run(&["test", "p"], dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("p.test.toml"));
    let out = run(&["new", "policy", "default", "--lang", "rego"], dir);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a Rego keyword is no package name"
    );
    std::fs::write(
        dir.join("p/p.test.toml"),
        "[[case]]\nname = \"vacuous\"\nexpect = {}\ninput = { action = \"transfer\", amount = 1, user = { role = \"r\" } }\n",
    )
    .unwrap();
    let out = run(&["test", "p"], dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("could never fail"));
    std::fs::create_dir(dir.join("empty")).unwrap();
    let out = run(&["test", "empty"], dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no *.test.toml"));
}
