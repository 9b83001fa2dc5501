//! The audit sealer as a WASI command: `{"seq":N,"prev_hash":"<64 hex>",
//! "event":{…}}` on stdin (the event as teller's audit API types serialize
//! it), the sealed record's line on stdout.
//!
//! Exit status: 0 sealed, 1 refused by the sealer, 2 bad input.

use serde::Deserialize;
use std::process::ExitCode;
use teller_commands::{fail, read_stdin};
use teller_contract::{AuditEvent, Error, ErrorCode};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SealInput {
    seq: u64,
    prev_hash: String,
    event: AuditEvent,
}

fn main() -> ExitCode {
    let input = read_stdin().and_then(|body| {
        let text = teller_contract::request::utf8(&body)?;
        let mut json = serde_json::Deserializer::from_str(text);
        let input: SealInput =
            parse(&mut json).map_err(|e| Error::bad_request(ErrorCode::InvalidInput, e))?;
        Ok(input)
    });
    let input = match input {
        Ok(input) => input,
        Err(e) => return fail(&e),
    };
    match teller_audit_record::seal(input.seq, &input.prev_hash, &input.event) {
        Ok(record) => {
            println!("{}", record.line);
            ExitCode::SUCCESS
        }
        Err(refusal) => fail(&Error::guest(ErrorCode::GuestRefused, refusal)),
    }
}

/// The whole of stdin as one `SealInput`.
fn parse(
    json: &mut serde_json::Deserializer<serde_json::de::StrRead<'_>>,
) -> Result<SealInput, String> {
    let input = SealInput::deserialize(&mut *json).map_err(|e| e.to_string())?;
    json.end().map_err(|e| e.to_string())?;
    Ok(input)
}
