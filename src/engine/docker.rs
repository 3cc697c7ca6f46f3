//! [`Engine`] over the Docker Engine API with bollard. Works with Docker and
//! Podman's compatible API, on the local socket or `DOCKER_HOST`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use bollard::auth::DockerCredentials;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerConfig, ContainerCreateBody, HostConfig, ImageConfig, ImageInspect,
};
use bollard::query_parameters::{
    AttachContainerOptions, CommitContainerOptions, ContainerArchiveInfoOptions,
    CreateContainerOptions, ListImagesOptions, PushImageOptions, RemoveContainerOptions,
    TagImageOptions, UploadToContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;

use super::upload::{self, UploadFile};
use super::{
    setup, verify, Engine, ImageInfo, LayerBuild, LayerImage, LABEL, LABEL_KEY, LABEL_PARENT,
};
use crate::error::{Error, Result};
use crate::plan::{BEAM_DIR, BOOT};
use crate::progress::Reporter;
use crate::registry::{Credential, RepositoryRef};

/// Lines of setup output kept for the error message when the setup fails.
const TAIL_LINES: usize = 25;
/// bollard's default request timeout is 120 s; a quiet `pip install` of a
/// large wheel, or a wait on a long setup, takes longer than that.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(6 * 60 * 60);

pub struct DockerEngine {
    pub(super) docker: Docker,
    /// Containers created and not yet removed, for [`Engine::remove_leftovers`].
    live: Mutex<Vec<String>>,
    /// Podman's compatible API (see `podman`): layers load as OCI archives
    /// and a commit takes its config as instructions.
    pub(super) podman: bool,
    /// `Docker 20.10.24`, `Podman 4.3.1`: for messages.
    product: String,
}

impl DockerEngine {
    /// Connect to the engine the docker CLI would use (see `endpoint`) and
    /// agree on an API version with it.
    pub async fn connect() -> Result<DockerEngine> {
        let endpoint = super::endpoint::resolve(&super::endpoint::Env::from_process())?;
        super::endpoint::set_current(&endpoint);
        let docker = super::endpoint::connect(&endpoint, REQUEST_TIMEOUT).await?;
        let version = docker
            .version()
            .await
            .map_err(|e| engine_err("asking the engine for its version", e))?;
        Ok(DockerEngine {
            docker,
            live: Mutex::new(Vec::new()),
            podman: super::podman::is_podman(&version),
            product: super::podman::product(&version),
        })
    }

    pub(super) fn track(&self, id: &str) {
        if let Ok(mut live) = self.live.lock() {
            live.push(id.to_string());
        }
    }

    pub(super) async fn remove_container(&self, id: &str) {
        let opts = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match self.docker.remove_container(id, Some(opts)).await {
            Ok(())
            | Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => {
                if let Ok(mut live) = self.live.lock() {
                    live.retain(|c| c != id);
                }
            }
            Err(e) => tracing::warn!(
                "could not remove setup container {id}: {e}; remove it with `docker rm -f {id}`"
            ),
        }
    }

    /// Whether `path` exists in a (created, not necessarily started) container.
    pub(super) async fn exists(&self, container: &str, path: &str) -> Result<bool> {
        let opts = ContainerArchiveInfoOptions {
            path: path.to_string(),
        };
        match self
            .docker
            .get_container_archive_info(container, Some(opts))
            .await
        {
            Ok(_) => Ok(true),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(engine_err(
                &format!("looking for {path} in the setup container"),
                e,
            )),
        }
    }

    /// Everything between "container created" and "image committed"; the
    /// caller removes the container whatever happens here.
    async fn setup_and_commit(
        &self,
        id: &str,
        build: &LayerBuild<'_>,
        base_config: &ImageConfig,
        reporter: &dyn Reporter,
    ) -> Result<String> {
        let layer = build.layer;
        for path in [BOOT, "/bin/sh"] {
            if !self.exists(id, path).await? {
                return Err(Error::BootMissing {
                    image: build.from_image.to_string(),
                    path: path.to_string(),
                });
            }
        }

        let files: Vec<UploadFile> = layer
            .artifacts
            .iter()
            .map(|a| UploadFile {
                name: a.name.clone(),
                path: a.path.clone(),
                size: a.size,
            })
            .collect();
        let total: u64 = files.iter().map(|f| f.size).sum();
        reporter.step(&format!(
            "{}: uploading {} artifact(s), {:.1} MB",
            layer.name,
            files.len(),
            total as f64 / 1e6
        ));
        let (chunks, writer) = upload::start(layer.manifest.clone(), files);
        let body = futures_util::stream::unfold(chunks, |mut rx| async move {
            rx.recv().await.map(|c| (c, rx))
        });
        let uploaded = self
            .docker
            .upload_to_container(
                id,
                Some(UploadToContainerOptions {
                    path: BEAM_DIR.to_string(),
                    ..Default::default()
                }),
                bollard::body_try_stream(body),
            )
            .await;
        // The writer's error names the file at fault: prefer it.
        match writer.await {
            Ok(Err(e)) => return Err(e),
            Err(join) => {
                return Err(Error::Engine {
                    action: "streaming the artifacts".into(),
                    reason: join.to_string(),
                })
            }
            Ok(Ok(())) => {}
        }
        uploaded.map_err(|e| engine_err("uploading the artifacts into the setup container", e))?;

        reporter.step(&format!("{}: running {BOOT} --setup_only", layer.name));
        let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL_LINES);
        let mut partial = Vec::new();
        let mut emit = |line: &[u8]| {
            let line = String::from_utf8_lossy(line)
                .trim_end_matches('\r')
                .to_string();
            reporter.output(layer.name, &line);
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        };
        // stdout and stderr interleave as the boot wrote them.
        let status = self
            .run_attached(id, "setup container", |_, chunk| {
                partial.extend_from_slice(chunk);
                while let Some(pos) = partial.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = partial.drain(..=pos).collect();
                    emit(&line[..line.len() - 1]);
                }
            })
            .await?;
        if !partial.is_empty() {
            emit(&partial);
        }
        if status != 0 {
            let tail: Vec<String> = tail.into_iter().collect();
            let shown = if tail.is_empty() {
                String::new()
            } else {
                format!(
                    "\nlast lines of the setup's output:\n{}",
                    tail.iter()
                        .map(|l| format!("  | {l}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            };
            return Err(Error::SetupFailed {
                layer: layer.name.to_string(),
                step: setup::failing_step(&tail),
                status,
                tail: shown,
            });
        }

        // The environment's record (pip freeze + inputs) goes into the image and a label.
        let mut labels = build.labels.clone();
        let record = self.make_record(id, build, reporter).await?;
        if let Some((_, label)) = &record {
            labels.insert(crate::record::LABEL_RECORD.to_string(), label.clone());
        }
        let config = commit_config(base_config, &labels);
        // Preferred: a layer of exactly what the setup changed, loaded as an
        // image (see `layer`); a commit diffs the whole filesystem, which on
        // some storage drivers (fuse-overlayfs) takes seconds for any change.
        if !commit_forced() {
            let file = record.as_ref().map(|(f, _)| f.as_slice());
            // A refused load is an error, not a reason to commit: the
            // container holds the snapshot, which a commit would carry.
            match self
                .load_layer(id, build, &config, file, reporter)
                .await
                .map_err(|e| Error::LayerLoadFailed {
                    layer: layer.name.to_string(),
                    reason: e.to_string(),
                })? {
                Some(image) => return Ok(image),
                None => reporter.step(&format!(
                    "{}: the base has no GNU find/tar for a layer snapshot; committing",
                    layer.name
                )),
            }
        }
        if let Some((file, _)) = record {
            self.upload_file(id, crate::plan::BEAM_DIR, crate::record::RECORD_NAME, file)
                .await?;
        }
        reporter.step(&format!("{}: committing", layer.name));
        let changes = self.podman.then(|| super::podman::changes(&config));
        let committed = self
            .docker
            .commit_container(
                CommitContainerOptions {
                    container: Some(id.to_string()),
                    comment: Some(format!("prebuilder {} layer {}", layer.name, layer.tag())),
                    pause: false,
                    changes,
                    ..Default::default()
                },
                config,
            )
            .await
            .map_err(|e| engine_err("committing the setup container", e))?;
        Ok(super::podman::normalize_id(&committed.id))
    }

    /// Attach (before the start, so no output is lost), start, hand every
    /// chunk of output to `on_output` (`true` for stderr) and return the exit
    /// status. `what` names the container in errors.
    pub(super) async fn run_attached(
        &self,
        id: &str,
        what: &str,
        mut on_output: impl FnMut(bool, &[u8]),
    ) -> Result<i64> {
        let mut attached = self
            .docker
            .attach_container(
                id,
                Some(AttachContainerOptions {
                    stdout: true,
                    stderr: true,
                    stream: true,
                    logs: true,
                    ..Default::default()
                }),
            )
            .await
            .map_err(|e| engine_err(&format!("attaching to the {what}"), e))?;
        self.docker
            .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
            .await
            .map_err(|e| engine_err(&format!("starting the {what}"), e))?;
        while let Some(chunk) = attached.output.next().await {
            match chunk.map_err(|e| engine_err(&format!("reading the {what}'s output"), e))? {
                LogOutput::StdErr { message } => on_output(true, &message),
                LogOutput::StdOut { message } | LogOutput::Console { message } => {
                    on_output(false, &message)
                }
                LogOutput::StdIn { .. } => {}
            }
        }
        self.exit_status(id).await
    }

    pub(super) async fn exit_status(&self, id: &str) -> Result<i64> {
        let mut wait = self
            .docker
            .wait_container(id, None::<bollard::query_parameters::WaitContainerOptions>);
        match wait.next().await {
            Some(Ok(r)) => Ok(r.status_code),
            Some(Err(BollardError::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(engine_err("waiting for the setup container", e)),
            None => Err(Error::Engine {
                action: "waiting for the setup container".into(),
                reason: "the engine closed the wait without a status".into(),
            }),
        }
    }
}

impl DockerEngine {
    /// The built image is what was asked for (see `verify`), or it is removed
    /// and the build fails before anything is tagged.
    async fn verify_layer(
        &self,
        id: &str,
        build: &LayerBuild<'_>,
        base_config: &ImageConfig,
    ) -> Result<()> {
        let want = verify::Observed::expected(&commit_config(base_config, &build.labels));
        let names: Vec<&str> = build
            .layer
            .artifacts
            .iter()
            .map(|a| a.name.as_str())
            .collect();
        let got = self.observe(id, &verify::leftover_paths(&names)).await?;
        let engine = format!("{} ({})", super::endpoint::describe(), self.product);
        if let Err(e) = verify::verify(&engine, id, &want, &got) {
            // Untagged, so nothing else holds it; a failure to remove is only noise here.
            if let Err(r) = self.remove_image(id).await {
                tracing::warn!("could not remove the wrong image {id}: {r}");
            }
            return Err(e);
        }
        Ok(())
    }
}

/// `PREBUILDER_COMMIT` set: commit the setup container instead of loading a layer.
fn commit_forced() -> bool {
    std::env::var_os("PREBUILDER_COMMIT").is_some()
}

pub(super) fn engine_err(action: &str, e: BollardError) -> Error {
    match e {
        BollardError::SocketNotFoundError(_) | BollardError::HyperResponseError { .. } => {
            super::endpoint::unreachable(e.to_string())
        }
        other => Error::Engine {
            action: action.to_string(),
            reason: other.to_string(),
        },
    }
}

fn image_info(i: ImageInspect) -> ImageInfo {
    let c = i.config.unwrap_or_default();
    ImageInfo {
        id: super::podman::normalize_id(&i.id.unwrap_or_default()),
        entrypoint: c.entrypoint.unwrap_or_default(),
        cmd: c.cmd.unwrap_or_default(),
        env: c.env.unwrap_or_default(),
        labels: c.labels.unwrap_or_default().into_iter().collect(),
        repo_tags: i
            .repo_tags
            .unwrap_or_default()
            .iter()
            .map(|t| super::podman::familiar(t))
            .collect(),
    }
}

/// The committed image's config: the *base image's* (entrypoint, cmd, env,
/// working dir, user, …) plus our labels. Every field is given explicitly
/// because the engine fills fields left empty from the setup container.
pub(super) fn commit_config(
    base: &ImageConfig,
    ours: &BTreeMap<String, String>,
) -> ContainerConfig {
    let mut labels: HashMap<String, String> = base.labels.clone().unwrap_or_default();
    labels.extend(ours.iter().map(|(k, v)| (k.clone(), v.clone())));
    // Overrides the setup container's `prebuilder=setup`, which the commit copies.
    labels.insert(LABEL.to_string(), "image".to_string());
    let mut entrypoint = base.entrypoint.clone().unwrap_or_default();
    if entrypoint.is_empty() && base.cmd.as_ref().is_none_or(|c| c.is_empty()) {
        // With neither set the engine would keep the setup script as the
        // entrypoint; the boot (checked present) is what Beam images run.
        entrypoint = vec![BOOT.to_string()];
    }
    ContainerConfig {
        user: base.user.clone(),
        exposed_ports: base.exposed_ports.clone(),
        env: base.env.clone(),
        cmd: base.cmd.clone(),
        healthcheck: base.healthcheck.clone(),
        args_escaped: base.args_escaped,
        volumes: base.volumes.clone(),
        working_dir: base.working_dir.clone(),
        entrypoint: Some(entrypoint),
        on_build: base.on_build.clone(),
        labels: Some(labels),
        stop_signal: base.stop_signal.clone(),
        shell: base.shell.clone(),
        ..Default::default()
    }
}

impl Engine for DockerEngine {
    async fn image(&self, reference: &str) -> Result<Option<ImageInfo>> {
        match self.docker.inspect_image(reference).await {
            Ok(i) => Ok(Some(image_info(i))),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(engine_err(&format!("inspecting image {reference}"), e)),
        }
    }

    async fn find_layer(&self, key: &str) -> Result<Option<ImageInfo>> {
        let filters = HashMap::from([("label".to_string(), vec![format!("{LABEL_KEY}={key}")])]);
        let found = self
            .docker
            .list_images(Some(ListImagesOptions {
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|e| engine_err("looking up cached layers", e))?;
        match found.into_iter().next() {
            Some(summary) => self.image(&summary.id).await,
            None => Ok(None),
        }
    }

    async fn build_layer(&self, build: LayerBuild<'_>, reporter: &dyn Reporter) -> Result<String> {
        let base_config = self
            .docker
            .inspect_image(&build.base.id)
            .await
            .map_err(|e| engine_err(&format!("inspecting base image {}", build.base.id), e))?
            .config
            .unwrap_or_default();
        let layer = build.layer;
        let no_index = matches!(build.network, super::Network::None);
        let names: Vec<&str> = layer.artifacts.iter().map(|a| a.name.as_str()).collect();
        let command = setup::command_with(no_index, !commit_forced(), &names);
        let name = format!(
            "prebuilder-setup-{}-{}-{}",
            layer.name,
            &layer.key[..12],
            std::process::id()
        );
        reporter.step(&format!("{}: creating setup container {name}", layer.name));
        let body = ContainerCreateBody {
            image: Some(build.from_image.to_string()),
            // The whole command is the entrypoint; an empty Cmd keeps the
            // image's Cmd from being appended as extra arguments.
            entrypoint: Some(command),
            cmd: Some(Vec::new()),
            labels: Some(HashMap::from([(LABEL.to_string(), "setup".to_string())])),
            host_config: Some(HostConfig {
                network_mode: build.network.mode(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(|e| match e {
                BollardError::DockerResponseServerError {
                    status_code: 404,
                    message,
                } => Error::Engine {
                    action: format!("creating the setup container from {}", build.from_image),
                    reason: message,
                },
                other => engine_err("creating the setup container", other),
            })?;
        self.track(&created.id);
        let result = self
            .setup_and_commit(&created.id, &build, &base_config, reporter)
            .await;
        self.remove_container(&created.id).await;
        let id = result?;
        self.verify_layer(&id, &build, &base_config).await?;
        Ok(id)
    }

    async fn layer_images(&self) -> Result<Vec<LayerImage>> {
        let filters = HashMap::from([("label".to_string(), vec![LABEL_KEY.to_string()])]);
        let found = self
            .docker
            .list_images(Some(ListImagesOptions {
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|e| engine_err("listing prebuilder images", e))?;
        Ok(found
            .into_iter()
            .map(|i| LayerImage {
                key: i.labels.get(LABEL_KEY).cloned().unwrap_or_default(),
                parent: i.labels.get(LABEL_PARENT).cloned().unwrap_or_default(),
                id: super::podman::normalize_id(&i.id),
                tags: i
                    .repo_tags
                    .into_iter()
                    .filter(|t| t != "<none>:<none>")
                    .map(|t| super::podman::familiar(&t))
                    .collect(),
                created: i.created,
            })
            .collect())
    }

    async fn remove_image(&self, reference: &str) -> Result<()> {
        self.docker
            .remove_image(
                reference,
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            )
            .await
            .map(|_| ())
            .map_err(|e| engine_err(&format!("removing image {reference}"), e))
    }

    async fn push(
        &self,
        repo: &str,
        tag: &str,
        credential: Option<&Credential>,
        reporter: &dyn Reporter,
    ) -> Result<()> {
        let registry = RepositoryRef::parse(repo);
        let credentials = credential.map(|c| {
            let mut d = DockerCredentials {
                serveraddress: Some(registry.auth_key().to_string()),
                ..Default::default()
            };
            match c {
                Credential::Basic { username, password } => {
                    d.username = Some(username.clone());
                    d.password = Some(password.clone());
                }
                Credential::IdentityToken(t) => d.identitytoken = Some(t.clone()),
            }
            d
        });
        let mut stream = self.docker.push_image(
            repo,
            Some(PushImageOptions {
                tag: Some(tag.to_string()),
                ..Default::default()
            }),
            credentials,
        );
        let mut last = String::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    // Per-layer milestones only; byte progress would flood stderr.
                    if let Some(status) = info.status {
                        if status != last
                            && !status.starts_with("Pushing")
                            && !status.starts_with("Waiting")
                        {
                            reporter.step(&format!("push {repo}:{tag}: {status}"));
                        }
                        last = status;
                    }
                }
                Err(BollardError::DockerStreamError { error }) => {
                    // The engine reports registry failures inside the stream
                    // as text, with no status code: classify the two a user
                    // can act on, keep the rest verbatim.
                    let lower = error.to_ascii_lowercase();
                    return Err(
                        if lower.contains("unauthorized")
                            || lower.contains("authentication required")
                        {
                            Error::RegistryUnauthorized {
                                registry: registry.registry,
                                with_credentials: credential.is_some(),
                            }
                        } else if lower.contains("http response to https client") {
                            Error::RegistryInsecure {
                                registry: registry.registry,
                                podman: self.podman,
                            }
                        } else if lower.contains("denied") {
                            Error::RegistryDenied {
                                registry: registry.registry,
                                repository: registry.path,
                            }
                        } else {
                            Error::Registry {
                                registry: registry.registry,
                                action: format!("pushing {repo}:{tag}"),
                                reason: error,
                            }
                        },
                    );
                }
                Err(e) => return Err(engine_err(&format!("pushing {repo}:{tag}"), e)),
            }
        }
        Ok(())
    }

    async fn tag(&self, image_id: &str, repo: &str, tag: &str) -> Result<()> {
        self.docker
            .tag_image(
                image_id,
                Some(TagImageOptions {
                    repo: Some(repo.to_string()),
                    tag: Some(tag.to_string()),
                }),
            )
            .await
            .map_err(|e| engine_err(&format!("tagging {image_id} as {repo}:{tag}"), e))
    }

    async fn remove_leftovers(&self) {
        let ids: Vec<String> = self.live.lock().map(|l| l.clone()).unwrap_or_default();
        for id in ids {
            self.remove_container(&id).await;
        }
    }
}
