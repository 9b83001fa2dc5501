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
        "--audit-log",
        "--engine",
        "TELLER_LISTEN",
    ] {
        assert!(help.contains(flag), "{flag} missing from: {help}");
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
