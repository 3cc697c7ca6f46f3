//! The SBOM as an SPDX 2.3 JSON document: the image (by digest), its base,
//! and one package per installed Python distribution with its purl, its
//! declared licence (see `licence`), the checksum of the staged wheel it came
//! from, and where it came from (`sourceInfo`: the layer, or the base).
//! Relationships: the document describes the image; the image descends
//! from its base and contains every package; the base contains what it had.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::licence::{self, Licence};
use super::{hex_of, oci_purl, to_bytes, uuid, Facts, Package};
use crate::record::{DigestOf, IN_BASE};

const IMAGE: &str = "SPDXRef-image";
const BASE: &str = "SPDXRef-base";

/// The document's bytes.
pub fn document(facts: &Facts<'_>) -> Vec<u8> {
    to_bytes(&value(facts))
}

pub fn value(facts: &Facts<'_>) -> Value {
    let packages = facts.packages();
    let mut spdx_packages = vec![image(facts), base(facts)];
    let mut relationships = vec![
        relationship("SPDXRef-DOCUMENT", "DESCRIBES", IMAGE),
        relationship(IMAGE, "DESCENDANT_OF", BASE),
    ];
    let mut extracted = BTreeMap::new();
    for p in &packages {
        let id = package_id(p.key);
        let (declared, text) = match p.dist.map(|d| licence::resolve(p.key, d)) {
            Some(Licence::Expression(e)) => (e, None),
            Some(Licence::Text { id, name, text }) => (id.clone(), Some((id, name, text))),
            Some(Licence::NoAssertion) | None => ("NOASSERTION".to_string(), None),
        };
        if let Some((id, name, text)) = text {
            extracted.insert(
                id.clone(),
                json!({"licenseId": id, "name": name, "extractedText": text}),
            );
        }
        spdx_packages.push(package(p, &id, declared));
        relationships.push(relationship(IMAGE, "CONTAINS", &id));
        if p.dist.is_some_and(|d| d.layer == IN_BASE) {
            relationships.push(relationship(BASE, "CONTAINS", &id));
        }
    }
    let mut doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{}@{}", facts.repository, facts.digest),
        // Unique per result, the same for the same result on any machine.
        "documentNamespace": format!(
            "https://spdx.org/spdxdocs/prebuilder/{}",
            uuid(&format!("prebuilder spdx {}", facts.digest))
        ),
        "creationInfo": {
            "created": facts.date(),
            "creators": [format!("Tool: prebuilder-{}", env!("CARGO_PKG_VERSION"))],
            "licenseListVersion": list_version(),
        },
        "packages": spdx_packages,
        "relationships": relationships,
    });
    if !extracted.is_empty() {
        doc["hasExtractedLicensingInfos"] = Value::Array(extracted.into_values().collect());
    }
    doc
}

/// `3.29`: SPDX writes the list version without its patch number.
fn list_version() -> String {
    let v = licence::list_version();
    let mut parts = v.split('.');
    match (parts.next(), parts.next()) {
        (Some(major), Some(minor)) => format!("{major}.{minor}"),
        _ => v.to_string(),
    }
}

/// `SPDXRef-pypi-<name>`: ids are letters, digits, `.` and `-`.
fn package_id(key: &str) -> String {
    let slug: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("SPDXRef-pypi-{slug}")
}

fn relationship(from: &str, kind: &str, to: &str) -> Value {
    json!({"spdxElementId": from, "relationshipType": kind, "relatedSpdxElement": to})
}

fn image(facts: &Facts<'_>) -> Value {
    json!({
        "SPDXID": IMAGE,
        "name": facts.repository,
        "versionInfo": facts.digest,
        "primaryPackagePurpose": "CONTAINER",
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "checksums": [{"algorithm": "SHA256", "checksumValue": hex_of(facts.digest)}],
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": oci_purl(facts.repository, facts.digest),
        }],
        "comment": format!(
            "Built by prebuilder on {} (image id {}, python {}).",
            facts.base_name(),
            facts.image_id,
            facts.record.python.as_deref().unwrap_or("unknown")
        ),
    })
}

fn base(facts: &Facts<'_>) -> Value {
    let name = facts.base_name();
    let mut v = json!({
        "SPDXID": BASE,
        "name": name,
        "versionInfo": facts.base_digest().unwrap_or(&facts.record.base),
        "primaryPackagePurpose": "CONTAINER",
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "comment": format!("The base image (image id {}).", facts.record.base),
    });
    if let Some(digest) = facts.base_digest() {
        v["externalRefs"] = json!([{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": oci_purl(name, digest),
        }]);
    }
    v
}

fn package(p: &Package<'_>, id: &str, declared: String) -> Value {
    let mut v = json!({
        "SPDXID": id,
        "name": p.name,
        "primaryPackagePurpose": "LIBRARY",
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": declared,
        "copyrightText": "NOASSERTION",
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": p.purl(),
        }],
        "sourceInfo": source_info(p),
    });
    if let Some(version) = p.version {
        v["versionInfo"] = json!(version);
    }
    if let Some(a) = p.dist.and_then(|d| d.artifact.as_ref()) {
        v["packageFileName"] = json!(a.name);
        if a.of == DigestOf::Bytes {
            v["checksums"] = json!([{"algorithm": "SHA256", "checksumValue": hex_of(&a.digest)}]);
        }
    }
    v
}

