//! `prebuilder build`: check the flags, stage the inputs, connect, and hand
//! over to `crate::build`; the binary prints the report.

use crate::build::engineless::Output;
use crate::build::platform::Platform;
use crate::build::{self, Builder, Remote};
use crate::cancel::Cancel;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::cli::{BuildArgs, SbomFormat};
use crate::engine::store::Store;
use crate::engine::{ops, DockerEngine, Engine, Network};
use crate::error::{Error, Result};
use crate::plan::{LAYER_TAG_PREFIX, TAG_HEX_LEN};
use crate::progress::Reporter;
use crate::registry::{self, reference, Registry, RepositoryRef};
use crate::report::Report;
use crate::settings::{Settings, PREBUILDER_SPLIT_THRESHOLD};
use crate::stage::digest::DigestCache;
use crate::stage::flink::{self, PythonOptions};
use crate::stage::{Inputs, StagedSet};
use crate::state;

/// Check what can be checked without touching disk or engine.
pub fn validate(args: &BuildArgs) -> Result<()> {
    check_image("--base", &args.base)?;
    if let Some(boot) = &args.boot_from {
        check_image("--boot-from", boot)?;
    }
    check_repository(&args.repository)?;
    for t in &args.tags {
        check_tag(t)?;
    }
    for l in &args.labels {
        crate::labels::parse(l)?;
    }
    if let Some(list) = &args.platform {
        Platform::parse_list(list)?;
    }
    for (name, _) in args.requirements_caches().1 {
        Platform::parse(&name)?;
    }
    Ok(())
}

/// Read the inputs: a Beam context, Beam-style flags or PyFlink inputs,
/// generated files under `temp`. Hashing runs on a blocking thread; digests
/// remembered in `cache` are not computed again.
pub async fn stage(
    args: &BuildArgs,
    temp: &Path,
    cache: std::sync::Arc<DigestCache>,
) -> Result<StagedSet> {
    stage_with_cache(args, args.requirements_caches().0, temp, cache).await
}

/// [`stage`] with `requirements_cache` as the requirements cache (one
/// platform's `--requirements-cache PLATFORM=DIR`).
async fn stage_with_cache(
    args: &BuildArgs,
    requirements_cache: Option<PathBuf>,
    temp: &Path,
    cache: std::sync::Arc<DigestCache>,
) -> Result<StagedSet> {
    if let Some((flags, conf)) = flink_inputs(args) {
        return tokio::task::spawn_blocking(move || {
            flink::stage_with(flags, conf.as_deref(), &cache)
        })
        .await
        .map_err(|source| Error::Task {
            action: "reading the inputs".into(),
            source,
        })?;
    }
    let origins = match &args.origins {
        Some(file) => read_origins(file)?,
        None => HashMap::new(),
    };
    let context = args.context.clone();
    let inputs = Inputs {
        requirements_file: args.requirements_file.clone(),
        requirements_cache,
        extra_packages: args.extra_package.clone(),
        setup_file: args.setup_file.clone(),
        sdk_location: args.sdk_location.clone(),
        files_to_stage: args.files_to_stage.clone(),
    };
    let temp = temp.to_path_buf();
    tokio::task::spawn_blocking(move || match context {
        Some(dir) => StagedSet::from_context_with(&dir, &cache, &origins),
        None => StagedSet::from_inputs_with(&inputs, &temp, &cache),
    })
    .await
    .map_err(|source| Error::Task {
        action: "reading the inputs".into(),
        source,
    })?
}

