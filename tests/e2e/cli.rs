//! The command line explains itself and refuses what it cannot do.

use crate::support::teller;

#[test]
fn help_explains_every_command() {
    let out = teller().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for command in ["serve", "check", "audit"] {
        assert!(help.contains(command), "{help}");
    }
    let out = teller().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--policy-dir",
        "--config",
        "--audit-dir",
        "--audit-key-file",
        "--audit-segment-bytes",
        "--engine",
        "TELLER_LISTEN",
    ] {
        assert!(help.contains(flag), "{flag} missing from: {help}");
    }
    // `--engine` lists the engines this build has, each described.
    for engine in crate::support::ENGINES {
        assert!(help.contains(&format!("{engine}: ")), "{engine}: {help}");
    }
    // The benchmarks are a binary of their own.
    assert!(
        !String::from_utf8_lossy(&teller().arg("--help").output().unwrap().stdout)
            .contains("bench")
    );
    let out = crate::support::teller_bench()
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for command in ["cold-start", "call", "http", "audit"] {
        assert!(help.contains(command), "{help}");
    }
}

#[test]
fn unknown_engine_is_refused() {
    let out = teller().args(["check", "--engine", "v8"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("v8"));
}

/// CI sets TELLER_REQUIRE_WASMEDGE: a build without the WasmEdge engine
/// must not pass there as if it had been tested.
#[test]
fn wasmedge_is_under_test_when_required() {
    eprintln!("engines under test: {}", crate::support::ENGINES.join(", "));
    if std::env::var_os("TELLER_REQUIRE_WASMEDGE").is_some() {
        assert!(
            crate::support::ENGINES.contains(&"wasmedge"),
            "TELLER_REQUIRE_WASMEDGE is set but this build has no WasmEdge engine"
        );
    }
}

/// `teller compile --engine ENGINE --cache-dir CACHE`; its stderr.
fn compile(engine: &str, cache: &std::path::Path) -> String {
    let out = teller()
        .args(["compile", "--engine", engine, "--cache-dir"])
        .arg(cache)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The cache entries of `engine`'s guests, sorted. WasmEdge also caches the
/// module that keeps its fault handlers installed; the guests are what the
/// tests check.
fn guest_entries(cache: &std::path::Path, engine: &str) -> Vec<std::path::PathBuf> {
    let mut entries: Vec<_> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.starts_with(engine) && !name.contains("fault-handlers")
        })
        .collect();
    entries.sort();
    entries
}

#[test]
fn compile_fills_the_cache_and_damaged_entries_are_rebuilt() {
    for engine in crate::support::ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let stderr = compile(engine, &cache);
        assert!(
            stderr.contains("compiling transfer-check") && stderr.contains("compiling audit"),
            "{stderr}"
        );
        let entries = guest_entries(&cache, engine);
        assert_eq!(entries.len(), 2, "{engine}: {entries:?}");
        let originals: Vec<Vec<u8>> = entries.iter().map(|p| std::fs::read(p).unwrap()).collect();

        // Truncate one entry, flip a bit in the middle of the other.
        std::fs::write(&entries[0], &originals[0][..originals[0].len() / 2]).unwrap();
        let mut flipped = originals[1].clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x10;
        std::fs::write(&entries[1], &flipped).unwrap();

        let stderr = compile(engine, &cache);
        assert_eq!(
            stderr.matches("is corrupted; rebuilding it").count(),
            2,
            "{engine}: {stderr}"
        );
        for (path, original) in entries.iter().zip(&originals) {
            let rebuilt = std::fs::read(path).unwrap();
            assert_eq!(
                rebuilt.len(),
                original.len(),
                "{engine}: {path:?} not rebuilt"
            );
        }
        let mut check = teller()
            .args(["check", "--engine", engine, "--cache-dir"])
            .arg(&cache)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        check
            .stdin
            .take()
            .unwrap()
            .write_all(crate::support::EXAMPLE.as_bytes())
            .unwrap();
        let out = check.wait_with_output().unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("\"verdict\":\"allow\""),
            "{out:?}"
        );
    }
}

/// A WasmEdge build opens libwasmedge (and the LLVM it carries) only when
/// it makes a WasmEdge engine: a wasmtime server never maps it, a WasmEdge
/// server does, and both decide.
#[cfg(feature = "wasmedge")]
#[test]
fn only_a_wasmedge_engine_loads_libwasmedge() {
    use crate::support::{EXAMPLE, Server};
    let mapped = |server: &Server| {
        std::fs::read_to_string(format!("/proc/{}/maps", server.pid()))
            .unwrap()
            .contains("libwasmedge")
    };
    for (engine, loads) in [("wasmtime", false), ("wasmedge", true)] {
        let server = Server::start(engine, &[]);
        let answer = server.post("/v1/transfer/check", EXAMPLE);
        assert_eq!(answer.status, 200, "{engine}: {}", answer.body);
        assert_eq!(mapped(&server), loads, "{engine}");
        server.stop();
    }
}

