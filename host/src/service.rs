//! teller's operations, independent of transport: decide a transfer, record
//! an audit event. The HTTP API and the CLI both call these, so they answer
//! alike.

use crate::audit::{AuditLog, AuditSettings, AuditWriter, Recovery};
use crate::config::Config;
use crate::engine::{Engine, TransferCheck};
use crate::error::{Error, Kind};
use crate::metrics::{
    DecisionLabels, EngineLabels, GuestErrorLabels, InFlight, Metrics, PolicyLabels,
};
use crate::policy::{self, PolicySource};
use crate::request::{decode_transfer, json_error};
use crate::wit::{
    Actor, AuditEvent, Decision, Origin, PolicyConfig, PolicyRef, ReasonCode, TransferRequest,
    Verdict,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A ready teller: loaded guests, their configuration, the audit log.
pub struct Teller {
    engine: &'static str,
    transfer: Arc<dyn TransferCheck>,
    config: PolicyConfig,
    audit: Option<AuditWriter>,
    metrics: Arc<Metrics>,
}

/// Who sent a request.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// Peer address, or `cli` for a local invocation.
    pub client: String,
}

/// The decision as the JSON API returns it.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResponse {
    pub decision_id: String,
    pub allow: bool,
    pub deny: bool,
    pub verdict: &'static str,
    pub reasons: Vec<ReasonBody>,
    pub policy: PolicyRefBody,
    pub engine: &'static str,
    /// Present when the decision was written to the audit log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditRef>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReasonBody {
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyRefBody {
    pub name: String,
    pub version: String,
    pub sha256: String,
}

/// The answer to a posted audit event.
#[derive(Debug, Clone, Serialize)]
pub struct RecordedEvent {
    pub id: String,
    #[serde(flatten)]
    pub audit: AuditRef,
}

/// Where a record landed in the chain.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRef {
    pub seq: u64,
    pub hash: String,
}

impl Teller {
    /// Loads the guests on `engine` and opens the audit log, if any.
    pub fn start(
        engine: &dyn Engine,
        policies: &PolicySource,
        config: &Config,
        audit: Option<&AuditSettings>,
    ) -> Result<(Self, Option<Recovery>), Error> {
        let metrics = Arc::new(Metrics::new());
        let loaded = |policy: &PolicyRef| {
            metrics
                .policy_loaded
                .get_or_create(&PolicyLabels {
                    policy: policy.name.clone(),
                    version: policy.version.clone(),
                    sha256: policy.sha256.clone(),
                    engine: engine.name(),
                })
                .set(1);
        };
        let transfer = engine.load_transfer_check(&policies.artifact(policy::TRANSFER_CHECK)?)?;
        loaded(transfer.policy());
        let (audit, recovery) = match audit {
            None => (None, None),
            Some(settings) => {
                let sealer = engine.load_audit(&policies.artifact(policy::AUDIT)?)?;
                loaded(sealer.policy());
                let encrypter = settings.keys.as_ref().map(|k| k.encrypter()).transpose()?;
                let (log, recovery) = AuditLog::open(&settings.dir, settings.segment_bytes)?;
                let writer =
                    AuditWriter::start(log, sealer, encrypter, settings.commit, metrics.clone())?;
                (Some(writer), Some(recovery))
            }
        };
        Ok((
            Teller {
                engine: engine.name(),
                transfer,
                config: config.policy_config(),
                audit,
                metrics,
            },
            recovery,
        ))
    }

