//! Compatibility checks: can Beam's boot set up and run workers in an image, and
//! does the image match the Python that launches the pipeline?
//!
//! Two probes feed the rules. The image probe runs `probe.sh` (then `probe.py`) in a
//! short-lived container with no network (see `engine::ops::probe`); the launch probe runs `probe.py` with the launch
//! Python on this host. Both print one JSON line, parsed into [`Probe`]. The rules
//! are pure functions from probes to [`Finding`]s, each saying what is wrong and
//! what to change, so `prebuilder check` and `build`'s pre-flight share them and
//! every rule is unit-tested without an engine.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::plan::BOOT;

mod render;

/// The shell half of the image probe; `$1` is [`PROBE_PY`].
pub const PROBE_SH: &str = include_str!("probe.sh");
/// The Python half, also run on the launch host.
pub const PROBE_PY: &str = include_str!("probe.py");
/// Prefix of the probe's one JSON line on stdout.
pub const MARKER: &str = "prebuilder-probe: ";
/// The boot creates a venv for the SDK process unless this is set (Beam ≥ 2.48).
pub const DEFAULT_ENV_VAR: &str = "RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT";

/// The entrypoint (and arguments) of the probe container.
pub fn image_command() -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        PROBE_SH.into(),
        "prebuilder-probe".into(),
        PROBE_PY.into(),
    ]
}

/// What the probe saw of one Python environment. Every field is optional: an
/// image without Python only reports its boot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Probe {
    /// The interpreter the probe ran in.
    pub executable: Option<String>,
    /// Its version, `3.11.2`.
    pub version: Option<String>,
    pub apache_beam: Option<String>,
    pub pip: Option<String>,
    /// `venv` and `ensurepip` are both importable (`python -m venv` can make an environment with pip).
    pub venv: Option<bool>,
    pub protobuf: Option<String>,
    pub dill: Option<String>,
    /// The `cloudpickle` distribution, if installed.
    pub cloudpickle: Option<String>,
    /// The cloudpickle vendored inside apache-beam (`apache_beam/internal/cloudpickle`), if any.
    pub cloudpickle_vendored: Option<String>,
    /// apache-beam's default pickle library (`DEFAULT_PICKLE_LIB`).
    pub pickle_library: Option<String>,
    pub machine: Option<String>,
    // Image side only.
    /// `executable`, `not-executable` or `missing`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot: Option<String>,
    /// Where `python` resolves on PATH.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub python: Option<String>,
    /// Where `python3` resolves on PATH.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub python3: Option<String>,
    /// `PRETTY_NAME` of `/etc/os-release`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
}

impl Probe {
    /// The last marker line of a probe's stdout, or `None` when there is none
    /// (or it is not JSON).
    pub fn parse(stdout: &str) -> Option<Probe> {
        stdout
            .lines()
            .rev()
            .find_map(|l| l.trim_end().strip_prefix(MARKER))
            .and_then(|json| serde_json::from_str(json).ok())
    }

    /// `3.11` of `3.11.2`.
    pub fn minor(&self) -> Option<String> {
        let v = self.version.as_deref()?;
        let mut parts = v.split('.');
        Some(format!("{}.{}", parts.next()?, parts.next()?))
    }

    fn major(&self) -> Option<u32> {
        self.version.as_deref()?.split('.').next()?.parse().ok()
    }

    /// The cloudpickle Beam pickles with: its vendored copy when it has one.
    pub fn cloudpickle_in_use(&self) -> Option<String> {
        self.cloudpickle_vendored
            .as_ref()
            .map(|v| format!("{v} (vendored in apache-beam)"))
            .or_else(|| self.cloudpickle.clone())
    }
}

