//! The record step of a layer build (see `crate::record`): after the setup
//! succeeded, read the pip freeze the setup script left in the stopped
//! container and turn it into the record JSON (which replaces the freeze in
//! the layer) and the label value. Also the small single-file copies in and out of containers that
//! the record, `inspect` and `diff` need.

use std::collections::BTreeMap;
use std::io::Read;

use bollard::errors::Error as BollardError;
use bollard::query_parameters::{DownloadFromContainerOptions, UploadToContainerOptions};
use futures_util::StreamExt;

use super::boot::LABEL_BOOT_FROM;
use super::docker::{engine_err, DockerEngine};
use super::{Engine, LayerBuild, LABEL_BASE};
use crate::error::{Error, Result};
use crate::progress::Reporter;
use crate::record::{self, Record, FORMAT, LABEL_RECORD, RECORD_FILE};

/// A record, or a freeze, is a few kB; anything past this is not one.
const MAX_FILE: usize = 16 << 20;

impl DockerEngine {
    /// The record of a finished setup: the file content for
    /// [`RECORD_FILE`] and the label value. `None` (with a warning) when the
    /// setup left no freeze: a missing record does not fail a build.
    pub(super) async fn make_record(
        &self,
        container: &str,
        build: &LayerBuild<'_>,
        reporter: &dyn Reporter,
    ) -> Result<Option<(Vec<u8>, String)>> {
        let layer = build.layer;
        let Some(freeze) = self.download_file(container, RECORD_FILE).await? else {
            tracing::warn!(
                "{}: the setup left no pip freeze at {RECORD_FILE}; the image gets no record",
                layer.name
            );
            return Ok(None);
        };
        let (python, packages) = record::parse_freeze(&String::from_utf8_lossy(&freeze));
        // Inputs of the layers below come from the parent layer's record.
        let mut inputs = match self.image(build.from_image).await {
            Ok(Some(parent)) => parent
                .labels
                .get(LABEL_RECORD)
                .and_then(|l| Record::parse(l).ok())
                .map(|r| r.inputs)
                .unwrap_or_default(),
            _ => BTreeMap::new(),
        };
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
            base: build
                .labels
                .get(LABEL_BASE)
                .cloned()
                .unwrap_or_else(|| build.base.id.clone()),
            boot_from: build.base.labels.get(LABEL_BOOT_FROM).cloned(),
            python,
            inputs,
            packages: Some(packages),
        };
        reporter.step(&format!(
            "{}: recording {} installed package(s) in {RECORD_FILE}",
            layer.name,
            rec.packages.as_ref().map_or(0, BTreeMap::len)
        ));
        Ok(Some((rec.to_file().into_bytes(), rec.label())))
    }

    /// The content of one regular file in a container (running or not), `None`
    /// when the path does not exist.
    pub(super) async fn download_file(
        &self,
        container: &str,
        path: &str,
    ) -> Result<Option<Vec<u8>>> {
        let action = || format!("reading {path} from container {container}");
        let mut stream = self.docker.download_from_container(
            container,
            Some(DownloadFromContainerOptions {
                path: path.to_string(),
            }),
        );
        let mut tar = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => {
                    tar.extend_from_slice(&bytes);
                    if tar.len() > MAX_FILE {
                        return Err(Error::Engine {
                            action: action(),
                            reason: format!("more than {MAX_FILE} bytes"),
                        });
                    }
                }
                Err(BollardError::DockerResponseServerError {
                    status_code: 404, ..
                }) => return Ok(None),
                Err(e) => return Err(engine_err(&action(), e)),
            }
        }
        let bad = |e: std::io::Error| Error::Engine {
            action: action(),
            reason: e.to_string(),
        };
        let mut archive = tar::Archive::new(&tar[..]);
        for entry in archive.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            if entry.header().entry_type().is_file() {
                let mut content = Vec::new();
                entry.read_to_end(&mut content).map_err(bad)?;
                return Ok(Some(content));
            }
        }
        Ok(None)
    }

    /// Write one file (mode 0644, root) into `dir` of a container, running or not.
    pub(super) async fn upload_file(
        &self,
        container: &str,
        dir: &str,
        name: &str,
        content: Vec<u8>,
    ) -> Result<()> {
        let action = format!("writing {dir}/{name} into container {container}");
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(content.len() as u64);
        header.set_uid(0);
        header.set_gid(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        header.set_mtime(now);
        let mut builder = tar::Builder::new(Vec::new());
        builder
            .append_data(&mut header, name, &content[..])
            .map_err(|e| Error::Engine {
                action: action.clone(),
                reason: e.to_string(),
            })?;
        let tar = builder.into_inner().map_err(|e| Error::Engine {
            action: action.clone(),
            reason: e.to_string(),
        })?;
        self.docker
            .upload_to_container(
                container,
                Some(UploadToContainerOptions {
                    path: dir.to_string(),
                    ..Default::default()
                }),
                bollard::body_full(tar.into()),
            )
            .await
            .map_err(|e| engine_err(&action, e))
    }
}
