//! OCI 1.1 referrers: documents attached to an image by digest without
//! changing it. A referrer is an image manifest with an `artifactType`, the
//! empty config (`application/vnd.oci.empty.v1+json`, the two bytes `{}`),
//! the document as its one layer, and a `subject` naming the image. (The
//! final OCI 1.1 dropped the separate artifact manifest type.)
//!
//! A registry with the referrers API indexes a referrer when it is put (it
//! answers with an `OCI-Subject` header) and lists them at
//! `GET /v2/<name>/referrers/<digest>`. One without it (Debian's
//! docker-registry, distribution 2.8: 404 there) gets the referrers tag
//! schema: the tag `sha256-<hex>` of the subject holds an image index of its
//! referrers, which each writer reads, extends and puts back, then reads
//! again until its entry is there, so racing runners never drop each
//! other's entries (two runners of the same inputs attach the same bytes,
//! so the same entries, anyway).

use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{Manifests, RawManifest, Registry};
use crate::error::{Error, Result};

pub const EMPTY_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// The empty config's bytes.
pub const EMPTY_CONFIG: &[u8] = b"{}";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// How often a writer of the referrers tag tries before giving up.
const TAG_ATTEMPTS: usize = 8;
/// How long a writer waits after its put before reading the tag back, so a
/// racing writer's put (made from an older read) lands before the check.
#[cfg(not(test))]
const SETTLE: Duration = Duration::from_millis(150);
#[cfg(test)]
const SETTLE: Duration = Duration::ZERO;

/// A manifest as a descriptor names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    /// A referrer's `artifactType`.
    pub artifact_type: Option<String>,
}

impl Descriptor {
    pub fn of(manifest: &RawManifest, artifact_type: Option<&str>) -> Descriptor {
        Descriptor {
            media_type: manifest.media_type.clone(),
            digest: manifest.digest.clone(),
            size: manifest.bytes.len() as u64,
            artifact_type: artifact_type.map(str::to_string),
        }
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        });
        if let Some(t) = &self.artifact_type {
            v["artifactType"] = json!(t);
        }
        v
    }

    fn from_json(v: &Value) -> Option<Descriptor> {
        Some(Descriptor {
            media_type: v["mediaType"].as_str().unwrap_or(OCI_MANIFEST).to_string(),
            digest: v["digest"].as_str()?.to_string(),
            size: v["size"].as_u64().unwrap_or(0),
            artifact_type: v["artifactType"].as_str().map(str::to_string),
        })
    }
}

/// The digest of the empty config.
pub fn empty_config_digest() -> String {
    sha256(EMPTY_CONFIG)
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The referrer manifest of `document` (one layer of type `artifact_type`,
/// titled `title`: the file name `oras pull` saves it under) about
/// `subject`; `annotations` go on the manifest (e.g. its date).
pub fn artifact_manifest(
    artifact_type: &str,
    subject: &Descriptor,
    (document, title): (&[u8], &str),
    annotations: &[(&str, &str)],
) -> RawManifest {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {
            "mediaType": EMPTY_CONFIG_MEDIA_TYPE,
            "digest": empty_config_digest(),
            "size": EMPTY_CONFIG.len(),
        },
        "layers": [{
            "mediaType": artifact_type,
            "digest": sha256(document),
            "size": document.len(),
            "annotations": {"org.opencontainers.image.title": title},
        }],
        "subject": {
            "mediaType": subject.media_type,
            "digest": subject.digest,
            "size": subject.size,
        },
    });
    if !annotations.is_empty() {
        m["annotations"] = Value::Object(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect(),
        );
    }
    let bytes = serde_json::to_vec(&m).unwrap_or_default();
    RawManifest {
        media_type: OCI_MANIFEST.into(),
        digest: sha256(&bytes),
        bytes,
    }
}

/// What a referrer manifest says: its artifact type, subject and document
/// blob (`None` for anything else).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    pub artifact_type: String,
    pub subject: String,
    pub blob: String,
    pub blob_size: u64,
}

