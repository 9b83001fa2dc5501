//! A content-addressed cache of compiled guests (wasmtime `.cwasm`,
//! WasmEdge AOT), so start-up pays for compilation once per artifact.
//!
//! Each entry starts with the SHA-256 of the rest: a truncated or corrupted
//! entry is detected, dropped and rebuilt. Loading compiled code is only
//! safe for code teller wrote itself, so the directory is private (0700).

use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use teller_contract::Error;
use teller_contract::ErrorCode;

/// Where compiled guests are kept; `None` compiles in memory every time.
#[derive(Debug, Clone, Default)]
pub struct ArtifactCache {
    dir: Option<PathBuf>,
}

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
        Ok(Self { dir: Some(dir) })
    }

    /// No cache: every start compiles.
    pub fn disabled() -> Self {
        Self { dir: None }
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
        read_entry(&self.dir.as_ref()?.join(format!("{key}.bin")))
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
        if let Some(bytes) = read_entry(&path) {
            return Ok(bytes);
        }
        let bytes = build()?;
        if let Err(e) = write_entry(&path, &bytes) {
            // A cache that cannot be written costs start-up time, not
            // correctness: say so and go on.
            tracing::warn!("cannot write {}: {e}", path.display());
        }
        Ok(bytes)
    }
}

/// The payload of a whole, intact entry; `None` (and the entry removed) when
/// it is missing, truncated or corrupted.
fn read_entry(path: &Path) -> Option<Vec<u8>> {
    let data = fs::read(path).ok()?;
    let (digest, payload) = data.split_at_checked(32)?;
    if Sha256::digest(payload).as_slice() == digest {
        return Some(payload.to_vec());
    }
    tracing::warn!("cache entry {} is corrupted; rebuilding it", path.display());
    let _ = fs::remove_file(path);
    None
}

/// Writes atomically: a reader sees the old entry, no entry, or the new one.
fn write_entry(path: &Path, payload: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(&Sha256::digest(payload))?;
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
}
