//! The record's `distributions` for a layer direct mode produced: what the
//! SBOM (`crate::attest`) lists, made as the engine path makes it
//! (`crate::record::sources::attribute`) from what the setup there lists
//! (`# dist {…}`): every distribution pip sees after the layer, with its
//! licence metadata and wheel tags where this layer wrote its `.dist-info`,
//! and its `direct_url.json` URL.
//!
//! Direct mode's index of the base keeps no `METADATA`: a distribution the
//! layer did not install has the licence fields the record below gave it
//! (none for the base's own, where the engine path lists them).

use std::collections::BTreeMap;
use std::io::Read;

use super::index::{Distribution as Installed, Index};
use super::install::{Content, State, Upper};
use super::metadata::Metadata;
use crate::record::{sources, Distribution, Listed, Record};
use crate::stage::Artifact;

/// Every distribution after `layer` (`installed`), attributed to the layer
/// that installed it and the staged artifact it came from.
pub fn distributions(
    layer: &str,
    staged: &[Artifact],
    state: &State,
    (lower, installed): (&Index, &Index),
    parent: Option<&Record>,
) -> BTreeMap<String, Distribution> {
    let mut seen = std::collections::BTreeSet::new();
    let listed: Vec<Listed> = installed
        .distributions
        .iter()
        .filter(|d| seen.insert(d.key()))
        .map(|d| listed(d, state))
        .collect();
    let artifacts: Vec<&Artifact> = staged.iter().collect();
    let mut out = sources::attribute(layer, &artifacts, listed, &lower.freeze(), parent);
    // Licence facts the layer below recorded, for what this layer left.
    let below = parent.and_then(|p| p.distributions.as_ref());
    for (key, d) in out.iter_mut() {
        let Some(b) = below
            .and_then(|b| b.get(key))
            .filter(|b| b.version == d.version)
        else {
            continue;
        };
        if d.license_expression.is_none() && d.license.is_none() && d.classifiers.is_empty() {
            d.license_expression = b.license_expression.clone();
            d.license = b.license.clone();
            d.classifiers = b.classifiers.clone();
        }
    }
    out
}

/// One distribution as the engine path's setup lists it.
fn listed(d: &Installed, state: &State) -> Listed {
    let info = format!("{}/{}", d.location.trim_end_matches('/'), d.info);
    let metadata = written(state, &format!("{info}/METADATA")).map(|b| Metadata::parse(&b));
    let tags = written(state, &format!("{info}/WHEEL"))
        .map(|b| {
            let m = Metadata::parse(&b);
            m.get_all("Tag").into_iter().map(str::to_string).collect()
        })
        .unwrap_or_default();
    let direct_url = d.direct_url.as_deref().and_then(|j| {
        let v: serde_json::Value = serde_json::from_str(j).ok()?;
        v.get("url")?.as_str().map(str::to_string)
    });
    let field = |k: &str| metadata.as_ref().and_then(|m| m.get(k)).map(str::to_string);
    let classifiers = metadata
        .as_ref()
        .map(|m| {
            m.get_all("Classifier")
                .into_iter()
                .filter(|c| c.starts_with("License ::"))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Listed {
        name: d.name.clone(),
        version: Some(d.version.clone()),
        license_expression: field("License-Expression"),
        license: field("License"),
        classifiers,
        direct_url,
        tags,
    }
}

/// The text of a file this layer wrote (`None`: not written here, or unreadable).
fn written(state: &State, path: &str) -> Option<String> {
    let Some(Upper::File { content, .. }) = state.upper.get(path) else {
        return None;
    };
    let bytes = match content {
        Content::Bytes(b) => b.as_ref().clone(),
        Content::File(p) => std::fs::read(p).ok()?,
        Content::Zip { wheel, member } => {
            let f = std::fs::File::open(wheel.as_ref()).ok()?;
            let mut z = zip::ZipArchive::new(f).ok()?;
            let mut m = z.by_name(member).ok()?;
            let mut out = Vec::new();
            m.read_to_end(&mut out).ok()?;
            out
        }
    };
    Some(String::from_utf8_lossy(&bytes).into_owned())
}
