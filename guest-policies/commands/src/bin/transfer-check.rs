//! The transfer check as a WASI command: the transfer document on stdin, the
//! decision on stdout as JSON (`allow`, `deny`, `verdict`, `reasons`, as
//! `teller check` prints them).
//!
//! Exit status: 0 allowed, 3 not allowed (deny or review), 2 bad input.
//! Parameters come from the environment, defaulting to the bank's policy:
//! `TELLER_AMOUNT_LIMIT` (minor units) and `TELLER_AUTHORIZED_ROLES`
//! (comma-separated).

use std::process::ExitCode;
use teller_commands::{fail, read_stdin};
use teller_contract::{Error, ErrorCode, PolicyConfig, Verdict};

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

fn run() -> Result<ExitCode, Error> {
    let config = config()?;
    let request = teller_contract::decode_transfer(&read_stdin()?)?;
    let decision = teller_transfer_rule::decide(&config, &request);
    let reasons: Vec<_> = decision
        .reasons
        .iter()
        .map(|r| serde_json::json!({"code": r.code.as_str(), "message": r.message}))
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "allow": decision.allow,
            "deny": decision.deny,
            "verdict": decision.verdict.as_str(),
            "reasons": reasons,
        })
    );
    Ok(match decision.verdict {
        Verdict::Allow => ExitCode::SUCCESS,
        Verdict::Deny | Verdict::Review => ExitCode::from(3),
    })
}

fn config() -> Result<PolicyConfig, Error> {
    let invalid = |what: String| Error::bad_request(ErrorCode::ConfigInvalid, what);
    let amount_limit = match std::env::var("TELLER_AMOUNT_LIMIT") {
        Err(_) => teller_contract::DEFAULT_AMOUNT_LIMIT,
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n <= teller_contract::MAX_AMOUNT)
            .ok_or_else(|| {
                invalid(format!(
                    "TELLER_AMOUNT_LIMIT {v:?} is not an amount in minor units"
                ))
            })?,
    };
    let authorized_roles = match std::env::var("TELLER_AUTHORIZED_ROLES") {
        Err(_) => teller_contract::DEFAULT_AUTHORIZED_ROLES
            .iter()
            .map(|r| r.to_string())
            .collect(),
        Ok(v) => {
            let roles: Vec<String> = v.split(',').map(|r| r.trim().to_string()).collect();
            if roles.iter().any(String::is_empty) {
                return Err(invalid(format!(
                    "TELLER_AUTHORIZED_ROLES {v:?} holds a blank role"
                )));
            }
            roles
        }
    };
    // A command runs once, with no state store to keep a daily total in.
    Ok(PolicyConfig {
        amount_limit,
        authorized_roles,
        daily_limit: None,
        day_offset_minutes: 0,
    })
}
