//! A platform's wheels fetched from a package index, for a `--platform`
//! build whose staged requirements cache does not serve that platform and
//! has no `--requirements-cache PLATFORM=DIR` of its own.
//!
//! Only for pinned requirements (every line `name==version`): for each
//! pinned requirement whose marker applies on the platform and that is
//! staged only as wheels for other machines (Beam's stager downloads
//! `manylinux2014_x86_64` wheels), the wheel pip would choose for the platform
//! (its tags in pip's order, [`crate::direct::tags`]) is looked up on every
//! index the user's pip configuration names ([`config`]), then downloaded
//! (checked against the index's sha256 and the requirement's `--hash`
//! values) into the state directory, kept by content digest. The
//! platform's set is the staged set with the other machines' wheels left
//! out and the fetched ones added: they enter the keys by content like
//! staged ones. A requirement no index has a wheel for is refused before
//! any download, naming it, the platform and the indexes.
//!
//! The wheels are for the Python the launch uses (`--launch-python`, the
//! interpreter Beam's stager downloads for) and the platform tags Beam's
//! stager asks pip for: `manylinux2014` (glibc 2.17) and older, or pure.

pub mod config;
pub mod fetch;
pub mod netrc;
pub mod simple;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use pep440_rs::Version;
use pep508_rs::VersionOrUrl;

use crate::build::platform::{check_set, Platform};
use crate::direct::requirements::{self, Line};
use crate::direct::tags::{cpython_tags, linux_platforms, Supported, WheelName};
use crate::error::{Error, Result};
use crate::settings::Settings;
use crate::stage::{Artifact, Role, StagedSet};

/// The glibc of the platform tags fetched wheels may carry: manylinux2014,
/// what Beam's stager downloads for (`--platform manylinux2014_x86_64`).
pub const GLIBC: (u32, u32) = (2, 17);

/// What fetching needs beside the staged set.
pub struct Context<'a> {
    pub settings: &'a Settings,
    /// Where downloads are kept (`<state>/wheels`).
    pub cache_dir: PathBuf,
    /// The launch Python (`--launch-python`): the wheels are for its
    /// version, asked only when something needs fetching.
    pub python: PathBuf,
}

/// `<state root>/wheels`, where fetched wheels are kept by digest.
pub fn cache_dir(state_root: &Path) -> PathBuf {
    state_root.join("wheels")
}

/// The tags a wheel for `machine` and CPython `python` may carry, best first.
pub fn supported(machine: &str, python: &Version) -> Supported {
    let release = python.release();
    let (major, minor) = (
        release.first().copied().unwrap_or(3) as u32,
        release.get(1).copied().unwrap_or(0) as u32,
    );
    let mut platforms = linux_platforms(machine, GLIBC);
    platforms.retain(|p| !p.starts_with("linux_"));
    Supported::new(&cpython_tags(
        major,
        minor,
        &format!("cp{major}{minor}"),
        &platforms,
    ))
}

/// Each platform's set: `staged[i]` when it has one (its own
/// `--requirements-cache PLATFORM=DIR`), else `set` completed with wheels
/// fetched from the indexes when `set` does not serve the platform, else
/// `None` (the shared set serves it).
pub async fn complete(
    set: &StagedSet,
    platforms: &[Platform],
    staged: Vec<Option<StagedSet>>,
    ctx: &Context<'_>,
) -> Result<Vec<Option<StagedSet>>> {
    let mut out = Vec::with_capacity(staged.len());
    for (platform, own) in platforms.iter().zip(staged) {
        out.push(match own {
            Some(own) => Some(own),
            None => for_platform(set, platform, ctx).await?,
        });
    }
    Ok(out)
}

