//! The build, as one pipeline over an engine of primitives ([`run`]):
//!
//! 1. ground: the base's (and `--boot-from` image's) ids, from the engine or
//!    their registries (`ground`);
//! 2. plan: the layers and their content-addressed keys (`crate::plan`);
//! 3. locate: each layer's source: on the engine, the whole result in the
//!    registry, a layer in the registry, or missing (`locate`);
//! 4. fetch: the registry's layers pulled; the base pulled, checked and given
//!    a boot layer (`base`, `boot`) only when a layer must be produced;
//! 5. produce: each missing layer, locked by key (`lock`), through the
//!    [`produce::Produce`] seam: a setup container running the boot, its
//!    snapshot assembled into a layer and loaded (`layer`, `setup`, `upload`,
//!    `record`, `verify`, `crate::image`);
//! 6. publish: tags, then `--push` through the registry API (`publish`),
//!    then the result's SBOMs and provenance, attached as OCI referrers and
//!    written to `--attestations-dir` (`attest`, one step after the report
//!    is made, whichever way the result was found);
//! 7. one report.
//!
//! Generic over [`Engine`] and [`Manifests`], so every decision here is
//! unit-tested against the recording fake (`tests/`) with no daemon.

pub mod assemble;
pub mod attest;
pub mod base;
pub mod boot;
pub mod direct;
pub mod early;
pub mod engineless;
pub mod flink;
pub mod ground;
pub mod layer;
pub mod lazy;
pub mod locate;
pub mod lock;
pub mod phase;
pub mod platform;
pub mod produce;
pub mod publish;
pub mod pull;
pub mod record;
pub mod setup;
pub mod upload;
pub mod verify;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Instant;

use base::Footing;
use ground::Ground;
use lazy::LazyRemote;
use locate::{Located, Source};

use crate::engine::{ops, Engine, Network};
use crate::error::{Error, Result};
use crate::plan::{self, Plan, BOOT_LAYER};
use crate::progress::{Event, Reporter};
use crate::registry::{Credential, Manifests};
use crate::report::{BaseReport, CacheOutcome, LayerReport, Report};
use crate::stage::StagedSet;

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
    /// The environment, read once by the caller (`crate::settings`).
    pub settings: crate::settings::Settings,
    /// The SBOMs and provenance of the result (see `attest`).
    pub attestations: attest::Attestations,
    /// Who produces a missing layer (`--builder`).
    pub builder: Builder,
    /// The launch host's Python: direct mode builds sdists with it.
    pub launch_python: PathBuf,
    /// The one platform this build is for (`linux/arm64`), set per platform
    /// by `platform::run` for `--platform`: its setup containers are created
    /// for it and it enters every layer's key. `None`: the engine's own.
    pub platform: Option<String>,
    /// The apache-beam version the base must already have: a staged SDK
    /// wheel this platform's boot would not install was left out
    /// (`platform::sdk`). The setup checks it before the boot runs, and it
    /// enters every layer's key.
    pub base_beam: Option<platform::sdk::BaseBeam>,
    /// How a produced dependency layer is cut into per-distribution layers
    /// (`PREBUILDER_SPLIT_THRESHOLD`; `None`: one layer).
    pub split: Option<crate::image::split::Rule>,
    /// `--output`: the result also written as an OCI layout or a `docker
    /// load` archive (with no engine only).
    pub output: Option<engineless::Output>,
}

/// `--builder`: a setup container on the engine (the base's own boot), or
/// direct mode (`crate::direct`: no container; Beam's boot and pip replayed
/// from files), or direct only when no engine answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Builder {
    Engine,
    Direct,
    Auto,
}

impl Builder {
    /// The builder that makes this build's layers when an engine answers.
    pub fn with_engine(self) -> Builder {
        match self {
            Builder::Auto => Builder::Engine,
            b => b,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Builder::Engine => "engine",
            Builder::Direct => "direct",
            Builder::Auto => "auto",
        }
    }
}

