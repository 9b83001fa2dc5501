//! The bank's transfer rule as plain Rust, with no WebAssembly bindings:
//! the transfer-check guest runs it behind the WIT, the function command
//! and the native baseline of `teller-bench call` run it as it is.
//!
//! It implements the bank's Rego policy exactly:
//!
//! ```rego
//! allow { input.action == "transfer"; input.amount <= LIMIT
//!         input.user.role == AUTHORIZED; input.audit.enabled == true }
//! deny  { input.action == "transfer"; input.amount > LIMIT
//!         not input.approval.required }
//! ```
//!
//! `allow` and `deny` are reported as computed; they are not complements.
//! The verdict adds the one answer a caller acts on: `allow` when allowed,
//! `review` when the only obstacle is an over-limit amount whose approval is
//! pending, `deny` otherwise (the safe default of a bank).
//!
//! With `daily_limit` set, an allowed transfer is then reserved against its
//! `from_account`'s total for the day ([`within_daily_limit`]); one that
//! does not fit is denied with `daily_limit_exceeded`.

pub use teller_contract::{
    DailyReservation, Decision, PolicyConfig, Reason, ReasonCode, Reservation, TransferRequest,
    User, Verdict,
};

/// Evaluates one request; a pure function so it is also tested natively.
pub fn decide(config: &PolicyConfig, request: &TransferRequest) -> Decision {
    let is_transfer = request.action == "transfer";
    let within_limit = request.amount <= config.amount_limit;
    let role_ok = config.authorized_roles.contains(&request.user.role);
    // Rego: `input.audit.enabled == true` is undefined (not true) when absent.
    let audit_on = request.audit_enabled == Some(true);
    // Rego: `not input.approval.required` holds when it is absent or false.
    let approval_pending = request.approval_required == Some(true);

    let allow = is_transfer && within_limit && role_ok && audit_on;
    let deny = is_transfer && !within_limit && !approval_pending;

    let mut reasons = Vec::new();
    if !is_transfer {
        reasons.push(Reason {
            code: ReasonCode::ActionNotTransfer.as_str().to_string(),
            message: format!("action {:?} is not \"transfer\"", request.action),
        });
    }
    if !within_limit {
        reasons.push(Reason {
            code: ReasonCode::AmountOverLimit.as_str().to_string(),
            message: format!(
                "amount {} exceeds the limit of {}",
                request.amount, config.amount_limit
            ),
        });
    }
    if !role_ok {
        reasons.push(Reason {
            code: ReasonCode::RoleNotAuthorized.as_str().to_string(),
            message: format!("role {:?} is not authorized to transfer", request.user.role),
        });
    }
    if !audit_on {
        reasons.push(Reason {
            code: ReasonCode::AuditDisabled.as_str().to_string(),
            message: match request.audit_enabled {
                None => "audit.enabled is absent; it must be true".to_string(),
                Some(_) => "audit.enabled is false; it must be true".to_string(),
            },
        });
    }
    if !within_limit && approval_pending {
        reasons.push(Reason {
            code: ReasonCode::ApprovalRequired.as_str().to_string(),
            message: "amount over the limit needs the approval it requests".to_string(),
        });
    }

    let only_obstacle_is_approval = is_transfer && role_ok && audit_on && approval_pending;
    let verdict = if allow {
        Verdict::Allow
    } else if !deny && !within_limit && only_obstacle_is_approval {
        Verdict::Review
    } else {
        Verdict::Deny
    };
    Decision {
        allow,
        deny,
        verdict,
        reasons,
    }
}

