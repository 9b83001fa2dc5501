//! A content-addressed cache of compiled guests (wasmtime `.cwasm`,
//! WasmEdge AOT), so start-up pays for compilation once per artifact.
//!
//! Each entry starts with the SHA-256 of the rest: a truncated or corrupted
//! entry is detected, dropped and rebuilt. Loading compiled code is only
//! safe for code teller wrote itself, so the directory is private (0700).
//!
//! A cache several pods share (a volume, so that a new pod does not compile
//! what another already has) is given a key ([`ArtifactCache::sealed_with`]):
//! each entry then starts with HMAC-SHA256(key, name, rest) instead, so only
//! a holder of the key can write an entry a reader will load. One that can
//! write to the volume but lacks the key can plant no native code, nor move
//! an entry to another guest's name.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use teller_contract::Error;
use teller_contract::ErrorCode;

/// Where compiled guests are kept; `None` compiles in memory every time.
#[derive(Clone, Default)]
pub struct ArtifactCache {
    dir: Option<PathBuf>,
    /// Seals entries for a shared cache (see the module's doc).
    key: Option<Arc<Vec<u8>>>,
}

impl std::fmt::Debug for ArtifactCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactCache")
            .field("dir", &self.dir)
            .field("sealed", &self.key.is_some())
            .finish()
    }
}

/// The shortest cache key teller takes: as long as the HMAC's output.
pub const CACHE_KEY_MIN_BYTES: usize = 32;

impl ArtifactCache {
    /// A cache in `dir`, created if missing.
    pub fn at(dir: impl Into<PathBuf>) -> Result<Self, Error> {
        let dir = dir.into();
        create_private_dir(&dir).map_err(|e| {
            Error::internal(
                ErrorCode::CacheUnusable,
                format!("cannot create the cache directory {}: {e}", dir.display()),
            )
        })?;
        Ok(Self {
            dir: Some(dir),
            key: None,
        })
    }

    /// No cache: every start compiles.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Entries sealed and checked with `key` (at least
    /// [`CACHE_KEY_MIN_BYTES`]): for a cache shared by several pods.
    pub fn sealed_with(mut self, key: Vec<u8>) -> Result<Self, Error> {
        if key.len() < CACHE_KEY_MIN_BYTES {
            return Err(Error::bad_request(
                ErrorCode::CacheUnusable,
                format!(
                    "the cache key has {} bytes; it needs at least {CACHE_KEY_MIN_BYTES}",
                    key.len()
                ),
            ));
        }
        self.key = Some(Arc::new(key));
        Ok(self)
    }

    /// The header an entry named `key` with `payload` must start with.
    fn seal(&self, key: &str, payload: &[u8]) -> Vec<u8> {
        match &self.key {
            None => Sha256::digest(payload).to_vec(),
            Some(secret) => match Hmac::<Sha256>::new_from_slice(secret) {
                Ok(mut mac) => {
                    mac.update(key.as_bytes());
                    mac.update(&[0]);
                    mac.update(payload);
                    mac.finalize().into_bytes().to_vec()
                }
                // HMAC takes keys of any length; unreachable, and then no
                // entry ever matches.
                Err(_) => Vec::new(),
            },
        }
    }

    /// The conventional location: `$XDG_CACHE_HOME/teller` or
    /// `$HOME/.cache/teller`, when either is set.
    pub fn default_dir() -> Option<PathBuf> {
        std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|h| PathBuf::from(h).join(".cache"))
            })
            .map(|d| d.join("teller"))
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The intact entry stored under `key`, if any.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.read_entry(key, &self.dir.as_ref()?.join(format!("{key}.bin")))
    }

    /// The bytes stored under `key`, or those `build` makes (then stored).
    /// `key` must already name the input's hash and every setting that
    /// changes the output.
    pub fn get_or_build(
        &self,
        key: &str,
        build: impl FnOnce() -> Result<Vec<u8>, Error>,
    ) -> Result<Vec<u8>, Error> {
        let Some(dir) = &self.dir else {
            return build();
        };
        let path = dir.join(format!("{key}.bin"));
        if let Some(bytes) = self.read_entry(key, &path) {
            return Ok(bytes);
        }
        let bytes = build()?;
        if let Err(e) = write_entry(&path, &self.seal(key, &bytes), &bytes) {
            // A cache that cannot be written costs start-up time, not
            // correctness: say so and go on.
            tracing::warn!("cannot write {}: {e}", path.display());
        }
        Ok(bytes)
    }
}

