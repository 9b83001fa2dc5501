//! Decoding of the transfer document into the WIT's `TransferRequest`; the
//! document format and its rules live in `teller-request`, shared with the
//! function commands.

use crate::error::Error;
use crate::wit::{TransferRequest, User};

pub use teller_request::MAX_AMOUNT;

/// Decodes and validates one transfer document.
pub fn decode_transfer(body: &[u8]) -> Result<TransferRequest, Error> {
    let doc = teller_request::decode_transfer(body).map_err(Error::from)?;
    Ok(TransferRequest {
        action: doc.action,
        amount: doc.amount,
        currency: doc.currency,
        from_account: doc.from_account,
        to_account: doc.to_account,
        user: User {
            id: doc.user_id,
            role: doc.user_role,
        },
        audit_enabled: doc.audit_enabled,
        approval_required: doc.approval_required,
        request_id: doc.request_id,
    })
}

impl From<teller_request::Error> for Error {
    fn from(e: teller_request::Error) -> Self {
        let error = Error::bad_request(e.code, e.message);
        match e.field {
            Some(field) => error.with_field(field),
            None => error,
        }
    }
}

/// The body as text (JSON is UTF-8).
pub(crate) fn utf8(body: &[u8]) -> Result<&str, Error> {
    teller_request::utf8(body).map_err(Error::from)
}

/// A serde error as teller's error, naming the field it concerns.
pub(crate) fn json_error(e: serde_path_to_error::Error<serde_json::Error>) -> Error {
    teller_request::json_error(e).into()
}
