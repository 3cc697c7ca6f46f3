//! The container engine as a small trait of primitives: inspect, list by
//! label, create, upload, run attached, download, commit, load, tag, export,
//! pull, remove. `docker` implements it with bollard (Docker or Podman's compatible
//! API, whose differences `podman` meets) on the endpoint `endpoint` chooses
//! as the docker CLI does (`DOCKER_HOST` unix/tcp/TLS/ssh, docker contexts),
//! and is the only code that knows the Engine API; `fake` (tests only) keeps
//! images and containers in memory and records every call. What a build
//! *does* with these primitives (snapshot or commit, records, boot layers,
//! the check of every built layer) lives in `crate::build`, written once for
//! every adapter; `ops` holds the few compositions other commands share
//! (probe, read a file, find a layer).

pub mod containerd;
pub mod docker;
pub mod endpoint;
#[cfg(test)]
pub mod fake;
pub mod ops;
pub mod podman;
pub mod store;

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;

use crate::error::{Error, Result};
use crate::registry::Credential;

pub use docker::DockerEngine;
pub use ops::ProbeOutput;

/// Label on every container prebuilder creates, so leftovers can be found
/// (`docker ps -a --filter label=prebuilder`). Committed images override its
/// value with `image`: a commit copies the container's labels into the image.
pub const LABEL: &str = "prebuilder";
pub const LABEL_KEY: &str = "prebuilder.key";
pub const LABEL_LAYER: &str = "prebuilder.layer";
pub const LABEL_PARENT: &str = "prebuilder.parent";
pub const LABEL_BASE: &str = "prebuilder.base";
pub const LABEL_VERSION: &str = "prebuilder.version";
pub const LABEL_ARTIFACTS: &str = "prebuilder.artifacts";
/// The parts a dependency layer image was split into (`crate::image::split::label`).
pub const LABEL_SPLIT: &str = "prebuilder.split";
/// `true` on a layer image the engine committed (not loaded from a snapshot).
pub const LABEL_COMMITTED: &str = "prebuilder.committed";
/// Label of a `boot` layer (and of every image built on one): the id of the
/// image its /opt/apache/beam came from.
pub const LABEL_BOOT_FROM: &str = "prebuilder.boot-from";

/// A tar stream in or out of a container.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// An image on the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInfo {
    /// `sha256:…`
    pub id: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub repo_tags: Vec<String>,
    /// `repo@sha256:…` references of registries the image came from.
    pub repo_digests: Vec<String>,
    /// When the image was created (RFC 3339), as its config says.
    pub created: Option<String>,
    /// The image's history as the engine reports it (newest first); the
    /// config of a layer built on it keeps these entries.
    pub history: Vec<crate::history::EngineEntry>,
    pub os: String,
    pub architecture: String,
    /// The diff ids of its layers, bottom first.
    pub layers: Vec<String>,
    /// When this engine last tagged it (RFC 3339; Docker's `LastTagTime`).
    pub last_tagged: Option<String>,
    /// The image's container config in the Engine API's JSON form
    /// (`Entrypoint`, `Env`, `Labels`, …), what a commit or load starts from.
    pub config: serde_json::Value,
}

/// One entry of an image listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    /// `repo:tag` references (none for an untagged image).
    pub tags: Vec<String>,
    /// Seconds since the epoch.
    pub created: i64,
}

/// One entry of a container listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSummary {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// An image prebuilder built (it carries `prebuilder.key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerImage {
    pub id: String,
    pub key: String,
    /// The key of the layer below, or the base image id.
    pub parent: String,
    /// `repo:tag` references.
    pub tags: Vec<String>,
    /// Seconds since the epoch: when the engine last tagged the image (a
    /// build, a cache hit, a pull), else its config's `created`, which for a
    /// reproducible layer is the base's date and orders nothing.
    pub created: i64,
}

/// The setup container's network (`--network`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// Whatever the engine gives a container by default.
    Default,
    None,
    Host,
    Named(String),
}

impl Network {
    pub fn parse(s: &str) -> Network {
        match s {
            "default" | "" => Network::Default,
            "none" => Network::None,
            "host" => Network::Host,
            other => Network::Named(other.to_string()),
        }
    }

    /// The engine's `NetworkMode`, `None` for the engine default.
    pub fn mode(&self) -> Option<String> {
        match self {
            Network::Default => None,
            Network::None => Some("none".into()),
            Network::Host => Some("host".into()),
            Network::Named(n) => Some(n.clone()),
        }
    }
}

/// A container to create (never started by `create`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    /// The whole command; the image's Cmd is not appended.
    pub entrypoint: Vec<String>,
    /// The value of the [`LABEL`] label: the container's role.
    pub role: String,
    pub network: Network,
    /// A directory to mount an anonymous volume on (removed with the
    /// container). Files written there bypass the container's storage
    /// driver: 20,000 small files upload in 2 s instead of 30 s on
    /// fuse-overlayfs, and never need deleting from a layer.
    pub volume: Option<String>,
    /// The platform to create it for (`linux/arm64`; `--platform`): the
    /// engine's own when `None`.
    pub platform: Option<String>,
}

/// One line of a push's progress, as the engine reports it.
pub type PushStatus<'a> = &'a mut (dyn FnMut(&str) + Send);

/// A command run by [`Engine::exec_output`] that exited with a status it
/// was not to: what it was, the status and the end of its standard error.
/// The error its output stream ends with (inside an `io::Error`).
#[derive(Debug, thiserror::Error)]
#[error("`{command}` exited with status {status}: {stderr}")]
pub struct ExecFailed {
    pub command: String,
    pub status: i64,
    pub stderr: String,
}

