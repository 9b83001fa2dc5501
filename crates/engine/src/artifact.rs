//! Where guest policies come from: built into the binary, a directory, or
//! an OCI image (`teller package`), and which policies make up the set that
//! decides each transfer.
//!
//! A policy directory (or image) holds:
//!
//! - `NAME.component.wasm` (run by wasmtime) and `NAME.module.wasm` (the
//!   wasip1 core module run by WasmEdge), per compiled guest; an engine
//!   reads only the one it runs. `audit` is the audit sealer; every other
//!   `NAME` is a transfer-check policy.
//! - `NAME.rego`: a Rego policy, run by the built-in Rego guest, with
//!   `data.json` beside it as its `data`.
//! - `policies.toml` (optional): which of those policies decide, in which
//!   order (see [`Manifest`]). Without it, every compiled guest decides,
//!   then every Rego file, each group by name.
//!
//! Any guest a directory does not hold is the built-in one.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use teller_contract::Error;
use teller_contract::ErrorCode;
use teller_policy_artifacts::Guest;

/// The built-in transfer check and the audit sealer.
pub const TRANSFER_CHECK: &str = "transfer-check";
pub const AUDIT: &str = "audit";

/// The optional manifest of a policy directory.
pub const MANIFEST: &str = "policies.toml";

/// The data every Rego policy of a directory sees, unless its manifest
/// entry names another file.
pub const REGO_DATA: &str = "data.json";

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

/// `policies.toml`: the policies that decide, in order.
///
/// ```toml
/// [[policy]]
/// rego = "limits.rego"          # a Rego file; `data` defaults to data.json
/// [[policy]]
/// wasm = "transfer-check"       # transfer-check.{component,module}.wasm
/// name = "rules"                # optional; the file's stem otherwise
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(default)]
    pub policy: Vec<ManifestEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestEntry {
    pub name: Option<String>,
    pub rego: Option<String>,
    pub data: Option<String>,
    pub wasm: Option<String>,
}

impl PolicySource {
    /// `--policy-dir DIR` when given, else the built-in policies.
    pub fn dir_or_builtin(dir: Option<&std::path::Path>) -> Self {
        match dir {
            Some(dir) => PolicySource::Dir(dir.to_path_buf()),
            None => PolicySource::Builtin,
        }
    }

    /// The transfer-check policies that decide each transfer, in order.
    pub fn transfer_checks(&self) -> Result<Vec<Artifact>, Error> {
        let names = match self {
            PolicySource::Builtin => return Ok(vec![self.builtin(TRANSFER_CHECK)?]),
            _ => self.file_names()?,
        };
        let entries = match names.contains(MANIFEST) {
            true => self.manifest()?,
            false => implicit_entries(&names),
        };
        if entries.is_empty() && !names.iter().any(|n| is_guest_file(n, AUDIT)) {
            return Err(Error::bad_request(
                ErrorCode::PolicyUnreadable,
                format!(
                    "{} holds no policy: no *.rego file, no NAME.component.wasm or \
                     NAME.module.wasm, no {MANIFEST}",
                    self.describe()
                ),
            ));
        }
        if entries.is_empty() {
            return Ok(vec![self.builtin(TRANSFER_CHECK)?]);
        }
        let mut seen = BTreeSet::new();
        let mut members = Vec::new();
        for entry in entries {
            let member = self.member(entry, &names)?;
            if !seen.insert(member.name.clone()) {
                return Err(Error::bad_request(
                    ErrorCode::PolicyInvalid,
                    format!(
                        "{} has two policies named {:?}; give one a `name` in {MANIFEST}",
                        self.describe(),
                        member.name
                    ),
                ));
            }
            members.push(member);
        }
        Ok(members)
    }

    /// The audit sealer: the directory's `audit` guest, or the built-in one.
    pub fn audit(&self) -> Result<Artifact, Error> {
        match self {
            PolicySource::Builtin => self.builtin(AUDIT),
            _ if self.file_names()?.iter().any(|n| is_guest_file(n, AUDIT)) => Ok(Artifact {
                name: AUDIT.to_string(),
                named_by_manifest: false,
                origin: self.origin(),
                source: None,
            }),
            _ => self.builtin(AUDIT),
        }
    }

