//! Manifests read and written through the registry API, for fresh runners:
//! - the base's image id without pulling it: the id is the digest of its
//!   config, which the manifest names (an index first picks this machine's
//!   platform), so keys can be computed and the result looked up before the
//!   engine holds anything;
//! - a `--tag` on a registry hit: the result's manifest, put again under the
//!   new tag (same bytes, same digest, nothing pulled or pushed but a manifest).

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::Registry;
use crate::error::{Error, Result};

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A manifest as the registry serves it: its bytes are what a digest covers.
#[derive(Debug, Clone)]
pub struct RawManifest {
    pub media_type: String,
    pub bytes: Vec<u8>,
    /// `sha256:` of the bytes.
    pub digest: String,
}

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    os: String,
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Deserialize)]
struct Parsed {
    #[serde(default, rename = "mediaType")]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

/// The platform images run on here, in the registry's words (`linux/amd64`).
pub fn this_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    ("linux", arch)
}

/// What an index or manifest says about the image for `platform`: the
/// digest of the manifest to read next (`Err` lists the platforms the index
/// has), or, for an image manifest, its config digest (the image id).
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Manifest(String),
    ImageId(String),
}

#[derive(Debug, PartialEq, Eq)]
enum StepError {
    /// The platforms the index has instead.
    NoPlatform(Vec<String>),
    Invalid(String),
}

fn next_step(bytes: &[u8], (os, arch): (&str, &str)) -> std::result::Result<Step, StepError> {
    let parsed: Parsed = serde_json::from_slice(bytes)
        .map_err(|e| StepError::Invalid(format!("the manifest is not JSON: {e}")))?;
    if let Some(list) = parsed.manifests {
        let mut present = Vec::new();
        for d in list {
            match d.platform {
                Some(p) if p.os == os && p.architecture == arch => {
                    return Ok(Step::Manifest(d.digest))
                }
                Some(p) => present.push(match p.variant {
                    Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                    None => format!("{}/{}", p.os, p.architecture),
                }),
                None => {}
            }
        }
        present.sort();
        present.dedup();
        return Err(StepError::NoPlatform(present));
    }
    match parsed.config {
        Some(c) => Ok(Step::ImageId(c.digest)),
        None => Err(StepError::Invalid(format!(
            "a {} manifest names no config",
            parsed
                .media_type
                .as_deref()
                .unwrap_or("schema 1 (or unknown)")
        ))),
    }
}

/// What an image manifest says of the image: its config digest (the image
/// id) and its layer blobs, bottom first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLayers {
    pub config: String,
    pub layers: Vec<LayerBlob>,
}

/// One layer blob of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

/// The layer media type prebuilder writes for its own gzip blobs.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

impl LayerBlob {
    /// The same blob as an OCI manifest names it; `None` for a kind of layer
    /// prebuilder does not reuse as is (foreign, uncompressed, unknown).
    pub fn as_oci(&self) -> Option<LayerBlob> {
        let media_type = match self.media_type.as_str() {
            DOCKER_LAYER_GZIP | OCI_LAYER_GZIP => OCI_LAYER_GZIP,
            OCI_LAYER_ZSTD => OCI_LAYER_ZSTD,
            _ => return None,
        };
        Some(LayerBlob {
            media_type: media_type.into(),
            ..self.clone()
        })
    }
}

/// The config and layers of an image manifest (Docker v2 schema 2 or OCI);
/// `None` for anything else (an index, schema 1, not JSON).
pub fn image_layers(bytes: &[u8]) -> Option<ImageLayers> {
    #[derive(Deserialize)]
    struct Desc {
        #[serde(rename = "mediaType", default)]
        media_type: String,
        digest: String,
        #[serde(default)]
        size: u64,
    }
    #[derive(Deserialize)]
    struct M {
        config: Desc,
        #[serde(default)]
        layers: Vec<Desc>,
    }
    let m: M = serde_json::from_slice(bytes).ok()?;
    Some(ImageLayers {
        config: m.config.digest,
        layers: m
            .layers
            .into_iter()
            .map(|d| LayerBlob {
                media_type: d.media_type,
                digest: d.digest,
                size: d.size,
            })
            .collect(),
    })
}

/// The OCI image manifest of a config blob and its layer blobs: the bytes
/// prebuilder puts, the same for the same image on every machine.
/// `Err` names a digest that is not one (never from prebuilder's own hashing).
pub fn oci_manifest(
    config: &[u8],
    layers: &[LayerBlob],
) -> std::result::Result<RawManifest, String> {
    use oci_spec::image::{Descriptor as OciDescriptor, ImageManifestBuilder, MediaType};
    use std::str::FromStr;
    let digest =
        |d: &str| oci_spec::image::Digest::from_str(d).map_err(|e| format!("digest {d}: {e}"));
    let config_digest = format!("sha256:{}", hex::encode(Sha256::digest(config)));
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(OciDescriptor::new(
            MediaType::ImageConfig,
            config.len() as u64,
            digest(&config_digest)?,
        ))
        .layers(
            layers
                .iter()
                .map(|l| {
                    Ok(OciDescriptor::new(
                        MediaType::from(l.media_type.as_str()),
                        l.size,
                        digest(&l.digest)?,
                    ))
                })
                .collect::<std::result::Result<Vec<_>, String>>()?,
        )
        .build()
        .map_err(|e| format!("an image manifest: {e}"))?;
    let bytes = serde_json::to_vec(&manifest).map_err(|e| format!("an image manifest: {e}"))?;
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    Ok(RawManifest {
        media_type: OCI_MANIFEST.into(),
        bytes,
        digest,
    })
}

