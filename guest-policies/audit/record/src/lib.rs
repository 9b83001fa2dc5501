//! The audit record as plain Rust, with no WebAssembly bindings: canonical
//! JSON, masked, chained and hashed. The audit sealer guest runs it behind
//! the WIT (hashing through the host), the `audit-seal` function command
//! runs it as it is (SHA-256 in wasm: it has no host to ask and must not
//! import one).
//!
//! A record is one line of canonical JSON: fixed key order, no insignificant
//! whitespace, one escaping rule, details sorted by key. Its hash covers the
//! record up to and including `prev_hash`:
//!
//! ```text
//! body = {"seq":..,...,"prev_hash":"<64 hex>"}
//! hash = sha256(body)
//! line = body without its final '}' + ,"hash":"<64 hex>"}
//! ```
//!
//! so a verifier recovers `body` from the line alone and needs no knowledge of
//! the serialization. Account numbers never reach the line in clear: every
//! digit of a resource but its last four is masked, and so is every run of
//! twelve or more digits anywhere in free text. The unmasked event reaches
//! the line only as the host's ciphertext (`encrypted`), covered by the hash.

use sha2::{Digest, Sha256};
use teller_contract::mask::{account as mask_account, digit_runs as mask_digit_runs};
use teller_contract::{AuditEvent, SealedRecord, Verdict};

/// Builds the record line for `event` chained on `prev_hash`, with SHA-256
/// computed here: for the `audit-seal` command and native tests, which have
/// no host to ask.
pub fn seal(seq: u64, prev_hash: &str, event: &AuditEvent) -> Result<SealedRecord, String> {
    seal_with(seq, prev_hash, event, |body| Sha256::digest(body).into())
}

/// Builds the record line and hashes its body with `sha256`.
pub fn seal_with(
    seq: u64,
    prev_hash: &str,
    event: &AuditEvent,
    sha256: impl FnOnce(&str) -> [u8; 32],
) -> Result<SealedRecord, String> {
    if prev_hash.len() != 64
        || !prev_hash
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(format!(
            "prev-hash must be 64 lowercase hex digits, got {} characters",
            prev_hash.len()
        ));
    }
    let mut details: Vec<(String, String)> = event
        .details
        .iter()
        .map(|(k, v)| (mask_digit_runs(k), mask_digit_runs(v)))
        .collect();
    details.sort();
    if let Some(pair) = details
        .windows(2)
        .find(|w| matches!(w, [a, b] if a.0 == b.0))
    {
        let key = pair.first().map(|p| p.0.as_str()).unwrap_or_default();
        return Err(format!("details has the key {key:?} more than once"));
    }

    let mut out = String::with_capacity(512);
    out.push_str("{\"seq\":");
    out.push_str(&seq.to_string());
    field(&mut out, "id", &event.id);
    field(&mut out, "timestamp", &event.timestamp);
    out.push_str(",\"actor\":{\"id\":");
    string(&mut out, &mask_digit_runs(&event.actor.id));
    field(&mut out, "role", &mask_digit_runs(&event.actor.role));
    out.push('}');
    field(&mut out, "action", &mask_digit_runs(&event.action));
    strings(
        &mut out,
        "resource",
        event.resource.iter().map(|r| mask_account(r)),
    );
    field(&mut out, "outcome", &mask_digit_runs(&event.outcome));
    strings(
        &mut out,
        "reasons",
        event.reasons.iter().map(|r| mask_digit_runs(r)),
    );
    out.push_str(",\"origin\":{\"client\":");
    string(&mut out, &event.origin.client);
    field(
        &mut out,
        "request_id",
        &mask_digit_runs(&event.origin.request_id),
    );
    out.push('}');
    out.push_str(",\"policy\":");
    match &event.policy {
        None => out.push_str("null"),
        Some(p) => {
            out.push_str("{\"name\":");
            string(&mut out, &p.name);
            field(&mut out, "version", &p.version);
            field(&mut out, "sha256", &p.sha256);
            out.push('}');
        }
    }
    out.push_str(",\"policies\":[");
    for (i, o) in event.policies.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"name\":");
        string(&mut out, &o.policy.name);
        field(&mut out, "version", &o.policy.version);
        field(&mut out, "sha256", &o.policy.sha256);
        out.push_str(if o.allow {
            ",\"allow\":true"
        } else {
            ",\"allow\":false"
        });
        out.push_str(if o.deny {
            ",\"deny\":true"
        } else {
            ",\"deny\":false"
        });
        field(
            &mut out,
            "verdict",
            match o.verdict {
                Verdict::Allow => "allow",
                Verdict::Deny => "deny",
                Verdict::Review => "review",
            },
        );
        out.push('}');
    }
    out.push(']');
    field(&mut out, "engine", &event.engine);
    out.push_str(",\"details\":{");
    for (i, (k, v)) in details.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        string(&mut out, k);
        out.push(':');
        string(&mut out, v);
    }
    out.push('}');
    out.push_str(",\"encrypted\":");
    match &event.encrypted {
        None => out.push_str("null"),
        Some(e) => {
            out.push_str("{\"key_id\":");
            string(&mut out, &e.key_id);
            field(&mut out, "salt", &e.salt);
            field(&mut out, "nonce", &e.nonce);
            field(&mut out, "ciphertext", &e.ciphertext);
            out.push('}');
        }
    }
    field(&mut out, "prev_hash", prev_hash);
    out.push('}');

    let hash = hex(&sha256(&out));
    out.pop();
    field(&mut out, "hash", &hash);
    out.push('}');
    Ok(SealedRecord {
        seq,
        prev_hash: prev_hash.to_string(),
        hash,
        line: out,
    })
}

