//! The last step of publishing (one function, [`publish`], called once at
//! the end of `run`): the result's SBOMs and provenance (`crate::attest`),
//! attached to the pushed result as OCI referrers and written to
//! `--attestations-dir`.
//!
//! - Attached only with `--push` (prebuilder writes to a registry only then),
//!   never twice: a kind of document the result has already (a second push
//!   of the same inputs, a registry hit) is left as it is, and when every
//!   kind is there nothing else is read.
//! - Made from the result as built here (the engine's image and its record),
//!   or, on a registry hit where nothing was pulled, as the registry holds it
//!   (its config, and its top layer when the label lacks part of the record).
//! - A result without a record (a base whose Python has no pip) gets no
//!   documents: an event says why, and the build does not fail.

use std::path::PathBuf;

use super::{Options, Remote};
use crate::attest::{self, attach, image::Described, provenance::Invocation, Kind, Wanted};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::progress::{Event, Reporter};
use crate::registry::Manifests;
use crate::report::Report;

/// What a build attests (`--no-attestations`, `--sbom-format`,
/// `--attestations-dir`).
#[derive(Debug, Clone)]
pub struct Attestations {
    /// Attach the documents to a pushed result.
    pub attach: bool,
    /// Which documents.
    pub wanted: Wanted,
    /// Also write every document here.
    pub dir: Option<PathBuf>,
}

impl Default for Attestations {
    fn default() -> Self {
        Attestations {
            attach: true,
            wanted: Wanted::ALL,
            dir: None,
        }
    }
}

impl Attestations {
    /// None at all (the unit tests' default, which count registry writes).
    pub fn off() -> Self {
        Attestations {
            attach: false,
            wanted: Wanted::ALL,
            dir: None,
        }
    }
}

/// Attach the documents about the published result (`report`) and write
/// them to `--attestations-dir`, as asked.
pub async fn publish<E: Engine, R: Manifests>(
    engine: &E,
    opts: &Options,
    remote: Option<&Remote<R>>,
    report: &Report,
    reporter: &dyn Reporter,
) -> Result<()> {
    let a = &opts.attestations;
    let kinds = a.wanted.kinds();
    if kinds.is_empty() {
        return Ok(());
    }
    // The registry is written only with --push, and only about a result it holds.
    let target = match (remote, &report.digest) {
        (Some(r), Some(digest)) if a.attach && opts.push => Some((&r.registry, digest.as_str())),
        _ => None,
    };
    if target.is_none() && a.dir.is_none() {
        return Ok(());
    }
    let mut missing = kinds.clone();
    if let Some((registry, digest)) = target {
        let present = attach::present(registry, digest).await?;
        missing.retain(|k| !present.iter().any(|(p, _)| p == k));
        for (kind, referrer) in present.iter().filter(|(k, _)| kinds.contains(k)) {
            reporter.event(Event::Attestation {
                kind: kind.name(),
                subject: &subject(opts, digest),
                referrer,
                existing: true,
            });
        }
        if missing.is_empty() && a.dir.is_none() {
            return Ok(());
        }
    }
    let described = match describe(engine, opts, remote, report).await {
        Ok(d) => d,
        Err(e @ (Error::RecordMissing { .. } | Error::RecordInvalid { .. })) => {
            reporter.event(Event::AttestationsSkipped {
                reason: &e.to_string(),
            });
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let facts = described.facts();
    let network = opts.network.mode().unwrap_or_else(|| "default".into());
    let invocation = Invocation {
        boot_from: opts.boot_from.as_deref(),
        network: Some(&network),
    };
    let documents: Vec<(Kind, Vec<u8>)> = kinds
        .iter()
        .map(|k| (*k, k.make(&facts, &invocation)))
        .collect();
    if let Some(dir) = &a.dir {
        write(dir, &documents, reporter)?;
    }
    match target {
        Some((registry, digest)) => {
            let documents = documents
                .into_iter()
                .filter(|(k, _)| missing.contains(k))
                .collect();
            attach_to(registry, opts, digest, documents, &facts.date(), reporter).await
        }
        None => Ok(()),
    }
}

/// Attach `documents` as referrers of the result's manifest (`digest`).
async fn attach_to<R: Manifests>(
    registry: &R,
    opts: &Options,
    digest: &str,
    documents: Vec<(Kind, Vec<u8>)>,
    date: &str,
    reporter: &dyn Reporter,
) -> Result<()> {
    let subject_manifest = registry
        .manifest(digest)
        .await?
        .ok_or_else(|| Error::Registry {
            registry: registry.host().to_string(),
            action: format!("attaching documents to {}", subject(opts, digest)),
            source: "the registry no longer has the result's manifest".into(),
        })?;
    for done in attach::attach(registry, &subject_manifest, &documents, date).await? {
        reporter.event(Event::Attestation {
            kind: done.kind.name(),
            subject: &subject(opts, digest),
            referrer: &done.digest,
            existing: done.existing,
        });
    }
    Ok(())
}

fn subject(opts: &Options, digest: &str) -> String {
    format!("{}@{digest}", opts.repository)
}

/// The result as the documents describe it: the engine's image when it was
/// built or found here, else the registry's.
async fn describe<E: Engine, R: Manifests>(
    engine: &E,
    opts: &Options,
    remote: Option<&Remote<R>>,
    report: &Report,
) -> Result<Described> {
    // With no engine the result's record is read where it was pushed.
    let image_id = report
        .image_id
        .as_ref()
        .filter(|_| engine.store().is_none());
    match (image_id, &report.digest, remote) {
        (Some(id), digest, _) => {
            attest::image::from_engine(engine, id, &opts.repository, digest.as_deref()).await
        }
        (None, Some(digest), Some(remote)) => Ok(attest::image::from_registry(
            &remote.registry,
            &opts.repository,
            digest,
            &opts.scratch_dir,
            false,
        )
        .await?
        .described),
        (None, _, _) => Err(Error::RecordMissing {
            image: report.image.clone(),
            file: crate::record::RECORD_FILE,
        }),
    }
}

/// Every document into `dir` (created), under its kind's file name.
fn write(
    dir: &std::path::Path,
    documents: &[(Kind, Vec<u8>)],
    reporter: &dyn Reporter,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Output {
        what: "--attestations-dir",
        path: dir.to_path_buf(),
        source,
    })?;
    for (kind, bytes) in documents {
        let path = dir.join(kind.file_name());
        std::fs::write(&path, bytes).map_err(|source| Error::Output {
            what: "--attestations-dir",
            path: path.clone(),
            source,
        })?;
        reporter.event(Event::AttestationWritten {
            path: &path.display().to_string(),
        });
    }
    Ok(())
}
