//! `prebuilder verify`'s judgement, pure: whether a pushed image's layers,
//! its record and the documents attached to it agree. Each check says what
//! it compared; the image passes when every check does.
//!
//! - layers: the manifest names as many layers as the config has diff ids,
//!   and the top layer (read through) is the one the config names;
//! - record: the record file in the top layer is the one the label holds
//!   (as far as a size-bounded label holds it), for the key the label names;
//! - provenance: attached, about this digest, naming the record's inputs by
//!   the same digests and the record's base;
//! - SBOM: at least one attached, and each lists the record's packages at
//!   the record's versions.

use std::collections::BTreeMap;

use serde::Serialize;

use super::image::Fetched;
use super::provenance;
use super::Kind;
use crate::record::{normalize, Record};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub image: String,
    pub digest: String,
    pub checks: Vec<Check>,
    /// Every check passed.
    pub agree: bool,
}

impl Verdict {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    pub fn to_text(&self) -> String {
        let mut out = format!("{}@{}\n", self.image, self.digest);
        for c in &self.checks {
            out.push_str(&format!(
                "  {:<4} {:<22} {}\n",
                if c.ok { "ok" } else { "FAIL" },
                c.name,
                c.detail
            ));
        }
        out.push_str(if self.agree {
            "layers, record and attestations agree\n"
        } else {
            "they do NOT agree\n"
        });
        out
    }

    pub fn failed(&self) -> usize {
        self.checks.iter().filter(|c| !c.ok).count()
    }
}

/// Read `reference` of `repository` from `registry` (with its top layer;
/// nothing is pulled) and its attachments, and judge them.
pub async fn judge<R: crate::registry::Manifests>(
    registry: &R,
    repository: &str,
    reference: &str,
    scratch: &std::path::Path,
) -> crate::error::Result<Verdict> {
    let fetched =
        super::image::from_registry(registry, repository, reference, scratch, true).await?;
    let digest = fetched.manifest.digest.clone();
    let provenance = super::attach::fetch(registry, &digest, Kind::Provenance, scratch).await?;
    let mut sboms = Vec::new();
    for kind in [Kind::Spdx, Kind::CycloneDx] {
        if let Some(bytes) = super::attach::fetch(registry, &digest, kind, scratch).await? {
            sboms.push((kind, bytes));
        }
    }
    Ok(verify(repository, &fetched, provenance.as_deref(), &sboms))
}

/// The exit status: a disagreement is `Error::Disagree` (1).
pub fn verdict(v: &Verdict) -> crate::error::Result<()> {
    if v.agree {
        Ok(())
    } else {
        Err(crate::error::Error::Disagree {
            image: format!("{}@{}", v.image, v.digest),
            failed: v.failed(),
        })
    }
}

fn check(name: &'static str, ok: bool, detail: impl Into<String>) -> Check {
    Check {
        name,
        ok,
        detail: detail.into(),
    }
}

/// Judge `fetched` (read with its top layer) against the attached
/// `provenance` and `sboms` (each kind's bytes as attached).
pub fn verify(
    image: &str,
    fetched: &Fetched,
    provenance: Option<&[u8]>,
    sboms: &[(Kind, Vec<u8>)],
) -> Verdict {
    let digest = &fetched.manifest.digest;
    let record = &fetched.described.record;
    let mut checks = vec![layers(fetched), record_check(fetched)];
    checks.extend(provenance_checks(digest, record, provenance));
    if sboms.is_empty() {
        checks.push(check("sbom", false, "no SBOM is attached"));
    }
    for (kind, bytes) in sboms {
        checks.push(sbom_check(*kind, bytes, record));
    }
    let agree = checks.iter().all(|c| c.ok);
    Verdict {
        image: image.to_string(),
        digest: digest.clone(),
        checks,
        agree,
    }
}

