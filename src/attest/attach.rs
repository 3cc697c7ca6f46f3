//! The documents attached to a pushed result as OCI 1.1 referrers (see
//! `crate::registry::referrers`): each one an artifact manifest whose
//! subject is the result's manifest, so the result's own digest never
//! changes. A kind of document the result already has (by `artifactType`)
//! is not attached again: a second push of the same inputs, or a registry
//! hit, attaches nothing.

use super::Kind;
use crate::error::Result;
use crate::registry::referrers::{self, Descriptor, EMPTY_CONFIG};
use crate::registry::{BlobBody, Manifests, RawManifest};

/// One document's referrer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub kind: Kind,
    /// The referrer manifest's digest.
    pub digest: String,
    /// It was there already (nothing was written for it).
    pub existing: bool,
}

/// The kinds of document the result `subject` has as referrers already,
/// with the referrer's digest.
pub async fn present<R: Manifests>(registry: &R, subject: &str) -> Result<Vec<(Kind, String)>> {
    let mut found: Vec<(Kind, String)> = referrers::list(registry, subject)
        .await?
        .into_iter()
        .filter_map(|d| {
            let kind = Kind::from_media_type(d.artifact_type.as_deref()?)?;
            Some((kind, d.digest))
        })
        .collect();
    found.sort();
    found.dedup_by_key(|(k, _)| *k);
    Ok(found)
}

/// Attach each of `documents` to `subject` (the result's manifest as the
/// registry has it) unless a document of its kind is attached already.
/// `date` annotates each referrer (`org.opencontainers.image.created`).
pub async fn attach<R: Manifests>(
    registry: &R,
    subject: &RawManifest,
    documents: &[(Kind, Vec<u8>)],
    date: &str,
) -> Result<Vec<Attached>> {
    let present = present(registry, &subject.digest).await?;
    let described = Descriptor::of(subject, None);
    let mut out = Vec::new();
    let mut new = Vec::new();
    let mut config_there = false;
    for (kind, bytes) in documents {
        if let Some((_, digest)) = present.iter().find(|(k, _)| k == kind) {
            out.push(Attached {
                kind: *kind,
                digest: digest.clone(),
                existing: true,
            });
            continue;
        }
        if !config_there {
            let empty = referrers::empty_config_digest();
            if !registry.blob_exists(&empty).await? {
                registry
                    .upload_blob(&empty, BlobBody::Bytes(EMPTY_CONFIG))
                    .await?;
            }
            config_there = true;
        }
        let manifest = referrers::artifact_manifest(
            kind.media_type(),
            &described,
            (bytes, kind.file_name()),
            &[("org.opencontainers.image.created", date)],
        );
        let blob = format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes))
        );
        if !registry.blob_exists(&blob).await? {
            registry.upload_blob(&blob, BlobBody::Bytes(bytes)).await?;
        }
        out.push(Attached {
            kind: *kind,
            digest: manifest.digest.clone(),
            existing: false,
        });
        new.push((manifest, kind.media_type()));
    }
    let new: Vec<(&RawManifest, &str)> = new.iter().map(|(m, t)| (m, *t)).collect();
    referrers::attach(registry, &subject.digest, &new).await?;
    Ok(out)
}

