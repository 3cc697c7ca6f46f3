//! The setup mode: Beam's boot in setup-only mode, or PyFlink's own setup.
//! Everything that differs between the two is asked of this type, so the
//! build orchestration, the key and the engine each have one hook: the key's
//! command, where the artifacts go, the setup step, the committed image's
//! environment and entrypoint, and how a failure is named.

use crate::flink::FlinkSetup;
use crate::plan::{self, LayerName, ARTIFACTS_DIR, BEAM_DIR, BOOT};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SetupMode {
    /// The base image's Beam boot, `--setup_only`.
    #[default]
    Beam,
    /// `src/flink/setup.sh`: archives, requirements, python files.
    Flink(FlinkSetup),
}

impl SetupMode {
    pub fn flink(&self) -> Option<&FlinkSetup> {
        match self {
            SetupMode::Flink(f) => Some(f),
            SetupMode::Beam => None,
        }
    }

    /// The setup command as it enters every layer key.
    pub fn key_command(&self) -> Vec<String> {
        match self {
            SetupMode::Beam => plan::setup_command(),
            SetupMode::Flink(f) => f.key_command(),
        }
    }

    /// The directory the upload's `artifacts/` goes into (it must exist).
    pub fn upload_dir(&self) -> &'static str {
        match self {
            SetupMode::Beam => BEAM_DIR,
            SetupMode::Flink(_) => crate::flink::UPLOAD_DIR,
        }
    }

    /// Where the staged files are in the setup container.
    pub fn artifacts_dir(&self) -> &'static str {
        match self {
            SetupMode::Beam => ARTIFACTS_DIR,
            SetupMode::Flink(_) => crate::flink::ARTIFACTS_DIR,
        }
    }

    /// Paths the setup container must have before anything is uploaded.
    pub fn required_paths(&self) -> &'static [&'static str] {
        match self {
            SetupMode::Beam => &[BOOT, "/bin/sh"],
            SetupMode::Flink(_) => &["/bin/sh"],
        }
    }

    /// The step the setup script runs, as a `run_setup` shell function, and
    /// how messages name it.
    pub fn setup_step(&self) -> (String, String) {
        match self {
            SetupMode::Beam => (
                "run_setup() { \"$PREBUILDER_BOOT\" --setup_only --artifacts \"$PREBUILDER_MANIFEST\"; }"
                    .to_string(),
                format!("{BOOT} --setup_only"),
            ),
            SetupMode::Flink(f) => (f.setup_function(), "the PyFlink setup".to_string()),
        }
    }

    /// Variables the committed image of `layer` gets on top of the base's.
    pub fn env(&self, layer: LayerName, base_env: &[String]) -> Vec<(String, String)> {
        match self {
            SetupMode::Beam => Vec::new(),
            SetupMode::Flink(f) => f.env(layer, base_env),
        }
    }

    /// The entrypoint a committed image gets when its base has neither
    /// entrypoint nor cmd (else the setup script would stay as entrypoint).
    pub fn default_entrypoint(&self) -> Vec<String> {
        match self {
            SetupMode::Beam => vec![BOOT.to_string()],
            SetupMode::Flink(_) => vec!["/bin/sh".to_string()],
        }
    }

    pub fn failing_step(&self, tail: &[String]) -> String {
        match self {
            SetupMode::Beam => crate::engine::setup::failing_step(tail),
            SetupMode::Flink(f) => f.failing_step(tail),
        }
    }
}
