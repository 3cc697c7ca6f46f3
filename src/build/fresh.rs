//! Fresh CI runners: each job starts on an empty engine, all share one
//! registry.
//!
//! - Before anything is pulled, the base's image id is read from its registry
//!   (the digest of its config, see `registry::manifest`), the keys are
//!   computed from it, and when the result is in the registry the build ends
//!   there with nothing pulled: the multi-GB base is fetched only when
//!   something must be built on it. With `--boot-from` the boot image's id
//!   is read alike, and the boot layer's key made from both, as `base` makes
//!   it from the local images.
//! - A registry hit applies every `--tag` as a manifest put under the tag.
//! - The registry is the layer cache: `--push` pushes every layer's image
//!   (`REPO:layer-<key>`), and a build that misses locally looks its layers up
//!   there top-down and pulls the highest one found (its lower layers come
//!   with it) instead of rebuilding it. That pull comes before the base's,
//!   which then fetches a manifest only.

use std::time::Instant;

use super::{publish, pull, round, Options, Remote};
use crate::engine::{ops, Engine, ImageInfo};
use crate::error::{Error, Result};
use crate::plan::{self, LayerPlan, Plan, BOOT_LAYER, LAYER_TAG_PREFIX};
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

/// What the engine already has of the images a build sits on: the base and,
/// with `--boot-from`, the boot image (`None`: not there, or `--pull always`).
pub struct OnEngine<'a> {
    pub base: Option<&'a ImageInfo>,
    pub boot: Option<&'a ImageInfo>,
}

/// The base (or, with `--boot-from`, the boot image) is not on the engine:
/// look the result up by keys computed from the ids the registries report
/// for what is missing (the engine's for what it has), the same keys a
/// build with both images local computes; on a miss, pull the highest layer
/// the registry has.
pub async fn without_base<E: Engine, R: Manifests>(
    engine: &E,
    opts: &Options,
    set: &StagedSet,
    remote: Option<&Remote<R>>,
    on_engine: OnEngine<'_>,
    reporter: &dyn Reporter,
    started: Instant,
) -> Result<Found> {
    let none = Found::Layers(Vec::new());
    if opts.no_cache {
        return Ok(none);
    }
    let Some(remote) = remote else {
        return Ok(none);
    };
    let Some(ground) = resolve_ground(remote, opts, &on_engine, reporter).await? else {
        return Ok(none);
    };
    let mut plan = plan::plan(set, &ground.parent)?;
    // The same labels, so the same result key, as once the base is pulled.
    crate::labels::apply(
        &mut plan,
        crate::labels::for_base(&opts.labels, &opts.base, &ground.base_repo_digests),
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
    // The boot layer is part of the result found, as a local build reports it.
    let boot = opts.boot_from.is_some().then_some(BOOT_LAYER);
    let names = boot
        .into_iter()
        .chain(plan.layers.iter().map(|l| l.name.as_str()));
    Ok(Found::Hit(Box::new(Report {
        sdk_container_image: format!("{}@{digest}", opts.repository),
        image,
        image_id: None,
        digest: Some(digest),
        cached: true,
        layers: names
            .map(|name| LayerReport {
                name: name.to_string(),
                cache: CacheOutcome::Registry,
                seconds: 0.0,
                image_id: String::new(),
            })
            .collect(),
        base: BaseReport {
            reference: opts.base.clone(),
            id: ground.base_id,
        },
        tags,
        seconds: round(started.elapsed().as_secs_f64()),
        flink: set.mode.flink().map(super::flink::report),
    })))
}

/// What the first installing layer's key chains on, known before anything
/// is pulled.
struct ResolvedGround {
    base_id: String,
    /// The base's `repo@digest`s, as a pull of it records them (the
    /// `base.digest` label).
    base_repo_digests: Vec<String>,
    /// The base id, or with `--boot-from` the boot layer's key (see
    /// `base::prepare`, which computes it from the local images alike).
    parent: String,
}

/// The ids of the base and of the boot image: the engine's where it has
/// them, else read from their registries. `None` when one cannot be read
/// (the pull that follows then says why).
async fn resolve_ground<R: Manifests>(
    remote: &Remote<R>,
    opts: &Options,
    on_engine: &OnEngine<'_>,
    reporter: &dyn Reporter,
) -> Result<Option<ResolvedGround>> {
    let (base_id, base_repo_digests) = match on_engine.base {
        Some(base) => (base.id.clone(), base.repo_digests.clone()),
        None => {
            let Some((id, registry)) = resolve_id(remote.base.as_ref(), &opts.base).await? else {
                return Ok(None);
            };
            reporter.event(Event::BaseResolved {
                base: &opts.base,
                id: &id,
                registry: &registry,
            });
            (id, base_repo_digests(remote, opts).await?)
        }
    };
    let parent = match (opts.boot_from.as_deref(), on_engine.boot) {
        (None, _) => base_id.clone(),
        (Some(_), Some(boot)) => plan::boot_key(&base_id, &boot.id),
        (Some(boot_ref), None) => {
            let Some((boot_id, registry)) = resolve_id(remote.boot.as_ref(), boot_ref).await?
            else {
                return Ok(None);
            };
            reporter.event(Event::BootResolved {
                boot: boot_ref,
                id: &boot_id,
                registry: &registry,
            });
            plan::boot_key(&base_id, &boot_id)
        }
    };
    Ok(Some(ResolvedGround {
        base_id,
        base_repo_digests,
        parent,
    }))
}

/// The image id of `reference` from its registry, and that registry's host;
/// `None` when it cannot be read (the pull that follows then says why,
/// naming the registry). A platform missing from its index is an error: no
/// pull would help.
async fn resolve_id<R: Manifests>(
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
            source: format!("the registry answered for {key_tag} but has no manifest {digest}")
                .into(),
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