/// `--origins`: a JSON object of staged name → the file it was copied from.
fn read_origins(file: &Path) -> Result<HashMap<String, PathBuf>> {
    let invalid = |reason: String| Error::InputInvalid {
        flag: "--origins",
        path: file.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
    serde_json::from_str(&text)
        .map_err(|e| invalid(format!("not a JSON object of staged name to path: {e}")))
}

/// The PyFlink flags and `--flink-conf`, when any is given (the CLI has
/// refused mixing them with Beam inputs).
fn flink_inputs(args: &BuildArgs) -> Option<(PythonOptions, Option<std::path::PathBuf>)> {
    let flags = PythonOptions {
        files: args
            .py_files
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect(),
        requirements: args.py_requirements.clone(),
        archives: args.py_archives.clone(),
        executable: args.py_executable.clone(),
        ..Default::default()
    };
    (!flags.is_empty() || args.flink_conf.is_some()).then(|| (flags, args.flink_conf.clone()))
}

/// Validate, stage, build on the engine, write `--report`: the report for
/// the binary to print. A signal (`cancel`) drops the build future; every
/// container it created is then removed.
pub async fn run(
    args: &BuildArgs,
    settings: &Settings,
    reporter: &dyn Reporter,
    cancel: &Cancel,
) -> Result<Report> {
    validate(args)?;
    let interrupted = |signal| Err(Error::Interrupted { signal });
    let root = state::root(settings);
    if let Some(warning) = &root.warning {
        tracing::warn!("{warning}");
    }
    // What killed runs left: their scratch directories (containers below).
    state::sweep_scratch(&root.dir, false);
    let scratch = state::Scratch::create(&root.dir).map_err(|source| Error::Local {
        action: format!(
            "creating a temporary directory under {}",
            root.dir.display()
        ),
        source,
    })?;
    let set = tokio::select! {
        r = stage_remembered(args, &root.dir, scratch.path()) => r?,
        signal = cancel.cancelled() => return interrupted(signal),
    };
    let output = output(args)?;
    let connected = match output {
        // --output: no engine is asked (the result goes to the file); nor
        // for direct mode with --platform (each platform built with no
        // engine, pushed to the registry).
        Some(_) => None,
        None if args.builder == Builder::Direct && args.platform.is_some() => None,
        None => tokio::select! {
            r = DockerEngine::connect(settings) => Some(r),
            signal = cancel.cancelled() => return interrupted(signal),
        },
    };
    let engine = match with_engine(args.builder, connected)? {
        Some(engine) => engine,
        None => {
            let report = tokio::select! {
                r = engineless(args, settings, (&root.dir, scratch.path()), &set, output.clone(), reporter) => r,
                signal = cancel.cancelled() => return interrupted(signal),
            };
            return finish(args, report);
        }
    };
    let opts = options(
        args,
        settings,
        (&root.dir, &engine.endpoint().host),
        scratch.path(),
    )?;
    let phases = build::phase::Phases::new(reporter);
    let outcome = tokio::select! {
        r = async {
            ops::sweep_orphans(&engine).await;
            on_engine(&engine, (args, settings), (&opts, &set), (scratch.path(), &root.dir), &phases).await
        } => r,
        signal = cancel.cancelled() => interrupted(signal),
    };
    let outcome = outcome.map_err(|e| phases.explain(e.named(&engine.name())));
    let mut removed = engine.remove_leftovers().await;
    if let Err(Error::EngineWentAway { .. }) = &outcome {
        removed += remove_when_back(&engine, cancel).await;
    }
    if removed > 0 {
        // Said only when there was one (issue 12: it was said when none existed).
        tracing::warn!("removed the {removed} container(s) this build had created");
    }
    drop(set);
    drop(scratch);
    finish(args, outcome)
}

/// The build on `engine`: one, or with `--platform` one per platform (each
/// platform's set staged first when it has its own requirements cache).
async fn on_engine(
    engine: &DockerEngine,
    (args, settings): (&BuildArgs, &Settings),
    (opts, set): (&build::Options, &StagedSet),
    (scratch, state_root): (&Path, &Path),
    reporter: &dyn Reporter,
) -> Result<Report> {
    let Some(list) = &args.platform else {
        return build::run(engine, opts, set, || remote(args, settings), reporter).await;
    };
    let platforms = Platform::parse_list(list)?;
    let cache = std::sync::Arc::new(DigestCache::open(state::digest_cache(state_root)));
    let staged = stage_platforms(args, &platforms, scratch, cache).await?;
    let staged = fetch_wheels(args, settings, state_root, set, &platforms, staged).await?;
    let jobs = platform_jobs(&platforms, &staged, set);
    let base = base_registry(&args.base, &settings.docker_config_dir());
    let remote = || remote(args, settings);
    build::platform::run(engine, opts, &jobs, base.as_ref(), &remote, reporter).await
}

/// Each platform's own staged set, for those a `--requirements-cache
/// PLATFORM=DIR` names (the others use the set staged with the plain one).
async fn stage_platforms(
    args: &BuildArgs,
    platforms: &[Platform],
    temp: &Path,
    cache: std::sync::Arc<DigestCache>,
) -> Result<Vec<Option<StagedSet>>> {
    let (_, per_platform) = args.requirements_caches();
    for (name, dir) in &per_platform {
        let p = Platform::parse(name)?;
        if !platforms.contains(&p) {
            return Err(Error::Usage {
                message: format!(
                    "--requirements-cache {name}={} names a platform --platform does not build",
                    dir.display()
                ),
                hint: "add it to --platform, or drop that --requirements-cache".into(),
            });
        }
    }
    let mut sets = Vec::new();
    for p in platforms {
        let dir = per_platform
            .iter()
            .find(|(name, _)| Platform::parse(name).ok().as_ref() == Some(p))
            .map(|(_, dir)| dir.clone());
        sets.push(match dir {
            Some(dir) => {
                let temp = temp.join(p.name().replace('/', "-"));
                std::fs::create_dir_all(&temp).map_err(|e| Error::io(&temp, e))?;
                Some(stage_with_cache(args, Some(dir), &temp, cache.clone()).await?)
            }
            None => None,
        });
    }
    Ok(sets)
}

/// The platforms the staged wheels do not serve, completed with wheels
/// fetched from the package indexes pip's configuration names
/// ([`crate::wheels`]), for the launch Python's version.
async fn fetch_wheels(
    args: &BuildArgs,
    settings: &Settings,
    state_root: &Path,
    set: &StagedSet,
    platforms: &[Platform],
    staged: Vec<Option<StagedSet>>,
) -> Result<Vec<Option<StagedSet>>> {
    if platforms.len() > 1 && !args.push {
        // Refused by the build first (an index needs --push): nothing to fetch for.
        return Ok(staged);
    }
    let ctx = crate::wheels::Context {
        settings,
        cache_dir: crate::wheels::cache_dir(state_root),
        python: args
            .launch_python
            .clone()
            .unwrap_or_else(|| PathBuf::from("python3")),
    };
    crate::wheels::complete(set, platforms, staged, &ctx).await
}

fn platform_jobs<'a>(
    platforms: &[Platform],
    staged: &'a [Option<StagedSet>],
    set: &'a StagedSet,
) -> Vec<build::platform::Job<'a>> {
    platforms
        .iter()
        .zip(staged)
        .map(|(p, s)| build::platform::Job {
            platform: p.clone(),
            set: s.as_ref().unwrap_or(set),
        })
        .collect()
}