/// An image as the checks see it: its engine config plus what the probe found inside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageFacts {
    /// As the user named it.
    pub image: String,
    pub id: String,
    /// `linux`, `amd64`, from the image config.
    pub os: String,
    pub architecture: String,
    /// Whether the image has `/bin/sh` (the probe and the setup need it).
    pub shell: bool,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT` in the image's environment.
    pub default_environment: Option<String>,
    pub probe: Probe,
}

/// The Python that launches the pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LaunchFacts {
    pub python: PathBuf,
    pub probe: Probe,
}

/// One problem, what it is and what to change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable id of the rule: `python`, `beam-version`, …
    pub check: String,
    pub message: String,
    pub fix: String,
}

impl Finding {
    fn new(check: &str, message: String, fix: String) -> Finding {
        Finding {
            check: check.to_string(),
            message,
            fix,
        }
    }
}

/// What the image-side rules may take for granted.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImageRules {
    /// The boot and the entrypoint come from `--boot-from`: do not look for them.
    pub boot_added: bool,
    /// The build stages an SDK, so apache-beam need not be installed yet.
    pub sdk_staged: bool,
}

/// `apache/beam_python3.11_sdk:2.77.0`, the Beam image that matches a probe, for fixes.
pub fn sdk_image(minor: Option<&str>, beam: Option<&str>) -> String {
    format!(
        "apache/beam_python{}_sdk:{}",
        minor.unwrap_or("<MAJOR>.<MINOR>"),
        beam.unwrap_or("<beam version>")
    )
}

/// What the boot needs from the image itself: a shell, `python` (Python 3) on PATH
/// with apache-beam and pip, the venv module unless the SDK runs in the default
/// environment, and the boot as the entrypoint.
// Over 80 lines on purpose: a flat list of independent rules, each a few
// lines, read top to bottom; splitting it would scatter one checklist.
pub fn image_findings(img: &ImageFacts, rules: ImageRules) -> Vec<Finding> {
    let mut out = Vec::new();
    let p = &img.probe;
    if !img.shell {
        out.push(Finding::new(
            "shell",
            format!("{} has no /bin/sh", img.image),
            "use a base with a POSIX shell at /bin/sh (Beam's setup and prebuilder's run under it)"
                .into(),
        ));
        return out;
    }
    let interp = p
        .python
        .clone()
        .or_else(|| p.python3.clone())
        .unwrap_or_default();
    match (&p.python, &p.python3) {
        (None, None) => out.push(Finding::new(
            "python",
            "no `python` (nor `python3`) on PATH".into(),
            "install Python 3 with pip and venv, e.g. `apt-get install python3 python3-pip python3-venv python-is-python3`".into(),
        )),
        (None, Some(py3)) => out.push(Finding::new(
            "python",
            format!("no `python` on PATH (python3 is {py3}); the boot runs `python`"),
            format!("install python-is-python3 (Debian/Ubuntu), or link it: `ln -s {py3} /usr/local/bin/python`"),
        )),
        _ => {}
    }
    if p.major().is_some_and(|m| m != 3) {
        out.push(Finding::new(
            "python-version",
            format!(
                "`python` ({interp}) is Python {}; Beam needs Python 3",
                p.version.as_deref().unwrap_or("?")
            ),
            "make `python` resolve to Python 3: install python-is-python3".into(),
        ));
        return out;
    }
    if p.executable.is_some() {
        if p.apache_beam.is_none() && !rules.sdk_staged {
            out.push(Finding::new(
                "apache-beam",
                format!("apache-beam is not installed for {interp}"),
                format!(
                    "install the Beam version the pipeline launches with: `{interp} -m pip install apache-beam==<launch version>`"
                ),
            ));
        }
        if p.pip.is_none() {
            out.push(Finding::new(
                "pip",
                format!("pip is not available to {interp}; the boot installs with `python -m pip`"),
                "install python3-pip (Debian/Ubuntu), or run `python -m ensurepip`".into(),
            ));
        }
        let default_env = img
            .default_environment
            .as_deref()
            .is_some_and(|v| !v.is_empty());
        if p.venv == Some(false) && !default_env {
            out.push(Finding::new(
                "venv",
                format!(
                    "{interp} cannot create a venv (the venv/ensurepip modules are missing) and \
                     {DEFAULT_ENV_VAR} is not set: Beam's boot creates a venv when a worker starts"
                ),
                format!(
                    "install python3-venv (Debian/Ubuntu), or set `ENV {DEFAULT_ENV_VAR}=1` in the image"
                ),
            ));
        }
    }
    if !rules.boot_added {
        let suggestion = sdk_image(p.minor().as_deref(), p.apache_beam.as_deref());
        match p.boot.as_deref() {
            Some("executable") => {
                if img.entrypoint.first().map(String::as_str) != Some(BOOT) {
                    out.push(Finding::new(
                        "entrypoint",
                        format!(
                            "the entrypoint is {}, not the boot: workers would not start Beam's SDK harness",
                            serde_json::to_string(&img.entrypoint).unwrap_or_default()
                        ),
                        format!("set `ENTRYPOINT [\"{BOOT}\"]` (prebuilder build --boot-from does)"),
                    ));
                }
            }
            Some("not-executable") => out.push(Finding::new(
                "boot",
                format!("{} has {BOOT}, but it is not an executable file", img.image),
                format!("make it executable (`chmod 755 {BOOT}`), or take it from a Beam image with --boot-from {suggestion}"),
            )),
            _ => out.push(Finding::new(
                "boot",
                format!("{} has no {BOOT}", img.image),
                format!(
                    "add Beam's boot: `prebuilder build --boot-from {suggestion}` (or see `prebuilder template custom-base`)"
                ),
            )),
        }
    }
    out
}

