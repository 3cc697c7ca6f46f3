//! A build with no container engine at all (`--builder direct`, or `auto`
//! when no engine answers): the base from its registry, every missing layer
//! produced by direct mode (`crate::direct`), the result pushed by
//! prebuilder's registry client and/or written as an OCI layout or a
//! `docker load` archive (`--output`).
//!
//! Nothing of the base is downloaded when its index is known: the installed
//! set the first layer starts from is read from this machine's cache, else
//! from the result repository (an OCI artifact tagged
//! `direct-index-<image id>`, pushed beside the results by the first runner
//! that read the base), else from the base's layers (downloaded once, then
//! the index is pushed). The same holds for a layer found in the registry:
//! its installed set is pushed beside it when it is produced. Base layers are
//! mounted or copied registry to registry, as the engine path's push does.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{produce, Options, Remote};
use crate::direct::boot::Artifact;
use crate::direct::index::{self, Index};
use crate::direct::layer::{self as direct_layer, Spec};
use crate::engine::{LABEL, LABEL_BASE};
use crate::error::{Error, Result};
use crate::image;
use crate::plan::{self, Plan, LAYER_TAG_PREFIX};
use crate::progress::{Event, Reporter};
use crate::registry::{self, BlobBody, ImageRef, LayerBlob, Manifests, RawManifest};
use crate::report::{BaseReport, CacheOutcome, LayerReport, Report};
use crate::stage::StagedSet;

/// `--output`: where the result goes besides (or instead of) a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// An OCI image layout directory.
    Oci(PathBuf),
    /// A `docker load` archive.
    DockerArchive(PathBuf),
}

impl Output {
    pub fn parse(s: &str) -> Result<Output> {
        let bad = || {
            Error::Usage {
            message: format!("--output {s:?} is neither oci:DIR nor docker-archive:FILE"),
            hint: "write --output oci:./image (an OCI layout directory) or --output docker-archive:image.tar (for `docker load -i`)".into(),
        }
        };
        match s.split_once(':') {
            Some(("oci", d)) if !d.is_empty() => Ok(Output::Oci(d.into())),
            Some(("docker-archive", f)) if !f.is_empty() => Ok(Output::DockerArchive(f.into())),
            _ => Err(bad()),
        }
    }
}

/// The artifact type (and layer media type) of a pushed installed set.
pub const INDEX_ARTIFACT: &str = "application/vnd.prebuilder.direct.installed-set.v1+json";
const INDEX_LAYER: &str = "application/vnd.prebuilder.direct.installed-set.v1+json+gzip";
const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";

/// The tag of the installed set of `image_id` in the result repository.
pub fn index_tag(image_id: &str) -> String {
    let hex = image_id.rsplit(':').next().unwrap_or(image_id);
    format!("direct-index-{}", &hex[..hex.len().min(32)])
}

/// What the base's registry says of the base.
struct BaseImage {
    id: String,
    manifest: registry::ImageLayers,
    config: Vec<u8>,
    repo_digests: Vec<String>,
}

/// An image made (or found) by this build, bottom up after the base.
struct Made {
    name: String,
    tag: String,
    config: Vec<u8>,
    /// Uncompressed layer tar, for the layers this build produced.
    layer: Option<PathBuf>,
    /// The registry's blob of each layer of the image (base ones included),
    /// once known.
    blobs: Vec<Option<LayerBlob>>,
    diff_ids: Vec<String>,
    cache: CacheOutcome,
    seconds: f64,
}

fn registry_err(host: &str, action: String, reason: impl Into<String>) -> Error {
    Error::Registry {
        registry: host.to_string(),
        action,
        source: crate::error::RegistryCause::Other(reason.into()),
    }
}

