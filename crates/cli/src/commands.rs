//! The one-shot commands: `check`, `compile`, `package`, `audit`.

use crate::run::{cache, policies, start};
use crate::{AuditCommand, CheckArgs, PackageArgs, RunArgs, audit_keys};
use std::io::Read;
use std::path::Path;
use teller_audit_log::AuditKeys;
use teller_contract::{Error, ErrorCode};
use teller_engine::Workload;
use teller_engine::artifact::PolicySource;
use teller_server::config::Config;
use teller_server::service::Caller;

pub(crate) fn check(args: CheckArgs) -> Result<u8, Error> {
    let body = if args.input == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .take(teller_server::api::MAX_BODY as u64 + 1)
            .read_to_end(&mut buf)
            .map(|_| buf)
    } else {
        std::fs::read(&args.input)
    }
    .map_err(|e| {
        Error::bad_request(
            ErrorCode::InputUnreadable,
            format!("cannot read {}: {e}", args.input),
        )
    })?;
    if body.len() > teller_server::api::MAX_BODY {
        return Err(Error::new(
            teller_contract::Kind::TooLarge,
            ErrorCode::BodyTooLarge,
            format!(
                "the document is over {} bytes",
                teller_server::api::MAX_BODY
            ),
        ));
    }
    let (teller, _engine) = start(&args.run, None, Workload::Once)?;
    let decision = teller.check(
        &body,
        &Caller {
            client: "cli".to_string(),
        },
    )?;
    let json = serde_json::to_string(&decision)
        .map_err(|e| Error::internal(ErrorCode::Internal, format!("cannot encode: {e}")))?;
    println!("{json}");
    if args.fail_on_deny && decision.verdict == "deny" {
        return Ok(3);
    }
    Ok(0)
}

pub(crate) fn package(args: &PackageArgs) -> Result<u8, Error> {
    let version = env!("CARGO_PKG_VERSION");
    let (name, entrypoint, cmd, layers) = match &args.command {
        Some(command) => {
            let command = teller_policy_artifacts::COMMANDS
                .iter()
                .find(|c| c.name == command)
                .ok_or_else(|| {
                    Error::bad_request(ErrorCode::UnknownCommand, format!("no command {command}"))
                })?;
            let file = format!("{}.wasm", command.name);
            (
                format!("teller-{}:{version}", command.name),
                format!("/{file}"),
                None,
                vec![teller_oci::Layer {
                    title: file,
                    bytes: command.wasm.to_vec(),
                }],
            )
        }
        None => (
            format!("teller-policies:{version}"),
            "teller".to_string(),
            Some("serve"),
            policy_layers(args)?,
        ),
    };
    let name = args.name.clone().unwrap_or(name);
    let cmd: Vec<&str> = cmd.into_iter().collect();
    let written = teller_oci::write(&args.output, &name, &[&entrypoint], &cmd, &layers)?;
    println!(
        "wrote {}: image {name}, manifest {}, {} layers, {} bytes, runs {entrypoint} {}",
        args.output.display(),
        written.manifest_digest,
        written.layers,
        written.bytes,
        cmd.join(" ")
    );
    Ok(0)
}

/// The policies (both forms of each compiled guest, the Rego files, their
/// data and the manifest) and `teller.toml`.
fn policy_layers(args: &PackageArgs) -> Result<Vec<teller_oci::Layer>, Error> {
    let source = PolicySource::dir_or_builtin(args.policy_dir.as_deref());
    let config_text = match &args.config {
        Some(path) => {
            Config::load(path)?;
            std::fs::read_to_string(path).map_err(|e| {
                Error::bad_request(
                    ErrorCode::ConfigUnreadable,
                    format!("cannot read {}: {e}", path.display()),
                )
            })?
        }
        None => Config::default().to_toml()?,
    };
    let mut layers: Vec<teller_oci::Layer> = source
        .files()?
        .into_iter()
        .map(|(title, bytes)| teller_oci::Layer { title, bytes })
        .collect();
    layers.push(teller_oci::Layer {
        title: teller_oci::CONFIG_FILE.to_string(),
        bytes: config_text.into_bytes(),
    });
    Ok(layers)
}

pub(crate) fn compile(run: &RunArgs) -> Result<u8, Error> {
    let cache = cache(run)?;
    let Some(dir) = cache.dir().map(Path::to_path_buf) else {
        return Err(Error::bad_request(
            ErrorCode::NoCache,
            "compile fills the cache: give --cache-dir or set HOME",
        ));
    };
    let engine = teller_engine::by_name(
        &run.engine,
        cache,
        Workload::Once,
        run.limits(),
        teller_engine::state::GuestState::none(),
    )?;
    let (source, _) = policies(run)?;
    let mut artifacts = source.transfer_checks()?;
    artifacts.push(source.audit()?);
    for artifact in artifacts {
        let name = &artifact.name;
        eprint!("teller: compiling {name} for {} ... ", engine.name());
        let started = std::time::Instant::now();
        let policy = if artifact.rego().is_none() && name == teller_engine::artifact::AUDIT {
            engine.load_audit(&artifact)?.policy().clone()
        } else {
            engine.load_transfer_check(&artifact)?.policy().clone()
        };
        eprintln!(
            "done in {:.2} s ({} {}, sha256:{})",
            started.elapsed().as_secs_f64(),
            policy.name,
            policy.version,
            policy.sha256.get(..12).unwrap_or_default()
        );
    }
    println!("compiled guests cached in {}", dir.display());
    Ok(0)
}

pub(crate) fn audit(command: AuditCommand) -> Result<u8, Error> {
    match command {
        AuditCommand::Verify { dir } => verify(&dir),
        AuditCommand::Head { dir } => teller_audit_log::head(&dir).map(|head| {
            println!("{{\"seq\":{},\"hash\":\"{}\"}}", head.seq, head.hash);
            0
        }),
        AuditCommand::Decrypt { dir, seq, key_file } => {
            let keys = audit_keys(key_file.as_deref())?.ok_or_else(|| {
                Error::bad_request(
                    ErrorCode::AuditKeyMissing,
                    format!(
                        "decrypt needs the key: give --key-file or set {}",
                        teller_audit_log::KEY_ENV
                    ),
                )
            })?;
            let stdout = std::io::stdout();
            let done = teller_audit_log::decrypt(&dir, &keys, seq, &mut stdout.lock())?;
            eprintln!(
                "teller: decrypted {} records{}",
                done.opened,
                if done.plain > 0 {
                    format!("; {} were written without a key", done.plain)
                } else {
                    String::new()
                }
            );
            Ok(0)
        }
        AuditCommand::NewKey { id } => {
            println!("{}", AuditKeys::generate_line(&id)?);
            Ok(0)
        }
    }
}

fn verify(dir: &Path) -> Result<u8, Error> {
    match teller_audit_log::verify(dir)? {
        Ok(verified) => {
            println!(
                "ok: {} records in {} segments, chain intact; head seq {} hash {}",
                verified.head.seq, verified.segments, verified.head.seq, verified.head.hash
            );
            Ok(0)
        }
        Err(bad) => {
            println!("FAILED: {bad}");
            Ok(1)
        }
    }
}
