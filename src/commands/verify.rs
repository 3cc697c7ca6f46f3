//! `prebuilder verify IMAGE`: whether a pushed image's layers, record and
//! attached provenance and SBOMs agree (`crate::attest::verify` judges).
//! Read from the registry without pulling; the verdict goes to stdout and
//! a disagreement is exit status 1, as GNU diff's.

use crate::attest::{attach, image, verify::Verdict, Kind};
use crate::cli::VerifyArgs;
use crate::error::{Error, Result};
use crate::registry::{self, ImageRef, Manifests, Registry};

pub async fn run(args: &VerifyArgs) -> Result<Verdict> {
    let image = ImageRef::parse(&args.image);
    if !image.repository.explicit {
        return Err(Error::Usage {
            message: format!(
                "{} names no registry: verify reads the image and its attestations from one",
                args.image
            ),
            hint: "name the pushed image with its registry, e.g. localhost:5000/team/sdk@sha256:…"
                .into(),
        });
    }
    let repo = image.repository.clone();
    let registry = Registry::new(repo.clone(), registry::credentials(&repo)?)?;
    let scratch = tempfile::tempdir().map_err(|source| Error::Local {
        action: "creating a temporary directory".into(),
        source,
    })?;
    judge(
        &registry,
        &image.written,
        image.tag_or_digest(),
        scratch.path(),
    )
    .await
}

/// Read `reference` of `repository` from `registry` with its top layer and
/// its attachments, and judge.
pub async fn judge<R: Manifests>(
    registry: &R,
    repository: &str,
    reference: &str,
    scratch: &std::path::Path,
) -> Result<Verdict> {
    let fetched = image::from_registry(registry, repository, reference, scratch, true).await?;
    let digest = fetched.manifest.digest.clone();
    let provenance = attach::fetch(registry, &digest, Kind::Provenance, scratch).await?;
    let mut sboms = Vec::new();
    for kind in [Kind::Spdx, Kind::CycloneDx] {
        if let Some(bytes) = attach::fetch(registry, &digest, kind, scratch).await? {
            sboms.push((kind, bytes));
        }
    }
    Ok(crate::attest::verify::verify(
        repository,
        &fetched,
        provenance.as_deref(),
        &sboms,
    ))
}

/// The exit status: a disagreement is [`Error::Disagree`] (1).
pub fn verdict(v: &Verdict) -> Result<()> {
    if v.agree {
        Ok(())
    } else {
        Err(Error::Disagree {
            image: format!("{}@{}", v.image, v.digest),
            failed: v.failed(),
        })
    }
}
