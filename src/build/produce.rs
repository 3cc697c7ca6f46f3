//! Every layer of a plan, in order: the ones found (on the engine, or pulled
//! from the registry) are reported and tagged; each missing one is locked by
//! its key, looked for again (a concurrent run may have made it meanwhile),
//! and produced through one seam, [`Produce`], on the build's footing (the
//! base, or base plus boot layer), whose checks run once, before the first.
//!
//! Tags: the result by its key, every layer below it by `layer-<key>`,
//! which tells `gc` what only serves a result.

use std::collections::BTreeMap;
use std::time::Instant;

use super::base::Footing;
use super::locate::Source;
use super::{layer, lock, round, Options};
use crate::engine::{
    ops, Engine, ImageInfo, LABEL_ARTIFACTS, LABEL_BASE, LABEL_COMMITTED, LABEL_KEY, LABEL_LAYER,
    LABEL_PARENT, LABEL_SPLIT, LABEL_VERSION,
};
use crate::error::Result;
use crate::plan::{LayerPlan, Plan, LAYER_TAG_PREFIX};
use crate::progress::{Event, Layer, Reporter};
use crate::report::{CacheOutcome, LayerReport, PartReport};
use crate::stage::SetupMode;

/// One layer to produce.
pub struct Job<'a> {
    pub layer: &'a LayerPlan<'a>,
    /// The image the layer starts from (the footing, or the layer below).
    pub from_image: &'a str,
    /// The image whose config (entrypoint, env, …) the layer keeps.
    pub config_image: &'a ImageInfo,
    /// The labels the layer's image gets on top of that config's.
    pub labels: BTreeMap<String, String>,
}

/// The seam a builder plugs into: make a missing layer's image from the one
/// below it; the new image's id, on the engine.
#[allow(async_fn_in_trait)]
pub trait Produce {
    async fn produce(&self, job: Job<'_>, reporter: &dyn Reporter) -> Result<String>;
}

/// Today's builder: the setup program in a container on the engine, its
/// snapshot loaded as the layer (or the container committed).
pub struct EngineSetup<'a, E> {
    pub engine: &'a E,
    pub opts: &'a Options,
    pub mode: &'a SetupMode,
}

impl<E: Engine> Produce for EngineSetup<'_, E> {
    async fn produce(&self, job: Job<'_>, reporter: &dyn Reporter) -> Result<String> {
        let build = layer::LayerBuild {
            from_image: job.from_image,
            config_image: job.config_image,
            layer: job.layer,
            labels: job.labels,
            network: &self.opts.network,
            commit: self.opts.commit,
            scratch: &self.opts.scratch_dir,
            mode: self.mode,
            source_date_epoch: self.opts.settings.source_date_epoch(),
            platform: self.opts.platform.as_deref(),
            base_beam: self.opts.base_beam.as_ref().map(|b| b.version.as_str()),
            split: self.opts.split,
            early: self.opts.settings.early_layers(),
        };
        layer::build(self.engine, &build, reporter).await
    }
}

/// What the layer loop works with.
pub struct Layers<'a, E, P> {
    pub engine: &'a E,
    pub producer: &'a P,
    pub opts: &'a Options,
    pub plan: &'a Plan<'a>,
    /// The base's id, for every layer's `prebuilder.base` label.
    pub base_id: &'a str,
}

