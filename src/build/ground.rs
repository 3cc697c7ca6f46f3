//! The ground a build's layers sit on, known before anything is pulled: the
//! base's image id and, with `--boot-from`, the boot image's id and the boot
//! layer's key. One code path for every runner: the engine's view of an image
//! when it has it, else the image's registry (a fresh CI runner: the
//! multi-GB base is fetched only when a layer must be produced on it), else a
//! pull, which then says why the image cannot be had.
//!
//! The keys computed from a ground resolved in the registry equal the ones
//! computed with every image local: both come from the same ids (tested).

use super::lazy::LazyRemote;
use super::{pull, Options, PullPolicy, Remote};
use crate::engine::{Engine, ImageInfo};
use crate::error::{Error, Result};
use crate::plan;
use crate::progress::{Event, Reporter};
use crate::registry::{ImageRef, Manifests};

/// One image a build sits on.
#[derive(Debug, Clone)]
pub struct Side {
    /// How the user named it (`--base`, `--boot-from`).
    pub reference: String,
    /// Its image id (the config digest).
    pub id: String,
    /// The engine's view of it, when the engine has it.
    pub local: Option<ImageInfo>,
}

/// The base, the boot image (with `--boot-from`), and what the first
/// installing layer's key chains on.
#[derive(Debug, Clone)]
pub struct Ground {
    pub base: Side,
    /// The base's `repo@digest`s, as a pull of it records them: the
    /// `base.digest` label, the same whether the base is local or not.
    pub base_repo_digests: Vec<String>,
    pub boot: Option<Side>,
    /// The base id, or with `--boot-from` the boot layer's key.
    pub parent: String,
}

impl Ground {
    /// The boot layer's key, with `--boot-from`.
    pub fn boot_key(&self) -> Option<&str> {
        self.boot.as_ref().map(|_| self.parent.as_str())
    }
}

/// Resolve the base and the boot image: the engine's view (unless `--pull
/// always`), else their registries (never with `--no-cache`, which asks no
/// registry), else pull them.
pub async fn resolve<E: Engine, R: Manifests, F>(
    engine: &E,
    opts: &Options,
    remote: &mut LazyRemote<R, F>,
    reporter: &dyn Reporter,
) -> Result<Ground>
where
    F: FnOnce() -> Result<Option<Remote<R>>>,
{
    let base = on_engine(engine, opts, &opts.base).await?;
    let boot = match &opts.boot_from {
        Some(boot) => Some(on_engine(engine, opts, boot).await?),
        None => None,
    };
    let missing = base.is_none() || matches!(boot, Some(None));
    let remote = match missing && !opts.no_cache {
        true => remote.get()?,
        false => None,
    };
    let base = match base {
        Some(info) => local_side(&opts.base, info),
        None => match from_registry(remote.and_then(|r| r.base.as_ref()), &opts.base).await? {
            Some((id, registry)) => {
                reporter.event(Event::BaseResolved {
                    base: &opts.base,
                    id: &id,
                    registry: &registry,
                });
                remote_side(&opts.base, id)
            }
            None => local_side(&opts.base, pull::ensure(engine, opts, reporter).await?),
        },
    };
    let boot = match (opts.boot_from.as_deref(), boot) {
        (Some(reference), Some(found)) => {
            Some(resolve_boot(engine, opts, reference, found, remote, reporter).await?)
        }
        _ => None,
    };
    let base_repo_digests = match &base.local {
        Some(info) => info.repo_digests.clone(),
        None => registry_repo_digests(remote, &opts.base).await?,
    };
    let parent = match &boot {
        Some(boot) => plan::boot_key(&base.id, &boot.id),
        None => base.id.clone(),
    };
    Ok(Ground {
        base,
        base_repo_digests,
        boot,
        parent,
    })
}

/// The `--boot-from` image: the engine's, else its registry's id, else pulled.
async fn resolve_boot<E: Engine, R: Manifests>(
    engine: &E,
    opts: &Options,
    reference: &str,
    found: Option<ImageInfo>,
    remote: Option<&Remote<R>>,
    reporter: &dyn Reporter,
) -> Result<Side> {
    if let Some(info) = found {
        return Ok(local_side(reference, info));
    }
    match from_registry(remote.and_then(|r| r.boot.as_ref()), reference).await? {
        Some((id, registry)) => {
            reporter.event(Event::BootResolved {
                boot: reference,
                id: &id,
                registry: &registry,
            });
            Ok(remote_side(reference, id))
        }
        None => {
            let info = pull::ensure_boot(engine, opts, reference, reporter).await?;
            Ok(local_side(reference, info))
        }
    }
}

/// `reference` on the engine; `None` when absent, or with `--pull always`
/// (which must not trust the engine's copy).
async fn on_engine<E: Engine>(
    engine: &E,
    opts: &Options,
    reference: &str,
) -> Result<Option<ImageInfo>> {
    match opts.pull {
        PullPolicy::Always => Ok(None),
        _ => engine.inspect(reference).await,
    }
}

fn local_side(reference: &str, info: ImageInfo) -> Side {
    Side {
        reference: reference.to_string(),
        id: info.id.clone(),
        local: Some(info),
    }
}

fn remote_side(reference: &str, id: String) -> Side {
    Side {
        reference: reference.to_string(),
        id,
        local: None,
    }
}

/// The image id of `reference` from its registry, and that registry's host;
/// `None` when it cannot be read (the pull that follows then says why,
/// naming the registry). A platform missing from its index is an error: no
/// pull would help.
async fn from_registry<R: Manifests>(
    registry: Option<&R>,
    reference: &str,
) -> Result<Option<(String, String)>> {
    let Some(registry) = registry else {
        return Ok(None);
    };
    let image = ImageRef::parse(reference);
    match registry.image_id(image.tag_or_digest()).await {
        Ok(Some(id)) => Ok(Some((id, registry.host().to_string()))),
        Ok(None) => Ok(None),
        Err(e @ Error::PlatformMissing { .. }) => Err(e),
        Err(e) => {
            tracing::warn!("cannot resolve {reference} in its registry: {e}");
            Ok(None)
        }
    }
}

/// The base's repo digest as a pull of it would record it (`repo@digest`),
/// read from its registry: the `base.digest` label, before any pull. None
/// when the reference carries its digest (labels read it from there).
async fn registry_repo_digests<R: Manifests>(
    remote: Option<&Remote<R>>,
    base: &str,
) -> Result<Vec<String>> {
    let image = ImageRef::parse(base);
    let Some(registry) = remote.and_then(|r| r.base.as_ref()) else {
        return Ok(Vec::new());
    };
    if image.digest.is_some() {
        return Ok(Vec::new());
    }
    Ok(registry
        .manifest_digest(image.tag_or_digest())
        .await?
        .map(|d| format!("{}@{d}", image.written))
        .into_iter()
        .collect())
}
