//! A Rego policy as a guest: regorus, compiled into the guest, evaluates a
//! bank's `.rego` file inside the WebAssembly sandbox, so a policy file is
//! held to the same deadline, memory cap and fuel as any guest.
//!
//! The host hands the file over once per instance (`source.load`), before
//! any check: parsing is paid when an instance is made, never per call.
//! A check sets `input` to the bank's transfer document and reads the
//! package's rules:
//!
//! - `allow` (required) and `deny` (optional; undefined is `false`) must be
//!   booleans;
//! - `reasons` (optional) is a set or array of `{"code", "message"}`
//!   objects;
//! - `review` (optional, boolean): when the transfer is not allowed and not
//!   denied, `review = true` asks a human instead of refusing;
//! - `version` (optional, string) is reported as the policy's version.
//!
//! Both OPA syntaxes are read: Rego v1, and v0 as OPA 0.x wrote it (the
//! bank's `bank.rego`).
//!
//! One function is teller's own: `teller.daily_total(key)` is the key's
//! total for today (the day starting at the configuration's `day_offset`)
//! from the host's state store, the total the built-in check's
//! `daily_limit` keeps per `from_account`. A store that cannot answer ends
//! the call and the host refuses the transfer.

#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({
        world: "source-policy",
        path: "../../wit",
    });

    #[cfg(target_arch = "wasm32")]
    use super::RegoGuest;
    #[cfg(target_arch = "wasm32")]
    export!(RegoGuest with_types_in self);
}

use bindings::bank::policy::types as wit;
use bindings::exports::bank::policy::{metadata, source, transfer_check};
use regorus::Value;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use teller_contract::{Decision, PolicyMetadata, Reason, TransferRequest, User, Verdict};

/// The guest's exports.
pub struct RegoGuest;

/// A policy that explodes (`numbers.range(1, 1e9)`) asks for more memory
/// than its cap in one allocation, and the abort that follows looks like any
/// trap. On a failed allocation this allocator first takes every page the
/// cap still allows, so that the host sees the guest at its memory cap and
/// reports `guest_memory_limit`, as it would for a slow leak.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod allocator {
    use std::alloc::{GlobalAlloc, Layout, System};

    struct FillOnFailure;

    #[global_allocator]
    static ALLOCATOR: FillOnFailure = FillOnFailure;

    fn fill() {
        for step in [256, 16, 1] {
            while core::arch::wasm32::memory_grow(0, step) != usize::MAX {}
        }
    }

    // SAFETY: every call is System's; `fill` only grows memory.
    unsafe impl GlobalAlloc for FillOnFailure {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { System.alloc(layout) };
            if p.is_null() {
                fill();
            }
            p
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { System.alloc_zeroed(layout) };
            if p.is_null() {
                fill();
            }
            p
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { System.dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            if p.is_null() {
                fill();
            }
            p
        }
    }
}

thread_local! {
    /// The loaded policy; a guest instance has one thread.
    static LOADED: RefCell<Option<RegoPolicy>> = const { RefCell::new(None) };
    /// The check's `day_offset`, for `teller.daily_total`.
    static DAY_OFFSET: Cell<i32> = const { Cell::new(0) };
}

/// `teller.daily_total(key)`.
fn daily_total(args: Vec<Value>) -> anyhow::Result<Value> {
    let [key] = args.as_slice() else {
        anyhow::bail!("teller.daily_total takes one argument, the key");
    };
    let Ok(key) = key.as_string() else {
        anyhow::bail!("teller.daily_total takes a string key");
    };
    read_total(key, DAY_OFFSET.get())
        .map(Value::from)
        .map_err(anyhow::Error::msg)
}

#[cfg(target_arch = "wasm32")]
fn read_total(key: &str, day_offset_minutes: i32) -> Result<u64, String> {
    Ok(bindings::bank::policy::state::daily_total(
        key,
        day_offset_minutes,
    ))
}