    /// The files that make up this source, for `teller package`: what the
    /// set and the sealer read, and the manifest.
    pub fn files(&self) -> Result<BTreeMap<String, Vec<u8>>, Error> {
        let mut files = BTreeMap::new();
        let guest = |files: &mut BTreeMap<String, Vec<u8>>,
                     name: &str,
                     a: &Artifact|
         -> Result<(), Error> {
            files.insert(format!("{name}.module.wasm"), a.module()?.into_owned());
            files.insert(
                format!("{name}.component.wasm"),
                a.component()?.into_owned(),
            );
            Ok(())
        };
        guest(&mut files, AUDIT, &self.audit()?)?;
        let members = self.transfer_checks()?;
        for member in &members {
            match &member.source {
                None => guest(&mut files, &member.file_stem(), member)?,
                Some(rego) => {
                    files.insert(rego.file.clone(), rego.text.clone().into_bytes());
                    if let Some(data) = &rego.data_file {
                        files.insert(data.clone(), rego.data.clone().into_bytes());
                    }
                }
            }
        }
        if !matches!(self, PolicySource::Builtin) && self.file_names()?.contains(MANIFEST) {
            files.insert(MANIFEST.to_string(), self.read(MANIFEST)?);
        }
        Ok(files)
    }

    pub fn describe(&self) -> String {
        match self {
            PolicySource::Builtin => "built-in".to_string(),
            PolicySource::Dir(dir) => dir.display().to_string(),
            PolicySource::Files { origin, .. } => origin.clone(),
        }
    }

    fn builtin(&self, name: &str) -> Result<Artifact, Error> {
        Ok(Artifact {
            name: name.to_string(),
            named_by_manifest: false,
            origin: Origin::Builtin(builtin(name)?),
            source: None,
        })
    }

    fn origin(&self) -> Origin {
        match self {
            PolicySource::Builtin => Origin::Builtin(teller_policy_artifacts::TRANSFER_CHECK),
            PolicySource::Dir(dir) => Origin::Dir(dir.clone()),
            PolicySource::Files { origin, files } => Origin::Files(origin.clone(), files.clone()),
        }
    }

    fn file_names(&self) -> Result<BTreeSet<String>, Error> {
        match self {
            PolicySource::Builtin => Ok(BTreeSet::new()),
            PolicySource::Files { files, .. } => Ok(files.keys().cloned().collect()),
            PolicySource::Dir(dir) => {
                let unreadable = |e: std::io::Error| {
                    Error::bad_request(
                        ErrorCode::PolicyUnreadable,
                        format!("cannot read the policy directory {}: {e}", dir.display()),
                    )
                };
                let mut names = BTreeSet::new();
                for entry in std::fs::read_dir(dir).map_err(unreadable)? {
                    let entry = entry.map_err(unreadable)?;
                    // Following symlinks: a mounted ConfigMap's files are
                    // links into its current version.
                    if std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file())
                        && let Ok(name) = entry.file_name().into_string()
                    {
                        names.insert(name);
                    }
                }
                Ok(names)
            }
        }
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, Error> {
        match self.origin().read(name)? {
            Cow::Borrowed(b) => Ok(b.to_vec()),
            Cow::Owned(b) => Ok(b),
        }
    }

    fn read_text(&self, name: &str) -> Result<String, Error> {
        String::from_utf8(self.read(name)?).map_err(|_| {
            Error::bad_request(
                ErrorCode::PolicyInvalid,
                format!("{} in {} is not UTF-8 text", name, self.describe()),
            )
        })
    }

    fn manifest(&self) -> Result<Vec<ManifestEntry>, Error> {
        let text = self.read_text(MANIFEST)?;
        let manifest: Manifest = toml::from_str(&text).map_err(|e| {
            Error::bad_request(
                ErrorCode::PolicyInvalid,
                format!(
                    "{MANIFEST} in {}: {}",
                    self.describe(),
                    e.to_string().trim()
                ),
            )
        })?;
        if manifest.policy.is_empty() {
            return Err(Error::bad_request(
                ErrorCode::PolicyInvalid,
                format!("{MANIFEST} in {} lists no [[policy]]", self.describe()),
            ));
        }
        Ok(manifest.policy)
    }

