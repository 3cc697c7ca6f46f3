//! Fresh CI runners: each job starts on an empty engine, all share one
//! registry.
//!
//! - Before anything is pulled, the base's image id is read from its registry
//!   (the digest of its config, see `registry::manifest`), the keys are
//!   computed from it, and when the result is in the registry the build ends
//!   there with nothing pulled: the multi-GB base is fetched only when
//!   something must be built on it.
//! - A registry hit applies every `--tag` as a manifest put under the tag.
//! - The registry is the layer cache: `--push` pushes every layer's image
//!   (`REPO:layer-<key>`), and a build that misses locally looks its layers up
//!   there top-down and pulls the highest one found (its lower layers come
//!   with it) instead of rebuilding it. That pull comes before the base's,
//!   which then fetches a manifest only.

use std::time::Instant;

use super::{publish, pull, round, Options, Remote};
use crate::engine::{ops, Engine};
use crate::error::{Error, Result};
use crate::plan::{self, LayerPlan, Plan, LAYER_TAG_PREFIX};
use crate::progress::{Event, Reporter};
use crate::registry::{ImageRef, Manifests};
use crate::report::{BaseReport, CacheOutcome, LayerReport, Report};
use crate::stage::StagedSet;

/// What the registry said before the base was pulled.
pub enum Found {
    /// The result is there: the finished report.
    Hit(Box<Report>),
    /// The names of the layers pulled from it (none when it had none).
    Layers(Vec<String>),
}

/// The base is not on the engine: look the result up by keys computed from
/// the base's id as its registry reports it; on a miss, pull the highest
/// layer the registry has.
pub async fn without_base<E: Engine, R: Manifests>(
    engine: &E,
    opts: &Options,
    set: &StagedSet,
    remote: Option<&Remote<R>>,
    reporter: &dyn Reporter,
    started: Instant,
) -> Result<Found> {
    let none = Found::Layers(Vec::new());
    // --boot-from keys chain on the boot image too, which is local: not here.
    if opts.boot_from.is_some() || opts.no_cache {
        return Ok(none);
    }
    let Some(remote) = remote else {
        return Ok(none);
    };
    let Some(base_id) = resolve_base(remote, opts, reporter).await? else {
        return Ok(none);
    };
    let mut plan = plan::plan(set, &base_id)?;
    // The same labels, so the same result key, as once the base is pulled.
    let repo_digests = base_repo_digests(remote, opts).await?;
    crate::labels::apply(
        &mut plan,
        crate::labels::for_base(&opts.labels, &opts.base, &repo_digests),
    );
    let digest = match remote.registry.manifest_digest(plan.tag()).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            let pulled =
                pull_layers(engine, remote, opts, &plan, &mut Vec::new(), reporter).await?;
            return Ok(Found::Layers(pulled));
        }
        Err(e) if !opts.push => {
            reporter.event(Event::RegistrySkipped {
                reason: &e.to_string(),
            });
            return Ok(none);
        }
        Err(e) => return Err(e),
    };
    let image = format!("{}:{}", opts.repository, plan.tag());
    reporter.event(Event::RegistryHit {
        image: &image,
        registry: remote.registry.host(),
        digest: &digest,
    });
    reporter.event(Event::NothingPulled);
    let tags = tag_hit(remote, opts, plan.tag(), &digest, reporter).await?;
    Ok(Found::Hit(Box::new(Report {
        sdk_container_image: format!("{}@{digest}", opts.repository),
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
            reference: opts.base.clone(),
            id: base_id,
        },
        tags,
        seconds: round(started.elapsed().as_secs_f64()),
        flink: set.mode.flink().map(super::flink::report),
    })))
}

