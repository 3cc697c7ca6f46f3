//! `--push`: prebuilder puts the images it built in the registry itself,
//! through the registry API, so a result's digest is the digest of bytes
//! prebuilder wrote (its config, its gzip, its OCI manifest) and not of an
//! engine's compressor: the same inputs give the same digest from any engine
//! (issue 11), and two runners racing on one key push the same manifest.
//!
//! For each image the registry lacks (every `layer-<key>` below the result,
//! then the result's content tag), bottom up:
//! 1. each layer's blob: one the registry has already (named by the base's
//!    own manifest, or by a layer image pushed before) is checked with a
//!    `HEAD`, or mounted from the base's repository when it is in the same
//!    registry, or from another repository of the registry this machine put
//!    it in (`SharedBlobs`); any other is compressed from the engine's export
//!    and uploaded;
//! 2. the config blob (the engine's own bytes: their digest is the image id);
//! 3. the manifest, put under its tag. The content tag comes last, so it never
//!    names a blob the registry lacks, and it never moves.
//!
//! Then every `--tag`: the result's manifest put again under it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::{Options, Remote};
use crate::engine::{ops, Engine, ImageInfo};
use crate::error::{Error, Result};
use crate::image::export::{self, ExportedImage};
use crate::plan::{Plan, LAYER_TAG_PREFIX};
use crate::progress::{Event, Reporter};
use crate::registry::{self, BlobBody, ImageRef, LayerBlob, Manifests, RawManifest};

/// Before any work: refuse what the push would have to refuse after the
/// build, so a refusal costs nothing and leaves the registry as it was: a
/// `--tag` the registry holds for other content than the result's content
/// tag ([`Error::TagConflict`]), unless `--replace-tags`. The push re-checks
/// it (another run may push in between).
///
/// `--no-cache` with the content tag in the registry is not refused here:
/// a rebuild is byte-identical, so its push moves nothing; only a rebuild
/// whose digest differs is refused, by the push, once the digest is known
/// ([`Error::ContentTagTaken`]).
pub async fn preflight<R: Manifests>(remote: &Remote<R>, opts: &Options, tag: &str) -> Result<()> {
    let registry = &remote.registry;
    let repo = &opts.repository;
    let content = registry.manifest_digest(tag).await?;
    if opts.replace_tags {
        return Ok(());
    }
    for t in &opts.tags {
        if let Some(existing) = registry.manifest_digest(t).await? {
            // Without the content tag the result's digest is not known yet:
            // any content under `t` is other content.
            if content.as_deref() != Some(existing.as_str()) {
                return Err(Error::TagConflict {
                    reference: format!("{repo}:{t}"),
                    existing,
                });
            }
        }
    }
    Ok(())
}

/// One image to put in the registry.
struct Wanted {
    tag: String,
    id: String,
    /// The digest the registry holds under `tag` (only with `--no-cache`,
    /// which rebuilds what the registry has): the rebuild must match it.
    existing: Option<String>,
}