    pub fn engine(&self) -> &'static str {
        self.engine
    }

    pub fn transfer_policy(&self) -> &PolicyRef {
        self.transfer.policy()
    }

    pub fn audit_enabled(&self) -> bool {
        self.audit.is_some()
    }

    /// The OpenMetrics text of teller's metrics, gauges brought up to date.
    pub fn metrics_text(&self) -> String {
        self.metrics
            .guest_instances_pooled
            .set(self.transfer.instances_pooled() as i64);
        self.metrics.encode()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Counts a failed guest call by its code.
    fn counted(&self, e: Error) -> Error {
        if e.kind == Kind::Guest {
            self.metrics
                .guest_errors
                .get_or_create(&GuestErrorLabels {
                    code: e.code,
                    engine: self.engine,
                })
                .inc();
        }
        e
    }

    /// Decides one transfer document; with an audit log, answers only once
    /// the decision's record is on disk.
    pub fn check(&self, body: &[u8], caller: &Caller) -> Result<CheckResponse, Error> {
        let request = decode_transfer(body)?;
        let started = std::time::Instant::now();
        let decision = {
            let _in_use = InFlight::start(&self.metrics.guest_calls_in_flight);
            self.transfer.check(&self.config, &request)
        }
        .map_err(|e| self.counted(e))?;
        self.metrics
            .decision_seconds
            .get_or_create(&EngineLabels {
                engine: self.engine,
            })
            .observe(started.elapsed().as_secs_f64());
        let policy = self.transfer.policy();
        self.metrics
            .decisions
            .get_or_create(&DecisionLabels {
                policy: policy.name.clone(),
                verdict: verdict_name(decision.verdict),
                engine: self.engine,
            })
            .inc();
        let decision_id = uuid::Uuid::now_v7().to_string();
        let audit = match &self.audit {
            None => None,
            Some(audit) => {
                let event = self.decision_event(&request, &decision, &decision_id, caller);
                Some(
                    audit
                        .append(event)
                        .map(AuditRef::from)
                        .map_err(|e| self.counted(e))?,
                )
            }
        };
        Ok(CheckResponse {
            decision_id,
            allow: decision.allow,
            deny: decision.deny,
            verdict: verdict_name(decision.verdict),
            reasons: decision
                .reasons
                .into_iter()
                .map(|r| ReasonBody {
                    code: reason_name(r.code),
                    message: r.message,
                })
                .collect(),
            policy: PolicyRefBody {
                name: policy.name.clone(),
                version: policy.version.clone(),
                sha256: policy.sha256.clone(),
            },
            engine: self.engine,
            audit,
        })
    }

    /// Records one event posted to `/v1/audit/events`.
    pub fn record_event(&self, body: &[u8], caller: &Caller) -> Result<RecordedEvent, Error> {
        let audit = self.audit.as_ref().ok_or_else(|| {
            Error::new(
                crate::error::Kind::Unavailable,
                "audit_log_disabled",
                "this teller has no audit log; start it with --audit-dir",
            )
        })?;
        let mut json = serde_json::Deserializer::from_str(crate::request::utf8(body)?);
        let doc: EventDocument = serde_path_to_error::deserialize(&mut json).map_err(json_error)?;
        json.end()
            .map_err(|e| Error::bad_request("malformed_json", format!("malformed JSON: {e}")))?;
        let event = AuditEvent {
            id: uuid::Uuid::now_v7().to_string(),
            timestamp: now_rfc3339(),
            actor: Actor {
                id: doc.actor.id,
                role: doc.actor.role,
            },
            action: doc.action,
            resource: doc.resource,
            outcome: doc.outcome,
            reasons: doc.reasons,
            origin: Origin {
                client: caller.client.clone(),
                request_id: doc.request_id.unwrap_or_default(),
            },
            policy: None,
            engine: self.engine.to_string(),
            details: doc.details.into_iter().collect(),
            encrypted: None,
        };
        let id = event.id.clone();
        Ok(RecordedEvent {
            audit: audit.append(event).map_err(|e| self.counted(e))?.into(),
            id,
        })
    }

    fn decision_event(
        &self,
        request: &TransferRequest,
        decision: &Decision,
        decision_id: &str,
        caller: &Caller,
    ) -> AuditEvent {
        let mut details = vec![
            ("allow".to_string(), decision.allow.to_string()),
            ("amount".to_string(), request.amount.to_string()),
            ("deny".to_string(), decision.deny.to_string()),
        ];
        if let Some(currency) = &request.currency {
            details.push(("currency".to_string(), currency.clone()));
        }
        AuditEvent {
            id: decision_id.to_string(),
            timestamp: now_rfc3339(),
            actor: Actor {
                id: request.user.id.clone().unwrap_or_default(),
                role: request.user.role.clone(),
            },
            action: request.action.clone(),
            resource: [&request.from_account, &request.to_account]
                .into_iter()
                .flatten()
                .cloned()
                .collect(),
            outcome: verdict_name(decision.verdict).to_string(),
            reasons: decision
                .reasons
                .iter()
                .map(|r| reason_name(r.code).to_string())
                .collect(),
            origin: Origin {
                client: caller.client.clone(),
                request_id: request.request_id.clone().unwrap_or_default(),
            },
            policy: Some(self.transfer.policy().clone()),
            engine: self.engine.to_string(),
            details,
            encrypted: None,
        }
    }
}

impl From<crate::wit::SealedRecord> for AuditRef {
    fn from(record: crate::wit::SealedRecord) -> Self {
        AuditRef {
            seq: record.seq,
            hash: record.hash,
        }
    }
}

/// The body of `POST /v1/audit/events`. Unlike the transfer document,
/// unknown fields are refused: a field the client believes recorded must
/// not vanish silently.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventDocument {
    actor: ActorDoc,
    action: String,
    #[serde(default)]
    resource: Vec<String>,
    outcome: String,
    #[serde(default)]
    reasons: Vec<String>,
    #[serde(default)]
    details: BTreeMap<String, String>,
    #[serde(default)]
    request_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActorDoc {
    id: String,
    role: String,
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// The API's names for the WIT enums; an added WIT case fails to compile
/// here until it is given its public name.
pub fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Allow => "allow",
        Verdict::Deny => "deny",
        Verdict::Review => "review",
    }
}

pub fn reason_name(code: ReasonCode) -> &'static str {
    match code {
        ReasonCode::ActionNotTransfer => "action_not_transfer",
        ReasonCode::AmountOverLimit => "amount_over_limit",
        ReasonCode::RoleNotAuthorized => "role_not_authorized",
        ReasonCode::AuditDisabled => "audit_disabled",
        ReasonCode::ApprovalRequired => "approval_required",
    }
}
