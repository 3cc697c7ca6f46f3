//! The base image a build sits on (and the `--boot-from` image): found on
//! the engine, or pulled through it (`--pull missing|always|never`, docker's
//! names) with the docker CLI's credentials. Only a build that needs the base's content pulls it: cache
//! questions are answered from keys (see `ground` and `locate`), never by pulling.

use super::{Options, PullPolicy};
use crate::engine::{Engine, ImageInfo};
use crate::error::{Error, Result};
use crate::progress::{Event, Reporter};
use crate::registry::{self, ImageRef, RepositoryRef};

/// The base on the engine, pulled first as `opts.pull` says.
pub async fn ensure<E: Engine>(
    engine: &E,
    opts: &Options,
    reporter: &dyn Reporter,
) -> Result<ImageInfo> {
    let reference = &opts.base;
    if opts.pull != PullPolicy::Always {
        if let Some(found) = engine.inspect(reference).await? {
            return Ok(found);
        }
        if opts.pull == PullPolicy::Never {
            return Err(Error::BaseMissing {
                engine: String::new(),
                image: reference.clone(),
            });
        }
    }
    let absent = opts.pull != PullPolicy::Always;
    pull(engine, opts, reference, reporter)
        .await
        .map_err(|e| match e {
            Error::PullFailed {
                image,
                registry,
                credentials,
                reason,
            } if absent => Error::BaseUnavailable {
                image,
                registry,
                credentials,
                reason,
            },
            other => other,
        })?;
    pulled(engine, reference).await
}

/// The `--boot-from` image `reference` on the engine, pulled first as
/// `opts.pull` says (it is a base of the boot layer). A failed pull names
/// the image, its registry and the credentials tried.
pub async fn ensure_boot<E: Engine>(
    engine: &E,
    opts: &Options,
    reference: &str,
    reporter: &dyn Reporter,
) -> Result<ImageInfo> {
    if opts.pull != PullPolicy::Always {
        if let Some(found) = engine.inspect(reference).await? {
            return Ok(found);
        }
        if opts.pull == PullPolicy::Never {
            return Err(Error::ImageMissing {
                engine: String::new(),
                what: "--boot-from image",
                image: reference.to_string(),
            });
        }
    }
    pull(engine, opts, reference, reporter).await?;
    pulled(engine, reference).await
}

/// `reference` as the engine shows it after pulling it.
async fn pulled<E: Engine>(engine: &E, reference: &str) -> Result<ImageInfo> {
    engine
        .inspect(reference)
        .await?
        .ok_or_else(|| Error::Engine {
            engine: String::new(),
            action: format!("pulling {reference}"),
            source: "the engine does not show the image after pulling it".into(),
        })
}

/// Pull `reference` with the user's credentials for its registry, its
/// milestones as events; a failure names the reference, the registry and
/// where credentials were looked for.
pub async fn pull<E: Engine>(
    engine: &E,
    opts: &Options,
    reference: &str,
    reporter: &dyn Reporter,
) -> Result<()> {
    let image = ImageRef::parse(reference);
    let config_dir = opts.settings.docker_config_dir();
    let credential = registry::credentials(&config_dir, &image.repository)?;
    let source = credential_source(&config_dir, &image.repository, credential.is_some());
    reporter.event(Event::Pulling { reference });
    let mut last = String::new();
    let mut status = |s: &str| {
        // Milestones only: byte progress and repeats would flood stderr.
        let noisy = ["Downloading", "Extracting", "Waiting", "Verifying"]
            .iter()
            .any(|p| s.split_once(": ").map_or(s, |(_, st)| st).starts_with(p));
        if !noisy && s != last {
            reporter.event(Event::PullStatus {
                reference,
                status: s,
            });
        }
        last = s.to_string();
    };
    engine
        .pull(reference, credential.as_ref(), &mut status)
        .await
        .map_err(|e| match e {
            Error::PullFailed {
                image,
                registry,
                reason,
                ..
            } => Error::PullFailed {
                image,
                registry,
                credentials: source,
                reason,
            },
            other => other,
        })?;
    reporter.event(Event::Pulled { reference });
    Ok(())
}

/// Where the docker CLI's credentials for `repo` were looked for (the
/// `config.json` in `config_dir`). Names a file and a registry, never a secret.
pub fn credential_source(
    config_dir: &std::path::Path,
    repo: &RepositoryRef,
    found: bool,
) -> String {
    let config = config_dir.join("config.json").display().to_string();
    if found {
        format!("credentials for {} from {config}", repo.auth_key())
    } else {
        format!(
            "anonymous: no credentials for {} in {config}",
            repo.auth_key()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_sources_name_the_registry_and_file_not_secrets() {
        let repo = RepositoryRef::parse("127.0.0.1:5000/team/base");
        let dir = std::path::Path::new("/home/u/.docker");
        let found = credential_source(dir, &repo, true);
        assert!(
            found.starts_with("credentials for 127.0.0.1:5000 from "),
            "{found}"
        );
        assert!(found.ends_with("config.json"), "{found}");
        let none = credential_source(dir, &RepositoryRef::parse("apache/beam"), false);
        assert!(
            none.starts_with("anonymous: no credentials for https://index.docker.io/v1/ in "),
            "{none}"
        );
    }
}