/// Push the result (`ids`: the local image of each of `plan`'s layers,
/// bottom up) and the layers below it, unless the registry has them: a
/// content tag the registry holds was built elsewhere from the same inputs
/// and is kept. With `--no-cache` each is pushed again, which moves nothing
/// when the rebuild has the registry's digest and is refused when it has
/// another (content tags never move). Then every `--tag`, refusing to move
/// one that points elsewhere (unless `--replace-tags`). The registry's
/// digest of the result.
pub async fn push<E: Engine, R: Manifests>(
    engine: &E,
    opts: &Options,
    remote: &Remote<R>,
    (plan, ids): (&Plan<'_>, &[String]),
    base: Option<&ImageInfo>,
    reporter: &dyn Reporter,
) -> Result<String> {
    let repo = &opts.repository;
    let registry = &remote.registry;
    let n = plan.layers.len().min(ids.len());
    let Some(top) = n.checked_sub(1) else {
        return Err(Error::Registry {
            registry: registry.host().to_string(),
            action: format!("pushing to {repo}"),
            source: "the build has no layer to push".into(),
        });
    };
    let mut wanted = Vec::new();
    for (layer, id) in plan.layers[..top].iter().zip(ids) {
        let tag = format!("{LAYER_TAG_PREFIX}{}", layer.tag());
        let existing = registry.manifest_digest(&tag).await?;
        if opts.no_cache || existing.is_none() {
            wanted.push(Wanted {
                tag,
                id: id.clone(),
                existing,
            });
        }
    }
    let content_tag = plan.tag();
    let existing = registry.manifest_digest(content_tag).await?;
    match &existing {
        Some(d) if !opts.no_cache => reporter.event(Event::AlreadyPushed {
            reference: &format!("{repo}:{content_tag}"),
            digest: d,
        }),
        _ => wanted.push(Wanted {
            tag: content_tag.to_string(),
            id: ids[top].clone(),
            existing: existing.clone(),
        }),
    }
    let mut put = if wanted.is_empty() {
        Vec::new()
    } else {
        let known = known_blobs(engine, remote, opts, (plan, ids), base).await?;
        upload(engine, opts, remote, &wanted, known, reporter).await?
    };
    let manifest = match (existing, put.pop()) {
        (_, Some(m)) => m,
        (Some(digest), None) => {
            if opts.tags.is_empty() {
                return Ok(digest);
            }
            registry
                .manifest(&digest)
                .await?
                .ok_or_else(|| Error::Registry {
                    registry: registry.host().to_string(),
                    action: format!("reading {repo}@{digest} to tag it"),
                    source: format!(
                        "the registry answered for {content_tag} but has no manifest {digest}"
                    )
                    .into(),
                })?
        }
        (None, None) => {
            return Err(Error::Registry {
                registry: registry.host().to_string(),
                action: format!("pushing {repo}:{content_tag}"),
                source: "no manifest was put".into(),
            })
        }
    };
    apply_tags(registry, opts, &manifest, reporter).await?;
    Ok(manifest.digest)
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
    apply_tags(registry, opts, &manifest, reporter).await
}

/// Put `manifest` (the result's) under every `--tag`: a tag holding other
/// content is refused unless `--replace-tags`; one holding it already is
/// left. Returns `repo:tag` of each.
pub async fn apply_tags<R: Manifests>(
    registry: &R,
    opts: &Options,
    manifest: &RawManifest,
    reporter: &dyn Reporter,
) -> Result<Vec<String>> {
    let repo = &opts.repository;
    let digest = &manifest.digest;
    let mut done = Vec::new();
    for t in &opts.tags {
        let reference = format!("{repo}:{t}");
        match registry.manifest_digest(t).await? {
            Some(d) if d == *digest => {}
            Some(other) if !opts.replace_tags => {
                return Err(Error::TagConflict {
                    reference,
                    existing: other,
                })
            }
            other => {
                if let Some(from) = &other {
                    reporter.event(Event::MovingTag {
                        reference: &reference,
                        from,
                        to: digest,
                    });
                }
                registry.put_manifest(t, manifest).await?;
                reporter.event(Event::TaggedInRegistry {
                    reference: &reference,
                    digest,
                });
            }
        }
        done.push(reference);
    }
    Ok(done)
}

/// A blob the registry may hold for a layer; `from_base` when the base's
/// registry holds it (mounted from there, or copied from another registry).
#[derive(Debug, Clone)]
struct Known {
    blob: LayerBlob,
    from_base: bool,
}

/// The blobs known for layers by diff id, read from manifests (nothing is
/// downloaded): the base's own manifest in its registry, when its config is
/// the base's id; and the highest layer image of this plan the registry
/// holds, when its config is the local layer's id (what was pushed before,
/// from this or another engine).
async fn known_blobs<E: Engine, R: Manifests>(
    engine: &E,
    remote: &Remote<R>,
    opts: &Options,
    (plan, ids): (&Plan<'_>, &[String]),
    base: Option<&ImageInfo>,
) -> Result<HashMap<String, Known>> {
    let mut known = HashMap::new();
    if let Some(base) = base {
        base_blobs(remote, opts, base, &mut known).await;
    }
    let top = plan.layers.len().min(ids.len()).saturating_sub(1);
    for i in (0..top).rev() {
        let tag = format!("{LAYER_TAG_PREFIX}{}", plan.layers[i].tag());
        if let Some(m) = remote.registry.image_manifest(&tag).await? {
            let local = ops::require(engine, &ids[i], "layer image").await?;
            add_known(&mut known, &m, &local.id, &local.layers, false);
            break;
        }
    }
    // What this machine compressed before (pushed to this or another registry).
    if let Some(result) = ids.get(top) {
        let local = ops::require(engine, result, "image to push").await?;
        for diff_id in &local.layers {
            if !known.contains_key(diff_id) {
                if let Some(blob) = remembered(&opts.blob_map, diff_id) {
                    known.insert(
                        diff_id.clone(),
                        Known {
                            blob,
                            from_base: false,
                        },
                    );
                }
            }
        }
    }
    Ok(known)
}

/// The base's blobs, from the manifest it was pulled by. Only a base that
/// came from its registry (it has a repo digest there) is asked for; a base
/// the registry cannot describe (or one not on the engine) is uploaded like
/// any other layer.
async fn base_blobs<R: Manifests>(
    remote: &Remote<R>,
    opts: &Options,
    base: &ImageInfo,
    known: &mut HashMap<String, Known>,
) {
    let image = ImageRef::parse(&opts.base);
    let pulled_by = base.repo_digests.iter().find_map(|r| {
        let r = ImageRef::parse(r);
        (r.repository == image.repository)
            .then_some(r.digest)
            .flatten()
    });
    if let (Some(base_registry), Some(digest)) = (&remote.base, pulled_by) {
        if let Ok(Some(m)) = base_registry.image_manifest(&digest).await {
            add_known(known, &m, &base.id, &base.layers, true);
        }
    }
}

/// The file remembering the blob of `diff_id`.
fn map_file(dir: &Path, diff_id: &str) -> PathBuf {
    dir.join(diff_id.replace(':', "-"))
}

/// The blob this machine compressed `diff_id` to, if it remembers one.
fn remembered(dir: &Path, diff_id: &str) -> Option<LayerBlob> {
    let text = std::fs::read_to_string(map_file(dir, diff_id)).ok()?;
    let (digest, size) = text.trim().split_once(' ')?;
    Some(LayerBlob {
        media_type: registry::OCI_LAYER_GZIP.into(),
        digest: digest.to_string(),
        size: size.parse().ok()?,
    })
}

/// Remember the blob `diff_id` compressed to (best effort: a cache).
fn remember(dir: &Path, diff_id: &str, blob: &LayerBlob) {
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        std::io::Write::write_all(
            &mut tmp,
            format!("{} {}\n", blob.digest, blob.size).as_bytes(),
        )?;
        tmp.persist(map_file(dir, diff_id))?;
        Ok(())
    };
    if let Err(e) = write() {
        tracing::debug!(
            "cannot remember the blob of {diff_id} in {}: {e}",
            dir.display()
        );
    }
}

/// Map `diff_ids` to the layer blobs of `manifest`, one by one, when the
/// manifest's config is `id` (so its layers are these diff ids, in order).
fn add_known(
    known: &mut HashMap<String, Known>,
    manifest: &RawManifest,
    id: &str,
    diff_ids: &[String],
    from_base: bool,
) {
    let Some(m) = registry::image_layers(&manifest.bytes) else {
        return;
    };
    if m.config != id || m.layers.len() != diff_ids.len() {
        return;
    }
    for (diff_id, blob) in diff_ids.iter().zip(m.layers) {
        if let Some(blob) = blob.as_oci() {
            known.insert(diff_id.clone(), Known { blob, from_base });
        }
    }
}

/// Put every wanted image (bottom up) in the registry: blobs, config,
/// manifest. The manifests put, in order.
async fn upload<E: Engine, R: Manifests>(
    engine: &E,
    opts: &Options,
    remote: &Remote<R>,
    wanted: &[Wanted],
    known: HashMap<String, Known>,
    reporter: &dyn Reporter,
) -> Result<Vec<RawManifest>> {
    let registry = &remote.registry;
    let repo = &opts.repository;
    let references: Vec<String> = wanted.iter().map(|w| format!("{repo}:{}", w.tag)).collect();
    let progress = PushProgress::new(reporter);
    progress.announce(&references[0]);
    let scratch = tempfile::Builder::new()
        .prefix("push-")
        .tempdir_in(&opts.scratch_dir)
        .map_err(|e| Error::io(&opts.scratch_dir, e))?;
    let mut diff_ids = Vec::new();
    for w in wanted {
        let info = ops::require(engine, &w.id, "image to push").await?;
        diff_ids.push(info.layers);
    }
    let shared = SharedBlobs::new(&opts.blob_map, registry.host());
    let found = Found {
        remote,
        known: &known,
        shared: &shared,
        dir: scratch.path(),
    };
    let (mut present, needed) = found.present(&diff_ids, &references, &progress).await?;
    let images = exported(
        engine,
        (wanted, &diff_ids),
        scratch.path().to_path_buf(),
        needed,
    )
    .await?;
    put_configs(registry, wanted, &images).await?;
    let mut manifests = Vec::new();
    for ((w, image), reference) in wanted.iter().zip(&images).zip(&references) {
        progress.announce(reference);
        let status = |s: &str| progress.status(reference, s);
        let mut layers = Vec::new();
        for layer in &image.layers {
            if let Some(blob) = present.get(&layer.diff_id) {
                layers.push(blob.clone());
                continue;
            }
            let blob = compress_and_upload(registry, layer, scratch.path(), &status).await?;
            remember(&opts.blob_map, &layer.diff_id, &blob);
            present.insert(layer.diff_id.clone(), blob.clone());
            layers.push(blob);
        }
        let manifest =
            registry::oci_manifest(&image.config, &layers).map_err(|reason| Error::Registry {
                registry: registry.host().to_string(),
                action: format!("writing the manifest of {repo}:{}", w.tag),
                source: reason.into(),
            })?;
        manifests.push(manifest);
    }
    put_manifests(registry, (wanted, &references), &manifests, &progress).await?;
    for blob in present.values() {
        shared.remember(&blob.digest, registry.path());
    }
    Ok(manifests)
}

/// Where the blobs of a push may already be: the known blobs (the base's,
/// pushed before), and the repositories of this registry this machine
/// put each blob in ([`SharedBlobs`]).
struct Found<'a, R> {
    remote: &'a Remote<R>,
    known: &'a HashMap<String, Known>,
    shared: &'a SharedBlobs,
    dir: &'a Path,
}

