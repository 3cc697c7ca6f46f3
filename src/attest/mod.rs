//! Supply-chain documents for a result image, made from what prebuilder knows
//! exactly (the image's record: pip's own view of what is installed, which
//! layer installed it and from which staged file) rather than guessed from
//! files by a scanner:
//! - an SBOM in SPDX 2.3 JSON ([`spdx`]) and in CycloneDX 1.6 JSON ([`cyclonedx`]);
//! - a SLSA provenance v1 statement, in-toto ([`provenance`]).
//!
//! Pure and deterministic: dates come from the image's `created` (its build's
//! epoch, see `image::reproducible`), namespaces and serial numbers from the
//! result's digest, and every list is sorted, so the same inputs give the same
//! bytes on any machine. [`image`] reads what they are made of from the
//! engine or a registry; [`attach`] attaches them to the pushed result as OCI
//! 1.1 referrers, so the image's own digest never changes (the build does it
//! as the last step of publishing: `crate::build::attest`).

pub mod attach;
pub mod cyclonedx;
pub mod image;
pub mod licence;
pub mod provenance;
pub mod spdx;
pub mod verify;

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::labels::{OCI_BASE_DIGEST, OCI_BASE_NAME};
use crate::record::{Distribution, Record};

/// What the documents describe: one result image and its record.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The result's repository (`localhost:5000/team/sdk`).
    pub repository: &'a str,
    /// The result's digest: the registry's manifest digest, or its image id
    /// when it was not pushed.
    pub digest: &'a str,
    /// The result's image id (config digest).
    pub image_id: &'a str,
    /// The result's `created`: its build's epoch, the documents' date.
    pub created: &'a str,
    pub record: &'a Record,
    /// The result's labels (`org.opencontainers.image.base.name`, …).
    pub labels: &'a BTreeMap<String, String>,
}

impl Facts<'_> {
    /// The base as the build named it (the `base.name` label), else its id.
    pub fn base_name(&self) -> &str {
        self.labels
            .get(OCI_BASE_NAME)
            .map_or(self.record.base.as_str(), String::as_str)
    }

    /// The base's registry digest, when known (the `base.digest` label).
    pub fn base_digest(&self) -> Option<&str> {
        self.labels.get(OCI_BASE_DIGEST).map(String::as_str)
    }

    /// `created` as SPDX and CycloneDX want it: whole seconds, UTC, `Z`.
    pub fn date(&self) -> String {
        match crate::image::reproducible::parse_rfc3339(self.created) {
            Some(s) => crate::image::rfc3339(u64::try_from(s).unwrap_or(0)),
            None => crate::image::rfc3339(0),
        }
    }

    /// Every installed package, by normalized name: pip's freeze (the
    /// package list), each with what the setup learnt of it when it did.
    pub fn packages(&self) -> Vec<Package<'_>> {
        let Some(freeze) = self.record.packages.as_ref() else {
            return Vec::new();
        };
        let dists = self.record.distributions.as_ref();
        freeze
            .iter()
            .map(|(key, version)| {
                let dist = dists.and_then(|d| d.get(key));
                Package {
                    key,
                    name: dist.map_or(key.as_str(), |d| d.name.as_str()),
                    version: match dist {
                        Some(d) if !d.version.is_empty() => Some(d.version.as_str()),
                        // `@ url`: a direct reference, no version.
                        _ if version.starts_with('@') => None,
                        _ => Some(version.as_str()),
                    },
                    dist,
                }
            })
            .collect()
    }
}

/// One installed package, as the documents list it.
#[derive(Debug, Clone, Copy)]
pub struct Package<'a> {
    /// The normalized name (the record's key).
    pub key: &'a str,
    /// As its metadata writes it.
    pub name: &'a str,
    pub version: Option<&'a str>,
    pub dist: Option<&'a Distribution>,
}

impl Package<'_> {
    /// `pkg:pypi/<name>@<version>` (purl: the normalized name, the version
    /// percent-encoded where purl requires it).
    pub fn purl(&self) -> String {
        match self.version {
            Some(v) => format!("pkg:pypi/{}@{}", self.key, purl_encode(v)),
            None => format!("pkg:pypi/{}", self.key),
        }
    }
}