async fn base_image<R: Manifests>(
    registry: &R,
    reference: &str,
    scratch: &Path,
) -> Result<BaseImage> {
    let image = ImageRef::parse(reference);
    let raw = registry
        .image_manifest(image.tag_or_digest())
        .await?
        .ok_or_else(|| Error::DirectBase {
            image: reference.to_string(),
            reason: format!(
                "no engine answers and {} has no such image",
                registry.host()
            ),
        })?;
    let manifest = registry::image_layers(&raw.bytes).ok_or_else(|| Error::DirectBase {
        image: reference.to_string(),
        reason: "its manifest is not an image manifest".into(),
    })?;
    let file = scratch.join("base-config.json");
    registry.download_blob(&manifest.config, &file).await?;
    let config = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
    let repo_digests = match image.digest {
        Some(_) => Vec::new(),
        None => vec![format!("{}@{}", image.written, raw.digest)],
    };
    Ok(BaseImage {
        id: manifest.config.clone(),
        manifest,
        config,
        repo_digests,
    })
}

/// Build with no engine. `results` is the result repository's registry
/// (`None` without `--push` and with a repository that names none);
/// `base_registry` the base's.
#[allow(clippy::too_many_arguments)]
pub async fn run<R: Manifests>(
    opts: &Options,
    set: &StagedSet,
    results: Option<&Remote<R>>,
    base_registry: &R,
    output: Option<&Output>,
    reporter: &dyn Reporter,
) -> Result<Report> {
    let started = Instant::now();
    if !opts.push && output.is_none() {
        return Err(Error::Usage {
            message: "no engine answers, and the result would go nowhere".into(),
            hint: "pass --push (to --repository's registry) or --output oci:DIR / docker-archive:FILE, or start an engine (DOCKER_HOST)".into(),
        });
    }
    super::refuse_for_direct(opts, set)?;
    let scratch = tempfile::Builder::new()
        .prefix("direct-")
        .tempdir_in(&opts.scratch_dir)
        .map_err(|e| Error::io(&opts.scratch_dir, e))?;
    // 1. The ground: the base's id from its registry.
    let base = base_image(base_registry, &opts.base, scratch.path()).await?;
    reporter.event(Event::BaseResolved {
        base: &opts.base,
        id: &base.id,
        registry: base_registry.host(),
    });
    // 2. The plan, keyed for direct mode.
    let mut plan = plan::plan_with(set, &base.id, plan::keys::direct_command())?;
    crate::labels::apply(
        &mut plan,
        crate::labels::for_base(&opts.labels, &opts.base, &base.repo_digests),
    );
    // 3. The result, or the highest layer, in the registry.
    if let Some(r) = results {
        if opts.push {
            super::publish::preflight(r, opts, plan.tag()).await?;
        }
        if !opts.no_cache && output.is_none() {
            if let Some(digest) = r.registry.manifest_digest(plan.tag()).await? {
                let tags = super::publish::tag_hit(r, opts, plan.tag(), &digest, reporter).await?;
                return Ok(report(
                    opts,
                    &plan,
                    &base.id,
                    registry_hit(&plan),
                    (None, Some(digest)),
                    tags,
                    started,
                ));
            }
        }
    }
    let mut found = 0;
    if let (Some(r), false) = (results, opts.no_cache) {
        for i in (0..plan.layers.len().saturating_sub(1)).rev() {
            let tag = format!("{LAYER_TAG_PREFIX}{}", plan.layers[i].tag());
            if r.registry.manifest_digest(&tag).await?.is_some() {
                found = i + 1;
                break;
            }
        }
    }
    // 4. The installed set below the first layer to produce.
    let root = crate::state::root(&opts.settings).dir;
    let mut made: Vec<Made> = Vec::new();
    let (mut parent_config, mut lower) = match (found, results) {
        (1.., Some(r)) => {
            let (config, idx, below) =
                registry_layers(&plan, found, r, &base, &root, scratch.path()).await?;
            made = below;
            (config, idx)
        }
        _ => {
            let i = base_index(
                &base,
                opts,
                results,
                base_registry,
                &root,
                scratch.path(),
                reporter,
            )
            .await?;
            (base.config.clone(), i)
        }
    };
    // 5. Produce the rest.
    let mut lower_inputs = record_inputs(&parent_config);
    let epoch = image::reproducible::epoch(
        opts.settings.source_date_epoch(),
        json_str(&base.config, "created").as_deref(),
    );
    for layer in &plan.layers[found..] {
        let t0 = Instant::now();
        reporter.event(Event::LayerBuilding {
            layer: layer.name,
            artifacts: layer.artifacts.len(),
        });
        reporter.event(Event::RunningSetup {
            layer: layer.name,
            step: "Beam's boot, replayed with no container (direct)",
        });
        let dir = scratch.path().join(layer.name.as_str());
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let spec_inputs: BTreeMap<String, String> = layer
            .artifacts
            .iter()
            .map(|a| (a.name.clone(), a.content_digest.clone()))
            .collect();
        let artifacts: Vec<Artifact> = layer
            .artifacts
            .iter()
            .map(|a| Artifact {
                name: a.name.clone(),
                path: a.path.clone(),
            })
            .collect();
        let (name, key, base_id) = (layer.name.to_string(), layer.key.clone(), base.id.clone());
        let options = direct_layer::Options {
            python: Some(opts.launch_python.clone()),
            compile: true,
        };
        let below = lower.clone();
        let li = lower_inputs.clone();
        let produced = tokio::task::spawn_blocking(move || {
            let spec = Spec {
                name: &name,
                key: &key,
                artifacts,
                inputs: spec_inputs,
                lower_inputs: li,
                base_id: &base_id,
                boot_from: None,
                epoch,
            };
            direct_layer::produce(&below, &spec, &options, &dir)
        })
        .await
        .map_err(|source| Error::Task {
            action: format!("producing the {} layer directly", layer.name),
            source,
        })??;
        for line in &produced.log.lines {
            reporter.event(Event::SetupOutput {
                layer: layer.name,
                line,
            });
        }
        for w in &produced.log.warnings {
            tracing::warn!("{}: pip would warn: {w}", layer.name);
        }
        if produced.compiled_by.is_none() {
            tracing::warn!(
                "{}: no Python {} on this machine: the layer has no .pyc files",
                layer.name,
                lower.python.short()
            );
        }
        reporter.event(Event::WritingLayer { layer: layer.name });
        let mut labels = produce::labels(layer, &base.id);
        labels.insert(
            crate::record::LABEL_RECORD.to_string(),
            produced.record.label(),
        );
        labels.insert(LABEL.to_string(), "image".to_string());
        labels.insert(
            super::direct::LABEL_BUILDER.to_string(),
            "direct".to_string(),
        );
        labels.insert(LABEL_BASE.to_string(), base.id.clone());
        let config = layer_image_config(
            &base.config,
            &parent_config,
            &labels,
            layer,
            &produced.diff_id,
            epoch,
        )?;
        let image_id = image::image_id(&config);
        let mut installed = produced.installed;
        installed.image = image_id.clone();
        if let Err(e) = index::store_cached(&root, &installed) {
            tracing::debug!("keeping the installed set of {image_id}: {e}");
        }
        let mut blobs: Vec<Option<LayerBlob>> = match made.last() {
            Some(m) => m.blobs.clone(),
            None => base.manifest.layers.iter().map(|b| b.as_oci()).collect(),
        };
        blobs.push(None);
        let mut diff_ids = diff_ids_of(&parent_config);
        diff_ids.push(produced.diff_id.clone());
        lower_inputs = produced.record.inputs.clone();
        made.push(Made {
            name: layer.name.to_string(),
            tag: layer.tag().to_string(),
            config: config.clone(),
            layer: Some(produced.layer),
            blobs,
            diff_ids,
            cache: CacheOutcome::Miss,
            seconds: t0.elapsed().as_secs_f64(),
        });
        lower = installed;
        parent_config = config;
    }
    // 6. Publish: the registry, then the output.
    let mut digest = None;
    let mut tags = Vec::new();
    if let (true, Some(r)) = (opts.push, results) {
        let (d, t) = push(
            opts,
            r,
            &plan,
            &mut made,
            base_registry,
            found,
            scratch.path(),
            reporter,
        )
        .await?;
        digest = Some(d);
        tags = t;
        // The installed set of each produced image, beside it.
        for m in made.iter().skip(found) {
            let id = image::image_id(&m.config);
            if let Some(i) = index::load_cached(&root, &id) {
                if let Err(e) = push_index(&r.registry, &i).await {
                    tracing::warn!("pushing the installed set of {id}: {e}");
                }
            }
        }
    }
    if let Some(out) = output {
        write_output(
            out,
            opts,
            &plan,
            &mut made,
            &base,
            base_registry,
            scratch.path(),
            reporter,
        )
        .await?;
    }
    let top = made.last().map(|m| image::image_id(&m.config));
    let layers = made
        .iter()
        .map(|m| LayerReport {
            name: m.name.clone(),
            cache: m.cache,
            seconds: super::round(m.seconds),
            image_id: image::image_id(&m.config),
        })
        .collect();
    Ok(report(
        opts,
        &plan,
        &base.id,
        layers,
        (top, digest),
        tags,
        started,
    ))
}

