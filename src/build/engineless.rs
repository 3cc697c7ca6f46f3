//! The steps of the build that differ when no engine answers (`--builder
//! direct`, or `auto` with no engine; `--output`): the build runs the one
//! pipeline (`super::run`) on a [`Store`], and at three steps asks it:
//!
//! - fetch ([`fetch`]): a layer found in the registry is read as its
//!   manifest and config (its blobs stay there), and the installed set of
//!   the highest one, which the layer above starts from;
//! - footing ([`footing`]): the base's config from its registry, and its
//!   installed set when the first layer is produced on it;
//! - publish ([`publish`]): the produced images pushed by prebuilder's own
//!   registry client, and/or written as an OCI layout or a `docker load`
//!   archive (`--output`).
//!
//! Nothing of the base is downloaded when its index is known: the installed
//! set is read from this machine's cache, else from the result repository
//! (an OCI artifact tagged `direct-index-<image id>`, pushed beside the
//! results by the first runner that read the base), else from the base's
//! layers (downloaded once, then the index is pushed). The same holds for a
//! layer found in the registry: its installed set is pushed beside it when
//! it is produced. Base layers are mounted or copied registry to registry, as
//! the engine path's push does.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::base::Footing;
use super::locate::{layer_tag, Source};
use super::{Options, Remote};
use crate::direct::index::{self, Index};
use crate::engine::store::{info_from_config, Held, HeldLayer, Store};
use crate::error::{Error, Result};
use crate::image;
use crate::plan::Plan;
use crate::progress::{Event, Reporter};
use crate::registry::{self, BlobBody, ImageRef, LayerBlob, Manifests, RawManifest};

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

fn registry_err(host: &str, action: String, reason: impl Into<String>) -> Error {
    Error::Registry {
        registry: host.to_string(),
        action,
        source: crate::error::RegistryCause::Other(reason.into()),
    }
}

/// The installed set of `image_id` from the repository's artifact, and its
/// JSON.
async fn pull_index<R: Manifests>(
    registry: &R,
    image_id: &str,
    scratch: &Path,
) -> Result<Option<(Index, Vec<u8>)>> {
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
    let mut json = Vec::new();
    if std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(f), &mut json).is_err() {
        return Ok(None);
    }
    let i: Option<Index> = serde_json::from_slice(&json).ok();
    Ok(
        i.filter(|i| i.format == index::FORMAT && i.image == image_id)
            .map(|i| (i, json)),
    )
}

/// Push an installed set as an OCI artifact tagged [`index_tag`].
pub async fn push_index<R: Manifests>(registry: &R, i: &Index) -> Result<()> {
    let json = serde_json::to_vec(i).map_err(|e| Error::Local {
        action: "writing an installed set".into(),
        source: std::io::Error::other(e),
    })?;
    push_index_json(registry, &i.image, &json).await
}

/// Push the installed set of `image` (its JSON) as [`push_index`] does.
async fn push_index_json<R: Manifests>(registry: &R, image: &str, json: &[u8]) -> Result<()> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    gz.write_all(json)
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
        "annotations": {"org.opencontainers.image.description": format!("prebuilder direct mode: the installed set of {image}")},
    });
    let bytes = serde_json::to_vec(&manifest).unwrap_or_default();
    let raw = RawManifest {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: image::image_id(&bytes),
        bytes,
    };
    registry.put_manifest(&index_tag(image), &raw).await
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

/// An image's manifest and config from `registry`, held with its layers as
/// that registry's blobs (`as_blob`).
async fn hold_from<R: Manifests>(
    store: &Store,
    registry: &R,
    reference: &str,
    scratch: &Path,
    as_blob: fn(LayerBlob) -> HeldLayer,
) -> Result<Option<Held>> {
    let Some(raw) = registry.image_manifest(reference).await? else {
        return Ok(None);
    };
    let manifest = registry::image_layers(&raw.bytes).ok_or_else(|| {
        registry_err(
            registry.host(),
            format!("reading {reference}"),
            "its manifest is not an image manifest",
        )
    })?;
    let file = scratch.join(format!("{}.json", manifest.config.replace(':', "-")));
    registry.download_blob(&manifest.config, &file).await?;
    let config = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
    let mut layers = Vec::new();
    for blob in &manifest.layers {
        let blob = blob.as_oci().ok_or_else(|| {
            registry_err(
                registry.host(),
                format!("reading {reference}"),
                format!(
                    "layer {} has a media type prebuilder cannot copy",
                    blob.digest
                ),
            )
        })?;
        layers.push(as_blob(blob));
    }
    let held = Held {
        info: info_from_config(&config)?,
        config,
        layers,
        installed: None,
    };
    store.hold(held.clone());
    Ok(Some(held))
}

