//! The types of the WIT's `bank:policy/types` interface, owned by teller
//! and not by one engine's bindings.
//!
//! Fields are declared in the WIT's order and enum cases in its case order:
//! the WasmEdge engine's canonical ABI moves these values through serde by
//! position and checks every field name against the WIT, and the wasmtime
//! engine's bindings use these very types (the `wasmtime` feature derives
//! wasmtime's component traits; every enum case and every field name of
//! several words gives the WIT's kebab-case spelling, and wasmtime checks every name against the guest's
//! types when it loads a guest). A field added to the
//! WIT and not here fails both.

use serde::{Deserialize, Serialize};

/// Who asks for the transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "wasmtime",
    derive(
        wasmtime::component::ComponentType,
        wasmtime::component::Lift,
        wasmtime::component::Lower
    ),
    component(record)
)]
pub struct User {
    pub id: Option<String>,
    pub role: String,
}

/// One transfer to gate: the bank's OPA input document, decoded and
/// validated by the host. Optional fields are `None` when the document left
/// them out (Rego's "undefined").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "wasmtime",
    derive(
        wasmtime::component::ComponentType,
        wasmtime::component::Lift,
        wasmtime::component::Lower
    ),
    component(record)
)]
pub struct TransferRequest {
    pub action: String,
    /// Minor units, at most [`crate::MAX_AMOUNT`].
    pub amount: u64,
    pub currency: Option<String>,
    #[cfg_attr(feature = "wasmtime", component(name = "from-account"))]
    pub from_account: Option<String>,
    #[cfg_attr(feature = "wasmtime", component(name = "to-account"))]
    pub to_account: Option<String>,
    pub user: User,
    #[cfg_attr(feature = "wasmtime", component(name = "audit-enabled"))]
    pub audit_enabled: Option<bool>,
    #[cfg_attr(feature = "wasmtime", component(name = "approval-required"))]
    pub approval_required: Option<bool>,
    #[cfg_attr(feature = "wasmtime", component(name = "request-id"))]
    pub request_id: Option<String>,
}

/// Policy parameters owned by the host's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "wasmtime",
    derive(
        wasmtime::component::ComponentType,
        wasmtime::component::Lift,
        wasmtime::component::Lower
    ),
    component(record)
)]
pub struct PolicyConfig {
    #[cfg_attr(feature = "wasmtime", component(name = "amount-limit"))]
    pub amount_limit: u64,
    #[cfg_attr(feature = "wasmtime", component(name = "authorized-roles"))]
    pub authorized_roles: Vec<String>,
    /// Most one `from_account` may send in a day; `None` is no daily limit.
    #[cfg_attr(feature = "wasmtime", component(name = "daily-limit"))]
    pub daily_limit: Option<u64>,
    /// Where the day starts, in minutes east of UTC.
    #[cfg_attr(feature = "wasmtime", component(name = "day-offset-minutes"))]
    pub day_offset_minutes: i32,
}

/// An amount to add to a key's total for the current day
/// (`state.reserve`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "wasmtime",
    derive(
        wasmtime::component::ComponentType,
        wasmtime::component::Lift,
        wasmtime::component::Lower
    ),
    component(record)
)]
pub struct DailyReservation {
    pub key: String,
    pub amount: u64,
    pub limit: u64,
    #[cfg_attr(feature = "wasmtime", component(name = "day-offset-minutes"))]
    pub day_offset_minutes: i32,
    #[cfg_attr(feature = "wasmtime", component(name = "request-id"))]
    pub request_id: Option<String>,
}

/// What `state.reserve` answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "wasmtime",
    derive(
        wasmtime::component::ComponentType,
        wasmtime::component::Lift,
        wasmtime::component::Lower
    ),
    component(record)
)]
pub struct Reservation {
    pub granted: bool,
    pub total: u64,
}

/// The one answer a caller acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(
    feature = "wasmtime",
    derive(
        wasmtime::component::ComponentType,
        wasmtime::component::Lift,
        wasmtime::component::Lower
    ),
    component(enum),
    repr(u8)
)]
pub enum Verdict {
    #[cfg_attr(feature = "wasmtime", component(name = "allow"))]
    Allow,
    #[cfg_attr(feature = "wasmtime", component(name = "deny"))]
    Deny,
    /// Over the limit with `approval.required = true`: a human decides.
    #[cfg_attr(feature = "wasmtime", component(name = "review"))]
    Review,
}

impl Verdict {
    /// Every verdict, in the WIT's order.
    pub const ALL: [Verdict; 3] = [Verdict::Allow, Verdict::Deny, Verdict::Review];

    /// The name the JSON API, the audit log and the metrics use.
    pub const fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Review => "review",
        }
    }
}

/// The reason codes of the built-in transfer check. In the WIT a reason's
/// code is a string, so a Rego policy's `reasons` rule can name its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReasonCode {
    ActionNotTransfer,
    AmountOverLimit,
    RoleNotAuthorized,
    AuditDisabled,
    ApprovalRequired,
    DailyLimitExceeded,
}

