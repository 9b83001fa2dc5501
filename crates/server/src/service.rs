//! teller's operations, independent of transport: decide a transfer, record
//! an audit event. The HTTP API and the CLI both call these, so they answer
//! alike.

use crate::config::Config;
use crate::metrics::{
    DecisionLabels, EngineLabels, GuestErrorLabels, InFlight, Metrics, PolicyLabels, StateLabels,
};
use crate::policy_set::{PolicySet, SetDecision};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use teller_audit_log::{AuditLog, AuditSettings, AuditWriter, GENESIS, Recovery, SealerSlot};
use teller_contract::ErrorCode;
use teller_contract::request::decode_transfer;
use teller_contract::{
    Actor, AuditEvent, Origin, PolicyConfig, PolicyRef, Reason, SealedRecord, TransferRequest,
};
use teller_contract::{Error, Kind};
use teller_engine::Engine;
use teller_engine::artifact::PolicySource;
use teller_engine::state::{Granted, GuestState, Journal};
use tokio::sync::oneshot::error::RecvError;

/// A ready teller: loaded guests, their configuration, the audit log.
pub struct Teller {
    engine: &'static str,
    /// What serves now; each request takes its own reference, so a reload
    /// never changes the policy under a request in flight.
    loaded: RwLock<Arc<Loaded>>,
    audit: Option<(AuditWriter, SealerSlot)>,
    metrics: Arc<Metrics>,
    /// The store behind the guests' `bank:policy/state` (the engine's), for
    /// taking back what a decision that did not allow reserved.
    state: GuestState,
}

/// One version of the policies and their configuration.
struct Loaded {
    set: PolicySet,
    config: PolicyConfig,
}

/// What a reload replaced.
#[derive(Debug, Clone)]
pub struct Reloaded {
    pub old: PolicyRef,
    pub new: PolicyRef,
}

/// A decision whose audit record is on its way to disk: its answer may
/// be given only once the record is durable.
pub struct PendingCheck {
    response: CheckResponse,
    record: Option<tokio::sync::oneshot::Receiver<Result<SealedRecord, Error>>>,
    /// What an allowed decision reserved: given back if its record fails.
    granted: Vec<Granted>,
}

/// An allowed decision whose record failed: hand it to
/// [`Teller::give_back`].
pub struct Unrecorded {
    error: Error,
    granted: Vec<Granted>,
}

impl PendingCheck {
    /// The answer once the record is durable, awaited without holding a
    /// thread through the `fsync`.
    pub async fn durable(mut self) -> Result<CheckResponse, Unrecorded> {
        let sealed = match self.record.take() {
            Some(record) => Some(record.await),
            None => None,
        };
        self.answer(sealed)
    }

    /// [`PendingCheck::durable`] for a caller outside an async runtime.
    pub fn wait(mut self) -> Result<CheckResponse, Unrecorded> {
        let sealed = self.record.take().map(|record| record.blocking_recv());
        self.answer(sealed)
    }

    /// The answer given what became of the record (`None`: no audit log).
    fn answer(
        self,
        sealed: Option<Result<Result<SealedRecord, Error>, RecvError>>,
    ) -> Result<CheckResponse, Unrecorded> {
        let mut response = self.response;
        match sealed.map(|s| s.unwrap_or_else(|_| Err(writer_stopped()))) {
            None => Ok(response),
            Some(Ok(sealed)) => {
                response.audit = Some(sealed.into());
                Ok(response)
            }
            Some(Err(error)) => Err(Unrecorded {
                error,
                granted: self.granted,
            }),
        }
    }
}

fn writer_stopped() -> Error {
    Error::internal(ErrorCode::AuditLogUnusable, "the audit writer has stopped")
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
    /// What decided: the one policy, or the set as one identity.
    pub policy: PolicyRefBody,
    /// Every policy of the set, in order, with what each said.
    pub policies: Vec<PolicyOutcomeBody>,
    pub engine: &'static str,
    /// Present when the decision was written to the audit log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditRef>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReasonBody {
    pub code: String,
    pub message: String,
}

impl From<Reason> for ReasonBody {
    fn from(r: Reason) -> Self {
        ReasonBody {
            code: r.code,
            message: r.message,
        }
    }
}

