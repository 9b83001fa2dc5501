//! teller's policies as an OCI image: `teller package` writes the guest
//! policies and their configuration as an OCI image layout in a tar (what
//! `ctr images import` and registries take), with the media types of the
//! CNCF wasm OCI artifact format; `teller serve --from-oci` reads one back,
//! checking every digest and size on the way.
//!
//! ```text
//! oci-layout, index.json            → the manifest, named by annotations
//! blobs/sha256/<manifest>           config + one layer per file
//! blobs/sha256/<config>             application/vnd.wasm.config.v0+json
//! blobs/sha256/<layer>…             application/wasm: NAME.module.wasm
//!                                   (wasip1, WasmEdge) and
//!                                   NAME.component.wasm (wasip2, wasmtime);
//!                                   application/vnd.teller.policy.config.v1+toml
//! ```

use crate::error::Error;
use crate::policy::sha256_hex;
use oci_spec::image::{
    Descriptor, DescriptorBuilder, Digest, ImageIndex, ImageIndexBuilder, ImageManifest,
    ImageManifestBuilder, MediaType, SCHEMA_VERSION,
};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::Path;
use std::str::FromStr;

/// A wasm module or component, one per layer.
pub const WASM_LAYER: &str = "application/wasm";
/// The CNCF wasm OCI artifact config.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// The policy parameters (`--config` TOML).
pub const POLICY_CONFIG_LAYER: &str = "application/vnd.teller.policy.config.v1+toml";
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
    pub media_type: &'static str,
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
pub fn write(out: &Path, name: &str, layers: &[Layer]) -> Result<Written, Error> {
    let failed = |what: String| Error::internal("package_failed", what);
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
        let (hex, size) = add(layer.bytes.clone());
        descriptors.push(descriptor(
            layer.media_type,
            &hex,
            size,
            [(TITLE.to_string(), layer.title.clone())].into(),
        )?);
    }
    let layer_digests: Vec<String> = descriptors.iter().map(|d| d.digest().to_string()).collect();
    let config = serde_json::json!({
        "created": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        "author": "teller",
        "architecture": "wasm",
        "os": "wasip1",
        "layerDigests": layer_digests,
    });
    let (config_hex, config_size) = add(config.to_string().into_bytes());
    let manifest = ImageManifestBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageManifest)
        .artifact_type(MediaType::Other(WASM_CONFIG.to_string()))
        .config(descriptor(
            WASM_CONFIG,
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
        .map_err(|e| Error::internal("package_failed", format!("digest: {e}")))
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
        .map_err(|e| Error::internal("package_failed", format!("descriptor: {e}")))
}

/// The files of an image read back: layer title → bytes, every one checked
/// against its digest.
#[derive(Debug, Clone)]
pub struct Image {
    pub name: Option<String>,
    pub manifest_digest: String,
    pub files: BTreeMap<String, Vec<u8>>,
}

/// Reads the image layout tar at `path`.
pub fn read(path: &Path) -> Result<Image, Error> {
    let bad = |why: String| {
        Error::bad_request(
            "oci_image_invalid",
            format!("{} is not a usable teller image: {why}", path.display()),
        )
    };
    let file = std::fs::File::open(path).map_err(|e| {
        Error::bad_request(
            "oci_image_unreadable",
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
    if manifest.config().media_type().to_string() != WASM_CONFIG {
        return Err(bad(format!(
            "its config is {}, not {WASM_CONFIG}",
            manifest.config().media_type()
        )));
    }
    blob(manifest.config(), "the config")?;
    let mut files = BTreeMap::new();
    for layer in manifest.layers() {
        let title = layer
            .annotations()
            .as_ref()
            .and_then(|a| a.get(TITLE))
            .ok_or_else(|| bad(format!("layer {} has no {TITLE}", layer.digest())))?;
        let media = layer.media_type().to_string();
        if media != WASM_LAYER && media != POLICY_CONFIG_LAYER {
            return Err(bad(format!("layer {title} has media type {media}")));
        }
        files.insert(
            title.clone(),
            blob(layer, &format!("layer {title}"))?.clone(),
        );
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
