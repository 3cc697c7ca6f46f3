//! The architecture an image taken from a registry records, checked against
//! the platform it was taken for: a platform's base named by an index entry
//! (the index's `platform` is a claim; the image's config says what it is),
//! and a platform's result or layers found in the result's registry instead
//! of built. [`super::check_architecture`] checks what the engine holds.

use std::path::Path;

use super::Platform;
use crate::build::Remote;
use crate::error::{Error, Result};
use crate::registry::Manifests;
use crate::report::{CacheOutcome, Report};

/// The image `reference` (a digest) in `registry` records `platform` in its
/// config (OS, architecture, and variant when the platform names one);
/// `what` names it in the refusal. A reference the registry does not have
/// as an image manifest (absent, or an index) is not checked here.
pub async fn check_registry_image<R: Manifests>(
    registry: &R,
    platform: &Platform,
    (reference, what): (&str, &str),
    scratch: &Path,
) -> Result<()> {
    let Some(manifest) = registry.manifest(reference).await? else {
        return Ok(());
    };
    let Ok(parsed) = serde_json::from_slice::<serde_json::Value>(&manifest.bytes) else {
        return Ok(());
    };
    if parsed["config"]["digest"].as_str().is_none() {
        return Ok(());
    }
    let (os, arch, variant) = super::config_platform(registry, &parsed, scratch).await?;
    if platform.matches(&os, &arch, variant.as_deref()) {
        return Ok(());
    }
    let recorded = match &variant {
        Some(v) => format!("{os}/{arch}/{v}"),
        None => format!("{os}/{arch}"),
    };
    Err(Error::PlatformRefused {
        platform: platform.name(),
        input: format!("{what} ({}/{}@{})", registry.host(), registry.path(), manifest.digest),
        reason: format!("its image config in the registry records {recorded}"),
        hint: format!(
            "the image was made for another platform than its index or tag says: push a {} image there (or name one that is), then run again; nothing was built for {}",
            platform.name(),
            platform.name()
        ),
    })
}

/// Each platform's base, named by `bases` in `registry`, records its platform.
pub async fn check_bases<R: Manifests>(
    registry: &R,
    platforms: &[Platform],
    bases: &[super::PlatformBase],
    scratch: &Path,
) -> Result<()> {
    for (p, b) in platforms.iter().zip(bases) {
        let what = format!("base {}", b.reference);
        check_registry_image(registry, p, (&b.digest, &what), scratch).await?;
    }
    Ok(())
}

/// A platform's result that came (in whole or in part) from the result's
/// registry (`remote`): its pushed manifest's config records the platform.
pub async fn check_result<R: Manifests>(
    remote: &dyn Fn() -> Result<Option<Remote<R>>>,
    platform: &Platform,
    report: &Report,
    scratch: &Path,
) -> Result<()> {
    let from_registry = report
        .layers
        .iter()
        .any(|l| l.cache == CacheOutcome::Registry);
    let (Some(digest), true) = (&report.digest, from_registry) else {
        return Ok(());
    };
    let Some(remote) = remote()? else {
        return Ok(());
    };
    let what = "the result found in the registry";
    check_registry_image(&remote.registry, platform, (digest, what), scratch).await
}
