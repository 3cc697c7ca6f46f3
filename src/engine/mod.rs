//! The container engine, behind a small trait: the only place that knows the
//! Docker Engine API. `docker` implements it with bollard (Docker or Podman,
//! local socket or `DOCKER_HOST`); `setup` holds the in-container setup script
//! and `upload` streams the artifacts into the setup container. `probe`, `boot`
//! and `record` serve custom bases, checks and records ([`ImageTools`]).

pub mod boot;
pub mod docker;
pub mod endpoint;
mod layer;
pub mod podman;
pub mod probe;
mod record;
pub mod setup;
pub mod upload;
pub mod verify;

use std::collections::BTreeMap;

use crate::error::Result;
use crate::plan::LayerPlan;
use crate::progress::Reporter;

pub use boot::{BootBuild, LABEL_BOOT_FROM};
pub use docker::DockerEngine;
pub use probe::{ImageTools, ProbeOutput};

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

/// An image on the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// `sha256:…`
    pub id: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub repo_tags: Vec<String>,
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
    /// Seconds since the epoch.
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

/// What one layer build needs.
pub struct LayerBuild<'a> {
    /// The image the setup container starts from (base or previous layer).
    pub from_image: &'a str,
    /// The base image: its config (entrypoint, cmd, env, …) is what the
    /// committed image keeps, not the setup container's.
    pub base: &'a ImageInfo,
    pub layer: &'a LayerPlan<'a>,
    /// Labels the committed image gets on top of the base's.
    pub labels: BTreeMap<String, String>,
    pub network: &'a Network,
}

#[allow(async_fn_in_trait)]
pub trait Engine {
    /// Inspect an image; `None` when the engine does not have it.
    async fn image(&self, reference: &str) -> Result<Option<ImageInfo>>;
    /// The image built for a layer key, if the engine has one.
    async fn find_layer(&self, key: &str) -> Result<Option<ImageInfo>>;
    /// Run the setup of one layer in a fresh container and commit it.
    /// Returns the committed image's id. The container is removed on every path.
    async fn build_layer(&self, build: LayerBuild<'_>, reporter: &dyn Reporter) -> Result<String>;
    /// Every image prebuilder built, with its tags.
    async fn layer_images(&self) -> Result<Vec<LayerImage>>;
    /// Remove a tag, or an untagged image by id. Never forced: an image a
    /// container still uses stays, and that is an error naming it.
    async fn remove_image(&self, reference: &str) -> Result<()>;
    /// Push `repo:tag` to its registry with the user's credentials.
    async fn push(
        &self,
        repo: &str,
        tag: &str,
        credential: Option<&crate::registry::Credential>,
        reporter: &dyn Reporter,
    ) -> Result<()>;
    /// Tag an image as `repo:tag`.
    async fn tag(&self, image_id: &str, repo: &str, tag: &str) -> Result<()>;
    /// Force-remove every container this engine handle created and has not
    /// removed yet (after Ctrl-C or a dropped future).
    async fn remove_leftovers(&self);
}