    fn member(&self, entry: ManifestEntry, names: &BTreeSet<String>) -> Result<Artifact, Error> {
        let invalid = |message: String| {
            Error::bad_request(
                ErrorCode::PolicyInvalid,
                format!("{MANIFEST} in {}: {message}", self.describe()),
            )
        };
        let missing = |file: &str| {
            Error::bad_request(
                ErrorCode::PolicyUnreadable,
                format!("{} holds no {file}", self.describe()),
            )
        };
        match (entry.rego, entry.wasm) {
            (Some(file), None) => {
                let stem = file
                    .strip_suffix(".rego")
                    .ok_or_else(|| invalid(format!("rego = {file:?} must name a .rego file")))?;
                if !names.contains(&file) {
                    return Err(missing(&file));
                }
                let data_file = match entry.data {
                    Some(data) if names.contains(&data) => Some(data),
                    Some(data) => return Err(missing(&data)),
                    None => names.contains(REGO_DATA).then(|| REGO_DATA.to_string()),
                };
                let data = match &data_file {
                    Some(f) => self.read_text(f)?,
                    None => String::new(),
                };
                let text = self.read_text(&file)?;
                let named_by_manifest = entry.name.is_some();
                let name = entry.name.unwrap_or_else(|| stem.to_string());
                check_name(&name).map_err(invalid)?;
                Ok(Artifact {
                    name,
                    named_by_manifest,
                    origin: Origin::Builtin(teller_policy_artifacts::REGO),
                    source: Some(Arc::new(RegoSource {
                        sha256: rego_digest(&file, &text, data_file.as_deref(), &data),
                        file,
                        text,
                        data_file,
                        data,
                    })),
                })
            }
            (None, Some(stem)) => {
                if entry.data.is_some() {
                    return Err(invalid(format!("wasm = {stem:?} takes no `data`")));
                }
                if !names.iter().any(|n| is_guest_file(n, &stem)) {
                    return Err(missing(&format!(
                        "{stem}.component.wasm or {stem}.module.wasm"
                    )));
                }
                if let Some(name) = &entry.name {
                    check_name(name).map_err(invalid)?;
                }
                Ok(Artifact {
                    named_by_manifest: entry.name.is_some(),
                    name: entry.name.unwrap_or_else(|| stem.clone()),
                    origin: self.origin(),
                    source: None,
                }
                .with_file_stem(stem))
            }
            _ => Err(invalid(
                "each [[policy]] names exactly one of `rego` and `wasm`".to_string(),
            )),
        }
    }
}

/// Without a manifest: every compiled guest but the sealer, then every Rego
/// file.
fn implicit_entries(names: &BTreeSet<String>) -> Vec<ManifestEntry> {
    let guests: BTreeSet<&str> = names
        .iter()
        .filter_map(|n| {
            n.strip_suffix(".component.wasm")
                .or_else(|| n.strip_suffix(".module.wasm"))
        })
        .filter(|stem| *stem != AUDIT)
        .collect();
    let wasm = guests.into_iter().map(|stem| ManifestEntry {
        name: None,
        rego: None,
        data: None,
        wasm: Some(stem.to_string()),
    });
    // `*_test.rego` files are OPA's tests, not policies.
    let rego = names
        .iter()
        .filter(|n| n.ends_with(".rego") && !n.ends_with("_test.rego"))
        .map(|file| ManifestEntry {
            name: None,
            rego: Some(file.clone()),
            data: None,
            wasm: None,
        });
    wasm.chain(rego).collect()
}

/// A policy's name goes into answers, metric labels and the audit log:
/// letters, digits, `.`, `_` and `-`, at most 64.
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    match ok {
        true => Ok(()),
        false => Err(format!(
            "policy name {name:?}: use letters, digits, '.', '_' and '-' (at most 64)"
        )),
    }
}

