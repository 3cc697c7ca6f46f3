//! Staged artifacts: what a pipeline launch hands to the boot program.
//!
//! Two ways in, one result: a Beam staging context read from disk
//! ([`StagedSet::from_context`]) or Beam-style flags staged by the tool itself
//! ([`StagedSet::from_inputs`]). Either way the result is a [`StagedSet`]: each
//! artifact with its staged name, where its bytes are on the host, its sha256
//! and its *content* digest (the cache-key input), and the role the boot gives it.
//! Nothing is copied: the upload tar is streamed from the original paths.

pub mod context;
pub mod digest;
pub mod flink;
pub mod inputs;
pub mod manifest;
pub mod pack;

use std::path::{Path, PathBuf};

use crate::error::Result;

/// Staged names the boot program recognises (SPEC "Staged names").
pub const REQUIREMENTS_FILE: &str = "requirements.txt";
pub const EXTRA_PACKAGES_FILE: &str = "extra_packages.txt";
pub const WORKFLOW_TARBALL: &str = "workflow.tar.gz";
pub const SDK_SOURCE_TARBALL: &str = "dataflow_python_sdk.tar";
pub const SUBMISSION_ENV_FILE: &str = "submission_environment_dependencies.txt";
pub const PICKLED_MAIN_SESSION: &str = "pickled_main_session";
pub const MANIFEST_FILE: &str = "artifacts_info.json";

/// What the boot does with an artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// `dataflow_python_sdk.tar` or an `apache_beam-*.whl`.
    Sdk,
    /// `requirements.txt`.
    Requirements,
    /// A wheel or sdist the requirements install may find (`--find-links`).
    RequirementsCache,
    /// `extra_packages.txt`.
    ExtraPackagesList,
    /// A package named in `extra_packages.txt`.
    ExtraPackage,
    /// `workflow.tar.gz`, the pipeline's own source package.
    Workflow,
    /// A file staged for the workers that the boot does not install.
    FileToStage,
    /// `submission_environment_dependencies.txt` / `pickled_main_session`:
    /// the boot's setup-only mode ignores them, so they are neither uploaded nor keyed.
    Ignored,
    /// PyFlink: an archive extracted under its name (`--py-archives`).
    PyArchive,
    /// PyFlink: a python file or a file of a python directory (`--py-files`).
    PyFile,
}

/// How a staged set is installed: Beam's boot in setup-only mode, or
/// PyFlink's own setup (`crate::build::flink`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SetupMode {
    #[default]
    Beam,
    Flink(flink::FlinkSetup),
}

impl SetupMode {
    pub fn flink(&self) -> Option<&flink::FlinkSetup> {
        match self {
            SetupMode::Flink(f) => Some(f),
            SetupMode::Beam => None,
        }
    }
}

/// One staged artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// Staged name: a relative path with `/` separators, no `..`, usually a bare file name.
    pub name: String,
    /// Where the bytes are on the host.
    pub path: PathBuf,
    pub size: u64,
    /// Lowercase hex sha256 of the bytes (what a manifest carries).
    pub sha256: String,
    /// Lowercase hex digest of the content: equal to `sha256` except for source
    /// archives (`.tar.gz`, `.tgz`, `.tar`, `.zip`), digested over their sorted entries.
    pub content_digest: String,
    pub role: Role,
    /// The file `path` is a copy of, when the digests are the original's
    /// (the Beam plugin's copies, see [`context::read_with`]): a digest that
    /// only decided a cache lookup, so the copy's bytes are checked against
    /// `sha256` while they are uploaded (`crate::build::upload`).
    pub origin: Option<PathBuf>,
}

#[cfg(test)]
impl Artifact {
    /// An artifact named `name` of `role` (one byte, zero digests), for
    /// tests that look at names and roles only.
    pub(crate) fn named(name: &str, role: Role) -> Artifact {
        Artifact {
            name: name.into(),
            path: name.into(),
            size: 1,
            sha256: "0".repeat(64),
            content_digest: "0".repeat(64),
            role,
            origin: None,
        }
    }
}

