//! What Beam's boot does in setup-only mode (`boot.go`
//! `processArtifactsInSetupOnlyMode` → `installSetupPackages`, and
//! `piputil.go`), replayed over one layer's staged artifacts with the pip
//! calls decided by [`super::resolve`]:
//!
//! 1. the SDK: the first staged `apache_beam*` file ending in
//!    `cp3X-cp3X-manylinux_2_17_x86_64.manylinux2014_x86_64.whl` (the only
//!    spec the boot accepts; on an aarch64 base, built with `--platform
//!    linux/arm64`, its `aarch64` twin) is installed as `<wheel>[gcp]`; a `.dev` wheel
//!    is forced first (`--upgrade --force-reinstall --no-deps`). A failure
//!    is only logged; then `dataflow_python_sdk.tar`, if staged, would be
//!    built from source (refused here);
//! 2. `apache-beam` must be installed (`pip show`), else the boot fails;
//! 3. `requirements.txt` twice: `--no-index --no-deps --find-links <workdir>`
//!    (a failure is only logged), then `--find-links <workdir>`;
//! 4. each line of `extra_packages.txt`, as written: `--upgrade
//!    --force-reinstall --no-deps <file>` then `<file>` (no find-links);
//! 5. `workflow.tar.gz`: `pip install <file>` (no find-links).
//!
//! Where the integration tests' fixture boot (`integration/fixtures/boot.py`)
//! differs: it accepts any `apache_beam-*.whl` as the SDK and installs it
//! without `[gcp]` and with `--find-links`; it fails when the SDK wheel
//! fails; it trims and skips blank lines of `extra_packages.txt`; and its
//! second install of an extra package and its workflow install add
//! `--find-links <workdir>`.

use std::path::{Path, PathBuf};

use super::host;
use super::install::State;
use super::requirements;
use super::resolve::{self, Call, Env, Failure, Root, Staged};
use crate::error::{Error, Result};
use crate::plan::ARTIFACTS_DIR;
use crate::stage::{EXTRA_PACKAGES_FILE, REQUIREMENTS_FILE, SDK_SOURCE_TARBALL, WORKFLOW_TARBALL};

/// One staged file of the layer: its staged name and where its bytes are.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub name: String,
    pub path: PathBuf,
}

/// What the boot said, in order (pip's warnings and the boot's own lines).
#[derive(Debug, Default, Clone)]
pub struct Log {
    pub lines: Vec<String>,
    pub warnings: Vec<String>,
}

/// What the boot needs from this machine.
pub struct Tools<'a> {
    /// The launch host's Python, to build sdists (the workflow).
    pub python: Option<&'a Path>,
    /// Scratch space for built wheels.
    pub scratch: &'a Path,
}

fn failed(step: &str, message: String) -> Error {
    Error::DirectFailed {
        step: format!("Beam's boot: failed to install {step}"),
        reason: message,
    }
}

fn file_url(name: &str) -> String {
    format!("file://{ARTIFACTS_DIR}/{name}")
}

/// Run the boot over `artifacts` (the layer's, in manifest order).
pub fn run(state: &mut State, artifacts: &[Artifact], tools: &Tools) -> Result<Log> {
    let mut log = Log::default();
    let markers = state.index.markers()?;
    let supported = super::tags::Supported::new(&state.index.tags);
    let python = python_version(state)?;
    let env = Env {
        markers: &markers,
        supported: &supported,
        python: &python,
    };
    let find = |name: &str| artifacts.iter().find(|a| a.name == name);
    // Refuse first: the requirements file is read before anything is installed.
    let reqs = match find(REQUIREMENTS_FILE) {
        Some(a) => {
            let text = std::fs::read_to_string(&a.path).map_err(|e| Error::io(&a.path, e))?;
            Some(requirements::parse(REQUIREMENTS_FILE, &text)?)
        }
        None => None,
    };
    // 1. The SDK.
    sdk(state, &env, artifacts, &mut log)?;
    // 2. apache-beam must be installed.
    if state.index.find("apache-beam").is_none() {
        return Err(Error::DirectFailed {
            step: "Beam's boot: failed to install required packages".into(),
            reason: "Apache Beam is not installed in the runtime environment. If you use a custom container image, you must install apache-beam package in the custom image using same version of Beam as in the pipeline submission environment.".into(),
        });
    }
    // 3. requirements.txt, two rounds.
    if let Some(file) = reqs {
        requirements_rounds(state, &env, &file, artifacts, &mut log)?;
    }
    // 4. extra_packages.txt, line by line as written.
    if let Some(list) = find(EXTRA_PACKAGES_FILE) {
        extra_packages(state, &env, (list, artifacts), tools, &mut log)?;
    }
    // 5. The workflow.
    if let Some(a) = find(WORKFLOW_TARBALL) {
        let (wheel, sdist) = wheel_of(a, WORKFLOW_TARBALL, tools)?;
        let call = Call {
            what: WORKFLOW_TARBALL.into(),
            roots: vec![Root::Path {
                staged: WORKFLOW_TARBALL.into(),
                url: file_url(WORKFLOW_TARBALL),
                wheel,
                sdist,
                extras: vec![],
            }],
            ..Call::default()
        };
        pip(state, &env, &call, &mut log).map_err(|m| failed("workflow", m))??;
    }
    log.lines.append(&mut state.notes);
    Ok(log)
}