/// `--pull`, docker's names: pull the base when the engine lacks it, always,
/// or never. Defined once, here; the CLI takes it as its value type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
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
    /// image id without pulling it (see `ground`).
    pub base: Option<R>,
    /// The `--boot-from` image's registry, to read its id alike.
    pub boot: Option<R>,
}

/// Build (or find) every layer of `set` on `opts.base`, tag the result and
/// push it when asked. `remote` is called only when the registry is needed
/// (credentials may run a helper process): never on a relaunch that finds
/// every layer here and pushes nothing. The steps, in order:
pub async fn run<E: Engine, R: Manifests>(
    engine: &E,
    opts: &Options,
    set: &StagedSet,
    remote: impl FnOnce() -> Result<Option<Remote<R>>>,
    reporter: &dyn Reporter,
) -> Result<Report> {
    let mut remote = LazyRemote::new(remote);
    let report = find_or_build(engine, opts, set, &mut remote, reporter).await?;
    // The last step of publishing, whichever way the result was found: its
    // SBOMs and provenance (attached only where the push wrote).
    attest::publish(engine, opts, remote.made(), &report, reporter).await?;
    Ok(report)
}

/// Steps 1 to 7: the result found or built, tagged and pushed, reported.
async fn find_or_build<E: Engine, R: Manifests, F: FnOnce() -> Result<Option<Remote<R>>>>(
    engine: &E,
    opts: &Options,
    set: &StagedSet,
    remote: &mut LazyRemote<R, F>,
    reporter: &dyn Reporter,
) -> Result<Report> {
    let started = Instant::now();
    refuse_for_direct(opts, set)?;
    // 1. The ground: the base's (and boot image's) ids, engine or registry.
    let ground = ground::resolve(engine, opts, remote, reporter).await?;
    // 2. The plan: layers and their keys, chained on the ground.
    let plan = plan_on(set, opts, &ground)?;
    if opts.push {
        if let Some(r) = remote.get()? {
            publish::preflight(r, opts, plan.tag()).await?;
        }
    }
    // 3. Each layer's source: the engine, the registry, or missing.
    let mut sources = match locate::locate(engine, opts, &plan, remote, reporter).await? {
        Located::Result(digest) => {
            if ground.base.local.is_none() {
                reporter.event(Event::NothingPulled);
            }
            let tags = match remote.made() {
                Some(r) => publish::tag_hit(r, opts, plan.tag(), &digest, reporter).await?,
                None => Vec::new(),
            };
            let outcome = Outcome::registry_hit(&ground, &plan, digest, tags);
            return Ok(report(opts, &plan, (&ground, set), outcome, started));
        }
        Located::Layers(sources) => sources,
    };
    // 4. What the engine lacks: the registry's layers, then the footing (the
    //    base pulled, a boot layer) only when a layer must be produced.
    fetch(engine, opts, &plan, &mut sources, remote.made(), reporter).await?;
    let mut footing = match sources.contains(&Source::Missing) {
        true => {
            let on = (&ground, sources.as_slice());
            Some(footing(engine, opts, set, on, remote.made(), reporter).await?)
        }
        false => None,
    };
    // 5. Produce what is missing (a setup container, or direct); report and
    //    tag every layer.
    let built = produce_layers(
        engine,
        opts,
        (set, &plan, &ground),
        &sources,
        footing.as_mut(),
        reporter,
    )
    .await?;
    // 6. Publish: extra tags, then the push.
    let ids: Vec<String> = built.iter().map(|l| l.image_id.clone()).collect();
    let result = ids.last().cloned().unwrap_or_default();
    let tags = tag_extra(engine, opts, &result).await?;
    let base = footing
        .as_ref()
        .map(|f| &f.base)
        .or(ground.base.local.as_ref());
    let made = (&plan, ids.as_slice(), sources.as_slice());
    let digest = push(engine, opts, remote.made(), made, base, reporter).await?;
    // 7. One report.
    let mut layers = match footing {
        Some(f) => f.layers,
        None => boot_found(engine, &ground, &sources).await?,
    };
    layers.extend(built);
    let outcome = Outcome {
        layers,
        image_id: Some(result),
        digest,
        tags,
    };
    Ok(report(opts, &plan, (&ground, set), outcome, started))
}

