//! `teller serve`: the HTTP API until SIGTERM, with policies reloaded on
//! SIGHUP or when their files change.

use crate::run::{policies, start};
use crate::signals::Signals;
use crate::{RunArgs, ServeArgs};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use teller_contract::{Error, ErrorCode};
use teller_engine::{Engine, Workload};
use teller_server::service::Teller;

pub(crate) fn serve(args: ServeArgs, signals: Signals) -> Result<u8, Error> {
    let audit = args.audit.settings()?;
    let (teller, engine) = start(&args.run, audit.as_ref(), Workload::Service)?;
    let teller = Arc::new(teller);
    let engine: Arc<dyn Engine> = Arc::from(engine);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal(ErrorCode::Runtime, format!("cannot start tokio: {e}")))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| {
                Error::internal(
                    ErrorCode::ListenFailed,
                    format!("cannot listen on {}: {e}", args.listen),
                )
            })?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::internal(ErrorCode::ListenFailed, e.to_string()))?;
        let policy = teller.transfer_policy();
        // Errors ignored: whoever started teller may have closed its
        // stdout, and that must not stop the server.
        let mut out = std::io::stdout().lock();
        teller_engine::serving();
        let _ = writeln!(
            out,
            "teller: listening on http://{addr} (engine {}, policy {} {} sha256:{}, audit log: {})",
            teller.engine(),
            policy.name,
            policy.version,
            policy.sha256.get(..12).unwrap_or_default(),
            audit.as_ref().map_or("off".to_string(), |a| format!(
                "{}{}",
                a.dir.display(),
                a.keys.as_ref().map_or(String::new(), |k| format!(
                    ", encrypted with key {}",
                    k.current_id()
                ))
            )),
        );
        let _ = writeln!(
            out,
            "teller: ask it: curl -s http://{addr}/v1/transfer/check -d '{{\"action\":\"transfer\",\"amount\":250000,\"user\":{{\"role\":\"authorized\"}},\"audit\":{{\"enabled\":true}}}}'"
        );
        let _ = out.flush();
        drop(out);
        tracing::info!(
            %addr,
            engine = teller.engine(),
            policy = %policy.name,
            sha256 = %policy.sha256,
            "listening"
        );
        let limits = teller_server::api::Limits {
            max_concurrency: args.max_concurrency as usize,
            max_queue: args.max_queue as usize,
            client_timeout: std::time::Duration::from_millis(args.client_timeout_ms),
            drain_delay: std::time::Duration::from_millis(args.drain_delay_ms),
        };
        let Signals { hangup, terminate } = signals;
        tokio::spawn(watch_policies(args.run.clone(), teller.clone(), engine, hangup));
        teller_server::api::serve(listener, teller, limits, shutdown_signal(terminate))
            .await
            .map_err(|e| Error::internal(ErrorCode::ServeFailed, e.to_string()))?;
        tracing::info!("stopped");
        Ok(0)
    })
}

/// Reloads the policies on SIGHUP, and when the files they come from
/// (policy directory, configuration, image) change, checked every second.
async fn watch_policies(
    run: RunArgs,
    teller: Arc<Teller>,
    engine: Arc<dyn Engine>,
    mut hangup: tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let run = Arc::new(run);
    let mut seen = fingerprint(&run);
    loop {
        let why = tokio::select! {
            Some(()) = hangup.recv() => "SIGHUP",
            _ = tick.tick() => {
                let now = fingerprint(&run);
                if now == seen { continue; }
                seen = now;
                "the policy files changed"
            }
        };
        let (run, teller, engine) = (run.clone(), teller.clone(), engine.clone());
        let outcome = tokio::task::spawn_blocking(move || {
            let (source, config) = policies(&run)?;
            teller.reload(engine.as_ref(), &source, &config)
        })
        .await;
        match outcome {
            Ok(Ok(done)) => tracing::info!(
                "reloaded on {why}: {} {} sha256:{} now serves (was sha256:{})",
                done.new.name,
                done.new.version,
                done.new.sha256.get(..12).unwrap_or_default(),
                done.old.sha256.get(..12).unwrap_or_default(),
            ),
            Ok(Err(e)) => {
                tracing::error!("reload on {why} rejected, the old policies keep serving: {e}")
            }
            Err(e) => tracing::error!("reload on {why} failed: {e}"),
        }
    }
}

/// Sizes and modification times of the files the policies come from.
fn fingerprint(run: &RunArgs) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
    let mut files: Vec<PathBuf> = [&run.config, &run.from_oci]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    if let Some(dir) = &run.policy_dir
        && let Ok(entries) = std::fs::read_dir(dir)
    {
        files.extend(entries.flatten().map(|e| e.path()));
    }
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let meta = std::fs::metadata(&path).ok();
            let len = meta.as_ref().map_or(0, |m| m.len());
            let modified = meta.and_then(|m| m.modified().ok());
            (path, len, modified)
        })
        .collect()
}

async fn shutdown_signal(terminate: tokio::sync::oneshot::Receiver<&'static str>) {
    // The signal thread never ends, so its sender is never dropped.
    let signal = terminate.await.unwrap_or("the end of the signal thread");
    tracing::info!("shutting down on {signal}: draining in-flight requests");
}
