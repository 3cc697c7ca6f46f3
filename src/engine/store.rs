//! No engine at all: the [`Engine`] a build runs on when none answers
//! (`--builder direct`, or `auto` with no engine; `--output`). It holds the
//! images this build read from registries (their configs; their layers stay
//! there as blobs) and the ones direct mode produced (their layers as tar
//! files under the build's scratch directory), and answers every other
//! primitive as an engine that has nothing and runs nothing would: no image
//! it was not given, no container, no pull.
//!
//! So the build is the same pipeline with or without an engine; where it must
//! differ (fetching a registry's layer, the base to produce on, publishing),
//! it asks [`Engine::store`] and finds this.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{ByteStream, ContainerSpec, ContainerSummary, Engine, ImageInfo, ImageSummary};
use crate::error::{Error, Result};
use crate::history::EngineEntry;
use crate::registry::{Credential, LayerBlob};

/// Where a held image's layer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeldLayer {
    /// Produced by this build: the uncompressed layer tar.
    Tar(PathBuf),
    /// A blob of the base's registry (the base's own layers).
    Base(LayerBlob),
    /// A blob of the result repository (a layer an earlier build pushed).
    Results(LayerBlob),
}

/// One image the store holds.
#[derive(Debug, Clone)]
pub struct Held {
    pub info: ImageInfo,
    /// The image config, byte for byte (its digest is the image id).
    pub config: Vec<u8>,
    /// Its layers, bottom first (as `info.layers`).
    pub layers: Vec<HeldLayer>,
    /// Direct mode's index of what is installed in it (JSON), when read.
    pub installed: Option<Vec<u8>>,
}

/// The images of a build with no engine.
pub struct Store {
    /// Where produced layers are kept (under the build's scratch directory).
    dir: PathBuf,
    images: Mutex<BTreeMap<String, Held>>,
}

impl Store {
    pub fn new(dir: &Path) -> Store {
        Store {
            dir: dir.to_path_buf(),
            images: Mutex::new(BTreeMap::new()),
        }
    }

    /// Where a produced layer is to be moved, to be kept until the build ends.
    pub fn layer_path(&self, diff_id: &str) -> PathBuf {
        self.dir.join(format!("{}.tar", diff_id.replace(':', "-")))
    }

    /// Hold an image (replacing one with the same id, keeping its tags).
    pub fn hold(&self, mut held: Held) {
        if let Ok(mut images) = self.images.lock() {
            if let Some(old) = images.get(&held.info.id) {
                held.info.repo_tags = old.info.repo_tags.clone();
            }
            images.insert(held.info.id.clone(), held);
        }
    }

    /// A held image by id or `repo:tag`.
    pub fn get(&self, reference: &str) -> Option<Held> {
        let images = self.images.lock().ok()?;
        images
            .get(reference)
            .or_else(|| {
                images
                    .values()
                    .find(|h| h.info.repo_tags.iter().any(|t| t == reference))
            })
            .cloned()
    }

    /// Set the installed set (JSON) of a held image.
    pub fn set_installed(&self, id: &str, json: Vec<u8>) {
        if let Ok(mut images) = self.images.lock() {
            if let Some(h) = images.get_mut(id) {
                h.installed = Some(json);
            }
        }
    }

    fn absent(action: &str) -> Error {
        Error::Engine {
            engine: String::new(),
            action: action.to_string(),
            source: "no container engine answers, and direct mode runs no container (a bug: please report it)".into(),
        }
    }
}

/// The engine's view of an image from its config (OCI or Docker JSON).
pub fn info_from_config(config: &[u8]) -> Result<ImageInfo> {
    let doc: serde_json::Value = serde_json::from_slice(config).map_err(|e| Error::Local {
        action: "reading an image config".into(),
        source: std::io::Error::other(e),
    })?;
    let c = doc.get("config").cloned().unwrap_or_default();
    let strings = |v: &serde_json::Value| -> Vec<String> {
        serde_json::from_value(v.clone()).unwrap_or_default()
    };
    let s = |k: &str, d: &str| doc[k].as_str().unwrap_or(d).to_string();
    Ok(ImageInfo {
        id: crate::image::image_id(config),
        entrypoint: strings(&c["Entrypoint"]),
        cmd: strings(&c["Cmd"]),
        env: strings(&c["Env"]),
        labels: serde_json::from_value(c["Labels"].clone()).unwrap_or_default(),
        repo_tags: Vec::new(),
        repo_digests: Vec::new(),
        created: doc["created"].as_str().map(str::to_string),
        history: history(&doc["history"]),
        os: s("os", "linux"),
        architecture: s("architecture", "amd64"),
        layers: strings(&doc["rootfs"]["diff_ids"]),
        last_tagged: None,
        config: c,
    })
}