fn json_str(config: &[u8], key: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(config).ok()?;
    v.get(key)?.as_str().map(str::to_string)
}

fn diff_ids_of(config: &[u8]) -> Vec<String> {
    image::export::diff_ids(config).unwrap_or_default()
}

/// The record inputs an image's record label carries.
fn record_inputs(config: &[u8]) -> BTreeMap<String, BTreeMap<String, String>> {
    let v: serde_json::Value = serde_json::from_slice(config).unwrap_or_default();
    v.pointer("/config/Labels")
        .and_then(|l| l.get(crate::record::LABEL_RECORD))
        .and_then(|s| s.as_str())
        .and_then(|s| crate::record::Record::parse(s).ok())
        .map(|r| r.inputs)
        .unwrap_or_default()
}

/// The image config of a layer made on `parent_config`: the base's
/// container config with the layer's labels (as the engine path's
/// `layer_config`), the parent's diff ids and history plus this layer's.
fn layer_image_config(
    base_config: &[u8],
    parent_config: &[u8],
    labels: &BTreeMap<String, String>,
    layer: &crate::plan::LayerPlan<'_>,
    diff_id: &str,
    epoch: u64,
) -> Result<Vec<u8>> {
    let base: serde_json::Value = serde_json::from_slice(base_config).unwrap_or_default();
    let parent: serde_json::Value = serde_json::from_slice(parent_config).unwrap_or_default();
    let container = base.get("config").cloned().unwrap_or_default();
    let config = image::layer_config(&container, labels);
    let mut diff_ids = diff_ids_of(parent_config);
    diff_ids.push(diff_id.to_string());
    let mut history: Vec<serde_json::Value> = parent
        .get("history")
        .and_then(|h| h.as_array())
        .cloned()
        .unwrap_or_default();
    let mut entry = crate::history::entry(layer, &image::rfc3339(epoch));
    if let Some(by) = entry.get("created_by").and_then(|v| v.as_str()) {
        let by = format!("{by} (direct)");
        entry["created_by"] = serde_json::Value::String(by);
    }
    history.push(entry);
    let s = |k: &str, d: &str| {
        base.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or(d)
            .to_string()
    };
    Ok(image::image_config(
        &s("os", "linux"),
        &s("architecture", "amd64"),
        config,
        &diff_ids,
        image::rfc3339(epoch),
        history,
    ))
}

