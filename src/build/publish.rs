//! `--push`: the result's content tag, then every `--tag`, through the engine
//! (which holds the layers); digests are read from the registry itself.

use super::{Options, Remote};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::progress::{Event, Reporter};
use crate::registry::Manifests;

/// Before any work: refuse what the push would have to refuse after the
/// build, so a refusal costs nothing and leaves the registry as it was.
/// - `--no-cache` when the registry holds the content tag: the rebuild
///   would move a content tag ([`Error::ContentTagTaken`]);
/// - a `--tag` the registry holds for other content than the result's
///   content tag ([`Error::TagConflict`]), unless `--replace-tags`.
///
/// The push re-checks both (another run may push in between).
pub async fn preflight<R: Manifests>(remote: &Remote<R>, opts: &Options, tag: &str) -> Result<()> {
    let registry = &remote.registry;
    let repo = &opts.repository;
    let content = registry.manifest_digest(tag).await?;
    if let (true, Some(digest)) = (opts.no_cache, &content) {
        return Err(Error::ContentTagTaken {
            reference: format!("{repo}:{tag}"),
            digest: digest.clone(),
        });
    }
    if opts.replace_tags {
        return Ok(());
    }
    for t in &opts.tags {
        if let Some(existing) = registry.manifest_digest(t).await? {
            // Without the content tag the result's digest is not known yet:
            // any content under `t` is other content.
            if content.as_deref() != Some(existing.as_str()) {
                return Err(Error::TagConflict {
                    reference: format!("{repo}:{t}"),
                    existing,
                });
            }
        }
    }
    Ok(())
}

/// Push the result's content tag (unless the registry already holds that
/// key, built elsewhere from the same inputs: a content tag never moves),
/// read the registry's digest, then push every `--tag`, refusing to move one
/// that points elsewhere (unless `--replace-tags`). The content tag goes
/// first, so a failure on an extra tag leaves every tag in the registry on
/// a correct image for its name. The registry's digest of the result.
pub async fn push<E: Engine, R: Manifests>(
    engine: &E,
    opts: &Options,
    remote: &Remote<R>,
    tag: &str,
    reporter: &dyn Reporter,
) -> Result<String> {
    let repo = &opts.repository;
    let registry = &remote.registry;
    let existing = registry.manifest_digest(tag).await?;
    let digest = match existing {
        Some(d) if opts.no_cache => {
            return Err(Error::ContentTagTaken {
                reference: format!("{repo}:{tag}"),
                digest: d,
            })
        }
        Some(d) => {
            reporter.event(Event::AlreadyPushed {
                reference: &format!("{repo}:{tag}"),
                digest: &d,
            });
            d
        }
        _ => {
            push_one(engine, remote, repo, tag, reporter).await?;
            registry
                .manifest_digest(tag)
                .await?
                .ok_or_else(|| Error::Registry {
                    registry: registry.host().to_string(),
                    action: format!("reading the digest of {repo}:{tag}"),
                    reason: "the tag is missing right after the push".into(),
                })?
        }
    };
    for t in &opts.tags {
        let reference = format!("{repo}:{t}");
        match registry.manifest_digest(t).await? {
            Some(other) if other != digest && !opts.replace_tags => {
                return Err(Error::TagConflict {
                    reference,
                    existing: other,
                })
            }
            Some(other) if other != digest => reporter.event(Event::MovingTag {
                reference: &reference,
                from: &other,
                to: &digest,
            }),
            _ => {}
        }
        push_one(engine, remote, repo, t, reporter).await?;
    }
    Ok(digest)
}

/// One `docker push`, its per-layer milestones as events (byte progress and
/// repeats left out: they would flood stderr).
pub(super) async fn push_one<E: Engine, R>(
    engine: &E,
    remote: &Remote<R>,
    repo: &str,
    tag: &str,
    reporter: &dyn Reporter,
) -> Result<()> {
    let reference = format!("{repo}:{tag}");
    reporter.event(Event::Pushing {
        reference: &reference,
    });
    let mut last = String::new();
    let mut status = |s: &str| {
        if s != last && !s.starts_with("Pushing") && !s.starts_with("Waiting") {
            reporter.event(Event::PushStatus {
                reference: &reference,
                status: s,
            });
        }
        last = s.to_string();
    };
    engine
        .push(repo, tag, remote.credential.as_ref(), &mut status)
        .await
}
