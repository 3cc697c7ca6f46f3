//! [`Engine`] over the Docker Engine API with bollard: the only module that
//! imports bollard. Works with Docker and Podman's compatible API, on the local
//! socket or `DOCKER_HOST`. Failures are told apart by HTTP status code
//! (`DockerResponseServerError { status_code, .. }`), never by message text,
//! except inside a push stream, where the engine gives no code.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use bollard::auth::DockerCredentials;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerConfig, ContainerCreateBody, HostConfig, ImageInspect, Mount, MountType,
};
use bollard::query_parameters::{
    AttachContainerOptions, CommitContainerOptions, ContainerArchiveInfoOptions,
    CreateContainerOptions, DownloadFromContainerOptions, ImportImageOptions,
    ListContainersOptions, ListImagesOptions, RemoveContainerOptions, TagImageOptions,
    UploadToContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use sha2::Digest;

use super::{
    ByteStream, ContainerSpec, ContainerSummary, Engine, ImageInfo, ImageSummary, PushStatus, LABEL,
};
use crate::error::{Error, Result};
use crate::registry::{Credential, RepositoryRef};
use crate::state;

/// bollard's default request timeout is 120 s; a quiet `pip install` of a
/// large wheel, or a wait on a long setup, takes longer than that.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(6 * 60 * 60);

pub struct DockerEngine {
    docker: Docker,
    /// Where it is, as the docker CLI would choose it.
    endpoint: super::endpoint::Endpoint,
    /// Containers created and not yet removed, for [`Engine::remove_leftovers`].
    live: Mutex<Vec<String>>,
    /// Images noted by [`Engine::note_partial_image`], for [`Engine::remove_leftovers`].
    partial: Mutex<Vec<String>>,
    /// Podman's compatible API (see `podman`): layers load as OCI archives
    /// and a commit takes its config as instructions.
    podman: bool,
    /// `Docker 20.10.24`, `Podman 4.3.1`: for messages.
    product: String,
    /// The containerd image store (see `containerd`): its ids translated to config
    /// digests, its layers loaded as OCI archives naming the blobs it holds.
    store: Option<super::containerd::Ids>,
}

impl DockerEngine {
    /// Connect to the engine the docker CLI would use in `settings`' environment
    /// (see `endpoint`) and agree on an API version with it.
    pub async fn connect(settings: &crate::settings::Settings) -> Result<DockerEngine> {
        let endpoint = super::endpoint::resolve(&super::endpoint::Env::from_settings(settings))?;
        let docker = super::endpoint::connect(&endpoint, REQUEST_TIMEOUT).await?;
        let version = docker
            .version()
            .await
            .map_err(|e| engine_err("asking the engine for its version", e))
            .map_err(|e| e.named(&super::endpoint::name(&endpoint, "")))?;
        let podman = super::podman::is_podman(&version);
        let store = match podman {
            true => None,
            false => containerd_store(&docker, &endpoint, settings).await?,
        };
        Ok(DockerEngine {
            docker,
            endpoint,
            live: Mutex::new(Vec::new()),
            partial: Mutex::new(Vec::new()),
            podman,
            product: super::podman::product(&version),
            store,
        })
    }

    /// Whether the engine keeps its images in the containerd image store.
    pub fn containerd_store(&self) -> bool {
        self.store.is_some()
    }

    /// The engine's name for `reference` (a config digest becomes the
    /// containerd store's id for it).
    fn handle(&self, reference: &str) -> String {
        match &self.store {
            Some(ids) => ids.handle(reference),
            None => reference.to_string(),
        }
    }

    /// On the containerd store, the manifest of the engine's image `info`
    /// (whose id is still the engine's): known, or read once from a save.
    async fn manifest_of(
        &self,
        ids: &super::containerd::Ids,
        info: &ImageInfo,
    ) -> Result<super::containerd::Manifest> {
        if let Some(m) = ids.known(&info.id, &info.layers) {
            return Ok(m);
        }
        let what = format!(
            "reading the manifest of {} from the engine's export",
            info.id
        );
        let stream = self.export(std::slice::from_ref(&info.id)).await?;
        let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
        let (id, os, arch) = (info.id.clone(), info.os.clone(), info.architecture.clone());
        let bytes = tokio::task::spawn_blocking(move || {
            super::containerd::manifest_from_save(reader, &id, &os, &arch)
        })
        .await
        .map_err(|source| Error::Task {
            action: what.clone(),
            source,
        })?
        .map_err(|e| engine_err_io(&what, e))?;
        ids.learn(&info.id, &bytes, &info.layers)
            .ok_or_else(|| engine_err_io(&what, std::io::Error::other("not an image manifest")))
    }

    /// On the containerd store, the engine's id of the image whose config
    /// digest is `config`, among its images whose manifests are known here
    /// or in the state directory (no export is read); else `config` itself.
    async fn find_config(&self, config: &str) -> Result<String> {
        let Some(ids) = &self.store else {
            return Ok(config.to_string());
        };
        let all = self
            .docker
            .list_images(Some(ListImagesOptions {
                all: true,
                ..Default::default()
            }))
            .await
            .map_err(|e| engine_err(format!("looking for image {config}"), e))?;
        for image in all {
            let id = super::podman::normalize_id(&image.id);
            if ids
                .known(&id, &[])
                .is_some_and(|m| m.config.digest == config)
            {
                return Ok(id);
            }
        }
        Ok(config.to_string())
    }

    /// The engine's image as the build names it: on the containerd store its
    /// id becomes its config digest, and a repo digest that is only its own
    /// manifest's (a loaded image's) is dropped.
    async fn identify(&self, info: ImageInfo) -> Result<ImageInfo> {
        let Some(ids) = &self.store else {
            return Ok(info);
        };
        let m = self.manifest_of(ids, &info).await?;
        Ok(super::containerd::identify(info, &m))
    }

    /// The archive the engine loads for prebuilder's layer `archive`: itself
    /// on the classic store; an OCI archive naming the layers below by the
    /// blobs the engine holds on the containerd store and Podman (see
    /// `containerd`, `podman`), in a temporary file beside it.
    async fn load_archive(&self, archive: &Path) -> Result<Option<tempfile::NamedTempFile>> {
        if !self.podman && self.store.is_none() {
            return Ok(None);
        }
        let dir = archive.parent().unwrap_or(Path::new("."));
        let oci = tempfile::Builder::new()
            .suffix(".oci.tar")
            .tempfile_in(dir)
            .map_err(|e| Error::io(dir, e))?;
        let (src, dst) = (archive.to_path_buf(), oci.path().to_path_buf());
        let layers = self.store.as_ref().map(|ids| ids.layers());
        let manifest = tokio::task::spawn_blocking(move || match layers {
            Some(layers) => super::podman::oci_from_docker_archive(&src, &dst, |below| {
                below
                    .iter()
                    .map(|d| layers.get(d).cloned())
                    .collect::<Option<Vec<_>>>()
                    .map(Some)
                    .ok_or_else(|| {
                        std::io::Error::other(
                            "the blobs the engine holds for the layers below are not known",
                        )
                    })
            }),
            None => {
                super::podman::oci_from_docker_archive(&src, &dst, super::podman::podman_parents)
            }
        })
        .await
        .map_err(|source| Error::Task {
            action: "converting the layer archive to an OCI archive".into(),
            source,
        })?
        .map_err(|source| Error::Local {
            action: format!("converting {} to an OCI archive", archive.display()),
            source,
        })?;
        if let Some(ids) = &self.store {
            // The image's id there is the manifest's digest: known from now on.
            let id = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&manifest)));
            ids.learn(&id, &manifest, &[]);
        }
        Ok(Some(oci))
    }

    /// `Podman 4.3.1` or `Docker 20.10.24`, for messages.
    pub fn product(&self) -> &str {
        &self.product
    }

    /// Where the engine is.
    pub fn endpoint(&self) -> &super::endpoint::Endpoint {
        &self.endpoint
    }

    /// Whether the engine answers a ping now.
    pub async fn answers(&self) -> bool {
        self.docker.ping().await.is_ok()
    }

    /// Containers created and not removed yet.
    pub fn leftovers(&self) -> usize {
        self.live.lock().map(|l| l.len()).unwrap_or_default()
    }

    fn forget(&self, id: &str) {
        if let Ok(mut live) = self.live.lock() {
            live.retain(|c| c != id);
        }
    }
}

