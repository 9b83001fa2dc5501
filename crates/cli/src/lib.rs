//! The `teller` command line, in a library so that the node's shim
//! (`containerd-shim-wasmedge-v1`) serves an image with the very code of
//! `teller serve`. It names no engine: the binary registers the engines it
//! was built with (`teller_engine::register`) and `--engine` takes those.
//!
//! - this file: the command-line schema and [`main`];
//! - `run`: where policies, configuration and compiled code come from;
//! - `serve`: `teller serve`, hot reload and shutdown;
//! - `commands`: `check`, `compile`, `package`, `audit`;
//! - `authoring`: `new` and `test`, for policy authors;
//! - `signals`: SIGHUP, SIGINT and SIGTERM for `serve`;
//! - `process`: small pages for short commands, and the way out.
//!
//! Only `signals` and `process` use `unsafe`: the signal mask, sigwait(3),
//! prctl(2) and _exit(2).

#![deny(unsafe_code)]

mod authoring;
mod commands;
pub mod process;
mod run;
mod serve;
mod serve_settings;
mod signals;

pub use signals::block as block_signals;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use commands::{audit, check, compile, package};
use serve::serve;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use teller_audit_log::{AuditKeys, AuditSettings, Commit};
use teller_contract::{Error, ErrorCode};
use teller_engine::GuestLimits;

/// `--engine`: one of the engines this binary registered, each with its
/// one-line description in `--help`.
pub fn engine_parser() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        teller_engine::registered()
            .iter()
            .map(|e| clap::builder::PossibleValue::new(e.name).help(e.about)),
    )
}

/// Runs a bank's compliance functions (transfer checks, audit sealing) as
/// sandboxed WebAssembly guests and serves them over HTTP.
#[derive(Parser)]
#[command(name = "teller", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API: POST /v1/transfer/check, POST /v1/audit/events,
    /// GET /healthz, GET /readyz.
    Serve(ServeArgs),
    /// Decide one transfer document read from FILE (or stdin with `-`) and
    /// print the decision as JSON. Exit status: 0 decided, 2 bad input,
    /// 1 failure, 3 denied (with --fail-on-deny).
    Check(CheckArgs),
    /// Work with an audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Compile the guest policies for an engine into the cache ahead of
    /// time (WasmEdge AOT, wasmtime .cwasm), so that no start pays for it.
    Compile(RunArgs),
    /// Write the guest policies (both forms) and their configuration, or one
    /// function command, as an OCI image layout tar for the wasm platform;
    /// `ctr images import` takes it, the node's shim
    /// (containerd-shim-wasmedge-v1) runs it, `teller serve --from-oci`
    /// serves it.
    Package(PackageArgs),
    /// Start a new policy project that passes its own tests.
    #[command(subcommand)]
    New(NewCommand),
    /// Run the table-driven cases of each PATH (a policy directory holding
    /// *.test.toml files, or one such file) against the policies of that
    /// directory, on every engine of this build. Prints one line per failing
    /// case and a summary. Exit status: 0 all passed, 1 a case failed, 2 a
    /// policy or test file cannot be loaded.
    Test(TestArgs),
}