impl<R: Manifests> Found<'_, R> {
    /// The registry's blob of each layer it has (or now has, mounted or
    /// copied), and the diff ids it lacks (to compress and upload). A blob
    /// shared by several images is told under the lowest (the first to
    /// carry it).
    async fn present(
        &self,
        diff_ids: &[Vec<String>],
        references: &[String],
        progress: &PushProgress<'_>,
    ) -> Result<(HashMap<String, LayerBlob>, HashSet<String>)> {
        let mut present: HashMap<String, LayerBlob> = HashMap::new();
        let mut needed: HashSet<String> = HashSet::new();
        for (layers, reference) in diff_ids.iter().zip(references) {
            let status = |s: &str| progress.status(reference, s);
            for diff_id in layers {
                if present.contains_key(diff_id) || needed.contains(diff_id) {
                    continue;
                }
                let found = match self.known.get(diff_id) {
                    Some(k) => reuse(self.remote, k, self.shared, self.dir, &status).await?,
                    None => false,
                };
                match self.known.get(diff_id) {
                    Some(k) if found => {
                        present.insert(diff_id.clone(), k.blob.clone());
                    }
                    _ => {
                        needed.insert(diff_id.clone());
                    }
                }
            }
        }
        Ok((present, needed))
    }
}

/// The config blob of each image, unless the registry has it. Configs go
/// first: small, and a registry that refuses writes says so before any
/// layer is compressed.
async fn put_configs<R: Manifests>(
    registry: &R,
    wanted: &[Wanted],
    images: &[ExportedImage],
) -> Result<()> {
    for (w, image) in wanted.iter().zip(images) {
        let config_digest = crate::image::image_id(&image.config);
        if config_digest != w.id {
            tracing::warn!(
                "the engine exported {} with config {config_digest}: the pushed image's id differs",
                w.id
            );
        }
        if !registry.blob_exists(&config_digest).await? {
            registry
                .upload_blob(&config_digest, BlobBody::Bytes(&image.config))
                .await?;
        }
    }
    Ok(())
}