/// `set` for `platform` with the wheels it lacks fetched; `None` when
/// nothing needs fetching (or nothing can be: no pinned requirements file,
/// `--no-index`), leaving the refusal, if any, to [`check_set`].
pub async fn for_platform(
    set: &StagedSet,
    platform: &Platform,
    ctx: &Context<'_>,
) -> Result<Option<StagedSet>> {
    let Some(file) = set.with_role(Role::Requirements).next() else {
        return Ok(None);
    };
    if set.mode.flink().is_some() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&file.path).map_err(|e| Error::io(&file.path, e))?;
    let (indexes, rest) = config::from_requirements(config::from_config(ctx.settings), &text);
    let parsed = match requirements::parse(&file.name, &rest) {
        Ok(parsed) => parsed,
        // Not every line pinned: fine when the staged set serves the platform.
        Err(Error::DirectRefused { input, reason }) => {
            return match check_set(set, platform) {
                Ok(()) => Ok(None),
                Err(_) => Err(Error::PlatformRefused {
                    platform: platform.name(),
                    input,
                    reason: format!("the staged wheels do not serve {}, and wheels are fetched from a package index only for requirements pinned with ==: {reason}", platform.name()),
                    hint: format!("pin every requirement (e.g. `pip freeze > requirements.txt`), or download that platform's wheels (`pip download --platform manylinux2014_{} --only-binary=:all: -r requirements.txt -d DIR`) and pass --requirements-cache {}=DIR", platform.machine(), platform.name()),
                }),
            };
        }
        Err(e) => return Err(e),
    };
    let cache: Vec<&Artifact> = set.with_role(Role::RequirementsCache).collect();
    let lacking: Vec<&Line> = parsed
        .lines
        .iter()
        .filter(|l| staged_elsewhere(&cache, l, platform))
        .collect();
    if lacking.is_empty() || indexes.urls.is_empty() {
        return Ok(None);
    }
    let version = crate::direct::host::version_of(&ctx.python).ok_or_else(|| Error::LaunchPython {
        python: ctx.python.clone(),
        reason: format!("it does not run, and the wheels fetched for {} from a package index are for its Python version", platform.name()),
    })?;
    let env = markers(platform, &version, &ctx.python)?;
    let lacking: Vec<&Line> = lacking
        .into_iter()
        .filter(|l| l.requirement.evaluate_markers(&env, &[]))
        .collect();
    if lacking.is_empty() {
        return Ok(None);
    }
    let python = Version::from_str(&version).map_err(|e| Error::LaunchPython {
        python: ctx.python.clone(),
        reason: format!("its version {version} is not PEP 440: {e}"),
    })?;
    let fetched = fetch(&lacking, platform, (&indexes, &python), ctx).await?;
    let mut artifacts: Vec<Artifact> = Vec::with_capacity(set.artifacts.len() + fetched.len());
    let mut added = false;
    for a in &set.artifacts {
        if a.role == Role::RequirementsCache && !fits(&a.name, platform) {
            continue;
        }
        // The fetched wheels go where the cache is in manifest order.
        if !added && a.role > Role::RequirementsCache {
            artifacts.append(&mut fetched.clone());
            added = true;
        }
        artifacts.push(a.clone());
    }
    if !added {
        artifacts.extend(fetched);
    }
    Ok(Some(
        StagedSet::new(artifacts, set.dir.clone(), None).with_mode(set.mode.clone()),
    ))
}

/// The PEP 508 environment of the platform's Python.
fn markers(
    platform: &Platform,
    python: &str,
    launch: &Path,
) -> Result<pep508_rs::MarkerEnvironment> {
    let short: String = python.split('.').take(2).collect::<Vec<_>>().join(".");
    let builder = pep508_rs::MarkerEnvironmentBuilder {
        implementation_name: "cpython",
        implementation_version: python,
        os_name: "posix",
        platform_machine: platform.machine(),
        platform_python_implementation: "CPython",
        platform_release: "",
        platform_system: "Linux",
        platform_version: "",
        python_full_version: python,
        python_version: &short,
        sys_platform: "linux",
    };
    pep508_rs::MarkerEnvironment::try_from(builder).map_err(|e| Error::LaunchPython {
        python: launch.to_path_buf(),
        reason: format!("its version {python} is not PEP 440: {e}"),
    })
}

