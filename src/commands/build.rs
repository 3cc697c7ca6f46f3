//! `prebuilder build`: stage → plan → build or reuse each layer → tag → report.

use std::collections::BTreeMap;
use std::time::Instant;

use super::{build_base, fresh};
use crate::cli::BuildArgs;
use crate::engine::{
    Engine, ImageInfo, ImageTools, LayerBuild, Network, LABEL_ARTIFACTS, LABEL_BASE, LABEL_KEY,
    LABEL_LAYER, LABEL_PARENT, LABEL_VERSION,
};
use crate::error::{Error, Result};
use crate::plan::{self, LayerPlan, LAYER_TAG_PREFIX};
use crate::progress::Reporter;
use crate::registry::{self, Credential, Registry, RepositoryRef};
use crate::report::{BaseReport, CacheOutcome, LayerReport, Report};
use crate::stage::{Inputs, StagedSet};

/// Check what can be checked without touching disk or engine.
pub fn validate(args: &BuildArgs) -> Result<()> {
    check_repository(&args.repository)?;
    for t in &args.tags {
        check_tag(t)?;
    }
    Ok(())
}

/// Read the inputs: a Beam context or Beam-style flags. Hashing runs on a
/// blocking thread.
pub async fn stage(args: &BuildArgs) -> Result<StagedSet> {
    let context = args.context.clone();
    let inputs = Inputs {
        requirements_file: args.requirements_file.clone(),
        requirements_cache: args.requirements_cache.clone(),
        extra_packages: args.extra_package.clone(),
        setup_file: args.setup_file.clone(),
        sdk_location: args.sdk_location.clone(),
        files_to_stage: args.files_to_stage.clone(),
    };
    tokio::task::spawn_blocking(move || match context {
        Some(dir) => StagedSet::from_context(&dir),
        None => StagedSet::from_inputs(&inputs),
    })
    .await
    .map_err(|e| Error::Engine {
        action: "reading the inputs".into(),
        reason: e.to_string(),
    })?
}

