//! `scripts/setup` in the states a new machine can be in.
//!
//! The script runs from a copy of the repository's scripts, with a `rustup`,
//! `dpkg-query` and `apt-get` first on PATH that log every call. The fake
//! `rustup` can report targets or components as missing and hands every
//! other call to the real one, so each install command really runs. For a
//! machine with nothing, rustup works in a throwaway `RUSTUP_HOME`, where
//! the toolchain, its targets and components are really installed. The fake
//! `dpkg-query` reports every package missing or installed; the fake
//! `apt-get` only logs system installs and hands the private download of
//! WasmEdge's Debian 13 packages to the real one.

use std::path::{Path, PathBuf};
use std::process::Command;

const FAKE_RUSTUP: &str = r#"#!/bin/sh
[ "$REAL_RUSTUP" -ef "$0" ] && { echo "fake rustup: REAL_RUSTUP is the fake" >&2; exit 99; }
echo "rustup $*" >>"$FAKE_LOG"
case "$*" in
    "target list --installed"*) [ -n "${FAKE_TARGETS+set}" ] && { printf '%s' "$FAKE_TARGETS"; exit 0; } ;;
    "component list --installed"*) [ -n "${FAKE_COMPONENTS+set}" ] && { printf '%s' "$FAKE_COMPONENTS"; exit 0; } ;;
esac
exec "$REAL_RUSTUP" "$@"
"#;

const FAKE_DPKG_QUERY: &str = r#"#!/bin/sh
echo "dpkg-query $*" >>"$FAKE_LOG"
[ "$FAKE_PACKAGES" = installed ] && { printf 'install ok installed'; exit 0; }
exit 1
"#;

const FAKE_APT_GET: &str = r#"#!/bin/sh
case "$*" in
    *Dir::Etc::sourcelist=*) exec /usr/bin/apt-get "$@" ;;
esac
echo "apt-get $*" >>"$FAKE_LOG"
"#;

struct Machine {
    _dir: tempfile::TempDir,
    root: PathBuf,
    log: PathBuf,
    bin: PathBuf,
}

impl Machine {
    fn new() -> Machine {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        std::fs::create_dir_all(root.join("scripts")).unwrap();
        for file in [
            "scripts/setup",
            "scripts/wasmedge-setup",
            "rust-toolchain.toml",
        ] {
            std::fs::copy(repo.join(file), root.join(file)).unwrap();
        }
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        for (name, text) in [
            ("rustup", FAKE_RUSTUP),
            ("dpkg-query", FAKE_DPKG_QUERY),
            ("apt-get", FAKE_APT_GET),
        ] {
            let path = bin.join(name);
            std::fs::write(&path, text).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let log = dir.path().join("calls.log");
        Machine {
            _dir: dir,
            root,
            log,
            bin,
        }
    }

    /// Runs the copied `scripts/setup`; its combined output and the calls the
    /// fakes saw, one a line.
    fn setup(&self, env: &[(&str, &str)]) -> (bool, String, Vec<String>) {
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new("bash");
        cmd.arg(self.root.join("scripts/setup"))
            .env("PATH", path)
            .env("REAL_RUSTUP", real_rustup())
            .env("FAKE_LOG", &self.log);
        for (name, value) in env {
            cmd.env(name, value);
        }
        let out = cmd.output().unwrap();
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let calls = std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        (out.status.success(), output, calls)
    }
}

/// The rustup this test runs under, found on PATH before the fakes.
fn real_rustup() -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("rustup"))
        .find(|p| p.is_file())
        .expect("rustup on PATH")
}

fn toolchain() -> String {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../rust-toolchain.toml"),
    )
    .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("channel = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap()
        .to_string()
}

/// The WasmEdge prefix this machine's own setup made (the tests run after it).
fn installed_prefix() -> String {
    let target =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/wasmedge/lib/libwasmedge.so");
    let lib = std::fs::canonicalize(target).unwrap();
    // PREFIX/usr/lib/x86_64-linux-gnu/libwasmedge.so…
    lib.ancestors().nth(4).unwrap().display().to_string()
}

/// Debian 12 has no WasmEdge package: setup fetches Debian 13's privately.
fn debian_12() -> bool {
    let release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    release.contains("ID=debian") && release.contains("VERSION_ID=\"12\"")
}

fn installs(calls: &[String]) -> Vec<&String> {
    calls
        .iter()
        .filter(|c| {
            c.starts_with("rustup toolchain install")
                || c.starts_with("rustup target add")
                || c.starts_with("rustup component add")
                || c.starts_with("apt-get")
        })
        .collect()
}

