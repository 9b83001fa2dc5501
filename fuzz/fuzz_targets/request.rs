//! Any bytes as a transfer document: a decision input or a 400, never a
//! panic; an error never quotes an account number back.

#![no_main]

use libfuzzer_sys::fuzz_target;
use teller_contract::Kind;

fuzz_target!(|data: &[u8]| {
    match teller_contract::decode_transfer(data) {
        Ok(request) => {
            assert!(request.amount <= teller_contract::MAX_AMOUNT);
            // Whatever was accepted is one well-formed JSON text (numbers
            // in ignored fields may be beyond f64; JSON's grammar allows it).
            let text = std::str::from_utf8(data).expect("accepted, so UTF-8");
            serde_json::from_str::<serde::de::IgnoredAny>(text).expect("accepted, so JSON");
        }
        Err(e) => {
            assert_eq!(e.kind, Kind::BadRequest, "{e:?}");
            let digits = e
                .message
                .as_bytes()
                .split(|b| !b.is_ascii_digit())
                .map(<[u8]>::len)
                .max()
                .unwrap_or(0);
            assert!(digits < 12, "a long digit run in {:?}", e.message);
            let body: serde_json::Value = serde_json::from_str(&e.to_json()).expect("error JSON");
            assert!(body["error"]["code"].is_string());
        }
    }
});