impl Registry {
    /// Send a request built by `build` (given an Authorization value or
    /// none): Basic credentials first, a bearer token with `actions` when the
    /// registry asks for one.
    pub(super) async fn send_authed(
        &self,
        build: impl Fn(Option<String>) -> RequestBuilder,
        actions: &str,
    ) -> Result<Response> {
        let cached = self.cached_token().map(|t| format!("Bearer {t}"));
        let mut resp = build(cached.or_else(|| self.basic_auth()))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            if let Some(token) = self.bearer_token(resp.headers(), actions).await? {
                self.cache_token(&token);
                resp = build(Some(format!("Bearer {token}")))
                    .send()
                    .await
                    .map_err(|e| self.unreachable(e))?;
            }
        }
        Ok(resp)
    }

    pub(super) fn cached_token(&self) -> Option<String> {
        self.token.lock().ok().and_then(|t| t.clone())
    }

    fn cache_token(&self, token: &str) {
        if let Ok(mut t) = self.token.lock() {
            *t = Some(token.to_string());
        }
    }

    /// `GET /v2/<path>/manifests/<reference>`; `None` when absent.
    pub async fn manifest(&self, reference: &str) -> Result<Option<RawManifest>> {
        let url = format!(
            "{}/v2/{}/manifests/{reference}",
            self.repo.api_base(),
            self.repo.path
        );
        let accept = [DOCKER_MANIFEST, DOCKER_LIST, OCI_MANIFEST, OCI_INDEX].join(", ");
        let resp = self
            .send_authed(
                |auth| {
                    let req = self.http.get(&url).header(ACCEPT, &accept);
                    match auth {
                        Some(a) => req.header(AUTHORIZATION, a),
                        None => req,
                    }
                },
                "pull",
            )
            .await?;
        let action = || format!("reading the manifest {}:{reference}", self.repo.path);
        match resp.status() {
            s if s.is_success() => {
                let media_type = resp
                    .headers()
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(DOCKER_MANIFEST)
                    .to_string();
                let bytes = resp.bytes().await.map_err(|e| self.unreachable(e))?;
                let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
                Ok(Some(RawManifest {
                    media_type,
                    bytes: bytes.to_vec(),
                    digest,
                }))
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.failure(resp, action()).await),
        }
    }

    /// `PUT` a manifest under `tag` (same bytes, so the same digest).
    pub async fn put_manifest(&self, tag: &str, manifest: &RawManifest) -> Result<()> {
        let url = format!(
            "{}/v2/{}/manifests/{tag}",
            self.repo.api_base(),
            self.repo.path
        );
        let resp = self
            .send_authed(
                |auth| {
                    let req = self
                        .http
                        .put(&url)
                        .header(CONTENT_TYPE, &manifest.media_type)
                        .body(manifest.bytes.clone());
                    match auth {
                        Some(a) => req.header(AUTHORIZATION, a),
                        None => req,
                    }
                },
                "pull,push",
            )
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(()),
            _ => Err(self
                .failure(
                    resp,
                    format!("tagging {}:{tag} ({})", self.repo.path, manifest.digest),
                )
                .await),
        }
    }

    /// The image id of `reference` (a tag or digest in this repository) for
    /// this machine's platform: its config digest, read without pulling.
    /// `None` when the registry does not have it.
    pub async fn image_id(&self, reference: &str) -> Result<Option<String>> {
        Ok(self
            .image_manifest(reference)
            .await?
            .and_then(|m| image_layers(&m.bytes).map(|l| l.config)))
    }

    /// The image manifest of `reference` for this machine's platform (an
    /// index is followed to it). `None` when the registry does not have it.
    pub async fn image_manifest(&self, reference: &str) -> Result<Option<RawManifest>> {
        let platform = this_platform();
        let mut current = reference.to_string();
        // An index names a manifest, which names the config: two steps at most.
        for _ in 0..2 {
            let Some(m) = self.manifest(&current).await? else {
                return Ok(None);
            };
            match next_step(&m.bytes, platform).map_err(|e| match e {
                StepError::NoPlatform(available) => Error::PlatformMissing {
                    image: format!("{}:{reference}", self.repo.path),
                    registry: self.repo.registry.clone(),
                    platform: format!("{}/{}", platform.0, platform.1),
                    available: if available.is_empty() {
                        "no platform-specific image".into()
                    } else {
                        available.join(", ")
                    },
                },
                StepError::Invalid(reason) => Error::Registry {
                    registry: self.repo.registry.clone(),
                    action: format!("resolving {}:{reference}", self.repo.path),
                    source: reason.into(),
                },
            })? {
                Step::ImageId(_) => return Ok(Some(m)),
                Step::Manifest(digest) => current = digest,
            }
        }
        Err(Error::Registry {
            registry: self.repo.registry.clone(),
            action: format!("resolving {}:{reference}", self.repo.path),
            source: "an index names another index".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_names_its_config_and_an_index_its_platforms() {
        let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":7,"digest":"sha256:c0"},
            "layers":[]}"#;
        assert_eq!(
            next_step(manifest, ("linux", "amd64")),
            Ok(Step::ImageId("sha256:c0".into()))
        );
        let index = br#"{"schemaVersion":2,"manifests":[
            {"digest":"sha256:arm","platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
            {"digest":"sha256:amd","platform":{"os":"linux","architecture":"amd64"}},
            {"digest":"sha256:att","platform":{"os":"unknown","architecture":"unknown"}}]}"#;
        assert_eq!(
            next_step(index, ("linux", "amd64")),
            Ok(Step::Manifest("sha256:amd".into()))
        );
        assert_eq!(
            next_step(index, ("linux", "s390x")),
            Err(StepError::NoPlatform(vec![
                "linux/amd64".into(),
                "linux/arm64/v8".into(),
                "unknown/unknown".into()
            ]))
        );
        assert!(next_step(b"{}", ("linux", "amd64")).is_err());
    }
}