/// Appends `,"name":"value"`.
fn field(out: &mut String, name: &str, value: &str) {
    out.push_str(",\"");
    out.push_str(name);
    out.push_str("\":");
    string(out, value);
}

/// Appends `,"name":[...]`, each value a JSON string.
fn strings(out: &mut String, name: &str, values: impl Iterator<Item = String>) {
    out.push_str(",\"");
    out.push_str(name);
    out.push_str("\":[");
    for (i, value) in values.enumerate() {
        if i > 0 {
            out.push(',');
        }
        string(out, &value);
    }
    out.push(']');
}

/// Appends a JSON string with the one escaping rule of the canonical form.
fn string(out: &mut String, value: &str) {
    out.push('"');
    // Most values need no escape: copied whole.
    let plain = |b: &u8| *b >= 0x20 && *b != 0x7f && *b != b'"' && *b != b'\\';
    if value.as_bytes().iter().all(plain) {
        out.push_str(value);
        out.push('"');
        return;
    }
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Lowercase hex, as the record writes its hashes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        for nibble in [b >> 4, b & 0xf] {
            s.push(char::from(
                DIGITS.get(usize::from(nibble)).copied().unwrap_or(b'0'),
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use teller_contract::{Actor, Origin};

    fn event() -> AuditEvent {
        AuditEvent {
            id: "01a22533-9363-7434-bb37-681758080538".to_string(),
            timestamp: "2026-11-29T02:32:13.123Z".to_string(),
            actor: Actor {
                id: "u-17".to_string(),
                role: "authorized".to_string(),
            },
            action: "transfer".to_string(),
            resource: vec!["6222020200001234567".to_string()],
            outcome: "allow".to_string(),
            reasons: vec![],
            origin: Origin {
                client: "127.0.0.1:5000".to_string(),
                request_id: "r-1".to_string(),
            },
            policy: None,
            policies: vec![],
            engine: "wasmtime".to_string(),
            details: vec![(
                "note".to_string(),
                "card 4111111111111111 \"x\"\n".to_string(),
            )],
            encrypted: None,
        }
    }

    #[test]
    fn masks_and_chains() {
        let zero = "0".repeat(64);
        let r = seal(1, &zero, &event()).unwrap();
        assert!(r.line.contains("\"***************4567\""), "{}", r.line);
        assert!(
            r.line.contains("card ************1111 \\\"x\\\"\\n"),
            "{}",
            r.line
        );
        assert!(!r.line.contains("6222020200001234567"));
        assert!(
            r.line
                .contains("\"id\":\"01a22533-9363-7434-bb37-681758080538\"")
        );
        let body = format!("{}}}", r.line.split(",\"hash\":").next().unwrap());
        assert_eq!(hex(&Sha256::digest(body.as_bytes())), r.hash);
        let again = seal(1, &zero, &event()).unwrap();
        assert_eq!(again.line, r.line);
        let next = seal(2, &r.hash, &event()).unwrap();
        assert_ne!(next.hash, r.hash);
    }

    #[test]
    fn hashes_with_the_given_function() {
        let zero = "0".repeat(64);
        let mut bodies = Vec::new();
        let r = seal_with(1, &zero, &event(), |body| {
            bodies.push(body.to_string());
            [0xab; 32]
        })
        .unwrap();
        assert_eq!(r.hash, "ab".repeat(32));
        assert_eq!(
            bodies,
            [format!("{}}}", r.line.split(",\"hash\":").next().unwrap())]
        );
    }

    #[test]
    fn rejects_bad_prev_hash_and_duplicate_details() {
        assert!(seal(1, "abc", &event()).is_err());
        let mut e = event();
        e.details.push(("note".to_string(), "again".to_string()));
        assert!(
            seal(1, &"0".repeat(64), &e)
                .unwrap_err()
                .contains("more than once")
        );
    }
}
