//! Fresh CI runners: each job starts on an empty engine, all share one
//! registry. Before anything is pulled, the base's image id is read from its
//! registry (the digest of its config, see `registry::manifest`), the keys are
//! computed from it, and when the result is already in the registry the build
//! ends there, with nothing pulled: the multi-GB base is fetched only when
//! something must be built on it. A registry hit also applies every `--tag`,
//! as a manifest put under the new tag.
//!
//! The registry is also the layer cache: `--push` pushes every layer's image
//! (`REPO:layer-<key>`), and a build that misses locally looks its layers up
//! there top-down and pulls the highest one found (its lower layers come with
//! it) instead of rebuilding it. That pull comes before the base's, which then
//! only fetches a manifest.

use std::time::Instant;

use super::base;
use crate::cli::BuildArgs;
use crate::engine::{Engine, ImageInfo};
use crate::error::{Error, Result};
use crate::image_ref::ImageRef;
use crate::plan::{self, LayerPlan, Plan, LAYER_TAG_PREFIX};
use crate::progress::Reporter;
use crate::registry::{self, Credential, Registry, RepositoryRef};
use crate::report::{BaseReport, CacheOutcome, LayerReport, Report};
use crate::stage::StagedSet;

/// How a build starts: finished already (a registry hit), or on a base the
/// engine now holds.
pub enum Start {
    Hit(Box<Report>),
    /// The base, and the names of the layers pulled from the registry.
    Base(ImageInfo, Vec<String>),
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
            return Ok(Start::Base(found, Vec::new()));
        }
    }
    let mut pulled = Vec::new();
    // --boot-from keys chain on the boot image too, which is local: not here.
    if args.boot_from.is_none() && !args.no_cache {
        match without_base(engine, args, set, reporter, started).await? {
            Found::Hit(report) => return Ok(Start::Hit(Box::new(report))),
            Found::Layers(names) => pulled = names,
        }
    }
    let base = base::ensure(engine, &args.base, args.pull, reporter).await?;
    Ok(Start::Base(base, pulled))
}

enum Found {
    Hit(Report),
    /// The layers pulled (none when nothing was found).
    Layers(Vec<String>),
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

async fn without_base<E: Engine>(
    engine: &E,
    args: &BuildArgs,
    set: &StagedSet,
    reporter: &dyn Reporter,
    started: Instant,
) -> Result<Found> {
    let none = Found::Layers(Vec::new());
    let Some(registry) = result_registry(args)? else {
        return Ok(none);
    };
    let Some(base_id) = resolve_base(args, reporter).await? else {
        return Ok(none);
    };
    let plan = plan::plan(set, &base_id)?;
    let digest = match registry.manifest_digest(plan.tag()).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            let mut local = Vec::new();
            let pulled = pull_layers(engine, &registry, args, &plan, &mut local, reporter).await?;
            return Ok(Found::Layers(pulled));
        }
        Err(e) if !args.push => {
            tracing::warn!("{e}; building locally");
            return Ok(none);
        }
        Err(e) => return Err(e),
    };
    let image = format!("{}:{}", args.repository, plan.tag());
    reporter.step(&format!(
        "registry hit: {image} is in {} ({digest}); the base was not pulled",
        registry.repository().registry
    ));
    let tags = tag_hit(&registry, args, plan.tag(), &digest, reporter).await?;
    Ok(Found::Hit(Report {
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

fn layer_tag(layer: &LayerPlan<'_>) -> String {
    format!("{LAYER_TAG_PREFIX}{}", layer.tag())
}

/// The registry as the layer cache. `local` holds the ids of the layers
/// found on the engine (a prefix of `plan.layers`); the layers above them,
/// below the result, are looked up in the registry top-down, and the highest
/// one found is pulled (then the ones below it, which only fetch manifests:
/// their blobs came with it). `local` is then extended with what the engine
/// now has. Returns the names of the layers pulled. A registry that cannot
/// be read is a warning: the build goes on and builds them.
pub async fn pull_layers<E: Engine>(
    engine: &E,
    registry: &Registry,
    args: &BuildArgs,
    plan: &Plan<'_>,
    local: &mut Vec<String>,
    reporter: &dyn Reporter,
) -> Result<Vec<String>> {
    let n = plan.layers.len();
    let start = local.len();
    // The result itself is a registry hit, answered before this.
    if n == 0 || start + 1 >= n {
        return Ok(Vec::new());
    }
    let mut highest = None;
    for j in (start..n - 1).rev() {
        match registry.manifest_digest(&layer_tag(&plan.layers[j])).await {
            Ok(Some(_)) => {
                highest = Some(j);
                break;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!("{e}; building the layers instead of pulling them");
                return Ok(Vec::new());
            }
        }
    }
    let Some(highest) = highest else {
        return Ok(Vec::new());
    };
    let mut pulled = Vec::new();
    for i in (start..=highest).rev() {
        let layer = &plan.layers[i];
        let reference = format!("{}:{}", args.repository, layer_tag(layer));
        if i < highest && registry.manifest_digest(&layer_tag(layer)).await?.is_none() {
            break;
        }
        reporter.step(&format!(
            "{}: found in the registry as {reference}; pulling it instead of building it",
            layer.name
        ));
        base::pull(engine, &reference, reporter).await?;
        pulled.push(layer.name.to_string());
    }
    for layer in &plan.layers[start..] {
        match engine.find_layer(&layer.key).await? {
            Some(found) => local.push(found.id),
            None => break,
        }
    }
    Ok(pulled)
}

/// With `--push`: every layer below the result goes to the registry as
/// `REPO:layer-<key>` (unless it is there already), so other runners can
/// build on it instead of rebuilding it.
pub async fn push_layers<E: Engine>(
    engine: &E,
    registry: &Registry,
    credential: Option<&Credential>,
    args: &BuildArgs,
    plan: &Plan<'_>,
    reporter: &dyn Reporter,
) -> Result<()> {
    let below = plan.layers.len().saturating_sub(1);
    for layer in &plan.layers[..below] {
        let tag = layer_tag(layer);
        if !args.no_cache && registry.manifest_digest(&tag).await?.is_some() {
            continue;
        }
        reporter.step(&format!(
            "pushing {}:{tag} (the {} layer, for other runners)",
            args.repository, layer.name
        ));
        engine
            .push(&args.repository, &tag, credential, reporter)
            .await?;
    }
    Ok(())
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