/// What must match between the launch and the image: Python minor version, Beam
/// version, the pickling library in use, protobuf's major version.
/// `pickle_library` overrides the launch side's default (`--pickle_library`).
// Over 80 lines on purpose, like `image_findings`: one flat list of rules.
pub fn launch_findings(
    img: &ImageFacts,
    launch: &LaunchFacts,
    pickle_library: Option<&str>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let (i, l) = (&img.probe, &launch.probe);
    if i.executable.is_none() {
        return out;
    }
    if let (Some(im), Some(lm)) = (i.minor(), l.minor()) {
        if im != lm {
            out.push(Finding::new(
                "python-minor",
                format!(
                    "Python {im} in the image, {lm} at launch ({})",
                    launch.python.display()
                ),
                format!(
                    "launch with Python {im}, or use a base with Python {lm} (e.g. {})",
                    sdk_image(Some(&lm), l.apache_beam.as_deref())
                ),
            ));
        }
    }
    if let (Some(ib), Some(lb)) = (&i.apache_beam, &l.apache_beam) {
        if ib != lb {
            out.push(Finding::new(
                "beam-version",
                format!("apache-beam {ib} in the image, {lb} at launch"),
                format!(
                    "use Beam {ib} at launch (`pip install apache-beam=={ib}`), or install apache-beam=={lb} in the image"
                ),
            ));
        }
    }
    let lib = pickle_library
        .map(str::to_string)
        .or_else(|| l.pickle_library.clone());
    match lib.as_deref() {
        Some("cloudpickle") => {
            let (ic, lc) = (i.cloudpickle_in_use(), l.cloudpickle_in_use());
            if let Some(lc) = lc {
                if ic.as_deref() != Some(lc.as_str()) {
                    out.push(Finding::new(
                        "pickler",
                        format!(
                            "the pipeline pickles with cloudpickle {lc} at launch, but the image has {}",
                            ic.as_deref().unwrap_or("no cloudpickle")
                        ),
                        "use the same apache-beam (whose cloudpickle it vendors) or the same cloudpickle on both sides".into(),
                    ));
                }
            }
        }
        Some(dill_lib) if dill_lib.starts_with("dill") => {
            if let Some(ld) = &l.dill {
                if i.dill.as_deref() != Some(ld.as_str()) {
                    out.push(Finding::new(
                        "pickler",
                        format!(
                            "the pipeline pickles with dill {ld} at launch, but the image has {}",
                            i.dill
                                .as_deref()
                                .map_or("no dill".to_string(), |d| format!("dill {d}"))
                        ),
                        format!("install dill=={ld} in the image (add it to the requirements)"),
                    ));
                }
            } else {
                out.push(Finding::new(
                    "pickler",
                    "the pickle library is dill, but dill is not installed at launch".into(),
                    "install dill at launch (`pip install apache-beam[dill]`) and the same version in the image".into(),
                ));
            }
        }
        _ => {}
    }
    let major = |v: &Option<String>| {
        v.as_deref()
            .and_then(|v| v.split('.').next())
            .map(str::to_string)
    };
    if let (Some(ip), Some(lp)) = (major(&i.protobuf), major(&l.protobuf)) {
        if ip != lp {
            out.push(Finding::new(
                "protobuf-major",
                format!("protobuf {ip}.x in the image, {lp}.x at launch"),
                format!(
                    "install protobuf {lp}.x in the image (add `protobuf>={lp},<{}` to the requirements), or protobuf {ip}.x at launch",
                    lp.parse::<u32>().map_or(String::from("?"), |n| (n + 1).to_string())
                ),
            ));
        }
    }
    out
}

