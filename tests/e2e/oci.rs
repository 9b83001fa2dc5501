//! `teller package` writes an OCI image layout for the wasm platform, one
//! file per tar layer, checked here with `oci-spec`'s types; `teller serve
//! --from-oci` serves it, and refuses one that was altered.

use crate::support::{ENGINES, Server, doc, teller};
use oci_spec::image::{ImageIndex, ImageManifest};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// Every file of a tar, in order: name and bytes.
fn tar_files(tar: impl Read) -> Vec<(String, Vec<u8>)> {
    tar::Archive::new(tar)
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).unwrap();
            (name, bytes)
        })
        .collect()
}

/// Every file of the tar at `path`, by name.
fn entries(path: &Path) -> HashMap<String, Vec<u8>> {
    tar_files(std::fs::File::open(path).unwrap())
        .into_iter()
        .collect()
}

fn package(dir: &Path, extra: &[&str]) -> std::path::PathBuf {
    let image = dir.join("teller.tar");
    let out = teller()
        .args(["package", "--output"])
        .arg(&image)
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("manifest sha256:"));
    image
}

/// The one file a layer's tar holds: its name and bytes.
fn layer_file(tar: &[u8]) -> (String, Vec<u8>) {
    let mut files = tar_files(tar);
    assert_eq!(files.len(), 1, "one file per layer");
    files.pop().unwrap()
}

fn blob<'a>(files: &'a HashMap<String, Vec<u8>>, digest: &str) -> &'a Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    let bytes = &files[&format!("blobs/sha256/{hex}")];
    assert_eq!(
        teller_engine::artifact::sha256_hex(bytes),
        hex,
        "blob {digest}"
    );
    bytes
}

#[test]
fn the_image_is_a_valid_oci_layout_for_the_wasm_platform() {
    let dir = tempfile::tempdir().unwrap();
    let image = package(
        dir.path(),
        &[
            "--name",
            "registry.bank.internal/bank-core/teller-policies:0.1.0",
        ],
    );
    let files = entries(&image);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&files["oci-layout"]).unwrap()["imageLayoutVersion"],
        "1.0.0"
    );
    let index = ImageIndex::from_reader(&files["index.json"][..]).unwrap();
    assert_eq!(index.schema_version(), 2);
    let [entry] = index.manifests().as_slice() else {
        panic!("one manifest")
    };
    let names = entry.annotations().as_ref().unwrap();
    assert_eq!(
        names["io.containerd.image.name"],
        "registry.bank.internal/bank-core/teller-policies:0.1.0"
    );
    assert_eq!(
        names["org.opencontainers.image.ref.name"],
        names["io.containerd.image.name"]
    );

    let manifest_bytes = blob(&files, entry.digest().as_ref());
    assert_eq!(manifest_bytes.len() as u64, entry.size());
    let manifest = ImageManifest::from_reader(&manifest_bytes[..]).unwrap();
    assert_eq!(
        manifest.config().media_type().to_string(),
        "application/vnd.oci.image.config.v1+json"
    );
    let config: serde_json::Value =
        serde_json::from_slice(blob(&files, manifest.config().digest().as_ref())).unwrap();
    assert_eq!(config["architecture"], "wasm");
    assert_eq!(config["os"], "wasip1");
    // A pod's `args` replace the command, as `args: [serve]` does.
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["teller"])
    );
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["serve"]));
    assert_eq!(
        config["rootfs"]["diff_ids"].as_array().unwrap().len(),
        manifest.layers().len()
    );
    let mut titles = Vec::new();
    let mut module = Vec::new();
    for (i, layer) in manifest.layers().iter().enumerate() {
        let title = &layer.annotations().as_ref().unwrap()["org.opencontainers.image.title"];
        let tar = blob(&files, layer.digest().as_ref());
        assert_eq!(tar.len() as u64, layer.size());
        // Uncompressed: the layer's digest is its diff id.
        assert_eq!(config["rootfs"]["diff_ids"][i], layer.digest().to_string());
        assert_eq!(
            layer.media_type().to_string(),
            "application/vnd.oci.image.layer.v1.tar"
        );
        let (name, bytes) = layer_file(tar);
        assert_eq!(&name, title, "the file is named by the layer's title");
        if title.ends_with(".wasm") {
            assert_eq!(&bytes[..4], b"\0asm", "{title}");
        } else {
            assert!(String::from_utf8_lossy(&bytes).contains("amount_limit = 1000000"));
        }
        if title == "transfer-check.module.wasm" {
            module = bytes;
        }
        titles.push(title.clone());
    }
    titles.sort();
    assert_eq!(
        titles,
        [
            "audit.component.wasm",
            "audit.module.wasm",
            "teller.toml",
            "transfer-check.component.wasm",
            "transfer-check.module.wasm",
        ]
    );
    // The built-in policies, byte for byte.
    assert_eq!(module, teller_policy_artifacts::TRANSFER_CHECK.module);
}

