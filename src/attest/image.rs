//! The result image as the documents describe it ([`Described`]), read from
//! the engine (a result built here) or from a registry (a registry hit, where
//! nothing was pulled, and `prebuilder sbom`/`verify` of a pushed image):
//! the manifest, the config (labels, `created`, diff ids) and the record, from
//! the config's label when it holds everything, else from the top layer,
//! which carries the record file (`crate::record::RECORD_FILE`).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::Facts;
use crate::engine::{Engine, ImageInfo};
use crate::error::{Error, Result};
use crate::record::{Record, LABEL_RECORD, RECORD_FILE};
use crate::registry::{image_layers, ImageLayers, LayerBlob, Manifests, RawManifest};

/// What the documents are made of.
#[derive(Debug, Clone)]
pub struct Described {
    pub repository: String,
    /// The registry's manifest digest, or the image id when not pushed.
    pub digest: String,
    pub image_id: String,
    pub created: String,
    pub labels: BTreeMap<String, String>,
    pub record: Record,
}

impl Described {
    pub fn facts(&self) -> Facts<'_> {
        Facts {
            repository: &self.repository,
            digest: &self.digest,
            image_id: &self.image_id,
            created: &self.created,
            record: &self.record,
            labels: &self.labels,
        }
    }

    /// From an image on the engine (`info`) and its complete record.
    pub fn local(info: &ImageInfo, record: Record, repository: &str, digest: Option<&str>) -> Self {
        Described {
            repository: repository.to_string(),
            digest: digest.unwrap_or(&info.id).to_string(),
            image_id: info.id.clone(),
            created: info.created.clone().unwrap_or_default(),
            labels: info.labels.clone(),
            record,
        }
    }
}

/// An image on the engine, described.
pub async fn from_engine<E: Engine>(
    engine: &E,
    image: &str,
    repository: &str,
    digest: Option<&str>,
) -> Result<Described> {
    let (info, record) = crate::record::load_complete(engine, image).await?;
    Ok(Described::local(&info, record, repository, digest))
}

/// An image in a registry, as `verify` checks it.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub described: Described,
    pub manifest: RawManifest,
    pub layers: ImageLayers,
    /// The config's `rootfs.diff_ids`.
    pub diff_ids: Vec<String>,
    /// The record in the config's label, as it parsed.
    pub label: Option<std::result::Result<Record, String>>,
    /// What the top layer held, when it was read.
    pub top: Option<TopLayer>,
}

/// The top layer, read through.
#[derive(Debug, Clone)]
pub struct TopLayer {
    /// The sha256 of its uncompressed tar: what the config's last diff id
    /// must be.
    pub diff_id: String,
    /// The record file in it.
    pub record: Option<Vec<u8>>,
}

/// Read `reference` (a tag or digest of `registry`'s repository) without
/// pulling it: manifest, config, and the top layer when the record's label
/// does not hold everything or `read_top` asks for it. Temporary files go
/// under `scratch`.
pub async fn from_registry<R: Manifests>(
    registry: &R,
    repository: &str,
    reference: &str,
    scratch: &Path,
    read_top: bool,
) -> Result<Fetched> {
    let image = format!("{repository}@{reference}");
    let bad = |reason: String| Error::Registry {
        registry: registry.host().to_string(),
        action: format!("reading {image}"),
        source: reason.into(),
    };
    let top = registry
        .manifest(reference)
        .await?
        .ok_or_else(|| bad("the registry has no such manifest".into()))?;
    // A multi-platform result is an index: this platform's image in it is
    // read, and is the subject its documents are attached to (each
    // platform's build attaches its own).
    let (manifest, layers) = match image_layers(&top.bytes) {
        Some(l) => (top, l),
        None => registry
            .image_manifest(&top.digest)
            .await?
            .and_then(|m| image_layers(&m.bytes).map(|l| (m, l)))
            .ok_or_else(|| {
                bad(format!(
                    "{} is not an image manifest, nor an index of one for this platform",
                    top.media_type
                ))
            })?,
    };
    let tmp = tempfile::Builder::new()
        .prefix("attest-")
        .tempdir_in(scratch)
        .map_err(|e| Error::io(scratch, e))?;
    let config_file = tmp.path().join("config.json");
    registry.download_blob(&layers.config, &config_file).await?;
    let config = std::fs::read(&config_file).map_err(|e| Error::io(&config_file, e))?;
    let c: serde_json::Value =
        serde_json::from_slice(&config).map_err(|e| bad(format!("its config is not JSON: {e}")))?;
    let (labels, diff_ids) = labels_and_diff_ids(&c);
    let label = labels.get(LABEL_RECORD).map(|l| Record::parse(l));
    let complete = matches!(&label, Some(Ok(r)) if r.is_complete());
    let top = match layers.layers.last() {
        Some(blob) if read_top || !complete => {
            Some(read_top_layer(registry, blob, tmp.path(), &image).await?)
        }
        _ => None,
    };
    let record = choose_record(&label, top.as_ref(), &image)?;
    let described = Described {
        repository: repository.to_string(),
        digest: manifest.digest.clone(),
        image_id: layers.config.clone(),
        created: c["created"].as_str().unwrap_or_default().to_string(),
        labels,
        record,
    };
    Ok(Fetched {
        described,
        manifest,
        layers,
        diff_ids,
        label,
        top,
    })
}

