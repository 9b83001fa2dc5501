//! Rego policies that are broken, or served in unusual ways: clear errors
//! at start-up and at run time, a rejected reload, a directory of symlinks.

use crate::rego::{LIMITS_DATA, LIMITS_REGO, install_guest, write};
use crate::support::{ENGINES, EXAMPLE, Server, teller};
use teller_engine::artifact::PolicySource;
use teller_policy_artifacts::{AUDIT, BANK_REGO, TRANSFER_CHECK};

/// Each kind of broken policy: a clear error at start-up naming the file,
/// at run time a 500 that says why, and the server goes on serving.
#[test]
fn bad_rego_policies_are_clear_errors() {
    let start_fails = |files: &[(&str, &[u8])], expect: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), files);
        for name in ENGINES {
            let out = teller()
                .args(["check", "--engine", name, "--policy-dir"])
                .arg(dir.path())
                .arg("-")
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{name}: {expect:?}");
            for e in expect {
                assert!(stderr.contains(e), "{name}: {e:?} not in {stderr}");
            }
        }
    };
    start_fails(
        &[(
            "broken.rego",
            b"package broken\n\nallow if {\n  input.amount >\n}\n",
        )],
        &["broken.rego:5:1", "policy_invalid"],
    );
    start_fails(
        &[("none.rego", b"package none\nimport rego.v1\ndeny if true\n")],
        &["none.rego", "no `allow` rule"],
    );
    start_fails(
        &[
            ("x.rego", b"package x\nimport rego.v1\nallow := true\n"),
            ("data.json", b"[1]"),
        ],
        &["must be a JSON object"],
    );
    start_fails(
        &[("policies.toml", b"[[policy]]\nrego = \"missing.rego\"\n")],
        &["holds no missing.rego"],
    );
    start_fails(
        &[
            ("a.rego", b"package a\nimport rego.v1\nallow := true\n"),
            (
                "policies.toml",
                b"[[policy]]\nrego = \"a.rego\"\n[[policy]]\nrego = \"a.rego\"\n",
            ),
        ],
        &["two policies named \"a\""],
    );
    // Two compiled guests that call themselves alike, without a manifest
    // to name them apart.
    start_fails(
        &[
            ("a.component.wasm", TRANSFER_CHECK.component),
            ("a.module.wasm", TRANSFER_CHECK.module),
            ("b.component.wasm", TRANSFER_CHECK.component),
            ("b.module.wasm", TRANSFER_CHECK.module),
        ],
        &["two policies named \"transfer-check\""],
    );
    start_fails(
        &[(
            "policies.toml",
            b"[[policy]]\nrego = \"a.rego\"\nwasm = \"b\"\n",
        )],
        &["exactly one of `rego` and `wasm`"],
    );

    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            ("policies.toml", b"[[policy]]\nrego = \"odd.rego\"\n"),
            (
                "odd.rego",
                br#"package odd
import rego.v1
allow := "yes" if input.action == "string"
allow := true if input.action == "transfer"
allow := 1 / 0 if input.action == "divide"
allow if {
	input.action == "explode"
	count(numbers.range(1, 100000000)) > 0
}
"#,
            ),
        ],
    );
    for name in ENGINES {
        let server = Server::start(name, &["--policy-dir", dir.path().to_str().unwrap()]);
        let ask = |action: &str| {
            server.post(
                "/v1/transfer/check",
                &EXAMPLE.replace("\"transfer\"", &format!("{action:?}")),
            )
        };
        let r = ask("string");
        assert_eq!(r.status, 500, "{name}: {}", r.body);
        assert_eq!(r.json()["error"]["code"], "guest_trap");
        assert!(
            r.body.contains("must be a boolean, not a string"),
            "{name}: {}",
            r.body
        );
        let r = ask("divide");
        assert_eq!(r.status, 500, "{name}: {}", r.body);
        assert_eq!(
            r.json()["error"]["code"],
            "guest_trap",
            "{name}: {}",
            r.body
        );
        let r = ask("explode");
        assert_eq!(r.status, 500, "{name}: {}", r.body);
        let code = r.json()["error"]["code"].as_str().unwrap().to_string();
        assert!(
            code == "guest_timeout" || code == "guest_memory_limit",
            "{name}: {}",
            r.body
        );
        let r = ask("transfer");
        assert_eq!(r.status, 200, "{name}: still serving: {}", r.body);
        assert_eq!(r.json()["verdict"], "allow");
        assert!(server.stop().success());
    }
}

/// A reload to a policy that does not parse is rejected with its file, line
/// and column; the last good policy keeps serving.
#[test]
fn a_reload_rejects_rego_that_does_not_parse() {
    for name in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &[("bank.rego", BANK_REGO.as_bytes())]);
        install_guest(dir.path(), "audit", AUDIT);
        let (server, logs) =
            Server::start_logged(name, &["--policy-dir", dir.path().to_str().unwrap()]);
        assert_eq!(
            server.post("/v1/transfer/check", EXAMPLE).json()["policy"]["name"],
            "bank"
        );
        write(
            dir.path(),
            &[(
                "bank.rego",
                b"package bank\n\nallow {\n  input.amount <\n}\n",
            )],
        );
        server.signal("HUP");
        let started = std::time::Instant::now();
        let line = loop {
            let line = logs
                .recv_timeout(std::time::Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("{name}: no log line about the reload"));
            if line.contains("reload") && line.contains("bank.rego:") {
                break line;
            }
            assert!(
                started.elapsed().as_secs() < 60,
                "{name}: no rejected reload"
            );
        };
        assert!(line.contains("bank.rego:3:7"), "{name}: {line}");
        let r = server.post("/v1/transfer/check", EXAMPLE);
        assert_eq!(r.status, 200, "{name}");
        assert_eq!(r.json()["policy"]["name"], "bank");
        assert!(server.stop().success());
    }
}

/// A mounted ConfigMap's files are symlinks into its current version; a
/// policy directory of links serves like one of files.
#[test]
fn a_directory_of_symlinks_serves_like_one_of_files() {
    let store = tempfile::tempdir().unwrap();
    install_guest(store.path(), "transfer-check", TRANSFER_CHECK);
    write(
        store.path(),
        &[
            ("limits.rego", LIMITS_REGO.as_bytes()),
            ("data.json", LIMITS_DATA.as_bytes()),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "transfer-check.component.wasm",
        "transfer-check.module.wasm",
        "limits.rego",
        "data.json",
    ] {
        std::os::unix::fs::symlink(store.path().join(name), dir.path().join(name)).unwrap();
    }
    let names: Vec<String> = PolicySource::Dir(dir.path().to_path_buf())
        .transfer_checks()
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["transfer-check", "limits"]);
    for name in ENGINES {
        let server = Server::start(name, &["--policy-dir", dir.path().to_str().unwrap()]);
        let r = server.post("/v1/transfer/check", EXAMPLE).json();
        assert_eq!(r["policy"]["name"], "transfer-check+limits", "{name}: {r}");
        assert!(server.stop().success());
    }
}
