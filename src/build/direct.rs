//! The direct builder behind the [`Produce`] seam: a missing layer made with
//! no setup container (`crate::direct`: Beam's boot and pip replayed over
//! the installed set below), then assembled like the engine path's layers
//! (the same config, labels, history and record; the dependency layer cut
//! by distribution with the same rule and function, `crate::image::split`)
//! and loaded into the engine, or held by the no-engine store.
//!
//! The installed set below a layer: the one this run produced last, else the
//! one kept under the state root for that image id, else read from the
//! engine's export of the image (once per image; the base's is kept).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, BufWriter};
use std::sync::Mutex;

use super::produce::{Job, Produce};
use super::Options;
use crate::direct::boot::Artifact;
use crate::direct::index::{self, Index};
use crate::direct::layer::{self as direct_layer, Spec};
use crate::engine::store::{info_from_config, Held, HeldLayer, Store};
use crate::engine::{ops, Engine, ImageInfo, LABEL, LABEL_BASE, LABEL_BOOT_FROM, LABEL_SPLIT};
use crate::error::{Error, Result};
use crate::image::{self, split};
use crate::plan::LayerName;
use crate::progress::{Event, Reporter};
use crate::record::{Record, LABEL_RECORD};

/// The label that says which builder made a layer image (direct only: the
/// engine path's images keep the labels they always had).
pub const LABEL_BUILDER: &str = "prebuilder.builder";

pub struct DirectProduce<'a, E> {
    pub engine: &'a E,
    pub opts: &'a Options,
    /// Installed sets by image id, produced or read in this run.
    installed: Mutex<HashMap<String, Index>>,
}

impl<'a, E: Engine> DirectProduce<'a, E> {
    pub fn new(engine: &'a E, opts: &'a Options) -> Self {
        DirectProduce {
            engine,
            opts,
            installed: Mutex::new(HashMap::new()),
        }
    }

    fn remembered(&self, id: &str) -> Option<Index> {
        self.installed.lock().ok()?.get(id).cloned()
    }

    /// Keep `index` (its JSON when already serialized) on this machine and
    /// for the rest of the run.
    fn remember(&self, index: Index, json: Option<&[u8]>) {
        let root = crate::state::root(&self.opts.settings).dir;
        let kept = match json {
            Some(json) => index::store_cached_json(&root, &index.image, json),
            None => index::store_cached(&root, &index),
        };
        if let Err(e) = kept {
            tracing::debug!("keeping the installed set of {}: {e}", index.image);
        }
        if let Ok(mut m) = self.installed.lock() {
            m.insert(index.image.clone(), index);
        }
    }

    /// The installed set of an engine image.
    async fn installed_set(&self, image: &ImageInfo) -> Result<Index> {
        if let Some(i) = self
            .remembered(&image.id)
            .or_else(|| index::recall(&image.id))
        {
            return Ok(i);
        }
        let root = crate::state::root(&self.opts.settings).dir;
        if let Some(i) = index::load_cached(&root, &image.id) {
            return Ok(i);
        }
        if let Some(store) = self.engine.store() {
            return store
                .get(&image.id)
                .and_then(|h| serde_json::from_slice(&h.installed?).ok())
                .ok_or_else(|| Error::DirectBase {
                    image: image.id.clone(),
                    reason:
                        "its installed set was not read from the registry (a bug: please report it)"
                            .into(),
                });
        }
        // Read it from the image itself: its export, every layer.
        let dir = tempfile::Builder::new()
            .prefix("index-")
            .tempdir_in(&self.opts.scratch_dir)
            .map_err(|e| Error::io(&self.opts.scratch_dir, e))?;
        let stream = self.engine.export(std::slice::from_ref(&image.id)).await?;
        let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
        let path = dir.path().to_path_buf();
        let id = image.id.clone();
        let what = format!("reading the installed set of {id}");
        let index = tokio::task::spawn_blocking(move || -> Result<Index> {
            let images =
                image::export::unpack(reader, &path, &|_| true).map_err(|e| Error::io(&path, e))?;
            let img = images
                .into_iter()
                .find(|i| image::image_id(&i.config) == id)
                .ok_or_else(|| Error::DirectBase {
                    image: id.clone(),
                    reason: "the engine's export does not hold it".into(),
                })?;
            let layers: Vec<std::path::PathBuf> =
                img.layers.iter().filter_map(|l| l.path.clone()).collect();
            index::index_layers(&id, &img.config, &layers)
        })
        .await
        .map_err(|source| Error::Task {
            action: what,
            source,
        })??;
        self.remember(index.clone(), None);
        Ok(index)
    }