/// Step 4's first half: the registry's layers pulled into the engine, or
/// with no engine held (`engineless`).
async fn fetch<E: Engine, R: Manifests>(
    engine: &E,
    opts: &Options,
    plan: &Plan<'_>,
    sources: &mut [Source],
    remote: Option<&Remote<R>>,
    reporter: &dyn Reporter,
) -> Result<()> {
    match (remote, engine.store()) {
        (Some(r), Some(store)) => engineless::fetch(store, opts, plan, sources, r, reporter).await,
        (Some(r), None) => locate::fetch(engine, opts, plan, sources, r, reporter).await,
        (None, _) => Ok(()),
    }
}

/// Step 6's push: through the engine's export (`publish`), or with no
/// engine the held images (`engineless`, which also writes `--output`). The
/// registry's digest of the result, when pushed.
async fn push<E: Engine, R: Manifests>(
    engine: &E,
    opts: &Options,
    remote: Option<&Remote<R>>,
    (plan, ids, sources): (&Plan<'_>, &[String], &[Source]),
    base: Option<&crate::engine::ImageInfo>,
    reporter: &dyn Reporter,
) -> Result<Option<String>> {
    if let Some(store) = engine.store() {
        return engineless::publish(store, opts, remote, (plan, ids, sources), reporter).await;
    }
    match (remote, opts.push) {
        (Some(r), true) => Ok(Some(
            publish::push(engine, opts, r, (plan, ids), base, reporter).await?,
        )),
        _ => Ok(None),
    }
}

/// Every layer of `plan`: found ones reported and tagged, missing ones made
/// on `footing` by the producer `--builder` chooses.
async fn produce_layers<E: Engine>(
    engine: &E,
    opts: &Options,
    (set, plan, ground): (&StagedSet, &Plan<'_>, &Ground),
    sources: &[Source],
    footing: Option<&mut Footing>,
    reporter: &dyn Reporter,
) -> Result<Vec<LayerReport>> {
    let base_id = &ground.base.id;
    match opts.builder.with_engine() {
        Builder::Direct => {
            let producer = direct::DirectProduce::new(engine, opts);
            let layers = produce::Layers {
                engine,
                producer: &producer,
                opts,
                plan,
                base_id,
            };
            layers.run(sources, footing, reporter).await
        }
        _ => {
            let mode = &set.mode;
            let producer = produce::EngineSetup { engine, opts, mode };
            let layers = produce::Layers {
                engine,
                producer: &producer,
                opts,
                plan,
                base_id,
            };
            layers.run(sources, footing, reporter).await
        }
    }
}

/// The plan on the ground, with the result's labels (`--label`, OCI) folded
/// into its key (see `crate::labels`).
fn plan_on<'a>(set: &'a StagedSet, opts: &Options, ground: &Ground) -> Result<Plan<'a>> {
    let mut plan = match opts.builder.with_engine() {
        Builder::Direct => plan::plan_with(set, &ground.parent, plan::keys::direct_command())?,
        _ => plan::plan_with(set, &ground.parent, command_for(set, opts))?,
    };
    crate::labels::apply(
        &mut plan,
        crate::labels::for_base(&opts.labels, &opts.base, &ground.base_repo_digests),
    );
    Ok(plan)
}

/// The setup command as it enters the keys; with `--platform`, the platform
/// too, so each platform's layers have keys of their own.
fn command_for(set: &StagedSet, opts: &Options) -> Vec<String> {
    let mut command = plan::keys::setup_command_for(&set.mode);
    if let Some(p) = &opts.platform {
        command.push(format!("platform={p}"));
    }
    if let Some(b) = &opts.base_beam {
        command.push(format!("base-apache-beam={}", b.version));
    }
    command
}

