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

impl Registry {
    /// Send a request built by `build` (given an Authorization value or
    /// none): Basic credentials first, a bearer token with `actions` when the
    /// registry asks for one.
    async fn send_authed(
        &self,
        build: impl Fn(Option<String>) -> RequestBuilder,
        actions: &str,
    ) -> Result<Response> {
        let mut resp = build(self.basic_auth())
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            if let Some(token) = self.bearer_token(resp.headers(), actions).await? {
                resp = build(Some(format!("Bearer {token}")))
                    .send()
                    .await
                    .map_err(|e| self.unreachable(e))?;
            }
        }
        Ok(resp)
    }

    fn status_err(&self, status: StatusCode, action: String) -> Error {
        match status {
            StatusCode::UNAUTHORIZED => Error::RegistryUnauthorized {
                registry: self.repo.registry.clone(),
                with_credentials: self.credential.is_some(),
            },
            StatusCode::FORBIDDEN => Error::RegistryDenied {
                registry: self.repo.registry.clone(),
                repository: self.repo.path.clone(),
            },
            s => Error::Registry {
                registry: self.repo.registry.clone(),
                action,
                reason: format!("HTTP {s}"),
            },
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
                let bytes = resp.bytes().await.map_err(|e| Error::Registry {
                    registry: self.repo.registry.clone(),
                    action: action(),
                    reason: e.to_string(),
                })?;
                let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
                Ok(Some(RawManifest {
                    media_type,
                    bytes: bytes.to_vec(),
                    digest,
                }))
            }
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(self.status_err(s, action())),
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
            s => Err(self.status_err(
                s,
                format!("tagging {}:{tag} ({})", self.repo.path, manifest.digest),
            )),
        }
    }

    /// The image id of `reference` (a tag or digest in this repository) for
    /// this machine's platform: its config digest, read without pulling.
    /// `None` when the registry does not have it.
    pub async fn image_id(&self, reference: &str) -> Result<Option<String>> {
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
                    reason,
                },
            })? {
                Step::ImageId(id) => return Ok(Some(id)),
                Step::Manifest(digest) => current = digest,
            }
        }
        Err(Error::Registry {
            registry: self.repo.registry.clone(),
            action: format!("resolving {}:{reference}", self.repo.path),
            reason: "an index names another index".into(),
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
