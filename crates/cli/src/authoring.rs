//! Writing policies: `teller new policy` (a starter project that passes its
//! own tests) and `teller test` (table-driven cases against a policy
//! directory, on every engine of the build, as `opa test` does for Rego).

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use teller_contract::{Error, ErrorCode, decode_transfer};
use teller_engine::artifact::PolicySource;
use teller_engine::{GuestLimits, Workload};
use teller_server::config::Config;
use teller_server::policy_set::PolicySet;

/// The language of a new policy.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Lang {
    /// A `.rego` file, run by teller's Rego guest.
    Rego,
    /// A Rust crate built with wit-bindgen to both guest forms.
    Rust,
}

/// The suffix of a test file.
pub const TEST_SUFFIX: &str = ".test.toml";

/// Writes a new policy project `name` in `parent`.
pub fn new_policy(name: &str, lang: Lang, parent: &Path) -> Result<u8, Error> {
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        return Err(Error::bad_request(
            ErrorCode::InvalidInput,
            format!("policy name {name:?}: use a-z, 0-9, - and _, starting with a letter"),
        ));
    }
    // The Rego package is the name: it must not be a Rego keyword.
    const KEYWORDS: [&str; 16] = [
        "as", "contains", "default", "else", "every", "false", "if", "import", "in", "not", "null",
        "package", "some", "true", "with", "input",
    ];
    if KEYWORDS.contains(&name.replace('-', "_").as_str()) || name == "data" {
        return Err(Error::bad_request(
            ErrorCode::InvalidInput,
            format!("policy name {name:?} is a Rego keyword; pick another"),
        ));
    }
    let root = parent.join(name);
    if root.exists() {
        return Err(Error::bad_request(
            ErrorCode::InvalidInput,
            format!(
                "{} exists already; teller new writes a new directory",
                root.display()
            ),
        ));
    }
    let ident = name.replace('-', "_");
    let files: Vec<(PathBuf, String)> = match lang {
        Lang::Rego => vec![
            (
                root.join(format!("{name}.rego")),
                REGO_TEMPLATE.replace("NAME", &ident),
            ),
            (
                root.join(format!("{name}{TEST_SUFFIX}")),
                TESTS_TEMPLATE.replace("NAME", name),
            ),
        ],
        Lang::Rust => vec![
            (
                root.join("Cargo.toml"),
                CARGO_TEMPLATE.replace("NAME", name),
            ),
            (root.join("src/lib.rs"), RUST_TEMPLATE.to_string()),
            (
                root.join("wit/bank-policy.wit"),
                teller_contract::WIT.to_string(),
            ),
            (
                root.join("build.sh"),
                BUILD_TEMPLATE.replace("LIB", &ident).replace("NAME", name),
            ),
            (
                root.join(format!("policy/{name}{TEST_SUFFIX}")),
                TESTS_TEMPLATE.replace("NAME", name),
            ),
        ],
    };
    for (path, text) in &files {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| unwritable(dir, &e))?;
        }
        std::fs::write(path, text).map_err(|e| unwritable(path, &e))?;
    }
    #[cfg(unix)]
    if let Lang::Rust = lang {
        use std::os::unix::fs::PermissionsExt;
        let script = root.join("build.sh");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| unwritable(&script, &e))?;
    }
    for (path, _) in &files {
        println!("wrote {}", path.display());
    }
    let dir = root.display();
    match lang {
        Lang::Rego => println!(
            "next: edit {dir}/{name}.rego, then `teller test {dir}` and `teller serve --policy-dir {dir}`"
        ),
        Lang::Rust => println!(
            "next: edit {dir}/src/lib.rs, build with `{dir}/build.sh` (both guest forms into {dir}/policy), \
             then `teller test {dir}/policy` and `teller serve --policy-dir {dir}/policy`"
        ),
    }
    Ok(0)
}

fn unwritable(path: &Path, e: &std::io::Error) -> Error {
    Error::bad_request(
        ErrorCode::InvalidInput,
        format!("cannot write {}: {e}", path.display()),
    )
}

/// A test file: cases run against the policy directory it sits in.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default)]
    case: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    /// The transfer document.
    input: toml::Value,
    expect: Expect,
}

/// What a case expects; what it leaves out is not checked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    verdict: Option<String>,
    allow: Option<bool>,
    deny: Option<bool>,
    /// Reason codes, in any order.
    reasons: Option<Vec<String>>,
    /// An error code instead of a decision (`invalid_field`, ...).
    error: Option<String>,
}

