//! `prebuilder verify IMAGE`: whether a pushed image's layers, record and
//! attached provenance and SBOMs agree (`crate::attest::verify` judges).
//! Read from the registry without pulling; the verdict goes to stdout and
//! a disagreement is exit status 1, as GNU diff's.

use crate::attest::verify::{self, Verdict};
use crate::cli::VerifyArgs;
use crate::error::{Error, Result};
use crate::registry::{self, ImageRef, Registry};
use crate::settings::Settings;

pub async fn run(args: &VerifyArgs, settings: &Settings) -> Result<Verdict> {
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
    let credential = registry::credentials(&settings.docker_config_dir(), &repo)?;
    let registry = Registry::new(repo.clone(), credential)?;
    let scratch = tempfile::tempdir().map_err(|source| Error::Local {
        action: "creating a temporary directory".into(),
        source,
    })?;
    verify::judge(
        &registry,
        &image.written,
        image.tag_or_digest(),
        scratch.path(),
    )
    .await
}

/// The exit status: a disagreement is [`Error::Disagree`] (1).
pub fn verdict(v: &Verdict) -> Result<()> {
    verify::verdict(v)
}