    /// The record of `image` (a layer below): its label, or its record
    /// file when the label was bounded (read where the engine can).
    async fn parent_record(&self, image: &ImageInfo) -> Option<Record> {
        let label = image
            .labels
            .get(LABEL_RECORD)
            .and_then(|l| Record::parse(l).ok())?;
        if label.is_complete() {
            return Some(label);
        }
        match crate::record::load_complete(self.engine, &image.id).await {
            Ok((_, r)) => Some(r),
            Err(_) => Some(label),
        }
    }
}

impl<E: Engine> Produce for DirectProduce<'_, E> {
    async fn produce(&self, job: Job<'_>, reporter: &dyn Reporter) -> Result<String> {
        let layer = job.layer;
        let parent = ops::require(self.engine, job.from_image, "layer parent image").await?;
        let lower = self.installed_set(&parent).await?;
        let parent_record = self.parent_record(&parent).await;
        reporter.event(Event::RunningSetup {
            layer: layer.name,
            step: "Beam's boot, replayed with no container (direct)",
        });
        let epoch = image::reproducible::epoch(
            self.opts.settings.source_date_epoch(),
            job.config_image.created.as_deref(),
        );
        let scratch = tempfile::Builder::new()
            .prefix("direct-")
            .tempdir_in(&self.opts.scratch_dir)
            .map_err(|e| Error::io(&self.opts.scratch_dir, e))?;
        let produced = self
            .replay(&job, &lower, parent_record, epoch, scratch.path())
            .await?;
        tell(layer.name, &produced, &lower, reporter);
        reporter.event(Event::WritingLayer { layer: layer.name });
        let config = image_config(&job, &parent, &produced, epoch);
        let image_id = image::image_id(&config);
        let mut installed = produced.installed.clone();
        installed.image = image_id.clone();
        let json = serde_json::to_vec(&installed).ok();
        match self.engine.store() {
            Some(store) => keep(store, &parent, config, &produced, json.clone())?,
            None => {
                let archive = scratch.path().join("image.tar");
                let n = parent.layers.len() + produced.layers.len();
                write_image(&archive, config, n, &produced).await?;
                reporter.event(Event::LoadingLayer { layer: layer.name });
                self.load(&archive, &image_id).await?;
            }
        }
        self.remember(installed, json.as_deref());
        Ok(image_id)
    }
}

impl<E: Engine> DirectProduce<'_, E> {
    /// Beam's boot and pip replayed over `lower` for the job's layer, on a
    /// blocking thread: the layer tar in `dir`, its record and installed set.
    async fn replay(
        &self,
        job: &Job<'_>,
        lower: &Index,
        parent: Option<Record>,
        epoch: u64,
        dir: &std::path::Path,
    ) -> Result<direct_layer::Produced> {
        let layer = job.layer;
        let base_id = job
            .labels
            .get(LABEL_BASE)
            .cloned()
            .unwrap_or_else(|| job.config_image.id.clone());
        let boot_from = job.config_image.labels.get(LABEL_BOOT_FROM).cloned();
        let artifacts: Vec<Artifact> = layer
            .artifacts
            .iter()
            .map(|a| Artifact {
                name: a.name.clone(),
                path: a.path.clone(),
            })
            .collect();
        let inputs: BTreeMap<String, String> = layer
            .artifacts
            .iter()
            .map(|a| (a.name.clone(), a.content_digest.clone()))
            .collect();
        let options = direct_layer::Options {
            python: Some(self.opts.launch_python.clone()),
            compile: true,
            // The dependency layer only, as the engine path cuts it.
            split: self
                .opts
                .split
                .filter(|_| layer.name == LayerName::Dependencies),
        };
        let (name, key) = (layer.name.to_string(), layer.key.clone());
        let dir = dir.to_path_buf();
        let lower = lower.clone();
        let staged: Vec<crate::stage::Artifact> =
            layer.artifacts.iter().map(|a| (*a).clone()).collect();
        tokio::task::spawn_blocking(move || {
            let spec = Spec {
                name: &name,
                key: &key,
                artifacts,
                inputs,
                lower_inputs: parent
                    .as_ref()
                    .map(|r| r.inputs.clone())
                    .unwrap_or_default(),
                staged: &staged,
                parent: parent.as_ref(),
                base_id: &base_id,
                boot_from: boot_from.as_deref(),
                epoch,
            };
            direct_layer::produce(&lower, &spec, &options, &dir)
        })
        .await
        .map_err(|source| Error::Task {
            action: format!("producing the {} layer directly", layer.name),
            source,
        })?
    }

    /// Load the layer's image into the engine, and check it kept it.
    async fn load(&self, archive: &std::path::Path, image_id: &str) -> Result<()> {
        self.engine.load(archive).await?;
        if self.engine.inspect(image_id).await?.is_none() {
            return Err(Error::Engine {
                engine: String::new(),
                action: "loading the layer image".into(),
                source: format!("the engine did not keep {image_id}").into(),
            });
        }
        Ok(())
    }
}

