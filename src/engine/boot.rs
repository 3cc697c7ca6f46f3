//! The `boot` layer of `build --boot-from`: a base with Python and apache-beam
//! but no Beam boot (a GPU image, say) gets a Beam SDK image's /opt/apache/beam
//! and the boot as its entrypoint — `COPY --from=<sdk> /opt/apache/beam …` and
//! `ENTRYPOINT ["/opt/apache/beam/boot"]` through the Engine API. The directory
//! is streamed from one container's archive endpoint into the other's, never
//! held whole in memory; neither container is started.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bollard::query_parameters::{
    CommitContainerOptions, DownloadFromContainerOptions, UploadToContainerOptions,
};
use futures_util::StreamExt;

use super::docker::{commit_config, engine_err, DockerEngine};
use super::ImageInfo;
use crate::error::{Error, Result};
use crate::plan::{BEAM_DIR, BOOT};
use crate::progress::Reporter;

/// Label of a `boot` layer (and of every image built on one): the id of the
/// image its /opt/apache/beam came from.
pub const LABEL_BOOT_FROM: &str = "prebuilder.boot-from";

/// What building a boot layer needs.
pub struct BootBuild<'a> {
    /// The base: its config is what the layer keeps, except the entrypoint.
    pub base: &'a ImageInfo,
    /// The Beam SDK image the boot comes from.
    pub boot_image: &'a ImageInfo,
    /// How the user named the boot image, for messages.
    pub boot_ref: &'a str,
    /// The layer's key (tag and container names use its prefix).
    pub key: &'a str,
    /// Labels the committed image gets on top of the base's.
    pub labels: BTreeMap<String, String>,
}

/// /opt/apache/beam's parent; the archive of BEAM_DIR is extracted here.
const BEAM_PARENT: &str = "/opt/apache";

impl DockerEngine {
    pub(super) async fn copy_boot(
        &self,
        build: BootBuild<'_>,
        reporter: &dyn Reporter,
    ) -> Result<String> {
        let base_config = self
            .docker
            .inspect_image(&build.base.id)
            .await
            .map_err(|e| engine_err(&format!("inspecting base image {}", build.base.id), e))?
            .config
            .unwrap_or_default();
        let never_run = vec![BOOT.to_string()];
        let source = self
            .create_container(&build.boot_image.id, "boot-source", never_run.clone())
            .await?;
        let target = match self
            .create_container(&build.base.id, "boot-layer", never_run)
            .await
        {
            Ok(t) => t,
            Err(e) => {
                self.remove_container(&source).await;
                return Err(e);
            }
        };
        let result = self
            .copy_and_commit(&source, &target, &build, &base_config, reporter)
            .await;
        self.remove_container(&source).await;
        self.remove_container(&target).await;
        result
    }

    async fn copy_and_commit(
        &self,
        source: &str,
        target: &str,
        build: &BootBuild<'_>,
        base_config: &bollard::models::ImageConfig,
        reporter: &dyn Reporter,
    ) -> Result<String> {
        if !self.exists(source, BOOT).await? {
            return Err(Error::BootSourceMissing {
                image: build.boot_ref.to_string(),
                path: BOOT.to_string(),
            });
        }
        // The archive endpoint extracts into an existing directory only.
        if !self.exists(target, BEAM_PARENT).await? {
            let opt_exists = self.exists(target, "/opt").await?;
            self.make_dirs(target, !opt_exists).await?;
        }
        reporter.step(&format!("boot: copying {BEAM_DIR} from {}", build.boot_ref));
        let copied = Arc::new(AtomicU64::new(0));
        let counter = copied.clone();
        let download = self
            .docker
            .download_from_container(
                source,
                Some(DownloadFromContainerOptions {
                    path: BEAM_DIR.to_string(),
                }),
            )
            .map(move |chunk| {
                chunk
                    .inspect(|bytes| {
                        counter.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    })
                    .map_err(std::io::Error::other)
            });
        self.docker
            .upload_to_container(
                target,
                Some(UploadToContainerOptions {
                    path: BEAM_PARENT.to_string(),
                    ..Default::default()
                }),
                bollard::body_try_stream(download),
            )
            .await
            .map_err(|e| {
                engine_err(
                    &format!("copying {BEAM_DIR} from {} into the base", build.boot_ref),
                    e,
                )
            })?;
        let bytes = copied.load(Ordering::Relaxed);
        reporter.step(&format!(
            "boot: copied {} (tar); committing with entrypoint {BOOT}",
            if bytes < 1_000_000 {
                format!("{:.1} kB", bytes as f64 / 1e3)
            } else {
                format!("{:.1} MB", bytes as f64 / 1e6)
            }
        ));
        let mut config = commit_config(
            base_config,
            &build.labels,
            &[],
            &crate::mode::SetupMode::Beam,
        );
        config.entrypoint = Some(vec![BOOT.to_string()]);
        // As in a Dockerfile, a new ENTRYPOINT drops the base's CMD (`python3`
        // would reach the boot as an argument).
        config.cmd = Some(Vec::new());
        let committed = self
            .docker
            .commit_container(
                CommitContainerOptions {
                    container: Some(target.to_string()),
                    comment: Some(format!(
                        "prebuilder boot layer {} from {}",
                        &build.key[..build.key.len().min(32)],
                        build.boot_ref
                    )),
                    pause: false,
                    ..Default::default()
                },
                config,
            )
            .await
            .map_err(|e| engine_err("committing the boot layer", e))?;
        Ok(committed.id)
    }

    /// Create /opt/apache (and /opt when `with_opt`) as root-owned 0755 directories.
    async fn make_dirs(&self, target: &str, with_opt: bool) -> Result<()> {
        let action = "creating /opt/apache in the base";
        let mut builder = tar::Builder::new(Vec::new());
        let dirs: &[&str] = if with_opt {
            &["opt/", "opt/apache/"]
        } else {
            &["opt/apache/"]
        };
        for d in dirs {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            h.set_uid(0);
            h.set_gid(0);
            builder
                .append_data(&mut h, d, std::io::empty())
                .map_err(|e| Error::Engine {
                    action: action.into(),
                    reason: e.to_string(),
                })?;
        }
        let tar = builder.into_inner().map_err(|e| Error::Engine {
            action: action.into(),
            reason: e.to_string(),
        })?;
        self.docker
            .upload_to_container(
                target,
                Some(UploadToContainerOptions {
                    path: "/".to_string(),
                    ..Default::default()
                }),
                bollard::body_full(tar.into()),
            )
            .await
            .map_err(|e| engine_err(action, e))
    }
}