/// The kinds of document, with how a registry and a directory name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Spdx,
    CycloneDx,
    Provenance,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Spdx, Kind::CycloneDx, Kind::Provenance];

    /// How messages and `--sbom-format` name it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Spdx => "spdx",
            Kind::CycloneDx => "cyclonedx",
            Kind::Provenance => "provenance",
        }
    }

    /// The referrer's `artifactType` and its one layer's media type.
    pub fn media_type(self) -> &'static str {
        match self {
            Kind::Spdx => "application/spdx+json",
            Kind::CycloneDx => "application/vnd.cyclonedx+json",
            Kind::Provenance => "application/vnd.in-toto+json",
        }
    }

    /// The file name in `--attestations-dir`.
    pub fn file_name(self) -> &'static str {
        match self {
            Kind::Spdx => "sbom.spdx.json",
            Kind::CycloneDx => "sbom.cdx.json",
            Kind::Provenance => "provenance.intoto.json",
        }
    }

    pub fn from_media_type(media_type: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.media_type() == media_type)
    }

    /// The document's bytes.
    pub fn make(self, facts: &Facts<'_>, invocation: &provenance::Invocation<'_>) -> Vec<u8> {
        match self {
            Kind::Spdx => spdx::document(facts),
            Kind::CycloneDx => cyclonedx::document(facts),
            Kind::Provenance => provenance::statement(facts, invocation),
        }
    }
}

/// Which documents a build attaches (`--sbom-format`, `--no-attestations`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    pub spdx: bool,
    pub cyclonedx: bool,
    pub provenance: bool,
}

impl Wanted {
    pub const ALL: Wanted = Wanted {
        spdx: true,
        cyclonedx: true,
        provenance: true,
    };
    pub const NONE: Wanted = Wanted {
        spdx: false,
        cyclonedx: false,
        provenance: false,
    };

    pub fn kinds(self) -> Vec<Kind> {
        Kind::ALL
            .into_iter()
            .filter(|k| match k {
                Kind::Spdx => self.spdx,
                Kind::CycloneDx => self.cyclonedx,
                Kind::Provenance => self.provenance,
            })
            .collect()
    }
}