/// Stage the inputs, with the digests remembered under the state `root`.
async fn stage_remembered(args: &BuildArgs, root: &Path, scratch: &Path) -> Result<StagedSet> {
    let cache = std::sync::Arc::new(DigestCache::open(state::digest_cache(root)));
    if let Some(reason) = &cache.ignored {
        tracing::debug!("digest cache not used: {reason}");
    }
    let staging = std::time::Instant::now();
    let set = stage(args, scratch, cache.clone()).await?;
    let stats = cache.stats();
    tracing::debug!(
        "staged in {:.3} s: {} digest(s) remembered, {} file(s) read ({} bytes)",
        staging.elapsed().as_secs_f64(),
        stats.remembered,
        stats.read,
        stats.read_bytes
    );
    // A cache: failing to write it costs the next run a rehash, nothing more.
    if let Err(e) = cache.save() {
        tracing::debug!("digest cache not saved: {e}");
    }
    Ok(set)
}

/// `--output`, parsed; it writes what direct mode builds only.
fn output(args: &BuildArgs) -> Result<Option<Output>> {
    let output = match &args.output {
        Some(o) => Some(Output::parse(o)?),
        None => None,
    };
    if output.is_some() && args.builder == Builder::Engine {
        return Err(Error::Usage {
            message: "--output writes what direct mode builds".into(),
            hint: "add --builder direct (or auto), or keep the engine's image and `docker save` it"
                .into(),
        });
    }
    Ok(output)
}

/// The engine the build runs on, or none (direct mode with no engine):
/// `connected` is `None` when none was asked (`--output`). An engine that
/// does not answer fails `--builder engine`; `auto` says it builds directly.
fn with_engine<E>(builder: Builder, connected: Option<Result<E>>) -> Result<Option<E>> {
    match connected {
        Some(Ok(engine)) => Ok(Some(engine)),
        Some(Err(e @ Error::EngineUnreachable { .. })) if builder == Builder::Engine => Err(e),
        Some(Err(e @ Error::EngineUnreachable { .. })) => {
            if builder == Builder::Auto {
                tracing::warn!("{e}; building directly, with no container (--builder auto)");
            }
            Ok(None)
        }
        Some(Err(e)) => Err(e),
        None => Ok(None),
    }
}