/// Whether a staged cache file can be installed on `platform`: an sdist,
/// a pure wheel, or a wheel for its machine.
fn fits(file: &str, platform: &Platform) -> bool {
    match WheelName::parse(file) {
        Some(w) => w
            .tags
            .iter()
            .any(|t| t.ends_with("-any") || t.ends_with(&format!("_{}", platform.machine()))),
        None => true,
    }
}

/// The version a line pins (`==`).
fn pinned(line: &Line) -> Option<&Version> {
    match &line.requirement.version_or_url {
        Some(VersionOrUrl::VersionSpecifier(specs)) => specs.iter().next().map(|s| s.version()),
        _ => None,
    }
}

/// Whether `line` is staged only for other machines: the staged cache has
/// files of its distribution at its version, and none installable on
/// `platform`. (A pin with no staged file is left to pip, as without
/// `--platform`.)
fn staged_elsewhere(cache: &[&Artifact], line: &Line, platform: &Platform) -> bool {
    let mine: Vec<&&Artifact> = cache.iter().filter(|a| is_of(&a.name, line)).collect();
    !mine.is_empty() && !mine.iter().any(|a| fits(&a.name, platform))
}

/// Whether the staged file `file` is `line`'s distribution at its version.
fn is_of(file: &str, line: &Line) -> bool {
    let stem = file
        .strip_suffix(".whl")
        .or_else(|| file.strip_suffix(".tar.gz"))
        .or_else(|| file.strip_suffix(".zip"));
    let Some(mut parts) = stem.map(|s| s.splitn(3, '-')) else {
        return false;
    };
    let (Some(name), Some(version)) = (parts.next(), parts.next()) else {
        return false;
    };
    crate::record::normalize(name) == line.key()
        && Version::from_str(version).ok().as_ref() == pinned(line)
}

/// Look every lacking requirement up on the indexes (refusing one none has
/// a wheel for, before any download), then download them: their artifacts.
async fn fetch(
    lacking: &[&Line],
    platform: &Platform,
    (indexes, python): (&config::Indexes, &Version),
    ctx: &Context<'_>,
) -> Result<Vec<Artifact>> {
    let netrc = netrc_text(ctx.settings);
    let client = fetch::client(indexes.cert.as_deref().map(Path::new))?;
    let indexes: Vec<fetch::Index> = indexes
        .urls
        .iter()
        .map(|u| fetch::Index::parse(u, netrc.as_deref()))
        .collect::<Result<_>>()?;
    let mut chosen = Vec::new();
    for line in lacking {
        if let Some(found) = lookup(line, platform, python, (&indexes, &client)).await? {
            chosen.push((*line, found));
        }
    }
    let mut out = Vec::new();
    for (line, (owner, link)) in chosen {
        let index = &indexes[owner];
        out.push(download(line, &link, platform, (index, &client), ctx).await?);
    }
    Ok(out)
}

/// The wheel `line` needs on `platform`, from every index's page: the
/// index it is on (its position) and its link (absolute); `None` for a
/// line that pins nothing.
async fn lookup(
    line: &Line,
    platform: &Platform,
    python: &Version,
    (indexes, client): (&[fetch::Index], &reqwest::Client),
) -> Result<Option<(usize, simple::Link)>> {
    let Some(version) = pinned(line) else {
        return Ok(None);
    };
    let mut links = Vec::new();
    let mut owners = Vec::new();
    for (i, index) in indexes.iter().enumerate() {
        for (url, mut link) in index.links(client, &line.key()).await? {
            link.url = url.to_string();
            links.push(link);
            owners.push(i);
        }
    }
    let wanted = simple::Wanted {
        key: &line.key(),
        version,
        python,
        hashes: &line.hashes,
    };
    let supported = supported(platform.machine(), python);
    let Some(best) = simple::choose(&links, &wanted, &supported) else {
        return Err(missing(line, platform, python, indexes, &links));
    };
    let at = links
        .iter()
        .position(|l| std::ptr::eq(l, best))
        .unwrap_or(0);
    Ok(Some((owners[at], best.clone())))
}

