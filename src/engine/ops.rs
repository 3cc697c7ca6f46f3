//! Compositions of the engine's primitives that several commands share,
//! written once for every adapter: find a layer by key, list prebuilder's
//! images, copy one small file in or out of a container, probe an image in a
//! short-lived container, read a file out of an image.
//!
//! Every container made here is labelled `prebuilder=<role>`, named
//! `prebuilder-<role>-<n>-<pid>` and removed on every path (and by
//! [`Engine::remove_leftovers`] when the future is dropped).

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;

use super::{
    ContainerSpec, ContainerSummary, Engine, ImageInfo, LayerImage, Network, LABEL_KEY,
    LABEL_PARENT,
};
use crate::error::{Error, Result};
use crate::plan::BOOT;
use crate::state;

/// A probe that has not finished by then is stuck (it reads metadata only).
const PROBE_TIMEOUT: Duration = Duration::from_secs(120);
/// Output kept per stream; the probe prints one short line.
const MAX_OUTPUT: usize = 1 << 20;
/// A record, or a freeze, is a few kB; anything past this is not one.
const MAX_FILE: usize = 16 << 20;

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

static SERIAL: AtomicU64 = AtomicU64::new(0);

/// `prebuilder-<role>-<n>-<pid>`: unique in this process, and ending in the
/// pid, so a process's leftovers can be told apart.
pub fn container_name(role: &str) -> String {
    format!(
        "prebuilder-{role}-{}-{}",
        SERIAL.fetch_add(1, Ordering::Relaxed),
        std::process::id()
    )
}

/// A container that only serves as a filesystem (never started), no network.
pub fn inert(image: &str, role: &str) -> ContainerSpec {
    ContainerSpec {
        name: container_name(role),
        image: image.to_string(),
        entrypoint: vec![BOOT.to_string()],
        role: role.to_string(),
        network: Network::None,
        volume: None,
        platform: None,
    }
}

/// The image built for a layer key, if the engine has one.
pub async fn find_layer<E: Engine>(engine: &E, key: &str) -> Result<Option<ImageInfo>> {
    let found = engine.list_images(&format!("{LABEL_KEY}={key}")).await?;
    match found.into_iter().next() {
        Some(summary) => engine.inspect(&summary.id).await,
        None => Ok(None),
    }
}

/// Every image prebuilder built, with its tags. Dated by when the engine
/// last tagged each (an inspect per image): configs carry the base's date
/// (reproducible layers), which orders nothing.
pub async fn layer_images<E: Engine>(engine: &E) -> Result<Vec<LayerImage>> {
    let mut images = Vec::new();
    for i in engine.list_images(LABEL_KEY).await? {
        let tagged = engine
            .inspect(&i.id)
            .await?
            .and_then(|info| info.last_tagged)
            .and_then(|t| crate::image::reproducible::parse_rfc3339(&t));
        images.push(LayerImage {
            key: i.labels.get(LABEL_KEY).cloned().unwrap_or_default(),
            parent: i.labels.get(LABEL_PARENT).cloned().unwrap_or_default(),
            created: tagged.map_or(i.created, |t| t.max(i.created)),
            id: i.id,
            tags: i.tags,
        });
    }
    Ok(images)
}

/// Containers prebuilder made on this host whose process is gone (SIGKILL,
/// a crash, a lost machine session): nothing will ever remove them but a
/// later run. Containers of live processes and of other hosts are kept.
pub async fn orphan_containers<E: Engine>(engine: &E) -> Result<Vec<ContainerSummary>> {
    let host = state::host();
    Ok(engine
        .list_containers(state::LABEL_PID)
        .await?
        .into_iter()
        .filter(|c| state::orphaned(&c.labels, &host, state::alive))
        .collect())
}

/// Remove the [`orphan_containers`]; their names. A listing failure is
/// logged, not fatal: sweeping is housekeeping, never needed for a result.
pub async fn sweep_orphans<E: Engine>(engine: &E) -> Vec<String> {
    let orphans = match orphan_containers(engine).await {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!("cannot list containers left by earlier runs: {e}");
            return Vec::new();
        }
    };
    for c in &orphans {
        engine.remove_container(&c.id).await;
    }
    // `remove_container` logs its own failures; report only what is gone.
    let left: Vec<String> = orphan_containers(engine)
        .await
        .map(|l| l.into_iter().map(|c| c.id).collect())
        .unwrap_or_default();
    orphans
        .into_iter()
        .filter(|c| !left.contains(&c.id))
        .map(|c| {
            tracing::info!(
                "removed container {} left by a process that is gone",
                c.name
            );
            c.name
        })
        .collect()
}