/// Natively (tests, `teller test`'s oracle) there is no host store.
#[cfg(not(target_arch = "wasm32"))]
fn read_total(_key: &str, _day_offset_minutes: i32) -> Result<u64, String> {
    Err("teller.daily_total reads the host's state, inside the sandbox only".to_string())
}

impl metadata::Guest for RegoGuest {
    fn describe() -> wit::PolicyMetadata {
        wit::PolicyMetadata {
            name: "rego".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

impl source::Guest for RegoGuest {
    fn load(name: String, text: String, data: String) -> Result<wit::PolicyMetadata, String> {
        LOADED.with_borrow_mut(|loaded| {
            if loaded.is_some() {
                return Err("this instance has a policy loaded already".to_string());
            }
            let policy = RegoPolicy::load(&name, &text, &data)?;
            let meta = policy.metadata.clone();
            *loaded = Some(policy);
            Ok(wit::PolicyMetadata {
                name: meta.name,
                version: meta.version,
            })
        })
    }

    fn check(
        config: wit::PolicyConfig,
        request: wit::TransferRequest,
    ) -> Result<wit::Decision, String> {
        DAY_OFFSET.set(config.day_offset_minutes);
        decide(request).map(into_wit)
    }
}

impl transfer_check::Guest for RegoGuest {
    /// For hosts that only know the `transfer-check` world: a policy that
    /// fails traps, with its message on stderr.
    #[allow(clippy::panic)]
    fn check(config: wit::PolicyConfig, request: wit::TransferRequest) -> wit::Decision {
        DAY_OFFSET.set(config.day_offset_minutes);
        match decide(request) {
            Ok(decision) => into_wit(decision),
            Err(e) => panic!("{e}"),
        }
    }
}

fn decide(request: wit::TransferRequest) -> Result<Decision, String> {
    let wit::TransferRequest {
        action,
        amount,
        currency,
        from_account,
        to_account,
        user: wit::User { id, role },
        audit_enabled,
        approval_required,
        request_id,
    } = request;
    let request = TransferRequest {
        action,
        amount,
        currency,
        from_account,
        to_account,
        user: User { id, role },
        audit_enabled,
        approval_required,
        request_id,
    };
    LOADED.with_borrow_mut(|loaded| match loaded {
        Some(policy) => policy.decide(&request),
        None => Err("no policy is loaded: the host must call source.load first".to_string()),
    })
}

fn into_wit(d: Decision) -> wit::Decision {
    wit::Decision {
        allow: d.allow,
        deny: d.deny,
        verdict: match d.verdict {
            Verdict::Allow => wit::Verdict::Allow,
            Verdict::Deny => wit::Verdict::Deny,
            Verdict::Review => wit::Verdict::Review,
        },
        reasons: d
            .reasons
            .into_iter()
            .map(|Reason { code, message }| wit::Reason { code, message })
            .collect(),
    }
}

/// One parsed Rego file and the rule paths a check reads.
pub struct RegoPolicy {
    engine: regorus::Engine,
    metadata: PolicyMetadata,
    allow: String,
    deny: Option<String>,
    reasons: Option<String>,
    review: Option<String>,
}

impl RegoPolicy {
    /// Parses `text` (file `name`) as Rego v1, or else v0, and adds `data`
    /// (a JSON object; empty for none). Errors name the file, line and
    /// column.
    pub fn load(name: &str, text: &str, data: &str) -> Result<Self, String> {
        let (mut engine, package) = match parse(name, text, false) {
            Ok(parsed) => parsed,
            Err(v1) => match parse(name, text, true) {
                Ok(parsed) => parsed,
                Err(v0) => {
                    // The reading that got further is the one meant.
                    let (v1, v0) = (ParseError::new(&v1), ParseError::new(&v0));
                    let (first, as_first, other, as_other) = if v0.at > v1.at {
                        (v0, "v0", v1, "v1")
                    } else {
                        (v1, "v1", v0, "v0")
                    };
                    return Err(format!(
                        "{first} (read as Rego {as_first}; as Rego {as_other}: {other})"
                    ));
                }
            },
        };
        if !data.trim().is_empty() {
            let value = Value::from_json_str(data)
                .map_err(|e| format!("the data for {name} is not JSON: {e}"))?;
            if value.as_object().is_err() {
                return Err(format!("the data for {name} must be a JSON object"));
            }
            engine
                .add_data(value)
                .map_err(|e| format!("the data for {name} cannot be added: {e}"))?;
        }
        let declared = |rule: &str| -> Result<Option<String>, String> {
            match engine.has_declared_rule_rooted_at(name, rule) {
                Ok(true) => Ok(Some(format!("{package}.{rule}"))),
                Ok(false) => Ok(None),
                Err(e) => Err(format!("{name}: {e}")),
            }
        };
        let allow = declared("allow")?.ok_or_else(|| {
            format!("{name}: package {package} has no `allow` rule; a policy must define one")
        })?;
        let (deny, reasons, review) =
            (declared("deny")?, declared("reasons")?, declared("review")?);
        let version = match declared("version")? {
            None => "0.0.0".to_string(),
            Some(rule) => {
                engine.set_input(Value::new_object());
                match engine.eval_rule(rule.clone()) {
                    Ok(Value::String(v)) => v.to_string(),
                    Ok(other) => {
                        return Err(format!("{rule} must be a string, not {}", describe(&other)));
                    }
                    Err(e) => {
                        return Err(format!("{rule}: {}", ParseError::new(&e.to_string())));
                    }
                }
            }
        };
        let stem = name.rsplit('/').next().unwrap_or(name);
        Ok(RegoPolicy {
            engine,
            metadata: PolicyMetadata {
                name: stem.strip_suffix(".rego").unwrap_or(stem).to_string(),
                version,
            },
            allow,
            deny,
            reasons,
            review,
        })
    }

    pub fn metadata(&self) -> &PolicyMetadata {
        &self.metadata
    }

    /// Decides one transfer document.
    pub fn decide(&mut self, request: &TransferRequest) -> Result<Decision, String> {
        self.engine.set_input(input_document(request));
        let allow = self.boolean(&self.allow.clone())?.unwrap_or(false);
        let deny = match self.deny.clone() {
            Some(rule) => self.boolean(&rule)?.unwrap_or(false),
            None => false,
        };
        let review = match self.review.clone() {
            Some(rule) if !allow && !deny => self.boolean(&rule)?.unwrap_or(false),
            _ => false,
        };
        let reasons = match self.reasons.clone() {
            Some(rule) => self.reasons(&rule)?,
            None => Vec::new(),
        };
        let verdict = if allow && !deny {
            Verdict::Allow
        } else if review {
            Verdict::Review
        } else {
            Verdict::Deny
        };
        Ok(Decision {
            allow,
            deny,
            verdict,
            reasons,
        })
    }

    /// A boolean rule's value; `None` when it is undefined.
    fn boolean(&mut self, rule: &str) -> Result<Option<bool>, String> {
        match self.engine.eval_rule(rule.to_string()) {
            Ok(Value::Bool(b)) => Ok(Some(b)),
            Ok(Value::Undefined) => Ok(None),
            Ok(other) => Err(format!(
                "{rule} must be a boolean, not {}",
                describe(&other)
            )),
            Err(e) => Err(format!("{rule}: {}", ParseError::new(&e.to_string()))),
        }
    }

    fn reasons(&mut self, rule: &str) -> Result<Vec<Reason>, String> {
        let value = self
            .engine
            .eval_rule(rule.to_string())
            .map_err(|e| format!("{rule}: {}", ParseError::new(&e.to_string())))?;
        let items: Vec<Value> = match &value {
            Value::Undefined => return Ok(Vec::new()),
            Value::Set(set) => set.iter().cloned().collect(),
            Value::Array(array) => array.iter().cloned().collect(),
            other => {
                return Err(format!(
                    "{rule} must be a set or array of {{code, message}} objects, not {}",
                    describe(other)
                ));
            }
        };
        items
            .iter()
            .map(|item| {
                let field = |key: &str| match item
                    .as_object()
                    .ok()
                    .and_then(|o| o.get(&Value::from(key)))
                {
                    Some(Value::String(s)) => Ok(s.to_string()),
                    Some(other) => Err(format!(
                        "{rule}: a reason's {key:?} must be a string, not {}",
                        describe(other)
                    )),
                    None => Err(format!(
                        "{rule}: each reason must be an object with a string {key:?}"
                    )),
                };
                Ok(Reason {
                    code: field("code")?,
                    message: field("message")?,
                })
            })
            .collect()
    }
}

/// regorus's error (parsing or evaluating), as one line:
/// `file:line:column: message`.
struct ParseError {
    location: String,
    at: (u32, u32),
    message: String,
}

impl ParseError {
    fn new(rendered: &str) -> Self {
        let location = rendered
            .lines()
            .find_map(|l| l.trim().strip_prefix("--> "))
            .unwrap_or("")
            .to_string();
        let mut numbers = location.rsplit(':').map(|n| n.parse::<u32>().unwrap_or(0));
        let column = numbers.next().unwrap_or(0);
        let line = numbers.next().unwrap_or(0);
        let message = rendered
            .lines()
            .find_map(|l| l.strip_prefix("error: "))
            .unwrap_or(rendered.trim())
            .to_string();
        ParseError {
            location,
            at: (line, column),
            message,
        }
    }
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.location.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.location, self.message)
        }
    }
}

