//! The one error type of teller: a stable code, a message and, where it
//! helps, the offending field. The same value becomes an HTTP body and a CLI
//! message, so clients and operators read the same words.

use serde::Serialize;
use std::fmt;

/// What went wrong, in terms a client can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Error {
    /// Stable, machine-readable, snake_case (`invalid_field`, `guest_trap`).
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Who is at fault decides the HTTP status and the CLI exit code.
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
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Kind::BadRequest, code, message)
    }

    pub fn guest(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Kind::Guest, code, message)
    }

    pub fn internal(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Kind::Internal, code, message)
    }

    /// Masks any account-number-like digit run in `message` (serde quotes
    /// the offending value), so none reaches a client, a log or a terminal.
    pub fn new(kind: Kind, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: teller_request::mask::digit_runs(&message.into()),
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

    /// The CLI's exit status: 2 for bad input, 1 for a failure to run.
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
