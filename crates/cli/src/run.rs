//! Where the guests, their configuration and their compiled code come
//! from, and a ready [`Teller`] on the chosen engine.

use crate::RunArgs;
use std::sync::Arc;
use teller_audit_log::AuditSettings;
use teller_contract::{Error, ErrorCode};
use teller_engine::artifact::PolicySource;
use teller_engine::cache::ArtifactCache;
use teller_engine::{Engine, Workload};
use teller_server::config::Config;
use teller_server::service::Teller;

/// The policies and their configuration `run` names.
pub(crate) fn policies(run: &RunArgs) -> Result<(PolicySource, Config), Error> {
    if let Some(image) = &run.image {
        return image_policies(image.origin.clone(), image.files.clone());
    }
    if let Some(path) = &run.from_oci {
        let image = teller_oci::read(path)?;
        let origin = format!(
            "image {}@{} ({})",
            image.name.as_deref().unwrap_or("unnamed"),
            image.manifest_digest,
            path.display()
        );
        return image_policies(origin, Arc::new(image.files));
    }
    let config = match &run.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    Ok((
        PolicySource::dir_or_builtin(run.policy_dir.as_deref()),
        config,
    ))
}

/// An image's policies and its `teller.toml` (the defaults without one).
pub(crate) fn image_policies(
    origin: String,
    files: Arc<std::collections::BTreeMap<String, Vec<u8>>>,
) -> Result<(PolicySource, Config), Error> {
    let config = match files.get(teller_oci::CONFIG_FILE) {
        Some(bytes) => {
            let text = std::str::from_utf8(bytes).map_err(|_| {
                Error::bad_request(
                    ErrorCode::ConfigInvalid,
                    format!("{origin}: teller.toml is not UTF-8"),
                )
            })?;
            Config::parse(text).map_err(|e| Error {
                message: format!("{origin}: teller.toml: {}", e.message),
                ..e
            })?
        }
        None => Config::default(),
    };
    Ok((PolicySource::Files { origin, files }, config))
}

pub(crate) fn cache(run: &RunArgs) -> Result<ArtifactCache, Error> {
    if run.no_cache {
        return Ok(ArtifactCache::disabled());
    }
    let cache = cache_at(run.cache_dir.as_deref())?;
    match &run.cache_key_file {
        None => Ok(cache),
        Some(path) => {
            let key = std::fs::read(path).map_err(|e| {
                Error::bad_request(
                    ErrorCode::CacheUnusable,
                    format!("cannot read the cache key file {}: {e}", path.display()),
                )
            })?;
            cache.sealed_with(key)
        }
    }
}

/// The cache in `dir`, or in the default place (none if it has none).
pub(crate) fn cache_at(dir: Option<&std::path::Path>) -> Result<ArtifactCache, Error> {
    Ok(match dir {
        Some(dir) => ArtifactCache::at(dir)?,
        None => match ArtifactCache::default_dir() {
            Some(dir) => ArtifactCache::at(dir).unwrap_or_else(|e| {
                tracing::warn!("{e}; compiling without a cache");
                ArtifactCache::disabled()
            }),
            None => ArtifactCache::disabled(),
        },
    })
}

/// A ready teller and the engine it loaded its policies on (kept for
/// reloads).
pub(crate) fn start(
    run: &RunArgs,
    audit: Option<&AuditSettings>,
    workload: Workload,
) -> Result<(Teller, Box<dyn Engine>), Error> {
    let (source, config) = policies(run)?;
    let state = run.guest_state(&config)?;
    let engine = teller_engine::by_name(
        &run.engine,
        cache(run)?,
        workload,
        run.limits(),
        state.clone(),
    )?;
    let (teller, recovery) = Teller::start(engine.as_ref(), &source, &config, audit, state)?;
    if let (Some(r), Some(settings)) = (recovery, audit)
        && r.truncated_bytes > 0
    {
        tracing::warn!(
            "audit log {}: cut off a torn last record ({} bytes) left by a crash",
            settings.dir.display(),
            r.truncated_bytes
        );
    }
    Ok((teller, engine))
}
