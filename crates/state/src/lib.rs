//! The stores behind `bank:policy/state` (the trait is
//! [`teller_engine::state::StateStore`]), chosen by `--state URL`:
//!
//! - `embedded` or `file:DIR`: [`Embedded`], on this machine's disk (in
//!   `$XDG_STATE_HOME/teller`, else `~/.local/state/teller`, for `embedded`).
//!   Survives restarts and `kill -9`; one process per directory.
//! - `redis://[:PASSWORD@]HOST:PORT[/DB]`: [`Redis`], shared by every
//!   replica pointed at it.

#![forbid(unsafe_code)]

mod embedded;
mod redis;

pub use embedded::Embedded;
pub use redis::Redis;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use teller_contract::{Error, ErrorCode};
use teller_engine::state::{Day, StateStore};

/// `--state`'s default: the embedded store in the default directory.
pub const DEFAULT_URL: &str = "embedded";

/// `--state-timeout-ms`'s default: how long a decision waits for Redis.
pub const DEFAULT_TIMEOUT_MS: u64 = 50;

/// Opens the store `url` names. A URL that names no store, or a store that
/// cannot be opened (a locked or unwritable directory), is an error at
/// start-up; Redis itself is reached lazily, so a Redis that is down
/// refuses transfers (fail closed) until it is back.
pub fn open(url: &str, timeout: Duration) -> Result<Arc<dyn StateStore>, Error> {
    let invalid = |why: String| {
        Error::bad_request(
            ErrorCode::StateInvalid,
            format!("--state {}: {why}", redact(url)),
        )
    };
    if url == "embedded" {
        let dir = default_dir().ok_or_else(|| {
            invalid("neither XDG_STATE_HOME nor HOME is set; give file:DIR".into())
        })?;
        return open_embedded(dir);
    }
    if let Some(path) = url.strip_prefix("file:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.is_empty() {
            return Err(invalid(
                "file: needs a directory, as in file:/var/lib/teller/state".into(),
            ));
        }
        return open_embedded(PathBuf::from(path));
    }
    if url.starts_with("redis://") {
        let store = Redis::open(url, timeout).map_err(|e| invalid(e.0))?;
        return Ok(Arc::new(store));
    }
    if url.starts_with("rediss://") || url.starts_with("redis+unix://") {
        return Err(invalid(
            "only redis://HOST:PORT is built in (for TLS, run a TLS proxy beside teller)".into(),
        ));
    }
    Err(invalid(
        "not a state store: use embedded, file:DIR or redis://HOST:PORT".into(),
    ))
}

fn open_embedded(dir: PathBuf) -> Result<Arc<dyn StateStore>, Error> {
    let store =
        Embedded::open(&dir).map_err(|e| Error::bad_request(ErrorCode::StateInvalid, e.0))?;
    Ok(store)
}

/// Where `embedded` keeps its totals.
pub fn default_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".local/state"))
        })?;
    Some(base.join("teller"))
}

/// `url` without its password, for messages and `--print-config`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}"),
        None => url.to_string(),
    }
}

/// A day as the first bytes of a key: big-endian with the sign bit flipped,
/// so that byte order is day order and old days are one range.
pub(crate) fn day_bytes(day: i64) -> [u8; 8] {
    ((day as u64) ^ (1 << 63)).to_be_bytes()
}

/// The key of a total: day, key length, key.
pub(crate) fn total_bytes(day: Day, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + key.len());
    out.extend_from_slice(&day_bytes(day.number));
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key.as_bytes());
    out
}

/// The key of a request id's answer: the total's key, then the id.
pub(crate) fn request_bytes(day: Day, key: &str, id: &str) -> Vec<u8> {
    let mut out = total_bytes(day, key);
    out.extend_from_slice(id.as_bytes());
    out
}

#[cfg(test)]
mod tests;