/// The base's installed set: this machine's cache, else the result
/// repository's artifact, else read from the base's layers (downloaded
/// once) and pushed for the next runner.
#[allow(clippy::too_many_arguments)]
async fn base_index<R: Manifests>(
    base: &BaseImage,
    opts: &Options,
    results: Option<&Remote<R>>,
    base_registry: &R,
    root: &Path,
    scratch: &Path,
    reporter: &dyn Reporter,
) -> Result<Index> {
    if let Some(i) = index::load_cached(root, &base.id) {
        return Ok(i);
    }
    if let Some(r) = results {
        if let Some(i) = pull_index(&r.registry, &base.id, scratch).await? {
            let _ = index::store_cached(root, &i);
            return Ok(i);
        }
    }
    reporter.event(Event::PushStatus {
        reference: &opts.base,
        status: "reading the base's layers once, to index what its pip sees",
    });
    let mut files = Vec::new();
    for (n, blob) in base.manifest.layers.iter().enumerate() {
        let f = scratch.join(format!("base-{n}"));
        base_registry.download_blob(&blob.digest, &f).await?;
        files.push(f);
    }
    let id = base.id.clone();
    let config = base.config.clone();
    let files2 = files.clone();
    let i = tokio::task::spawn_blocking(move || index::index_layers(&id, &config, &files2))
        .await
        .map_err(|source| Error::Task {
            action: "indexing the base".into(),
            source,
        })??;
    for f in files {
        let _ = std::fs::remove_file(f);
    }
    let _ = index::store_cached(root, &i);
    if let (Some(r), true) = (results, opts.push) {
        if let Err(e) = push_index(&r.registry, &i).await {
            tracing::warn!("pushing the base's installed set: {e}");
        }
    }
    Ok(i)
}