/// A Rego policy's digest: SHA-256 of what `sha256sum FILE [DATA]` prints
/// for it, so that `sha256sum bank.rego data.json | sha256sum` gives it and
/// text and data can never be confused.
fn rego_digest(file: &str, text: &str, data_file: Option<&str>, data: &str) -> String {
    let mut listing = format!("{}  {file}\n", sha256_hex(text.as_bytes()));
    if let Some(data_file) = data_file {
        listing.push_str(&format!("{}  {data_file}\n", sha256_hex(data.as_bytes())));
    }
    sha256_hex(listing.as_bytes())
}

fn is_guest_file(name: &str, stem: &str) -> bool {
    name == format!("{stem}.component.wasm") || name == format!("{stem}.module.wasm")
}

fn builtin(name: &str) -> Result<Guest, Error> {
    teller_policy_artifacts::ALL
        .into_iter()
        .find(|g| g.name == name)
        .ok_or_else(|| Error::internal(ErrorCode::UnknownPolicy, format!("no policy named {name}")))
}

/// A Rego policy's text and data, handed to the Rego guest once per
/// instance.
#[derive(Debug)]
pub struct RegoSource {
    /// The file's name as errors give it (`bank.rego`).
    pub file: String,
    pub text: String,
    pub data_file: Option<String>,
    /// JSON, or empty for none.
    pub data: String,
    /// What the audit log pins: see [`rego_digest`].
    pub sha256: String,
}

/// One guest policy, in whichever form an engine asks for.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// The policy's name in answers, metrics and the audit log: a
    /// manifest's `name`, or the file's stem (a compiled guest without a
    /// manifest name reports its own).
    pub name: String,
    /// Whether a manifest gave the name, which then wins over the one a
    /// compiled guest reports.
    pub named_by_manifest: bool,
    origin: Origin,
    /// For a Rego policy: what the Rego guest (the bytes) loads.
    source: Option<Arc<RegoSource>>,
}

#[derive(Debug, Clone)]
enum Origin {
    Builtin(Guest),
    Dir(PathBuf),
    Files(String, Arc<BTreeMap<String, Vec<u8>>>),
    /// A compiled guest of a directory or image whose files are named
    /// differently from the policy.
    Named(Box<Origin>, String),
}

impl Origin {
    fn read(&self, name: &str) -> Result<Cow<'static, [u8]>, Error> {
        match self {
            Origin::Builtin(g) => Err(Error::internal(
                ErrorCode::PolicyUnreadable,
                format!("the built-in {} has no file {name}", g.name),
            )),
            Origin::Dir(dir) => read(dir.join(name)),
            Origin::Files(origin, files) => file(origin, files, name),
            Origin::Named(origin, _) => origin.read(name),
        }
    }
}

impl Artifact {
    fn with_file_stem(mut self, stem: String) -> Self {
        if stem != self.name {
            self.origin = Origin::Named(Box::new(self.origin), stem);
        }
        self
    }

    /// The stem of the guest's files (`NAME.component.wasm`).
    fn file_stem(&self) -> String {
        match &self.origin {
            Origin::Named(_, stem) => stem.clone(),
            _ => self.name.clone(),
        }
    }

    /// The Rego policy this artifact's guest loads, if it is one.
    pub fn rego(&self) -> Option<&Arc<RegoSource>> {
        self.source.as_ref()
    }

    /// The `wasm32-wasip2` component.
    pub fn component(&self) -> Result<Cow<'static, [u8]>, Error> {
        match &self.origin {
            Origin::Builtin(g) => Ok(Cow::Borrowed(g.component)),
            origin => origin.read(&format!("{}.component.wasm", self.file_stem())),
        }
    }

    /// The `wasm32-wasip1` core module with canonical-ABI exports.
    pub fn module(&self) -> Result<Cow<'static, [u8]>, Error> {
        match &self.origin {
            Origin::Builtin(g) => Ok(Cow::Borrowed(g.module)),
            origin => origin.read(&format!("{}.module.wasm", self.file_stem())),
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
    // Called for every audit record: a table, not the formatter.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for b in Sha256::digest(bytes) {
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
    #[test]
    fn sha256_hex_is_lowercase_hex_of_the_digest() {
        assert_eq!(
            super::sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