/// The artifacts of one launch, in manifest order.
#[derive(Debug)]
pub struct StagedSet {
    pub artifacts: Vec<Artifact>,
    /// Where the set was read from: the context directory, or the temporary
    /// directory that holds the files the tool generated.
    pub dir: PathBuf,
    /// How the set is installed: Beam's boot, or PyFlink's setup.
    pub mode: SetupMode,
    /// Owns generated files (requirements copy, extra_packages.txt, workflow.tar.gz).
    _generated: Option<tempfile::TempDir>,
}

/// Beam-style inputs, as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub requirements_file: Option<PathBuf>,
    pub requirements_cache: Option<PathBuf>,
    pub extra_packages: Vec<PathBuf>,
    /// A `setup.py`/`pyproject.toml` or the project directory holding one.
    pub setup_file: Option<PathBuf>,
    pub sdk_location: Option<PathBuf>,
    pub files_to_stage: Vec<PathBuf>,
}

impl Inputs {
    pub fn is_empty(&self) -> bool {
        self.requirements_file.is_none()
            && self.requirements_cache.is_none()
            && self.extra_packages.is_empty()
            && self.setup_file.is_none()
            && self.sdk_location.is_none()
            && self.files_to_stage.is_empty()
    }
}

impl StagedSet {
    pub(crate) fn new(
        artifacts: Vec<Artifact>,
        dir: PathBuf,
        generated: Option<tempfile::TempDir>,
    ) -> Self {
        StagedSet {
            artifacts,
            dir,
            mode: SetupMode::Beam,
            _generated: generated,
        }
    }

    /// A copy of the set without the artifacts `drop` picks (the generated
    /// files stay owned by `self`, which must outlive the copy).
    pub fn without(&self, drop: impl Fn(&Artifact) -> bool) -> StagedSet {
        StagedSet {
            artifacts: self
                .artifacts
                .iter()
                .filter(|a| !drop(a))
                .cloned()
                .collect(),
            dir: self.dir.clone(),
            mode: self.mode.clone(),
            _generated: None,
        }
    }

    /// The same set, installed by `mode`.
    pub fn with_mode(mut self, mode: SetupMode) -> Self {
        self.mode = mode;
        self
    }

    /// Read and validate a Beam staging context (see [`context`]).
    pub fn from_context(dir: &Path) -> Result<StagedSet> {
        context::read(dir)
    }

    /// [`StagedSet::from_context`], with remembered digests and the
    /// originals the staged files were copied from (see [`context::read_with`]).
    pub fn from_context_with(
        dir: &Path,
        cache: &digest::DigestCache,
        origins: &std::collections::HashMap<String, PathBuf>,
    ) -> Result<StagedSet> {
        context::read_with(dir, cache, origins)
    }

    /// Stage Beam-style inputs into Beam's layout (see [`inputs`]).
    pub fn from_inputs(inputs: &Inputs) -> Result<StagedSet> {
        inputs::stage(inputs)
    }

    /// [`StagedSet::from_inputs`], generating files under `temp`.
    pub fn from_inputs_in(inputs: &Inputs, temp: &std::path::Path) -> Result<StagedSet> {
        inputs::stage_in(inputs, temp)
    }

    /// [`StagedSet::from_inputs_in`], with remembered digests.
    pub fn from_inputs_with(
        inputs: &Inputs,
        temp: &std::path::Path,
        cache: &digest::DigestCache,
    ) -> Result<StagedSet> {
        inputs::stage_with(inputs, temp, cache)
    }

    /// The artifacts with a given role, in manifest order.
    pub fn with_role(&self, role: Role) -> impl Iterator<Item = &Artifact> {
        self.artifacts.iter().filter(move |a| a.role == role)
    }
}