/// Pretty JSON with a final newline: the bytes of every document.
pub(crate) fn to_bytes(value: &serde_json::Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// A version 5-style UUID (RFC 9562 layout) derived from `seed`: the same
/// seed, the same UUID.
pub(crate) fn uuid(seed: &str) -> String {
    let h = Sha256::digest(seed.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

/// The hex of a `sha256:<hex>` digest.
pub(crate) fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// purl percent-encoding: everything but unreserved characters.
pub(crate) fn purl_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `pkg:oci/<name>@<digest>?repository_url=<registry/path>`: the purl of an
/// image in a repository.
pub(crate) fn oci_purl(repository: &str, digest: &str) -> String {
    let repository = repository.split('@').next().unwrap_or(repository);
    let repository = match repository.rsplit_once(':') {
        // A tag, not a port: what follows has no `/`.
        Some((r, tag)) if !tag.contains('/') => r,
        _ => repository,
    };
    let name = repository.rsplit('/').next().unwrap_or(repository);
    format!(
        "pkg:oci/{}@{}?repository_url={}",
        name.to_ascii_lowercase(),
        purl_encode(digest),
        purl_encode(repository)
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::record::{DigestOf, Source, FORMAT, IN_BASE};

    /// A record like a real build's: a package from a wheel in the
    /// dependencies layer, the pipeline's own from workflow.tar.gz, pip from
    /// the base, one with its whole licence text, one with none.
    pub fn record() -> Record {
        let d = |name: &str, version: &str, layer: &str| Distribution {
            name: name.into(),
            version: version.into(),
            license_expression: None,
            license: None,
            classifiers: Vec::new(),
            layer: layer.into(),
            artifact: None,
        };
        let mut six = d("six", "1.17.0", "dependencies");
        six.license = Some("MIT".into());
        six.artifact = Some(Source {
            name: "six-1.17.0-py2.py3-none-any.whl".into(),
            digest: format!("sha256:{}", "5".repeat(64)),
            of: DigestOf::Bytes,
        });
        let mut demo = d("prebuilder_demo", "0.1.0", "application");
        demo.license_expression = Some("Apache-2.0".into());
        demo.artifact = Some(Source {
            name: "workflow.tar.gz".into(),
            digest: format!("sha256:{}", "c".repeat(64)),
            of: DigestOf::Content,
        });
        let mut numpy = d("numpy", "2.2.6", "dependencies");
        numpy.license =
            Some("Copyright (c) 2005-2024, NumPy Developers.\nAll rights reserved.".into());
        let mut pip = d("pip", "23.2.1", IN_BASE);
        pip.classifiers = vec!["License :: OSI Approved :: MIT License".into()];
        let unknown = d("mystery", "1.0", "dependencies");
        let dists = [six, demo, numpy, pip, unknown];
        Record {
            format: FORMAT,
            layer: "application".into(),
            key: "k".repeat(64),
            base: format!("sha256:{}", "b".repeat(64)),
            boot_from: None,
            python: Some("3.11.2".into()),
            inputs: BTreeMap::from([
                (
                    "dependencies".to_string(),
                    BTreeMap::from([
                        ("requirements.txt".to_string(), "1".repeat(64)),
                        (
                            "six-1.17.0-py2.py3-none-any.whl".to_string(),
                            "5".repeat(64),
                        ),
                    ]),
                ),
                (
                    "application".to_string(),
                    BTreeMap::from([("workflow.tar.gz".to_string(), "c".repeat(64))]),
                ),
            ]),
            packages: Some(
                dists
                    .iter()
                    .map(|d| (crate::record::normalize(&d.name), d.version.clone()))
                    .collect(),
            ),
            distributions: Some(
                dists
                    .into_iter()
                    .map(|d| (crate::record::normalize(&d.name), d))
                    .collect(),
            ),
        }
    }

    pub fn labels() -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                OCI_BASE_NAME.to_string(),
                "apache/beam_python3.11_sdk:2.77.0".to_string(),
            ),
            (
                OCI_BASE_DIGEST.to_string(),
                format!("sha256:{}", "d".repeat(64)),
            ),
            ("prebuilder.key".to_string(), "k".repeat(64)),
            ("team".to_string(), "data".to_string()),
        ])
    }

    pub const DIGEST: &str =
        "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    pub fn facts<'a>(record: &'a Record, labels: &'a BTreeMap<String, String>) -> Facts<'a> {
        Facts {
            repository: "localhost:5000/team/sdk",
            digest: DIGEST,
            image_id: "sha256:1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d",
            created: "2024-05-01T12:00:00.123Z",
            record,
            labels,
        }
    }

    #[test]
    fn uuids_are_derived_and_well_formed() {
        let a = uuid("x");
        assert_eq!(a, uuid("x"));
        assert_ne!(a, uuid("y"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "5", "version 5 layout: {a}");
        assert!("89ab".contains(&a[19..20]), "RFC variant: {a}");
    }

    #[test]
    fn purls() {
        assert_eq!(purl_encode("1.0+local"), "1.0%2Blocal");
        assert_eq!(
            oci_purl("localhost:5000/team/SDK:tag", "sha256:ab"),
            "pkg:oci/sdk@sha256%3Aab?repository_url=localhost%3A5000%2Fteam%2FSDK"
        );
        assert_eq!(
            oci_purl("localhost:5000/sdk", "sha256:ab"),
            "pkg:oci/sdk@sha256%3Aab?repository_url=localhost%3A5000%2Fsdk"
        );
        let r = record();
        let l = labels();
        let f = facts(&r, &l);
        let p = f.packages();
        let demo = p.iter().find(|p| p.key == "prebuilder-demo").unwrap();
        assert_eq!(demo.purl(), "pkg:pypi/prebuilder-demo@0.1.0");
        assert_eq!(demo.name, "prebuilder_demo");
    }

    #[test]
    fn the_package_list_is_pips_freeze() {
        let mut r = record();
        // A package pip sees that the listing did not: still listed.
        r.packages
            .as_mut()
            .unwrap()
            .insert("direct".into(), "@ file:///x.whl".into());
        let l = labels();
        let f = facts(&r, &l);
        let keys: Vec<&str> = f.packages().iter().map(|p| p.key).collect();
        let freeze: Vec<&str> = r
            .packages
            .as_ref()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, freeze);
        let direct = f
            .packages()
            .into_iter()
            .find(|p| p.key == "direct")
            .unwrap();
        assert_eq!(direct.version, None);
        assert_eq!(direct.purl(), "pkg:pypi/direct");
        assert_eq!(f.date(), "2024-05-01T12:00:00Z");
        assert_eq!(f.base_name(), "apache/beam_python3.11_sdk:2.77.0");
    }
}
