//! The binary containerd runs: it names itself as containerd expects.
//! (This test also makes `cargo test` build the binary, which the
//! end-to-end tests in `tests/e2e/shim.rs` hand to a real containerd.)

#![allow(clippy::unwrap_used)]

#[test]
fn the_shim_reports_its_runtime_and_version() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_containerd-shim-wasmedge-v1"))
        .arg("-v")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Runtime: wasmedge"), "{text}");
    assert!(
        text.contains(&format!("Version: {}", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
}
