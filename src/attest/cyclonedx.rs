//! The SBOM as a CycloneDX 1.6 JSON document: the image is the BOM's
//! subject (`metadata.component`, by digest), its base a component, and
//! every installed Python distribution a library with its purl, licence
//! (see `licence`), the SHA-256 of the staged wheel it came from, and
//! properties saying which layer installed it and from which staged file
//! (`prebuilder:layer`, `prebuilder:artifact`, and for Beam's regenerated
//! `workflow.tar.gz` `prebuilder:content-digest`, the digest its key uses).

use serde_json::{json, Value};

use super::licence::{self, Licence};
use super::{hex_of, oci_purl, to_bytes, uuid, Facts, Package};
use crate::record::DigestOf;

const IMAGE_REF: &str = "image";
const BASE_REF: &str = "base";

/// The document's bytes.
pub fn document(facts: &Facts<'_>) -> Vec<u8> {
    to_bytes(&value(facts))
}

pub fn value(facts: &Facts<'_>) -> Value {
    let packages = facts.packages();
    let mut components = vec![base(facts)];
    components.extend(packages.iter().map(component));
    let mut depends: Vec<String> = vec![BASE_REF.to_string()];
    depends.extend(packages.iter().map(|p| p.purl()));
    json!({
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": format!("urn:uuid:{}", uuid(&format!("prebuilder cyclonedx {}", facts.digest))),
        "version": 1,
        "metadata": {
            "timestamp": facts.date(),
            "tools": {"components": [{
                "type": "application",
                "name": "prebuilder",
                "version": env!("CARGO_PKG_VERSION"),
            }]},
            "component": {
                "type": "container",
                "bom-ref": IMAGE_REF,
                "name": facts.repository,
                "version": facts.digest,
                "purl": oci_purl(facts.repository, facts.digest),
                "hashes": [{"alg": "SHA-256", "content": hex_of(facts.digest)}],
                "properties": [
                    {"name": "prebuilder:image-id", "value": facts.image_id},
                    {"name": "prebuilder:python", "value": facts.record.python.as_deref().unwrap_or("unknown")},
                ],
            },
        },
        "components": components,
        "dependencies": [
            {"ref": IMAGE_REF, "dependsOn": depends},
            {"ref": BASE_REF, "dependsOn": []},
        ],
    })
}

fn base(facts: &Facts<'_>) -> Value {
    let name = facts.base_name();
    let mut v = json!({
        "type": "container",
        "bom-ref": BASE_REF,
        "name": name,
        "version": facts.base_digest().unwrap_or(&facts.record.base),
        "properties": [{"name": "prebuilder:image-id", "value": facts.record.base}],
    });
    if let Some(digest) = facts.base_digest() {
        v["purl"] = json!(oci_purl(name, digest));
    }
    v
}

fn component(p: &Package<'_>) -> Value {
    let purl = p.purl();
    let mut v = json!({
        "type": "library",
        "bom-ref": purl,
        "name": p.name,
        "purl": purl,
    });
    if let Some(version) = p.version {
        v["version"] = json!(version);
    }
    let Some(d) = p.dist else {
        return v;
    };
    match licence::resolve(p.key, d) {
        Licence::Expression(e) => v["licenses"] = json!([{"expression": e}]),
        Licence::Text { name, text, .. } => {
            v["licenses"] = json!([{"license": {
                "name": name,
                "text": {"contentType": "text/plain", "content": text},
            }}])
        }
        Licence::NoAssertion => {}
    }
    let mut properties = vec![json!({"name": "prebuilder:layer", "value": d.layer})];
    if let Some(a) = &d.artifact {
        properties.push(json!({"name": "prebuilder:artifact", "value": a.name}));
        match a.of {
            DigestOf::Bytes => {
                v["hashes"] = json!([{"alg": "SHA-256", "content": hex_of(&a.digest)}])
            }
            DigestOf::Content => {
                properties.push(json!({"name": "prebuilder:content-digest", "value": a.digest}))
            }
        }
    }
    v["properties"] = Value::Array(properties);
    v
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

    fn component<'a>(doc: &'a Value, name: &str) -> &'a Value {
        doc["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no component {name}"))
    }

    fn property<'a>(c: &'a Value, name: &str) -> Option<&'a str> {
        c["properties"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["value"].as_str())
    }

    #[test]
    fn the_bom_is_about_the_image_by_digest() {
        let d = doc();
        assert_eq!(d["bomFormat"], "CycloneDX");
        assert_eq!(d["specVersion"], "1.6");
        let serial = d["serialNumber"].as_str().unwrap();
        assert!(
            serial.starts_with("urn:uuid:") && serial.len() == 45,
            "{serial}"
        );
        assert_eq!(d["metadata"]["timestamp"], "2024-05-01T12:00:00Z");
        assert_eq!(d["metadata"]["component"]["version"], DIGEST);
        assert_eq!(d["metadata"]["component"]["type"], "container");
        assert_eq!(
            component(&d, "apache/beam_python3.11_sdk:2.77.0")["type"],
            "container"
        );
        let deps = d["dependencies"][0]["dependsOn"].as_array().unwrap();
        assert!(deps.contains(&json!("pkg:pypi/six@1.17.0")));
        assert!(deps.contains(&json!(BASE_REF)));
    }

    #[test]
    fn each_library_has_its_licence_hash_layer_and_artifact() {
        let d = doc();
        let six = component(&d, "six");
        assert_eq!(six["purl"], "pkg:pypi/six@1.17.0");
        assert_eq!(six["bom-ref"], six["purl"]);
        assert_eq!(six["licenses"][0]["expression"], "MIT");
        assert_eq!(six["hashes"][0]["alg"], "SHA-256");
        assert_eq!(six["hashes"][0]["content"], "5".repeat(64));
        assert_eq!(property(six, "prebuilder:layer"), Some("dependencies"));
        assert_eq!(
            property(six, "prebuilder:artifact"),
            Some("six-1.17.0-py2.py3-none-any.whl")
        );
        let demo = component(&d, "prebuilder_demo");
        assert!(
            demo.get("hashes").is_none(),
            "its bytes change every launch"
        );
        assert_eq!(
            property(demo, "prebuilder:content-digest"),
            Some(format!("sha256:{}", "c".repeat(64)).as_str())
        );
        assert_eq!(
            property(component(&d, "pip"), "prebuilder:layer"),
            Some("base")
        );
        let numpy = component(&d, "numpy");
        assert_eq!(
            numpy["licenses"][0]["license"]["name"],
            "Copyright (c) 2005-2024, NumPy Developers."
        );
        assert!(component(&d, "mystery").get("licenses").is_none());
    }

    #[test]
    fn the_same_facts_give_the_same_bytes() {
        let r = record();
        let l = labels();
        assert_eq!(document(&facts(&r, &l)), document(&facts(&r, &l)));
        let mut other = facts(&r, &l);
        other.digest = "sha256:ffff";
        assert_ne!(document(&facts(&r, &l)), document(&other));
    }
}