/// `--boot-from`: the boot should come from the Beam version the base has.
pub fn boot_findings(base: &ImageFacts, boot: &ImageFacts) -> Vec<Finding> {
    match (&base.probe.apache_beam, &boot.probe.apache_beam) {
        (Some(b), Some(s)) if b != s => vec![Finding::new(
            "boot-version",
            format!(
                "the boot comes from Beam {s} ({}), but {} has apache-beam {b}",
                boot.image, base.image
            ),
            format!(
                "use --boot-from {}",
                sdk_image(base.probe.minor().as_deref(), Some(b))
            ),
        )],
        _ => Vec::new(),
    }
}

/// The environment variable's value in an image's `KEY=VALUE` list.
pub fn env_value(env: &[String], key: &str) -> Option<String> {
    env.iter()
        .rev()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=').map(str::to_string))
}

/// Run the probe with a launch Python on this host.
pub fn probe_launch(python: &Path) -> Result<Probe> {
    let failed = |reason: String| Error::LaunchPython {
        python: python.to_path_buf(),
        reason,
    };
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(PROBE_PY)
        .arg("launch")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| failed(e.to_string()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    Probe::parse(&stdout).ok_or_else(|| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        failed(format!(
            "the probe printed no result (exit status {}): {}",
            out.status.code().unwrap_or(-1),
            stderr.trim()
        ))
    })
}

/// `python3` on `path` (a `PATH` value), if any.
pub fn python3_on_path(path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path?)
        .map(|d| d.join("python3"))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The result of `prebuilder check`.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub image: ImageFacts,
    pub launch: Option<LaunchFacts>,
    /// Why a comparison was skipped, and the like.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    pub findings: Vec<Finding>,
    pub compatible: bool,
}

impl CheckReport {
    pub fn new(
        image: ImageFacts,
        launch: Option<LaunchFacts>,
        notes: Vec<String>,
        pickle_library: Option<&str>,
    ) -> CheckReport {
        let mut findings = image_findings(&image, ImageRules::default());
        if let Some(l) = &launch {
            findings.extend(launch_findings(&image, l, pickle_library));
        }
        CheckReport {
            compatible: findings.is_empty(),
            image,
            launch,
            notes,
            findings,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    pub fn to_text(&self) -> String {
        render::text(self)
    }
}

/// Findings as an indented list (for error messages).
pub fn list(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| format!("\n  - {}\n    fix: {}", f.message, f.fix))
        .collect()
}

mod facts;
pub mod flink;
pub use facts::image_facts;

#[cfg(test)]
mod tests;