/// The document a referrer of `subject` holds, of `kind`; `None` when
/// none is attached. Its bytes as attached (the blob's digest is checked).
pub async fn fetch<R: Manifests>(
    registry: &R,
    subject: &str,
    kind: Kind,
    scratch: &std::path::Path,
) -> Result<Option<Vec<u8>>> {
    let Some((_, digest)) = present(registry, subject)
        .await?
        .into_iter()
        .find(|(k, _)| *k == kind)
    else {
        return Ok(None);
    };
    let Some(manifest) = registry.manifest(&digest).await? else {
        return Ok(None);
    };
    let Some(r) = referrers::read_referrer(&manifest.bytes) else {
        return Ok(None);
    };
    let file = tempfile::NamedTempFile::new_in(scratch)
        .map_err(|e| crate::error::Error::io(scratch, e))?;
    registry.download_blob(&r.blob, file.path()).await?;
    let bytes = std::fs::read(file.path()).map_err(|e| crate::error::Error::io(file.path(), e))?;
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fake::FakeRegistry;

    fn result(registry: &FakeRegistry) -> RawManifest {
        let bytes =
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#
                .to_vec();
        let m = RawManifest {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: format!(
                "sha256:{}",
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))
            ),
            bytes,
        };
        registry.put_raw("0123456789abcdef0123456789abcdef", m.clone());
        m
    }

    fn documents() -> Vec<(Kind, Vec<u8>)> {
        vec![
            (Kind::Spdx, b"{\"spdx\": 1}\n".to_vec()),
            (Kind::CycloneDx, b"{\"cdx\": 1}\n".to_vec()),
            (Kind::Provenance, b"{\"slsa\": 1}\n".to_vec()),
        ]
    }

    const DATE: &str = "2024-05-01T12:00:00Z";

    async fn attach_and_read_back(registry: &FakeRegistry) {
        let subject = result(registry);
        let attached = attach(registry, &subject, &documents(), DATE)
            .await
            .unwrap();
        assert_eq!(attached.len(), 3);
        assert!(attached.iter().all(|a| !a.existing));
        let dir = tempfile::tempdir().unwrap();
        for (kind, bytes) in documents() {
            let back = fetch(registry, &subject.digest, kind, dir.path())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(back, bytes, "{kind:?} byte for byte");
        }
        // Again: nothing new is written.
        let writes = registry.writes().len();
        let again = attach(registry, &subject, &documents(), DATE)
            .await
            .unwrap();
        assert!(again.iter().all(|a| a.existing), "{again:?}");
        assert_eq!(
            again.iter().map(|a| &a.digest).collect::<Vec<_>>(),
            attached.iter().map(|a| &a.digest).collect::<Vec<_>>()
        );
        assert_eq!(registry.writes().len(), writes, "{:?}", registry.writes());
        // The result itself is untouched.
        assert_eq!(
            registry.get("0123456789abcdef0123456789abcdef").as_deref(),
            Some(subject.digest.as_str())
        );
    }

    #[tokio::test]
    async fn without_the_referrers_api_the_tag_schema_lists_them() {
        let registry = FakeRegistry::new("localhost:5000");
        attach_and_read_back(&registry).await;
        let subject = result(&registry);
        let tag = referrers::tag_of(&subject.digest);
        let index = registry.stored(&tag).expect("the referrers tag");
        let v: serde_json::Value = serde_json::from_slice(&index.bytes).unwrap();
        assert_eq!(v["mediaType"], "application/vnd.oci.image.index.v1+json");
        let types: Vec<&str> = v["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["artifactType"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            [
                "application/spdx+json",
                "application/vnd.cyclonedx+json",
                "application/vnd.in-toto+json"
            ]
        );
    }

    #[tokio::test]
    async fn with_the_referrers_api_no_tag_is_written() {
        let registry = FakeRegistry::new("localhost:5000").with_referrers_api();
        attach_and_read_back(&registry).await;
        assert!(
            !registry.writes().iter().any(|w| w.starts_with("tag ")),
            "{:?}",
            registry.writes()
        );
    }

    /// Another runner read the tag before this one's put and put its own
    /// list over it: this one reads back, misses its entry and puts it
    /// again, keeping the other's.
    #[tokio::test]
    async fn a_racing_writer_never_drops_an_entry() {
        let registry = FakeRegistry::new("localhost:5000");
        let subject = result(&registry);
        let other = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:0the0r","size":9,"artifactType":"application/vnd.dev.cosign.artifact.sig.v1+json"}]}"#.to_vec();
        registry.race_next_referrers_put(RawManifest {
            media_type: "application/vnd.oci.image.index.v1+json".into(),
            digest: "sha256:racing".into(),
            bytes: other,
        });
        let attached = attach(&registry, &subject, &documents()[..1], DATE)
            .await
            .unwrap();
        let listed = referrers::list(&registry, &subject.digest).await.unwrap();
        let digests: Vec<&str> = listed.iter().map(|d| d.digest.as_str()).collect();
        assert!(digests.contains(&"sha256:0the0r"), "{digests:?}");
        assert!(
            digests.contains(&attached[0].digest.as_str()),
            "{digests:?}"
        );
        let tag_puts = registry
            .writes()
            .iter()
            .filter(|w| w.starts_with("tag "))
            .count();
        assert_eq!(tag_puts, 2, "put, overwritten, put again");
    }
}
