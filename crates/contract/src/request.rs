//! The transfer document: the bank's OPA input, as JSON, and its decoding
//! into the WIT's [`TransferRequest`]. teller's host and the function
//! commands (the guests built as WASI commands) both decode with this, so
//! they accept and refuse the same documents with the same words.
//!
//! Field names are the Rego policy's, so one document can be evaluated by
//! teller and by the Rego itself. Decoding is strict about types (a string
//! amount, a fractional amount or a `null` flag is an error naming the field)
//! and lenient about unknown fields, which are ignored.

use crate::MAX_AMOUNT;
use crate::error::{Error, ErrorCode};
use crate::types::{TransferRequest, User};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// Decodes and validates one transfer document.
pub fn decode_transfer(body: &[u8]) -> Result<TransferRequest, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::bad_request(
            ErrorCode::MalformedJson,
            "the request body is empty",
        ));
    }
    let doc: Document = decode_json(body)?;
    Ok(doc.into())
}

/// Decodes one JSON document, naming the field at fault when it is wrong.
/// A document that decodes is read once, without tracking where the parser
/// is (that costs an allocation per key); only one that fails is read
/// again, with its path, for the error's words.
pub fn decode_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    let text = utf8(body)?;
    if let Ok(doc) = serde_json::from_str(text) {
        return Ok(doc);
    }
    let mut json = serde_json::Deserializer::from_str(text);
    let doc = serde_path_to_error::deserialize(&mut json).map_err(json_error)?;
    json.end().map_err(|e| {
        Error::bad_request(ErrorCode::MalformedJson, format!("malformed JSON: {e}"))
    })?;
    Ok(doc)
}

/// The body as text. JSON is UTF-8 (RFC 8259); serde_json checks that only
/// in the strings it keeps, so bytes in an ignored field would otherwise
/// slip through (found by fuzzing).
pub fn utf8(body: &[u8]) -> Result<&str, Error> {
    std::str::from_utf8(body).map_err(|e| {
        Error::bad_request(
            ErrorCode::MalformedJson,
            format!("the body is not UTF-8 (at byte {})", e.valid_up_to()),
        )
    })
}

/// Maps a serde error to teller's error, naming the field it concerns.
pub fn json_error(e: serde_path_to_error::Error<serde_json::Error>) -> Error {
    let path = e.path().to_string();
    let inner = e.into_inner();
    if !inner.is_data() {
        return Error::bad_request(ErrorCode::MalformedJson, format!("malformed JSON: {inner}"));
    }
    let message = strip_position(&inner.to_string());
    if let Some(name) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        let field = if path == "." {
            name.to_string()
        } else {
            format!("{path}.{name}")
        };
        return Error::bad_request(ErrorCode::MissingField, format!("`{field}` is required"))
            .with_field(field);
    }
    Error::bad_request(ErrorCode::InvalidField, format!("`{path}`: {message}")).with_field(path)
}

/// serde_json appends " at line L column C"; the field name says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message.get(..i).unwrap_or(message).to_string(),
        None => message.to_string(),
    }
}

#[derive(Deserialize)]
struct Document {
    action: String,
    #[serde(deserialize_with = "amount")]
    amount: u64,
    #[serde(default, deserialize_with = "present")]
    currency: Option<String>,
    #[serde(default, deserialize_with = "present")]
    from_account: Option<String>,
    #[serde(default, deserialize_with = "present")]
    to_account: Option<String>,
    user: UserDoc,
    #[serde(default, deserialize_with = "present")]
    audit: Option<AuditDoc>,
    #[serde(default, deserialize_with = "present")]
    approval: Option<ApprovalDoc>,
    #[serde(default, deserialize_with = "present")]
    request_id: Option<String>,
}

#[derive(Deserialize)]
struct UserDoc {
    #[serde(default, deserialize_with = "present")]
    id: Option<String>,
    role: String,
}

#[derive(Deserialize)]
struct AuditDoc {
    #[serde(default, deserialize_with = "present")]
    enabled: Option<bool>,
}

#[derive(Deserialize)]
struct ApprovalDoc {
    #[serde(default, deserialize_with = "present")]
    required: Option<bool>,
}

impl From<Document> for TransferRequest {
    fn from(doc: Document) -> Self {
        TransferRequest {
            action: doc.action,
            amount: doc.amount,
            currency: doc.currency,
            from_account: doc.from_account,
            to_account: doc.to_account,
            user: User {
                id: doc.user.id,
                role: doc.user.role,
            },
            audit_enabled: doc.audit.and_then(|a| a.enabled),
            approval_required: doc.approval.and_then(|a| a.required),
            request_id: doc.request_id,
        }
    }
}