fn layers(f: &Fetched) -> Check {
    let (blobs, diff_ids) = (f.layers.layers.len(), f.diff_ids.len());
    if blobs != diff_ids {
        return check(
            "layers",
            false,
            format!("the manifest names {blobs} layer(s), the config {diff_ids}"),
        );
    }
    match (&f.top, f.diff_ids.last()) {
        (Some(top), Some(want)) if top.diff_id == *want => check(
            "layers",
            true,
            format!("{blobs} layer(s); the top one is {want}"),
        ),
        (Some(top), Some(want)) => check(
            "layers",
            false,
            format!(
                "the top layer unpacks to {}, the config says {want}",
                top.diff_id
            ),
        ),
        _ => check("layers", false, "the image has no layer to read"),
    }
}

fn record_check(f: &Fetched) -> Check {
    let file = f
        .top
        .as_ref()
        .and_then(|t| t.record.as_deref())
        .map(|b| Record::parse(&String::from_utf8_lossy(b)));
    let key = f.described.labels.get(crate::engine::LABEL_KEY);
    match (&f.label, file) {
        (_, Some(Err(e))) => check(
            "record",
            false,
            format!("the record file is not valid: {e}"),
        ),
        (Some(Err(e)), _) => check(
            "record",
            false,
            format!("the record label is not valid: {e}"),
        ),
        (Some(Ok(label)), Some(Ok(file))) => {
            let mut differ = Vec::new();
            if label.key != file.key || label.layer != file.layer || label.base != file.base {
                differ.push("key, layer or base");
            }
            if label.packages.is_some() && label.packages != file.packages {
                differ.push("packages");
            }
            if !label.inputs.is_empty() && label.inputs != file.inputs {
                differ.push("inputs");
            }
            if label.distributions.is_some() && label.distributions != file.distributions {
                differ.push("distributions");
            }
            if key.is_some_and(|k| *k != file.key) {
                differ.push("the key label");
            }
            if differ.is_empty() {
                check(
                    "record",
                    true,
                    format!(
                        "the label and the top layer's file agree ({} package(s))",
                        file.packages.as_ref().map_or(0, BTreeMap::len)
                    ),
                )
            } else {
                check(
                    "record",
                    false,
                    format!(
                        "the label and the top layer's file differ: {}",
                        differ.join(", ")
                    ),
                )
            }
        }
        (None, Some(Ok(_))) => check("record", false, "the image has no record label"),
        (_, None) => check(
            "record",
            false,
            format!("the top layer has no {}", crate::record::RECORD_FILE),
        ),
    }
}

fn provenance_checks(digest: &str, record: &Record, bytes: Option<&[u8]>) -> Vec<Check> {
    let Some(bytes) = bytes else {
        return vec![check("provenance", false, "no provenance is attached")];
    };
    let claims = match provenance::claims(bytes) {
        Ok(c) => c,
        Err(e) => return vec![check("provenance", false, format!("malformed: {e}"))],
    };
    let mut out = vec![check(
        "provenance subject",
        claims.subjects.iter().any(|s| s == digest),
        format!("about {}", claims.subjects.join(", ")),
    )];
    let inputs: usize = record.inputs.values().map(BTreeMap::len).sum();
    out.push(if claims.inputs == record.inputs {
        check(
            "provenance inputs",
            true,
            format!("{inputs} input(s), each at the record's digest"),
        )
    } else {
        check(
            "provenance inputs",
            false,
            differences(&flatten(&record.inputs), &flatten(&claims.inputs)),
        )
    });
    out.push(check(
        "provenance base",
        claims.base.as_deref() == Some(record.base.as_str()),
        format!(
            "{} (the record's: {})",
            claims.base.as_deref().unwrap_or("none"),
            record.base
        ),
    ));
    out
}

fn flatten(m: &BTreeMap<String, BTreeMap<String, String>>) -> BTreeMap<String, String> {
    m.iter()
        .flat_map(|(layer, inputs)| {
            inputs
                .iter()
                .map(move |(name, d)| (format!("{layer}/{name}"), d.clone()))
        })
        .collect()
}

