//! The labels a result image carries for people and registries: the user's
//! `--label K=V` and the OCI annotations `org.opencontainers.image.*`
//! (`created`, `base.name`, `base.digest`, `source`, `revision`) where known.
//! ghcr.io, for one, links a package to its repository through `source`.
//!
//! Labels change the image, so they enter the result's key ([`keyed`]): the
//! content-addressed tag then names inputs *and* labels, and a relaunch with
//! other labels builds its own result instead of finding one that says
//! something else. Every value here is a function of the inputs (never the
//! wall clock), so identical inputs keep giving identical keys.

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::plan::Plan;

pub const OCI_CREATED: &str = "org.opencontainers.image.created";
pub const OCI_BASE_NAME: &str = "org.opencontainers.image.base.name";
pub const OCI_BASE_DIGEST: &str = "org.opencontainers.image.base.digest";
pub const OCI_SOURCE: &str = "org.opencontainers.image.source";
pub const OCI_REVISION: &str = "org.opencontainers.image.revision";

/// What the OCI labels are derived from; each `None` leaves its label out
/// (unless a `--label` sets it).
#[derive(Debug, Default, Clone)]
pub struct Origin {
    pub base_name: String,
    /// A registry digest of the base (`repo@sha256:…` or `sha256:…`).
    pub base_digest: Option<String>,
    /// `SOURCE_DATE_EPOCH`, seconds: the `created` label, when set.
    pub source_date_epoch: Option<u64>,
    pub source: Option<String>,
    pub revision: Option<String>,
}

/// What the result's labels come from, gathered by the command from its
/// flags and environment (the build itself reads neither).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Request {
    /// `--label`s, checked.
    pub user: Vec<(String, String)>,
    pub source: Option<String>,
    pub revision: Option<String>,
    pub source_date_epoch: Option<u64>,
}

impl Request {
    /// From `--label`s (checked), the environment (`SOURCE_DATE_EPOCH`, the
    /// CI's variables) and the project directory of `--setup-file` (its git
    /// checkout, when the CI names no source).
    pub fn new(
        labels: &[String],
        settings: &crate::settings::Settings,
        setup_file: Option<&Path>,
    ) -> Result<Request> {
        let user = labels
            .iter()
            .map(|l| parse(l))
            .collect::<Result<Vec<_>>>()?;
        let env = |k: &str| settings.var(k).map(str::to_string);
        let project = setup_file.map(|p| {
            if p.is_dir() {
                p.to_path_buf()
            } else {
                p.parent()
                    .map_or_else(|| p.to_path_buf(), Path::to_path_buf)
            }
        });
        let (source, revision) = source_and_revision(env, project.as_deref(), run_git);
        Ok(Request {
            user,
            source,
            revision,
            source_date_epoch: settings.source_date_epoch_seconds(),
        })
    }
}

/// The result's labels for `request` on the base `base_ref` (as named),
/// whose repo digests the engine (or, before a pull, its registry) reported.
pub fn for_base(
    request: &Request,
    base_ref: &str,
    repo_digests: &[String],
) -> BTreeMap<String, String> {
    let origin = Origin {
        base_name: base_ref.to_string(),
        base_digest: base_digest(base_ref, repo_digests),
        source_date_epoch: request.source_date_epoch,
        source: request.source.clone(),
        revision: request.revision.clone(),
    };
    labels(&origin, &request.user)
}

/// Give the plan's result (its last layer) `labels`, folding them into its key.
pub fn apply(plan: &mut Plan<'_>, labels: BTreeMap<String, String>) {
    if let Some(last) = plan.layers.last_mut() {
        last.key = keyed(&last.key, &labels);
        last.labels = labels;
    }
}

/// The base's registry digest, only where it is a fact about the base as
/// named: the digest in a `repo@sha256:…` reference, else the repo digest the
/// engine recorded for that same repository (a pull). Never another
/// repository's: those come and go as images are pushed around, and the
/// label enters the key, which must not change while the inputs do not.
pub fn base_digest(reference: &str, repo_digests: &[String]) -> Option<String> {
    if let Some((_, digest)) = reference.split_once('@') {
        return Some(digest.to_string());
    }
    let repo = reference
        .rsplit_once(':')
        .filter(|(_, tag)| !tag.contains('/'))
        .map_or(reference, |(r, _)| r);
    repo_digests.iter().find_map(|d| {
        d.split_once('@')
            .filter(|(r, _)| *r == repo)
            .map(|(_, d)| d.to_string())
    })
}

