//! The `teller` command: teller's command line (`teller_cli`) with the
//! engines this build has, the production engine first.

mod engines;

/// Each request allocates for HTTP, JSON and a fresh guest instance;
/// mimalloc's thread-local free lists serve that better than glibc's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    teller_engine::register(engines::ENGINES);
    let code = teller_cli::main(std::env::args_os().collect(), None);
    teller_cli::process::exit(code)
}
