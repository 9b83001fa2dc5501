//! See crates/wasmedge/build/link_wasmedge.rs: only the `wasmedge` feature
//! links WasmEdge.

include!("../crates/wasmedge/build/link_wasmedge.rs");

fn main() -> Result<(), String> {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../crates/wasmedge/build/link_wasmedge.rs");
    if std::env::var_os("CARGO_FEATURE_WASMEDGE").is_none() {
        return Ok(());
    }
    link_wasmedge()
}