/// `--report`, then the report for the binary to print.
fn finish(args: &BuildArgs, outcome: Result<Report>) -> Result<Report> {
    let report = outcome?;
    if let Some(path) = &args.report {
        std::fs::write(path, report.to_json() + "\n").map_err(|source| Error::Report {
            path: path.clone(),
            source,
        })?;
    }
    Ok(report)
}

/// The build with no engine (direct mode): the one pipeline on a
/// [`Store`], the base and the result in registries, or the result written
/// to `--output`.
async fn engineless(
    args: &BuildArgs,
    settings: &Settings,
    (state_root, scratch): (&Path, &Path),
    set: &StagedSet,
    output: Option<Output>,
    reporter: &dyn Reporter,
) -> Result<Report> {
    if !args.push && output.is_none() {
        let why = match (args.builder, &args.platform) {
            (Builder::Direct, Some(_)) => "--builder direct with --platform builds with no engine",
            _ => "no engine answers",
        };
        return Err(Error::Usage {
            message: format!("{why}, and the result would go nowhere"),
            hint: "pass --push (to --repository's registry) or --output oci:DIR / docker-archive:FILE, or start an engine (DOCKER_HOST)".into(),
        });
    }
    let mut opts = options(args, settings, (state_root, "direct"), scratch)?;
    opts.builder = Builder::Direct;
    opts.output = output;
    let config_dir = settings.docker_config_dir();
    let base = base_registry(&args.base, &config_dir).ok_or_else(|| Error::DirectBase {
        image: args.base.clone(),
        reason: "no engine answers, so the base must be read from its registry, and this reference names none prebuilder can read (an image id?)".into(),
    })?;
    let store = Store::new(scratch);
    let phases = build::phase::Phases::new(reporter);
    let platforms = match &args.platform {
        Some(list) => Some(Platform::parse_list(list)?),
        None => build::platform::direct::only_platform(&base, &args.base)
            .await?
            .map(|p| vec![p]),
    };
    if let Some(platforms) = platforms {
        let on = (&store, &opts, base);
        return engineless_platforms(
            args,
            settings,
            on,
            (state_root, scratch),
            set,
            &platforms,
            &phases,
        )
        .await
        .map_err(|e| phases.explain(e));
    }
    let make = move || {
        let mut r = registries(args, settings)?;
        r.base = Some(base);
        Ok(Some(r))
    };
    build::run(&store, &opts, set, make, &phases)
        .await
        .map_err(|e| phases.explain(e))
}

/// With no engine, for `platforms`: each platform's set staged (its own
/// `--requirements-cache PLATFORM=DIR`, and its own SDK wheel from there),
/// then each built directly on its base (`build::platform::direct`).
async fn engineless_platforms(
    args: &BuildArgs,
    settings: &Settings,
    (store, opts, base): (&Store, &build::Options, Registry),
    (state_root, scratch): (&Path, &Path),
    set: &StagedSet,
    platforms: &[Platform],
    reporter: &dyn Reporter,
) -> Result<Report> {
    let cache = std::sync::Arc::new(DigestCache::open(state::digest_cache(state_root)));
    let mut staged = stage_platforms(args, platforms, scratch, cache).await?;
    for (p, s) in platforms.iter().zip(staged.iter_mut()) {
        if let Some(s) = s {
            build::platform::direct::platform_sdk(s, p);
        }
    }
    let jobs = platform_jobs(platforms, &staged, set);
    let config_dir = settings.docker_config_dir();
    let remote = || {
        let mut r = registries(args, settings)?;
        r.base = base_registry(&args.base, &config_dir);
        Ok(Some(r))
    };
    build::platform::direct::run(store, opts, &jobs, &base, &remote, reporter).await
}

