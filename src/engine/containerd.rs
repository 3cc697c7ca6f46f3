//! What Docker's containerd image store (Docker 24 and later with
//! `"containerd-snapshotter": true`; the default of new Docker Engine 29
//! installs and of Docker Desktop) does differently, and how the adapter
//! meets it. Measured on Debian 13's Docker 26.1.5 (containerd 1.7.24) and
//! Debian unstable's Docker 28.5.2 (containerd 2.1.9):
//!
//! - `POST /images/load` of a `docker load` archive that carries only the new
//!   layer's file fails (`failed to resolve layers: layer "0/layer.tar" not
//!   found`): containerd's importer wants every file the archive lists, where
//!   the classic store skips the layers it holds. An OCI archive whose
//!   manifest names the parent's layers by the descriptors the engine's
//!   content store holds them under (digest, size, media type) and carries
//!   only the new layer's blob loads, and the image runs, saves and pushes;
//!   with a wrong size the load passes and a later `docker save` writes a
//!   truncated blob. So the layer goes in as such an archive
//!   (`podman::oci_from_docker_archive` with [`Ids::layers`]); sending the
//!   parent's layers again would cost gigabytes on GPU-size images.
//! - An image's id is its manifest (or index) digest, not its config digest,
//!   and an image cannot be found by its config digest. The build speaks
//!   config digests on every store (keys, labels, lookups: one set of inputs
//!   gives one key everywhere); the adapter translates ([`Ids`]) and learns
//!   an image's manifest from the archive it loads, or once from a `docker
//!   save` of the image read up to its manifest ([`manifest_from_save`]).
//!   Manifests learnt are kept by digest in the state directory (content
//!   addressed: valid for any engine).
//! - `docker save` gives the OCI layout with each blob as stored: pulled
//!   layers compressed (`image::export::unpack` decompresses them).
//! - Every named image has a repo digest (its manifest digest), a pulled one
//!   or not; only one whose layers are all compressed (a manifest a registry
//!   serves) is kept as evidence of a pull ([`registry_like`]).

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// `driver-type` in `/info`'s `DriverStatus` on the containerd image store.
pub const DRIVER_TYPE: &str = "io.containerd.snapshotter.v1";

/// Whether `/info`'s `DriverStatus` says the containerd image store.
pub fn is_containerd_store(driver_status: &[Vec<String>]) -> bool {
    driver_status
        .iter()
        .any(|kv| kv.len() == 2 && kv[0] == "driver-type" && kv[1] == DRIVER_TYPE)
}

/// A blob as a manifest names it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

impl Descriptor {
    /// An uncompressed layer named by its diff id.
    pub fn uncompressed(diff_id: &str, size: u64) -> Descriptor {
        Descriptor {
            media_type: OCI_LAYER.into(),
            digest: diff_id.into(),
            size,
        }
    }
}

/// The OCI media type of an uncompressed layer.
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// What an image manifest (OCI or Docker schema 2) says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Manifest {
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

#[derive(serde::Deserialize)]
struct Index {
    manifests: Vec<IndexEntry>,
}

#[derive(serde::Deserialize)]
struct IndexEntry {
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(serde::Deserialize)]
struct Platform {
    os: String,
    architecture: String,
}

/// The image manifest in `bytes`; `None` for an index or anything else.
pub fn parse_manifest(bytes: &[u8]) -> Option<Manifest> {
    serde_json::from_slice(bytes).ok()
}

/// The digest of the manifest for `os`/`arch` in an index (the first one
/// without a platform when none matches).
fn pick(index: &[u8], os: &str, arch: &str) -> Option<String> {
    let index: Index = serde_json::from_slice(index).ok()?;
    let matches = |e: &&IndexEntry| {
        e.platform
            .as_ref()
            .is_some_and(|p| p.os == os && p.architecture == arch)
    };
    index
        .manifests
        .iter()
        .find(matches)
        .or_else(|| index.manifests.iter().find(|e| e.platform.is_none()))
        .map(|e| e.digest.clone())
}

