//! Where each installed distribution came from, decided on the host from the
//! staged inputs: pip records no source for a requirement it found with
//! `--find-links`, but the staged file names say which wheel (or sdist) is
//! which distribution, and a wheel's tags which of several builds. A package
//! installed from a path (extra packages, `workflow.tar.gz`, the SDK) names
//! its file in pip's `direct_url.json`.
//!
//! Each distribution the setup listed gets the layer that installed it (or
//! [`IN_BASE`]) and, when one matches, the staged artifact with its digest:
//! the sha256 of the bytes, except Beam's regenerated `workflow.tar.gz`, whose
//! bytes change on every launch: its *content* digest, the one the cache key
//! uses ([`DigestOf::Content`]). Pure.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{normalize, Record};
use crate::stage::{Artifact, Role};

/// The `layer` of a distribution the base image already had.
pub const IN_BASE: &str = "base";

/// One installed distribution in a record (format 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Distribution {
    /// As its metadata says (the name is the record's key, normalized).
    pub name: String,
    pub version: String,
    /// PEP 639's `License-Expression`, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_expression: Option<String>,
    /// The older free-text `License` field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// The `License ::` trove classifiers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classifiers: Vec<String>,
    /// The layer whose setup installed it, or [`IN_BASE`].
    pub layer: String,
    /// The staged artifact it was installed from, when one matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Source>,
}

/// A staged artifact a distribution was installed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// Its staged name.
    pub name: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// What the digest covers.
    pub of: DigestOf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DigestOf {
    /// The sha256 of the file's bytes.
    Bytes,
    /// prebuilder's content digest of a source archive (sorted entries, no
    /// timestamps: `prebuilder digest`), the one its cache key uses.
    Content,
}

/// A distribution as the setup script lists it (`# dist {…}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Listed {
    pub name: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub license_expression: Option<String>,
    #[serde(default)]
    pub license: Option<String>,
    #[serde(default)]
    pub classifiers: Vec<String>,
    /// pip's `direct_url.json` `url`, for a package installed from a path or URL.
    #[serde(default)]
    pub direct_url: Option<String>,
    /// The `Tag:` lines of its `WHEEL` file.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// Every distribution listed after `layer`'s setup, with its origin.
/// `before`: what the setup started from (normalized name → version);
/// `parent`: the record of the layer below, whose origins carry over for
/// what this setup left as it was.
pub fn attribute(
    layer: &str,
    artifacts: &[&Artifact],
    listed: Vec<Listed>,
    before: &BTreeMap<String, String>,
    parent: Option<&Record>,
) -> BTreeMap<String, Distribution> {
    let files: Vec<(&Artifact, Option<FileName>)> =
        artifacts.iter().map(|a| (*a, FileName::parse(a))).collect();
    let mut out = BTreeMap::new();
    for l in listed {
        let key = normalize(&l.name);
        let version = l.version.clone().unwrap_or_default();
        let found = by_direct_url(&files, l.direct_url.as_deref())
            .or_else(|| by_file_name(&files, &key, &version, &l.tags));
        let below = parent
            .and_then(|p| p.distributions.as_ref())
            .and_then(|d| d.get(&key))
            .filter(|d| d.version == version);
        let (layer, artifact) = match (found, below) {
            (Some(a), _) => (layer.to_string(), Some(source(a))),
            // Left as the layer below recorded it.
            (None, Some(d)) => (d.layer.clone(), d.artifact.clone()),
            (None, None) if before.get(&key) == Some(&version) => (IN_BASE.to_string(), None),
            (None, None) => (layer.to_string(), None),
        };
        out.insert(
            key,
            Distribution {
                name: l.name,
                version,
                license_expression: l.license_expression.filter(|s| !s.trim().is_empty()),
                license: l.license.filter(|s| !s.trim().is_empty()),
                classifiers: l.classifiers,
                layer,
                artifact,
            },
        );
    }
    out
}

fn source(a: &Artifact) -> Source {
    // Only the workflow's bytes change from launch to launch with the
    // same content (Beam regenerates it); any other file is named by its bytes.
    if a.role == Role::Workflow {
        Source {
            name: a.name.clone(),
            digest: format!("sha256:{}", a.content_digest),
            of: DigestOf::Content,
        }
    } else {
        Source {
            name: a.name.clone(),
            digest: format!("sha256:{}", a.sha256),
            of: DigestOf::Bytes,
        }
    }
}

/// The artifact a `file:` direct URL names (by its staged name, the end of
/// the URL's path).
fn by_direct_url<'a>(
    files: &[(&'a Artifact, Option<FileName>)],
    url: Option<&str>,
) -> Option<&'a Artifact> {
    let path = url?.strip_prefix("file://")?;
    let path = percent_decode(path);
    files
        .iter()
        .map(|(a, _)| *a)
        .find(|a| path.ends_with(&format!("/{}", a.name)))
}

