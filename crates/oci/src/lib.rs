//! teller's policies as an OCI image: `teller package` writes the guest
//! policies and their configuration, or one function command, as an OCI
//! image layout in a tar (what `ctr images import` and registries take);
//! `teller serve --from-oci` reads one back, checking every digest and size
//! on the way.
//!
//! ```text
//! oci-layout, index.json   → the manifest, named by annotations
//! blobs/sha256/<config>    application/vnd.oci.image.config.v1+json:
//!                          architecture wasm, os wasip1, the entrypoint,
//!                          command
//!                          rootfs.diff_ids
//! blobs/sha256/<layer>…    application/vnd.oci.image.layer.v1.tar, one file
//!                          each at the root, titled by its name:
//!                          NAME.module.wasm (wasip1, WasmEdge),
//!                          NAME.component.wasm (wasip2, wasmtime),
//!                          teller.toml; or a command's NAME.wasm
//! ```
//!
//! Each file travels in a plain tar layer (the "compat" wasm image variant)
//! rather than as a raw `application/wasm` layer: containerd before 1.6.25
//! and 1.7.7 cannot unpack raw wasm layers, and a pod's image must be
//! unpacked to start. Unpacked, the files sit at the container's root, where
//! the node's shim (`containerd-shim-wasmedge-v1`) reads them.

#![forbid(unsafe_code)]

use oci_spec::image::{
    Descriptor, DescriptorBuilder, Digest, ImageIndex, ImageIndexBuilder, ImageManifest,
    ImageManifestBuilder, MediaType, SCHEMA_VERSION,
};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::Path;
use std::str::FromStr;
use teller_contract::Error;
use teller_contract::ErrorCode;
use teller_engine::artifact::sha256_hex;

/// Every layer: an uncompressed tar (so its digest is its diff id).
pub const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// The image config: an OCI image's, with the wasm platform.
pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// The layer's file name.
pub const TITLE: &str = "org.opencontainers.image.title";
/// The name containerd gives an imported image.
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The file name of the policy configuration layer.
pub const CONFIG_FILE: &str = "teller.toml";

/// Images larger than this are refused when read.
const MAX_IMAGE_BYTES: u64 = 512 << 20;

/// One file of the image, as a layer.
pub struct Layer {
    pub title: String,
    pub bytes: Vec<u8>,
}

/// What `write` produced.
#[derive(Debug)]
pub struct Written {
    pub manifest_digest: String,
    pub layers: usize,
    pub bytes: u64,
}