/// Where the package came from, in words a person and a script can read:
/// `installed by the dependencies layer from the staged artifact
/// six-1.17.0-py3-none-any.whl (sha256:…)`, or `in the base image`.
fn source_info(p: &Package<'_>) -> String {
    let Some(d) = p.dist else {
        return "listed by pip freeze; no origin recorded".into();
    };
    if d.layer == IN_BASE {
        return "in the base image".into();
    }
    match &d.artifact {
        Some(a) => format!(
            "installed by the {} layer from the staged artifact {} ({} {})",
            d.layer,
            a.name,
            match a.of {
                DigestOf::Bytes => "sha256 of the bytes",
                DigestOf::Content =>
                    "prebuilder content digest, over the archive's sorted entries,",
            },
            a.digest
        ),
        None => format!(
            "installed by the {} layer (from no staged artifact: a dependency resolved by pip)",
            d.layer
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{facts, labels, record, DIGEST};
    use super::*;

    fn doc() -> Value {
        let r = record();
        let l = labels();
        value(&facts(&r, &l))
    }

    fn package<'a>(doc: &'a Value, name: &str) -> &'a Value {
        doc["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no package {name}"))
    }

    #[test]
    fn the_document_describes_the_image_by_digest() {
        let d = doc();
        assert_eq!(d["spdxVersion"], "SPDX-2.3");
        assert_eq!(d["dataLicense"], "CC0-1.0");
        assert_eq!(d["creationInfo"]["created"], "2024-05-01T12:00:00Z");
        assert_eq!(
            d["creationInfo"]["creators"][0],
            format!("Tool: prebuilder-{}", env!("CARGO_PKG_VERSION"))
        );
        let image = package(&d, "localhost:5000/team/sdk");
        assert_eq!(image["versionInfo"], DIGEST);
        assert_eq!(image["checksums"][0]["checksumValue"], hex_of(DIGEST));
        let base = package(&d, "apache/beam_python3.11_sdk:2.77.0");
        assert_eq!(base["versionInfo"], format!("sha256:{}", "d".repeat(64)));
        let rel = d["relationships"].as_array().unwrap();
        assert!(rel.contains(&relationship("SPDXRef-DOCUMENT", "DESCRIBES", IMAGE)));
        assert!(rel.contains(&relationship(IMAGE, "DESCENDANT_OF", BASE)));
    }

    #[test]
    fn each_package_has_its_purl_licence_checksum_and_origin() {
        let d = doc();
        let six = package(&d, "six");
        assert_eq!(six["versionInfo"], "1.17.0");
        assert_eq!(six["licenseDeclared"], "MIT");
        assert_eq!(
            six["externalRefs"][0]["referenceLocator"],
            "pkg:pypi/six@1.17.0"
        );
        assert_eq!(six["packageFileName"], "six-1.17.0-py2.py3-none-any.whl");
        assert_eq!(six["checksums"][0]["algorithm"], "SHA256");
        assert_eq!(six["checksums"][0]["checksumValue"], "5".repeat(64));
        assert!(six["sourceInfo"]
            .as_str()
            .unwrap()
            .starts_with("installed by the dependencies layer from the staged artifact six-"));
        // The workflow: no byte checksum (its bytes change every launch), the
        // content digest named as such.
        let demo = package(&d, "prebuilder_demo");
        assert!(demo.get("checksums").is_none());
        let info = demo["sourceInfo"].as_str().unwrap();
        assert!(info.contains("prebuilder content digest"), "{info}");
        assert!(info.contains(&"c".repeat(64)), "{info}");
        assert_eq!(demo["licenseDeclared"], "Apache-2.0");
        let pip = package(&d, "pip");
        assert_eq!(pip["sourceInfo"], "in the base image");
        assert_eq!(pip["licenseDeclared"], "MIT", "from its classifier");
        let rel = d["relationships"].as_array().unwrap();
        assert!(rel.contains(&relationship(BASE, "CONTAINS", "SPDXRef-pypi-pip")));
        assert!(!rel.contains(&relationship(BASE, "CONTAINS", "SPDXRef-pypi-six")));
        assert_eq!(package(&d, "mystery")["licenseDeclared"], "NOASSERTION");
    }

    #[test]
    fn licence_text_goes_under_a_licence_ref() {
        let d = doc();
        assert_eq!(package(&d, "numpy")["licenseDeclared"], "LicenseRef-numpy");
        let infos = d["hasExtractedLicensingInfos"].as_array().unwrap();
        assert_eq!(infos.len(), 1);
        assert_eq!(infos[0]["licenseId"], "LicenseRef-numpy");
        assert!(infos[0]["extractedText"]
            .as_str()
            .unwrap()
            .starts_with("Copyright (c) 2005-2024"));
    }

    #[test]
    fn the_same_facts_give_the_same_bytes_and_another_digest_another_namespace() {
        let r = record();
        let l = labels();
        let a = document(&facts(&r, &l));
        assert_eq!(a, document(&facts(&r, &l)));
        let mut other = facts(&r, &l);
        other.digest = "sha256:ffff";
        let b: Value = serde_json::from_slice(&document(&other)).unwrap();
        let a: Value = serde_json::from_slice(&a).unwrap();
        assert_ne!(a["documentNamespace"], b["documentNamespace"]);
        assert!(a["documentNamespace"]
            .as_str()
            .unwrap()
            .starts_with("https://spdx.org/spdxdocs/prebuilder/"));
    }

    #[test]
    fn ids_are_valid_spdx_ids() {
        assert_eq!(package_id("zope.interface"), "SPDXRef-pypi-zope.interface");
        assert_eq!(package_id("a_b"), "SPDXRef-pypi-a-b");
        assert_eq!(list_version().matches('.').count(), 1);
    }
}