/// Download (or find in the cache) `link` for `line`: its artifact.
async fn download(
    line: &Line,
    link: &simple::Link,
    platform: &Platform,
    (index, client): (&fetch::Index, &reqwest::Client),
    ctx: &Context<'_>,
) -> Result<Artifact> {
    let url = reqwest::Url::parse(&link.url).map_err(|e| Error::PackageIndex {
        index: index.shown(),
        action: format!("reading the link to {}", link.filename),
        reason: e.to_string(),
        hint: "the index's page has a link prebuilder cannot follow; tell the index's owners"
            .into(),
        retry: false,
    })?;
    let check = |hex: &str| hash_allowed(line, &link.filename, hex, index);
    let known = match &link.sha256 {
        Some(hex) => vec![hex.clone()],
        None => line.hashes.clone(),
    };
    let (path, hex) = index
        .download(client, (&url, link), (&ctx.cache_dir, &known), &check)
        .await?;
    tracing::info!(
        "fetched {} for {} from {}",
        link.filename,
        platform.name(),
        index.shown()
    );
    Ok(Artifact {
        name: link.filename.clone(),
        size: std::fs::metadata(&path)
            .map_err(|e| Error::io(&path, e))?
            .len(),
        path,
        // A wheel's content digest is its sha256 (it is not a source archive).
        sha256: hex.clone(),
        content_digest: hex,
        role: Role::RequirementsCache,
        origin: None,
    })
}

/// A downloaded file's sha256 against the requirement's `--hash` values.
fn hash_allowed(line: &Line, file: &str, hex: &str, index: &fetch::Index) -> Result<()> {
    if line.hashes.is_empty() || line.hashes.iter().any(|h| h == hex) {
        return Ok(());
    }
    Err(Error::PackageIndex {
        index: index.shown(),
        action: format!("downloading {file} for requirement {}", line.text),
        reason: format!(
            "its sha256 is {hex}, which is none of the requirement's --hash values ({})",
            line.hashes.join(", ")
        ),
        hint: "the index serves other bytes than the ones the requirements file was locked with: check the index, or update the --hash values if the new file is trusted; nothing was built".into(),
        retry: false,
    })
}

/// The refusal for a requirement no index has a wheel for on `platform`.
fn missing(
    line: &Line,
    platform: &Platform,
    python: &Version,
    indexes: &[fetch::Index],
    links: &[simple::Link],
) -> Error {
    let seen: Vec<&str> = links
        .iter()
        .filter(|l| {
            WheelName::parse(&l.filename)
                .is_some_and(|w| crate::record::normalize(&w.name) == line.key())
        })
        .map(|l| l.filename.as_str())
        .take(6)
        .collect();
    let release = python.release();
    Error::PlatformRefused {
        platform: platform.name(),
        input: format!("requirement {}", line.text),
        reason: format!(
            "no package index has a wheel of it for {} (CPython {}.{}, manylinux2014_{} or older, or pure Python); asked: {}{}",
            platform.name(),
            release.first().copied().unwrap_or(3),
            release.get(1).copied().unwrap_or(0),
            platform.machine(),
            indexes.iter().map(fetch::Index::shown).collect::<Vec<_>>().join(", "),
            if seen.is_empty() { String::new() } else { format!(" (its wheels there: {})", seen.join(", ")) }
        ),
        hint: format!(
            "pin a version that has a wheel for {}, or download that platform's wheels yourself (`pip download --platform manylinux2014_{} --only-binary=:all: -r requirements.txt -d DIR`) and pass --requirements-cache {}=DIR; nothing was built",
            platform.machine(), platform.machine(), platform.name()
        ),
    }
}

/// The netrc file pip would read: `NETRC`, else `~/.netrc`.
fn netrc_text(settings: &Settings) -> Option<String> {
    let path = match settings.var("NETRC") {
        Some(p) => PathBuf::from(p),
        None => Path::new(settings.var("HOME")?).join(".netrc"),
    };
    std::fs::read_to_string(path).ok()
}

#[cfg(test)]
mod tests;