fn scratch_dir(opts: &Options) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("direct-")
        .tempdir_in(&opts.scratch_dir)
        .map_err(|e| Error::io(&opts.scratch_dir, e))
}

/// Step 4 with no engine: each layer the registry holds (`layer-<key>`),
/// held as its manifest and config; the installed set of the highest, which
/// the layer above it starts from. A layer that went away, and every layer
/// above it, become [`Source::Missing`].
pub async fn fetch<R: Manifests>(
    store: &Store,
    opts: &Options,
    plan: &Plan<'_>,
    sources: &mut [Source],
    remote: &Remote<R>,
    reporter: &dyn Reporter,
) -> Result<()> {
    let scratch = scratch_dir(opts)?;
    let mut highest = None;
    for (i, layer) in plan.layers.iter().enumerate() {
        if sources[i] != Source::Registry(None) {
            continue;
        }
        let tag = layer_tag(layer);
        reporter.event(Event::LayerFromRegistry {
            layer: layer.name,
            reference: &format!("{}:{tag}", opts.repository),
        });
        let held = hold_from(
            store,
            &remote.registry,
            &tag,
            scratch.path(),
            HeldLayer::Results,
        );
        match held.await? {
            Some(h) => {
                sources[i] = Source::Registry(Some(h.info.id.clone()));
                highest = Some((i, h.info.id));
            }
            None => break,
        }
    }
    for s in sources.iter_mut().filter(|s| **s == Source::Registry(None)) {
        *s = Source::Missing;
    }
    let Some((i, id)) = highest.filter(|(i, _)| sources.get(i + 1) == Some(&Source::Missing))
    else {
        return Ok(());
    };
    let root = crate::state::root(&opts.settings).dir;
    let installed = match index::load_cached_json(&root, &id) {
        Some(kept) => kept,
        None => pull_index(&remote.registry, &id, scratch.path()).await?.ok_or_else(|| Error::DirectRefused {
            input: format!("{}:{}", opts.repository, layer_tag(&plan.layers[i])),
            reason: "the registry has this layer but not its installed set (direct-index-…), which the layer above needs".into(),
        })?,
    };
    keep_index(store, &root, installed);
    Ok(())
}

/// The installed set of a held image (and its JSON): kept in the store, on
/// this machine, and for the rest of this process.
fn keep_index(store: &Store, root: &Path, (installed, json): (Index, Vec<u8>)) {
    if let Err(e) = index::store_cached_json(root, &installed.image, &json) {
        tracing::debug!("keeping the installed set of {}: {e}", installed.image);
    }
    store.set_installed(&installed.image, json);
    index::note(&installed);
}

/// Step 4's footing with no engine: the base held (its config from its
/// registry; its layers stay there), and its installed set when the first
/// layer is produced on it. No container checks the base: direct mode's boot
/// refuses what Beam's would.
pub async fn footing<R: Manifests>(
    store: &Store,
    opts: &Options,
    sources: &[Source],
    remote: Option<&Remote<R>>,
    reporter: &dyn Reporter,
) -> Result<Footing> {
    let no_registry = || Error::DirectBase {
        image: opts.base.clone(),
        reason: "no engine answers, and prebuilder cannot read the base's registry".into(),
    };
    let registry = remote
        .and_then(|r| r.base.as_ref())
        .ok_or_else(no_registry)?;
    let scratch = scratch_dir(opts)?;
    let reference = ImageRef::parse(&opts.base);
    let base = hold_from(
        store,
        registry,
        reference.tag_or_digest(),
        scratch.path(),
        HeldLayer::Base,
    )
    .await?
    .ok_or_else(|| Error::DirectBase {
        image: opts.base.clone(),
        reason: format!(
            "no engine answers and {} has no such image",
            registry.host()
        ),
    })?;
    if sources.first() == Some(&Source::Missing) {
        let installed = base_index(&base, opts, remote, registry, scratch.path(), reporter).await?;
        keep_index(store, &crate::state::root(&opts.settings).dir, installed);
    }
    Ok(Footing::held(base.info))
}