/// Which repositories of one registry this machine put each blob in (a
/// file per blob under the blob map's `repos/<host>/`, one repository a
/// line): a push to another repository of that registry mounts the blob
/// from one of them instead of uploading it (issue 22: a second pipeline's
/// repository re-uploaded even the base's layers). A cache: a mount the
/// registry refuses falls back to an upload.
struct SharedBlobs {
    dir: PathBuf,
}

impl SharedBlobs {
    fn new(blob_map: &Path, host: &str) -> SharedBlobs {
        let host: String = host
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        SharedBlobs {
            dir: blob_map.join("repos").join(host),
        }
    }

    fn file(&self, digest: &str) -> PathBuf {
        self.dir.join(digest.replace(':', "-"))
    }

    /// The repositories `digest` was put in, most recent first.
    fn repositories(&self, digest: &str) -> Vec<String> {
        let text = std::fs::read_to_string(self.file(digest)).unwrap_or_default();
        text.lines().rev().map(str::to_string).collect()
    }

    /// `digest` is in `repository` now (best effort).
    fn remember(&self, digest: &str, repository: &str) {
        let mut repos = self.repositories(digest);
        if repos.first().map(String::as_str) == Some(repository) {
            return;
        }
        repos.retain(|r| r != repository);
        repos.truncate(7);
        repos.reverse();
        repos.push(repository.to_string());
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&self.dir)?;
            let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
            std::io::Write::write_all(&mut tmp, format!("{}\n", repos.join("\n")).as_bytes())?;
            tmp.persist(self.file(digest))?;
            Ok(())
        };
        if let Err(e) = write() {
            tracing::debug!("cannot remember that {repository} has {digest}: {e}");
        }
    }
}