/// A WasmEdge `teller check` opens libwasmedge on another thread while it
/// reads its input and policies (`open_early`). One that fails before it
/// makes its engine ends with its own error and status, every time, with
/// that thread still opening the library.
#[cfg(feature = "wasmedge")]
#[test]
fn a_check_that_fails_while_the_library_opens_ends_with_its_own_error() {
    let missing = tempfile::tempdir().unwrap().path().join("policies");
    for _ in 0..5 {
        let out = teller()
            .args(["check", "--engine", "wasmedge", "--policy-dir"])
            .arg(&missing)
            .arg("-")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{:?}: {stderr}", out.status);
        assert!(stderr.contains("policy_unreadable"), "{stderr}");
    }
}

/// Where libwasmedge cannot be opened (here an empty file over it, in a
/// mount namespace of the test's own), a WasmEdge check ends with
/// `engine_init`, the library's path and what to install, on a developer's
/// machine or a node; wasmtime checks and `--version` go on, since they
/// never open it.
#[cfg(feature = "wasmedge")]
#[test]
fn without_libwasmedge_a_wasmedge_check_says_what_to_install_and_wasmtime_decides() {
    use crate::support::{EXAMPLE, cache_dir, output_with_stdin};
    let library = env!("TELLER_WASMEDGE_LIBRARY");
    let hidden = std::fs::canonicalize(library).unwrap();
    let teller_without_library = |args: &[&str]| {
        let mut cmd = std::process::Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount --bind /dev/null "$0" && exec "$@""#)
            .arg(&hidden)
            .arg(env!("CARGO_BIN_EXE_teller"))
            .args(args)
            .env("TELLER_CACHE_DIR", cache_dir());
        output_with_stdin(cmd, EXAMPLE.as_bytes())
    };

    let out = teller_without_library(&["check", "--engine", "wasmedge", "-"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let error: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(error["error"]["code"], "engine_init", "{stdout}");
    let message = error["error"]["message"].as_str().unwrap();
    for part in [library, "scripts/wasmedge-setup", "libwasmedge0"] {
        assert!(message.contains(part), "{part:?} not in {message}");
    }

    let out = teller_without_library(&["check", "--engine", "wasmtime", "-"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"verdict\":\"allow\""),
        "{out:?}"
    );
    let out = teller_without_library(&["--version"]);
    assert!(out.status.success(), "{out:?}");
}

/// `teller compile` with `--cache-key-file`: a second holder of the key
/// loads the entries (they are not rewritten), another key refuses and
/// rebuilds them, and a key too short is refused with a clear error.
#[test]
fn a_sealed_cache_is_shared_only_by_holders_of_its_key() {
    use std::os::unix::fs::MetadataExt;
    for engine in crate::support::ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let key = |name: &str, len: usize, byte: u8| {
            let path = dir.path().join(name);
            std::fs::write(&path, vec![byte; len]).unwrap();
            path
        };
        let (ours, theirs, short) = (
            key("ours", 32, 1),
            key("theirs", 48, 2),
            key("short", 16, 3),
        );
        let run = |key: &std::path::Path| {
            teller()
                .args(["compile", "--engine", engine, "--cache-dir"])
                .arg(&cache)
                .arg("--cache-key-file")
                .arg(key)
                .output()
                .unwrap()
        };
        // Each guest entry: its path, inode and change time (a rewrite
        // changes them) and its first 32 bytes (the seal).
        type Entry = (std::path::PathBuf, (u64, i64, i64), Vec<u8>);
        let guests = || -> Vec<Entry> {
            guest_entries(&cache, engine)
                .into_iter()
                .map(|p| {
                    let meta = std::fs::metadata(&p).unwrap();
                    let seal = std::fs::read(&p).unwrap()[..32].to_vec();
                    (p, (meta.ino(), meta.ctime(), meta.ctime_nsec()), seal)
                })
                .collect()
        };
        assert!(run(&ours).status.success());
        let first = guests();
        assert_eq!(first.len(), 2, "{engine}: {first:?}");

        let again = run(&ours);
        assert!(again.status.success());
        assert_eq!(
            guests(),
            first,
            "{engine}: the same key must load, not rewrite"
        );

        let other = run(&theirs);
        assert!(other.status.success());
        let stderr = String::from_utf8_lossy(&other.stderr);
        assert!(
            stderr.matches("not sealed with this cache's key").count() >= 2,
            "{engine}: {stderr}"
        );
        for (now, before) in guests().iter().zip(&first) {
            assert_ne!(
                now.2, before.2,
                "{engine}: another key must reseal {:?}",
                now.0
            );
        }

        let refused = run(&short);
        assert_eq!(refused.status.code(), Some(2), "{engine}: {refused:?}");
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("at least 32"),
            "{engine}: {refused:?}"
        );
    }
}