pub fn read_referrer(bytes: &[u8]) -> Option<Referrer> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    let layer = v["layers"].as_array()?.first()?;
    Some(Referrer {
        artifact_type: v["artifactType"]
            .as_str()
            .or_else(|| v["config"]["mediaType"].as_str())?
            .to_string(),
        subject: v["subject"]["digest"].as_str()?.to_string(),
        blob: layer["digest"].as_str()?.to_string(),
        blob_size: layer["size"].as_u64().unwrap_or(0),
    })
}

/// The referrers tag of a subject: `sha256-<hex>`.
pub fn tag_of(subject: &str) -> String {
    subject.replacen(':', "-", 1)
}

/// The referrers of `subject`: from the registry's referrers API, else
/// from the referrers tag.
pub async fn list<R: Manifests>(registry: &R, subject: &str) -> Result<Vec<Descriptor>> {
    if let Some(found) = registry.referrers(subject).await? {
        return Ok(found);
    }
    read_tag(registry, subject).await
}

async fn read_tag<R: Manifests>(registry: &R, subject: &str) -> Result<Vec<Descriptor>> {
    Ok(match registry.manifest(&tag_of(subject)).await? {
        Some(index) => index_entries(&index.bytes)
            .iter()
            .filter_map(Descriptor::from_json)
            .collect(),
        None => Vec::new(),
    })
}

/// The `manifests` of an index, as written (other writers' fields kept).
fn index_entries(bytes: &[u8]) -> Vec<Value> {
    serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|v| v["manifests"].as_array().cloned())
        .unwrap_or_default()
}

/// Put `manifests`, referrers of `subject` (each with its artifact type;
/// their config and layer blobs already in the registry), and make them
/// listed: by the registry itself, else in the referrers tag, in one update.
pub async fn attach<R: Manifests>(
    registry: &R,
    subject: &str,
    manifests: &[(&RawManifest, &str)],
) -> Result<()> {
    let mut unlisted = Vec::new();
    for (manifest, artifact_type) in manifests {
        if !registry.put_referrer(manifest).await? {
            unlisted.push(Descriptor::of(manifest, Some(artifact_type)));
        }
    }
    if unlisted.is_empty() {
        return Ok(());
    }
    let tag = tag_of(subject);
    let listed = |entries: &[Value], d: &Descriptor| {
        entries
            .iter()
            .any(|e| e["digest"].as_str() == Some(d.digest.as_str()))
    };
    for _ in 0..TAG_ATTEMPTS {
        let current = registry.manifest(&tag).await?;
        let mut entries = current
            .as_ref()
            .map(|m| index_entries(&m.bytes))
            .unwrap_or_default();
        let missing: Vec<&Descriptor> = unlisted.iter().filter(|d| !listed(&entries, d)).collect();
        if !missing.is_empty() {
            entries.extend(missing.iter().map(|d| d.to_json()));
            let bytes = serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": entries,
            }))
            .unwrap_or_default();
            let index = RawManifest {
                media_type: OCI_INDEX.into(),
                digest: sha256(&bytes),
                bytes,
            };
            registry.put_manifest(&tag, &index).await?;
            tokio::time::sleep(SETTLE).await;
        }
        // Read back: a writer that read before this put may have put its
        // own list over it.
        let after = registry.manifest(&tag).await?;
        if after.is_some_and(|m| {
            let entries = index_entries(&m.bytes);
            unlisted.iter().all(|d| listed(&entries, d))
        }) {
            return Ok(());
        }
    }
    Err(Error::Registry {
        registry: registry.host().to_string(),
        action: format!(
            "listing the referrers of {subject} in the tag {}:{tag}",
            registry.path()
        ),
        source: format!("other writers kept replacing the tag ({TAG_ATTEMPTS} attempts)").into(),
    })
}

