//! The engines of this build, the default (production) one first: what
//! `--engine` takes in `teller` and `teller-bench`.

pub const ENGINES: &[teller_engine::EngineKind] = &[
    #[cfg(feature = "wasmedge")]
    teller_wasmedge::ENGINE,
    teller_wasmtime::ENGINE,
];