#[test]
fn a_machine_with_nothing_installed_gets_every_piece() {
    let machine = Machine::new();
    let empty = tempfile::tempdir().unwrap();
    let prefix = empty.path().join("wasmedge");
    let rustup_home = empty.path().join("rustup");
    let (ok, output, calls) = machine.setup(&[
        ("RUSTUP_HOME", rustup_home.to_str().unwrap()),
        ("FAKE_PACKAGES", "missing"),
        ("TELLER_WASMEDGE_PREFIX", prefix.to_str().unwrap()),
    ]);
    assert!(ok, "setup failed:\n{output}\ncalls: {calls:#?}");
    let t = toolchain();
    let installs = installs(&calls);
    for expected in [
        format!("rustup toolchain install {t} --profile minimal"),
        format!("rustup target add --toolchain {t} wasm32-wasip1"),
        format!("rustup target add --toolchain {t} wasm32-wasip2"),
        format!("rustup component add --toolchain {t} rustfmt"),
        format!("rustup component add --toolchain {t} clippy"),
        "apt-get update -qq".to_string(),
        "apt-get install -y -qq --no-install-recommends containerd protobuf-compiler libseccomp-dev pkg-config curl redis-server haproxy strace".to_string(),
    ] {
        assert!(
            installs.iter().any(|c| **c == expected),
            "no `{expected}` among {installs:#?}\n{output}"
        );
    }
    // WasmEdge from Debian where it has it (on Debian 12, a private prefix
    // of Debian 13's packages); nothing needs libclang since the engine
    // declares WasmEdge's C API itself.
    let wasmedge = "apt-get install -y -qq libwasmedge-dev wasmedge";
    assert_eq!(
        installs.iter().any(|c| **c == wasmedge),
        !debian_12(),
        "{installs:#?}"
    );
    assert!(
        !installs.iter().any(|c| c.contains("libclang")),
        "{installs:#?}"
    );
    // The throwaway toolchain really has every piece now.
    let rustc = rustup_home.join(format!("toolchains/{t}-x86_64-unknown-linux-gnu"));
    for piece in [
        "bin/rustc",
        "bin/cargo-clippy",
        "bin/rustfmt",
        "lib/rustlib/wasm32-wasip1",
        "lib/rustlib/wasm32-wasip2",
    ] {
        assert!(
            rustc.join(piece).exists(),
            "no {piece} in {}\n{output}",
            rustc.display()
        );
    }
    // Each stage said what it was doing.
    for line in [
        "setup: installing Rust toolchain",
        "setup: adding Rust target wasm32-wasip2",
        "setup: adding Rust component clippy",
        "setup: installing Debian packages",
    ] {
        assert!(output.contains(line), "no `{line}` in:\n{output}");
    }
    // Debian 12 takes WasmEdge from a private prefix, not from apt.
    assert_eq!(
        output.contains("wasmedge-setup: installing Debian packages"),
        !debian_12(),
        "{output}"
    );
    if debian_12() {
        // WasmEdge was really fetched into the empty prefix.
        assert!(
            output.contains("wasmedge-setup: fetching WasmEdge 0.14.1"),
            "{output}"
        );
        assert!(prefix.join(".complete").is_file(), "{output}");
    }
    assert!(
        machine
            .root
            .join("target/wasmedge/lib/libwasmedge.so")
            .exists(),
        "{output}"
    );
    assert!(output.contains("WasmEdge 0.14.1 ready"), "{output}");
}

#[test]
fn only_the_missing_target_is_added() {
    let machine = Machine::new();
    let host = "x86_64-unknown-linux-gnu";
    let prefix = installed_prefix();
    let (ok, output, calls) = machine.setup(&[
        ("FAKE_TARGETS", &format!("{host}\nwasm32-wasip1\n")),
        (
            "FAKE_COMPONENTS",
            &format!("cargo-{host}\nclippy-{host}\nrustfmt-{host}\n"),
        ),
        ("FAKE_PACKAGES", "installed"),
        ("TELLER_WASMEDGE_PREFIX", &prefix),
    ]);
    assert!(ok, "setup failed:\n{output}\ncalls: {calls:#?}");
    assert_eq!(
        installs(&calls),
        [&format!(
            "rustup target add --toolchain {} wasm32-wasip2",
            toolchain()
        )],
        "{output}"
    );
}

#[test]
fn a_ready_machine_installs_nothing() {
    let machine = Machine::new();
    let (ok, output, calls) = machine.setup(&[
        ("FAKE_PACKAGES", "installed"),
        ("TELLER_WASMEDGE_PREFIX", &installed_prefix()),
    ]);
    assert!(ok, "setup failed:\n{output}\ncalls: {calls:#?}");
    assert!(installs(&calls).is_empty(), "{calls:#?}\n{output}");
    // It really asked: the real rustup answered the lists.
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("rustup target list --installed"))
    );
    assert!(calls.iter().any(|c| c.starts_with("dpkg-query")));
}
