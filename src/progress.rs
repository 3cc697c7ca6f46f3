//! Progress from the library to whoever runs it, as typed events. The library
//! only emits [`Event`]s; the binary decides the words (and that they go to
//! stderr). An event serializes as one JSON object, `{"event": "<name>",
//! <fields>}` (`crate::render` adds `"v"` for `--progress json`), so a new
//! variant is in the machine channel the moment it exists; only its English
//! words (`crate::render::words`) and its README line are written by hand.

use crate::plan::LayerName;

/// A layer as events name it: one of the installing layers, or the `boot`
/// layer of `--boot-from`. In JSON: its name, `"dependencies"`,
/// `"application"` or `"boot"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    Install(LayerName),
    Boot,
}

impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Layer::Install(name) => f.write_str(name.as_str()),
            Layer::Boot => f.write_str(crate::plan::BOOT_LAYER),
        }
    }
}

impl serde::Serialize for Layer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Something that happened during a build. The JSON name of a variant is its
/// name in snake_case (`LayerHit` -> `"layer_hit"`), its fields keep theirs:
/// renaming either breaks the machine channel's readers.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event<'a> {
    /// The layer's image is on the engine already (`tag`: its key's tag).
    LayerHit {
        layer: Layer,
        tag: &'a str,
    },
    /// The layer will be built from `artifacts` staged files.
    LayerBuilding {
        layer: LayerName,
        artifacts: usize,
    },
    /// The boot layer will be built from `boot_ref`'s /opt/apache/beam on `base`.
    BootBuilding {
        boot_ref: &'a str,
        base: &'a str,
    },
    /// A concurrent prebuilder holds the lock on the same layer key.
    WaitingForLock,
    /// The base (or base plus boot) is probed before anything is installed.
    CheckingBase {
        name: &'a str,
    },
    CreatingContainer {
        layer: LayerName,
        name: &'a str,
    },
    Uploading {
        layer: LayerName,
        files: usize,
        bytes: u64,
    },
    RunningSetup {
        layer: LayerName,
        /// What runs: the boot in setup-only mode, or the PyFlink setup.
        step: &'a str,
    },
    /// One line the setup program printed inside the container.
    SetupOutput {
        layer: LayerName,
        line: &'a str,
    },
    Recording {
        layer: LayerName,
        packages: usize,
    },
    WritingLayer {
        layer: LayerName,
    },
    LoadingLayer {
        layer: LayerName,
    },
    /// One of the split's heavy layers, made and loaded while the setup
    /// still runs (`crate::build::early`): `index` of the `of` predicted.
    EarlyLayer {
        layer: LayerName,
        part: &'a str,
        index: usize,
        of: usize,
    },
    /// The `count` layers made while the setup ran are not the split's
    /// first (`reason`): removed, and made again with the others.
    EarlyLayersDropped {
        layer: LayerName,
        count: usize,
        reason: &'a str,
    },
    /// The base lacks GNU find/tar for a snapshot: the container is committed.
    NoSnapshot {
        layer: LayerName,
    },
    Committing {
        layer: LayerName,
    },
    BootCopying {
        boot_ref: &'a str,
    },
    BootCopied {
        bytes: u64,
    },
    /// The result's content tag is in the registry: nothing to build or pull.
    RegistryHit {
        image: &'a str,
        registry: &'a str,
        digest: &'a str,
    },
    /// The registry could not be asked; without --push the build goes on locally.
    RegistrySkipped {
        reason: &'a str,
    },
    Pushing {
        reference: &'a str,
    },
    /// A push milestone from the engine (`Pushed`, `Layer already exists`, …).
    PushStatus {
        reference: &'a str,
        status: &'a str,
    },
    /// The registry holds this content tag already: not pushed again.
    AlreadyPushed {
        reference: &'a str,
        digest: &'a str,
    },
    /// `--replace-tags` moves a tag in the registry.
    MovingTag {
        reference: &'a str,
        from: &'a str,
        to: &'a str,
    },
    /// The base's image id, read from its registry without pulling it.
    BaseResolved {
        base: &'a str,
        id: &'a str,
        registry: &'a str,
    },
    /// The `--boot-from` image's id, read from its registry without pulling it.
    BootResolved {
        boot: &'a str,
        id: &'a str,
        registry: &'a str,
    },
    /// A registry hit found with the base absent: nothing at all was pulled.
    NothingPulled,
    Pulling {
        reference: &'a str,
    },
    /// A pull milestone from the engine (`<layer>: Pull complete`, …).
    PullStatus {
        reference: &'a str,
        status: &'a str,
    },
    Pulled {
        reference: &'a str,
    },
    /// A layer is in the registry: it is pulled instead of built.
    LayerFromRegistry {
        layer: LayerName,
        reference: &'a str,
    },
    /// A `--tag` on a registry hit: the result's manifest put under it.
    TaggedInRegistry {
        reference: &'a str,
        digest: &'a str,
    },
    /// `--tag` on a registry hit without `--push`: the registry is not written.
    TagsNotApplied {
        image: &'a str,
    },
    /// A document about the pushed result (`kind`: spdx, cyclonedx,
    /// provenance) is attached to `subject` as the referrer `referrer`;
    /// `existing`: it was attached before, nothing was written.
    Attestation {
        kind: &'a str,
        subject: &'a str,
        referrer: &'a str,
        existing: bool,
    },
    /// A document written to `--attestations-dir`.
    AttestationWritten {
        path: &'a str,
    },
    /// No documents could be made about the result (it has no record).
    AttestationsSkipped {
        reason: &'a str,
    },
}

pub trait Reporter: Send + Sync {
    fn event(&self, event: Event<'_>);
}

/// A reporter that drops every event.
pub struct Silent;

impl Reporter for Silent {
    fn event(&self, _: Event<'_>) {}
}
