//! This crate's own tests link libwasmedge: they get the link settings the
//! binaries get (see build/link_wasmedge.rs).

include!("build/link_wasmedge.rs");

fn main() -> Result<(), String> {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build/link_wasmedge.rs");
    link_wasmedge()
}
