//! Test guest: the `transfer-check-policy` world, misbehaving on request.
//! The request's `action` picks the misbehaviour; any other action gets an
//! ordinary `allow`, so one instance of teller can show both a contained
//! failure and normal service right after it.

#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({
        world: "transfer-check-policy",
        path: "../../../wit",
    });

    #[cfg(target_arch = "wasm32")]
    use super::Hostile;
    #[cfg(target_arch = "wasm32")]
    export!(Hostile with_types_in self);
}

use bindings::bank::policy::types::{
    Decision, PolicyConfig, PolicyMetadata, Reason, TransferRequest, Verdict,
};
use bindings::exports::bank::policy::{metadata, transfer_check};

pub struct Hostile;

impl metadata::Guest for Hostile {
    fn describe() -> PolicyMetadata {
        PolicyMetadata {
            name: "hostile".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

impl transfer_check::Guest for Hostile {
    #[allow(clippy::panic)]
    fn check(_config: PolicyConfig, request: TransferRequest) -> Decision {
        match request.action.as_str() {
            "loop" => {
                // Never returns; the counter keeps the loop from being
                // optimized away.
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "trap" => trap(),
            "panic" => panic!("the hostile guest panics, as asked"),
            "oom" => {
                // Touch every MiB so that it is really taken.
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![0xAB; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "bad-utf8" => decision(bad_utf8()),
            "state-key-out-of-bounds" => {
                raw_reserve(0x7fff_fff0, 64, 0x20_0000);
                decision("reserved with a key outside memory".to_string())
            }
            "state-return-out-of-bounds" => {
                let key = b"ACC-1";
                raw_reserve(key.as_ptr() as i32, key.len() as i32, 0x7fff_fff8);
                decision("reserved into a return area outside memory".to_string())
            }
            _ => decision("allowed by the hostile guest".to_string()),
        }
    }
}

fn decision(message: String) -> Decision {
    Decision {
        allow: true,
        deny: false,
        verdict: Verdict::Allow,
        reasons: vec![Reason {
            code: "approval_required".to_string(),
            message,
        }],
    }
}

#[cfg(target_arch = "wasm32")]
fn trap() -> ! {
    core::arch::wasm32::unreachable()
}

#[cfg(not(target_arch = "wasm32"))]
fn trap() -> ! {
    std::process::abort()
}

/// A `String` holding bytes that are not UTF-8: what a buggy or hostile
/// guest in any language can hand the canonical ABI. The host must refuse
/// it when lifting, never trust it.
#[allow(unsafe_code)]
fn bad_utf8() -> String {
    // SAFETY: deliberately violated: the string is never used as a `str` in
    // this guest; it only crosses the ABI as (pointer, length).
    unsafe { String::from_utf8_unchecked(vec![b'o', b'k', 0xFF, 0xFE]) }
}

/// `bank:policy/state.reserve` called as a core function with pointers a
/// hostile guest picks, past what wit-bindgen would ever pass: the host
/// must check them as it checks a guest's results.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
fn raw_reserve(key_ptr: i32, key_len: i32, return_ptr: i32) {
    #[link(wasm_import_module = "bank:policy/state@0.2.0")]
    unsafe extern "C" {
        #[link_name = "reserve"]
        fn reserve(
            key_ptr: i32,
            key_len: i32,
            amount: i64,
            limit: i64,
            day_offset_minutes: i32,
            request_id_is_some: i32,
            request_id_ptr: i32,
            request_id_len: i32,
            return_ptr: i32,
        );
    }
    // SAFETY: deliberately violated; only the host reads these pointers.
    unsafe { reserve(key_ptr, key_len, 1, 100, 0, 0, 0, 0, return_ptr) }
}

#[cfg(not(target_arch = "wasm32"))]
fn raw_reserve(_key_ptr: i32, _key_len: i32, _return_ptr: i32) {}