/// `git -C dir ARGS`, its trimmed stdout when it succeeds.
fn run_git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// Parse and check one `--label K=V`.
pub fn parse(arg: &str) -> Result<(String, String)> {
    let bad = |why: &str| {
        Error::Usage {
        message: format!("--label {arg:?} is not valid: {why}"),
        hint: "write --label KEY=VALUE, KEY in reverse-DNS form such as org.example.team=data (the prebuilder namespace is reserved)".into(),
    }
    };
    let (key, value) = arg.split_once('=').ok_or_else(|| bad("it has no `=`"))?;
    if key.is_empty() {
        return Err(bad("the key is empty"));
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("the key contains whitespace or control characters"));
    }
    if key == "prebuilder" || key.starts_with("prebuilder.") {
        return Err(bad(
            "keys under `prebuilder` are prebuilder's own (the cache reads them)",
        ));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(bad("the value contains control characters"));
    }
    Ok((key.to_string(), value.to_string()))
}

/// The result's labels: OCI labels where known, then `--label`s, which win.
pub fn labels(origin: &Origin, user: &[(String, String)]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    // Only a date the user pinned: the label enters the result's key, and a
    // fresh runner computes that key from the base's registry manifest,
    // before it has the base's own `created` (the config's `created` is the
    // layers' epoch, see image::reproducible).
    if let Some(c) = origin.source_date_epoch.map(crate::image::rfc3339) {
        out.insert(OCI_CREATED.to_string(), c);
    }
    if !origin.base_name.is_empty() {
        out.insert(OCI_BASE_NAME.to_string(), origin.base_name.clone());
    }
    if let Some(d) = &origin.base_digest {
        // OCI wants the digest alone, not `repo@digest`.
        let d = d.rsplit_once('@').map_or(d.as_str(), |(_, d)| d);
        out.insert(OCI_BASE_DIGEST.to_string(), d.to_string());
    }
    if let Some(s) = &origin.source {
        out.insert(OCI_SOURCE.to_string(), s.clone());
    }
    if let Some(r) = &origin.revision {
        out.insert(OCI_REVISION.to_string(), r.clone());
    }
    for (k, v) in user {
        out.insert(k.clone(), v.clone());
    }
    out
}