/// Whether a manifest could be a registry's: every layer compressed. The
/// containerd store gives every named image a repo digest; a loaded image's
/// manifest names uncompressed layers, which registries do not serve.
pub fn registry_like(manifest: &Manifest) -> bool {
    manifest
        .layers
        .iter()
        .all(|l| l.media_type.ends_with("gzip") || l.media_type.ends_with("zstd"))
}

/// Whether a layer of this media type is a plain tar (digest = diff id).
fn uncompressed(media_type: &str) -> bool {
    media_type.ends_with(".tar")
        || media_type.ends_with(".tar.v1")
        || media_type.ends_with("diff.tar")
}

/// The engine's image `info` (its id the store's: `engine_id`'s manifest
/// `m`) as the build names it on every store: its id the config digest, and
/// a repo digest that is only its own manifest's (a loaded image) dropped.
pub fn identify(mut info: super::ImageInfo, m: &Manifest) -> super::ImageInfo {
    if !registry_like(m) {
        let own = info.id.clone();
        info.repo_digests
            .retain(|r| r.rsplit_once('@').map(|(_, d)| d) != Some(own.as_str()));
    }
    info.id = m.config.digest.clone();
    info
}

/// A manifest of `config` over uncompressed layers (`diff_ids`), or gzip
/// ones (blob digests made up from them): what the containerd store holds
/// for a loaded image, or a pulled one. The fake engine's containerd view.
#[cfg(test)]
pub fn manifest_for(config: &str, diff_ids: &[String], pulled: bool) -> Vec<u8> {
    let layers: Vec<Descriptor> = diff_ids
        .iter()
        .map(|d| match pulled {
            false => Descriptor::uncompressed(d, 1),
            true => Descriptor {
                media_type: format!("{OCI_LAYER}+gzip"),
                digest: sha256(d.as_bytes()),
                size: 1,
            },
        })
        .collect();
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 1},
        "layers": layers,
    })
    .to_string()
    .into_bytes()
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Blobs up to this size are held while reading a save (manifests, indexes).
const SMALL_BLOB: u64 = 1 << 20;

/// The manifest of image `id` (a manifest or index digest; an index picks
/// `os`/`arch`) out of a `docker save` of it in the OCI layout, read only as
/// far as needed (containerd writes the blobs sorted by digest, so on
/// average half the image streams by, once per image and machine).
pub fn manifest_from_save<R: Read>(save: R, id: &str, os: &str, arch: &str) -> io::Result<Vec<u8>> {
    let mut small: HashMap<String, Vec<u8>> = HashMap::new();
    let mut want = id.to_string();
    let mut archive = tar::Archive::new(save);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        let Some(hex) = path.strip_prefix("blobs/sha256/") else {
            continue;
        };
        if entry.header().size()? > SMALL_BLOB || hex.is_empty() {
            continue;
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes)?;
        small.insert(format!("sha256:{hex}"), bytes);
        // The wanted blob may have come before the index that names it.
        while let Some(bytes) = small.get(&want) {
            if parse_manifest(bytes).is_some() {
                return Ok(bytes.clone());
            }
            match pick(bytes, os, arch) {
                Some(next) if next != want => want = next,
                _ => {
                    return Err(io::Error::other(format!(
                    "{want} is neither an image manifest nor an index with a {os}/{arch} manifest"
                )))
                }
            }
        }
    }
    Err(io::Error::other(format!(
        "the engine's export of {id} holds no manifest {want}"
    )))
}

/// What one engine handle knows about its images (see the module).
#[derive(Default)]
struct Known {
    /// config digest → the engine's id (manifest digest).
    engine_ids: HashMap<String, String>,
    /// the engine's id → its manifest.
    manifests: HashMap<String, Manifest>,
    /// diff id → the blob the engine holds for it.
    layers: HashMap<String, Descriptor>,
}

