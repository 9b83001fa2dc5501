//! `teller-bench`: the benchmark harness, with the engines `teller` has.

#[path = "../engines.rs"]
mod engines;

use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    teller_engine::register(engines::ENGINES);
    let argv: Vec<_> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|command| command == "load-engine") {
        // The floor of `teller check`'s cold start: a process that starts
        // and ends as teller's short commands do, and only loads the engine.
        teller_cli::process::small_pages();
        teller_cli::process::exit(teller_bench::cli::main(argv));
    }
    ExitCode::from(teller_bench::cli::main(argv))
}