/// The result's key with its labels folded in: unchanged when there are none.
pub fn keyed(key: &str, labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return key.to_string();
    }
    let mut h = Sha256::new();
    h.update(b"prebuilder-labels-v1\0");
    h.update(key.as_bytes());
    for (k, v) in labels {
        h.update(b"\0");
        h.update(k.as_bytes());
        h.update(b"=");
        h.update(v.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Where the source and revision come from, first found wins: GitHub
/// Actions' environment, GitLab CI's, then the git checkout holding the
/// pipeline's project (`--setup-file`).
pub fn source_and_revision(
    env: impl Fn(&str) -> Option<String>,
    project: Option<&Path>,
    git: impl Fn(&Path, &[&str]) -> Option<String>,
) -> (Option<String>, Option<String>) {
    let set = |k: &str| env(k).filter(|v| !v.is_empty());
    if let (Some(server), Some(repo)) = (set("GITHUB_SERVER_URL"), set("GITHUB_REPOSITORY")) {
        return (
            Some(format!("{}/{repo}", server.trim_end_matches('/'))),
            set("GITHUB_SHA"),
        );
    }
    if let Some(url) = set("CI_PROJECT_URL") {
        return (Some(url), set("CI_COMMIT_SHA"));
    }
    let Some(dir) = project else {
        return (None, None);
    };
    let revision = git(dir, &["rev-parse", "HEAD"]);
    if revision.is_none() {
        return (None, None);
    }
    let source = git(dir, &["remote", "get-url", "origin"]).and_then(|u| public_url(&u));
    (source, revision)
}

/// A remote URL as a label may show it: credentials removed (a token in an
/// HTTPS remote must never reach an image), `git@host:path` as HTTPS, no
/// `.git`. `None` for remotes that are local paths.
pub fn public_url(remote: &str) -> Option<String> {
    let remote = remote.trim();
    let url = if let Some((scheme, rest)) = remote.split_once("://") {
        let rest = rest.split_once('@').filter(|(auth, _)| !auth.contains('/'));
        let host_path = rest.map_or_else(
            || remote.split_once("://").map_or("", |(_, r)| r),
            |(_, r)| r,
        );
        let scheme = if scheme == "ssh" || scheme == "git" {
            "https"
        } else {
            scheme
        };
        if scheme == "file" {
            return None;
        }
        format!("{scheme}://{host_path}")
    } else if let Some((user_host, path)) = remote.split_once(':') {
        // scp-like `git@github.com:owner/repo.git`
        let host = user_host.rsplit_once('@').map_or(user_host, |(_, h)| h);
        if host.is_empty() || host.contains('/') {
            return None;
        }
        format!("https://{host}/{}", path.trim_start_matches('/'))
    } else {
        return None;
    };
    Some(url.trim_end_matches(".git").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_flags_are_checked() {
        assert_eq!(
            parse("org.example.team=data eng").unwrap(),
            ("org.example.team".into(), "data eng".into())
        );
        assert_eq!(parse("k=").unwrap(), ("k".into(), "".into()));
        assert_eq!(parse("k=a=b").unwrap(), ("k".into(), "a=b".into()));
        for bad in [
            "novalue",
            "=v",
            "a b=c",
            "prebuilder.key=x",
            "prebuilder=x",
            "k=a\nb",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.to_string().contains("--label"), "{bad}: {e}");
        }
    }

    #[test]
    fn oci_labels_where_known_and_user_labels_win() {
        let origin = Origin {
            base_name: "apache/beam_python3.11_sdk:2.77.0".into(),
            base_digest: Some("apache/beam_python3.11_sdk@sha256:abc".into()),
            source_date_epoch: None,
            source: Some("https://github.com/o/r".into()),
            revision: None,
        };
        let l = labels(
            &origin,
            &[(OCI_SOURCE.into(), "https://example.com/x".into())],
        );
        assert!(!l.contains_key(OCI_CREATED), "no date unless pinned");
        assert_eq!(l[OCI_BASE_NAME], "apache/beam_python3.11_sdk:2.77.0");
        assert_eq!(l[OCI_BASE_DIGEST], "sha256:abc");
        assert_eq!(l[OCI_SOURCE], "https://example.com/x", "--label wins");
        assert!(!l.contains_key(OCI_REVISION), "unknown: left out");
        let epoch = Origin {
            source_date_epoch: Some(0),
            ..origin
        };
        assert_eq!(labels(&epoch, &[])[OCI_CREATED], "1970-01-01T00:00:00Z");
    }

    #[test]
    fn labels_enter_the_key_deterministically() {
        let key = "ab".repeat(32);
        assert_eq!(keyed(&key, &BTreeMap::new()), key);
        let a = BTreeMap::from([("k".to_string(), "v".to_string())]);
        let b = BTreeMap::from([("k".to_string(), "w".to_string())]);
        assert_eq!(keyed(&key, &a), keyed(&key, &a.clone()));
        assert_ne!(keyed(&key, &a), keyed(&key, &b));
        assert_ne!(keyed(&key, &a), key);
        assert_eq!(keyed(&key, &a).len(), 64);
    }

    #[test]
    fn source_and_revision_from_ci_then_git() {
        let no_git = |_: &Path, _: &[&str]| None;
        let gh = |k: &str| match k {
            "GITHUB_SERVER_URL" => Some("https://github.com".to_string()),
            "GITHUB_REPOSITORY" => Some("o/r".to_string()),
            "GITHUB_SHA" => Some("f00d".to_string()),
            _ => None,
        };
        assert_eq!(
            source_and_revision(gh, None, no_git),
            (Some("https://github.com/o/r".into()), Some("f00d".into()))
        );
        let gl = |k: &str| match k {
            "CI_PROJECT_URL" => Some("https://gitlab.com/g/p".to_string()),
            "CI_COMMIT_SHA" => Some("beef".to_string()),
            _ => None,
        };
        assert_eq!(
            source_and_revision(gl, None, no_git),
            (Some("https://gitlab.com/g/p".into()), Some("beef".into()))
        );
        let git = |_: &Path, args: &[&str]| match args {
            ["rev-parse", "HEAD"] => Some("c0ffee".to_string()),
            ["remote", "get-url", "origin"] => {
                Some("https://bob:tok-secret@github.com/o/r.git".to_string())
            }
            _ => None,
        };
        assert_eq!(
            source_and_revision(|_| None, Some(Path::new("/p")), git),
            (Some("https://github.com/o/r".into()), Some("c0ffee".into()))
        );
        assert_eq!(
            source_and_revision(|_| None, Some(Path::new("/p")), no_git),
            (None, None)
        );
    }

    #[test]
    fn remote_urls_lose_credentials() {
        assert_eq!(
            public_url("https://user:tok@github.com/o/r.git").as_deref(),
            Some("https://github.com/o/r")
        );
        assert_eq!(
            public_url("git@github.com:o/r.git").as_deref(),
            Some("https://github.com/o/r")
        );
        assert_eq!(
            public_url("ssh://git@gitlab.com/g/p.git").as_deref(),
            Some("https://gitlab.com/g/p")
        );
        assert_eq!(
            public_url("https://github.com/o/r").as_deref(),
            Some("https://github.com/o/r")
        );
        assert_eq!(public_url("/srv/git/r.git"), None);
        assert_eq!(public_url("file:///srv/git/r.git"), None);
    }

    #[test]
    fn base_digest_only_from_the_reference_or_its_own_repository() {
        assert_eq!(
            base_digest("apache/beam@sha256:aa", &[]).as_deref(),
            Some("sha256:aa")
        );
        let digests = [
            "127.0.0.1:5000/other@sha256:bb".to_string(),
            "apache/beam@sha256:cc".to_string(),
        ];
        assert_eq!(
            base_digest("apache/beam:2.77.0", &digests).as_deref(),
            Some("sha256:cc")
        );
        assert_eq!(base_digest("localhost:5000/beam", &digests[..1]), None);
        assert_eq!(base_digest("fixture/beam:1", &digests[..1]), None);
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(crate::image::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(crate::image::rfc3339(1_795_219_199), "2026-11-20T23:59:59Z");
    }
}
