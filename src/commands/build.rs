//! `prebuilder build`: check the flags, stage the inputs, connect, and hand
//! over to `crate::build`; the binary prints the report.

use crate::build::{self, Remote};
use crate::cli::BuildArgs;
use crate::engine::{DockerEngine, Engine, Network};
use crate::error::{Error, Result};
use crate::plan::{LAYER_TAG_PREFIX, TAG_HEX_LEN};
use crate::progress::Reporter;
use crate::registry::{self, Registry, RepositoryRef};
use crate::report::Report;
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
    .map_err(|source| Error::Task {
        action: "reading the inputs".into(),
        source,
    })?
}

/// Validate, stage, build on the engine, write `--report`: the report for
/// the binary to print. Ctrl-C drops the build future; every container it
/// created is then removed.
pub async fn run(args: &BuildArgs, reporter: &dyn Reporter) -> Result<Report> {
    validate(args)?;
    let set = stage(args).await?;
    let engine = DockerEngine::connect().await?;
    let opts = options(args);
    let outcome = tokio::select! {
        r = build::run(&engine, &opts, &set, || remote(args), reporter) => r,
        _ = tokio::signal::ctrl_c() => Err(Error::Interrupted),
    };
    engine.remove_leftovers().await;
    let report = outcome?;
    if let Some(path) = &args.report {
        std::fs::write(path, report.to_json() + "\n").map_err(|source| Error::Report {
            path: path.clone(),
            source,
        })?;
    }
    Ok(report)
}

/// The build's options from the flags (and `PREBUILDER_COMMIT`, read here,
/// never deep in the build).
pub fn options(args: &BuildArgs) -> build::Options {
    build::Options {
        base: args.base.clone(),
        repository: args.repository.clone(),
        tags: args.tags.clone(),
        push: args.push,
        replace_tags: args.replace_tags,
        no_cache: args.no_cache,
        no_check: args.no_check,
        boot_from: args.boot_from.clone(),
        network: Network::parse(&args.network),
        lock_dir: build::lock::default_dir(),
        commit: std::env::var_os("PREBUILDER_COMMIT").is_some(),
    }
}

/// The registry of `--repository`, when it names one or `--push` asks for one.
fn remote(args: &BuildArgs) -> Result<Option<Remote<Registry>>> {
    let repo = RepositoryRef::parse(&args.repository);
    if !repo.explicit && !args.push {
        return Ok(None);
    }
    let credential = registry::credentials(&repo)?;
    Ok(Some(Remote {
        registry: Registry::new(repo, credential.clone())?,
        credential,
    }))
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
    if !ok {
        return Err(Error::Usage {
            message: format!("--tag {tag:?} is not a valid tag"),
            hint: "a tag is up to 128 letters, digits, _ . - and must not start with . or -".into(),
        });
    }
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