/// The base's installed set: this machine's cache, else the result
/// repository's artifact, else read from the base's layers (downloaded
/// once) and pushed for the next runner.
async fn base_index<R: Manifests>(
    base: &Held,
    opts: &Options,
    results: Option<&Remote<R>>,
    base_registry: &R,
    scratch: &Path,
    reporter: &dyn Reporter,
) -> Result<(Index, Vec<u8>)> {
    let root = crate::state::root(&opts.settings).dir;
    if let Some(kept) = index::load_cached_json(&root, &base.info.id) {
        return Ok(kept);
    }
    if let Some(r) = results {
        if let Some(i) = pull_index(&r.registry, &base.info.id, scratch).await? {
            return Ok(i);
        }
    }
    reporter.event(Event::PushStatus {
        reference: &opts.base,
        status: "reading the base's layers once, to index what its pip sees",
    });
    let mut files = Vec::new();
    for (n, layer) in base.layers.iter().enumerate() {
        let (HeldLayer::Base(blob) | HeldLayer::Results(blob)) = layer else {
            continue;
        };
        let f = scratch.join(format!("base-{n}"));
        base_registry.download_blob(&blob.digest, &f).await?;
        files.push(f);
    }
    let (id, config) = (base.info.id.clone(), base.config.clone());
    let i = tokio::task::spawn_blocking(move || index::index_layers(&id, &config, &files))
        .await
        .map_err(|source| Error::Task {
            action: "indexing the base".into(),
            source,
        })??;
    let json = serde_json::to_vec(&i).map_err(|e| Error::Local {
        action: "writing an installed set".into(),
        source: std::io::Error::other(e),
    })?;
    if let (Some(r), true) = (results, opts.push) {
        if let Err(e) = push_index_json(&r.registry, &i.image, &json).await {
            tracing::warn!("pushing the base's installed set: {e}");
        }
    }
    Ok((i, json))
}