/// After the engine went away mid-build: wait for it to come back (a
/// restart takes seconds) and remove the containers this build created, so
/// nothing is left; a signal or [`ENGINE_RETURN`] ends the wait, and the
/// next run or `gc` removes what is still there (the owner labels).
async fn remove_when_back(engine: &DockerEngine, cancel: &Cancel) -> usize {
    if engine.leftovers() == 0 {
        return 0;
    }
    tracing::warn!(
        "waiting up to {} s for the engine to come back, to remove the setup container",
        ENGINE_RETURN.as_secs()
    );
    let wait = async {
        let mut removed = 0;
        while engine.leftovers() > 0 {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            if engine.answers().await {
                removed += engine.remove_leftovers().await;
            }
        }
        removed
    };
    tokio::select! {
        r = tokio::time::timeout(ENGINE_RETURN, wait) => r.unwrap_or(0),
        _ = cancel.cancelled() => 0,
    }
}

/// How long a build whose engine went away waits for it, to clean up.
const ENGINE_RETURN: std::time::Duration = std::time::Duration::from_secs(45);

/// The build's options from the flags and `settings` (the environment, read
/// once by the binary); locks (one directory per engine, by its endpoint) and
/// temporary files under the state root.
pub fn options(
    args: &BuildArgs,
    settings: &Settings,
    (state_root, engine_host): (&Path, &str),
    scratch: &Path,
) -> Result<build::Options> {
    let labels = crate::labels::Request::new(&args.labels, settings, args.setup_file.as_deref())?;
    let split = match settings.split_threshold() {
        Some(value) => crate::image::split::Rule::parse(value),
        None => Ok(Some(crate::image::split::Rule::default())),
    }
    .map_err(|reason| Error::Usage {
        message: format!("{PREBUILDER_SPLIT_THRESHOLD}: {reason}"),
        hint: format!(
            "set {PREBUILDER_SPLIT_THRESHOLD} to a size such as 64m (a distribution that large gets a layer of its own) or to `off`, or unset it"
        ),
    })?;
    Ok(build::Options {
        base: args.base.clone(),
        repository: args.repository.clone(),
        tags: args.tags.clone(),
        push: args.push,
        replace_tags: args.replace_tags,
        no_cache: args.no_cache,
        no_check: args.no_check,
        boot_from: args.boot_from.clone(),
        network: Network::parse(&args.network),
        // One lock per key and engine: the endpoint this process connected to.
        lock_dir: state::lock_dir(state_root, engine_host),
        blob_map: state::blob_map_dir(state_root),
        scratch_dir: scratch.to_path_buf(),
        commit: settings.commit(),
        labels,
        pull: args.pull,
        settings: settings.clone(),
        attestations: build::attest::Attestations {
            attach: !args.no_attestations,
            wanted: crate::attest::Wanted {
                spdx: args.sbom_format != SbomFormat::Cyclonedx,
                cyclonedx: args.sbom_format != SbomFormat::Spdx,
                provenance: true,
            },
            dir: args.attestations_dir.clone(),
        },
        builder: args.builder,
        launch_python: args
            .launch_python
            .clone()
            .unwrap_or_else(|| std::path::PathBuf::from("python3")),
        platform: None,
        split,
        output: None,
    })
}

/// The registry of `--repository`, when it names one or `--push` asks for one.
fn remote(args: &BuildArgs, settings: &Settings) -> Result<Option<Remote<Registry>>> {
    let repo = RepositoryRef::parse(&args.repository);
    if !repo.explicit && !args.push {
        return Ok(None);
    }
    registries(args, settings).map(Some)
}

/// The result repository's registry, and the base's and boot image's.
fn registries(args: &BuildArgs, settings: &Settings) -> Result<Remote<Registry>> {
    let repo = RepositoryRef::parse(&args.repository);
    let config_dir = settings.docker_config_dir();
    let credential = registry::credentials(&config_dir, &repo)?;
    Ok(Remote {
        registry: Registry::new(repo, credential.clone())?,
        credential,
        base: base_registry(&args.base, &config_dir),
        boot: args
            .boot_from
            .as_deref()
            .and_then(|b| base_registry(b, &config_dir)),
    })
}

/// The registry of a base (or `--boot-from` image), to read its image id
/// without pulling it; `None` for an image id, or when its credentials
/// cannot be read (a pull would then say why).
fn base_registry(base: &str, config_dir: &Path) -> Option<Registry> {
    let hex = base.strip_prefix("sha256:").unwrap_or(base);
    if hex.len() >= 12 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let repo = registry::ImageRef::parse(base).repository;
    match registry::credentials(config_dir, &repo) {
        Ok(credential) => Registry::new(repo, credential).ok(),
        Err(e) => {
            tracing::warn!("{e}; the base will be pulled to learn its id");
            None
        }
    }
}