impl ReasonCode {
    /// Every built-in reason code.
    pub const ALL: [ReasonCode; 6] = [
        ReasonCode::ActionNotTransfer,
        ReasonCode::AmountOverLimit,
        ReasonCode::RoleNotAuthorized,
        ReasonCode::AuditDisabled,
        ReasonCode::ApprovalRequired,
        ReasonCode::DailyLimitExceeded,
    ];

    /// The name the JSON API and the audit log use.
    pub const fn as_str(self) -> &'static str {
        match self {
            ReasonCode::ActionNotTransfer => "action_not_transfer",
            ReasonCode::AmountOverLimit => "amount_over_limit",
            ReasonCode::RoleNotAuthorized => "role_not_authorized",
            ReasonCode::AuditDisabled => "audit_disabled",
            ReasonCode::ApprovalRequired => "approval_required",
            ReasonCode::DailyLimitExceeded => "daily_limit_exceeded",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "wasmtime",
    derive(
        wasmtime::component::ComponentType,
        wasmtime::component::Lift,
        wasmtime::component::Lower
    ),
    component(record)
)]
pub struct Reason {
    /// snake_case: a [`ReasonCode`]'s name, or one a Rego policy chose.
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "wasmtime",
    derive(
        wasmtime::component::ComponentType,
        wasmtime::component::Lift,
        wasmtime::component::Lower
    ),
    component(record)
)]
pub struct Decision {
    pub allow: bool,
    pub deny: bool,
    pub verdict: Verdict,
    pub reasons: Vec<Reason>,
}

/// Name and version a guest reports about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "wasmtime",
    derive(
        wasmtime::component::ComponentType,
        wasmtime::component::Lift,
        wasmtime::component::Lower
    ),
    component(record)
)]
pub struct PolicyMetadata {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "wasmtime",
    derive(
        wasmtime::component::ComponentType,
        wasmtime::component::Lift,
        wasmtime::component::Lower
    ),
    component(record)
)]
pub struct Actor {
    pub id: String,
    pub role: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "wasmtime",
    derive(
        wasmtime::component::ComponentType,
        wasmtime::component::Lift,
        wasmtime::component::Lower
    ),
    component(record)
)]
pub struct Origin {
    /// Client address as the host saw it.
    pub client: String,
    #[cfg_attr(feature = "wasmtime", component(name = "request-id"))]
    pub request_id: String,
}

/// Which policy decided, pinned to the exact artifact that ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "wasmtime",
    derive(
        wasmtime::component::ComponentType,
        wasmtime::component::Lift,
        wasmtime::component::Lower
    ),
    component(record)
)]
pub struct PolicyRef {
    pub name: String,
    pub version: String,
    #[cfg_attr(feature = "wasmtime", component(name = "sha256"))]
    pub sha256: String,
}

/// One policy's part in a decision made by a set of policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "wasmtime",
    derive(
        wasmtime::component::ComponentType,
        wasmtime::component::Lift,
        wasmtime::component::Lower
    ),
    component(record)
)]
pub struct PolicyOutcome {
    pub policy: PolicyRef,
    pub allow: bool,
    pub deny: bool,
    pub verdict: Verdict,
}

/// An event's plaintext, AES-256-GCM encrypted by the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "wasmtime",
    derive(
        wasmtime::component::ComponentType,
        wasmtime::component::Lift,
        wasmtime::component::Lower
    ),
    component(record)
)]
pub struct EncryptedEvent {
    #[cfg_attr(feature = "wasmtime", component(name = "key-id"))]
    pub key_id: String,
    pub salt: String,
    pub nonce: String,
    pub ciphertext: String,
}

/// One thing worth an audit record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "wasmtime",
    derive(
        wasmtime::component::ComponentType,
        wasmtime::component::Lift,
        wasmtime::component::Lower
    ),
    component(record)
)]
pub struct AuditEvent {
    pub id: String,
    pub timestamp: String,
    pub actor: Actor,
    pub action: String,
    pub resource: Vec<String>,
    pub outcome: String,
    pub reasons: Vec<String>,
    pub origin: Origin,
    /// What decided: the one policy, or the set as one identity.
    pub policy: Option<PolicyRef>,
    /// Every policy of the set, in order, with what each said.
    pub policies: Vec<PolicyOutcome>,
    pub engine: String,
    pub details: Vec<(String, String)>,
    pub encrypted: Option<EncryptedEvent>,
}

/// One line of the audit log and the chain values it carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "wasmtime",
    derive(
        wasmtime::component::ComponentType,
        wasmtime::component::Lift,
        wasmtime::component::Lower
    ),
    component(record)
)]
pub struct SealedRecord {
    pub seq: u64,
    #[cfg_attr(feature = "wasmtime", component(name = "prev-hash"))]
    pub prev_hash: String,
    pub hash: String,
    /// The canonical JSON line, without a trailing newline.
    pub line: String,
}
