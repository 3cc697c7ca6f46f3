//! The record step of a layer build (see `crate::record`): after the setup
//! succeeded, read the pip freeze the setup script left in the stopped
//! container and turn it into the record JSON (which replaces the freeze in
//! the layer) and the label value.

use std::collections::BTreeMap;

use super::setup::{FREEZE_NAME, SNAPSHOT_DIR};
use crate::engine::{ops, Engine};
use crate::error::Result;
use crate::plan::LayerPlan;
use crate::progress::{Event, Reporter};
use crate::record::{self, Record, FORMAT, LABEL_RECORD, RECORD_FILE};

/// What a layer's record comes from, besides the setup's freeze.
pub struct Context<'a> {
    pub layer: &'a LayerPlan<'a>,
    /// The image the setup started from: its record holds the inputs of
    /// the layers below.
    pub from_image: &'a str,
    /// The base's id.
    pub base: &'a str,
    /// The image `--boot-from` took the boot from, if any.
    pub boot_from: Option<&'a str>,
    /// Whether the setup took a snapshot (it then left the freeze there).
    pub snapshot: bool,
}

/// The record of a finished setup: the file content for [`RECORD_FILE`] and
/// the label value. `None` (with a warning) when the setup left no freeze: a
/// missing record does not fail a build.
pub async fn make<E: Engine>(
    engine: &E,
    container: &str,
    b: &Context<'_>,
    reporter: &dyn Reporter,
) -> Result<Option<(Vec<u8>, String)>> {
    let layer = b.layer;
    let Some(freeze) = freeze(engine, container, b.snapshot)
        .await?
        .filter(|f| !f.is_empty())
    else {
        tracing::warn!(
            "{}: the setup left no pip freeze; the image gets no record",
            layer.name
        );
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&freeze);
    let (python, packages) = record::parse_freeze(&text);
    let (before, listed) = record::parse_listing(&text);
    // Inputs of the layers below come from the parent layer's record.
    let parent = match engine.inspect(b.from_image).await {
        Ok(Some(parent)) => parent
            .labels
            .get(LABEL_RECORD)
            .and_then(|l| Record::parse(l).ok()),
        _ => None,
    };
    let parent = match parent {
        // A bounded label may lack the distributions, the packages, the
        // inputs: the file has them.
        Some(r) if !r.is_complete() => Some(parent_file(engine, container, b, r).await),
        other => other,
    };
    let distributions = record::sources::attribute(
        layer.name.as_str(),
        &layer.artifacts,
        listed,
        &before,
        parent.as_ref(),
    );
    let mut inputs = parent.map(|r| r.inputs).unwrap_or_default();
    inputs.insert(
        layer.name.to_string(),
        layer
            .artifacts
            .iter()
            .map(|a| (a.name.clone(), a.content_digest.clone()))
            .collect(),
    );
    let rec = Record {
        format: FORMAT,
        layer: layer.name.to_string(),
        key: layer.key.clone(),
        base: b.base.to_string(),
        boot_from: b.boot_from.map(str::to_string),
        python,
        inputs,
        packages: Some(packages),
        distributions: Some(distributions),
    };
    reporter.event(Event::Recording {
        layer: layer.name,
        packages: rec.packages.as_ref().map_or(0, BTreeMap::len),
    });
    Ok(Some((rec.to_file().into_bytes(), rec.label())))
}

/// Where the setup script left the freeze: in the snapshot directory when it
/// took a snapshot (see `setup.sh`: the freeze then runs while the snapshot
/// walks the filesystem, so it must write nothing the walk sees; an empty
/// file there means the freeze failed), else at [`RECORD_FILE`] (no snapshot
/// asked for, or no GNU tools in the base), where a commit takes it.
async fn freeze<E: Engine>(engine: &E, container: &str, snapshot: bool) -> Result<Option<Vec<u8>>> {
    if snapshot {
        let path = format!("{SNAPSHOT_DIR}/{FREEZE_NAME}");
        if let Some(freeze) = ops::download_file(engine, container, &path).await? {
            return Ok(Some(freeze));
        }
    }
    ops::download_file(engine, container, RECORD_FILE).await
}

/// The parent layer's whole record (`label`: what its label holds). With a
/// snapshot the setup wrote nothing at [`RECORD_FILE`], so the setup
/// container still has the parent's file there: read it from the container
/// rather than start another one from the parent image.
async fn parent_file<E: Engine>(
    engine: &E,
    container: &str,
    b: &Context<'_>,
    label: Record,
) -> Record {
    if b.snapshot {
        let here = ops::download_file(engine, container, RECORD_FILE)
            .await
            .ok()
            .flatten()
            .and_then(|bytes| Record::parse(&String::from_utf8_lossy(&bytes)).ok())
            .filter(|r| r.key == label.key && r.is_complete());
        if let Some(r) = here {
            return r;
        }
    }
    crate::record::load_complete(engine, b.from_image)
        .await
        .map(|(_, r)| r)
        .unwrap_or(label)
}