/// `teller test PATH...`: every case of every test file, on each engine.
pub fn test(
    paths: &[PathBuf],
    engines: &[String],
    config: Option<&Path>,
    cache: teller_engine::cache::ArtifactCache,
) -> Result<u8, Error> {
    let config = match config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    }
    .policy_config();
    let mut suites = Vec::new();
    for path in paths {
        suites.extend(test_files(path)?);
    }
    let (mut passed, mut failed) = (0usize, 0usize);
    for name in engines {
        let engine = teller_engine::by_name(
            name,
            cache.clone(),
            Workload::Once,
            GuestLimits::default(),
            teller_engine::state::GuestState::none(),
        )?;
        for (dir, files) in &suites {
            let set = PolicySet::load(engine.as_ref(), &PolicySource::Dir(dir.clone()))?;
            for file in files {
                for case in &read_cases(file)? {
                    let problems = run_case(&set, &config, case);
                    if problems.is_empty() {
                        passed += 1;
                    } else {
                        failed += 1;
                        println!(
                            "FAIL {}: {:?} on {name}: {}",
                            file.display(),
                            case.name,
                            problems.join("; ")
                        );
                    }
                }
            }
        }
    }
    let total = passed + failed;
    if total == 0 {
        return Err(Error::bad_request(
            ErrorCode::InvalidInput,
            "the test files hold no [[case]]",
        ));
    }
    println!(
        "{}: {passed}/{total} cases passed on {}",
        if failed == 0 { "PASS" } else { "FAIL" },
        engines.join(", ")
    );
    Ok(u8::from(failed > 0))
}

/// The policy directory and test files `path` names: a test file, or a
/// directory holding some.
fn test_files(path: &Path) -> Result<Vec<(PathBuf, Vec<PathBuf>)>, Error> {
    let unreadable = |e: std::io::Error| {
        Error::bad_request(
            ErrorCode::InputUnreadable,
            format!("cannot read {}: {e}", path.display()),
        )
    };
    if path.is_file() {
        let dir = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."));
        return Ok(vec![(dir.to_path_buf(), vec![path.to_path_buf()])]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(unreadable)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(TEST_SUFFIX))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::bad_request(
            ErrorCode::InputUnreadable,
            format!("{} holds no *{TEST_SUFFIX} file", path.display()),
        ));
    }
    Ok(vec![(path.to_path_buf(), files)])
}

fn read_cases(file: &Path) -> Result<Vec<Case>, Error> {
    let cases = parse_cases(file)?;
    if let Some(case) = cases.iter().find(|c| c.expect.is_empty()) {
        return Err(Error::bad_request(
            ErrorCode::InvalidInput,
            format!(
                "{}: case {:?} expects nothing, so it could never fail",
                file.display(),
                case.name
            ),
        ));
    }
    Ok(cases)
}

impl Expect {
    fn is_empty(&self) -> bool {
        self.verdict.is_none()
            && self.allow.is_none()
            && self.deny.is_none()
            && self.reasons.is_none()
            && self.error.is_none()
    }
}

fn parse_cases(file: &Path) -> Result<Vec<Case>, Error> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        Error::bad_request(
            ErrorCode::InputUnreadable,
            format!("cannot read {}: {e}", file.display()),
        )
    })?;
    let tests: TestFile = toml::from_str(&text).map_err(|e| {
        Error::bad_request(
            ErrorCode::InvalidInput,
            format!("{}: {}", file.display(), e.to_string().trim()),
        )
    })?;
    Ok(tests.case)
}

/// What differs from the expectation; empty when the case passes.
fn run_case(set: &PolicySet, config: &teller_contract::PolicyConfig, case: &Case) -> Vec<String> {
    let mut problems = Vec::new();
    let answer = serde_json::to_vec(&case.input)
        .map_err(|e| Error::bad_request(ErrorCode::InvalidInput, e.to_string()))
        .and_then(|doc| decode_transfer(&doc))
        .and_then(|request| set.decide(config, &request));
    let want = &case.expect;
    match (answer, &want.error) {
        (Err(e), Some(code)) if e.code.as_str() == code => {}
        (Err(e), _) => problems.push(format!("error {}: {}", e.code.as_str(), e.message)),
        (Ok(d), Some(code)) => problems.push(format!(
            "want error {code}, got verdict {:?}",
            d.decision.verdict.as_str()
        )),
        (Ok(d), None) => {
            let d = d.decision;
            let mut check = |what: &str, want: String, got: String| {
                if want != got {
                    problems.push(format!("{what}: want {want}, got {got}"));
                }
            };
            if let Some(v) = &want.verdict {
                check(
                    "verdict",
                    format!("{v:?}"),
                    format!("{:?}", d.verdict.as_str()),
                );
            }
            if let Some(a) = want.allow {
                check("allow", a.to_string(), d.allow.to_string());
            }
            if let Some(a) = want.deny {
                check("deny", a.to_string(), d.deny.to_string());
            }
            if let Some(codes) = &want.reasons {
                let count = |codes: &mut dyn Iterator<Item = String>| {
                    let mut m = BTreeMap::<String, usize>::new();
                    for c in codes {
                        *m.entry(c).or_default() += 1;
                    }
                    format!(
                        "{:?}",
                        m.into_iter()
                            .flat_map(|(c, n)| std::iter::repeat_n(c, n))
                            .collect::<Vec<_>>()
                    )
                };
                check(
                    "reasons",
                    count(&mut codes.iter().cloned()),
                    count(&mut d.reasons.into_iter().map(|r| r.code)),
                );
            }
        }
    }
    problems
}

