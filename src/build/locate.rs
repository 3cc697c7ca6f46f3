//! Where each layer of a plan comes from, looked up before anything is
//! built or pulled: on the engine (found by its key), the whole result in the
//! registry (its content tag), a layer in the registry (`REPO:layer-<key>`,
//! pushed by an earlier `--push`), or nowhere (this build produces it).
//!
//! The engine is asked first, bottom up; the registry only for what the
//! engine lacks, and never with `--no-cache`. Without `--push` the registry
//! is a cache: a registry that cannot be asked is reported and the build goes
//! on locally.

use super::lazy::LazyRemote;
use super::{pull, Options, Remote};
use crate::engine::{ops, Engine};
use crate::error::Result;
use crate::plan::{LayerPlan, Plan, LAYER_TAG_PREFIX};
use crate::progress::{Event, Reporter};
use crate::registry::Manifests;
use crate::report::CacheOutcome;

/// Where one layer comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// On the engine: its image id.
    Engine(String),
    /// In the registry as `REPO:layer-<key>`: pulled, not built; its image
    /// id once pulled.
    Registry(Option<String>),
    /// Nowhere: this build produces it.
    Missing,
}

impl Source {
    /// The layer's image on the engine, once it is there.
    pub fn id(&self) -> Option<&str> {
        match self {
            Source::Engine(id) | Source::Registry(Some(id)) => Some(id),
            _ => None,
        }
    }

    /// How the report names this source.
    pub fn cache(&self) -> CacheOutcome {
        match self {
            Source::Engine(_) => CacheOutcome::Hit,
            Source::Registry(_) => CacheOutcome::Registry,
            Source::Missing => CacheOutcome::Miss,
        }
    }
}

/// What the lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// The result's content tag is in the registry: its manifest digest.
    Result(String),
    /// Each layer's source, bottom up.
    Layers(Vec<Source>),
}

/// Every layer's source: the engine's layers (a prefix of the plan), then the
/// registry's result or its highest layer, then what is missing. The
/// registry is made (`remote`) only when the engine lacks a layer.
pub async fn locate<E: Engine, R: Manifests, F>(
    engine: &E,
    opts: &Options,
    plan: &Plan<'_>,
    remote: &mut LazyRemote<R, F>,
    reporter: &dyn Reporter,
) -> Result<Located>
where
    F: FnOnce() -> Result<Option<Remote<R>>>,
{
    let n = plan.layers.len();
    let mut sources: Vec<Source> = on_engine(engine, opts, plan)
        .await?
        .into_iter()
        .map(Source::Engine)
        .collect();
    let lacking = sources.len() < n && !opts.no_cache;
    if let Some(remote) = if lacking { remote.get()? } else { None } {
        // `--output` writes the result's files: it is made, not found.
        if opts.output.is_none() {
            if let Some(digest) = result_in_registry(remote, opts, plan, reporter).await? {
                return Ok(Located::Result(digest));
            }
        }
        if let Some(highest) = highest_in_registry(remote, plan, sources.len(), reporter).await? {
            sources.resize(highest + 1, Source::Registry(None));
        }
    }
    sources.resize(n, Source::Missing);
    Ok(Located::Layers(sources))
}

/// The ids of the layers found on the engine, bottom up, up to the first
/// missing one (none with `--no-cache`).
async fn on_engine<E: Engine>(engine: &E, opts: &Options, plan: &Plan<'_>) -> Result<Vec<String>> {
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

/// The registry's digest of the result's content tag, when it has it.
async fn result_in_registry<R: Manifests>(
    remote: &Remote<R>,
    opts: &Options,
    plan: &Plan<'_>,
    reporter: &dyn Reporter,
) -> Result<Option<String>> {
    let found = remote.registry.manifest_digest(plan.tag()).await;
    let Some(digest) = cache_answer(found, opts, reporter)?.flatten() else {
        return Ok(None);
    };
    reporter.event(Event::RegistryHit {
        image: &format!("{}:{}", opts.repository, plan.tag()),
        registry: remote.registry.host(),
        digest: &digest,
    });
    Ok(Some(digest))
}

/// The highest layer below the result, above the engine's `start` layers,
/// that the registry holds as `REPO:layer-<key>`.
async fn highest_in_registry<R: Manifests>(
    remote: &Remote<R>,
    plan: &Plan<'_>,
    start: usize,
    reporter: &dyn Reporter,
) -> Result<Option<usize>> {
    let below_result = plan.layers.len().saturating_sub(1);
    for j in (start..below_result).rev() {
        let found = remote
            .registry
            .manifest_digest(&layer_tag(&plan.layers[j]))
            .await;
        match found {
            Ok(Some(_)) => return Ok(Some(j)),
            Ok(None) => {}
            Err(e) => {
                reporter.event(Event::RegistrySkipped {
                    reason: &e.to_string(),
                });
                return Ok(None);
            }
        }
    }
    Ok(None)
}

/// A registry answer used as a cache: a failure is the build's failure with
/// `--push`, else reported and read as "not there" (`Ok(None)`).
fn cache_answer<T>(found: Result<T>, opts: &Options, reporter: &dyn Reporter) -> Result<Option<T>> {
    match found {
        Ok(found) => Ok(Some(found)),
        Err(e) if !opts.push => {
            reporter.event(Event::RegistrySkipped {
                reason: &e.to_string(),
            });
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

pub fn layer_tag(layer: &LayerPlan<'_>) -> String {
    format!("{LAYER_TAG_PREFIX}{}", layer.tag())
}

/// Pull the registry's layers: the highest first (the ones below it come
/// with it; pulling their tags then fetches manifests only). A layer the
/// engine does not show after its pull, and every layer above it, become
/// [`Source::Missing`].
pub async fn fetch<E: Engine, R: Manifests>(
    engine: &E,
    opts: &Options,
    plan: &Plan<'_>,
    sources: &mut [Source],
    remote: &Remote<R>,
    reporter: &dyn Reporter,
) -> Result<()> {
    let wanted: Vec<usize> = (0..sources.len())
        .filter(|&i| sources[i] == Source::Registry(None))
        .collect();
    for (n, &i) in wanted.iter().rev().enumerate() {
        let layer = &plan.layers[i];
        let tag = layer_tag(layer);
        if n > 0 && remote.registry.manifest_digest(&tag).await?.is_none() {
            break;
        }
        let reference = format!("{}:{tag}", opts.repository);
        reporter.event(Event::LayerFromRegistry {
            layer: layer.name,
            reference: &reference,
        });
        pull::pull(engine, opts, &reference, reporter).await?;
    }
    let mut gone = false;
    for (i, source) in sources.iter_mut().enumerate() {
        if *source != Source::Registry(None) {
            continue;
        }
        let found = match gone {
            true => None,
            false => ops::find_layer(engine, &plan.layers[i].key).await?,
        };
        match found {
            Some(found) => *source = Source::Registry(Some(found.id)),
            None => {
                gone = true;
                *source = Source::Missing;
            }
        }
    }
    Ok(())
}