#[derive(Subcommand)]
enum NewCommand {
    /// Write a policy project in a new directory NAME: for Rego a .rego file
    /// (the directory is a policy directory as it is); for Rust a crate
    /// using teller's WIT, with build.sh writing both guest forms into
    /// NAME/policy. Each comes with a test file that passes.
    Policy {
        /// The policy's name: a-z, 0-9, - and _.
        name: String,
        /// The language the policy is written in.
        #[arg(long, value_enum)]
        lang: authoring::Lang,
        /// Where to create the NAME directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

#[derive(Args)]
struct TestArgs {
    /// Policy directories or *.test.toml files.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Run on this engine only (default: every engine of this build).
    #[arg(long, value_parser = engine_parser())]
    engine: Option<String>,
    /// The policy parameters the cases run with (default: teller's
    /// defaults).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where compiled guests are cached (default $XDG_CACHE_HOME/teller or
    /// ~/.cache/teller).
    #[arg(long, env = "TELLER_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
}

/// How to load and run the guest policies.
#[derive(Args, Clone)]
struct RunArgs {
    /// The WebAssembly engine that runs the guests (default: the
    /// production engine when this build has it).
    #[arg(long, env = "TELLER_ENGINE", value_parser = engine_parser(),
          default_value_t = teller_engine::default_name().to_string())]
    engine: String,
    /// A policy directory, instead of the built-in policies: Rego files
    /// (NAME.rego, with data.json), compiled guests (NAME.component.wasm
    /// and NAME.module.wasm; `audit` is the audit sealer) and an optional
    /// policies.toml giving their order. Every policy decides each
    /// transfer; any guest it does not hold is the built-in one.
    #[arg(long, env = "TELLER_POLICY_DIR")]
    policy_dir: Option<PathBuf>,
    /// TOML policy parameters: [transfer_check] amount_limit,
    /// authorized_roles. Defaults: 1000000 and ["authorized"].
    #[arg(long, env = "TELLER_CONFIG")]
    config: Option<PathBuf>,
    /// An image written by `teller package` (OCI image layout tar): its
    /// policies and configuration, every digest checked, instead of
    /// --policy-dir and --config.
    #[arg(long, env = "TELLER_FROM_OCI", conflicts_with_all = ["policy_dir", "config"])]
    from_oci: Option<PathBuf>,
    /// An image already read (see [`main`]), instead of the three above.
    #[arg(skip)]
    image: Option<Preloaded>,
    /// Where compiled guests are cached (default $XDG_CACHE_HOME/teller or
    /// ~/.cache/teller).
    #[arg(long, env = "TELLER_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// A secret of at least 32 bytes that seals each cache entry
    /// (HMAC-SHA256), for a cache several pods share on a volume: a pod
    /// loads only compiled code that a holder of the key wrote, and compiles
    /// anything else again.
    #[arg(long, env = "TELLER_CACHE_KEY_FILE")]
    cache_key_file: Option<PathBuf>,
    /// Compile the guests at every start instead of caching them.
    #[arg(long, env = "TELLER_NO_CACHE")]
    no_cache: bool,
    /// Wall-clock time one guest call may take; past it the call fails with
    /// guest_timeout and its instance is thrown away.
    #[arg(long, env = "TELLER_GUEST_DEADLINE_MS", default_value_t = GuestLimits::DEFAULT_DEADLINE_MS,
          value_parser = clap::value_parser!(u64).range(1..=teller_contract::limits::DEADLINE_MS_MAX))]
    guest_deadline_ms: u64,
    /// Linear memory one guest instance may grow to; past it the call fails
    /// with guest_memory_limit.
    #[arg(long, env = "TELLER_GUEST_MEMORY_MIB", default_value_t = GuestLimits::DEFAULT_MEMORY_MIB,
          value_parser = clap::value_parser!(u64).range(1..=teller_contract::limits::MEMORY_MIB_MAX))]
    guest_memory_mib: u64,
    /// Work one guest call may do (wasmtime fuel, WasmEdge instruction
    /// cost); past it the call fails with guest_out_of_fuel. Off by default:
    /// counting costs time on every call.
    #[arg(long, env = "TELLER_GUEST_FUEL", value_parser = clap::value_parser!(u64).range(1..))]
    guest_fuel: Option<u64>,

    /// Where daily totals (`daily_limit`) are kept: `embedded` (this
    /// machine's disk, in $XDG_STATE_HOME/teller or ~/.local/state/teller),
    /// `file:DIR` (embedded, in DIR) or `redis://[:PASSWORD@]HOST:PORT[/DB]`
    /// (shared by every replica). Default: embedded when daily_limit is
    /// set, else none.
    #[arg(long, env = "TELLER_STATE", value_name = "URL")]
    state: Option<String>,

    /// How long a decision waits for the state store (Redis); past it the
    /// transfer is refused with 503 state_unavailable, never allowed.
    #[arg(long, env = "TELLER_STATE_TIMEOUT_MS", default_value_t = teller_state::DEFAULT_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    state_timeout_ms: u64,
}

