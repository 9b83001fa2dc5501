//! What teller decides and how fast, for Prometheus (`GET /metrics`, in the
//! OpenMetrics text format through `prometheus-client`).
//!
//! Labels are fixed vocabularies only: policy names, versions and digests,
//! verdicts, error codes, engines, routes, status codes. Nothing from a
//! request body (no account number, no user id) ever becomes a label.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub policy: String,
    pub verdict: &'static str,
    pub engine: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EngineLabels {
    pub engine: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GuestErrorLabels {
    pub code: &'static str,
    pub engine: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub policy: String,
    pub version: String,
    pub sha256: String,
    pub engine: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// `embedded` or `redis`.
    pub store: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
    pub features: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latencies from 1 µs to about 1 s.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(1e-6, 2.0, 21))
}

/// Every metric teller exports.
pub struct Metrics {
    registry: Registry,
    pub decisions: Family<DecisionLabels, Counter>,
    /// Each policy's own verdict (a set's decision counts once per policy).
    pub policy_verdicts: Family<DecisionLabels, Counter>,
    pub decision_seconds: Histograms<EngineLabels>,
    pub guest_errors: Family<GuestErrorLabels, Counter>,
    pub guest_calls_in_flight: Gauge,
    pub guest_instances_pooled: Gauge,
    pub http_seconds: Histograms<HttpLabels>,
    pub audit_records: Counter,
    pub audit_fsync_seconds: Histogram,
    pub audit_queue_depth: Gauge,
    pub policy_loaded: Family<PolicyLabels, Gauge>,
    pub policy_reloads: Family<ReloadLabels, Counter>,
    /// Decisions refused because the state store did not answer.
    pub state_unavailable: Family<StateLabels, Counter>,
    /// Reservations taken back because the decision did not allow.
    pub state_releases: Family<StateLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The audit writer's handles to its metrics.
    pub fn audit(&self) -> teller_audit_log::AuditMetrics {
        teller_audit_log::AuditMetrics {
            records: self.audit_records.clone(),
            fsync_seconds: self.audit_fsync_seconds.clone(),
            queue_depth: self.audit_queue_depth.clone(),
        }
    }

    pub fn new() -> Self {
        let mut registry = Registry::default();
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "teller_decisions",
            "Transfer decisions, by policy, verdict and engine",
            decisions.clone(),
        );
        let policy_verdicts = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "teller_policy_verdicts",
            "What each policy of the set said, by policy, verdict and engine (a decision counts once per policy)",
            policy_verdicts.clone(),
        );
        let decision_seconds: Histograms<EngineLabels> = Family::new_with_constructor(latency);
        registry.register(
            "teller_decision_seconds",
            "Time to decide one transfer in the guest (lower, call, lift)",
            decision_seconds.clone(),
        );
        let guest_errors = Family::<GuestErrorLabels, Counter>::default();
        registry.register(
            "teller_guest_errors",
            "Guest calls that failed, by error code (guest_timeout, guest_trap, ...)",
            guest_errors.clone(),
        );
        let guest_calls_in_flight = Gauge::default();
        registry.register(
            "teller_guest_instances_in_use",
            "Guest instances running a call now",
            guest_calls_in_flight.clone(),
        );
        let guest_instances_pooled = Gauge::default();
        registry.register(
            "teller_guest_instances_pooled",
            "Ready guest instances waiting in the engines' pools (WasmEdge's, and every Rego policy's)",
            guest_instances_pooled.clone(),
        );
        let state_unavailable = Family::<StateLabels, Counter>::default();
        registry.register(
            "teller_state_unavailable",
            "Transfers refused (503 state_unavailable) because the state store did not answer in time, by store",
            state_unavailable.clone(),
        );
        let state_releases = Family::<StateLabels, Counter>::default();
        registry.register(
            "teller_state_releases",
            "Daily-limit reservations taken back because the decision did not end in an allow, by store",
            state_releases.clone(),
        );
        let http_seconds: Histograms<HttpLabels> = Family::new_with_constructor(latency);
        registry.register(
            "teller_http_request_seconds",
            "HTTP requests, by route and status, from head read to answer",
            http_seconds.clone(),
        );
        let audit_records = Counter::default();
        registry.register(
            "teller_audit_records",
            "Records written to the audit log and made durable",
            audit_records.clone(),
        );
        let audit_fsync_seconds = latency();
        registry.register(
            "teller_audit_fsync_seconds",
            "One group's write and fsync",
            audit_fsync_seconds.clone(),
        );
        let audit_queue_depth = Gauge::default();
        registry.register(
            "teller_audit_queue_depth",
            "Records waiting for the audit writer",
            audit_queue_depth.clone(),
        );
        let policy_loaded = Family::<PolicyLabels, Gauge>::default();
        registry.register(
            "teller_policy_loaded",
            "Policy artifacts by exact digest: 1 serving now, 0 replaced by a reload",
            policy_loaded.clone(),
        );
        let policy_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "teller_policy_reloads",
            "Policy reloads, by result (ok, rejected)",
            policy_reloads.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                features: teller_engine::registered()
                    .iter()
                    .map(|e| e.name)
                    .collect::<Vec<_>>()
                    .join(","),
            })
            .set(1);
        registry.register("teller_build_info", "The teller build", build);
        Metrics {
            registry,
            decisions,
            policy_verdicts,
            decision_seconds,
            guest_errors,
            guest_calls_in_flight,
            guest_instances_pooled,
            http_seconds,
            audit_records,
            audit_fsync_seconds,
            audit_queue_depth,
            policy_loaded,
            policy_reloads,
            state_unavailable,
            state_releases,
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn observe_http(&self, route: &'static str, status: u16, took: Duration) {
        self.http_seconds
            .get_or_create(&HttpLabels { route, status })
            .observe(took.as_secs_f64());
    }
}

/// Counts a guest call as in flight until dropped.
pub struct InFlight<'a>(&'a Gauge);

impl<'a> InFlight<'a> {
    pub fn start(gauge: &'a Gauge) -> Self {
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
