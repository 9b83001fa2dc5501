// Makes the binaries run against the WasmEdge
// that scripts/wasmedge-setup provided, which they open at first use
// (crates/wasmedge/src/ffi.rs) from the path given here. On Debian 12 that is a private
// prefix of Debian 13 libraries with its own C library: binaries are linked
// to use the prefix's dynamic loader and search the prefix first
// (DT_RPATH, which also covers libwasmedge's own dependencies), so the
// system's libc is never mixed with the prefix's.

use std::path::{Path, PathBuf};

/// Links the package's binaries against the WasmEdge in WASMEDGE_LIB_DIR.
fn link_wasmedge() -> Result<(), String> {
    println!("cargo:rerun-if-env-changed=WASMEDGE_LIB_DIR");
    let lib_dir = std::env::var("WASMEDGE_LIB_DIR").map_err(|_| {
        "the wasmedge feature needs WASMEDGE_LIB_DIR; run scripts/wasmedge-setup".to_string()
    })?;
    let link = Path::new(&lib_dir).join("libwasmedge.so");
    println!("cargo:rerun-if-changed={}", link.display());
    let real: PathBuf = std::fs::canonicalize(&link).map_err(|e| {
        format!(
            "{} is unusable ({e}); run scripts/wasmedge-setup",
            link.display()
        )
    })?;
    let dir = real
        .parent()
        .ok_or_else(|| format!("{} has no directory", real.display()))?;
    let loader = dir.join("ld-linux-x86-64.so.2");
    let system_loader = std::fs::canonicalize("/lib64/ld-linux-x86-64.so.2").ok();
    let private = loader.exists() && std::fs::canonicalize(&loader).ok() != system_loader;
    if private {
        println!(
            "cargo:rustc-link-arg=-Wl,--dynamic-linker={}",
            loader.display()
        );
        println!("cargo:rustc-link-arg=-Wl,--disable-new-dtags");
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    let soname = dir.join("libwasmedge.so.0");
    let library = if soname.exists() { soname } else { real.clone() };
    println!(
        "cargo:rustc-env=TELLER_WASMEDGE_LIBRARY={}",
        library.display()
    );
    Ok(())
}