/// The config's labels and its layers' diff ids (empty where absent).
fn labels_and_diff_ids(config: &serde_json::Value) -> (BTreeMap<String, String>, Vec<String>) {
    let labels = config["config"]["Labels"]
        .as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let diff_ids = config["rootfs"]["diff_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    (labels, diff_ids)
}

/// Download the top layer's blob into `dir` and read it through.
async fn read_top_layer<R: Manifests>(
    registry: &R,
    blob: &LayerBlob,
    dir: &Path,
    image: &str,
) -> Result<TopLayer> {
    let file = dir.join("top-layer");
    registry.download_blob(&blob.digest, &file).await?;
    let gzip = blob.media_type.ends_with("gzip");
    let path = file.clone();
    let read = tokio::task::spawn_blocking(move || read_layer(&path, gzip))
        .await
        .map_err(|source| Error::Task {
            action: format!("reading the top layer of {image}"),
            source,
        })?;
    read.map_err(|e| Error::io(&file, e))
}

/// The record: the label's when complete, else the top layer's file, else
/// the label's partial one; an error names what is missing or invalid.
fn choose_record(
    label: &Option<std::result::Result<Record, String>>,
    top: Option<&TopLayer>,
    image: &str,
) -> Result<Record> {
    let invalid = |reason: String| Error::RecordInvalid {
        image: image.to_string(),
        reason,
    };
    match (label, top.and_then(|t| t.record.as_deref())) {
        (Some(Ok(r)), _) if r.is_complete() => Ok(r.clone()),
        (_, Some(file)) => Record::parse(&String::from_utf8_lossy(file)).map_err(invalid),
        (Some(Ok(r)), None) => Ok(r.clone()),
        (Some(Err(reason)), None) => Err(invalid(reason.clone())),
        (None, None) => Err(Error::RecordMissing {
            image: image.to_string(),
            file: RECORD_FILE,
        }),
    }
}

/// Read a layer blob through: the digest of its tar and the record file in
/// it. Blocking.
fn read_layer(path: &Path, gzip: bool) -> std::io::Result<TopLayer> {
    let file = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let raw: Box<dyn Read> = if gzip {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut hashing = Hashing {
        inner: raw,
        hasher: Sha256::new(),
    };
    let mut record = None;
    {
        let mut archive = tar::Archive::new(&mut hashing);
        let want = RECORD_FILE.trim_start_matches('/');
        for entry in archive.entries()? {
            let mut entry = entry?;
            let path = entry.path()?.to_string_lossy().into_owned();
            if path.trim_start_matches("./") == want {
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes)?;
                record = Some(bytes);
            }
        }
    }
    // The tar's end-of-archive blocks and padding count too.
    std::io::copy(&mut hashing, &mut std::io::sink())?;
    Ok(TopLayer {
        diff_id: format!("sha256:{}", hex::encode(hashing.hasher.finalize())),
        record,
    })
}

struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_is_read_through_for_its_digest_and_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        for (name, body) in [
            ("./opt/apache/beam/x.txt", &b"x"[..]),
            (
                "./opt/apache/beam/prebuilder-record.json",
                &b"{\"format\":2}"[..],
            ),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, name, body).unwrap();
        }
        let bytes = tar.into_inner().unwrap();
        let want = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        let plain = dir.path().join("plain");
        std::fs::write(&plain, &bytes).unwrap();
        let top = read_layer(&plain, false).unwrap();
        assert_eq!(top.diff_id, want);
        assert_eq!(top.record.as_deref(), Some(&b"{\"format\":2}"[..]));
        let gz = dir.path().join("gz");
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut e, &bytes).unwrap();
        std::fs::write(&gz, e.finish().unwrap()).unwrap();
        let top = read_layer(&gz, true).unwrap();
        assert_eq!(top.diff_id, want, "the digest of the uncompressed tar");
    }
}