fn parse(name: &str, text: &str, v0: bool) -> Result<(regorus::Engine, String), String> {
    let mut engine = regorus::Engine::new();
    engine.set_rego_v0(v0);
    // Rego's own errors for undefined builtins and bad arguments, not a
    // silent undefined: a policy that fails must say so.
    engine.set_strict_builtin_errors(true);
    engine
        .add_extension("teller.daily_total".to_string(), 1, Box::new(daily_total))
        .map_err(|e| format!("{name}: {e}"))?;
    let package = engine
        .add_policy(name.to_string(), text.to_string())
        .map_err(|e| e.to_string())?;
    Ok((engine, package))
}

/// The bank's OPA input document for `request`: fields the document left
/// out stay undefined, as they were for OPA.
pub fn input_document(request: &TransferRequest) -> Value {
    let mut doc = BTreeMap::new();
    let mut put = |key: &str, value: Value| {
        doc.insert(Value::from(key), value);
    };
    put("action", Value::from(request.action.as_str()));
    put("amount", Value::from(request.amount));
    let optional = [
        ("currency", &request.currency),
        ("from_account", &request.from_account),
        ("to_account", &request.to_account),
        ("request_id", &request.request_id),
    ];
    for (key, value) in optional {
        if let Some(v) = value {
            put(key, Value::from(v.as_str()));
        }
    }
    let mut user = BTreeMap::new();
    if let Some(id) = &request.user.id {
        user.insert(Value::from("id"), Value::from(id.as_str()));
    }
    user.insert(Value::from("role"), Value::from(request.user.role.as_str()));
    put("user", Value::from(user));
    let flag = |key: &str, value: Option<bool>| -> Option<Value> {
        value.map(|v| Value::from(BTreeMap::from([(Value::from(key), Value::from(v))])))
    };
    if let Some(audit) = flag("enabled", request.audit_enabled) {
        put("audit", audit);
    }
    if let Some(approval) = flag("required", request.approval_required) {
        put("approval", approval);
    }
    Value::from(doc)
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Set(_) => "a set",
        Value::Object(_) => "an object",
        Value::Undefined => "undefined",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const BANK: &str = include_str!("../../transfer-check/bank.rego");

    fn request(
        amount: u64,
        role: &str,
        audit: Option<bool>,
        approval: Option<bool>,
    ) -> TransferRequest {
        TransferRequest {
            action: "transfer".to_string(),
            amount,
            currency: Some("CNY".to_string()),
            from_account: None,
            to_account: None,
            user: User {
                id: None,
                role: role.to_string(),
            },
            audit_enabled: audit,
            approval_required: approval,
            request_id: None,
        }
    }

    #[test]
    fn the_banks_v0_policy_decides_as_written() {
        let mut p = RegoPolicy::load("bank.rego", BANK, "").unwrap();
        assert_eq!(p.metadata().name, "bank");
        let d = p
            .decide(&request(1_000_000, "authorized", Some(true), None))
            .unwrap();
        assert!(d.allow && !d.deny && d.verdict == Verdict::Allow);
        let d = p
            .decide(&request(1_000_001, "authorized", Some(true), None))
            .unwrap();
        assert!(!d.allow && d.deny && d.verdict == Verdict::Deny);
        let d = p
            .decide(&request(1_000_001, "authorized", Some(true), Some(true)))
            .unwrap();
        assert!(!d.allow && !d.deny && d.verdict == Verdict::Deny);
        let d = p.decide(&request(5, "authorized", None, None)).unwrap();
        assert!(!d.allow && !d.deny);
    }

    #[test]
    fn v1_with_reasons_review_version_and_data() {
        let text = r#"package limits
import rego.v1
version := "2.1.0"
default allow := false
allow if input.amount <= data.max
deny if input.user.role == "blocked"
review if input.approval.required
reasons contains {"code": "too_much", "message": sprintf("%d > %d", [input.amount, data.max])} if input.amount > data.max
"#;
        let mut p = RegoPolicy::load("dir/limits.rego", text, r#"{"max": 10}"#).unwrap();
        assert_eq!(p.metadata().name, "limits");
        assert_eq!(p.metadata().version, "2.1.0");
        let d = p.decide(&request(11, "x", None, Some(true))).unwrap();
        assert_eq!(d.verdict, Verdict::Review);
        assert_eq!(d.reasons.len(), 1);
        assert_eq!(d.reasons[0].code, "too_much");
        assert_eq!(d.reasons[0].message, "11 > 10");
        let d = p.decide(&request(1, "blocked", None, None)).unwrap();
        assert!(d.allow && d.deny && d.verdict == Verdict::Deny);
    }

    #[test]
    fn errors_name_the_file_line_and_column() {
        let e = RegoPolicy::load("bad.rego", "package bad\n\nallow {\n  input.x ==\n}\n", "")
            .err()
            .unwrap();
        assert!(e.starts_with("bad.rego:3:7: "), "{e}");
        assert!(
            e.contains("(read as Rego v1; as Rego v0: bad.rego:3:7: "),
            "{e}"
        );
        // A v1 file broken past its first rule is reported as v1.
        let e = RegoPolicy::load(
            "v1.rego",
            "package v\nimport rego.v1\nallow if {\n  input.x == \n}\n",
            "",
        )
        .err()
        .unwrap();
        assert!(
            e.starts_with("v1.rego:") && e.contains("read as Rego v1"),
            "{e}"
        );
        let e = RegoPolicy::load(
            "none.rego",
            "package none\nimport rego.v1\ndeny if true\n",
            "",
        )
        .err()
        .unwrap();
        assert!(e.contains("no `allow` rule"), "{e}");
        let mut p = RegoPolicy::load(
            "str.rego",
            "package s\nimport rego.v1\nallow := \"yes\"\n",
            "",
        )
        .unwrap();
        let e = p.decide(&request(1, "x", None, None)).unwrap_err();
        assert!(e.contains("must be a boolean, not a string"), "{e}");
        let mut p = RegoPolicy::load(
            "div.rego",
            "package d\nimport rego.v1\nallow if 1 / (input.amount - input.amount) > 0\n",
            "",
        )
        .unwrap();
        let e = p.decide(&request(1, "x", None, None)).unwrap_err();
        assert!(e.contains("data.d.allow"), "{e}");
    }
}