impl RunArgs {
    /// The state store `--state` names, opened; or, without `--state`, the
    /// embedded one when `config` sets a daily limit, else none.
    pub(crate) fn guest_state(
        &self,
        config: &teller_server::config::Config,
    ) -> Result<teller_engine::state::GuestState, teller_contract::Error> {
        let url = match (&self.state, config.transfer_check.daily_limit) {
            (Some(url), _) => url.as_str(),
            (None, Some(_)) => teller_state::DEFAULT_URL,
            (None, None) => return Ok(teller_engine::state::GuestState::none()),
        };
        // A guest waits for the store inside its call: a store slower than
        // the call's deadline would end as guest_timeout, not as the
        // state_unavailable it is.
        if self.state_timeout_ms >= self.guest_deadline_ms {
            return Err(teller_contract::Error::bad_request(
                teller_contract::ErrorCode::StateInvalid,
                format!(
                    "--state-timeout-ms {} must be below --guest-deadline-ms {}: a guest waits for the state store within its call",
                    self.state_timeout_ms, self.guest_deadline_ms
                ),
            ));
        }
        let timeout = std::time::Duration::from_millis(self.state_timeout_ms);
        let store = teller_state::open(url, timeout)?;
        tracing::info!(store = store.kind(), url = %teller_state::redact(url), "state store ready");
        Ok(teller_engine::state::GuestState::new(store))
    }

    pub(crate) fn limits(&self) -> GuestLimits {
        GuestLimits {
            deadline: std::time::Duration::from_millis(self.guest_deadline_ms),
            memory_bytes: self.guest_memory_mib << 20,
            fuel: self.guest_fuel,
        }
    }
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (printed at start).
    #[arg(long, env = "TELLER_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    audit: AuditArgs,
    /// Which log lines to write: a level (error, warn, info, debug) or a
    /// tracing filter such as `teller=debug,warn`.
    #[arg(long, env = "TELLER_LOG", default_value = "info")]
    log_level: String,
    /// JSON lines for a log pipeline, or text for people; auto picks text
    /// on a terminal.
    #[arg(long, env = "TELLER_LOG_FORMAT", value_enum, default_value = "auto")]
    log_format: teller_server::log::LogFormat,
    /// A TOML file setting any of these flags by name (`listen =
    /// "0.0.0.0:8080"`); a flag or its TELLER_* variable wins over it.
    #[arg(long, env = "TELLER_SETTINGS")]
    settings: Option<PathBuf>,
    /// Print the effective settings and where each came from (secrets
    /// redacted), then exit.
    #[arg(long)]
    print_config: bool,
    /// Requests worked on at once; more wait in the queue.
    #[arg(long, env = "TELLER_MAX_CONCURRENCY", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    max_concurrency: u32,
    /// Requests that may wait for a slot; past that, 503 with Retry-After.
    #[arg(long, env = "TELLER_MAX_QUEUE", default_value_t = 1024)]
    max_queue: u32,
    /// How long a client may take to send its request headers (or to start
    /// its next request on a kept-alive connection), and then its body.
    #[arg(long, env = "TELLER_CLIENT_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(10..=600_000))]
    client_timeout_ms: u64,
    /// After SIGTERM, how long to go on serving while /readyz answers 503,
    /// so that a load balancer (or a Service's endpoints) stops sending
    /// before teller stops accepting: at least the health check's period
    /// times its failure threshold.
    #[arg(long, env = "TELLER_DRAIN_DELAY_MS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    drain_delay_ms: u64,
    #[command(flatten)]
    run: RunArgs,
}

/// The audit log of `teller serve`.
#[derive(Args)]
struct AuditArgs {
    /// Append every decision and event to the hash-chained audit log in
    /// this directory (created if missing); responses wait until their
    /// record is on disk.
    #[arg(long, env = "TELLER_AUDIT_DIR")]
    audit_dir: Option<PathBuf>,
    /// Start a new segment once the current one reaches this many bytes.
    #[arg(long, env = "TELLER_AUDIT_SEGMENT_BYTES", default_value_t = teller_audit_log::DEFAULT_SEGMENT_BYTES,
          value_parser = clap::value_parser!(u64).range(teller_audit_log::MIN_SEGMENT_BYTES..))]
    audit_segment_bytes: u64,
    /// Encrypt each event (AES-256-GCM) with the first key in this file:
    /// lines of ID:BASE64, as `teller audit new-key` prints. The key may
    /// instead come from the TELLER_AUDIT_KEY environment variable.
    #[arg(long, env = "TELLER_AUDIT_KEY_FILE")]
    audit_key_file: Option<PathBuf>,
}