impl ArtifactCache {
    /// The payload of a whole, intact entry; `None` (and the entry removed)
    /// when it is missing, truncated, corrupted or not sealed with the key.
    fn read_entry(&self, key: &str, path: &Path) -> Option<Vec<u8>> {
        let data = fs::read(path).ok()?;
        let (seal, payload) = data.split_at_checked(32)?;
        if self.seal(key, payload) == seal {
            return Some(payload.to_vec());
        }
        match self.key {
            None => tracing::warn!("cache entry {} is corrupted; rebuilding it", path.display()),
            Some(_) => tracing::warn!(
                "cache entry {} is corrupted or not sealed with this cache's key; rebuilding it",
                path.display()
            ),
        }
        let _ = fs::remove_file(path);
        None
    }
}

/// Writes atomically: a reader sees the old entry, no entry, or the new one.
fn write_entry(path: &Path, seal: &[u8], payload: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(seal)?;
    tmp.write_all(payload)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupted_and_truncated_entries_are_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::at(dir.path().join("c")).unwrap();
        let built = std::cell::Cell::new(0);
        let build = || {
            built.set(built.get() + 1);
            Ok(b"compiled".to_vec())
        };
        assert_eq!(cache.get_or_build("k", build).unwrap(), b"compiled");
        assert_eq!(cache.get_or_build("k", build).unwrap(), b"compiled");
        assert_eq!(built.get(), 1, "second call must hit the cache");

        let entry = dir.path().join("c/k.bin");
        let mut bytes = fs::read(&entry).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&entry, &bytes).unwrap();
        assert_eq!(cache.get_or_build("k", build).unwrap(), b"compiled");
        assert_eq!(built.get(), 2, "a flipped bit must force a rebuild");

        fs::write(&entry, &bytes[..10]).unwrap();
        assert_eq!(cache.get_or_build("k", build).unwrap(), b"compiled");
        assert_eq!(built.get(), 3, "a truncated entry must force a rebuild");
    }

    /// A sealed cache loads only what a holder of its key wrote under that
    /// name: not an unsealed entry, not one sealed with another key, not one
    /// moved to another name.
    #[test]
    fn a_sealed_cache_loads_only_entries_sealed_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let at = |key: &[u8]| {
            ArtifactCache::at(dir.path())
                .unwrap()
                .sealed_with(key.to_vec())
                .unwrap()
        };
        let (ours, theirs) = (at(&[7; 32]), at(&[8; 32]));
        let plain = ArtifactCache::at(dir.path()).unwrap();
        let built = std::cell::Cell::new(0);
        let build = || {
            built.set(built.get() + 1);
            Ok(b"native code".to_vec())
        };
        ours.get_or_build("a", build).unwrap();
        at(&[7; 32]).get_or_build("a", build).unwrap();
        assert_eq!(built.get(), 1, "another holder of the key loads it");
        theirs.get_or_build("a", build).unwrap();
        assert_eq!(built.get(), 2, "another key refuses it");
        ours.get_or_build("a", build).unwrap();
        plain.get_or_build("b", build).unwrap();
        assert_eq!(ours.get("b"), None, "an unsealed entry is refused");
        fs::copy(dir.path().join("a.bin"), dir.path().join("c.bin")).unwrap();
        assert_eq!(
            ours.get("c"),
            None,
            "an entry moved to another name is refused"
        );
        assert!(ours.get("a").is_some());
        assert!(
            ArtifactCache::at(dir.path())
                .unwrap()
                .sealed_with(vec![1; 31])
                .is_err()
        );
    }
}