/// `--repository`: a repository name by the reference grammar (no tag).
fn check_repository(repo: &str) -> Result<()> {
    reference::parse_repository(repo).map(|_| ()).map_err(|rule| Error::Usage {
        message: format!("--repository {repo:?} is not a valid repository name: {rule}"),
        hint: "use lowercase letters, digits and . _ - separated by /, optionally after a registry host, e.g. localhost:5000/team/beam_sdk".into(),
    })
}

/// `--base` and `--boot-from`: image references (or image ids).
fn check_image(flag: &str, value: &str) -> Result<()> {
    reference::parse(value).map(|_| ()).map_err(|rule| Error::Usage {
        message: format!("{flag} {value:?} is not an image reference: {rule}"),
        hint: "name an image the engine has, as [registry/]repository[:tag][@digest] or its id, e.g. apache/beam_python3.11_sdk:2.77.0".into(),
    })
}

fn check_tag(tag: &str) -> Result<()> {
    reference::check_tag(tag).map_err(|rule| Error::Usage {
        message: format!("--tag {tag:?} is not a valid tag: {rule}"),
        hint: "a tag is up to 128 letters, digits, _ . - and must not start with . or -".into(),
    })?;
    if is_content_tag(tag) {
        return Err(Error::Usage {
            message: format!(
                "--tag {tag:?} looks like a content-addressed tag prebuilder sets itself (a {TAG_HEX_LEN}-hex key, or {LAYER_TAG_PREFIX}<key>); moving it would make another build's tag point at this image"
            ),
            hint: "choose a tag that is not a key, e.g. stable or v1.2".into(),
        });
    }
    Ok(())
}

/// `<32 hex>` or `layer-<anything>`: the tags prebuilder gives results and layers.
fn is_content_tag(tag: &str) -> bool {
    tag.starts_with(LAYER_TAG_PREFIX)
        || (tag.len() == TAG_HEX_LEN && tag.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {

    #[test]
    fn auto_builds_directly_only_when_the_engine_does_not_answer() {
        let unreachable = || -> Result<u8> {
            Err(Error::EngineUnreachable {
                endpoint: "unix:///nowhere".into(),
                source: "connection refused".into(),
                hint: String::new(),
            })
        };
        // auto: the engine when it answers, else no engine (direct mode).
        assert_eq!(with_engine(Builder::Auto, Some(Ok(7u8))).unwrap(), Some(7));
        assert_eq!(
            with_engine(Builder::Auto, Some(unreachable())).unwrap(),
            None
        );
        // direct: an engine that answers still gets the layers loaded.
        assert_eq!(
            with_engine(Builder::Direct, Some(Ok(7u8))).unwrap(),
            Some(7)
        );
        assert_eq!(
            with_engine(Builder::Direct, Some(unreachable())).unwrap(),
            None
        );
        // engine: no engine is the error.
        assert!(matches!(
            with_engine(Builder::Engine, Some(unreachable())),
            Err(Error::EngineUnreachable { .. })
        ));
        // --output asks no engine.
        assert_eq!(with_engine::<u8>(Builder::Direct, None).unwrap(), None);
        // Another failure (a bad DOCKER_HOST) is never read as "no engine".
        let other = Err(Error::Usage {
            message: "m".into(),
            hint: "h".into(),
        });
        assert!(with_engine::<u8>(Builder::Auto, Some(other)).is_err());
    }
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

    #[test]
    fn content_addressed_tags_are_refused() {
        for bad in [
            "0123456789abcdef0123456789abcdef",
            "0123456789ABCDEF0123456789ABCDEF",
            "layer-0123456789abcdef0123456789abcdef",
            "layer-x",
        ] {
            let e = check_tag(bad).unwrap_err();
            assert!(e.to_string().contains("content-addressed"), "{bad}: {e}");
        }
        for ok in [
            "0123456789abcdef",
            "stable",
            "layers",
            "0123456789abcdef0123456789abcdeg",
        ] {
            assert!(check_tag(ok).is_ok(), "{ok}");
        }
    }
}