impl AuditArgs {
    fn settings(&self) -> Result<Option<AuditSettings>, Error> {
        let keys = audit_keys(self.audit_key_file.as_deref())?;
        let Some(dir) = &self.audit_dir else {
            if keys.is_some() {
                return Err(Error::bad_request(
                    ErrorCode::AuditKeyWithoutLog,
                    "an audit key was given but no --audit-dir: there is nothing to encrypt",
                ));
            }
            return Ok(None);
        };
        Ok(Some(AuditSettings {
            dir: dir.clone(),
            segment_bytes: self.audit_segment_bytes,
            keys,
            commit: Commit::Group,
        }))
    }
}

/// The audit keys from `file` or from TELLER_AUDIT_KEY; both is an error,
/// so that it is never unclear which key encrypted a record.
fn audit_keys(file: Option<&Path>) -> Result<Option<AuditKeys>, Error> {
    match (file, AuditKeys::from_env()?) {
        (Some(_), Some(_)) => Err(Error::bad_request(
            ErrorCode::AuditKeyAmbiguous,
            format!(
                "an audit key file and {} are both set; give the key one way",
                teller_audit_log::KEY_ENV
            ),
        )),
        (Some(path), None) => AuditKeys::from_file(path).map(Some),
        (None, env) => Ok(env),
    }
}

#[derive(Args)]
struct PackageArgs {
    /// The image file to write (an OCI image layout, as a tar).
    #[arg(long, short)]
    output: PathBuf,
    /// The image's name, as containerd and registries will know it
    /// (default: teller-policies:VERSION, or teller-COMMAND:VERSION).
    #[arg(long)]
    name: Option<String>,
    /// Package these policies instead of the built-in ones.
    #[arg(long)]
    policy_dir: Option<PathBuf>,
    /// The policy configuration to package (validated first); without it,
    /// the defaults are written out.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Package one built-in function command instead (wasm32-wasip1: JSON
    /// on stdin, the answer on stdout), the image's entrypoint.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(
        teller_policy_artifacts::COMMANDS.map(|c| c.name)),
        conflicts_with_all = ["policy_dir", "config"])]
    command: Option<String>,
}

#[derive(Args)]
struct CheckArgs {
    /// The transfer document (JSON); `-` or nothing reads stdin.
    #[arg(default_value = "-")]
    input: String,
    /// Exit with status 3 when the verdict is deny.
    #[arg(long)]
    fail_on_deny: bool,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the hash chain of the log in DIR across all its segments.
    /// Exit status 0 when intact, 1 naming the first bad record, 2 when the
    /// log cannot be read.
    Verify { dir: PathBuf },
    /// Print the last record's seq and hash as JSON, for anchoring the
    /// chain outside this machine (read-only; a torn tail is ignored).
    Head { dir: PathBuf },
    /// Print the plaintext events of the encrypted records in DIR (or of
    /// record --seq), one JSON line each. Needs the key that encrypted
    /// them: --key-file, or TELLER_AUDIT_KEY.
    Decrypt {
        dir: PathBuf,
        /// Only this record.
        #[arg(long)]
        seq: Option<u64>,
        /// Lines of ID:BASE64; every key id in it can open records.
        #[arg(long, env = "TELLER_AUDIT_KEY_FILE")]
        key_file: Option<PathBuf>,
    },
    /// Print a new random AES-256 key as a key-file line, ID:BASE64.
    NewKey {
        /// The key id records will name (A-Z a-z 0-9 . _ -), e.g. 2026-11.
        #[arg(long)]
        id: String,
    },
}

/// An image's files handed over by whoever read them (the node's shim
/// reads them from containerd's content store), used as `--from-oci` uses
/// a tar's.
#[derive(Debug, Clone)]
pub struct Preloaded {
    /// Where the files came from, as messages name it.
    pub origin: String,
    /// Layer title (`transfer-check.module.wasm`, `teller.toml`) → bytes.
    pub files: std::sync::Arc<std::collections::BTreeMap<String, Vec<u8>>>,
}

