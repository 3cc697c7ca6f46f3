//! The build, as one pipeline over an engine of primitives:
//!
//! 1. find: the base, then every layer on the engine (`find_local`), else the
//!    result's content tag in the registry (`find_in_registry`);
//! 2. lock: a layer that is missing is locked by key (`lock`), so concurrent
//!    runs with the same inputs build it once;
//! 3. set up: the base is checked once (`base`), then each missing layer runs
//!    the boot in a setup container (`layer`, `setup`, `upload`, `record`);
//! 4. assemble: the setup's snapshot becomes a layer (`crate::image`), loaded
//!    into the engine, or the container is committed;
//! 5. publish: tags, then `--push` (`publish`), then the result's SBOMs and
//!    provenance, attached as referrers (`attest`).
//!
//! Generic over [`Engine`] and [`Manifests`], so every decision here is
//! unit-tested against the recording fake (`tests.rs`) with no daemon.

pub mod attest;
pub mod base;
pub mod boot;
pub mod flink;
pub mod fresh;
pub mod layer;
pub mod lock;
pub mod phase;
pub mod publish;
pub mod pull;
pub mod record;
pub mod setup;
pub mod upload;
pub mod verify;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use crate::engine::{
    ops, Engine, ImageInfo, Network, LABEL_ARTIFACTS, LABEL_BASE, LABEL_KEY, LABEL_LAYER,
    LABEL_PARENT, LABEL_VERSION,
};
use crate::error::{Error, Result};
use crate::plan::{self, LayerPlan, Plan, LAYER_TAG_PREFIX};
use crate::progress::{Event, Layer, Reporter};
use crate::registry::{Credential, Manifests};
use crate::report::{BaseReport, CacheOutcome, LayerReport, Report};
use crate::stage::{SetupMode, StagedSet};

/// What a build is asked to do (the build flags, minus the inputs).
#[derive(Debug, Clone)]
pub struct Options {
    pub base: String,
    pub repository: String,
    /// Extra tags for the result (`--tag`).
    pub tags: Vec<String>,
    pub push: bool,
    pub replace_tags: bool,
    pub no_cache: bool,
    pub no_check: bool,
    pub boot_from: Option<String>,
    pub network: Network,
    /// Where the per-key lock files live (`crate::state::lock_dir`).
    pub lock_dir: PathBuf,
    /// Where the blob each pushed layer compressed to is remembered (diff id
    /// → blob digest and size; `crate::state::blob_map_dir`), so a later push
    /// from this machine asks the registry instead of compressing again.
    pub blob_map: PathBuf,
    /// Where temporary files go: this process's scratch directory
    /// (`crate::state::Scratch`), which a later run removes if this one is killed.
    pub scratch_dir: PathBuf,
    /// Commit the setup container instead of loading its snapshot as a layer
    /// (`PREBUILDER_COMMIT`; read by the caller, never deep in here).
    pub commit: bool,
    /// What the result's labels come from (`--label`, source, revision, …).
    pub labels: crate::labels::Request,
    /// When to pull the base (`--pull`).
    pub pull: PullPolicy,
    /// The SBOMs and provenance of the result (see `attest`).
    pub attestations: attest::Attestations,
}

/// `--pull`, docker's names: pull the base when the engine lacks it, always,
/// or never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Missing,
    Always,
    Never,
}

/// A registry the build may use, with the credentials for it.
pub struct Remote<R> {
    pub registry: R,
    pub credential: Option<Credential>,
    /// The base's registry (with the credentials for it), to read the base's
    /// image id without pulling it (see `fresh`).
    pub base: Option<R>,
    /// The `--boot-from` image's registry, to read its id alike.
    pub boot: Option<R>,
}

/// Build (or find) every layer of `set` on `opts.base`, tag the result and
/// push it when asked. `remote` is called only when the registry is needed
/// (credentials may run a helper process): never on a relaunch that finds
/// every layer here and pushes nothing.
pub async fn run<E: Engine, R: Manifests>(
    engine: &E,
    opts: &Options,
    set: &StagedSet,
    remote: impl FnOnce() -> Result<Option<Remote<R>>>,
    reporter: &dyn Reporter,
) -> Result<Report> {
    let (report, remote) = find_or_build(engine, opts, set, remote, reporter).await?;
    // The last step of publishing, whichever way the result was found.
    attest::publish(engine, opts, remote.as_ref(), &report, reporter).await?;
    Ok(report)
}