/// Step 6 with no engine: the produced images pushed (with `--push`), each
/// one's installed set beside it, and the result written to `--output`. The
/// registry's digest of the result, when pushed.
pub async fn publish<R: Manifests>(
    store: &Store,
    opts: &Options,
    remote: Option<&Remote<R>>,
    (plan, ids, sources): (&Plan<'_>, &[String], &[Source]),
    reporter: &dyn Reporter,
) -> Result<Option<String>> {
    let scratch = scratch_dir(opts)?;
    let mut digest = None;
    if let (true, Some(r)) = (opts.push, remote) {
        let produced: Vec<usize> = (0..ids.len())
            .filter(|&i| sources.get(i) == Some(&Source::Missing))
            .collect();
        let held = |i: usize| -> Result<Held> {
            store.get(&ids[i]).ok_or_else(|| Error::DirectBase {
                image: ids[i].clone(),
                reason: "the layer image is not held (a bug: please report it)".into(),
            })
        };
        let mut pushed = Vec::new();
        for &i in &produced {
            pushed.push((held(i)?, i));
        }
        digest = Some(push(opts, r, plan, &pushed, scratch.path(), reporter).await?);
        for (h, _) in &pushed {
            if let Some(json) = &h.installed {
                if let Err(e) = push_index_json(&r.registry, &h.info.id, json).await {
                    tracing::warn!("pushing the installed set of {}: {e}", h.info.id);
                }
            }
        }
    }
    if let (Some(out), Some(top)) = (&opts.output, ids.last().and_then(|id| store.get(id))) {
        let reference = format!("{}:{}", opts.repository, plan.tag());
        write_output(out, &reference, &top, remote, scratch.path(), reporter).await?;
    }
    Ok(digest)
}

/// Push `images` (each with its plan index), bottom up: base blobs mounted
/// or copied, produced layers compressed and uploaded, configs, manifests
/// under `layer-<key>` (the result under its key); then every `--tag`.
async fn push<R: Manifests>(
    opts: &Options,
    remote: &Remote<R>,
    plan: &Plan<'_>,
    images: &[(Held, usize)],
    scratch: &Path,
    reporter: &dyn Reporter,
) -> Result<String> {
    let registry = &remote.registry;
    let repo = &opts.repository;
    let top = plan.layers.len().saturating_sub(1);
    let mut present: HashMap<String, LayerBlob> = HashMap::new();
    let mut manifest = None;
    for (held, i) in images {
        let tag = match *i == top {
            true => plan.tag().to_string(),
            false => layer_tag(&plan.layers[*i]),
        };
        let reference = format!("{repo}:{tag}");
        reporter.event(Event::Pushing {
            reference: &reference,
        });
        let status = |s: &str| {
            reporter.event(Event::PushStatus {
                reference: &reference,
                status: s,
            })
        };
        let mut blobs = Vec::new();
        for (layer, diff_id) in held.layers.iter().zip(&held.info.layers) {
            let blob = match present.get(diff_id) {
                Some(b) => b.clone(),
                None => put_layer(remote, layer, diff_id, scratch, &status).await?,
            };
            present.insert(diff_id.clone(), blob.clone());
            blobs.push(blob);
        }
        let cd = image::image_id(&held.config);
        if !registry.blob_exists(&cd).await? {
            registry
                .upload_blob(&cd, BlobBody::Bytes(&held.config))
                .await?;
        }
        let m = registry::oci_manifest(&held.config, &blobs).map_err(|reason| {
            registry_err(
                registry.host(),
                format!("writing the manifest of {reference}"),
                reason,
            )
        })?;
        registry.put_manifest(&tag, &m).await?;
        status(&format!("{reference} is {}", m.digest));
        manifest = Some(m);
    }
    let manifest = manifest.ok_or_else(|| {
        registry_err(
            registry.host(),
            format!("pushing {repo}"),
            "nothing was produced to push",
        )
    })?;
    super::publish::apply_tags(registry, opts, &manifest, reporter).await?;
    Ok(manifest.digest)
}

/// One layer in the result repository: a registry blob mounted or copied
/// there when it lacks it, a produced tar compressed and uploaded.
async fn put_layer<R: Manifests>(
    remote: &Remote<R>,
    layer: &HeldLayer,
    diff_id: &str,
    scratch: &Path,
    status: &dyn Fn(&str),
) -> Result<LayerBlob> {
    let registry = &remote.registry;
    match layer {
        HeldLayer::Results(blob) => Ok(blob.clone()),
        HeldLayer::Base(blob) => {
            if !registry.blob_exists(&blob.digest).await? {
                let base = remote.base.as_ref().ok_or_else(|| {
                    registry_err(
                        registry.host(),
                        format!("copying base layer {diff_id}"),
                        "the base's registry is not known",
                    )
                })?;
                copy_base_blob(registry, base, blob, scratch, status).await?;
            }
            Ok(blob.clone())
        }
        HeldLayer::Tar(tar) => {
            let (blob, gz) = compress(tar, scratch, diff_id).await?;
            if !registry.blob_exists(&blob.digest).await? {
                registry
                    .upload_blob(&blob.digest, BlobBody::File(&gz, blob.size))
                    .await?;
                status(&format!(
                    "{} uploaded ({:.1} MB)",
                    &blob.digest[..19],
                    blob.size as f64 / 1e6
                ));
            }
            let _ = std::fs::remove_file(&gz);
            Ok(blob)
        }
    }
}

/// A produced layer tar gzipped into `scratch`: its blob and the file.
async fn compress(tar: &Path, scratch: &Path, diff_id: &str) -> Result<(LayerBlob, PathBuf)> {
    let dst = scratch.join(format!("{}.gz", diff_id.replace(':', "-")));
    let (src, target) = (tar.to_path_buf(), dst.clone());
    let b = tokio::task::spawn_blocking(move || image::export::compress(&src, &target))
        .await
        .map_err(|source| Error::Task {
            action: "compressing a layer".into(),
            source,
        })?
        .map_err(|e| Error::io(&dst, e))?;
    let blob = LayerBlob {
        media_type: registry::OCI_LAYER_GZIP.into(),
        digest: b.digest,
        size: b.size,
    };
    Ok((blob, dst))
}

/// Write the result as an OCI layout or a `docker load` archive: every
/// layer, registry ones downloaded as they are there.
async fn write_output<R: Manifests>(
    out: &Output,
    reference: &str,
    top: &Held,
    remote: Option<&Remote<R>>,
    scratch: &Path,
    reporter: &dyn Reporter,
) -> Result<()> {
    reporter.event(Event::PushStatus {
        reference,
        status: "writing --output",
    });
    let mut files: Vec<(PathBuf, LayerBlob)> = Vec::new();
    for (j, (layer, diff_id)) in top.layers.iter().zip(&top.info.layers).enumerate() {
        let (blob, from) = match layer {
            HeldLayer::Tar(tar) => {
                let (blob, gz) = compress(tar, scratch, diff_id).await?;
                files.push((gz, blob));
                continue;
            }
            HeldLayer::Base(b) => (b, remote.and_then(|r| r.base.as_ref())),
            HeldLayer::Results(b) => (b, remote.map(|r| &r.registry)),
        };
        let registry = from.ok_or_else(|| {
            registry_err(
                "--output",
                format!("copying layer {diff_id}"),
                "its registry is not known",
            )
        })?;
        let f = scratch.join(format!("out-{j}.blob"));
        registry.download_blob(&blob.digest, &f).await?;
        files.push((f, blob.clone()));
    }
    let config = top.config.clone();
    let blobs: Vec<LayerBlob> = files.iter().map(|(_, b)| b.clone()).collect();
    let manifest = registry::oci_manifest(&config, &blobs)
        .map_err(|reason| registry_err("--output", "writing the manifest".into(), reason))?;
    let (out, reference) = (out.clone(), reference.to_string());
    tokio::task::spawn_blocking(move || match &out {
        Output::Oci(dir) => write_oci(dir, &config, &manifest, &files, &reference),
        Output::DockerArchive(file) => write_docker_archive(file, &config, &files, &reference),
    })
    .await
    .map_err(|source| Error::Task {
        action: "writing --output".into(),
        source,
    })?
}