/// One pip call that must succeed: what it installed and warned logged;
/// `Err` with pip's message when it fails, a refusal inside `Ok(Err)`.
fn pip(
    state: &mut State,
    env: &Env,
    call: &Call,
    log: &mut Log,
) -> std::result::Result<Result<()>, String> {
    match resolve::run(state, call, env) {
        Ok(done) => {
            log.lines.extend(installed_line(&done));
            log.warnings.extend(done.warnings);
            Ok(Ok(()))
        }
        Err(Failure::Refused(e)) => Ok(Err(e)),
        Err(Failure::Pip(m)) => Err(m),
    }
}

/// The base's Python version as PEP 440 reads it.
fn python_version(state: &State) -> Result<pep440_rs::Version> {
    let v = &state.index.python.version;
    v.parse().map_err(|_| Error::DirectBase {
        image: state.index.base.clone(),
        reason: format!("Python version {v} is not PEP 440"),
    })
}

/// Step 1: the SDK wheel the boot accepts, installed with `[gcp]` (a `.dev`
/// one forced first); a failure only logged, then the source tarball, which
/// direct mode refuses to build.
fn sdk(state: &mut State, env: &Env, artifacts: &[Artifact], log: &mut Log) -> Result<()> {
    let names: Vec<&str> = artifacts.iter().map(|a| a.name.as_str()).collect();
    let spec = sdk_spec(state.index.python.minor, &state.index.machine);
    let sdk = names
        .iter()
        .find(|n| n.starts_with("apache_beam") && n.ends_with(&spec));
    for n in names
        .iter()
        .filter(|n| n.starts_with("apache_beam") && n.ends_with(".whl"))
    {
        if Some(n) != sdk {
            log.lines.push(format!(
                "{n} is not an SDK wheel Beam's boot installs (it looks for *{spec}); it is only staged"
            ));
        }
    }
    let mut sdk_done = false;
    if let Some(sdk) = sdk {
        let a = artifacts
            .iter()
            .find(|a| a.name == *sdk)
            .ok_or_else(|| failed("SDK", format!("{sdk} is not staged")))?;
        match install_sdk(state, env, (sdk, &a.path)) {
            Ok(done) => {
                sdk_done = true;
                log.warnings.extend(done.warnings);
            }
            Err(Failure::Refused(e)) => return Err(e),
            Err(Failure::Pip(m)) => log.lines.push(format!(
                "Could not install Apache Beam SDK from a wheel: {m}, proceeding to install SDK from source tarball."
            )),
        }
    }
    if !sdk_done && names.contains(&SDK_SOURCE_TARBALL) {
        return Err(Error::DirectRefused {
            input: SDK_SOURCE_TARBALL.into(),
            reason: "Beam's boot would build the SDK from this source tarball; direct mode does not build the SDK (stage the SDK wheel for the base's Python instead)".into(),
        });
    }
    Ok(())
}

/// The SDK wheel name's ending the boot looks for. Beam's boot accepts only
/// `x86_64`; direct mode builds an aarch64 base (`--platform linux/arm64`)
/// with no boot and no emulation, and installs the aarch64 twin of that name.
fn sdk_spec(minor: u32, machine: &str) -> String {
    let m = match machine {
        "aarch64" => "aarch64",
        _ => "x86_64",
    };
    format!("cp3{minor}-cp3{minor}-manylinux_2_17_{m}.manylinux2014_{m}.whl")
}

