//! The record itself: canonical JSON, masked, chained and hashed. Shared by
//! the guest (`lib.rs`, which hashes through the host) and the `audit-seal`
//! command (`guest-policies/commands`, which has no host to ask and must
//! not import one), each with its own bindings of the same WIT types.

use super::{AuditEvent, SealedRecord, Verdict};
use sha2::{Digest, Sha256};
use teller_contract::mask::{account as mask_account, digit_runs as mask_digit_runs};

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