/// Build (or find) every layer of `set` on `args.base`, tag the result and
/// push it when asked.
///
/// Order: the boot layer (`--boot-from`); then every layer on the engine →
/// nothing to build; else the result's content-addressed tag in the registry
/// → nothing to build or pull; else build what is missing, checking the base
/// first. Then push (`--push`) and read the registry's digest.
pub async fn run<E: Engine + ImageTools>(
    engine: &E,
    args: &BuildArgs,
    set: &StagedSet,
    reporter: &dyn Reporter,
) -> Result<Report> {
    let started = Instant::now();
    // A fresh runner: the base may be only in its registry (see `fresh`).
    let (base, mut pulled) = match fresh::start(engine, args, set, reporter).await? {
        fresh::Start::Hit(report) => return Ok(*report),
        fresh::Start::Base(base, pulled) => (base, pulled),
    };
    // --boot-from's boot layer, and the base checks that run before the first install.
    let mut prepared = build_base::prepare(engine, args, set, &base, reporter).await?;
    let plan = plan::plan(set, &prepared.parent)?;
    let network = Network::parse(&args.network);
    let image = format!("{}:{}", args.repository, plan.tag());

    let mut local = Vec::new();
    if !args.no_cache {
        for layer in &plan.layers {
            match engine.find_layer(&layer.key).await? {
                Some(found) => local.push(found.id),
                None => break,
            }
        }
    }
    // Credentials (maybe a credential helper process) only when the registry
    // is used: not on a relaunch that finds every layer here and pushes nothing.
    let all_local = local.len() == plan.layers.len();
    let registry = if all_local && !args.push {
        None
    } else {
        registry_for(args)?
    };
    if !all_local && !args.no_cache {
        if let Some((registry, _)) = &registry {
            match registry.manifest_digest(plan.tag()).await {
                Ok(Some(digest)) => {
                    reporter.step(&format!(
                        "registry hit: {image} is in {} ({digest})",
                        registry.repository().registry
                    ));
                    let tags =
                        fresh::tag_hit(registry, args, plan.tag(), &digest, reporter).await?;
                    return Ok(Report {
                        sdk_container_image: format!("{}@{digest}", args.repository),
                        image,
                        image_id: None,
                        digest: Some(digest),
                        cached: true,
                        layers: std::mem::take(&mut prepared.layers)
                            .into_iter()
                            .chain(plan.layers.iter().map(|l| LayerReport {
                                name: l.name.to_string(),
                                cache: CacheOutcome::Registry,
                                seconds: 0.0,
                                image_id: String::new(),
                            }))
                            .collect(),
                        base: BaseReport {
                            reference: args.base.clone(),
                            id: base.id.clone(),
                        },
                        tags,
                        seconds: round(started.elapsed().as_secs_f64()),
                    });
                }
                Ok(None) => {}
                // Without --push the registry is only a cache: build locally.
                Err(e) if !args.push => tracing::warn!("{e}; building locally"),
                Err(e) => return Err(e),
            }
        }
    }

    // The registry as the layer cache: pull the highest layer it has.
    if !all_local && !args.no_cache {
        if let Some((registry, _)) = &registry {
            pulled.extend(
                fresh::pull_layers(engine, registry, args, &plan, &mut local, reporter).await?,
            );
        }
    }

    let mut layers = std::mem::take(&mut prepared.layers);
    let mut from_image = prepared.from_image.clone();
    for (i, layer) in plan.layers.iter().enumerate() {
        let t = Instant::now();
        let mut cached = local.get(i).cloned();
        // Held until this layer is built: a concurrent run with the same
        // inputs waits here, then finds this run's image instead of building.
        let mut _lock = None;
        if cached.is_none() {
            _lock = lock_layer(&layer.key, reporter).await;
            if !args.no_cache && _lock.is_some() {
                cached = engine.find_layer(&layer.key).await?.map(|f| f.id);
            }
        }
        let (id, cache) = match cached {
            Some(id) => {
                reporter.step(&format!("{}: cache hit ({})", layer.name, layer.tag()));
                (id, CacheOutcome::Hit)
            }
            None => {
                prepared.check(engine, reporter).await?;
                reporter.step(&format!(
                    "{}: building ({} artifact(s))",
                    layer.name,
                    layer.artifacts.len()
                ));
                let build = LayerBuild {
                    from_image: &from_image,
                    base: &prepared.config,
                    layer,
                    labels: labels(layer, &base),
                    network: &network,
                };
                (
                    engine.build_layer(build, reporter).await?,
                    CacheOutcome::Miss,
                )
            }
        };
        // The result is tagged by its key; the layers below it by `layer-<key>`,
        // which tells `gc` what is a result and what only serves one.
        let tag = if i + 1 == plan.layers.len() {
            layer.tag().to_string()
        } else {
            format!("{LAYER_TAG_PREFIX}{}", layer.tag())
        };
        engine.tag(&id, &args.repository, &tag).await?;
        layers.push(LayerReport {
            name: layer.name.to_string(),
            cache,
            seconds: round(t.elapsed().as_secs_f64()),
            image_id: id.clone(),
        });
        from_image = id;
    }

    let mut tags = Vec::new();
    for t in &args.tags {
        engine.tag(&from_image, &args.repository, t).await?;
        tags.push(format!("{}:{t}", args.repository));
    }
    for l in layers.iter_mut() {
        if l.cache == CacheOutcome::Hit && pulled.contains(&l.name) {
            l.cache = CacheOutcome::Registry;
        }
    }
    let cached = layers.iter().all(|l| l.cache != CacheOutcome::Miss);
    let digest = match (&registry, args.push) {
        (Some((registry, credential)), true) => Some({
            fresh::push_layers(engine, registry, credential.as_ref(), args, &plan, reporter)
                .await?;
            push(
                engine,
                args,
                registry,
                credential.as_ref(),
                plan.tag(),
                reporter,
            )
            .await?
        }),
        _ => None,
    };
    Ok(Report {
        sdk_container_image: match &digest {
            Some(d) => format!("{}@{d}", args.repository),
            None => image.clone(),
        },
        image,
        image_id: Some(from_image),
        digest,
        cached,
        layers,
        base: BaseReport {
            reference: args.base.clone(),
            id: base.id.clone(),
        },
        tags,
        seconds: round(started.elapsed().as_secs_f64()),
    })
}

/// The registry of `--repository`, when it names one or `--push` asks for one.
fn registry_for(args: &BuildArgs) -> Result<Option<(Registry, Option<Credential>)>> {
    let repo = RepositoryRef::parse(&args.repository);
    if !repo.explicit && !args.push {
        return Ok(None);
    }
    let credential = registry::credentials(&repo)?;
    Ok(Some((Registry::new(repo, credential.clone())?, credential)))
}

/// Push the result's content tag (unless the registry already holds that
/// key, built elsewhere from the same inputs), read the registry's digest,
/// then push every `--tag`, refusing to move one that points elsewhere.
async fn push<E: Engine>(
    engine: &E,
    args: &BuildArgs,
    registry: &Registry,
    credential: Option<&Credential>,
    tag: &str,
    reporter: &dyn Reporter,
) -> Result<String> {
    let repo = &args.repository;
    let existing = registry.manifest_digest(tag).await?;
    match &existing {
        Some(d) if !args.no_cache => reporter.step(&format!(
            "{repo}:{tag} is already in the registry ({d}); same inputs, so it is not pushed again"
        )),
        _ => {
            reporter.step(&format!("pushing {repo}:{tag}"));
            engine.push(repo, tag, credential, reporter).await?;
        }
    }
    let digest = match (existing, args.no_cache) {
        (Some(d), false) => d,
        _ => registry
            .manifest_digest(tag)
            .await?
            .ok_or_else(|| Error::Registry {
                registry: registry.repository().registry.clone(),
                action: format!("reading the digest of {repo}:{tag}"),
                reason: "the tag is missing right after the push".into(),
            })?,
    };
    for t in &args.tags {
        match registry.manifest_digest(t).await? {
            Some(other) if other != digest && !args.replace_tags => {
                return Err(Error::TagConflict {
                    reference: format!("{repo}:{t}"),
                    existing: other,
                })
            }
            Some(other) if other != digest => {
                reporter.step(&format!("moving {repo}:{t} from {other} to {digest}"));
            }
            _ => {}
        }
        engine.push(repo, t, credential, reporter).await?;
    }
    Ok(digest)
}