/// One policy's part in a decision.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyOutcomeBody {
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub allow: bool,
    pub deny: bool,
    pub verdict: &'static str,
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
    /// `state` must be the state `engine` was started with.
    pub fn start(
        engine: &dyn Engine,
        policies: &PolicySource,
        config: &Config,
        audit: Option<&AuditSettings>,
        state: GuestState,
    ) -> Result<(Self, Option<Recovery>), Error> {
        needs_state(config, &state)?;
        let metrics = Arc::new(Metrics::new());
        let set = PolicySet::load(engine, policies)?;
        for member in set.members() {
            set_loaded(&metrics, engine.name(), member.policy(), 1);
        }
        let (audit, recovery) = match audit {
            None => (None, None),
            Some(settings) => {
                let sealer = engine.load_audit(&policies.audit()?)?;
                set_loaded(&metrics, engine.name(), sealer.policy(), 1);
                let slot: SealerSlot = Arc::new(RwLock::new(sealer));
                let encrypter = settings.keys.as_ref().map(|k| k.encrypter()).transpose()?;
                let (log, recovery) = AuditLog::open(&settings.dir, settings.segment_bytes)?;
                let writer = AuditWriter::start(
                    log,
                    slot.clone(),
                    encrypter,
                    settings.commit,
                    metrics.audit(),
                )?;
                (Some((writer, slot)), Some(recovery))
            }
        };
        Ok((
            Teller {
                engine: engine.name(),
                loaded: RwLock::new(Arc::new(Loaded {
                    set,
                    config: config.policy_config(),
                })),
                audit,
                metrics,
                state,
            },
            recovery,
        ))
    }

    /// Loads and compiles `policies` with `config` on `engine`, has each
    /// guest answer a self-test (the README example; a sample event), and
    /// only then swaps them in. Requests in flight finish on the old
    /// version. On any failure the old version keeps serving.
    pub fn reload(
        &self,
        engine: &dyn Engine,
        policies: &PolicySource,
        config: &Config,
    ) -> Result<Reloaded, Error> {
        let result = self.load_and_test(engine, policies, config);
        let outcome = if result.is_ok() { "ok" } else { "rejected" };
        self.metrics
            .policy_reloads
            .get_or_create(&crate::metrics::ReloadLabels { result: outcome })
            .inc();
        let (set, sealer) = result?;
        let config = config.policy_config();
        let new = set.identity().clone();
        let new_members: Vec<PolicyRef> =
            set.members().iter().map(|m| m.policy().clone()).collect();
        for member in &new_members {
            set_loaded(&self.metrics, self.engine, member, 1);
        }
        let old = {
            let mut loaded = self.loaded.write().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *loaded, Arc::new(Loaded { set, config }))
        };
        for member in old.set.members() {
            if !new_members
                .iter()
                .any(|m| m.sha256 == member.policy().sha256)
            {
                set_loaded(&self.metrics, self.engine, member.policy(), 0);
            }
        }
        let old = old.set.identity().clone();
        if let (Some(sealer), Some((_, slot))) = (sealer, &self.audit) {
            let new_sealer = sealer.policy().clone();
            set_loaded(&self.metrics, self.engine, &new_sealer, 1);
            let mut slot = slot.write().unwrap_or_else(|p| p.into_inner());
            let old_sealer = slot.policy().clone();
            *slot = sealer;
            if old_sealer.sha256 != new_sealer.sha256 {
                set_loaded(&self.metrics, self.engine, &old_sealer, 0);
            }
        }
        Ok(Reloaded { old, new })
    }

    #[allow(clippy::type_complexity)]
    fn load_and_test(
        &self,
        engine: &dyn Engine,
        policies: &PolicySource,
        config: &Config,
    ) -> Result<(PolicySet, Option<Arc<dyn teller_engine::AuditSealer>>), Error> {
        let rejected = |what: &str, e: Error| {
            Error::bad_request(ErrorCode::ReloadRejected, format!("{what}: {}", e.message))
        };
        needs_state(config, &self.state).map_err(|e| rejected("the new configuration", e))?;
        let set = PolicySet::load(engine, policies)
            .map_err(|e| rejected("the new policies do not load", e))?;
        let probe = decode_transfer(teller_contract::EXAMPLE_REQUEST.as_bytes())?;
        // The self-test must not count the example against a real account's
        // daily total: it decides without the daily limit.
        let probe_config = PolicyConfig {
            daily_limit: None,
            ..config.policy_config()
        };
        // A guest of its own may still reserve: whatever the test reserved
        // is taken back.
        let journal = Journal::begin();
        let tested = set.decide(&probe_config, &probe);
        self.release(journal.finish());
        tested.map_err(|e| rejected("the new policies failed their self-test", e))?;
        let sealer = match &self.audit {
            None => None,
            Some(_) => {
                let sealer = engine
                    .load_audit(&policies.audit()?)
                    .map_err(|e| rejected("the new audit guest does not load", e))?;
                let mut event = self_test_event();
                event.engine = self.engine.to_string();
                sealer
                    .seal(1, GENESIS, &event)
                    .map_err(|e| rejected("the new audit guest failed its self-test", e))?;
                Some(sealer)
            }
        };
        Ok((set, sealer))
    }

    fn current(&self) -> Arc<Loaded> {
        self.loaded
            .read()
            .map(|l| l.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn engine(&self) -> &'static str {
        self.engine
    }

    /// The transfer-check policy (or set) serving now.
    pub fn transfer_policy(&self) -> PolicyRef {
        self.current().set.identity().clone()
    }

    pub fn audit_enabled(&self) -> bool {
        self.audit.is_some()
    }

    /// Whether the state store (if any) has answered since start-up.
    pub fn state_ready(&self) -> bool {
        self.state.store().is_none_or(|s| s.ready())
    }

    /// The OpenMetrics text of teller's metrics, gauges brought up to date.
    pub fn metrics_text(&self) -> String {
        self.metrics
            .guest_instances_pooled
            .set(teller_engine::instances_pooled());
        self.metrics.encode()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Counts a failed guest call by its code.
    fn counted(&self, e: Error) -> Error {
        if e.code == ErrorCode::StateUnavailable {
            let store = self.state.store().map_or("none", |s| s.kind());
            self.metrics
                .state_unavailable
                .get_or_create(&StateLabels { store })
                .inc();
            tracing::warn!(
                store,
                "transfer refused, state store unavailable: {}",
                e.message
            );
        }
        if e.kind == Kind::Guest {
            self.metrics
                .guest_errors
                .get_or_create(&GuestErrorLabels {
                    code: e.code.as_str(),
                    engine: self.engine,
                })
                .inc();
        }
        e
    }

    /// Takes back what a decision reserved when it did not end in an allow
    /// (a policy of the set denied, the audit log failed), so that only
    /// allowed transfers count against a daily limit. A release that fails
    /// leaves the total too high, never too low: it errs on refusing.
    fn release(&self, granted: Vec<Granted>) {
        let Some(store) = self.state.store() else {
            return;
        };
        for g in granted {
            match store.release(&g) {
                Ok(()) => {
                    self.metrics
                        .state_releases
                        .get_or_create(&StateLabels {
                            store: store.kind(),
                        })
                        .inc();
                }
                Err(e) => tracing::error!(
                    store = store.kind(),
                    "cannot take back a reservation of a transfer that was not allowed: {e}"
                ),
            }
        }
    }

    /// Decides one transfer document; with an audit log, answers only once
    /// the decision's record is on disk.
    pub fn check(&self, body: &[u8], caller: &Caller) -> Result<CheckResponse, Error> {
        match self.begin_check(body, caller)?.wait() {
            Ok(response) => Ok(response),
            Err(unrecorded) => Err(self.give_back(unrecorded)),
        }
    }

    /// Decides one transfer document and hands its record to the audit
    /// writer: the CPU-bound part of [`Teller::check`], for a worker thread.
    /// The answer is the [`PendingCheck`]'s, once the record is durable.
    pub fn begin_check(&self, body: &[u8], caller: &Caller) -> Result<PendingCheck, Error> {
        let journal = Journal::begin();
        let checked = self.check_journaled(body, caller);
        let granted = journal.finish();
        match checked {
            Ok(pending) if pending.response.allow => Ok(PendingCheck { granted, ..pending }),
            other => {
                if !granted.is_empty() {
                    self.release(granted);
                }
                other
            }
        }
    }

    /// Takes back the reservations of an allowed decision whose record
    /// failed, and returns the failure (blocking: the store may be remote).
    pub fn give_back(&self, unrecorded: Unrecorded) -> Error {
        if !unrecorded.granted.is_empty() {
            self.release(unrecorded.granted);
        }
        self.counted(unrecorded.error)
    }

    fn check_journaled(&self, body: &[u8], caller: &Caller) -> Result<PendingCheck, Error> {
        let request = decode_transfer(body)?;
        let loaded = self.current();
        let decision_id = uuid::Uuid::now_v7().to_string();
        tracing::Span::current().record("decision_id", decision_id.as_str());
        let started = std::time::Instant::now();
        let decided = {
            let _in_use = InFlight::start(&self.metrics.guest_calls_in_flight);
            loaded.set.decide(&loaded.config, &request)
        }
        .map_err(|e| self.counted(e))?;
        self.metrics
            .decision_seconds
            .get_or_create(&EngineLabels {
                engine: self.engine,
            })
            .observe(started.elapsed().as_secs_f64());
        let policy = loaded.set.identity();
        for o in &decided.outcomes {
            self.metrics
                .policy_verdicts
                .get_or_create(&DecisionLabels {
                    policy: o.policy.name.clone(),
                    verdict: o.verdict.as_str(),
                    engine: self.engine,
                })
                .inc();
        }
        self.metrics
            .decisions
            .get_or_create(&DecisionLabels {
                policy: policy.name.clone(),
                verdict: decided.decision.verdict.as_str(),
                engine: self.engine,
            })
            .inc();
        let record = match &self.audit {
            None => None,
            Some((audit, _)) => {
                let event = decision_event(
                    policy,
                    &request,
                    &decided,
                    &decision_id,
                    caller,
                    self.engine,
                );
                let (reply, durable) = tokio::sync::oneshot::channel();
                audit
                    .submit(
                        event,
                        Box::new(move |result| {
                            let _ = reply.send(result);
                        }),
                    )
                    .map_err(|e| self.counted(e))?;
                Some(durable)
            }
        };
        let SetDecision { decision, outcomes } = decided;
        let response = CheckResponse {
            decision_id,
            allow: decision.allow,
            deny: decision.deny,
            verdict: decision.verdict.as_str(),
            reasons: decision.reasons.into_iter().map(ReasonBody::from).collect(),
            policy: PolicyRefBody {
                name: policy.name.clone(),
                version: policy.version.clone(),
                sha256: policy.sha256.clone(),
            },
            policies: outcomes
                .into_iter()
                .map(|o| PolicyOutcomeBody {
                    name: o.policy.name,
                    version: o.policy.version,
                    sha256: o.policy.sha256,
                    allow: o.allow,
                    deny: o.deny,
                    verdict: o.verdict.as_str(),
                })
                .collect(),
            engine: self.engine,
            audit: None,
        };
        Ok(PendingCheck {
            response,
            record,
            granted: Vec::new(),
        })
    }

    /// Records one event posted to `/v1/audit/events`.
    pub fn record_event(&self, body: &[u8], caller: &Caller) -> Result<RecordedEvent, Error> {
        let (audit, _) = self.audit.as_ref().ok_or_else(|| {
            Error::new(
                teller_contract::Kind::Unavailable,
                ErrorCode::AuditLogDisabled,
                "this teller has no audit log; start it with --audit-dir",
            )
        })?;
        let doc: EventDocument = teller_contract::request::decode_json(body)?;
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
            policies: vec![],
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
}

/// The audit event of a decision: what the audit log records of it.
pub fn decision_event(
    policy: &PolicyRef,
    request: &TransferRequest,
    decided: &SetDecision,
    decision_id: &str,
    caller: &Caller,
    engine: &str,
) -> AuditEvent {
    let decision = &decided.decision;
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
        outcome: decision.verdict.as_str().to_string(),
        reasons: decision.reasons.iter().map(|r| r.code.clone()).collect(),
        origin: Origin {
            client: caller.client.clone(),
            request_id: request.request_id.clone().unwrap_or_default(),
        },
        policy: Some(policy.clone()),
        policies: decided.outcomes.iter().map(Into::into).collect(),
        engine: engine.to_string(),
        details,
        encrypted: None,
    }
}

/// A daily limit without a state store would refuse every transfer its
/// other rules allow: refused up front instead.
fn needs_state(config: &Config, state: &GuestState) -> Result<(), Error> {
    if config.transfer_check.daily_limit.is_some() && state.store().is_none() {
        return Err(Error::bad_request(
            ErrorCode::StateInvalid,
            "daily_limit is set but teller was started without a state store (--state)",
        ));
    }
    Ok(())
}

/// Sets whether `policy` is loaded in the metrics.
fn set_loaded(metrics: &Metrics, engine: &'static str, policy: &PolicyRef, value: i64) {
    metrics
        .policy_loaded
        .get_or_create(&PolicyLabels {
            policy: policy.name.clone(),
            version: policy.version.clone(),
            sha256: policy.sha256.clone(),
            engine,
        })
        .set(value);
}

/// What a new audit guest must seal before it may replace the old one.
fn self_test_event() -> AuditEvent {
    AuditEvent {
        id: "00000000-0000-7000-8000-000000000000".to_string(),
        timestamp: "1970-01-01T00:00:00.000Z".to_string(),
        actor: Actor {
            id: "teller".to_string(),
            role: "self-test".to_string(),
        },
        action: "reload".to_string(),
        resource: vec!["6222020200001234567".to_string()],
        outcome: "self-test".to_string(),
        reasons: vec![],
        origin: Origin {
            client: "teller".to_string(),
            request_id: String::new(),
        },
        policy: None,
        policies: vec![],
        engine: String::new(),
        details: vec![],
        encrypted: None,
    }
}

impl From<teller_contract::SealedRecord> for AuditRef {
    fn from(record: teller_contract::SealedRecord) -> Self {
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