/// `/info` on a Docker engine: the containerd image store's [`super::containerd::Ids`]
/// (kept in the state directory), or `None` on the classic store.
async fn containerd_store(
    docker: &Docker,
    endpoint: &super::endpoint::Endpoint,
    settings: &crate::settings::Settings,
) -> Result<Option<super::containerd::Ids>> {
    let info = docker
        .info()
        .await
        .map_err(|e| engine_err("asking the engine for its storage", e))
        .map_err(|e| e.named(&super::endpoint::name(endpoint, "")))?;
    let status = info.driver_status.unwrap_or_default();
    Ok(super::containerd::is_containerd_store(&status)
        .then(|| super::containerd::Ids::new(Some(state::root(settings).dir.join("manifests")))))
}

/// A local failure while reading the engine's answer.
fn engine_err_io(what: &str, e: std::io::Error) -> Error {
    Error::Engine {
        engine: String::new(),
        action: what.to_string(),
        source: Box::new(e),
    }
}

/// How much of an exec's standard error its error keeps (the end).
const EXEC_STDERR_KEPT: usize = 4096;

/// The exit status of an exec whose output has ended (the engine may
/// report it running for a moment longer).
async fn exec_status(docker: &Docker, id: &str) -> std::io::Result<i64> {
    for _ in 0..100 {
        let inspected = docker
            .inspect_exec(id)
            .await
            .map_err(std::io::Error::other)?;
        match (inspected.running, inspected.exit_code) {
            (Some(true), _) | (_, None) => tokio::time::sleep(Duration::from_millis(50)).await,
            (_, Some(code)) => return Ok(code),
        }
    }
    Err(std::io::Error::other(format!(
        "exec {id} still ran 5 s after its output ended"
    )))
}

