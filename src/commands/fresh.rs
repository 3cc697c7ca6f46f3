//! Fresh CI runners: each job starts on an empty engine, all share one
//! registry. Before anything is pulled, the base's image id is read from its
//! registry (the digest of its config, see `registry::manifest`), the keys are
//! computed from it, and when the result is already in the registry the build
//! ends there, with nothing pulled: the multi-GB base is fetched only when
//! something must be built on it. A registry hit also applies every `--tag`,
//! as a manifest put under the new tag.

use std::time::Instant;

use super::base;
use crate::cli::BuildArgs;
use crate::engine::{Engine, ImageInfo};
use crate::error::{Error, Result};
use crate::image_ref::ImageRef;
use crate::plan;
use crate::progress::Reporter;
use crate::registry::{self, Registry, RepositoryRef};
use crate::report::{BaseReport, CacheOutcome, LayerReport, Report};
use crate::stage::StagedSet;

/// How a build starts: finished already (a registry hit), or on a base the
/// engine now holds.
pub enum Start {
    Hit(Box<Report>),
    Base(ImageInfo),
}

/// The base on the engine (pulled as `--pull` says), unless the result is
/// in the registry already: then the finished report, with nothing pulled.
pub async fn start<E: Engine>(
    engine: &E,
    args: &BuildArgs,
    set: &StagedSet,
    reporter: &dyn Reporter,
) -> Result<Start> {
    let started = Instant::now();
    if args.pull != crate::cli::PullPolicy::Always {
        if let Some(found) = engine.image(&args.base).await? {
            return Ok(Start::Base(found));
        }
    }
    // --boot-from keys chain on the boot image too, which is local: not here.
    if args.boot_from.is_none() && !args.no_cache {
        if let Some(report) = hit_without_base(args, set, reporter, started).await? {
            return Ok(Start::Hit(Box::new(report)));
        }
    }
    base::ensure(engine, &args.base, args.pull, reporter)
        .await
        .map(Start::Base)
}

/// The result's registry (`--repository` naming one, or `--push`), with the
/// user's credentials for it.
fn result_registry(args: &BuildArgs) -> Result<Option<Registry>> {
    let repo = RepositoryRef::parse(&args.repository);
    if !repo.explicit && !args.push {
        return Ok(None);
    }
    let credential = registry::credentials(&repo)?;
    Registry::new(repo, credential).map(Some)
}

/// The base's image id as its registry reports it, `None` when it cannot be
/// read (the pull that follows then says why, naming the registry).
async fn resolve_base(args: &BuildArgs, reporter: &dyn Reporter) -> Result<Option<String>> {
    let image = ImageRef::parse(&args.base);
    let credential = registry::credentials(&image.repository)?;
    let registry = Registry::new(image.repository.clone(), credential)?;
    match registry.image_id(image.tag_or_digest()).await {
        Ok(Some(id)) => {
            reporter.step(&format!(
                "base {}: image id {id} (from {}, not pulled)",
                args.base, image.repository.registry
            ));
            Ok(Some(id))
        }
        Ok(None) => Ok(None),
        Err(e @ Error::PlatformMissing { .. }) => Err(e),
        Err(e) => {
            tracing::warn!("cannot resolve base {} in its registry: {e}", args.base);
            Ok(None)
        }
    }
}

async fn hit_without_base(
    args: &BuildArgs,
    set: &StagedSet,
    reporter: &dyn Reporter,
    started: Instant,
) -> Result<Option<Report>> {
    let Some(registry) = result_registry(args)? else {
        return Ok(None);
    };
    let Some(base_id) = resolve_base(args, reporter).await? else {
        return Ok(None);
    };
    let plan = plan::plan(set, &base_id)?;
    let digest = match registry.manifest_digest(plan.tag()).await {
        Ok(Some(d)) => d,
        Ok(None) => return Ok(None),
        Err(e) if !args.push => {
            tracing::warn!("{e}; building locally");
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let image = format!("{}:{}", args.repository, plan.tag());
    reporter.step(&format!(
        "registry hit: {image} is in {} ({digest}); the base was not pulled",
        registry.repository().registry
    ));
    let tags = tag_hit(&registry, args, plan.tag(), &digest, reporter).await?;
    Ok(Some(Report {
        sdk_container_image: format!("{}@{digest}", args.repository),
        image,
        image_id: None,
        digest: Some(digest),
        cached: true,
        layers: plan
            .layers
            .iter()
            .map(|l| LayerReport {
                name: l.name.to_string(),
                cache: CacheOutcome::Registry,
                seconds: 0.0,
                image_id: String::new(),
            })
            .collect(),
        base: BaseReport {
            reference: args.base.clone(),
            id: base_id,
        },
        tags,
        seconds: (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
    }))
}

/// Every `--tag` on a registry hit of `key_tag` (whose manifest is
/// `digest`): the same manifest put under each tag, nothing pulled. A tag
/// that holds another digest is refused unless `--replace-tags`, as on a
/// push. Without `--push` the registry is read-only to prebuilder, so the
/// tags are not applied (and a warning says so). Returns `repo:tag` of each.
pub async fn tag_hit(
    registry: &Registry,
    args: &BuildArgs,
    key_tag: &str,
    digest: &str,
    reporter: &dyn Reporter,
) -> Result<Vec<String>> {
    if args.tags.is_empty() {
        return Ok(Vec::new());
    }
    let repo = &args.repository;
    if !args.push {
        tracing::warn!(
            "{repo}:{key_tag} is only in the registry: --tag {} not applied (pass --push to tag it there)",
            args.tags.join(" --tag ")
        );
        return Ok(Vec::new());
    }
    let manifest = registry
        .manifest(digest)
        .await?
        .ok_or_else(|| Error::Registry {
            registry: registry.repository().registry.clone(),
            action: format!("reading {repo}@{digest} to tag it"),
            reason: format!("the registry answered for {key_tag} but has no manifest {digest}"),
        })?;
    let mut done = Vec::new();
    for t in &args.tags {
        match registry.manifest_digest(t).await? {
            Some(d) if d == digest => {}
            Some(other) if !args.replace_tags => {
                return Err(Error::TagConflict {
                    reference: format!("{repo}:{t}"),
                    existing: other,
                })
            }
            other => {
                if let Some(o) = other {
                    reporter.step(&format!("moving {repo}:{t} from {o} to {digest}"));
                }
                registry.put_manifest(t, &manifest).await?;
                reporter.step(&format!("tagged {repo}:{t} in the registry ({digest})"));
            }
        }
        done.push(format!("{repo}:{t}"));
    }
    Ok(done)
}
