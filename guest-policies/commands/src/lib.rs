//! What the function commands share: reading stdin within the limit the
//! HTTP API has, and printing an error body exactly as teller does.

use std::io::Read;
use std::process::ExitCode;
use teller_contract::{Error, ErrorCode, MAX_BODY};

/// All of stdin, or the error to print when it is too large or unreadable.
pub fn read_stdin() -> Result<Vec<u8>, Error> {
    let mut body = Vec::new();
    std::io::stdin()
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| {
            Error::bad_request(
                ErrorCode::InputUnreadable,
                format!("cannot read stdin: {e}"),
            )
        })?;
    if body.len() > MAX_BODY {
        return Err(Error::bad_request(
            ErrorCode::BodyTooLarge,
            format!("the document is over {MAX_BODY} bytes"),
        ));
    }
    Ok(body)
}

/// Prints `{"error":{"code","message","field"}}`; the error's exit status
/// (2 for bad input, 1 for a failure to run).
pub fn fail(e: &Error) -> ExitCode {
    println!("{}", e.to_json());
    ExitCode::from(e.exit_code())
}