/// The images of the plan's first `found` layers, from the registry, and
/// the installed set of the highest: (its config, its installed set, the
/// images below as [`Made`]).
async fn registry_layers<R: Manifests>(
    plan: &Plan<'_>,
    found: usize,
    r: &Remote<R>,
    base: &BaseImage,
    root: &Path,
    scratch: &Path,
) -> Result<(Vec<u8>, Index, Vec<Made>)> {
    let mut made = Vec::new();
    let mut last: Option<(Vec<u8>, String)> = None;
    for layer in &plan.layers[..found] {
        let tag = format!("{LAYER_TAG_PREFIX}{}", layer.tag());
        let raw = r.registry.image_manifest(&tag).await?.ok_or_else(|| {
            registry_err(r.registry.host(), format!("reading {tag}"), "it went away")
        })?;
        let m = registry::image_layers(&raw.bytes).ok_or_else(|| {
            registry_err(
                r.registry.host(),
                format!("reading {tag}"),
                "not an image manifest",
            )
        })?;
        let file = scratch.join(format!("{tag}.json"));
        r.registry.download_blob(&m.config, &file).await?;
        let config = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
        let diff_ids = diff_ids_of(&config);
        made.push(Made {
            name: layer.name.to_string(),
            tag: layer.tag().to_string(),
            config: config.clone(),
            layer: None,
            blobs: m.layers.iter().map(|b| b.as_oci()).collect(),
            diff_ids,
            cache: CacheOutcome::Registry,
            seconds: 0.0,
        });
        last = Some((config, m.config));
    }
    let (config, id) = last.ok_or_else(|| Error::DirectBase {
        image: base.id.clone(),
        reason: "no layer was found".into(),
    })?;
    let idx = match index::load_cached(root, &id) {
        Some(i) => i,
        None => pull_index(&r.registry, &id, scratch).await?.ok_or_else(|| Error::DirectRefused {
            input: format!("{}:{LAYER_TAG_PREFIX}{}", r.registry.path(), plan.layers[found - 1].tag()),
            reason: "the registry has this layer but not its installed set (direct-index-…), which the layer above needs".into(),
        })?,
    };
    Ok((config, idx, made))
}

/// The installed set of `image_id` from the repository's artifact.
async fn pull_index<R: Manifests>(
    registry: &R,
    image_id: &str,
    scratch: &Path,
) -> Result<Option<Index>> {
    let Some(raw) = registry.manifest(&index_tag(image_id)).await? else {
        return Ok(None);
    };
    let Some(m) = registry::image_layers(&raw.bytes) else {
        return Ok(None);
    };
    let Some(blob) = m.layers.first() else {
        return Ok(None);
    };
    let file = scratch.join(format!("{}.index.gz", index_tag(image_id)));
    registry.download_blob(&blob.digest, &file).await?;
    let f = std::fs::File::open(&file).map_err(|e| Error::io(&file, e))?;
    let i: Option<Index> = serde_json::from_reader(flate2::read::GzDecoder::new(f)).ok();
    Ok(i.filter(|i| i.format == index::FORMAT && i.image == image_id))
}

