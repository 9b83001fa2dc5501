//! Every `serve` flag from a settings file too: flag > TELLER_* variable >
//! file > default, and `--print-config` says which, secrets redacted.

use crate::support::{ENGINES, EXAMPLE, Server, teller};

fn print_config(
    settings: &std::path::Path,
    env: &[(&str, &str)],
    flags: &[&str],
) -> (i32, String, String) {
    let mut cmd = teller();
    cmd.args(["serve", "--print-config", "--settings"])
        .arg(settings)
        .args(flags);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn line<'a>(printed: &'a str, key: &str) -> &'a str {
    printed
        .lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in {printed}"))
}

#[test]
fn settings_file_environment_and_flags_in_that_order() {
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("teller.toml");
    std::fs::write(
        &settings,
        "listen = \"127.0.0.1:9999\"\nguest-deadline-ms = 250\nno-cache = true\nmax-queue = 7\nmax-concurrency = 5\n",
    )
    .unwrap();
    let secret = "k1:c2VjcmV0LWtleS1ieXRlcy10aGF0LW11c3Qtbm90LXNob3c=";
    let (code, out, err) = print_config(
        &settings,
        &[
            ("TELLER_MAX_QUEUE", "9"),
            ("TELLER_AUDIT_KEY", secret),
            ("TELLER_STATE", "redis://:hunter2@127.0.0.1:6379/0"),
        ],
        &["--guest-deadline-ms", "300"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        line(&out, "listen").contains("\"127.0.0.1:9999\"")
            && line(&out, "listen").ends_with("# settings file"),
        "{out}"
    );
    assert!(
        line(&out, "guest-deadline-ms").starts_with("guest-deadline-ms = 300")
            && line(&out, "guest-deadline-ms").ends_with("# flag"),
        "{out}"
    );
    assert!(
        line(&out, "max-queue").starts_with("max-queue = 9")
            && line(&out, "max-queue").ends_with("# environment"),
        "{out}"
    );
    assert!(
        line(&out, "no-cache").starts_with("no-cache = true"),
        "{out}"
    );
    assert!(
        line(&out, "guest-memory-mib").ends_with("# default"),
        "{out}"
    );
    assert!(out.contains("TELLER_AUDIT_KEY (redacted)"), "{out}");
    assert!(
        line(&out, "state").contains("redis://***@127.0.0.1:6379/0") && !out.contains("hunter2"),
        "the Redis password was printed: {out}"
    );
    assert!(
        !out.contains("c2VjcmV0"),
        "the audit key was printed: {out}"
    );

    // What --print-config prints is itself a settings file.
    let again = dir.path().join("printed.toml");
    std::fs::write(&again, &out).unwrap();
    let (code, reprinted, err) = print_config(&again, &[], &[]);
    assert_eq!(code, 0, "{err}");
    for key in [
        "listen",
        "guest-deadline-ms",
        "max-queue",
        "no-cache",
        "max-concurrency",
    ] {
        let value = |text: &str| {
            line(text, key)
                .split('#')
                .next()
                .unwrap()
                .trim()
                .to_string()
        };
        assert_eq!(value(&reprinted), value(&out), "{key}");
    }

    // Mistakes name the file and the key.
    for (text, says) in [
        ("lisen = \"x\"\n", "unknown setting `lisen`"),
        ("max-queue = \"many\"\n", "max-queue"),
        ("no-cache = 3\n", "`no-cache` has the wrong type"),
        ("print-config = true\n", "unknown setting `print-config`"),
        ("[table]\n", "unknown setting `table`"),
    ] {
        std::fs::write(&settings, text).unwrap();
        let (code, _, err) = print_config(&settings, &[], &[]);
        assert_eq!(code, 2, "{text}: {err}");
        assert!(err.contains(says), "{text}: {err}");
        assert!(err.contains("teller.toml"), "{text}: {err}");
    }
}

#[test]
fn serve_runs_with_its_settings_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit");
    let settings = dir.path().join("teller.toml");
    std::fs::write(
        &settings,
        format!(
            "audit-dir = {:?}\nguest-deadline-ms = 200\n",
            log.to_str().unwrap()
        ),
    )
    .unwrap();
    let server = Server::start(ENGINES[0], &["--settings", settings.to_str().unwrap()]);
    let r = server.post("/v1/transfer/check", EXAMPLE).json();
    assert_eq!(
        r["audit"]["seq"], 1,
        "the audit log came from the settings file: {r}"
    );
    assert_eq!(server.stop().code(), Some(0));
}