/// Put each image's manifest under its tag, bottom up (the content tag
/// last). A tag the registry holds already (a `--no-cache` rebuild) is left
/// when it has the same digest; another digest is refused before anything
/// is put: content tags never move.
async fn put_manifests<R: Manifests>(
    registry: &R,
    (wanted, references): (&[Wanted], &[String]),
    manifests: &[RawManifest],
    progress: &PushProgress<'_>,
) -> Result<()> {
    for ((w, m), reference) in wanted.iter().zip(manifests).zip(references) {
        if let Some(pushed) = w.existing.as_ref().filter(|d| **d != m.digest) {
            return Err(Error::ContentTagTaken {
                reference: reference.clone(),
                pushed: pushed.clone(),
                rebuilt: m.digest.clone(),
            });
        }
    }
    for ((w, m), reference) in wanted.iter().zip(manifests).zip(references) {
        if w.existing.is_some() {
            progress.status(
                reference,
                &format!(
                    "{reference} is {} already: the rebuild is identical",
                    m.digest
                ),
            );
            continue;
        }
        registry.put_manifest(&w.tag, m).await?;
        progress.status(reference, &format!("{reference} is {}", m.digest));
    }
    Ok(())
}

/// The push's progress events: each image's own reference (`REPO:<key>`
/// for the result, `REPO:layer-<key>` below it) on its `Pushing` line, said
/// once, before the first status under it.
struct PushProgress<'a> {
    reporter: &'a dyn Reporter,
    announced: std::sync::Mutex<HashSet<String>>,
}

impl<'a> PushProgress<'a> {
    fn new(reporter: &'a dyn Reporter) -> Self {
        PushProgress {
            reporter,
            announced: std::sync::Mutex::new(HashSet::new()),
        }
    }

    fn announce(&self, reference: &str) {
        let new = self
            .announced
            .lock()
            .map(|mut a| a.insert(reference.to_string()))
            .unwrap_or(false);
        if new {
            self.reporter.event(Event::Pushing { reference });
        }
    }

    fn status(&self, reference: &str, status: &str) {
        self.announce(reference);
        self.reporter.event(Event::PushStatus { reference, status });
    }
}

/// Whether the registry has (or now has) the known blob `k`: already
/// there; else mounted from another repository of the registry this
/// machine put it in ([`SharedBlobs`]); else, for a base layer, mounted from the base's repository (same
/// registry) or copied from the base's registry. `false` when it must be
/// compressed from the engine's copy (a copy that fails is reported and
/// falls back to that).
async fn reuse<R: Manifests>(
    remote: &Remote<R>,
    k: &Known,
    shared: &SharedBlobs,
    dir: &Path,
    status: &dyn Fn(&str),
) -> Result<bool> {
    let registry = &remote.registry;
    let digest = &k.blob.digest;
    if registry.blob_exists(digest).await? {
        return Ok(true);
    }
    for from in shared.repositories(digest) {
        if from != registry.path() && registry.mount_blob(digest, &from).await? {
            status(&format!("{} mounted from {from}", short(digest)));
            return Ok(true);
        }
    }
    let Some(base) = remote.base.as_ref().filter(|_| k.from_base) else {
        return Ok(false);
    };
    if base.host() == registry.host() && registry.mount_blob(digest, base.path()).await? {
        status(&format!("{} mounted from {}", short(digest), base.path()));
        return Ok(true);
    }
    let file = dir.join(format!("{}.copy", short(digest)));
    let copied = async {
        base.download_blob(digest, &file).await?;
        registry
            .upload_blob(digest, BlobBody::File(&file, k.blob.size))
            .await
    }
    .await;
    let _ = std::fs::remove_file(&file);
    match copied {
        Ok(()) => {
            status(&format!(
                "{} copied from {} ({})",
                short(digest),
                base.host(),
                mb(k.blob.size)
            ));
            Ok(true)
        }
        Err(e) => {
            tracing::warn!(
                "copying base layer {digest} from {}: {e}; compressing it here instead",
                base.host()
            );
            Ok(false)
        }
    }
}