#[test]
fn serve_from_oci_uses_the_images_policies_and_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("limits.toml");
    std::fs::write(
        &config,
        "[transfer_check]\namount_limit = 500\nauthorized_roles = [\"teller\"]\n",
    )
    .unwrap();
    let image = package(dir.path(), &["--config", config.to_str().unwrap()]);
    for engine in ENGINES {
        let server = Server::start(engine, &["--from-oci", image.to_str().unwrap()]);
        let r = server
            .post(
                "/v1/transfer/check",
                &doc("transfer", 500, "teller", Some(true), None),
            )
            .json();
        assert_eq!(r["verdict"], "allow", "{engine}: {r}");
        let r = server
            .post(
                "/v1/transfer/check",
                &doc("transfer", 501, "teller", Some(true), None),
            )
            .json();
        assert_eq!(r["verdict"], "deny", "{engine}: {r}");
        // The answer names the packaged artifact the engine ran.
        let artifact = if *engine == "wasmtime" {
            teller_policy_artifacts::TRANSFER_CHECK.component
        } else {
            teller_policy_artifacts::TRANSFER_CHECK.module
        };
        assert_eq!(
            r["policy"]["sha256"],
            teller_engine::artifact::sha256_hex(artifact),
            "{engine}"
        );
        assert_eq!(server.stop().code(), Some(0));
    }
}

#[test]
fn an_altered_or_incomplete_image_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let image = package(dir.path(), &[]);
    let bytes = std::fs::read(&image).unwrap();
    // Flip one byte inside the transfer-check module's blob.
    let module = teller_policy_artifacts::TRANSFER_CHECK.module;
    let at = bytes
        .windows(64)
        .position(|w| w == &module[1000..1064])
        .unwrap();
    let mut altered = bytes.clone();
    altered[at + 10] ^= 0xFF;
    let bad = dir.path().join("altered.tar");
    std::fs::write(&bad, &altered).unwrap();
    let out = teller()
        .args(["check", "--from-oci"])
        .arg(&bad)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("transfer-check.module.wasm") && stderr.contains("altered"),
        "{stderr}"
    );

    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    let out = teller()
        .args(["check", "--from-oci"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    let out = teller()
        .args(["serve", "--from-oci"])
        .arg(&image)
        .args(["--policy-dir", "/tmp"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
}

/// A node's containerd takes the image as it is: `ctr images import`
/// stores the manifest and every layer, and unpacks them (a pod's image
/// must be unpacked to start).
#[test]
fn ctr_images_import_takes_and_unpacks_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let name = "registry.bank.internal/bank-core/teller-policies:0.1.0";
    let image = package(dir.path(), &["--name", name]);
    let containerd = crate::support::Containerd::start();
    let out = containerd.ctr(&["images", "import", image.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let out = containerd.ctr(&["images", "ls", "-q"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), name);
    // Unpacked: one committed snapshot per layer.
    let out = containerd.ctr(&["snapshots", "ls"]);
    let committed = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("Committed"))
        .count();
    assert_eq!(committed, 5, "{}", String::from_utf8_lossy(&out.stdout));
    // The module layer, read back from containerd's content store.
    let files = entries(&image);
    let index = ImageIndex::from_reader(&files["index.json"][..]).unwrap();
    let manifest =
        ImageManifest::from_reader(&blob(&files, index.manifests()[0].digest().as_ref())[..])
            .unwrap();
    for layer in manifest.layers() {
        let out = containerd.ctr(&["content", "get", layer.digest().as_ref()]);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(&out.stdout, blob(&files, layer.digest().as_ref()));
    }
}