impl<E: Engine, P: Produce> Layers<'_, E, P> {
    /// Report and tag every layer, producing the missing ones on `footing`
    /// (there whenever a layer is missing); each layer's report, bottom up.
    pub async fn run(
        &self,
        sources: &[Source],
        mut footing: Option<&mut Footing>,
        reporter: &dyn Reporter,
    ) -> Result<Vec<LayerReport>> {
        if let (Some(f), true) = (
            footing.as_deref_mut(),
            sources.iter().any(|s| s.id().is_some()),
        ) {
            f.proven_by_a_layer();
        }
        let mut reports: Vec<LayerReport> = Vec::new();
        for (i, (layer, source)) in self.plan.layers.iter().zip(sources).enumerate() {
            let started = Instant::now();
            let (id, cache) = match source.id() {
                Some(id) => {
                    if let Source::Engine(_) = source {
                        reporter.event(Event::LayerHit {
                            layer: Layer::Install(layer.name),
                            tag: layer.tag(),
                        });
                    }
                    (id.to_string(), source.cache())
                }
                None => {
                    let below = reports.last().map(|r| r.image_id.clone());
                    let f = footing.as_deref_mut().ok_or_else(|| no_footing(layer))?;
                    self.build_or_wait(layer, below, f, reporter).await?
                }
            };
            let tag = match i + 1 == self.plan.layers.len() {
                true => layer.tag().to_string(),
                false => format!("{LAYER_TAG_PREFIX}{}", layer.tag()),
            };
            self.engine.tag(&id, &self.opts.repository, &tag).await?;
            let (parts, committed) = layer_facts(self.engine, &id).await?;
            reports.push(LayerReport {
                name: layer.name.to_string(),
                cache,
                seconds: round(started.elapsed().as_secs_f64()),
                image_id: id,
                parts,
                committed,
            });
        }
        Ok(reports)
    }

    /// A layer missing on the engine: lock its key; a concurrent run with
    /// the same inputs may have built it while this one waited; else check
    /// the footing (once) and produce it. The lock is held until it is made.
    async fn build_or_wait(
        &self,
        layer: &LayerPlan<'_>,
        below: Option<String>,
        footing: &mut Footing,
        reporter: &dyn Reporter,
    ) -> Result<(String, CacheOutcome)> {
        let lock = lock::acquire(&self.opts.lock_dir, &layer.key, reporter).await;
        if !self.opts.no_cache && lock.is_some() {
            if let Some(found) = ops::find_layer(self.engine, &layer.key).await? {
                reporter.event(Event::LayerHit {
                    layer: Layer::Install(layer.name),
                    tag: layer.tag(),
                });
                return Ok((found.id, CacheOutcome::Hit));
            }
        }
        footing.check(self.engine, reporter).await?;
        reporter.event(Event::LayerBuilding {
            layer: layer.name,
            artifacts: layer.artifacts.len(),
        });
        let from_image = below.unwrap_or_else(|| footing.from_image.clone());
        let job = Job {
            layer,
            from_image: &from_image,
            config_image: &footing.config,
            labels: labels(layer, self.base_id),
        };
        let id = self.producer.produce(job, reporter).await?;
        drop(lock);
        Ok((id, CacheOutcome::Miss))
    }
}

/// The layers a layer image was split into (its `prebuilder.split` label
/// names its last layers), for the report; none when it is one layer.
async fn layer_facts<E: Engine>(engine: &E, id: &str) -> Result<(Vec<PartReport>, bool)> {
    let image = ops::require(engine, id, "layer image").await?;
    let committed = image
        .labels
        .get(LABEL_COMMITTED)
        .is_some_and(|v| v == "true");
    let names = image
        .labels
        .get(LABEL_SPLIT)
        .map(|l| crate::image::split::parse_label(l))
        .unwrap_or_default();
    let Some(first) = image.layers.len().checked_sub(names.len()) else {
        return Ok((Vec::new(), committed));
    };
    let parts = names
        .into_iter()
        .zip(&image.layers[first..])
        .map(|(name, diff_id)| PartReport {
            name,
            diff_id: diff_id.clone(),
        })
        .collect();
    Ok((parts, committed))
}

/// A missing layer with nothing prepared to build it on: a bug, said so.
fn no_footing(layer: &LayerPlan<'_>) -> crate::error::Error {
    crate::error::Error::Engine {
        engine: String::new(),
        action: format!("building the {} layer", layer.name),
        source: "prebuilder prepared no base to build it on (a bug: please report it)".into(),
    }
}

/// Labels that describe a layer image: its key (what the cache looks up),
/// where it sits, and the inputs it installed.
pub(crate) fn labels(layer: &LayerPlan<'_>, base_id: &str) -> BTreeMap<String, String> {
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
        (LABEL_BASE.to_string(), base_id.to_string()),
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