/// The one staged file named for distribution `key` at `version`: among
/// wheels, those built for a tag the installed one has; `None` when none or
/// several remain (no guess).
fn by_file_name<'a>(
    files: &[(&'a Artifact, Option<FileName>)],
    key: &str,
    version: &str,
    tags: &[String],
) -> Option<&'a Artifact> {
    let version = normalize_version(version);
    let candidates: Vec<(&Artifact, &FileName)> = files
        .iter()
        .filter_map(|(a, f)| f.as_ref().map(|f| (*a, f)))
        .filter(|(_, f)| f.name == key && f.version == version)
        .collect();
    if candidates.len() <= 1 {
        return candidates.first().map(|(a, _)| *a);
    }
    let installed: BTreeSet<&str> = tags.iter().map(String::as_str).collect();
    let fitting: Vec<&Artifact> = candidates
        .iter()
        .filter(|(_, f)| f.tags.iter().any(|t| installed.contains(t.as_str())))
        .map(|(a, _)| *a)
        .collect();
    match fitting.as_slice() {
        [one] => Some(one),
        _ => None,
    }
}

/// What a wheel's or sdist's file name says (PEP 427 / PEP 625, and the
/// older `name-version.tar.gz`).
#[derive(Debug, PartialEq, Eq)]
struct FileName {
    /// Normalized.
    name: String,
    version: String,
    /// A wheel's compatibility tags, expanded (`py2.py3-none-any` is two).
    tags: Vec<String>,
}

impl FileName {
    fn parse(a: &Artifact) -> Option<FileName> {
        if !matches!(
            a.role,
            Role::Sdk | Role::RequirementsCache | Role::ExtraPackage
        ) {
            return None;
        }
        let file = a.name.rsplit('/').next().unwrap_or(&a.name);
        if let Some(stem) = file.strip_suffix(".whl") {
            return Self::wheel(stem);
        }
        let stem = [".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zip", ".tar"]
            .iter()
            .find_map(|ext| file.strip_suffix(ext))?;
        let (name, version) = stem.rsplit_once('-')?;
        if !version.starts_with(|c: char| c.is_ascii_digit()) {
            return None;
        }
        Some(FileName {
            name: normalize(name),
            version: normalize_version(version),
            tags: Vec::new(),
        })
    }

    fn wheel(stem: &str) -> Option<FileName> {
        let parts: Vec<&str> = stem.split('-').collect();
        let (name, version, python, abi, platform) = match parts.as_slice() {
            [n, v, py, abi, plat] | [n, v, _, py, abi, plat] => (*n, *v, *py, *abi, *plat),
            _ => return None,
        };
        let mut tags = Vec::new();
        for p in python.split('.') {
            for a in abi.split('.') {
                for pl in platform.split('.') {
                    tags.push(format!("{p}-{a}-{pl}"));
                }
            }
        }
        Some(FileName {
            name: normalize(name),
            version: normalize_version(version),
            tags,
        })
    }
}

/// Versions as file names write them (`_` for `-`), case-insensitively.
fn normalize_version(v: &str) -> String {
    v.trim().replace('_', "-").to_ascii_lowercase()
}

