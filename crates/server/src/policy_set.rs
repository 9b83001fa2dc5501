//! The policies that decide a transfer together: every one is asked, and
//! the transfer is allowed only if every policy allows and none denies
//! (deny-overrides, as Gatekeeper and Kubewarden policy groups combine).

use std::sync::Arc;
use teller_contract::{Decision, Error, PolicyConfig, PolicyOutcome, PolicyRef, TransferRequest};
use teller_contract::{ErrorCode, Verdict};
use teller_engine::artifact::{PolicySource, sha256_hex};
use teller_engine::{Engine, TransferCheck};

/// Loaded policies, in the order they are asked.
pub struct PolicySet {
    members: Vec<Arc<dyn TransferCheck>>,
    identity: PolicyRef,
}

/// A set's answer: the combined decision and what each policy said.
#[derive(Debug, Clone)]
pub struct SetDecision {
    pub decision: Decision,
    pub outcomes: Vec<Outcome>,
}

/// One policy's answer within a set.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub policy: PolicyRef,
    pub allow: bool,
    pub deny: bool,
    pub verdict: Verdict,
}

impl From<&Outcome> for PolicyOutcome {
    fn from(o: &Outcome) -> Self {
        PolicyOutcome {
            policy: o.policy.clone(),
            allow: o.allow,
            deny: o.deny,
            verdict: o.verdict,
        }
    }
}

impl PolicySet {
    /// Loads every transfer-check policy of `source` on `engine`. Names
    /// must differ: they are how answers, metrics and the audit log tell
    /// the policies apart.
    pub fn load(engine: &dyn Engine, source: &PolicySource) -> Result<Self, Error> {
        let mut members: Vec<Arc<dyn TransferCheck>> = Vec::new();
        for artifact in source.transfer_checks()? {
            let loaded = engine.load_transfer_check(&artifact)?;
            let member: Arc<dyn TransferCheck> =
                if artifact.named_by_manifest && loaded.policy().name != artifact.name {
                    Arc::new(Renamed {
                        policy: PolicyRef {
                            name: artifact.name.clone(),
                            ..loaded.policy().clone()
                        },
                        inner: loaded,
                    })
                } else {
                    loaded
                };
            if members
                .iter()
                .any(|m| m.policy().name == member.policy().name)
            {
                return Err(Error::bad_request(
                    ErrorCode::PolicyInvalid,
                    format!(
                        "{} has two policies named {:?}; give one a `name` in policies.toml",
                        source.describe(),
                        member.policy().name
                    ),
                ));
            }
            members.push(member);
        }
        Self::new(members)
    }

    pub fn new(members: Vec<Arc<dyn TransferCheck>>) -> Result<Self, Error> {
        let identity = match members.as_slice() {
            [] => {
                return Err(Error::internal(
                    ErrorCode::UnknownPolicy,
                    "a policy set needs at least one policy",
                ));
            }
            [one] => one.policy().clone(),
            several => {
                let refs: Vec<&PolicyRef> = several.iter().map(|m| m.policy()).collect();
                let names: Vec<&str> = refs.iter().map(|p| p.name.as_str()).collect();
                let pinned: String = refs
                    .iter()
                    .map(|p| format!("{} {} {}\n", p.name, p.version, p.sha256))
                    .collect();
                PolicyRef {
                    name: names.join("+"),
                    version: format!("set of {}", refs.len()),
                    sha256: sha256_hex(pinned.as_bytes()),
                }
            }
        };
        Ok(PolicySet { members, identity })
    }

    /// The set as one policy: the member itself when there is one; for
    /// several, their names joined by `+` and the digest of every member's
    /// name, version and digest.
    pub fn identity(&self) -> &PolicyRef {
        &self.identity
    }

    pub fn members(&self) -> &[Arc<dyn TransferCheck>] {
        &self.members
    }

    /// Asks every policy; any policy's failure fails the decision (a set
    /// never allows without every policy's answer).
    pub fn decide(
        &self,
        config: &PolicyConfig,
        request: &TransferRequest,
    ) -> Result<SetDecision, Error> {
        let mut outcomes = Vec::with_capacity(self.members.len());
        let mut reasons = Vec::new();
        for member in &self.members {
            let d = member.check(config, request)?;
            outcomes.push(Outcome {
                policy: member.policy().clone(),
                allow: d.allow,
                deny: d.deny,
                verdict: d.verdict,
            });
            reasons.extend(d.reasons);
        }
        let (allow, deny) = combine(&outcomes);
        Ok(SetDecision {
            decision: Decision {
                allow,
                deny,
                verdict: verdict(&outcomes),
                reasons,
            },
            outcomes,
        })
    }
}

/// A compiled guest under the name its manifest entry gives.
struct Renamed {
    policy: PolicyRef,
    inner: Arc<dyn TransferCheck>,
}

impl TransferCheck for Renamed {
    fn policy(&self) -> &PolicyRef {
        &self.policy
    }

    fn check(&self, config: &PolicyConfig, request: &TransferRequest) -> Result<Decision, Error> {
        self.inner.check(config, request)
    }
}

/// Allowed only if every policy allows and none denies (one policy too:
/// a Rego policy may make both rules true); denied if any denies. Each
/// policy's own rules are in its [`Outcome`].
fn combine(outcomes: &[Outcome]) -> (bool, bool) {
    (
        outcomes.iter().all(|o| o.allow && !o.deny),
        outcomes.iter().any(|o| o.deny),
    )
}

/// `allow` when every policy's verdict is allow, `deny` when any is deny,
/// else `review`: a human decides only when review is all that stands in
/// the way.
fn verdict(outcomes: &[Outcome]) -> Verdict {
    if outcomes.iter().any(|o| o.verdict == Verdict::Deny) {
        Verdict::Deny
    } else if outcomes.iter().all(|o| o.verdict == Verdict::Allow) {
        Verdict::Allow
    } else {
        Verdict::Review
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(allow: bool, deny: bool, verdict: Verdict) -> Outcome {
        Outcome {
            policy: PolicyRef {
                name: "p".into(),
                version: "1".into(),
                sha256: "0".repeat(64),
            },
            allow,
            deny,
            verdict,
        }
    }

    #[test]
    fn deny_overrides_and_review_only_when_nothing_else_blocks() {
        let allow = outcome(true, false, Verdict::Allow);
        let deny = outcome(false, true, Verdict::Deny);
        let review = outcome(false, false, Verdict::Review);
        let refuse = outcome(false, false, Verdict::Deny);
        let cases = [
            (
                vec![allow.clone(), allow.clone()],
                (true, false),
                Verdict::Allow,
            ),
            (
                vec![allow.clone(), deny.clone()],
                (false, true),
                Verdict::Deny,
            ),
            (
                vec![allow.clone(), review.clone()],
                (false, false),
                Verdict::Review,
            ),
            (
                vec![review.clone(), refuse.clone()],
                (false, false),
                Verdict::Deny,
            ),
            (vec![review.clone(), deny], (false, true), Verdict::Deny),
            (vec![review], (false, false), Verdict::Review),
            (
                vec![outcome(true, true, Verdict::Deny)],
                (false, true),
                Verdict::Deny,
            ),
        ];
        for (outcomes, flags, v) in cases {
            assert_eq!(combine(&outcomes), flags, "{outcomes:?}");
            assert_eq!(verdict(&outcomes), v, "{outcomes:?}");
        }
        let both = [outcome(true, true, Verdict::Deny), allow];
        assert_eq!(combine(&both), (false, true));
    }
}