/// An image that must be there; `what` names it in the error.
pub async fn require<E: Engine>(engine: &E, image: &str, what: &'static str) -> Result<ImageInfo> {
    engine
        .inspect(image)
        .await?
        .ok_or_else(|| Error::ImageMissing {
            engine: String::new(),
            what,
            image: image.to_string(),
        })
}

/// The engine's tar of `path`, whole; `None` when the path does not exist.
pub async fn download_tar<E: Engine>(
    engine: &E,
    container: &str,
    path: &str,
    limit: usize,
) -> Result<Option<Vec<u8>>> {
    let Some(mut stream) = engine.download(container, path).await? else {
        return Ok(None);
    };
    let mut tar = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::Engine {
            engine: String::new(),
            action: format!("reading {path} from container {container}"),
            source: Box::new(e),
        })?;
        tar.extend_from_slice(&chunk);
        if tar.len() > limit {
            return Err(Error::Engine {
                engine: String::new(),
                action: format!("reading {path} from container {container}"),
                source: format!("more than {limit} bytes").into(),
            });
        }
    }
    Ok(Some(tar))
}

/// The content of one regular file in a container (running or not), `None`
/// when the path does not exist.
pub async fn download_file<E: Engine>(
    engine: &E,
    container: &str,
    path: &str,
) -> Result<Option<Vec<u8>>> {
    download_file_up_to(engine, container, path, MAX_FILE).await
}

/// [`download_file`] of a file that may take up to `limit` bytes.
pub async fn download_file_up_to<E: Engine>(
    engine: &E,
    container: &str,
    path: &str,
    limit: usize,
) -> Result<Option<Vec<u8>>> {
    let Some(tar) = download_tar(engine, container, path, limit).await? else {
        return Ok(None);
    };
    first_file(&tar).map_err(|e| Error::Engine {
        engine: String::new(),
        action: format!("reading {path} from container {container}"),
        source: Box::new(e),
    })
}

/// The first regular file of a tar.
fn first_file(tar: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type().is_file() {
            let mut content = Vec::new();
            entry.read_to_end(&mut content)?;
            return Ok(Some(content));
        }
    }
    Ok(None)
}

/// Write one file (mode 0644, root) into `dir` of a container, running or not.
pub async fn upload_file<E: Engine>(
    engine: &E,
    container: &str,
    dir: &str,
    name: &str,
    content: &[u8],
) -> Result<()> {
    let tar = crate::image::single_file_tar(name, content).map_err(|e| Error::Local {
        action: format!("writing the tar of {dir}/{name}"),
        source: e,
    })?;
    let body = futures_util::stream::once(async move { Ok(bytes::Bytes::from(tar)) }).boxed();
    engine.upload(container, dir, body).await
}

/// Run `command` (entrypoint and arguments) in a short-lived container of
/// `image` with no network and collect its output. The command must start
/// with `/bin/sh`; an image without it is reported, not run.
pub async fn probe<E: Engine>(
    engine: &E,
    image: &str,
    command: Vec<String>,
) -> Result<ProbeOutput> {
    let info = require(engine, image, "image").await?;
    let mut out = ProbeOutput {
        id: info.id.clone(),
        os: info.os.clone(),
        architecture: info.architecture.clone(),
        shell: true,
        status: 0,
        stdout: String::new(),
        stderr: String::new(),
    };
    let mut spec = inert(&info.id, "probe");
    spec.entrypoint = command;
    let container = engine.create(&spec).await?;
    let result = async {
        if !engine.exists(&container, "/bin/sh").await? {
            out.shell = false;
            return Ok(out);
        }
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let mut collect = |is_stderr: bool, chunk: &[u8]| {
            let buf = if is_stderr { &mut stderr } else { &mut stdout };
            if buf.len() < MAX_OUTPUT {
                buf.extend_from_slice(chunk);
            }
        };
        let ran =
            tokio::time::timeout(PROBE_TIMEOUT, engine.run_attached(&container, &mut collect))
                .await
                .map_err(|_| Error::ProbeFailed {
                    image: image.to_string(),
                    reason: format!("no answer within {} s", PROBE_TIMEOUT.as_secs()),
                })??;
        out.status = ran;
        out.stdout = String::from_utf8_lossy(&stdout).into_owned();
        out.stderr = String::from_utf8_lossy(&stderr).into_owned();
        Ok(out)
    }
    .await;
    engine.remove_container(&container).await;
    result
}

/// A regular file's content from an image; `None` when the image lacks it.
pub async fn read_file<E: Engine>(engine: &E, image: &str, path: &str) -> Result<Option<Vec<u8>>> {
    let info = require(engine, image, "image").await?;
    let container = engine.create(&inert(&info.id, "read")).await?;
    let result = download_file(engine, &container, path).await;
    engine.remove_container(&container).await;
    result
}
