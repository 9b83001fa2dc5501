//! `teller bench audit`: audited decisions per second in-process, with
//! group commit and with one `fsync` per record, side by side.

use super::{EXAMPLE, Report, Series, run_error};
use std::path::Path;
use std::time::Duration;
use teller_audit_log::{AuditKeys, AuditSettings, Commit, DEFAULT_SEGMENT_BYTES};
use teller_contract::Error;
use teller_engine::Engine;
use teller_engine::artifact::PolicySource;
use teller_server::config::Config;
use teller_server::service::{Caller, Teller};

/// Runs `threads` callers deciding the README example for `seconds` in
/// each mode, each mode on a fresh log in a scratch directory under `dir`.
pub fn audit(
    engine: &dyn Engine,
    threads: usize,
    seconds: f64,
    dir: &Path,
) -> Result<Report, Error> {
    let scratch = tempfile::Builder::new()
        .prefix("teller-bench-audit-")
        .tempdir_in(dir)
        .map_err(|e| {
            run_error(
                &format!("cannot make a scratch directory in {}", dir.display()),
                e,
            )
        })?;
    let slice = Duration::from_secs_f64(seconds / 3.0);
    let key = AuditKeys::generate_line("bench")?;
    let runs = [
        ("group commit", Commit::Group, false),
        ("group commit, AES-256-GCM", Commit::Group, true),
        ("one fsync per record", Commit::PerRecord, false),
    ];
    let mut series = Vec::new();
    for (i, (label, commit, encrypted)) in runs.into_iter().enumerate() {
        eprintln!("audit: {} {label}, {threads} threads", engine.name());
        let settings = AuditSettings {
            dir: scratch.path().join(format!("log-{i}")),
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            keys: encrypted
                .then(|| AuditKeys::parse(&key, "bench"))
                .transpose()?,
            commit,
        };
        let (teller, _) = Teller::start(
            engine,
            &PolicySource::Builtin,
            &Config::default(),
            Some(&settings),
            teller_engine::state::GuestState::none(),
        )?;
        let name = format!("audited decisions, {label}");
        series.push(measure(&teller, threads, slice, name)?);
        drop(teller);
        match teller_audit_log::verify(&settings.dir)? {
            Ok(_) => {}
            Err(bad) => return Err(run_error("the bench's own log does not verify", bad)),
        }
    }
    let rate = |i: usize| series.get(i).and_then(|s| s.per_second).unwrap_or(0.0);
    let ratios = vec![
        (
            "decisions/s group commit / one fsync per record".to_string(),
            rate(0) / rate(2).max(f64::MIN_POSITIVE),
        ),
        (
            "decisions/s encrypted / plain (group commit)".to_string(),
            rate(1) / rate(0).max(f64::MIN_POSITIVE),
        ),
    ];
    Ok(Report {
        bench: "audit",
        engine: engine.name(),
        series,
        ratios,
        notes: vec![format!(
            "{threads} threads deciding the README example; each series ran {:.1} s on a fresh log in {} (fsync is only real on a disk, not tmpfs); every log verified afterwards",
            slice.as_secs_f64(),
            dir.display()
        )],
    })
}

fn measure(teller: &Teller, threads: usize, time: Duration, name: String) -> Result<Series, Error> {
    let caller = Caller {
        client: "bench".to_string(),
    };
    super::measure_threads(threads, time, &name, || {
        Ok(|| teller.check(EXAMPLE.as_bytes(), &caller).map(drop))
    })
}