/// A config's history (oldest first) as the engine's API gives it (newest
/// first; an entry that made no layer has size 0).
fn history(entries: &serde_json::Value) -> Vec<EngineEntry> {
    let Some(entries) = entries.as_array() else {
        return Vec::new();
    };
    entries
        .iter()
        .rev()
        .map(|e| EngineEntry {
            created: e["created"]
                .as_str()
                .and_then(crate::image::reproducible::parse_rfc3339)
                .unwrap_or(0),
            created_by: e["created_by"].as_str().unwrap_or_default().to_string(),
            comment: e["comment"].as_str().unwrap_or_default().to_string(),
            size: if e["empty_layer"].as_bool() == Some(true) {
                0
            } else {
                1
            },
        })
        .collect()
}

/// Whether `labels` carry `label` (`key` or `key=value`).
fn carries(labels: &BTreeMap<String, String>, label: &str) -> bool {
    match label.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(label),
    }
}

impl Engine for Store {
    async fn inspect(&self, reference: &str) -> Result<Option<ImageInfo>> {
        Ok(self.get(reference).map(|h| h.info))
    }

    async fn list_images(&self, label: &str) -> Result<Vec<ImageSummary>> {
        let images = self.images.lock().map_err(|_| Store::absent("listing"))?;
        Ok(images
            .values()
            .filter(|h| carries(&h.info.labels, label))
            .map(|h| ImageSummary {
                id: h.info.id.clone(),
                labels: h.info.labels.clone(),
                tags: h.info.repo_tags.clone(),
                created: 0,
            })
            .collect())
    }

    async fn list_containers(&self, _label: &str) -> Result<Vec<ContainerSummary>> {
        Ok(Vec::new())
    }

    async fn create(&self, _spec: &ContainerSpec) -> Result<String> {
        Err(Store::absent("creating a container"))
    }

    async fn exists(&self, _container: &str, _path: &str) -> Result<bool> {
        Err(Store::absent("reading a container"))
    }

    async fn upload(&self, _container: &str, _dir: &str, _tar: ByteStream) -> Result<()> {
        Err(Store::absent("copying into a container"))
    }

    async fn download(&self, _container: &str, _path: &str) -> Result<Option<ByteStream>> {
        Err(Store::absent("copying from a container"))
    }

    async fn run_attached(
        &self,
        _container: &str,
        _on_output: &mut (dyn FnMut(bool, &[u8]) + Send),
    ) -> Result<i64> {
        Err(Store::absent("running a container"))
    }

    async fn commit(
        &self,
        _container: &str,
        _config: &serde_json::Value,
        _comment: &str,
    ) -> Result<String> {
        Err(Store::absent("committing a container"))
    }

    async fn load(&self, _archive: &Path) -> Result<()> {
        Err(Store::absent("loading an image"))
    }

    async fn tag(&self, image_id: &str, repo: &str, tag: &str) -> Result<()> {
        let reference = format!("{repo}:{tag}");
        let mut images = self.images.lock().map_err(|_| Store::absent("tagging"))?;
        if !images.contains_key(image_id) {
            return Err(Store::absent(&format!("tagging {image_id} (not held)")));
        }
        for h in images.values_mut() {
            h.info.repo_tags.retain(|t| *t != reference);
        }
        if let Some(h) = images.get_mut(image_id) {
            h.info.repo_tags.push(reference);
        }
        Ok(())
    }

    async fn export(&self, _images: &[String]) -> Result<ByteStream> {
        Err(Store::absent("exporting images"))
    }

    async fn pull(
        &self,
        reference: &str,
        _credential: Option<&Credential>,
        _status: super::PushStatus<'_>,
    ) -> Result<()> {
        Err(Error::DirectBase {
            image: reference.to_string(),
            reason: "no engine answers, and its registry could not be read to learn its id".into(),
        })
    }

    async fn remove_image(&self, reference: &str) -> Result<()> {
        if let Ok(mut images) = self.images.lock() {
            images.retain(|id, h| {
                id != reference && !h.info.repo_tags.iter().any(|t| t == reference)
            });
        }
        Ok(())
    }

    async fn remove_container(&self, _container: &str) {}

    async fn remove_leftovers(&self) -> usize {
        0
    }

    fn name(&self) -> crate::error::EngineName {
        crate::error::EngineName {
            description: "no engine (direct mode)".into(),
            endpoint: "none".into(),
            unreachable_hint: "direct mode needs no engine".into(),
        }
    }

    fn store(&self) -> Option<&Store> {
        Some(self)
    }
}

/// The tags an image is known by, for tests.
#[cfg(test)]
impl Store {
    pub fn tags(&self) -> std::collections::BTreeSet<String> {
        self.images
            .lock()
            .map(|i| {
                i.values()
                    .flat_map(|h| h.info.repo_tags.iter().cloned())
                    .collect()
            })
            .unwrap_or_default()
    }
}