/// Push an installed set as an OCI artifact tagged [`index_tag`].
pub async fn push_index<R: Manifests>(registry: &R, i: &Index) -> Result<()> {
    let json = serde_json::to_vec(i).map_err(|e| Error::Local {
        action: "writing an installed set".into(),
        source: std::io::Error::other(e),
    })?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    gz.write_all(&json)
        .map_err(|e| Error::io("installed set", e))?;
    let blob = gz.finish().map_err(|e| Error::io("installed set", e))?;
    let digest = image::image_id(&blob);
    if !registry.blob_exists(&digest).await? {
        registry
            .upload_blob(&digest, BlobBody::Bytes(&blob))
            .await?;
    }
    let empty = b"{}";
    let empty_digest = image::image_id(empty);
    if !registry.blob_exists(&empty_digest).await? {
        registry
            .upload_blob(&empty_digest, BlobBody::Bytes(empty))
            .await?;
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": INDEX_ARTIFACT,
        "config": {"mediaType": EMPTY_CONFIG, "digest": empty_digest, "size": 2},
        "layers": [{"mediaType": INDEX_LAYER, "digest": digest, "size": blob.len()}],
        "annotations": {"org.opencontainers.image.description": format!("prebuilder direct mode: the installed set of {}", i.image)},
    });
    let bytes = serde_json::to_vec(&manifest).unwrap_or_default();
    let raw = RawManifest {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: image::image_id(&bytes),
        bytes,
    };
    registry.put_manifest(&index_tag(&i.image), &raw).await
}

/// Push the produced images (and tags), bottom up: base blobs mounted or
/// copied, produced layers compressed and uploaded, configs, manifests.
#[allow(clippy::too_many_arguments)]
async fn push<R: Manifests>(
    opts: &Options,
    remote: &Remote<R>,
    plan: &Plan<'_>,
    made: &mut [Made],
    base_registry: &R,
    found: usize,
    scratch: &Path,
    reporter: &dyn Reporter,
) -> Result<(String, Vec<String>)> {
    let registry = &remote.registry;
    let repo = &opts.repository;
    let top = made.len().saturating_sub(1);
    let first = format!("{repo}:{}", made[found.min(top)].tag);
    reporter.event(Event::Pushing { reference: &first });
    let status = |s: &str| {
        reporter.event(Event::PushStatus {
            reference: &first,
            status: s,
        })
    };
    let mut present: HashMap<String, LayerBlob> = HashMap::new();
    let mut manifest = None;
    for (i, made_i) in made.iter_mut().enumerate().skip(found) {
        // Every layer's blob: known (base, lower) or made here.
        let n = made_i.blobs.len();
        for j in 0..n {
            let diff_id = made_i.diff_ids.get(j).cloned().unwrap_or_default();
            if let Some(b) = present.get(&diff_id) {
                made_i.blobs[j] = Some(b.clone());
                continue;
            }
            if let Some(blob) = made_i.blobs[j].clone() {
                if !registry.blob_exists(&blob.digest).await? {
                    copy_base_blob(registry, base_registry, &blob, scratch, &status).await?;
                }
                present.insert(diff_id, blob);
                continue;
            }
            let Some(src) = made_i.layer.clone() else {
                return Err(registry_err(
                    registry.host(),
                    format!("pushing {repo}"),
                    format!("no blob for layer {diff_id}"),
                ));
            };
            let dst = scratch.join(format!("{}.gz", made_i.name));
            status(&format!("{} layer compressing", made_i.name));
            let target = dst.clone();
            let blob = tokio::task::spawn_blocking(move || image::export::compress(&src, &target))
                .await
                .map_err(|source| Error::Task {
                    action: "compressing a layer".into(),
                    source,
                })?
                .map_err(|e| Error::io(&dst, e))?;
            if !registry.blob_exists(&blob.digest).await? {
                registry
                    .upload_blob(&blob.digest, BlobBody::File(&dst, blob.size))
                    .await?;
                status(&format!(
                    "{} uploaded ({:.1} MB)",
                    &blob.digest[..19],
                    blob.size as f64 / 1e6
                ));
            }
            let lb = LayerBlob {
                media_type: registry::OCI_LAYER_GZIP.into(),
                digest: blob.digest,
                size: blob.size,
            };
            made_i.blobs[j] = Some(lb.clone());
            present.insert(diff_id, lb);
        }
        let config = made_i.config.clone();
        let cd = image::image_id(&config);
        if !registry.blob_exists(&cd).await? {
            registry.upload_blob(&cd, BlobBody::Bytes(&config)).await?;
        }
        let blobs: Vec<LayerBlob> = made_i.blobs.iter().flatten().cloned().collect();
        let m = registry::oci_manifest(&config, &blobs).map_err(|reason| {
            registry_err(
                registry.host(),
                format!("writing a manifest for {repo}"),
                reason,
            )
        })?;
        let tag = if i == top {
            plan.tag().to_string()
        } else {
            format!("{LAYER_TAG_PREFIX}{}", made_i.tag)
        };
        registry.put_manifest(&tag, &m).await?;
        status(&format!("{repo}:{tag} is {}", m.digest));
        manifest = Some(m);
    }
    let manifest = match manifest {
        Some(m) => m,
        None => registry.manifest(plan.tag()).await?.ok_or_else(|| {
            registry_err(
                registry.host(),
                format!("pushing {repo}"),
                "nothing was pushed",
            )
        })?,
    };
    let tags = super::publish::apply_tags(registry, opts, &manifest, reporter).await?;
    Ok((manifest.digest, tags))
}

