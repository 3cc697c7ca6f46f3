//! `--platform` with no engine (`--builder direct`, or `auto` when no engine
//! answers): each platform built directly, with no container and no
//! emulation at all. Each platform's base is its manifest in the base's
//! index (addressed by digest), read from its registry; its installed set
//! (interpreter, install scheme, the wheel tags its glibc and architecture
//! support: `manylinux_*_aarch64` for arm64) is indexed as for one platform;
//! its wheels come from its own `--requirements-cache PLATFORM=DIR`; `.pyc`
//! files are compiled by this machine's interpreter of the base's minor
//! version (they do not depend on the architecture). Then, as on an engine,
//! one OCI image index over the platforms' pushed manifests.
//!
//! With no engine and no `--platform`, the base's only platform is built
//! ([`only_platform`]); a base with several is refused, listing them.

use super::{
    bases, check_set, dist_of, index_needs_push, names, put_index, wheel_fits, Job, Platform,
};
use crate::build::{Builder, Options, Remote};
use crate::engine::store::Store;
use crate::error::{Error, Result};
use crate::progress::Reporter;
use crate::registry::{ImageRef, Manifests};
use crate::report::Report;
use crate::stage::{Role, StagedSet};

/// Build every platform directly on `store` (checks first, then one build
/// each on its own base), then with two or more platforms put the image
/// index over their manifests in the result's registry.
pub async fn run<R: Manifests>(
    store: &Store,
    opts: &Options,
    jobs: &[Job<'_>],
    base_registry: &R,
    remote: &dyn Fn() -> Result<Option<Remote<R>>>,
    reporter: &dyn Reporter,
) -> Result<Report> {
    let started = std::time::Instant::now();
    let platforms: Vec<Platform> = jobs.iter().map(|j| j.platform.clone()).collect();
    index_needs_push(&platforms, opts, " (--output writes one image)")?;
    for job in jobs {
        check_set(job.set, &job.platform)?;
    }
    let bases = bases(base_registry, &opts.base, &platforms, &opts.scratch_dir).await?;
    let mut reports = Vec::new();
    for (job, base) in jobs.iter().zip(&bases) {
        let mut o = options_for(opts, &job.platform, jobs.len() > 1);
        o.base = base.reference.clone();
        o.builder = Builder::Direct;
        let report = crate::build::run(store, &o, job.set, remote, reporter).await?;
        // A result found in the registry records the platform (as on an engine).
        super::arch::check_result(remote, &job.platform, &report, &opts.scratch_dir).await?;
        reports.push(report);
    }
    put_index(opts, jobs, reports, remote, started).await
}

/// One platform's build options, on an engine or directly: the platform
/// (it enters the engine path's keys); with `several`, no extra tags (they
/// name the index, put after every platform is pushed), no `--output` (it
/// writes one image) and each platform's SBOMs and provenance in its own
/// subdirectory of `--attestations-dir` (`linux-arm64/`), not over another's.
pub(crate) fn options_for(opts: &Options, platform: &Platform, several: bool) -> Options {
    let mut o = opts.clone();
    o.platform = Some(platform.name());
    if several {
        o.tags.clear();
        o.output = None;
        if let Some(dir) = &opts.attestations.dir {
            o.attestations.dir = Some(dir.join(platform.name().replace('/', "-")));
        }
    }
    o
}

/// With no engine and no `--platform`: the platform of a base that is an
/// index with one platform (built as `--platform` that one), `None` for a
/// single image manifest (built as it is) or a base that cannot be read
/// here (the build then says why). A base with several platforms is
/// refused, listing them: no engine says which one is meant.
pub async fn only_platform<R: Manifests>(registry: &R, base: &str) -> Result<Option<Platform>> {
    let image = ImageRef::parse(base);
    let top = match registry.manifest(image.tag_or_digest()).await {
        Ok(Some(top)) => top,
        _ => return Ok(None),
    };
    let parsed: serde_json::Value = serde_json::from_slice(&top.bytes).unwrap_or_default();
    let Some(entries) = parsed["manifests"].as_array() else {
        return Ok(None);
    };
    let mut found: Vec<Platform> = Vec::new();
    for d in entries {
        let p = &d["platform"];
        let (Some(os), Some(arch)) = (p["os"].as_str(), p["architecture"].as_str()) else {
            continue;
        };
        let name = match p["variant"].as_str() {
            Some(v) => format!("{os}/{arch}/{v}"),
            None => format!("{os}/{arch}"),
        };
        // Attestation entries (`unknown/unknown`) and foreign systems are no choice.
        if let Ok(platform) = Platform::parse(&name) {
            if !found.contains(&platform) {
                found.push(platform);
            }
        }
    }
    match found.len() {
        0 => Ok(None),
        1 => Ok(Some(found.remove(0))),
        _ => Err(several_platforms(base, &found)),
    }
}

fn several_platforms(base: &str, found: &[Platform]) -> Error {
    let all = names(found);
    Error::PlatformRefused {
        platform: "no --platform".into(),
        input: format!("base {base}"),
        reason: format!(
            "no engine answers, and the base has several platforms: {}",
            all.replace(',', ", ")
        ),
        hint: format!(
            "name the platform(s) to build with --platform: one (--platform {}) or several for an image index (--platform {all} --push); or build where an engine answers (its own platform is the default)",
            found[0].name()
        ),
    }
}

/// Direct mode installs the platform's own SDK wheel (Beam's boot, which
/// accepts only x86_64 SDK wheel names, never runs here): a staged SDK
/// wheel built for another machine gives way to the `apache_beam` wheel of
/// the same version for `platform` in the set's requirements cache (its
/// `--requirements-cache PLATFORM=DIR`), which the direct boot installs as
/// the SDK. Without one the staged SDK stays, and [`check_set`] refuses it
/// naming the mismatch. Whether the SDK was replaced.
pub fn platform_sdk(set: &mut StagedSet, platform: &Platform) -> bool {
    let foreign: Vec<(usize, String)> = set
        .artifacts
        .iter()
        .enumerate()
        .filter(|(_, a)| {
            a.role == Role::Sdk && a.name.ends_with(".whl") && !wheel_fits(&a.name, platform)
        })
        .filter_map(|(i, a)| Some((i, dist_of(&a.name)?.1)))
        .collect();
    let mut replaced = false;
    for (i, version) in foreign.into_iter().rev() {
        let own = set.artifacts.iter().any(|a| {
            a.role == Role::RequirementsCache
                && a.name.ends_with(".whl")
                && dist_of(&a.name).is_some_and(|(n, v)| n == "apache-beam" && v == version)
                && wheel_fits(&a.name, platform)
                && !a.name.ends_with("-any.whl")
        });
        if own {
            let dropped = set.artifacts.remove(i);
            tracing::info!(
                "{}: installing the apache_beam {version} wheel for {} from its requirements cache instead of the staged SDK {}",
                platform.name(),
                platform.machine(),
                dropped.name
            );
            replaced = true;
        }
    }
    replaced
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(name: &str, role: Role) -> crate::stage::Artifact {
        crate::stage::Artifact::named(name, role)
    }

    const X86: &str =
        "apache_beam-2.77.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl";
    const ARM: &str =
        "apache_beam-2.77.0-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl";

    #[test]
    fn the_platforms_own_sdk_wheel_replaces_a_staged_one_for_another_machine() {
        let arm64 = Platform::parse("linux/arm64").unwrap();
        let amd64 = Platform::parse("linux/amd64").unwrap();
        let set = |cache: &[&str]| {
            let mut a = vec![artifact(X86, Role::Sdk)];
            a.extend(cache.iter().map(|n| artifact(n, Role::RequirementsCache)));
            StagedSet::new(a, "/tmp".into(), None)
        };
        // The arm64 cache has Beam's aarch64 wheel of the same version.
        let mut s = set(&[ARM, "numpy-2.2.6-cp311-cp311-manylinux2014_aarch64.whl"]);
        assert!(platform_sdk(&mut s, &arm64));
        assert!(s.with_role(Role::Sdk).next().is_none());
        assert!(s.artifacts.iter().any(|a| a.name == ARM));
        check_set(&s, &arm64).unwrap();
        // Its own platform's SDK stays.
        let mut s = set(&[ARM]);
        assert!(!platform_sdk(&mut s, &amd64));
        assert_eq!(s.with_role(Role::Sdk).next().unwrap().name, X86);
        // Another version, or none: the staged SDK stays and is refused.
        for cache in [
            &["apache_beam-2.76.0-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl"][..],
            &[][..],
        ] {
            let mut s = set(cache);
            assert!(!platform_sdk(&mut s, &arm64));
            let e = check_set(&s, &arm64).unwrap_err().to_string();
            assert!(e.contains(X86) && e.contains("linux/arm64"), "{e}");
        }
    }
}