impl Registry {
    /// `GET /v2/<path>/referrers/<digest>`: the referrers the registry
    /// indexed; `None` when it has no referrers API (404).
    pub async fn referrers(&self, subject: &str) -> Result<Option<Vec<Descriptor>>> {
        let url = format!(
            "{}/v2/{}/referrers/{subject}",
            self.repo.api_base(),
            self.repo.path
        );
        let resp = self
            .send_authed(
                |auth| {
                    let req = self.http.get(&url).header(ACCEPT, OCI_INDEX);
                    match auth {
                        Some(a) => req.header(AUTHORIZATION, a),
                        None => req,
                    }
                },
                "pull",
            )
            .await?;
        let action = || format!("listing the referrers of {}@{subject}", self.repo.path);
        match resp.status() {
            s if s.is_success() => {
                let bytes = resp.bytes().await.map_err(|e| self.unreachable(e))?;
                Ok(Some(
                    index_entries(&bytes)
                        .iter()
                        .filter_map(Descriptor::from_json)
                        .collect(),
                ))
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.failure(resp, action()).await),
        }
    }

    /// `PUT` a referrer manifest by its digest: `true` when the registry
    /// indexed it itself (it answered with `OCI-Subject`).
    pub async fn put_referrer(&self, manifest: &RawManifest) -> Result<bool> {
        let url = format!(
            "{}/v2/{}/manifests/{}",
            self.repo.api_base(),
            self.repo.path,
            manifest.digest
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
            s if s.is_success() => Ok(resp.headers().contains_key("oci-subject")),
            _ => Err(self
                .failure(
                    resp,
                    format!(
                        "putting the referrer {}@{}",
                        self.repo.path, manifest.digest
                    ),
                )
                .await),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject() -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: format!("sha256:{}", "a".repeat(64)),
            size: 1234,
            artifact_type: None,
        }
    }

    #[test]
    fn a_referrer_is_an_image_manifest_with_the_empty_config_and_a_subject() {
        let doc = br#"{"spdxVersion": "SPDX-2.3"}"#;
        let m = artifact_manifest(
            "application/spdx+json",
            &subject(),
            (doc, "sbom.spdx.json"),
            &[("org.opencontainers.image.created", "2024-05-01T12:00:00Z")],
        );
        let v: Value = serde_json::from_slice(&m.bytes).unwrap();
        assert_eq!(v["mediaType"], OCI_MANIFEST);
        assert_eq!(v["artifactType"], "application/spdx+json");
        assert_eq!(v["config"]["mediaType"], EMPTY_CONFIG_MEDIA_TYPE);
        assert_eq!(
            v["config"]["digest"],
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
            "the OCI spec's empty descriptor"
        );
        assert_eq!(v["config"]["size"], 2);
        assert_eq!(v["layers"][0]["digest"], sha256(doc));
        assert_eq!(v["layers"][0]["size"], doc.len());
        assert_eq!(
            v["layers"][0]["annotations"]["org.opencontainers.image.title"],
            "sbom.spdx.json"
        );
        assert_eq!(v["subject"]["digest"], subject().digest);
        assert_eq!(v["subject"]["size"], 1234);
        assert_eq!(m.digest, sha256(&m.bytes));
        let r = read_referrer(&m.bytes).unwrap();
        assert_eq!(r.artifact_type, "application/spdx+json");
        assert_eq!(r.subject, subject().digest);
        assert_eq!(r.blob, sha256(doc));
        // Same inputs, same bytes.
        assert_eq!(
            m.bytes,
            artifact_manifest(
                "application/spdx+json",
                &subject(),
                (doc, "sbom.spdx.json"),
                &[("org.opencontainers.image.created", "2024-05-01T12:00:00Z")]
            )
            .bytes
        );
    }

    #[test]
    fn the_referrers_tag_names_the_subject() {
        assert_eq!(tag_of("sha256:abc"), "sha256-abc");
        assert!(read_referrer(b"{}").is_none());
        let d = Descriptor::from_json(&json!({"digest": "sha256:x", "artifactType": "t"})).unwrap();
        assert_eq!(d.media_type, OCI_MANIFEST);
        assert_eq!(d.artifact_type.as_deref(), Some("t"));
    }
}