/// The base's image id from its registry; `None` when it cannot be read
/// (the pull that follows then says why, naming the registry). A platform
/// missing from its index is an error: no pull would help.
async fn resolve_base<R: Manifests>(
    remote: &Remote<R>,
    opts: &Options,
    reporter: &dyn Reporter,
) -> Result<Option<String>> {
    let Some(registry) = &remote.base else {
        return Ok(None);
    };
    let image = ImageRef::parse(&opts.base);
    match registry.image_id(image.tag_or_digest()).await {
        Ok(Some(id)) => {
            reporter.event(Event::BaseResolved {
                base: &opts.base,
                id: &id,
                registry: registry.host(),
            });
            Ok(Some(id))
        }
        Ok(None) => Ok(None),
        Err(e @ Error::PlatformMissing { .. }) => Err(e),
        Err(e) => {
            tracing::warn!("cannot resolve base {} in its registry: {e}", opts.base);
            Ok(None)
        }
    }
}

/// The base's repo digest as a pull of it would record it (`repo@digest`),
/// read from its registry: the `base.digest` label, before any pull.
async fn base_repo_digests<R: Manifests>(
    remote: &Remote<R>,
    opts: &Options,
) -> Result<Vec<String>> {
    let image = ImageRef::parse(&opts.base);
    let Some(registry) = &remote.base else {
        return Ok(Vec::new());
    };
    if image.digest.is_some() {
        // The reference carries its digest; labels read it from there.
        return Ok(Vec::new());
    }
    Ok(registry
        .manifest_digest(image.tag_or_digest())
        .await?
        .map(|d| format!("{}@{d}", image.written))
        .into_iter()
        .collect())
}

/// Every `--tag` on a registry hit of `key_tag` (whose manifest is
/// `digest`): the same manifest put under each tag, nothing pulled. A tag
/// that holds another digest is refused unless `--replace-tags`, as on a
/// push. Without `--push` prebuilder does not write to the registry, and an
/// event says the tags were not applied. Returns `repo:tag` of each.
pub async fn tag_hit<R: Manifests>(
    remote: &Remote<R>,
    opts: &Options,
    key_tag: &str,
    digest: &str,
    reporter: &dyn Reporter,
) -> Result<Vec<String>> {
    if opts.tags.is_empty() {
        return Ok(Vec::new());
    }
    let repo = &opts.repository;
    if !opts.push {
        reporter.event(Event::TagsNotApplied {
            image: &format!("{repo}:{key_tag}"),
        });
        return Ok(Vec::new());
    }
    let registry = &remote.registry;
    let manifest = registry
        .manifest(digest)
        .await?
        .ok_or_else(|| Error::Registry {
            registry: registry.host().to_string(),
            action: format!("reading {repo}@{digest} to tag it"),
            reason: format!("the registry answered for {key_tag} but has no manifest {digest}"),
        })?;
    publish::apply_tags(registry, opts, &manifest, reporter).await
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
/// be read here is reported and the layers are built.
pub async fn pull_layers<E: Engine, R: Manifests>(
    engine: &E,
    remote: &Remote<R>,
    opts: &Options,
    plan: &Plan<'_>,
    local: &mut Vec<String>,
    reporter: &dyn Reporter,
) -> Result<Vec<String>> {
    let n = plan.layers.len();
    let start = local.len();
    // The result itself is a registry hit, answered before this.
    if opts.no_cache || start + 1 >= n {
        return Ok(Vec::new());
    }
    let mut highest = None;
    for j in (start..n - 1).rev() {
        match remote
            .registry
            .manifest_digest(&layer_tag(&plan.layers[j]))
            .await
        {
            Ok(Some(_)) => {
                highest = Some(j);
                break;
            }
            Ok(None) => {}
            Err(e) => {
                reporter.event(Event::RegistrySkipped {
                    reason: &e.to_string(),
                });
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
        let tag = layer_tag(layer);
        if i < highest && remote.registry.manifest_digest(&tag).await?.is_none() {
            break;
        }
        let reference = format!("{}:{tag}", opts.repository);
        reporter.event(Event::LayerFromRegistry {
            layer: layer.name,
            reference: &reference,
        });
        pull::pull(engine, &reference, reporter).await?;
        pulled.push(layer.name.to_string());
    }
    for layer in &plan.layers[start..] {
        match ops::find_layer(engine, &layer.key).await? {
            Some(found) => local.push(found.id),
            None => break,
        }
    }
    Ok(pulled)
}
