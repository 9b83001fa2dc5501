//! `teller-bench`: the benchmark harness, with the engines `teller` has.

#[path = "../engines.rs"]
mod engines;

use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    teller_engine::register(engines::ENGINES);
    ExitCode::from(teller_bench::cli::main(std::env::args_os().collect()))
}
