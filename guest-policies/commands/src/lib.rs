//! What the function commands share: reading stdin within the limit the
//! HTTP API has, and printing an error body exactly as teller does.

use std::io::Read;
use std::process::ExitCode;

/// The largest document read, as `teller serve` and `teller check` accept.
pub const MAX_BODY: usize = 64 * 1024;

/// Exit status for input that was refused.
pub const BAD_INPUT: u8 = 2;

/// All of stdin, or the error to print when it is too large or unreadable.
pub fn read_stdin() -> Result<Vec<u8>, teller_request::Error> {
    let mut body = Vec::new();
    std::io::stdin()
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| {
            teller_request::Error::new("input_unreadable", format!("cannot read stdin: {e}"))
        })?;
    if body.len() > MAX_BODY {
        return Err(teller_request::Error::new(
            "body_too_large",
            format!("the document is over {MAX_BODY} bytes"),
        ));
    }
    Ok(body)
}

/// Prints `{"error":{"code","message","field"}}` and gives exit status 2.
pub fn fail(e: &teller_request::Error) -> ExitCode {
    let error = match &e.field {
        Some(field) => serde_json::json!({"code": e.code, "message": e.message, "field": field}),
        None => serde_json::json!({"code": e.code, "message": e.message}),
    };
    println!("{}", serde_json::json!({ "error": error }));
    ExitCode::from(BAD_INPUT)
}