/// `%XX` escapes of a URL path decoded (pip writes file URLs with them).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn artifact(name: &str, role: Role, sha: &str, content: &str) -> Artifact {
        Artifact {
            name: name.into(),
            path: PathBuf::from(name),
            size: 1,
            sha256: sha.into(),
            content_digest: content.into(),
            role,
            origin: None,
        }
    }

    fn listed(name: &str, version: &str) -> Listed {
        Listed {
            name: name.into(),
            version: Some(version.into()),
            ..Default::default()
        }
    }

    #[test]
    fn wheel_and_sdist_names_are_read() {
        let w = artifact(
            "python_slugify-8.0.4-py2.py3-none-any.whl",
            Role::RequirementsCache,
            "a",
            "a",
        );
        let f = FileName::parse(&w).unwrap();
        assert_eq!(f.name, "python-slugify");
        assert_eq!(f.version, "8.0.4");
        assert_eq!(f.tags, ["py2-none-any", "py3-none-any"]);
        let b = artifact(
            "numpy-2.2.6-1-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
            Role::RequirementsCache,
            "a",
            "a",
        );
        let f = FileName::parse(&b).unwrap();
        assert_eq!((f.name.as_str(), f.version.as_str()), ("numpy", "2.2.6"));
        assert_eq!(f.tags.len(), 2);
        let s = artifact(
            "Text-Unidecode-1.3.tar.gz",
            Role::RequirementsCache,
            "a",
            "a",
        );
        let f = FileName::parse(&s).unwrap();
        assert_eq!(
            (f.name.as_str(), f.version.as_str()),
            ("text-unidecode", "1.3")
        );
        for not in ["requirements.txt", "x.whl", "noversion.tar.gz"] {
            assert_eq!(
                FileName::parse(&artifact(not, Role::RequirementsCache, "a", "a")),
                None,
                "{not}"
            );
        }
        // Only roles that install packages are read.
        assert_eq!(
            FileName::parse(&artifact(
                "six-1.0-py3-none-any.whl",
                Role::FileToStage,
                "a",
                "a"
            )),
            None
        );
    }

    #[test]
    fn each_distribution_gets_its_wheel_its_layer_or_the_base() {
        let six = artifact(
            "six-1.17.0-py2.py3-none-any.whl",
            Role::RequirementsCache,
            "5ix",
            "5ix",
        );
        let wf = artifact("workflow.tar.gz", Role::Workflow, "bytes", "content");
        let req = artifact("requirements.txt", Role::Requirements, "r", "r");
        let mut demo = listed("prebuilder_demo", "0.1");
        demo.direct_url = Some("file:///opt/apache/beam/artifacts/workflow.tar.gz".into());
        let before = BTreeMap::from([
            ("pip".to_string(), "23.2.1".to_string()),
            ("six".to_string(), "1.16.0".to_string()),
        ]);
        let d = attribute(
            "dependencies",
            &[&req, &six, &wf],
            vec![
                listed("Six", "1.17.0"),
                listed("pip", "23.2.1"),
                demo,
                listed("from-an-index", "2.0"),
            ],
            &before,
            None,
        );
        let six = &d["six"];
        assert_eq!(six.layer, "dependencies");
        assert_eq!(
            six.artifact,
            Some(Source {
                name: "six-1.17.0-py2.py3-none-any.whl".into(),
                digest: "sha256:5ix".into(),
                of: DigestOf::Bytes
            })
        );
        assert_eq!(d["pip"].layer, IN_BASE);
        assert_eq!(d["pip"].artifact, None);
        let demo = &d["prebuilder-demo"];
        assert_eq!(demo.name, "prebuilder_demo");
        assert_eq!(
            demo.artifact,
            Some(Source {
                name: "workflow.tar.gz".into(),
                digest: "sha256:content".into(),
                of: DigestOf::Content
            }),
            "the workflow by the digest its key uses"
        );
        assert_eq!(d["from-an-index"].layer, "dependencies");
        assert_eq!(d["from-an-index"].artifact, None);
    }

    #[test]
    fn what_a_layer_left_keeps_the_origin_the_parent_recorded() {
        let parent_dist = Distribution {
            name: "six".into(),
            version: "1.17.0".into(),
            license_expression: None,
            license: None,
            classifiers: Vec::new(),
            layer: "dependencies".into(),
            artifact: Some(Source {
                name: "six.whl".into(),
                digest: "sha256:5ix".into(),
                of: DigestOf::Bytes,
            }),
        };
        let parent = Record {
            format: super::super::FORMAT,
            layer: "dependencies".into(),
            key: "k".into(),
            base: "sha256:b".into(),
            boot_from: None,
            python: None,
            inputs: BTreeMap::new(),
            packages: Some(BTreeMap::new()),
            distributions: Some(BTreeMap::from([("six".to_string(), parent_dist.clone())])),
        };
        let before = BTreeMap::from([
            ("six".to_string(), "1.17.0".to_string()),
            ("pip".to_string(), "23.2.1".to_string()),
        ]);
        let d = attribute(
            "application",
            &[],
            vec![listed("six", "1.17.0"), listed("pip", "23.2.1")],
            &before,
            Some(&parent),
        );
        assert_eq!(d["six"].layer, "dependencies");
        assert_eq!(d["six"].artifact, parent_dist.artifact);
        assert_eq!(d["pip"].layer, IN_BASE);
        // An upgrade in this layer is this layer's, whatever the parent said.
        let d = attribute(
            "application",
            &[],
            vec![listed("six", "1.18.0")],
            &before,
            Some(&parent),
        );
        assert_eq!(d["six"].layer, "application");
    }

    #[test]
    fn several_builds_of_one_version_are_told_apart_by_tags_or_not_guessed() {
        let a = artifact(
            "np-1.0-cp311-cp311-manylinux2014_x86_64.whl",
            Role::RequirementsCache,
            "a",
            "a",
        );
        let b = artifact(
            "np-1.0-cp312-cp312-manylinux2014_x86_64.whl",
            Role::RequirementsCache,
            "b",
            "b",
        );
        let mut l = listed("np", "1.0");
        l.tags = vec!["cp312-cp312-manylinux2014_x86_64".into()];
        let d = attribute("dependencies", &[&a, &b], vec![l], &BTreeMap::new(), None);
        assert_eq!(d["np"].artifact.as_ref().unwrap().digest, "sha256:b");
        let d = attribute(
            "dependencies",
            &[&a, &b],
            vec![listed("np", "1.0")],
            &BTreeMap::new(),
            None,
        );
        assert_eq!(d["np"].artifact, None, "no tags: no guess");
    }

    #[test]
    fn direct_urls_are_matched_decoded() {
        let a = artifact("my pkg-1.0-py3-none-any.whl", Role::ExtraPackage, "e", "e");
        let mut l = listed("my-pkg", "1.0");
        l.direct_url =
            Some("file:///opt/apache/beam/artifacts/my%20pkg-1.0-py3-none-any.whl".into());
        let d = attribute("application", &[&a], vec![l], &BTreeMap::new(), None);
        assert_eq!(d["my-pkg"].artifact.as_ref().unwrap().name, a.name);
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%41%zz"), "A%zz");
    }
}