const REGO_TEMPLATE: &str = r#"# A transfer policy for teller, in Rego v1. teller sets `input` to the
# transfer document (action, amount in minor units, currency, from_account,
# to_account, user.id, user.role, audit.enabled, approval.required,
# request_id; a field the document left out is undefined).
#
# A transfer is allowed only if `allow` is true and `deny` is not; with
# other policies beside this one, only if every one allows and none denies.
# `reasons` tells the caller why; `review` (optional) asks a human instead
# of refusing; `version` names this version in answers and the audit log.
package NAME

import rego.v1

version := "0.1.0"

# The largest amount, in minor units, this policy allows.
limit := 500000

default allow := false

allow if {
	input.action == "transfer"
	input.amount <= limit
}

# Far over the limit: refused outright, whatever other policies say.
deny if input.amount > 10 * limit

reasons contains {"code": "over_limit", "message": msg} if {
	input.amount > limit
	msg := sprintf("amount %d is over the limit of %d", [input.amount, limit])
}
"#;

const TESTS_TEMPLATE: &str = r#"# Cases for `teller test`: each sends `input` (a transfer document) to the
# policies of this directory and checks what `expect` gives: verdict
# (allow, deny, review), allow, deny, reasons (codes, any order), or error
# (an error code, for a document teller refuses).

[[case]]
name = "a transfer within the limit is allowed"
expect = { verdict = "allow", allow = true, deny = false, reasons = [] }
[case.input]
action = "transfer"
amount = 250000
currency = "CNY"
from_account = "6222020200001234567"
to_account = "6222020200007654321"
user = { id = "u-17", role = "authorized" }
audit = { enabled = true }

[[case]]
name = "over the limit is not allowed"
expect = { verdict = "deny", allow = false, deny = false, reasons = ["over_limit"] }
[case.input]
action = "transfer"
amount = 600000
currency = "CNY"
from_account = "6222020200001234567"
to_account = "6222020200007654321"
user = { id = "u-17", role = "authorized" }
audit = { enabled = true }

[[case]]
name = "far over the limit is denied"
expect = { verdict = "deny", allow = false, deny = true, reasons = ["over_limit"] }
[case.input]
action = "transfer"
amount = 9000000
user = { role = "authorized" }

[[case]]
name = "a negative amount is refused before any policy runs"
expect = { error = "invalid_field" }
[case.input]
action = "transfer"
amount = -1
user = { role = "authorized" }
"#;

const CARGO_TEMPLATE: &str = r#"# A transfer policy for teller, in Rust: one source, two guest forms
# (build.sh): a wasm32-wasip2 component for wasmtime and a wasm32-wasip1
# core module with the same canonical-ABI exports for WasmEdge.
[package]
name = "NAME"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib"]

[dependencies]
wit-bindgen = { version = "0.63", default-features = false, features = ["macros", "realloc"] }

[profile.release]
opt-level = "s"
strip = "debuginfo"

# Its own workspace, wherever it is created.
[workspace]
"#;

const RUST_TEMPLATE: &str = r#"//! A transfer policy for teller. teller calls `check` with its policy
//! configuration (`teller.toml`) and the transfer document, decoded and
//! validated; the answer's `allow` and `deny` combine with every other
//! policy's: a transfer is allowed only if every policy allows and none
//! denies.

wit_bindgen::generate!({
    world: "transfer-check-policy",
    path: "wit",
});

use bank::policy::types::{Decision, PolicyConfig, PolicyMetadata, Reason, TransferRequest, Verdict};
use exports::bank::policy::{metadata, transfer_check};

struct Policy;

export!(Policy);

/// The largest amount, in minor units, this policy allows.
const LIMIT: u64 = 500_000;

impl metadata::Guest for Policy {
    fn describe() -> PolicyMetadata {
        PolicyMetadata {
            name: env!("CARGO_PKG_NAME").to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

impl transfer_check::Guest for Policy {
    fn check(_config: PolicyConfig, request: TransferRequest) -> Decision {
        let mut reasons = Vec::new();
        if request.amount > LIMIT {
            reasons.push(Reason {
                code: "over_limit".to_string(),
                message: format!("amount {} is over the limit of {LIMIT}", request.amount),
            });
        }
        let allow = request.action == "transfer" && request.amount <= LIMIT;
        // Far over the limit: refused outright, whatever other policies say.
        let deny = request.amount > 10 * LIMIT;
        Decision {
            allow,
            deny,
            verdict: if allow && !deny { Verdict::Allow } else { Verdict::Deny },
            reasons,
        }
    }
}
"#;

const BUILD_TEMPLATE: &str = r#"#!/bin/sh
# Builds the policy in both guest forms into policy/, next to its tests:
# NAME.component.wasm (wasmtime) and NAME.module.wasm (WasmEdge).
# Needs: rustup target add wasm32-wasip1 wasm32-wasip2
set -eu
cd "$(dirname "$0")"
cargo build --release --target wasm32-wasip1 --target wasm32-wasip2
mkdir -p policy
cp target/wasm32-wasip2/release/LIB.wasm policy/NAME.component.wasm
cp target/wasm32-wasip1/release/LIB.wasm policy/NAME.module.wasm
echo "built policy/NAME.component.wasm and policy/NAME.module.wasm"
"#;