/// A base blob the result repository lacks: mounted from the base's
/// repository in the same registry, else copied from the base's registry.
async fn copy_base_blob<R: Manifests>(
    registry: &R,
    base: &R,
    blob: &LayerBlob,
    scratch: &Path,
    status: &dyn Fn(&str),
) -> Result<()> {
    if base.host() == registry.host() && registry.mount_blob(&blob.digest, base.path()).await? {
        status(&format!(
            "{} mounted from {}",
            &blob.digest[..19],
            base.path()
        ));
        return Ok(());
    }
    let file = scratch.join("copy.blob");
    base.download_blob(&blob.digest, &file).await?;
    registry
        .upload_blob(&blob.digest, BlobBody::File(&file, blob.size))
        .await?;
    let _ = std::fs::remove_file(&file);
    status(&format!(
        "{} copied from {}",
        &blob.digest[..19],
        base.host()
    ));
    Ok(())
}

/// Write the result as an OCI layout or a `docker load` archive (every
/// layer: the base's downloaded from its registry, as they are there).
#[allow(clippy::too_many_arguments)]
async fn write_output<R: Manifests>(
    out: &Output,
    opts: &Options,
    plan: &Plan<'_>,
    made: &mut [Made],
    base: &BaseImage,
    base_registry: &R,
    scratch: &Path,
    reporter: &dyn Reporter,
) -> Result<()> {
    let Some(top) = made.last() else {
        return Ok(());
    };
    let reference = format!("{}:{}", opts.repository, plan.tag());
    reporter.event(Event::PushStatus {
        reference: &reference,
        status: "writing --output",
    });
    // Each layer's file: downloaded blob (compressed) or produced tar.
    let mut files: Vec<(PathBuf, LayerBlob)> = Vec::new();
    let produced: HashMap<String, PathBuf> = made
        .iter()
        .filter_map(|m| Some((m.diff_ids.last()?.clone(), m.layer.clone()?)))
        .collect();
    for (j, diff_id) in top.diff_ids.iter().enumerate() {
        if let Some(tar) = produced.get(diff_id) {
            let gz = scratch.join(format!("out-{j}.gz"));
            let (src, dst) = (tar.clone(), gz.clone());
            let b = tokio::task::spawn_blocking(move || image::export::compress(&src, &dst))
                .await
                .map_err(|source| Error::Task {
                    action: "compressing a layer".into(),
                    source,
                })?
                .map_err(|e| Error::io(&gz, e))?;
            files.push((
                gz,
                LayerBlob {
                    media_type: registry::OCI_LAYER_GZIP.into(),
                    digest: b.digest,
                    size: b.size,
                },
            ));
            continue;
        }
        let blob = top
            .blobs
            .get(j)
            .cloned()
            .flatten()
            .or_else(|| base.manifest.layers.get(j).and_then(|b| b.as_oci()))
            .ok_or_else(|| Error::DirectBase {
                image: opts.base.clone(),
                reason: format!("layer {diff_id} has no blob prebuilder can copy"),
            })?;
        let f = scratch.join(format!("out-{j}.blob"));
        base_registry.download_blob(&blob.digest, &f).await?;
        files.push((f, blob));
    }
    let config = top.config.clone();
    let blobs: Vec<LayerBlob> = files.iter().map(|(_, b)| b.clone()).collect();
    let manifest = registry::oci_manifest(&config, &blobs)
        .map_err(|reason| registry_err("--output", "writing the manifest".into(), reason))?;
    let out = out.clone();
    let reference2 = reference.clone();
    tokio::task::spawn_blocking(move || match &out {
        Output::Oci(dir) => write_oci(dir, &config, &manifest, &files, &reference2),
        Output::DockerArchive(file) => write_docker_archive(file, &config, &files, &reference2),
    })
    .await
    .map_err(|source| Error::Task {
        action: "writing --output".into(),
        source,
    })?
}