/// The primitives prebuilder needs from a container engine. Every method is
/// one Engine API call (or one streamed exchange); none holds build logic.
#[allow(async_fn_in_trait)]
pub trait Engine {
    /// Inspect an image; `None` when the engine does not have it.
    async fn inspect(&self, reference: &str) -> Result<Option<ImageInfo>>;
    /// Images carrying `label` (`key` or `key=value`).
    async fn list_images(&self, label: &str) -> Result<Vec<ImageSummary>>;
    /// Containers (running or not) carrying `label` (`key` or `key=value`).
    async fn list_containers(&self, label: &str) -> Result<Vec<ContainerSummary>>;
    /// Create a container (tracked until removed, see [`Engine::remove_leftovers`]).
    async fn create(&self, spec: &ContainerSpec) -> Result<String>;
    /// Whether `path` exists in a (created, not necessarily started) container.
    async fn exists(&self, container: &str, path: &str) -> Result<bool>;
    /// Extract a tar stream into `dir` of a container.
    async fn upload(&self, container: &str, dir: &str, tar: ByteStream) -> Result<()>;
    /// The engine's tar of `path` in a container; `None` when it does not exist.
    async fn download(&self, container: &str, path: &str) -> Result<Option<ByteStream>>;
    /// Start a created container attached (attached before the start, so no
    /// output is lost), hand every chunk of output to `on_output` (`true` for
    /// stderr) and return its exit status.
    async fn run_attached(
        &self,
        container: &str,
        on_output: &mut (dyn FnMut(bool, &[u8]) + Send),
    ) -> Result<i64>;
    /// Commit a container with the given config (Engine API JSON); the image id.
    async fn commit(
        &self,
        container: &str,
        config: &serde_json::Value,
        comment: &str,
    ) -> Result<String>;
    /// Load a `docker save` style archive.
    async fn load(&self, archive: &Path) -> Result<()>;
    /// Whether the setup's snapshot may go on its volume behind a symbolic
    /// link (`crate::build::setup`): the engine's archive API then reads it
    /// through the link from the stopped container. Seen to work on
    /// Docker's classic store; Podman 4.3 answered as if nothing were there
    /// (so the layer was committed), and the containerd store is untested.
    fn reads_volume_links(&self) -> bool {
        false
    }
    /// Whether [`Engine::load_stream`] works here: the engine takes the
    /// archive as it is written, with no copy of it on disk (the classic
    /// Docker store; Podman and the containerd store need the archive as a
    /// file to convert it, see `podman`, `containerd`).
    fn loads_streams(&self) -> bool {
        false
    }
    /// Whether a split layer's snapshot is taken in parts, each streamed
    /// from a `tar` run in the setup container ([`Engine::exec_output`]),
    /// cut and loaded while the next is read (`build::layer`'s `in_parts`):
    /// where loads stream and the setup's volume is read through its link
    /// (Docker's classic store).
    fn snapshots_in_parts(&self) -> bool {
        false
    }
    /// Run `cmd` in a running container and stream its standard output
    /// (where [`Engine::snapshots_in_parts`]: the setup's snapshot parts,
    /// `tar` to a pipe, no copy on disk). The stream ends in an error naming
    /// the exit status and the end of the standard error unless the status
    /// is one of `ok`.
    async fn exec_output(&self, container: &str, cmd: &[String], ok: &[i64]) -> Result<ByteStream> {
        let _ = (container, ok);
        Err(Error::Engine {
            engine: String::new(),
            action: format!("running {} in a container", cmd.join(" ")),
            source: "prebuilder runs nothing in a running container on this engine".into(),
        })
    }
    /// Load a `docker save` style archive from a stream (only when
    /// [`Engine::loads_streams`]).
    async fn load_stream(&self, archive: ByteStream) -> Result<()> {
        drop(archive);
        Err(Error::Engine {
            engine: String::new(),
            action: "loading an image archive from a stream".into(),
            source: "this engine loads archives from files only".into(),
        })
    }
    /// Tag an image as `repo:tag`.
    async fn tag(&self, image_id: &str, repo: &str, tag: &str) -> Result<()>;
    /// `docker save` of `images` (ids): one archive with each image's
    /// config and layers (shared layers once) and a `manifest.json`.
    async fn export(&self, images: &[String]) -> Result<ByteStream>;
    /// Pull `reference` (`[host/]path[:tag][@digest]`) with `credential` for
    /// its registry; `status` gets the engine's progress lines (`id: status`).
    async fn pull(
        &self,
        reference: &str,
        credential: Option<&Credential>,
        status: PushStatus<'_>,
    ) -> Result<()>;
    /// Remove a tag, or an untagged image by id. Never forced: an image a
    /// container still uses stays, and that is an error naming it.
    async fn remove_image(&self, reference: &str) -> Result<()>;
    /// Force-remove a container (gone already is fine); failures are logged.
    async fn remove_container(&self, container: &str);
    /// Force-remove every container this handle created and has not removed
    /// yet (after Ctrl-C or a dropped future), and every image noted with
    /// [`Engine::note_partial_image`] and not forgotten; how many
    /// containers it removed.
    async fn remove_leftovers(&self) -> usize;
    /// An image a build made on its way and removes itself (a split's
    /// layer image below the last, `crate::build::layer`): removed by
    /// [`Engine::remove_leftovers`] if the build is dropped first.
    fn note_partial_image(&self, _id: &str) {}
    /// The build removed it (or no longer needs it removed).
    fn forget_partial_image(&self, _id: &str) {}
    /// How messages name this engine (see [`crate::error::Error::named`]).
    fn name(&self) -> crate::error::EngineName;
    /// The images of a build with no engine ([`store::Store`]): `None` for
    /// every real engine. Where the build differs without one (a
    /// registry's layer fetched, the base to produce on, publishing) it asks.
    fn store(&self) -> Option<&store::Store> {
        None
    }
}
