//! What prebuilder asks of images besides building layers: run a probe in a
//! short-lived container with no network, read a file out of an image, and add
//! a Beam SDK image's boot to a base (`boot.rs`). The [`ImageTools`] trait keeps
//! the commands testable without an engine, like [`super::Engine`].
//!
//! Every container made here is labelled `prebuilder=<role>`, named
//! `prebuilder-<role>-<n>-<pid>`, tracked for [`super::Engine::remove_leftovers`]
//! and removed on every path, like the setup containers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, HostConfig, ImageInspect};
use bollard::query_parameters::CreateContainerOptions;

use super::boot::BootBuild;
use super::docker::{engine_err, DockerEngine};
use super::LABEL;
use crate::error::{Error, Result};
use crate::plan::BOOT;
use crate::progress::Reporter;

/// A probe that has not finished by then is stuck (it reads metadata only).
const PROBE_TIMEOUT: Duration = Duration::from_secs(120);
/// Output kept per stream; the probe prints one short line.
const MAX_OUTPUT: usize = 1 << 20;

/// What a probe container did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOutput {
    /// The image's id, OS and architecture (from its config).
    pub id: String,
    pub os: String,
    pub architecture: String,
    /// False when the image has no `/bin/sh`: then nothing ran.
    pub shell: bool,
    pub status: i64,
    pub stdout: String,
    pub stderr: String,
}

#[allow(async_fn_in_trait)]
pub trait ImageTools {
    /// Run `command` (entrypoint and arguments) in a short-lived container of
    /// `image` with no network and collect its output. The command must start
    /// with `/bin/sh`; an image without it is reported, not run.
    async fn probe(&self, image: &str, command: Vec<String>) -> Result<ProbeOutput>;
    /// A regular file's content from an image; `None` when the image lacks it.
    async fn read_file(&self, image: &str, path: &str) -> Result<Option<Vec<u8>>>;
    /// Build the `boot` layer: the base plus the boot image's /opt/apache/beam,
    /// with the boot as entrypoint. Returns the committed image's id.
    async fn build_boot_layer(
        &self,
        build: BootBuild<'_>,
        reporter: &dyn Reporter,
    ) -> Result<String>;
}

static SERIAL: AtomicU64 = AtomicU64::new(0);

/// `prebuilder-<role>-<n>-<pid>`: unique in this process, and ending in the pid
/// like the setup containers, so a process's leftovers can be told apart.
pub(super) fn container_name(role: &str) -> String {
    format!(
        "prebuilder-{role}-{}-{}",
        SERIAL.fetch_add(1, Ordering::Relaxed),
        std::process::id()
    )
}

impl DockerEngine {
    async fn inspect_or_missing(&self, image: &str) -> Result<ImageInspect> {
        match self.docker.inspect_image(image).await {
            Ok(i) => Ok(i),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Err(Error::ImageMissing {
                what: "image",
                image: image.to_string(),
            }),
            Err(e) => Err(engine_err(&format!("inspecting image {image}"), e)),
        }
    }

    /// Create (not start) a container of `image` with no network, tracked.
    /// `entrypoint` is what would run; containers that only serve as a
    /// filesystem get the boot, which is never started.
    pub(super) async fn create_container(
        &self,
        image: &str,
        role: &str,
        entrypoint: Vec<String>,
    ) -> Result<String> {
        let name = container_name(role);
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            entrypoint: Some(entrypoint),
            // An empty Cmd keeps the image's Cmd from being appended.
            cmd: Some(Vec::new()),
            labels: Some(HashMap::from([(LABEL.to_string(), role.to_string())])),
            host_config: Some(HostConfig {
                network_mode: Some("none".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(|e| engine_err(&format!("creating container {name} from {image}"), e))?;
        self.track(&created.id);
        Ok(created.id)
    }

    /// Start a created probe container and collect its output and status.
    async fn run_created(&self, id: &str) -> Result<(i64, String, String)> {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let status = self
            .run_attached(id, "probe container", |is_stderr, chunk| {
                let buf = if is_stderr { &mut stderr } else { &mut stdout };
                if buf.len() < MAX_OUTPUT {
                    buf.extend_from_slice(chunk);
                }
            })
            .await?;
        Ok((
            status,
            String::from_utf8_lossy(&stdout).into_owned(),
            String::from_utf8_lossy(&stderr).into_owned(),
        ))
    }
}

impl ImageTools for DockerEngine {
    async fn probe(&self, image: &str, command: Vec<String>) -> Result<ProbeOutput> {
        let inspect = self.inspect_or_missing(image).await?;
        let id = inspect.id.clone().unwrap_or_default();
        let mut out = ProbeOutput {
            id: id.clone(),
            os: inspect.os.unwrap_or_default(),
            architecture: inspect.architecture.unwrap_or_default(),
            shell: true,
            status: 0,
            stdout: String::new(),
            stderr: String::new(),
        };
        let container = self.create_container(&id, "probe", command).await?;
        let result = async {
            if !self.exists(&container, "/bin/sh").await? {
                out.shell = false;
                return Ok(out);
            }
            let ran = tokio::time::timeout(PROBE_TIMEOUT, self.run_created(&container))
                .await
                .map_err(|_| Error::ProbeFailed {
                    image: image.to_string(),
                    reason: format!("no answer within {} s", PROBE_TIMEOUT.as_secs()),
                })??;
            (out.status, out.stdout, out.stderr) = ran;
            Ok(out)
        }
        .await;
        self.remove_container(&container).await;
        result
    }

    async fn read_file(&self, image: &str, path: &str) -> Result<Option<Vec<u8>>> {
        let inspect = self.inspect_or_missing(image).await?;
        let id = inspect.id.unwrap_or_default();
        let container = self
            .create_container(&id, "read", vec![BOOT.to_string()])
            .await?;
        let result = self.download_file(&container, path).await;
        self.remove_container(&container).await;
        result
    }

    async fn build_boot_layer(
        &self,
        build: BootBuild<'_>,
        reporter: &dyn Reporter,
    ) -> Result<String> {
        self.copy_boot(build, reporter).await
    }
}