/// `record` vs `claimed`, in a few words.
fn differences(record: &BTreeMap<String, String>, claimed: &BTreeMap<String, String>) -> String {
    let c = crate::record::Changes::between(record, claimed);
    let mut parts = Vec::new();
    for n in c.removed.keys() {
        parts.push(format!("{n} missing"));
    }
    for n in c.added.keys() {
        parts.push(format!("{n} not in the record"));
    }
    for (n, ch) in &c.changed {
        parts.push(format!("{n}: {} vs the record's {}", ch.to, ch.from));
    }
    parts.join("; ")
}

/// The packages an SBOM lists: normalized name → version (empty when none).
pub fn sbom_packages(kind: Kind, bytes: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let version = |x: &serde_json::Value| x.as_str().unwrap_or_default().to_string();
    match kind {
        Kind::Spdx => Ok(v["packages"]
            .as_array()
            .ok_or("no packages")?
            .iter()
            .filter(|p| {
                p["SPDXID"]
                    .as_str()
                    .is_some_and(|id| id.starts_with("SPDXRef-pypi-"))
            })
            .map(|p| {
                (
                    normalize(p["name"].as_str().unwrap_or_default()),
                    version(&p["versionInfo"]),
                )
            })
            .collect()),
        Kind::CycloneDx => Ok(v["components"]
            .as_array()
            .ok_or("no components")?
            .iter()
            .filter(|c| {
                c["purl"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("pkg:pypi/"))
            })
            .map(|c| {
                (
                    normalize(c["name"].as_str().unwrap_or_default()),
                    version(&c["version"]),
                )
            })
            .collect()),
        Kind::Provenance => Err("a provenance statement is no SBOM".into()),
    }
}

fn sbom_check(kind: Kind, bytes: &[u8], record: &Record) -> Check {
    let name = match kind {
        Kind::Spdx => "sbom (spdx)",
        _ => "sbom (cyclonedx)",
    };
    let listed = match sbom_packages(kind, bytes) {
        Ok(l) => l,
        Err(e) => return check(name, false, format!("malformed: {e}")),
    };
    let Some(packages) = &record.packages else {
        return check(name, false, "the record has no package list");
    };
    let dists = record.distributions.as_ref();
    // What the record says each version is: the distribution's, else the
    // freeze's (`@ url` entries have none).
    let want: BTreeMap<String, String> = packages
        .iter()
        .map(|(k, v)| {
            let version = dists
                .and_then(|d| d.get(k))
                .map(|d| d.version.clone())
                .unwrap_or_else(|| {
                    if v.starts_with('@') {
                        String::new()
                    } else {
                        v.clone()
                    }
                });
            (k.clone(), version)
        })
        .collect();
    if listed == want {
        check(
            name,
            true,
            format!("{} package(s), as the record", listed.len()),
        )
    } else {
        check(name, false, differences(&want, &listed))
    }
}

#[cfg(test)]
mod tests {
    use super::super::image::{Described, TopLayer};
    use super::super::provenance::Invocation;
    use super::super::tests::{labels, record, DIGEST};
    use super::*;
    use crate::registry::{ImageLayers, LayerBlob, RawManifest};

    fn fetched(record: &Record) -> Fetched {
        let mut labels = labels();
        labels.insert(crate::engine::LABEL_KEY.into(), record.key.clone());
        let mut small = record.clone();
        small.distributions = None;
        Fetched {
            described: Described {
                repository: "localhost:5000/team/sdk".into(),
                digest: DIGEST.into(),
                image_id: "sha256:1d".into(),
                created: "2024-05-01T12:00:00Z".into(),
                labels,
                record: record.clone(),
            },
            manifest: RawManifest {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                bytes: Vec::new(),
                digest: DIGEST.into(),
            },
            layers: ImageLayers {
                config: "sha256:1d".into(),
                layers: vec![
                    LayerBlob {
                        media_type: "gzip".into(),
                        digest: "sha256:l1".into(),
                        size: 1,
                    },
                    LayerBlob {
                        media_type: "gzip".into(),
                        digest: "sha256:l2".into(),
                        size: 1,
                    },
                ],
            },
            diff_ids: vec!["sha256:d1".into(), "sha256:d2".into()],
            label: Some(Ok(small)),
            top: Some(TopLayer {
                diff_id: "sha256:d2".into(),
                record: Some(record.to_file().into_bytes()),
            }),
        }
    }