/// An exclusive lock on a layer key, shared by every prebuilder process on
/// this machine. `None` (build anyway, with a warning) when locking fails.
pub(crate) async fn lock_layer(key: &str, reporter: &dyn Reporter) -> Option<std::fs::File> {
    let dir = std::env::temp_dir().join("prebuilder-locks");
    let path = dir.join(format!("{key}.lock"));
    let file = std::fs::create_dir_all(&dir).and_then(|()| {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
    });
    let file = match file {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(
                "cannot create lock {}: {e}; building without it",
                path.display()
            );
            return None;
        }
    };
    if let Ok(()) = file.try_lock() {
        return Some(file);
    }
    reporter.step("another prebuilder is building the same layer; waiting for it");
    match tokio::task::spawn_blocking(move || file.lock().map(|()| file)).await {
        Ok(Ok(f)) => Some(f),
        Ok(Err(e)) => {
            tracing::warn!("cannot lock {}: {e}; building without it", path.display());
            None
        }
        Err(_) => None,
    }
}

/// Labels that describe a layer image: its key (what the cache looks up),
/// where it sits, and the inputs it installed.
fn labels(layer: &LayerPlan<'_>, base: &ImageInfo) -> BTreeMap<String, String> {
    let artifacts: BTreeMap<&str, &str> = layer
        .artifacts
        .iter()
        .map(|a| (a.name.as_str(), a.content_digest.as_str()))
        .collect();
    BTreeMap::from([
        (LABEL_KEY.to_string(), layer.key.clone()),
        (LABEL_LAYER.to_string(), layer.name.to_string()),
        (LABEL_PARENT.to_string(), layer.parent.clone()),
        (LABEL_BASE.to_string(), base.id.clone()),
        (
            LABEL_VERSION.to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        (
            LABEL_ARTIFACTS.to_string(),
            serde_json::to_string(&artifacts).unwrap_or_default(),
        ),
    ])
}

fn round(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

/// A repository as the engine accepts it: optional `host[:port]/`, then
/// lowercase path components of `[a-z0-9]` separated by `.`, `_`, `__` or `-`.
fn check_repository(repo: &str) -> Result<()> {
    let bad = |why: &str| {
        Error::Usage {
        message: format!("--repository {repo:?} is not a valid repository name: {why}"),
        hint: "use lowercase letters, digits and . _ - separated by /, optionally after a registry host, e.g. localhost:5000/team/beam_sdk".into(),
    }
    };
    if repo.is_empty() || repo.len() > 255 {
        return Err(bad("it must be 1 to 255 characters"));
    }
    let mut parts: Vec<&str> = repo.split('/').collect();
    if parts.len() > 1
        && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost")
    {
        let host = parts.remove(0);
        let (name, port) = host.split_once(':').unwrap_or((host, ""));
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return Err(bad("the registry host is malformed"));
        }
        if host.contains(':') && (port.is_empty() || !port.chars().all(|c| c.is_ascii_digit())) {
            return Err(bad("the registry port must be a number"));
        }
    }
    for p in parts {
        let ok = !p.is_empty()
            && p.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
            })
            && p.starts_with(|c: char| c.is_ascii_alphanumeric())
            && p.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !ok {
            return Err(bad(&format!(
                "component {p:?} must be lowercase alphanumerics separated by . _ -"
            )));
        }
    }
    Ok(())
}

fn check_tag(tag: &str) -> Result<()> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Usage {
            message: format!("--tag {tag:?} is not a valid tag"),
            hint: "a tag is up to 128 letters, digits, _ . - and must not start with . or -".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories() {
        for ok in [
            "beam_python_prebuilt_sdk",
            "localhost:5000/beam",
            "registry.example.com/team/beam-sdk",
            "a.b/c__d",
            "localhost/x",
        ] {
            assert!(check_repository(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Upper",
            "a//b",
            "-a",
            "a-",
            "host:port/x",
            "a b",
            "x:5000",
        ] {
            let e = check_repository(bad).unwrap_err();
            assert!(e.to_string().contains("--repository"), "{bad}: {e}");
        }
    }

    #[test]
    fn tags() {
        for ok in ["latest", "v1.2.3", "_x", "A-b_c.d"] {
            assert!(check_tag(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".x", "-x", "a:b", "a/b", &"x".repeat(129)] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
    }
}