/// What direct mode does not build, refused before anything is.
fn refuse_for_direct(opts: &Options, set: &StagedSet) -> Result<()> {
    if opts.builder.with_engine() != Builder::Direct {
        return Ok(());
    }
    if let Some(boot) = &opts.boot_from {
        return Err(Error::DirectRefused {
            input: format!("--boot-from {boot}"),
            reason: "the boot layer is copied from another image by a container".into(),
        });
    }
    if set.mode.flink().is_some() {
        return Err(Error::DirectRefused {
            input: "the PyFlink inputs".into(),
            reason: "PyFlink's setup (archives, PYTHONPATH, its own requirements install) runs only in a setup container".into(),
        });
    }
    Ok(())
}

/// The footing a missing layer is produced on: the base, pulled when the
/// engine lacks it, plus the boot layer with `--boot-from`; with no engine,
/// the base held from its registry (`engineless`).
async fn footing<E: Engine, R: Manifests>(
    engine: &E,
    opts: &Options,
    set: &StagedSet,
    (ground, sources): (&Ground, &[Source]),
    remote: Option<&Remote<R>>,
    reporter: &dyn Reporter,
) -> Result<Footing> {
    if let Some(store) = engine.store() {
        return engineless::footing(store, opts, sources, remote, reporter).await;
    }
    let base = match &ground.base.local {
        Some(info) => info.clone(),
        None => pull::ensure(engine, opts, reporter).await?,
    };
    if base.id != ground.base.id {
        // The registry's tag moved between the lookup and the pull: the keys
        // were computed for another image.
        return Err(Error::BaseMoved {
            image: opts.base.clone(),
            resolved: ground.base.id.clone(),
            pulled: base.id.clone(),
        });
    }
    base::prepare(engine, opts, set, (ground, &base), reporter).await
}

/// The boot layer's report when nothing was produced (so no footing was
/// prepared): on the engine, else it came with the registry's layers.
async fn boot_found<E: Engine>(
    engine: &E,
    ground: &Ground,
    sources: &[Source],
) -> Result<Vec<LayerReport>> {
    let Some(key) = ground.boot_key() else {
        return Ok(Vec::new());
    };
    let (cache, image_id) = match ops::find_layer(engine, key).await? {
        Some(found) => (CacheOutcome::Hit, found.id),
        None if sources.iter().any(|s| matches!(s, Source::Registry(_))) => {
            (CacheOutcome::Registry, String::new())
        }
        None => (CacheOutcome::Hit, String::new()),
    };
    Ok(vec![LayerReport {
        name: BOOT_LAYER.to_string(),
        cache,
        seconds: 0.0,
        image_id,
        parts: Vec::new(),
        committed: false,
    }])
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

impl Outcome {
    /// The result's content tag is in the registry as `digest`: every layer,
    /// the boot layer too, came from there; nothing is on the engine.
    fn registry_hit(
        ground: &Ground,
        plan: &Plan<'_>,
        digest: String,
        tags: Vec<String>,
    ) -> Outcome {
        let boot = ground.boot_key().map(|_| BOOT_LAYER);
        let names = boot
            .into_iter()
            .chain(plan.layers.iter().map(|l| l.name.as_str()));
        Outcome {
            layers: names
                .map(|name| LayerReport {
                    name: name.to_string(),
                    cache: CacheOutcome::Registry,
                    seconds: 0.0,
                    image_id: String::new(),
                    parts: Vec::new(),
                    committed: false,
                })
                .collect(),
            image_id: None,
            digest: Some(digest),
            tags,
        }
    }
}

/// The report, built in one place for every outcome.
fn report(
    opts: &Options,
    plan: &Plan<'_>,
    (ground, set): (&Ground, &StagedSet),
    outcome: Outcome,
    started: Instant,
) -> Report {
    let image = format!("{}:{}", opts.repository, plan.tag());
    Report {
        builder: opts.builder.with_engine().as_str().to_string(),
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
            id: ground.base.id.clone(),
        },
        tags: outcome.tags,
        seconds: round(started.elapsed().as_secs_f64()),
        flink: set.mode.flink().map(flink::report),
        platforms: Vec::new(),
        sdk: None,
    }
}

pub(crate) fn round(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

/// A local I/O failure while doing `action` (never the engine's fault).
pub(crate) fn local(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let action = action.into();
    move |source| Error::Local { action, source }
}