/// What the replay said: its output as the setup's, pip's warnings, and
/// whether `.pyc` files could be written.
fn tell(
    layer: crate::plan::LayerName,
    produced: &direct_layer::Produced,
    lower: &Index,
    reporter: &dyn Reporter,
) {
    for line in &produced.log.lines {
        reporter.event(Event::SetupOutput { layer, line });
    }
    for w in &produced.log.warnings {
        tracing::warn!("{layer}: pip would warn: {w}");
    }
    if produced.compiled_by.is_none() {
        tracing::warn!(
            "{layer}: no Python {} on this machine: the layer has no .pyc files (Python compiles them on first import)",
            lower.python.short()
        );
    }
}

/// The layer image's config: the footing's container config with the job's
/// labels (and the record, which builder made it, and the split's parts when
/// the layer is several), the parent's layers and history plus this
/// layer's (one entry per part, as the engine path writes them).
fn image_config(
    job: &Job<'_>,
    parent: &ImageInfo,
    produced: &direct_layer::Produced,
    epoch: u64,
) -> Vec<u8> {
    let mut labels = job.labels.clone();
    labels.insert(LABEL_RECORD.to_string(), produced.record.label());
    labels.insert(LABEL.to_string(), "image".to_string());
    labels.insert(LABEL_BUILDER.to_string(), "direct".to_string());
    let parts: Vec<&split::Part> = produced.layers.iter().map(|l| &l.part).collect();
    if parts.len() > 1 {
        labels.insert(LABEL_SPLIT.to_string(), split::label(&parts));
    }
    let config = image::layer_config(&job.config_image.config, &labels);
    let mut diff_ids = parent.layers.clone();
    diff_ids.extend(produced.layers.iter().map(|l| l.diff_id.clone()));
    let mut history = crate::history::from_engine(&parent.history);
    let mut entry = crate::history::entry(job.layer, &image::rfc3339(epoch));
    if let Some(by) = entry.get("created_by").and_then(|v| v.as_str()) {
        let by = format!("{by} (direct)");
        entry["created_by"] = serde_json::Value::String(by);
    }
    history.extend(split::history(&entry, parts.into_iter()));
    image::image_config(
        &parent.os,
        &parent.architecture,
        config,
        &diff_ids,
        image::rfc3339(epoch),
        history,
    )
}

/// With no engine: the image held by the store, its new layers moved there,
/// with its installed set's JSON.
fn keep(
    store: &Store,
    parent: &ImageInfo,
    config: Vec<u8>,
    produced: &direct_layer::Produced,
    installed: Option<Vec<u8>>,
) -> Result<()> {
    let below = store.get(&parent.id).ok_or_else(|| Error::DirectBase {
        image: parent.id.clone(),
        reason: "the image below the layer is not held (a bug: please report it)".into(),
    })?;
    let mut layers = below.layers;
    for l in &produced.layers {
        let tar = store.layer_path(&l.diff_id);
        std::fs::rename(&l.path, &tar).map_err(|e| Error::io(&tar, e))?;
        layers.push(HeldLayer::Tar(tar));
    }
    store.hold(Held {
        info: info_from_config(&config)?,
        config,
        layers,
        installed,
    });
    Ok(())
}

/// The `docker load` archive of the layer image (`n` layers, the last ones
/// produced: one, or the parts of a split) at `archive`.
async fn write_image(
    archive: &std::path::Path,
    config: Vec<u8>,
    n: usize,
    produced: &direct_layer::Produced,
) -> Result<()> {
    let layers: Vec<(std::path::PathBuf, u64)> = produced
        .layers
        .iter()
        .map(|l| (l.path.clone(), l.size))
        .collect();
    let archive_path = archive.to_path_buf();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut new = Vec::with_capacity(layers.len());
        for (path, size) in &layers {
            let f = std::fs::File::open(path)?;
            new.push((BufReader::with_capacity(1 << 20, f), *size));
        }
        image::write_archive_layers(
            BufWriter::with_capacity(1 << 20, std::fs::File::create(&archive_path)?),
            &config,
            n,
            new,
        )?;
        Ok(())
    })
    .await
    .map_err(|source| Error::Task {
        action: "writing the layer's image".into(),
        source,
    })?
    .map_err(|e| Error::io(archive, e))
}