/// 404 from the engine.
fn not_found(e: &BollardError) -> bool {
    matches!(
        e,
        BollardError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// An engine failure while doing `action`, its cause kept.
fn engine_err(action: impl Into<String>, e: BollardError) -> Error {
    match e {
        // The connection failed, broke, or timed out (the engine stopped
        // mid-build, say): the engine is unavailable, which is worth a retry.
        BollardError::SocketNotFoundError(_)
        | BollardError::HyperResponseError { .. }
        | BollardError::HyperLegacyError { .. }
        | BollardError::HttpClientError { .. }
        | BollardError::IOError { .. }
        | BollardError::RequestTimeoutError => super::endpoint::unreachable(Box::new(e)),
        other => Error::Engine {
            engine: String::new(),
            action: action.into(),
            source: Box::new(other),
        },
    }
}

fn image_info(i: ImageInspect) -> ImageInfo {
    let config = serde_json::to_value(i.config.clone().unwrap_or_default())
        .unwrap_or(serde_json::Value::Null);
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
        repo_digests: i.repo_digests.unwrap_or_default(),
        created: i.created.map(|c| c.to_string()),
        history: Vec::new(),
        os: i.os.unwrap_or_else(|| "linux".into()),
        architecture: i.architecture.unwrap_or_else(|| "amd64".into()),
        layers: i.root_fs.and_then(|r| r.layers).unwrap_or_default(),
        last_tagged: i.metadata.and_then(|m| m.last_tag_time),
        config,
    }
}

fn credentials(repo: &str, credential: Option<&Credential>) -> Option<DockerCredentials> {
    let registry = RepositoryRef::parse(repo);
    credential.map(|c| {
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
    })
}

impl Engine for DockerEngine {
    async fn inspect(&self, reference: &str) -> Result<Option<ImageInfo>> {
        let mut handle = self.handle(reference);
        if handle == reference && reference.starts_with("sha256:") {
            handle = self.find_config(reference).await?;
        }
        let mut info = match self.docker.inspect_image(&handle).await {
            Ok(i) => image_info(i),
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(engine_err(format!("inspecting image {reference}"), e)),
        };
        // By id: the reference may have moved since.
        info.history = match self.docker.image_history(&info.id).await {
            Ok(items) => items
                .into_iter()
                .map(|i| crate::history::EngineEntry {
                    created: i.created,
                    created_by: i.created_by,
                    comment: i.comment,
                    size: i.size,
                })
                .collect(),
            Err(e) if not_found(&e) => return Ok(None),
            Err(BollardError::DockerResponseServerError {
                status_code,
                message,
            }) if self.podman && super::podman::history_has_no_dates(status_code, &message) => {
                tracing::warn!(
                    "Podman cannot show the history of {reference} (its entries carry no date): \
                     its layers get undated entries in the images made on it"
                );
                super::podman::undated_history(&info.layers)
            }
            Err(e) => return Err(engine_err(format!("reading the history of {reference}"), e)),
        };
        Ok(Some(self.identify(info).await?))
    }

    async fn list_images(&self, label: &str) -> Result<Vec<ImageSummary>> {
        let filters = HashMap::from([("label".to_string(), vec![label.to_string()])]);
        let found = self
            .docker
            .list_images(Some(ListImagesOptions {
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|e| engine_err(format!("listing images labelled {label}"), e))?;
        let mut images: Vec<ImageSummary> = found
            .into_iter()
            .map(|i| ImageSummary {
                id: super::podman::normalize_id(&i.id),
                labels: i.labels.into_iter().collect(),
                tags: i
                    .repo_tags
                    .into_iter()
                    .filter(|t| t != "<none>:<none>")
                    .map(|t| super::podman::familiar(&t))
                    .collect(),
                created: i.created,
            })
            .collect();
        if self.store.is_some() {
            // Config digests, as everywhere (see `containerd`).
            for image in &mut images {
                if let Some(info) = self.inspect(&image.id).await? {
                    image.id = info.id;
                }
            }
        }
        Ok(images)
    }

    async fn list_containers(&self, label: &str) -> Result<Vec<ContainerSummary>> {
        let filters = HashMap::from([("label".to_string(), vec![label.to_string()])]);
        let found = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|e| engine_err(format!("listing containers labelled {label}"), e))?;
        Ok(found
            .into_iter()
            .map(|c| ContainerSummary {
                id: c.id.unwrap_or_default(),
                name: c
                    .names
                    .unwrap_or_default()
                    .first()
                    .map(|n| n.trim_start_matches('/').to_string())
                    .unwrap_or_default(),
                labels: c.labels.unwrap_or_default().into_iter().collect(),
            })
            .collect())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String> {
        let body = ContainerCreateBody {
            image: Some(self.handle(&spec.image)),
            entrypoint: Some(spec.entrypoint.clone()),
            // An empty Cmd keeps the image's Cmd from being appended as arguments.
            cmd: Some(Vec::new()),
            // The owner labels tell a later run whether this container's
            // process is gone (an orphan to sweep, `crate::state`).
            labels: Some(
                std::iter::once((LABEL.to_string(), spec.role.clone()))
                    .chain(state::owner_labels())
                    .collect(),
            ),
            host_config: Some(HostConfig {
                network_mode: spec.network.mode(),
                mounts: spec.volume.as_ref().map(|target| {
                    vec![Mount {
                        target: Some(target.clone()),
                        typ: Some(MountType::VOLUME),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(spec.name.clone()),
            platform: spec.platform.clone().unwrap_or_default(),
        };
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| {
                engine_err(
                    format!("creating container {} from {}", spec.name, spec.image),
                    e,
                )
            })?;
        if let Ok(mut live) = self.live.lock() {
            live.push(created.id.clone());
        }
        Ok(created.id)
    }

    async fn exists(&self, container: &str, path: &str) -> Result<bool> {
        let opts = ContainerArchiveInfoOptions {
            path: path.to_string(),
        };
        match self
            .docker
            .get_container_archive_info(container, Some(opts))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => Err(engine_err(format!("looking for {path} in a container"), e)),
        }
    }

    async fn upload(&self, container: &str, dir: &str, tar: ByteStream) -> Result<()> {
        self.docker
            .upload_to_container(
                container,
                Some(UploadToContainerOptions {
                    path: dir.to_string(),
                    ..Default::default()
                }),
                bollard::body_try_stream(tar),
            )
            .await
            .map_err(|e| engine_err(format!("uploading into {dir} of a container"), e))
    }

    async fn download(&self, container: &str, path: &str) -> Result<Option<ByteStream>> {
        let mut stream = self
            .docker
            .download_from_container(
                container,
                Some(DownloadFromContainerOptions {
                    path: path.to_string(),
                }),
            )
            .boxed();
        // The status arrives with the first item: a 404 means "no such path".
        let first = match stream.next().await {
            None => return Ok(Some(futures_util::stream::empty().boxed())),
            Some(Err(e)) if not_found(&e) => return Ok(None),
            Some(Err(e)) => return Err(engine_err(format!("reading {path} from a container"), e)),
            Some(Ok(bytes)) => bytes,
        };
        let rest = stream.map(|c| c.map_err(std::io::Error::other));
        Ok(Some(
            futures_util::stream::once(async move { Ok(first) })
                .chain(rest)
                .boxed(),
        ))
    }

    async fn run_attached(
        &self,
        container: &str,
        on_output: &mut (dyn FnMut(bool, &[u8]) + Send),
    ) -> Result<i64> {
        let options = AttachContainerOptions {
            stdout: true,
            stderr: true,
            stream: true,
            logs: true,
            ..Default::default()
        };
        let mut attached = self
            .docker
            .attach_container(container, Some(options))
            .await
            .map_err(|e| engine_err("attaching to a container", e))?;
        self.docker
            .start_container(
                container,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .map_err(|e| engine_err("starting a container", e))?;
        while let Some(chunk) = attached.output.next().await {
            match chunk.map_err(|e| engine_err("reading a container's output", e))? {
                LogOutput::StdErr { message } => on_output(true, &message),
                LogOutput::StdOut { message } | LogOutput::Console { message } => {
                    on_output(false, &message)
                }
                LogOutput::StdIn { .. } => {}
            }
        }
        let mut wait = self.docker.wait_container(
            container,
            None::<bollard::query_parameters::WaitContainerOptions>,
        );
        match wait.next().await {
            Some(Ok(r)) => Ok(r.status_code),
            Some(Err(BollardError::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(engine_err("waiting for a container", e)),
            None => Err(Error::Engine {
                engine: String::new(),
                action: "waiting for a container".into(),
                source: "the engine closed the wait without a status".into(),
            }),
        }
    }

    async fn commit(
        &self,
        container: &str,
        config: &serde_json::Value,
        comment: &str,
    ) -> Result<String> {
        let mut config: ContainerConfig =
            serde_json::from_value(config.clone()).map_err(|e| Error::Engine {
                engine: String::new(),
                action: "writing the committed image's config".into(),
                source: Box::new(e),
            })?;
        // A commit copies the container's labels the config does not set:
        // the owner labels `create` added describe the container, not the image.
        let labels = config.labels.get_or_insert_with(HashMap::new);
        for (k, _) in state::owner_labels() {
            labels.entry(k).or_default();
        }
        // Podman's /commit ignores the config body: it gets it as instructions too.
        let changes = self.podman.then(|| super::podman::changes(&config));
        let committed = self
            .docker
            .commit_container(
                CommitContainerOptions {
                    container: Some(container.to_string()),
                    comment: Some(comment.to_string()),
                    pause: false,
                    changes,
                    ..Default::default()
                },
                config,
            )
            .await
            .map_err(|e| engine_err("committing a container", e))?;
        let id = super::podman::normalize_id(&committed.id);
        if self.store.is_none() {
            return Ok(id);
        }
        // The containerd store's id is the manifest's: the build's is the config's.
        match self.inspect(&id).await? {
            Some(info) => Ok(info.id),
            None => Err(Error::Engine {
                engine: String::new(),
                action: "committing a container".into(),
                source: format!("the engine did not keep {id}").into(),
            }),
        }
    }

    async fn load(&self, archive: &Path) -> Result<()> {
        // Podman's docker-archive loader and the containerd store's want
        // every layer file; their OCI loaders reuse the layers they hold
        // (see `podman`, `containerd`).
        let oci = self.load_archive(archive).await?;
        let archive = oci.as_ref().map_or(archive, |o| o.path());
        let file = tokio::fs::File::open(archive)
            .await
            .map_err(|e| Error::io(archive, e))?;
        self.load_stream(tokio_util::io::ReaderStream::new(file).boxed())
            .await
    }

    fn loads_streams(&self) -> bool {
        !self.podman && self.store.is_none()
    }

    fn reads_volume_links(&self) -> bool {
        !self.podman && self.store.is_none()
    }

    fn snapshots_in_parts(&self) -> bool {
        self.loads_streams() && self.reads_volume_links()
    }

    async fn exec_output(&self, container: &str, cmd: &[String], ok: &[i64]) -> Result<ByteStream> {
        let what = format!(
            "running {} in container {container}",
            cmd.first().map_or("", String::as_str)
        );
        let config = bollard::models::ExecConfig {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            cmd: Some(cmd.to_vec()),
            ..Default::default()
        };
        let exec = self
            .docker
            .create_exec(container, config)
            .await
            .map_err(|e| engine_err(what.clone(), e))?;
        let options = bollard::exec::StartExecOptions {
            detach: false,
            tty: false,
            output_capacity: Some(1 << 20),
        };
        let started = self
            .docker
            .start_exec(&exec.id, Some(options))
            .await
            .map_err(|e| engine_err(what.clone(), e))?;
        let bollard::exec::StartExecResults::Attached { output, .. } = started else {
            return Err(Error::Engine {
                engine: String::new(),
                action: what,
                source: "the engine started it detached".into(),
            });
        };
        // The end of its standard error, for the error when it fails.
        let stderr = std::sync::Arc::new(Mutex::new(Vec::<u8>::new()));
        let kept = stderr.clone();
        let out = output.filter_map(move |item| {
            let kept = kept.clone();
            async move {
                match item {
                    Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                        Some(Ok(message))
                    }
                    Ok(LogOutput::StdErr { message }) => {
                        if let Ok(mut tail) = kept.lock() {
                            tail.extend_from_slice(&message);
                            let over = tail.len().saturating_sub(EXEC_STDERR_KEPT);
                            tail.drain(..over);
                        }
                        None
                    }
                    Ok(LogOutput::StdIn { .. }) => None,
                    Err(e) => Some(Err(std::io::Error::other(e))),
                }
            }
        });
        let docker = self.docker.clone();
        let ok = ok.to_vec();
        let command = cmd.join(" ");
        let status = futures_util::stream::once(async move {
            let code = exec_status(&docker, &exec.id).await?;
            if ok.contains(&code) {
                return Ok(None);
            }
            let tail = stderr.lock().map(|t| t.clone()).unwrap_or_default();
            Err(std::io::Error::other(super::ExecFailed {
                command,
                status: code,
                stderr: String::from_utf8_lossy(&tail).trim().to_string(),
            }))
        })
        .filter_map(|r: std::io::Result<Option<bytes::Bytes>>| async move { r.transpose() });
        Ok(out.chain(status).boxed())
    }

    async fn load_stream(&self, archive: ByteStream) -> Result<()> {
        let mut out = self.docker.import_image(
            ImportImageOptions {
                quiet: true,
                ..Default::default()
            },
            bollard::body_try_stream(archive),
            None,
        );
        while let Some(item) = out.next().await {
            item.map_err(|e| engine_err("loading an image archive", e))?;
        }
        Ok(())
    }

    async fn tag(&self, image_id: &str, repo: &str, tag: &str) -> Result<()> {
        self.docker
            .tag_image(
                &self.handle(image_id),
                Some(TagImageOptions {
                    repo: Some(repo.to_string()),
                    tag: Some(tag.to_string()),
                }),
            )
            .await
            .map_err(|e| engine_err(format!("tagging {image_id} as {repo}:{tag}"), e))
    }

    async fn export(&self, images: &[String]) -> Result<ByteStream> {
        let handles: Vec<String> = images.iter().map(|i| self.handle(i)).collect();
        let names: Vec<&str> = handles.iter().map(String::as_str).collect();
        let what = format!("exporting {}", names.join(", "));
        let mut stream = self.docker.export_images(&names).boxed();
        // The status arrives with the first item: fail here, not mid-stream.
        let first = match stream.next().await {
            None => return Ok(futures_util::stream::empty().boxed()),
            Some(Err(e)) => return Err(engine_err(what, e)),
            Some(Ok(bytes)) => bytes,
        };
        let rest =
            stream.map(move |c| c.map_err(|e| std::io::Error::other(format!("{what}: {e}"))));
        Ok(futures_util::stream::once(async move { Ok(first) })
            .chain(rest)
            .boxed())
    }

    async fn pull(
        &self,
        reference: &str,
        credential: Option<&Credential>,
        status: PushStatus<'_>,
    ) -> Result<()> {
        let image = crate::registry::ImageRef::parse(reference);
        let failed = |reason: String| Error::PullFailed {
            image: reference.to_string(),
            registry: image.repository.registry.clone(),
            credentials: String::new(),
            reason,
        };
        // An empty tag would pull every tag of the repository.
        let options = bollard::query_parameters::CreateImageOptions {
            from_image: Some(image.name()),
            tag: Some(image.tag_or_digest().to_string()),
            ..Default::default()
        };
        let mut stream =
            self.docker
                .create_image(Some(options), None, credentials(&image.name(), credential));
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(s) = info.status {
                        match info.id {
                            Some(id) => status(&format!("{id}: {s}")),
                            None => status(&s),
                        }
                    }
                }
                Err(BollardError::DockerStreamError { error })
                    if error
                        .to_ascii_lowercase()
                        .contains("http response to https client") =>
                {
                    return Err(Error::RegistryInsecure {
                        engine: String::new(),
                        registry: image.repository.registry.clone(),
                        podman: self.podman,
                    })
                }
                Err(BollardError::DockerStreamError { error }) => return Err(failed(error)),
                Err(BollardError::DockerResponseServerError { message, .. }) => {
                    return Err(failed(message))
                }
                Err(e) => return Err(engine_err(format!("pulling {reference}"), e)),
            }
        }
        Ok(())
    }

    async fn remove_image(&self, reference: &str) -> Result<()> {
        match self
            .docker
            .remove_image(
                &self.handle(reference),
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(BollardError::DockerResponseServerError {
                status_code: 409,
                message,
            }) => {
                // Say which containers hold it (by the listing, not the message).
                let filters =
                    HashMap::from([("ancestor".to_string(), vec![reference.to_string()])]);
                let containers = self
                    .docker
                    .list_containers(Some(ListContainersOptions {
                        all: true,
                        filters: Some(filters),
                        ..Default::default()
                    }))
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|c| c.names.and_then(|n| n.first().cloned()))
                    .map(|n| n.trim_start_matches('/').to_string())
                    .collect();
                Err(Error::ImageInUse {
                    image: reference.to_string(),
                    containers,
                    reason: message,
                })
            }
            Err(e) => Err(engine_err(format!("removing image {reference}"), e)),
        }
    }

    async fn remove_container(&self, container: &str) {
        let opts = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match self.docker.remove_container(container, Some(opts)).await {
            Ok(()) => self.forget(container),
            Err(e) if not_found(&e) => self.forget(container),
            Err(e) => tracing::warn!(
                "could not remove container {container}: {e}; remove it with `docker rm -f {container}`"
            ),
        }
    }

    async fn remove_leftovers(&self) -> usize {
        let ids: Vec<String> = self.live.lock().map(|l| l.clone()).unwrap_or_default();
        for id in &ids {
            self.remove_container(id).await;
        }
        let images: Vec<String> = self
            .partial
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default();
        for image in &images {
            if let Err(e) = self.remove_image(image).await {
                tracing::warn!("could not remove the partial layer image {image}: {e}");
            }
        }
        let left = self.live.lock().map(|l| l.len()).unwrap_or_default();
        ids.len().saturating_sub(left)
    }

    fn name(&self) -> crate::error::EngineName {
        super::endpoint::name(&self.endpoint, &self.product)
    }

    fn note_partial_image(&self, id: &str) {
        if let Ok(mut p) = self.partial.lock() {
            p.push(id.to_string());
        }
    }

    fn forget_partial_image(&self, id: &str) {
        if let Ok(mut p) = self.partial.lock() {
            p.retain(|i| i != id);
        }
    }
}
