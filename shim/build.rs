//! The shim loads libwasmedge as `teller` does, with the same link settings
//! (on Debian 12, the private prefix's loader and search path).

include!("../crates/wasmedge/build/link_wasmedge.rs");

fn main() -> Result<(), String> {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../crates/wasmedge/build/link_wasmedge.rs");
    link_wasmedge()
}
