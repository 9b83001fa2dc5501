//! The one error type: a stable code, a message and, where it helps, the
//! offending field. The same value becomes an HTTP body, a CLI message and a
//! function command's output, so clients and operators read the same words.

use serde::{Serialize, Serializer};
use std::fmt;

macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        /// Every error code teller gives, stable and snake_case.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, for documentation and tests.
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as clients, logs and metrics see it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $name,)*
                }
            }
        }
    };
}

error_codes! {
    // The request.
    MalformedJson = "malformed_json",
    MissingField = "missing_field",
    InvalidField = "invalid_field",
    InvalidInput = "invalid_input",
    InputUnreadable = "input_unreadable",
    BodyTooLarge = "body_too_large",
    BodyTimeout = "body_timeout",
    BodyUnreadable = "body_unreadable",
    NotFound = "not_found",
    MethodNotAllowed = "method_not_allowed",
    Overloaded = "overloaded",
    UnknownCommand = "unknown_command",
    // A guest.
    GuestTimeout = "guest_timeout",
    GuestMemoryLimit = "guest_memory_limit",
    GuestOutOfFuel = "guest_out_of_fuel",
    GuestTrap = "guest_trap",
    GuestBadOutput = "guest_bad_output",
    GuestRefused = "guest_refused",
    // The state store behind `bank:policy/state`.
    /// The store did not answer in time: the transfer is refused (503).
    StateUnavailable = "state_unavailable",
    StateInvalid = "state_invalid",
    // Policies and their configuration.
    PolicyInvalid = "policy_invalid",
    PolicyUnreadable = "policy_unreadable",
    UnknownPolicy = "unknown_policy",
    ConfigInvalid = "config_invalid",
    ConfigUnreadable = "config_unreadable",
    ReloadRejected = "reload_rejected",
    OciImageInvalid = "oci_image_invalid",
    OciImageUnreadable = "oci_image_unreadable",
    PackageFailed = "package_failed",
    // The audit log and its keys.
    AuditLogDisabled = "audit_log_disabled",
    AuditLogUnusable = "audit_log_unusable",
    AuditLogUnreadable = "audit_log_unreadable",
    AuditLogCorrupt = "audit_log_corrupt",
    AuditWriteFailed = "audit_write_failed",
    AuditRecordNotFound = "audit_record_not_found",
    AuditRecordNotEncrypted = "audit_record_not_encrypted",
    AuditRecordDamaged = "audit_record_damaged",
    AuditKeyInvalid = "audit_key_invalid",
    AuditKeyMissing = "audit_key_missing",
    AuditKeyAmbiguous = "audit_key_ambiguous",
    AuditKeyUnreadable = "audit_key_unreadable",
    AuditKeyWithoutLog = "audit_key_without_log",
    AuditEncryptFailed = "audit_encrypt_failed",
    AuditDecryptFailed = "audit_decrypt_failed",
    // teller itself.
    EngineInit = "engine_init",
    CacheUnusable = "cache_unusable",
    Runtime = "runtime",
    ListenFailed = "listen_failed",
    ServeFailed = "serve_failed",
    LogInit = "log_init",
    OutputFailed = "output_failed",
    BenchFailed = "bench_failed",
    NoCache = "no_cache",
    Internal = "internal",
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// What went wrong, in terms a client can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Who is at fault decides the HTTP status and the exit code.
    #[serde(skip)]
    pub kind: Kind,
}

/// Whose fault an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request was wrong (HTTP 400, exit 2).
    BadRequest,
    /// The request body was over the limit (HTTP 413, exit 2).
    TooLarge,
    /// No such route (HTTP 404).
    NotFound,
    /// Wrong method on a route (HTTP 405).
    MethodNotAllowed,
    /// A capability this instance was not started with (HTTP 503).
    Unavailable,
    /// Too much work in flight; retry later (HTTP 503, Retry-After).
    Overloaded,
    /// The client was too slow to send its request (HTTP 408).
    Timeout,
    /// A guest trapped, timed out or returned nonsense (HTTP 500, exit 1).
    Guest,
    /// teller itself failed: I/O, the audit log (HTTP 500, exit 1).
    Internal,
}

impl Error {
    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(Kind::BadRequest, code, message)
    }

    pub fn guest(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(Kind::Guest, code, message)
    }

    pub fn internal(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(Kind::Internal, code, message)
    }

    /// Masks any account-number-like digit run in `message` (serde quotes
    /// the offending value), so none reaches a client, a log or a terminal.
    pub fn new(kind: Kind, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: crate::mask::digit_runs(&message.into()),
            field: None,
            kind,
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn status(&self) -> u16 {
        match self.kind {
            Kind::BadRequest => 400,
            Kind::TooLarge => 413,
            Kind::NotFound => 404,
            Kind::MethodNotAllowed => 405,
            Kind::Timeout => 408,
            Kind::Guest | Kind::Internal => 500,
            Kind::Unavailable | Kind::Overloaded => 503,
        }
    }

    /// The exit status of a command: 2 for bad input, 1 for a failure to
    /// run.
    pub fn exit_code(&self) -> u8 {
        match self.kind {
            Kind::BadRequest
            | Kind::TooLarge
            | Kind::NotFound
            | Kind::MethodNotAllowed
            | Kind::Timeout => 2,
            Kind::Guest | Kind::Internal | Kind::Unavailable | Kind::Overloaded => 1,
        }
    }

    /// `{"error":{"code":..,"message":..,"field":..}}`
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Body<'a> {
            error: &'a Error,
        }
        serde_json::to_string(&Body { error: self }).unwrap_or_else(|_| {
            format!(
                r#"{{"error":{{"code":"{}","message":"unprintable"}}}}"#,
                self.code
            )
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if let Some(field) = &self.field {
            write!(f, " (field `{field}`)")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_code_is_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let name = code.as_str();
            assert!(seen.insert(name), "{name} twice");
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name}"
            );
        }
    }

    #[test]
    fn the_body_names_code_message_and_field() {
        let e = Error::bad_request(ErrorCode::InvalidField, "account 6222020200001234567")
            .with_field("amount");
        let body: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(body["error"]["code"], "invalid_field");
        assert_eq!(body["error"]["field"], "amount");
        assert_eq!(body["error"]["message"], "account ***************4567");
        assert_eq!((e.status(), e.exit_code()), (400, 2));
    }
}
