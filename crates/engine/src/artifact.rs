//! Where guest policies come from: built into the binary, a directory, or
//! an OCI image (`teller package`).
//!
//! A policy directory holds, per guest, `NAME.component.wasm` (run by
//! wasmtime) and `NAME.module.wasm` (the wasip1 core module run by WasmEdge);
//! an engine reads only the one it runs.

use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use teller_contract::Error;
use teller_contract::ErrorCode;
use teller_policy_artifacts::Guest;

/// The two guests teller needs.
pub const TRANSFER_CHECK: &str = "transfer-check";
pub const AUDIT: &str = "audit";

/// Where to find the guest policies.
#[derive(Debug, Clone)]
pub enum PolicySource {
    /// The pair compiled into this binary.
    Builtin,
    /// `--policy-dir DIR`.
    Dir(PathBuf),
    /// `--from-oci FILE`: the image's files, digests checked.
    Files {
        origin: String,
        files: Arc<BTreeMap<String, Vec<u8>>>,
    },
}

impl PolicySource {
    /// `--policy-dir DIR` when given, else the built-in policies.
    pub fn dir_or_builtin(dir: Option<&std::path::Path>) -> Self {
        match dir {
            Some(dir) => PolicySource::Dir(dir.to_path_buf()),
            None => PolicySource::Builtin,
        }
    }

    pub fn artifact(&self, name: &'static str) -> Result<Artifact, Error> {
        let builtin = teller_policy_artifacts::ALL
            .into_iter()
            .find(|g| g.name == name)
            .ok_or_else(|| {
                Error::internal(ErrorCode::UnknownPolicy, format!("no policy named {name}"))
            })?;
        Ok(Artifact {
            name,
            origin: match self {
                PolicySource::Builtin => Origin::Builtin(builtin),
                PolicySource::Dir(dir) => Origin::Dir(dir.clone()),
                PolicySource::Files { origin, files } => {
                    Origin::Files(origin.clone(), files.clone())
                }
            },
        })
    }

    pub fn describe(&self) -> String {
        match self {
            PolicySource::Builtin => "built-in".to_string(),
            PolicySource::Dir(dir) => dir.display().to_string(),
            PolicySource::Files { origin, .. } => origin.clone(),
        }
    }
}

/// One guest policy, in whichever form an engine asks for.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub name: &'static str,
    origin: Origin,
}

#[derive(Debug, Clone)]
enum Origin {
    Builtin(Guest),
    Dir(PathBuf),
    Files(String, Arc<BTreeMap<String, Vec<u8>>>),
}

impl Artifact {
    /// The `wasm32-wasip2` component.
    pub fn component(&self) -> Result<Cow<'static, [u8]>, Error> {
        match &self.origin {
            Origin::Builtin(g) => Ok(Cow::Borrowed(g.component)),
            Origin::Dir(dir) => read(dir.join(format!("{}.component.wasm", self.name))),
            Origin::Files(origin, files) => {
                file(origin, files, &format!("{}.component.wasm", self.name))
            }
        }
    }

    /// The `wasm32-wasip1` core module with canonical-ABI exports.
    pub fn module(&self) -> Result<Cow<'static, [u8]>, Error> {
        match &self.origin {
            Origin::Builtin(g) => Ok(Cow::Borrowed(g.module)),
            Origin::Dir(dir) => read(dir.join(format!("{}.module.wasm", self.name))),
            Origin::Files(origin, files) => {
                file(origin, files, &format!("{}.module.wasm", self.name))
            }
        }
    }
}

fn read(path: PathBuf) -> Result<Cow<'static, [u8]>, Error> {
    std::fs::read(&path).map(Cow::Owned).map_err(|e| {
        Error::internal(
            ErrorCode::PolicyUnreadable,
            format!("cannot read policy {}: {e}", path.display()),
        )
    })
}

fn file(
    origin: &str,
    files: &BTreeMap<String, Vec<u8>>,
    name: &str,
) -> Result<Cow<'static, [u8]>, Error> {
    files
        .get(name)
        .map(|bytes| Cow::Owned(bytes.clone()))
        .ok_or_else(|| {
            Error::internal(
                ErrorCode::PolicyUnreadable,
                format!("{origin} holds no {name}"),
            )
        })
}

/// Lowercase hex SHA-256, as policies and audit records name artifacts.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(64);
    for b in Sha256::digest(bytes) {
        let _ = write!(s, "{b:02x}");
    }
    s
}