/// Writes `layers` as the image `name` (such as
/// `registry.bank.internal/bank-core/teller-policies:0.1.0`) to `out`,
/// through a temporary file renamed into place once it is on disk.
/// `entrypoint` and `cmd` are what the container runs: `teller` and
/// `serve` for the policies (a pod's `args` replace `serve`), `/NAME.wasm`
/// and nothing for a command.
pub fn write(
    out: &Path,
    name: &str,
    entrypoint: &[&str],
    cmd: &[&str],
    layers: &[Layer],
) -> Result<Written, Error> {
    let failed = |what: String| Error::internal(ErrorCode::PackageFailed, what);
    let spec = |e: oci_spec::OciSpecError| failed(format!("building the OCI manifest: {e}"));
    let mut blobs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut add = |bytes: Vec<u8>| {
        let hex = sha256_hex(&bytes);
        let size = bytes.len() as u64;
        blobs.insert(hex.clone(), bytes);
        (hex, size)
    };

    let mut descriptors = Vec::new();
    for layer in layers {
        let tar = layer_tar(&layer.title, &layer.bytes)
            .map_err(|e| failed(format!("layer {}: {e}", layer.title)))?;
        let (hex, size) = add(tar);
        descriptors.push(descriptor(
            LAYER,
            &hex,
            size,
            [(TITLE.to_string(), layer.title.clone())].into(),
        )?);
    }
    let diff_ids: Vec<String> = descriptors.iter().map(|d| d.digest().to_string()).collect();
    let config = serde_json::json!({
        "created": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        "author": "teller",
        "architecture": "wasm",
        "os": "wasip1",
        "config": { "Entrypoint": entrypoint, "Cmd": cmd },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    let (config_hex, config_size) = add(config.to_string().into_bytes());
    let manifest = ImageManifestBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(
            CONFIG,
            &config_hex,
            config_size,
            HashMap::new(),
        )?)
        .layers(descriptors)
        .annotations(HashMap::from([(
            "org.opencontainers.image.version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        )]))
        .build()
        .map_err(spec)?;
    let manifest_json = manifest.to_string().map_err(spec)?.into_bytes();
    let (manifest_hex, manifest_size) = add(manifest_json);
    let index = ImageIndexBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![
            DescriptorBuilder::default()
                .media_type(MediaType::ImageManifest)
                .digest(digest(&manifest_hex)?)
                .size(manifest_size)
                .annotations(HashMap::from([
                    (REF_NAME.to_string(), name.to_string()),
                    (CONTAINERD_NAME.to_string(), name.to_string()),
                ]))
                .build()
                .map_err(spec)?,
        ])
        .build()
        .map_err(spec)?;

    let index_json = index.to_string().map_err(spec)?;
    let tmp = out.with_extension("tar.partial");
    let written = std::fs::File::create(&tmp).and_then(|file| {
        let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
        append(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        append(&mut tar, "index.json", index_json.as_bytes())?;
        for (hex, bytes) in &blobs {
            append(&mut tar, &format!("blobs/sha256/{hex}"), bytes)?;
        }
        let file = tar.into_inner()?.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, out)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(failed(format!("cannot write {}: {e}", out.display())));
    }
    Ok(Written {
        manifest_digest: format!("sha256:{manifest_hex}"),
        layers: layers.len(),
        bytes: std::fs::metadata(out).map(|m| m.len()).unwrap_or(0),
    })
}

/// A layer: a tar holding `bytes` as the file `title` at the root.
fn layer_tar(title: &str, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    append(&mut tar, title, bytes)?;
    tar.into_inner()
}

/// One regular file, owned by root, dated 1970: the same policies give the
/// same tar.
fn append<W: Write>(tar: &mut tar::Builder<W>, path: &str, bytes: &[u8]) -> std::io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, path, bytes)
}

fn digest(hex: &str) -> Result<Digest, Error> {
    Digest::from_str(&format!("sha256:{hex}"))
        .map_err(|e| Error::internal(ErrorCode::PackageFailed, format!("digest: {e}")))
}

fn descriptor(
    media_type: &str,
    hex: &str,
    size: u64,
    annotations: HashMap<String, String>,
) -> Result<Descriptor, Error> {
    let mut builder = DescriptorBuilder::default()
        .media_type(MediaType::from(media_type))
        .digest(digest(hex)?)
        .size(size);
    if !annotations.is_empty() {
        builder = builder.annotations(annotations);
    }
    builder
        .build()
        .map_err(|e| Error::internal(ErrorCode::PackageFailed, format!("descriptor: {e}")))
}

/// The files of an image read back: layer title → bytes, every one checked
/// against its digest.
#[derive(Debug, Clone)]
pub struct Image {
    pub name: Option<String>,
    pub manifest_digest: String,
    pub files: BTreeMap<String, Vec<u8>>,
}

/// The one file a layer's tar holds, which must be named `title`.
fn layer_file(tar: &[u8], title: &str) -> Result<Vec<u8>, String> {
    let mut archive = tar::Archive::new(tar);
    let mut found = None;
    for entry in archive.entries().map_err(|e| format!("not a tar: {e}"))? {
        let mut entry = entry.map_err(|e| format!("a damaged tar entry: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| format!("an entry with a bad name: {e}"))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        if path != title || !entry.header().entry_type().is_file() || found.is_some() {
            return Err(format!("it must hold the one file {title}, not {path}"));
        }
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read {path}: {e}"))?;
        found = Some(bytes);
    }
    found.ok_or_else(|| format!("it holds no file {title}"))
}

/// Reads the image layout tar at `path`.
pub fn read(path: &Path) -> Result<Image, Error> {
    let bad = |why: String| {
        Error::bad_request(
            ErrorCode::OciImageInvalid,
            format!("{} is not a usable teller image: {why}", path.display()),
        )
    };
    let file = std::fs::File::open(path).map_err(|e| {
        Error::bad_request(
            ErrorCode::OciImageUnreadable,
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    let mut entries: HashMap<String, Vec<u8>> = HashMap::new();
    let mut total = 0u64;
    let mut archive = tar::Archive::new(file);
    for entry in archive
        .entries()
        .map_err(|e| bad(format!("not a tar: {e}")))?
    {
        let mut entry = entry.map_err(|e| bad(format!("a damaged tar entry: {e}")))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        total += entry.size();
        if total > MAX_IMAGE_BYTES {
            return Err(bad(format!("it is over {} MiB", MAX_IMAGE_BYTES >> 20)));
        }
        let name = entry
            .path()
            .map_err(|e| bad(format!("an entry with a bad name: {e}")))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| bad(format!("cannot read {name}: {e}")))?;
        entries.insert(name, bytes);
    }
    let layout = entries
        .get("oci-layout")
        .ok_or_else(|| bad("no oci-layout file".into()))?;
    let layout: serde_json::Value =
        serde_json::from_slice(layout).map_err(|e| bad(format!("oci-layout: {e}")))?;
    if layout.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
        return Err(bad(format!("unsupported oci-layout {layout}")));
    }
    let index = entries
        .get("index.json")
        .ok_or_else(|| bad("no index.json".into()))?;
    let index = ImageIndex::from_reader(&index[..]).map_err(|e| bad(format!("index.json: {e}")))?;
    let [entry] = index.manifests().as_slice() else {
        return Err(bad(format!(
            "index.json lists {} manifests; a teller image has one",
            index.manifests().len()
        )));
    };
    let blob = |d: &Descriptor, what: &str| -> Result<&Vec<u8>, Error> {
        let hex = d
            .as_digest_sha256()
            .ok_or_else(|| bad(format!("{what} is not addressed by sha256")))?;
        let bytes = entries
            .get(&format!("blobs/sha256/{hex}"))
            .ok_or_else(|| bad(format!("{what} (sha256:{hex}) is missing")))?;
        if bytes.len() as u64 != d.size() || sha256_hex(bytes) != hex {
            return Err(bad(format!(
                "{what} does not match its digest sha256:{hex}: it was altered"
            )));
        }
        Ok(bytes)
    };
    let manifest = ImageManifest::from_reader(&blob(entry, "the manifest")?[..])
        .map_err(|e| bad(format!("the manifest: {e}")))?;
    if manifest.config().media_type().to_string() != CONFIG {
        return Err(bad(format!(
            "its config is {}, not {CONFIG}",
            manifest.config().media_type()
        )));
    }
    let config: serde_json::Value = serde_json::from_slice(blob(manifest.config(), "the config")?)
        .map_err(|e| bad(format!("the config: {e}")))?;
    let architecture = config.pointer("/architecture");
    if architecture.and_then(|a| a.as_str()) != Some("wasm") {
        return Err(bad(format!(
            "its architecture is {}, not wasm",
            architecture.unwrap_or(&serde_json::Value::Null)
        )));
    }
    let diff_ids = config
        .pointer("/rootfs/diff_ids")
        .and_then(|d| d.as_array())
        .map_or(0, Vec::len);
    if diff_ids != manifest.layers().len() {
        return Err(bad(format!(
            "its config lists {diff_ids} diff ids for {} layers",
            manifest.layers().len()
        )));
    }
    let mut files = BTreeMap::new();
    for (i, layer) in manifest.layers().iter().enumerate() {
        let title = layer
            .annotations()
            .as_ref()
            .and_then(|a| a.get(TITLE))
            .ok_or_else(|| bad(format!("layer {} has no {TITLE}", layer.digest())))?;
        let media = layer.media_type().to_string();
        if media != LAYER {
            return Err(bad(format!("layer {title} has media type {media}")));
        }
        let diff_id = config.pointer(&format!("/rootfs/diff_ids/{i}"));
        if diff_id.and_then(|d| d.as_str()) != Some(layer.digest().as_ref()) {
            return Err(bad(format!(
                "layer {title} is not the config's diff id {i}"
            )));
        }
        let tar = blob(layer, &format!("layer {title}"))?;
        let bytes = layer_file(tar, title).map_err(|why| bad(format!("layer {title}: {why}")))?;
        files.insert(title.clone(), bytes);
    }
    Ok(Image {
        name: entry
            .annotations()
            .as_ref()
            .and_then(|a| a.get(REF_NAME))
            .cloned(),
        manifest_digest: entry.digest().to_string(),
        files,
    })
}
