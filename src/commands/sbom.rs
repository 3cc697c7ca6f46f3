//! `prebuilder sbom IMAGE`: the SBOM attached to a pushed image (an OCI
//! referrer, see `crate::attest`), or, for an image on the engine, one made
//! from its record. The document's bytes go to stdout as they are.

use crate::attest::{attach, image::Described, provenance::Invocation, Kind};
use crate::cli::{SbomArgs, SbomFormatArg};
use crate::engine::{DockerEngine, Engine};
use crate::error::{Error, Result};
use crate::registry::{self, ImageRef, Manifests, Registry};
use crate::settings::Settings;

pub async fn run(args: &SbomArgs, settings: &Settings) -> Result<Vec<u8>> {
    let kind = kind(args.format);
    let image = ImageRef::parse(&args.image);
    if image.repository.explicit {
        let repo = image.repository.clone();
        let credential = registry::credentials(&settings.docker_config_dir(), &repo)?;
        let registry = Registry::new(repo.clone(), credential)?;
        let scratch = scratch()?;
        if let Some(doc) = attached(&registry, image.tag_or_digest(), kind, scratch.path()).await? {
            return Ok(doc);
        }
    }
    let engine = DockerEngine::connect(settings).await?;
    let on_engine = engine.inspect(&args.image).await?.is_some();
    if !on_engine {
        return Err(Error::SbomMissing {
            image: args.image.clone(),
            format: kind.name(),
            on_engine,
        });
    }
    let out = local(&engine, &args.image, kind).await;
    engine.remove_leftovers().await;
    out
}

fn kind(format: SbomFormatArg) -> Kind {
    match format {
        SbomFormatArg::Spdx => Kind::Spdx,
        SbomFormatArg::Cyclonedx => Kind::CycloneDx,
    }
}

fn scratch() -> Result<tempfile::TempDir> {
    tempfile::tempdir().map_err(|source| Error::Local {
        action: "creating a temporary directory".into(),
        source,
    })
}

/// The `kind` document attached to `reference` (a tag or digest) in
/// `registry`; `None` when the image or the document is not there.
pub async fn attached<R: Manifests>(
    registry: &R,
    reference: &str,
    kind: Kind,
    scratch: &std::path::Path,
) -> Result<Option<Vec<u8>>> {
    let digest = if reference.starts_with("sha256:") {
        reference.to_string()
    } else {
        match registry.manifest_digest(reference).await? {
            Some(d) => d,
            None => return Ok(None),
        }
    };
    if let Some(doc) = attach::fetch(registry, &digest, kind, scratch).await? {
        return Ok(Some(doc));
    }
    // A multi-platform result (an index): this platform's image's document,
    // which its platform's build attached.
    match registry.image_manifest(&digest).await {
        Ok(Some(m)) if m.digest != digest => {
            attach::fetch(registry, &m.digest, kind, scratch).await
        }
        _ => Ok(None),
    }
}

/// The `kind` document of `image` on the engine, made from its record:
/// about its registry digest when the engine knows one for its repository,
/// else its image id.
pub async fn local<E: Engine>(engine: &E, image: &str, kind: Kind) -> Result<Vec<u8>> {
    let (info, record) = crate::record::load_complete(engine, image).await?;
    let written = ImageRef::parse(image).written;
    let repository = if written.starts_with("sha256:") || info.id.contains(&written) {
        // An image id: name it by a tag it has, if any.
        info.repo_tags
            .first()
            .map(|t| ImageRef::parse(t).written)
            .unwrap_or(written)
    } else {
        written
    };
    let digest = info.repo_digests.iter().find_map(|d| {
        d.split_once('@')
            .filter(|(r, _)| *r == repository)
            .map(|(_, d)| d.to_string())
    });
    let described = Described::local(&info, record, &repository, digest.as_deref());
    Ok(kind.make(&described.facts(), &Invocation::default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fake::FakeRegistry;

    #[tokio::test]
    async fn the_attached_document_by_tag_or_digest_and_none_when_absent() {
        let registry = FakeRegistry::new("localhost:5000");
        let bytes = br#"{"schemaVersion":2}"#.to_vec();
        let subject = crate::registry::RawManifest {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: format!(
                "sha256:{}",
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))
            ),
            bytes,
        };
        registry.put_raw("stable", subject.clone());
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            attached(&registry, "stable", Kind::Spdx, dir.path())
                .await
                .unwrap(),
            None
        );
        let doc = b"{\"spdxVersion\": \"SPDX-2.3\"}\n".to_vec();
        attach::attach(&registry, &subject, &[(Kind::Spdx, doc.clone())], "d")
            .await
            .unwrap();
        for reference in ["stable", subject.digest.as_str()] {
            assert_eq!(
                attached(&registry, reference, Kind::Spdx, dir.path())
                    .await
                    .unwrap()
                    .as_ref(),
                Some(&doc),
                "{reference}"
            );
        }
        assert_eq!(
            attached(&registry, "stable", Kind::CycloneDx, dir.path())
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            attached(&registry, "missing", Kind::Spdx, dir.path())
                .await
                .unwrap(),
            None
        );
    }
}