/// Counts an allowed transfer against its `from_account`'s total for the
/// day through `reserve` (the host's `state.reserve`), when `daily_limit` is
/// set; a transfer that does not fit becomes a deny. Anything not allowed is
/// returned as it is, without touching the state.
pub fn within_daily_limit(
    config: &PolicyConfig,
    request: &TransferRequest,
    decision: Decision,
    reserve: impl FnOnce(&DailyReservation) -> Reservation,
) -> Decision {
    let Some(limit) = config.daily_limit else {
        return decision;
    };
    if !decision.allow {
        return decision;
    }
    let over = |message: String| Decision {
        allow: false,
        deny: true,
        verdict: Verdict::Deny,
        reasons: vec![Reason {
            code: ReasonCode::DailyLimitExceeded.as_str().to_string(),
            message,
        }],
    };
    let Some(account) = &request.from_account else {
        return over(
            "from_account is absent, so the transfer cannot count against the daily limit".into(),
        );
    };
    let reservation = reserve(&DailyReservation {
        key: account.clone(),
        amount: request.amount,
        limit,
        day_offset_minutes: config.day_offset_minutes,
        request_id: request.request_id.clone(),
    });
    if reservation.granted {
        return decision;
    }
    over(format!(
        "amount {} would bring today's total from this account to {}, over the daily limit of {limit}",
        request.amount,
        reservation.total.saturating_add(request.amount)
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn config() -> PolicyConfig {
        PolicyConfig {
            amount_limit: 1_000_000,
            authorized_roles: vec!["authorized".to_string()],
            daily_limit: None,
            day_offset_minutes: 0,
        }
    }

    fn request(amount: u64, approval: Option<bool>) -> TransferRequest {
        TransferRequest {
            action: "transfer".to_string(),
            amount,
            currency: None,
            from_account: None,
            to_account: None,
            user: User {
                id: None,
                role: "authorized".to_string(),
            },
            audit_enabled: Some(true),
            approval_required: approval,
            request_id: None,
        }
    }

    fn codes(d: &Decision) -> Vec<&str> {
        d.reasons.iter().map(|r| r.code.as_str()).collect()
    }

    #[test]
    fn boundary_is_inclusive() {
        let d = decide(&config(), &request(1_000_000, None));
        assert!(d.allow && !d.deny && d.verdict == Verdict::Allow && d.reasons.is_empty());
        let d = decide(&config(), &request(1_000_001, None));
        assert!(!d.allow && d.deny && d.verdict == Verdict::Deny);
        assert_eq!(codes(&d), [ReasonCode::AmountOverLimit.as_str()]);
    }

    #[test]
    fn approval_turns_deny_into_review() {
        let d = decide(&config(), &request(1_000_001, Some(true)));
        assert!(!d.allow && !d.deny && d.verdict == Verdict::Review);
        assert_eq!(
            codes(&d),
            [
                ReasonCode::AmountOverLimit.as_str(),
                ReasonCode::ApprovalRequired.as_str()
            ]
        );
        let d = decide(&config(), &request(1_000_001, Some(false)));
        assert!(d.deny && d.verdict == Verdict::Deny);
    }

    #[test]
    fn unauthorized_under_limit_is_neither_allow_nor_deny_rule() {
        let mut r = request(10, None);
        r.user.role = "teller".to_string();
        let d = decide(&config(), &r);
        assert!(!d.allow && !d.deny && d.verdict == Verdict::Deny);
        assert_eq!(codes(&d), [ReasonCode::RoleNotAuthorized.as_str()]);
    }

    #[test]
    fn the_daily_limit_reserves_only_allowed_transfers() {
        let mut config = config();
        config.daily_limit = Some(1_500);
        config.day_offset_minutes = 480;
        let mut r = request(1_000, None);
        r.from_account = Some("ACC-1".into());
        r.request_id = Some("req-1".into());
        let mut seen = Vec::new();
        let d = within_daily_limit(&config, &r, decide(&config, &r), |res| {
            seen.push(res.clone());
            Reservation {
                granted: true,
                total: 1_000,
            }
        });
        assert!(d.allow && d.verdict == Verdict::Allow);
        assert_eq!(
            seen,
            [DailyReservation {
                key: "ACC-1".into(),
                amount: 1_000,
                limit: 1_500,
                day_offset_minutes: 480,
                request_id: Some("req-1".into()),
            }]
        );
        let d = within_daily_limit(&config, &r, decide(&config, &r), |_| Reservation {
            granted: false,
            total: 1_000,
        });
        assert!(!d.allow && d.deny && d.verdict == Verdict::Deny);
        assert_eq!(codes(&d), [ReasonCode::DailyLimitExceeded.as_str()]);
        assert!(
            d.reasons[0].message.contains("2000"),
            "{}",
            d.reasons[0].message
        );
        // A denied transfer never reaches the store.
        r.user.role = "teller".into();
        let d = within_daily_limit(&config, &r, decide(&config, &r), |_| unreachable!());
        assert_eq!(codes(&d), [ReasonCode::RoleNotAuthorized.as_str()]);
        // Without an account there is nothing to count against: deny.
        r.user.role = "authorized".into();
        r.from_account = None;
        let d = within_daily_limit(&config, &r, decide(&config, &r), |_| unreachable!());
        assert_eq!(codes(&d), [ReasonCode::DailyLimitExceeded.as_str()]);
    }
}