/// Find the result or build it, tag and push it: the report, and the
/// registry when one was asked for.
async fn find_or_build<E: Engine, R: Manifests>(
    engine: &E,
    opts: &Options,
    set: &StagedSet,
    remote: impl FnOnce() -> Result<Option<Remote<R>>>,
    reporter: &dyn Reporter,
) -> Result<(Report, Option<Remote<R>>)> {
    let started = Instant::now();
    let mut remote = Some(remote);
    let mut take_remote = || remote.take().map_or(Ok(None), |f| f());
    // A fresh runner: the base, and the boot image, may be only in their
    // registry (see `fresh`).
    let (local_base, local_boot) = match opts.pull {
        PullPolicy::Always => (None, None),
        _ => {
            let base = engine.inspect(&opts.base).await?;
            let boot = match &opts.boot_from {
                Some(boot) => engine.inspect(boot).await?,
                None => None,
            };
            (base, boot)
        }
    };
    let all_here = local_base.is_some() && (opts.boot_from.is_none() || local_boot.is_some());
    let mut early_remote = None;
    let (base, mut pulled) = match local_base {
        Some(base) if all_here => (base, Vec::new()),
        local_base => {
            let r = take_remote()?;
            let on_engine = fresh::OnEngine {
                base: local_base.as_ref(),
                boot: local_boot.as_ref(),
            };
            let found =
                fresh::without_base(engine, opts, set, r.as_ref(), on_engine, reporter, started)
                    .await?;
            early_remote = Some(r);
            match found {
                fresh::Found::Hit(report) => return Ok((*report, early_remote.flatten())),
                fresh::Found::Layers(names) => {
                    let base = match local_base {
                        Some(base) => base,
                        None => pull::ensure(engine, opts, reporter).await?,
                    };
                    if let (Some(boot), None) = (&opts.boot_from, &local_boot) {
                        pull::ensure_boot(engine, opts, boot, reporter).await?;
                    }
                    (base, names)
                }
            }
        }
    };
    let mut ground = base::prepare(engine, opts, set, &base, reporter).await?;
    let mut plan = plan::plan(set, &ground.parent)?;
    // The result's labels (--label, OCI) enter its key: see crate::labels.
    crate::labels::apply(
        &mut plan,
        crate::labels::for_base(&opts.labels, &opts.base, &base.repo_digests),
    );
    let mut local = find_local(engine, opts, &plan).await?;
    let all_local = local.len() == plan.layers.len();
    let remote = match early_remote {
        Some(r) => r,
        None if all_local && !opts.push => None,
        None => take_remote()?,
    };
    if let (Some(remote), true) = (&remote, opts.push) {
        publish::preflight(remote, opts, plan.tag()).await?;
    }
    let mut layers = std::mem::take(&mut ground.layers);
    if !all_local && !opts.no_cache {
        if let Some(digest) = find_in_registry(remote.as_ref(), opts, &plan, reporter).await? {
            layers.extend(plan.layers.iter().map(|l| LayerReport {
                name: l.name.to_string(),
                cache: CacheOutcome::Registry,
                seconds: 0.0,
                image_id: String::new(),
            }));
            let tags = match &remote {
                Some(r) => fresh::tag_hit(r, opts, plan.tag(), &digest, reporter).await?,
                None => Vec::new(),
            };
            let outcome = Outcome {
                layers,
                image_id: None,
                digest: Some(digest),
                tags,
            };
            return Ok((report(opts, &plan, (&base, set), outcome, started), remote));
        }
        // The registry as the layer cache: pull the highest layer it has.
        if let Some(r) = &remote {
            pulled.extend(fresh::pull_layers(engine, r, opts, &plan, &mut local, reporter).await?);
        }
    }
    if !local.is_empty() {
        ground.proven_by_a_layer();
    }
    let mut built = build_layers(
        engine,
        opts,
        &plan,
        &mut ground,
        &local,
        (&base, &set.mode),
        reporter,
    )
    .await?;
    for l in built.iter_mut() {
        if l.cache == CacheOutcome::Hit && pulled.contains(&l.name) {
            l.cache = CacheOutcome::Registry;
        }
    }
    let ids: Vec<String> = built.iter().map(|l| l.image_id.clone()).collect();
    layers.extend(built);
    let result = layers
        .last()
        .map(|l| l.image_id.clone())
        .unwrap_or_default();
    let tags = tag_extra(engine, opts, &result).await?;
    let digest = match (&remote, opts.push) {
        (Some(remote), true) => {
            Some(publish::push(engine, opts, remote, (&plan, &ids), &base, reporter).await?)
        }
        _ => None,
    };
    let outcome = Outcome {
        layers,
        image_id: Some(result),
        digest,
        tags,
    };
    Ok((report(opts, &plan, (&base, set), outcome, started), remote))
}