    fn documents(f: &Fetched) -> (Vec<u8>, Vec<(Kind, Vec<u8>)>) {
        let facts = f.described.facts();
        (
            provenance::statement(&facts, &Invocation::default()),
            vec![
                (Kind::Spdx, super::super::spdx::document(&facts)),
                (Kind::CycloneDx, super::super::cyclonedx::document(&facts)),
            ],
        )
    }

    #[test]
    fn an_image_whose_documents_were_made_from_it_agrees() {
        let r = record();
        let f = fetched(&r);
        let (p, sboms) = documents(&f);
        let v = verify("localhost:5000/team/sdk", &f, Some(&p), &sboms);
        assert!(v.agree, "{}", v.to_text());
        assert_eq!(v.checks.len(), 7, "{}", v.to_text());
        assert!(v.to_text().contains("agree"));
        assert_eq!(v.failed(), 0);
    }

    #[test]
    fn each_disagreement_is_found() {
        let r = record();
        let f = fetched(&r);
        let (p, sboms) = documents(&f);
        let failing = |f: &Fetched, p: Option<&[u8]>, s: &[(Kind, Vec<u8>)]| -> Vec<&'static str> {
            verify("img", f, p, s)
                .checks
                .into_iter()
                .filter(|c| !c.ok)
                .map(|c| c.name)
                .collect()
        };
        // A provenance about another image (another digest, other inputs).
        let mut other = r.clone();
        other
            .inputs
            .get_mut("dependencies")
            .unwrap()
            .insert("six-1.17.0-py2.py3-none-any.whl".into(), "6".repeat(64));
        let mut of = fetched(&other);
        of.described.digest = "sha256:other".into();
        let (other_p, _) = documents(&of);
        assert_eq!(
            failing(&f, Some(&other_p), &sboms),
            ["provenance subject", "provenance inputs"]
        );
        let v = verify("img", &f, Some(&other_p), &sboms);
        assert!(!v.agree);
        assert!(v.to_text().contains("do NOT agree"));
        // No provenance, no SBOM.
        assert_eq!(failing(&f, None, &[]), ["provenance", "sbom"]);
        // A top layer that is not the config's.
        let mut bad = fetched(&r);
        bad.top.as_mut().unwrap().diff_id = "sha256:tampered".into();
        assert_eq!(failing(&bad, Some(&p), &sboms), ["layers"]);
        // A record file that says other than its label.
        let mut bad = fetched(&r);
        bad.top.as_mut().unwrap().record = Some(other.to_file().into_bytes());
        assert_eq!(failing(&bad, Some(&p), &sboms), ["record"]);
        // An SBOM missing a package.
        let mut fewer = r.clone();
        fewer.packages.as_mut().unwrap().remove("six");
        let ff = fetched(&fewer);
        let (_, fewer_sboms) = documents(&ff);
        assert_eq!(
            failing(&f, Some(&p), &fewer_sboms),
            ["sbom (spdx)", "sbom (cyclonedx)"]
        );
    }

    #[test]
    fn sbom_packages_are_read_from_both_formats() {
        let r = record();
        let f = fetched(&r);
        let (_, sboms) = documents(&f);
        for (kind, bytes) in &sboms {
            let p = sbom_packages(*kind, bytes).unwrap();
            assert_eq!(p.len(), r.packages.as_ref().unwrap().len(), "{kind:?}");
            assert_eq!(p["six"], "1.17.0");
            assert_eq!(p["prebuilder-demo"], "0.1.0");
        }
        assert!(sbom_packages(Kind::Spdx, b"[]").is_err());
    }
}