/// `pip install <sdk>[gcp]`, after `--upgrade --force-reinstall --no-deps`
/// for a `.dev` wheel.
fn install_sdk(
    state: &mut State,
    env: &Env,
    (sdk, path): (&str, &Path),
) -> std::result::Result<resolve::Done, Failure> {
    let root = Root::Path {
        staged: format!("{sdk}[gcp]"),
        url: file_url(sdk),
        wheel: path.to_path_buf(),
        sdist: false,
        extras: vec!["gcp".into()],
    };
    if sdk.contains(".dev") {
        let forced = Call {
            what: format!("SDK {sdk}"),
            roots: vec![root.clone()],
            no_deps: true,
            force_reinstall: true,
            ..Call::default()
        };
        resolve::run(state, &forced, env)?;
    }
    let call = Call {
        what: format!("SDK {sdk}"),
        roots: vec![root],
        ..Call::default()
    };
    resolve::run(state, &call, env)
}

/// Step 3: `--no-index --no-deps --find-links <workdir>` (a failure only
/// logged), then with dependencies.
fn requirements_rounds(
    state: &mut State,
    env: &Env,
    file: &requirements::File,
    artifacts: &[Artifact],
    log: &mut Log,
) -> Result<()> {
    let staged: Vec<Staged> = artifacts
        .iter()
        .filter(|a| !a.name.contains('/'))
        .map(|a| Staged {
            name: a.name.clone(),
            path: a.path.clone(),
        })
        .collect();
    let first = Call {
        what: REQUIREMENTS_FILE.into(),
        roots: file.lines.iter().cloned().map(Root::Line).collect(),
        no_deps: true,
        force_reinstall: false,
        find_links: staged,
        require_hashes: file.require_hashes,
    };
    match pip(state, env, &first, log) {
        Ok(refused) => refused?,
        Err(m) => log.lines.push(format!(
            "{m}\nSome packages could not be installed solely from the requirements cache. Installing packages from PyPI."
        )),
    }
    let second = Call {
        no_deps: false,
        ..first
    };
    pip(state, env, &second, log).map_err(|m| failed(REQUIREMENTS_FILE, m))?
}

/// Step 4: each line of `extra_packages.txt` as written (bufio.ScanLines),
/// `--upgrade --force-reinstall --no-deps <file>` then `<file>`.
fn extra_packages(
    state: &mut State,
    env: &Env,
    (list, artifacts): (&Artifact, &[Artifact]),
    tools: &Tools,
    log: &mut Log,
) -> Result<()> {
    let text = std::fs::read_to_string(&list.path).map_err(|e| Error::io(&list.path, e))?;
    // bufio.ScanLines: a final newline ends the last line, it does not start one.
    let body = text.strip_suffix('\n').unwrap_or(&text);
    let lines: Vec<&str> = if text.is_empty() {
        Vec::new()
    } else {
        body.split('\n').collect()
    };
    for line in lines {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let step = format!("extra package {line}");
        let Some(a) = artifacts.iter().find(|a| a.name == line) else {
            return Err(failed(&step, format!("package '{line}' not found")));
        };
        let (wheel, sdist) = wheel_of(a, &step, tools)?;
        let root = Root::Path {
            staged: line.to_string(),
            url: file_url(line),
            wheel,
            sdist,
            extras: vec![],
        };
        for (no_deps, force) in [(true, true), (false, false)] {
            let call = Call {
                what: step.clone(),
                roots: vec![root.clone()],
                no_deps,
                force_reinstall: force,
                ..Call::default()
            };
            pip(state, env, &call, log).map_err(|m| failed(&step, m))??;
        }
    }
    Ok(())
}

fn installed_line(done: &resolve::Done) -> Option<String> {
    (!done.installed.is_empty())
        .then(|| format!("Successfully installed {}", done.installed.join(" ")))
}

/// A staged package as a wheel: itself, or built from its sdist with the host's Python.
fn wheel_of(a: &Artifact, what: &str, tools: &Tools) -> Result<(PathBuf, bool)> {
    if a.name.ends_with(".whl") {
        return Ok((a.path.clone(), false));
    }
    let Some(python) = tools.python else {
        return Err(Error::DirectRefused {
            input: what.to_string(),
            reason: format!(
                "{} is a source package and no Python was given to build it",
                a.name
            ),
        });
    };
    // pip names a path requirement's sdist by its file; build in a fresh directory.
    let n = std::fs::read_dir(tools.scratch)
        .map(|d| d.count())
        .unwrap_or(0);
    let out = tools.scratch.join(format!("built-{n}"));
    let wheel = host::build_wheel(python, &a.path, what, &out)?;
    Ok((wheel, true))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_sdk_wheel_looked_for_is_the_boots_on_x86_64_and_its_twin_on_aarch64() {
        assert_eq!(
            super::sdk_spec(11, "x86_64"),
            "cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
        );
        assert_eq!(
            super::sdk_spec(12, "aarch64"),
            "cp312-cp312-manylinux_2_17_aarch64.manylinux2014_aarch64.whl"
        );
    }
}
