//! SLSA provenance v1 as an in-toto statement about the result's digest:
//! the builder (prebuilder and its version), the build type, the external
//! parameters (the base reference, every staged input by digest, the flags
//! that change the result), and the resolved dependencies (the base and the
//! `--boot-from` image by id). Unsigned: SLSA Build L1 (the README says how
//! to sign it). Nothing secret goes in: every string is scrubbed by
//! `crate::redact` (a label may quote a URL with a token).
//!
//! Inputs are named by the digest the cache key uses: the sha256 of the
//! bytes (`sha256`), or for a source archive the content digest over its
//! sorted entries (`prebuilderContentSha256`, lowercase hex; Beam
//! regenerates `workflow.tar.gz` with new bytes on every launch), so the same
//! inputs give the same statement.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{hex_of, to_bytes, Facts};
use crate::stage::digest::is_source_archive;

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// What a build of this type does (its parameters are documented in the
/// README's "Supply chain" section).
pub const BUILD_TYPE: &str = "urn:prebuilder:build-type:beam-sdk-image:v1";
pub const BUILDER_ID: &str = "urn:prebuilder:builder:cli";
/// The DigestSet key of a content digest (in-toto allows named algorithms).
pub const CONTENT_DIGEST: &str = "prebuilderContentSha256";

/// What the invocation adds to the image's own facts: flags that are not
/// written in the image.
#[derive(Debug, Clone, Copy, Default)]
pub struct Invocation<'a> {
    /// `--boot-from` as given (the record has the boot image's id).
    pub boot_from: Option<&'a str>,
    /// `--network` of the setup container.
    pub network: Option<&'a str>,
}

/// The statement's bytes.
pub fn statement(facts: &Facts<'_>, invocation: &Invocation<'_>) -> Vec<u8> {
    to_bytes(&value(facts, invocation))
}

pub fn value(facts: &Facts<'_>, invocation: &Invocation<'_>) -> Value {
    let mut internal = json!({
        "layout": crate::plan::LAYOUT_VERSION,
        "key": facts.record.key,
        "imageId": facts.image_id,
    });
    if let Some(python) = &facts.record.python {
        internal["python"] = json!(python);
    }
    let statement = json!({
        "_type": STATEMENT_TYPE,
        "subject": [{
            "name": facts.repository,
            "digest": {"sha256": hex_of(facts.digest)},
        }],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": external_parameters(facts, invocation),
                "internalParameters": internal,
                "resolvedDependencies": resolved_dependencies(facts, invocation),
            },
            "runDetails": {
                "builder": {
                    "id": BUILDER_ID,
                    "version": {"prebuilder": env!("CARGO_PKG_VERSION")},
                },
                "metadata": {
                    "invocationId": format!("{}@{}", facts.repository, facts.digest),
                },
            },
        },
    });
    scrub(statement)
}

/// What the user chose: the base, the repository, the staged inputs by
/// digest, the labels and the flags that change the result.
fn external_parameters(facts: &Facts<'_>, invocation: &Invocation<'_>) -> Value {
    let mut inputs = Vec::new();
    for (layer, artifacts) in &facts.record.inputs {
        for (name, digest) in artifacts {
            inputs.push(json!({
                "name": name,
                "layer": layer,
                "digest": input_digest(name, digest),
            }));
        }
    }
    // Labels the user and the OCI conventions gave the result; prebuilder's
    // own (`prebuilder.*`: key, record, …) are its internals.
    let labels: BTreeMap<&String, &String> = facts
        .labels
        .iter()
        .filter(|(k, _)| !k.starts_with("prebuilder"))
        .collect();
    let mut external = json!({
        "base": facts.base_name(),
        "repository": facts.repository,
        "inputs": inputs,
        "labels": labels,
    });
    if let Some(boot) = invocation.boot_from {
        external["bootFrom"] = json!(boot);
    }
    if let Some(network) = invocation.network {
        external["network"] = json!(network);
    }
    external
}

/// The base by its id (and manifest digest), and the boot image when one
/// was used.
fn resolved_dependencies(facts: &Facts<'_>, invocation: &Invocation<'_>) -> Vec<Value> {
    let mut base = json!({
        "name": "base",
        "uri": facts.base_name(),
        "digest": {"sha256": hex_of(&facts.record.base)},
    });
    if let Some(d) = facts.base_digest() {
        base["annotations"] = json!({"manifestDigest": d});
    }
    let mut resolved = vec![base];
    if let Some(boot_id) = &facts.record.boot_from {
        let mut boot = json!({"name": "boot", "digest": {"sha256": hex_of(boot_id)}});
        if let Some(uri) = invocation.boot_from {
            boot["uri"] = json!(uri);
        }
        resolved.push(boot);
    }
    resolved
}