fn out_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Output {
        what: "--output",
        path: path.to_path_buf(),
        source,
    }
}

fn write_oci(
    dir: &Path,
    config: &[u8],
    manifest: &RawManifest,
    files: &[(PathBuf, LayerBlob)],
    reference: &str,
) -> Result<()> {
    let e = out_err(dir);
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).map_err(&e)?;
    let put = |digest: &str, bytes: &[u8]| -> std::io::Result<()> {
        std::fs::write(blobs.join(digest.trim_start_matches("sha256:")), bytes)
    };
    put(&image::image_id(config), config).map_err(&e)?;
    put(&manifest.digest, &manifest.bytes).map_err(&e)?;
    for (f, b) in files {
        let dst = blobs.join(b.digest.trim_start_matches("sha256:"));
        std::fs::copy(f, &dst).map_err(&e)?;
    }
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(&e)?;
    let tag = reference.rsplit(':').next().unwrap_or("latest");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": manifest.media_type,
            "digest": manifest.digest,
            "size": manifest.bytes.len(),
            "annotations": {
                "org.opencontainers.image.ref.name": tag,
                "io.containerd.image.name": reference,
            }
        }]
    });
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).unwrap_or_default(),
    )
    .map_err(&e)?;
    Ok(())
}

fn write_docker_archive(
    file: &Path,
    config: &[u8],
    files: &[(PathBuf, LayerBlob)],
    reference: &str,
) -> Result<()> {
    let e = out_err(file);
    let f = std::fs::File::create(file).map_err(&e)?;
    let mut b = tar::Builder::new(std::io::BufWriter::new(f));
    let config_name = format!(
        "{}.json",
        image::image_id(config).trim_start_matches("sha256:")
    );
    let names: Vec<String> = files
        .iter()
        .map(|(_, bl)| format!("{}/layer.tar", bl.digest.trim_start_matches("sha256:")))
        .collect();
    let manifest =
        serde_json::json!([{"Config": config_name, "RepoTags": [reference], "Layers": names}])
            .to_string();
    let mut add = |name: &str, bytes: &[u8]| -> std::io::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, bytes)
    };
    add(&config_name, config).map_err(&e)?;
    add("manifest.json", manifest.as_bytes()).map_err(&e)?;
    for ((f, _), n) in files.iter().zip(&names) {
        b.append_path_with_name(f, n).map_err(&e)?;
    }
    b.into_inner().and_then(|mut w| w.flush()).map_err(&e)?;
    Ok(())
}

/// Every layer came from the registry's content tag.
fn registry_hit(plan: &Plan<'_>) -> Vec<LayerReport> {
    plan.layers
        .iter()
        .map(|l| LayerReport {
            name: l.name.to_string(),
            cache: CacheOutcome::Registry,
            seconds: 0.0,
            image_id: String::new(),
        })
        .collect()
}

fn report(
    opts: &Options,
    plan: &Plan<'_>,
    base_id: &str,
    layers: Vec<LayerReport>,
    (image_id, digest): (Option<String>, Option<String>),
    tags: Vec<String>,
    started: Instant,
) -> Report {
    let image = format!("{}:{}", opts.repository, plan.tag());
    Report {
        builder: "direct".into(),
        sdk_container_image: match &digest {
            Some(d) => format!("{}@{d}", opts.repository),
            None => image.clone(),
        },
        image,
        image_id,
        digest,
        cached: layers.iter().all(|l| l.cache != CacheOutcome::Miss),
        layers,
        base: BaseReport {
            reference: opts.base.clone(),
            id: base_id.to_string(),
        },
        tags,
        seconds: super::round(started.elapsed().as_secs_f64()),
        flink: None,
        platforms: Vec::new(),
    }
}