/// The wanted images as the engine exports them, with the layers in
/// `needed` spooled into `dir` (the others only digested).
async fn exported<E: Engine>(
    engine: &E,
    (wanted, layers): (&[Wanted], &[Vec<String>]),
    dir: PathBuf,
    needed: HashSet<String>,
) -> Result<Vec<ExportedImage>> {
    let ids: Vec<String> = wanted.iter().map(|w| w.id.clone()).collect();
    let what = format!("reading the engine's export of {}", ids.join(", "));
    let stream = engine.export(&ids).await?;
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
    let images = tokio::task::spawn_blocking(move || {
        export::unpack(reader, &dir, &|d: &str| needed.contains(d))
    })
    .await
    .map_err(|source| Error::Task {
        action: what.clone(),
        source,
    })?
    .map_err(|source| Error::Local {
        action: what.clone(),
        source,
    })?;
    // Docker's archive lists images in no set order, and a config's
    // digest is the id only where the engine keeps configs byte for byte:
    // match each by its layers (each image of a build has its own count).
    let mut out = Vec::new();
    for (w, layers) in wanted.iter().zip(layers) {
        let image = images
            .iter()
            .find(|i| i.layers.iter().map(|l| &l.diff_id).eq(layers.iter()))
            .cloned()
            .ok_or_else(|| Error::Engine {
                engine: String::new(),
                action: what.clone(),
                source: format!("the export has no image with the layers of {}", w.id).into(),
            })?;
        out.push(image);
    }
    Ok(out)
}

/// Compress one exported layer as prebuilder's blob and upload it unless
/// the registry has it.
async fn compress_and_upload<R: Manifests>(
    registry: &R,
    layer: &export::ExportedLayer,
    dir: &std::path::Path,
    status: &dyn Fn(&str),
) -> Result<LayerBlob> {
    let Some(src) = layer.path.clone() else {
        return Err(Error::Local {
            action: format!("pushing layer {}", layer.diff_id),
            source: std::io::Error::other("the layer was not kept from the export"),
        });
    };
    let dst = dir.join(format!("{}.gz", short(&layer.diff_id)));
    let target = dst.clone();
    status(&format!(
        "{} compressing ({})",
        short(&layer.diff_id),
        mb(layer.size)
    ));
    let blob = tokio::task::spawn_blocking(move || export::compress(&src, &target))
        .await
        .map_err(|source| Error::Task {
            action: format!("compressing layer {}", layer.diff_id),
            source,
        })?
        .map_err(|source| Error::Local {
            action: format!("compressing layer {} into {}", layer.diff_id, dst.display()),
            source,
        })?;
    if registry.blob_exists(&blob.digest).await? {
        status(&format!("{} already there", short(&blob.digest)));
    } else {
        registry
            .upload_blob(&blob.digest, BlobBody::File(&dst, blob.size))
            .await?;
        status(&format!(
            "{} uploaded ({})",
            short(&blob.digest),
            mb(blob.size)
        ));
    }
    let _ = std::fs::remove_file(&dst);
    Ok(LayerBlob {
        media_type: registry::OCI_LAYER_GZIP.into(),
        digest: blob.digest,
        size: blob.size,
    })
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// `sha256:0123456789ab` of a digest, for progress lines.
fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Repositories are remembered per registry, most recent first, each
    /// once, at most eight; another registry knows nothing of them.
    #[test]
    fn shared_blobs_remember_repositories_per_registry() {
        let dir = tempfile::tempdir().unwrap();
        let here = SharedBlobs::new(dir.path(), "127.0.0.1:5000");
        let other = SharedBlobs::new(dir.path(), "registry.example.com");
        let d = format!("sha256:{}", "a".repeat(64));
        assert!(here.repositories(&d).is_empty());
        here.remember(&d, "team/one");
        here.remember(&d, "team/two");
        here.remember(&d, "team/one");
        assert_eq!(here.repositories(&d), ["team/one", "team/two"]);
        assert!(other.repositories(&d).is_empty());
        for i in 0..20 {
            here.remember(&d, &format!("r{i}"));
        }
        let repos = here.repositories(&d);
        assert_eq!(repos.len(), 8);
        assert_eq!(repos[0], "r19");
    }
}
