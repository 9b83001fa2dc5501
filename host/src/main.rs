//! The `teller` command: see [`teller::cli`].

use std::process::ExitCode;

/// Each request allocates for HTTP, JSON and a fresh guest instance;
/// mimalloc's thread-local free lists serve that better than glibc's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    ExitCode::from(teller::cli::main(std::env::args_os().collect(), None))
}