/// An input's digest as the key uses it, named by what it covers.
fn input_digest(name: &str, digest: &str) -> Value {
    let hex = hex_of(digest);
    if is_source_archive(name) {
        json!({ CONTENT_DIGEST: hex })
    } else {
        json!({"sha256": hex})
    }
}

/// Every string with credentials and secret query values masked.
fn scrub(v: Value) -> Value {
    match v {
        Value::String(s) => Value::String(crate::redact::redact(&s).into_owned()),
        Value::Array(a) => Value::Array(a.into_iter().map(scrub).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, v)| (crate::redact::redact(&k).into_owned(), scrub(v)))
                .collect(),
        ),
        other => other,
    }
}

/// What `verify` compares: the subject's digests (`sha256:<hex>`), and the
/// inputs, `layer` → staged name → digest hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub subjects: Vec<String>,
    pub inputs: BTreeMap<String, BTreeMap<String, String>>,
    pub base: Option<String>,
    pub predicate_type: String,
}

/// Read back what a statement claims; `Err` says what is malformed.
pub fn claims(bytes: &[u8]) -> std::result::Result<Claims, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    if v["_type"] != STATEMENT_TYPE {
        return Err(format!("_type is {}, not {STATEMENT_TYPE}", v["_type"]));
    }
    let subjects = v["subject"]
        .as_array()
        .ok_or("no subject")?
        .iter()
        .filter_map(|s| s["digest"]["sha256"].as_str())
        .map(|h| format!("sha256:{h}"))
        .collect();
    let mut inputs: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let params = &v["predicate"]["buildDefinition"]["externalParameters"];
    for i in params["inputs"].as_array().map_or(&[][..], Vec::as_slice) {
        let (Some(name), Some(layer)) = (i["name"].as_str(), i["layer"].as_str()) else {
            return Err(format!("an input without name or layer: {i}"));
        };
        let digest = i["digest"]["sha256"]
            .as_str()
            .or_else(|| i["digest"][CONTENT_DIGEST].as_str())
            .ok_or_else(|| format!("input {name} has no digest"))?;
        inputs
            .entry(layer.to_string())
            .or_default()
            .insert(name.to_string(), digest.to_string());
    }
    let base = v["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .and_then(|r| r.iter().find(|d| d["name"] == "base"))
        .and_then(|d| d["digest"]["sha256"].as_str())
        .map(|h| format!("sha256:{h}"));
    Ok(Claims {
        subjects,
        inputs,
        base,
        predicate_type: v["predicateType"].as_str().unwrap_or_default().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{facts, labels, record, DIGEST};
    use super::*;

    fn invocation() -> Invocation<'static> {
        Invocation {
            boot_from: None,
            network: Some("none"),
        }
    }

    #[test]
    fn a_slsa_v1_statement_about_the_result() {
        let r = record();
        let l = labels();
        let v = value(&facts(&r, &l), &invocation());
        assert_eq!(v["_type"], STATEMENT_TYPE);
        assert_eq!(v["predicateType"], PREDICATE_TYPE);
        assert_eq!(v["subject"][0]["name"], "localhost:5000/team/sdk");
        assert_eq!(v["subject"][0]["digest"]["sha256"], hex_of(DIGEST));
        let def = &v["predicate"]["buildDefinition"];
        assert_eq!(def["buildType"], BUILD_TYPE);
        assert_eq!(
            def["externalParameters"]["base"],
            "apache/beam_python3.11_sdk:2.77.0"
        );
        assert_eq!(def["externalParameters"]["network"], "none");
        assert_eq!(def["externalParameters"]["labels"]["team"], "data");
        assert!(
            def["externalParameters"]["labels"]
                .get("prebuilder.key")
                .is_none(),
            "prebuilder's own labels are internals"
        );
        assert_eq!(
            def["resolvedDependencies"][0]["digest"]["sha256"],
            "b".repeat(64)
        );
        assert_eq!(
            def["resolvedDependencies"][0]["annotations"]["manifestDigest"],
            format!("sha256:{}", "d".repeat(64))
        );
        let builder = &v["predicate"]["runDetails"]["builder"];
        assert_eq!(builder["id"], BUILDER_ID);
        assert_eq!(builder["version"]["prebuilder"], env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn inputs_are_named_by_the_digest_the_key_uses() {
        let r = record();
        let l = labels();
        let v = value(&facts(&r, &l), &invocation());
        let inputs = v["predicate"]["buildDefinition"]["externalParameters"]["inputs"]
            .as_array()
            .unwrap();
        let find = |n: &str| inputs.iter().find(|i| i["name"] == n).unwrap();
        assert_eq!(
            find("workflow.tar.gz")["digest"][CONTENT_DIGEST],
            "c".repeat(64)
        );
        assert!(find("workflow.tar.gz")["digest"].get("sha256").is_none());
        let six = find("six-1.17.0-py2.py3-none-any.whl");
        assert_eq!(six["digest"]["sha256"], "5".repeat(64));
        assert_eq!(six["layer"], "dependencies");
        // Read back: what verify compares with the record.
        let c = claims(&statement(&facts(&r, &l), &invocation())).unwrap();
        assert_eq!(c.subjects, [DIGEST]);
        assert_eq!(c.base.as_deref(), Some(r.base.as_str()));
        assert_eq!(c.inputs, r.inputs);
        assert_eq!(c.predicate_type, PREDICATE_TYPE);
    }

    #[test]
    fn a_boot_image_is_a_resolved_dependency() {
        let mut r = record();
        r.boot_from = Some(format!("sha256:{}", "e".repeat(64)));
        let l = labels();
        let inv = Invocation {
            boot_from: Some("apache/beam_python3.11_sdk:2.77.0"),
            network: None,
        };
        let v = value(&facts(&r, &l), &inv);
        let def = &v["predicate"]["buildDefinition"];
        assert_eq!(
            def["externalParameters"]["bootFrom"],
            "apache/beam_python3.11_sdk:2.77.0"
        );
        assert!(def["externalParameters"].get("network").is_none());
        assert_eq!(def["resolvedDependencies"][1]["name"], "boot");
        assert_eq!(
            def["resolvedDependencies"][1]["digest"]["sha256"],
            "e".repeat(64)
        );
    }

    /// The token and credential cases of the redaction tests, wherever they
    /// could enter: a label (source URL from a git remote), a `--boot-from`.
    #[test]
    fn nothing_secret_gets_in() {
        let r = record();
        let mut l = labels();
        l.insert(
            "org.opencontainers.image.source".into(),
            "https://bot:s3cr3tTOKEN@git.example.com/team/pipeline".into(),
        );
        l.insert(
            "index".into(),
            "https://__token__:s3cr3tTOKEN@pypi.example/simple".into(),
        );
        l.insert(
            "download".into(),
            "https://b.example/x.whl?X-Amz-Signature=s3cr3tTOKEN&X-Amz-Date=1".into(),
        );
        l.insert(
            "retry".into(),
            "https://host/simple/pkg/?token=s3cr3tTOKEN&page=2".into(),
        );
        l.insert(
            "git".into(),
            "git+https://oauth2:s3cr3tTOKEN@gitlab.example/g/p.git@v1#egg=p".into(),
        );
        let inv = Invocation {
            boot_from: Some("registry.example/beam?password=s3cr3tTOKEN"),
            network: Some("none"),
        };
        let text = String::from_utf8(statement(&facts(&r, &l), &inv)).unwrap();
        assert!(!text.contains("s3cr3tTOKEN"), "{text}");
        assert!(
            text.contains("https://***@git.example.com/team/pipeline"),
            "{text}"
        );
        assert!(text.contains("X-Amz-Signature=***"), "{text}");
    }

    #[test]
    fn the_same_facts_give_the_same_bytes_and_malformed_claims_are_refused() {
        let r = record();
        let l = labels();
        assert_eq!(
            statement(&facts(&r, &l), &invocation()),
            statement(&facts(&r, &l), &invocation())
        );
        assert!(claims(b"not json").is_err());
        assert!(claims(br#"{"_type": "other"}"#).is_err());
        assert!(claims(
            br#"{"_type": "https://in-toto.io/Statement/v1", "subject": [],
                 "predicate": {"buildDefinition": {"externalParameters": {"inputs": [{"name": "x"}]}}}}"#
        )
        .is_err());
    }
}