/// Config digests ↔ the engine's ids, and the layer blobs the engine holds.
pub struct Ids {
    /// Manifests learnt, by digest (`<state root>/manifests`); `None`: memory only.
    dir: Option<PathBuf>,
    known: Mutex<Known>,
}

impl Ids {
    pub fn new(dir: Option<PathBuf>) -> Ids {
        Ids {
            dir,
            known: Mutex::new(Known::default()),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Known) -> T) -> T {
        match self.known.lock() {
            Ok(mut k) => f(&mut k),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// The engine's name for `reference`: a config digest this handle has
    /// seen becomes the image's id there; anything else is kept.
    pub fn handle(&self, reference: &str) -> String {
        self.with(|k| k.engine_ids.get(reference).cloned())
            .unwrap_or_else(|| reference.to_string())
    }

    /// The manifest of the engine's image `engine_id`, when known (here or
    /// in the state directory); remembered with its diff ids.
    pub fn known(&self, engine_id: &str, diff_ids: &[String]) -> Option<Manifest> {
        if let Some(m) = self.with(|k| k.manifests.get(engine_id).cloned()) {
            return Some(m);
        }
        let bytes = std::fs::read(self.file(engine_id)?).ok()?;
        if sha256(&bytes) != engine_id {
            return None;
        }
        self.learn(engine_id, &bytes, diff_ids)
    }

    /// Remember `bytes`, the manifest of the engine's image `engine_id`
    /// whose layers are `diff_ids` (and keep it in the state directory).
    pub fn learn(&self, engine_id: &str, bytes: &[u8], diff_ids: &[String]) -> Option<Manifest> {
        let m = parse_manifest(bytes)?;
        if let Some(file) = self.file(engine_id) {
            if !file.exists() {
                let write = || -> io::Result<()> {
                    let dir = file.parent().unwrap_or(&file);
                    std::fs::create_dir_all(dir)?;
                    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
                    io::Write::write_all(&mut tmp, bytes)?;
                    tmp.persist(&file).map(|_| ()).map_err(|e| e.error)
                };
                if let Err(e) = write() {
                    tracing::debug!(
                        "cannot keep manifest {engine_id} in {}: {e}",
                        file.display()
                    );
                }
            }
        }
        self.with(|k| {
            k.engine_ids
                .insert(m.config.digest.clone(), engine_id.to_string());
            // An uncompressed layer's digest is its diff id.
            for l in m.layers.iter().filter(|l| uncompressed(&l.media_type)) {
                k.layers.insert(l.digest.clone(), l.clone());
            }
            if m.layers.len() == diff_ids.len() {
                for (d, l) in diff_ids.iter().zip(&m.layers) {
                    k.layers.insert(d.clone(), l.clone());
                }
            }
            k.manifests.insert(engine_id.to_string(), m.clone());
        });
        Some(m)
    }

    /// The blobs the engine holds for `diff_ids` (a new layer's parents), as
    /// learnt from the images inspected; `None` when one is not known.
    pub fn parents(&self, diff_ids: &[String]) -> Option<Vec<Descriptor>> {
        self.with(|k| diff_ids.iter().map(|d| k.layers.get(d).cloned()).collect())
    }

    /// Every blob known by diff id (a copy, for a blocking task).
    pub fn layers(&self) -> HashMap<String, Descriptor> {
        self.with(|k| k.layers.clone())
    }

    fn file(&self, digest: &str) -> Option<PathBuf> {
        let hex = digest.strip_prefix("sha256:")?;
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| self.dir.as_ref().map(|d| d.join(hex)))
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(config: &str, layers: &[(&str, &str, u64)]) -> Vec<u8> {
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 10},
            "layers": layers.iter().map(|(t, d, s)| serde_json::json!({"mediaType": t, "digest": d, "size": s})).collect::<Vec<_>>(),
        })
        .to_string()
        .into_bytes()
    }

    fn add(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o444);
        b.append_data(&mut h, name, data).unwrap();
    }

    #[test]
    fn the_driver_type_tells_the_containerd_store() {
        let status = |t: &str| vec![vec!["driver-type".to_string(), t.to_string()]];
        assert!(is_containerd_store(&status(DRIVER_TYPE)));
        assert!(!is_containerd_store(&status("vfs")));
        assert!(!is_containerd_store(&[vec![
            "Backing Filesystem".into(),
            "extfs".into()
        ]]));
    }

    #[test]
    fn the_manifest_is_read_from_a_save_through_its_index_whatever_the_order() {
        let gz = "application/vnd.oci.image.layer.v1.tar+gzip";
        let m = manifest("sha256:c0", &[(gz, "sha256:aa", 5)]);
        let md = sha256(&m);
        let other = manifest("sha256:c1", &[(gz, "sha256:bb", 5)]);
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [
            {"digest": sha256(&other), "platform": {"os": "linux", "architecture": "arm64"}},
            {"digest": md, "platform": {"os": "linux", "architecture": "amd64"}},
        ]})
        .to_string()
        .into_bytes();
        let id = sha256(&index);
        // The manifest before the index that names it, a big layer between.
        let mut b = tar::Builder::new(Vec::new());
        add(&mut b, &format!("blobs/sha256/{}", &md[7..]), &m);
        add(
            &mut b,
            "blobs/sha256/aa",
            &vec![0u8; (SMALL_BLOB + 1) as usize],
        );
        add(&mut b, &format!("blobs/sha256/{}", &id[7..]), &index);
        let save = b.into_inner().unwrap();
        assert_eq!(
            manifest_from_save(&save[..], &id, "linux", "amd64").unwrap(),
            m
        );
        // By the manifest's own digest; an unknown one is an error naming it.
        assert_eq!(
            manifest_from_save(&save[..], &md, "linux", "amd64").unwrap(),
            m
        );
        let err = manifest_from_save(&save[..], "sha256:ff", "linux", "amd64").unwrap_err();
        assert!(err.to_string().contains("sha256:ff"), "{err}");
    }

    #[test]
    fn ids_translate_config_digests_and_know_parent_blobs_across_handles() {
        let dir = tempfile::tempdir().unwrap();
        let gz = "application/vnd.docker.image.rootfs.diff.tar.gzip";
        let m = manifest(
            "sha256:cfg",
            &[(gz, "sha256:blob1", 7), (OCI_LAYER, "sha256:d2", 9)],
        );
        let id = sha256(&m);
        let diff_ids = vec!["sha256:d1".to_string(), "sha256:d2".to_string()];
        let ids = Ids::new(Some(dir.path().to_path_buf()));
        assert_eq!(ids.handle("sha256:cfg"), "sha256:cfg");
        ids.learn(&id, &m, &diff_ids).unwrap();
        assert_eq!(ids.handle("sha256:cfg"), id);
        assert_eq!(ids.handle("repo:tag"), "repo:tag");
        let parents = ids.parents(&diff_ids[..1]).unwrap();
        assert_eq!(parents[0].digest, "sha256:blob1");
        assert_eq!(parents[0].size, 7);
        assert!(ids.parents(&["sha256:nope".to_string()]).is_none());
        // Another handle (a later run) finds it in the state directory.
        let later = Ids::new(Some(dir.path().to_path_buf()));
        assert_eq!(
            later.known(&id, &diff_ids).unwrap().config.digest,
            "sha256:cfg"
        );
        assert_eq!(later.handle("sha256:cfg"), id);
        // A manifest of uncompressed layers is not a registry's.
        assert!(!registry_like(&parse_manifest(&m).unwrap()));
        let pulled = manifest("sha256:cfg", &[(gz, "sha256:blob1", 7)]);
        assert!(registry_like(&parse_manifest(&pulled).unwrap()));
    }
}