/// The ids of the layers found on the engine, bottom up, up to the first
/// missing one (none with `--no-cache`).
async fn find_local<E: Engine>(engine: &E, opts: &Options, plan: &Plan<'_>) -> Result<Vec<String>> {
    let mut local = Vec::new();
    if opts.no_cache {
        return Ok(local);
    }
    for layer in &plan.layers {
        match ops::find_layer(engine, &layer.key).await? {
            Some(found) => local.push(found.id),
            None => break,
        }
    }
    Ok(local)
}

/// The registry's digest of the result's content tag, when the registry has
/// it. Without `--push` the registry is only a cache: a failure to ask it
/// is reported and the build goes on locally.
async fn find_in_registry<R: Manifests>(
    remote: Option<&Remote<R>>,
    opts: &Options,
    plan: &Plan<'_>,
    reporter: &dyn Reporter,
) -> Result<Option<String>> {
    let Some(remote) = remote else {
        return Ok(None);
    };
    match remote.registry.manifest_digest(plan.tag()).await {
        Ok(Some(digest)) => {
            reporter.event(Event::RegistryHit {
                image: &format!("{}:{}", opts.repository, plan.tag()),
                registry: remote.registry.host(),
                digest: &digest,
            });
            Ok(Some(digest))
        }
        Ok(None) => Ok(None),
        Err(e) if !opts.push => {
            reporter.event(Event::RegistrySkipped {
                reason: &e.to_string(),
            });
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Build or reuse each layer in turn and tag it: the result by its key, the
/// layers below it by `layer-<key>`, which tells `gc` what only serves a result.
async fn build_layers<E: Engine>(
    engine: &E,
    opts: &Options,
    plan: &Plan<'_>,
    ground: &mut base::Ground,
    local: &[String],
    (base, mode): (&ImageInfo, &SetupMode),
    reporter: &dyn Reporter,
) -> Result<Vec<LayerReport>> {
    let mut layers = Vec::new();
    let mut from_image = ground.from_image.clone();
    for (i, layer) in plan.layers.iter().enumerate() {
        let started = Instant::now();
        let (id, cache) = match local.get(i) {
            Some(id) => {
                reporter.event(Event::LayerHit {
                    layer: Layer::Install(layer.name),
                    tag: layer.tag(),
                });
                (id.clone(), CacheOutcome::Hit)
            }
            None => {
                build_or_wait(
                    engine,
                    opts,
                    layer,
                    &from_image,
                    ground,
                    (base, mode),
                    reporter,
                )
                .await?
            }
        };
        let tag = if i + 1 == plan.layers.len() {
            layer.tag().to_string()
        } else {
            format!("{LAYER_TAG_PREFIX}{}", layer.tag())
        };
        engine.tag(&id, &opts.repository, &tag).await?;
        layers.push(LayerReport {
            name: layer.name.to_string(),
            cache,
            seconds: round(started.elapsed().as_secs_f64()),
            image_id: id.clone(),
        });
        from_image = id;
    }
    Ok(layers)
}

/// A layer missing on the engine: lock its key; a concurrent run with the
/// same inputs may have built it while this one waited; else check the base
/// (once) and build it. The lock is held until the layer is built.
async fn build_or_wait<E: Engine>(
    engine: &E,
    opts: &Options,
    layer: &LayerPlan<'_>,
    from_image: &str,
    ground: &mut base::Ground,
    (base, mode): (&ImageInfo, &SetupMode),
    reporter: &dyn Reporter,
) -> Result<(String, CacheOutcome)> {
    let lock = lock::acquire(&opts.lock_dir, &layer.key, reporter).await;
    if !opts.no_cache && lock.is_some() {
        if let Some(found) = ops::find_layer(engine, &layer.key).await? {
            reporter.event(Event::LayerHit {
                layer: Layer::Install(layer.name),
                tag: layer.tag(),
            });
            return Ok((found.id, CacheOutcome::Hit));
        }
    }
    ground.check(engine, reporter).await?;
    reporter.event(Event::LayerBuilding {
        layer: layer.name,
        artifacts: layer.artifacts.len(),
    });
    let build = layer::LayerBuild {
        from_image,
        config_image: &ground.config,
        layer,
        labels: labels(layer, base),
        network: &opts.network,
        commit: opts.commit,
        scratch: &opts.scratch_dir,
        mode,
    };
    let id = layer::build(engine, &build, reporter).await?;
    drop(lock);
    Ok((id, CacheOutcome::Miss))
}

/// Every `--tag` on the result, as full `repo:tag` references.
async fn tag_extra<E: Engine>(engine: &E, opts: &Options, image: &str) -> Result<Vec<String>> {
    let mut tags = Vec::new();
    for t in &opts.tags {
        engine.tag(image, &opts.repository, t).await?;
        tags.push(format!("{}:{t}", opts.repository));
    }
    Ok(tags)
}

/// What differs between a registry hit and a local build, for [`report`].
struct Outcome {
    layers: Vec<LayerReport>,
    image_id: Option<String>,
    digest: Option<String>,
    tags: Vec<String>,
}

/// The report, built in one place for every outcome.
fn report(
    opts: &Options,
    plan: &Plan<'_>,
    (base, set): (&ImageInfo, &StagedSet),
    outcome: Outcome,
    started: Instant,
) -> Report {
    let image = format!("{}:{}", opts.repository, plan.tag());
    Report {
        sdk_container_image: match &outcome.digest {
            Some(d) => format!("{}@{d}", opts.repository),
            None => image.clone(),
        },
        image,
        image_id: outcome.image_id,
        digest: outcome.digest,
        cached: outcome.layers.iter().all(|l| l.cache != CacheOutcome::Miss),
        layers: outcome.layers,
        base: BaseReport {
            reference: opts.base.clone(),
            id: base.id.clone(),
        },
        tags: outcome.tags,
        seconds: round(started.elapsed().as_secs_f64()),
        flink: set.mode.flink().map(flink::report),
    }
}

/// Labels that describe a layer image: its key (what the cache looks up),
/// where it sits, and the inputs it installed.
fn labels(layer: &LayerPlan<'_>, base: &ImageInfo) -> BTreeMap<String, String> {
    let artifacts: BTreeMap<&str, &str> = layer
        .artifacts
        .iter()
        .map(|a| (a.name.as_str(), a.content_digest.as_str()))
        .collect();
    // The result's own labels first: prebuilder's may not be overridden.
    let mut labels = layer.labels.clone();
    labels.extend([
        (LABEL_KEY.to_string(), layer.key.clone()),
        (LABEL_LAYER.to_string(), layer.name.to_string()),
        (LABEL_PARENT.to_string(), layer.parent.clone()),
        (LABEL_BASE.to_string(), base.id.clone()),
        (
            LABEL_VERSION.to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        (LABEL_ARTIFACTS.to_string(), artifacts_label(&artifacts)),
    ]);
    labels
}

/// Past this size the artifacts label holds a digest of the list instead.
const ARTIFACTS_LABEL_LIMIT: usize = 16 * 1024;

/// The layer's inputs as JSON (name → content digest), or, when that would
/// be larger than [`ARTIFACTS_LABEL_LIMIT`], its digest and count: labels
/// travel with every inspect (issue 12: 50,000 inputs made a 4 MB label).
/// The full list is always in the image's record file.
fn artifacts_label(artifacts: &BTreeMap<&str, &str>) -> String {
    let full = serde_json::to_string(artifacts).unwrap_or_default();
    if full.len() <= ARTIFACTS_LABEL_LIMIT {
        return full;
    }
    use sha2::Digest;
    format!(
        "sha256:{} ({} artifacts; the list is in {})",
        hex::encode(sha2::Sha256::digest(full.as_bytes())),
        artifacts.len(),
        crate::record::RECORD_FILE
    )
}

pub(crate) fn round(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

/// A local I/O failure while doing `action` (never the engine's fault).
pub(crate) fn local(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let action = action.into();
    move |source| Error::Local { action, source }
}