/// An optional field that, when present, must hold a value of its type:
/// `null` is a type error, not "absent" (Rego tells the two apart).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Minor units: an integer in 0..=2^63-1, never a fraction or a string.
fn amount<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct Amount;
    impl Visitor<'_> for Amount {
        type Value = u64;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "an integer number of minor units from 0 to 2^63-1")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            if v > MAX_AMOUNT {
                return Err(E::custom("it is above the maximum, 2^63-1"));
            }
            Ok(v)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom(format!("{v} is negative")))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
            Err(E::custom(format!(
                "{v} is not an integer; amounts are integers in minor units"
            )))
        }
    }
    d.deserialize_any(Amount)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const EXAMPLE: &str = r#"{"action":"transfer","amount":250000,"currency":"CNY",
        "from_account":"6222020200001234567","to_account":"6222020200007654321",
        "user":{"id":"u-17","role":"authorized"},"audit":{"enabled":true},
        "approval":{"required":false},"request_id":"r-1","extra":{"ignored":[1,2]}}"#;

    fn err(body: &str) -> Error {
        decode_transfer(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn bytes_that_are_not_utf8_are_refused_even_in_ignored_fields() {
        // Found by `cargo fuzz run request`.
        let mut body =
            br#"{"action":"transfer","amount":4,"user":{"role":"a"},"extra":{"de"#.to_vec();
        body.extend_from_slice(&[0xFF, 0xFE]);
        body.extend_from_slice(br#"p":1}}"#);
        let e = err_bytes(&body);
        assert_eq!(e.code, "malformed_json");
        assert!(e.message.contains("not UTF-8 (at byte 64)"), "{e}");
    }

    fn err_bytes(body: &[u8]) -> Error {
        decode_transfer(body).unwrap_err()
    }

    #[test]
    fn decodes_the_example() {
        let r = decode_transfer(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(r.amount, 250_000);
        assert_eq!(r.user.role, "authorized");
        assert_eq!(r.audit_enabled, Some(true));
        assert_eq!(r.approval_required, Some(false));
        assert_eq!(r.request_id.as_deref(), Some("r-1"));
    }

    #[test]
    fn optional_flags_may_be_absent() {
        let r = decode_transfer(br#"{"action":"x","amount":0,"user":{"role":"r"}}"#).unwrap();
        assert_eq!((r.audit_enabled, r.approval_required), (None, None));
        let r = decode_transfer(br#"{"action":"x","amount":0,"user":{"role":"r"},"audit":{}}"#)
            .unwrap();
        assert_eq!(r.audit_enabled, None);
    }

    #[test]
    fn names_the_field_at_fault() {
        let e = err(r#"{"action":"transfer","amount":"5","user":{"role":"a"}}"#);
        assert_eq!(
            (e.code, e.field.as_deref()),
            (ErrorCode::InvalidField, Some("amount"))
        );
        let e = err(r#"{"action":"transfer","amount":-5,"user":{"role":"a"}}"#);
        assert!(e.message.contains("negative"), "{e}");
        let e = err(r#"{"action":"transfer","amount":1.5,"user":{"role":"a"}}"#);
        assert!(e.message.contains("not an integer"), "{e}");
        let e = err(r#"{"action":"transfer","amount":9223372036854775808,"user":{"role":"a"}}"#);
        assert!(e.message.contains("above the maximum"), "{e}");
        let e = err(r#"{"action":"transfer","amount":5,"user":{}}"#);
        assert_eq!(
            (e.code, e.field.as_deref()),
            (ErrorCode::MissingField, Some("user.role"))
        );
        let e = err(r#"{"amount":5,"user":{"role":"a"}}"#);
        assert_eq!(e.field.as_deref(), Some("action"));
        let e = err(r#"{"action":"t","amount":5,"user":{"role":"a"},"audit":{"enabled":null}}"#);
        assert_eq!(e.field.as_deref(), Some("audit.enabled"));
        let e = err(r#"{"action":"t","amount":5,"user":{"role":"a"},"approval":"yes"}"#);
        assert_eq!(e.field.as_deref(), Some("approval"));
    }

    #[test]
    fn malformed_json_is_its_own_error() {
        for body in [
            "",
            "{",
            "{\"action\":",
            "[1,2]x",
            "nul",
            r#"{"action":"t","amount":1,"user":{"role":"r"}} {}"#,
        ] {
            let e = err(body);
            assert!(
                matches!(e.code, ErrorCode::MalformedJson | ErrorCode::InvalidField),
                "{body:?}: {e}"
            );
        }
        assert_eq!(err("{").code, "malformed_json");
        assert_eq!(err("").code, "malformed_json");
    }
}