/// Runs the command line `argv` (`argv[0]` is the program's name) and
/// returns its exit status. `image`, if given, stands for `--from-oci`.
pub fn main(argv: Vec<std::ffi::OsString>, image: Option<Preloaded>) -> u8 {
    // Before clap builds the command tree, the first thing that allocates
    // much. `teller` takes no option before its command.
    if argv.get(1).is_none_or(|command| command != "serve") {
        process::small_pages();
    }
    // Built once: the whole command tree is a fair part of a short
    // command's start.
    let command = Cli::command();
    let Some(serve_command) = command.find_subcommand("serve").cloned() else {
        return 1;
    };
    let expanded = match serve_settings::expand(argv, &serve_command) {
        Ok(expanded) => expanded,
        Err(e) => {
            eprintln!("teller: {e}");
            return e.exit_code();
        }
    };
    let matches = match command.try_get_matches_from(&expanded.argv) {
        Ok(matches) => matches,
        Err(e) => {
            // A value clap refused may have come from the file.
            if let Some(note) = expanded.note() {
                eprintln!("teller: note: {note}");
            }
            return clap_refused(&e);
        }
    };
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => return clap_refused(&e),
    };
    if let Some(image) = image {
        let run = match &mut cli.command {
            Command::Serve(args) => Some(&mut args.run),
            Command::Check(args) => Some(&mut args.run),
            Command::Compile(run) => Some(run),
            _ => None,
        };
        if let Some(run) = run {
            if run.policy_dir.is_some() || run.config.is_some() || run.from_oci.is_some() {
                eprintln!(
                    "teller: {} is served: --policy-dir, --config and --from-oci cannot be given too",
                    image.origin
                );
                return 2;
            }
            run.image = Some(image);
        }
    }
    if let Command::Serve(args) = &cli.command
        && args.print_config
        && let Some(serve_matches) = matches.subcommand_matches("serve")
    {
        print!(
            "{}",
            serve_settings::print(serve_matches, &serve_command, &expanded.from_file)
        );
        return 0;
    }
    let logging = match &cli.command {
        Command::Serve(args) => teller_server::log::init(&args.log_level, args.log_format),
        _ => teller_server::log::init("warn", teller_server::log::LogFormat::Text),
    };
    if let Err(e) = logging {
        eprintln!("teller: {e}");
        return e.exit_code();
    }
    // Before any other thread starts, so that every thread blocks them.
    let signals = matches!(cli.command, Command::Serve(_)).then(signals::watch);
    // The engine's library opens on the other core while the command
    // reads its settings, its input and its policies. From here on every
    // way out passes `quiesce`, which waits for it.
    if let Command::Serve(ServeArgs { run, .. })
    | Command::Check(CheckArgs { run, .. })
    | Command::Compile(run) = &cli.command
        && let Ok(kind) = teller_engine::kind(&run.engine)
    {
        (kind.open_early)();
    }
    let result = match cli.command {
        Command::Serve(args) => signals
            .unwrap_or_else(signals::watch)
            .and_then(|signals| serve(args, signals)),
        Command::Check(args) => check(args).inspect_err(|e| {
            // The same body the HTTP API would answer, for scripts.
            println!("{}", e.to_json());
        }),
        Command::Audit(command) => audit(command),
        Command::Compile(run) => compile(&run),
        Command::Package(args) => package(&args),
        Command::New(NewCommand::Policy { name, lang, dir }) => {
            authoring::new_policy(&name, lang, &dir)
        }
        Command::Test(args) => run::cache_at(args.cache_dir.as_deref()).and_then(|cache| {
            let engines: Vec<String> = match &args.engine {
                Some(e) => vec![e.clone()],
                None => teller_engine::registered()
                    .iter()
                    .map(|e| e.name.to_string())
                    .collect(),
            };
            authoring::test(&args.paths, &engines, args.config.as_deref(), cache)
        }),
    };
    teller_engine::quiesce();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("teller: {e}");
            e.exit_code()
        }
    }
}

/// Prints clap's message (help and version too) and gives its status.
fn clap_refused(e: &clap::Error) -> u8 {
    let _ = e.print();
    u8::try_from(e.exit_code()).unwrap_or(2)
}
