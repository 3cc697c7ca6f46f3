//! PyFlink jobs: the job's Python dependencies (`--py-files`,
//! `--py-requirements`, `--py-archives`, `--py-executable`, or the `python.*`
//! keys of `--flink-conf`) staged, keyed and baked into an image like Beam's,
//! with a setup of its own instead of Beam's boot (`crate::build::flink`,
//! `src/build/flink-setup.sh`).
//!
//! Where things go in the image (fixed, so the report can name them):
//! archives are extracted under [`ARCHIVES_DIR`]`/NAME`, python files are
//! copied under [`FILES_DIR`]`/I` and put on the image's `PYTHONPATH`, and the
//! workers' Python (resolved into an archive when `--py-executable` points
//! into one) is set as `PYFLINK_PYTHON` and `PYFLINK_CLIENT_EXECUTABLE`.
//!
//! Staged names (under the upload's `artifacts/`): `requirements.txt`,
//! `cache/FILE`, `archives/NAME/FILE`, `files/I/...`. Requirements and
//! archives form the dependencies layer, python files the application layer.

pub mod archive;
pub mod conf;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::stage::digest::DigestCache;
use crate::stage::{Artifact, Role, SetupMode, StagedSet, REQUIREMENTS_FILE};
pub use conf::PythonOptions;

/// Where archives are extracted: `ARCHIVES_DIR/NAME`.
pub const ARCHIVES_DIR: &str = "/opt/flink/python-archives";
/// Where python files are copied: `FILES_DIR/I/...`.
pub const FILES_DIR: &str = "/opt/flink/python-files";
/// The upload goes here (it exists in every image); staged files land in
/// `UPLOAD_DIR/artifacts` and are removed before the layer is made.
pub const UPLOAD_DIR: &str = "/tmp";
pub const ARTIFACTS_DIR: &str = "/tmp/artifacts";
/// Environment variables the image gets for the workers' Python.
pub const PYTHON_ENV: &str = "PYFLINK_PYTHON";
pub const CLIENT_PYTHON_ENV: &str = "PYFLINK_CLIENT_EXECUTABLE";

/// Suffixes PyFlink puts on PYTHONPATH as they are (zipimport); any other
/// python file or directory is reached through the directory holding it.
const IMPORTABLE_ARCHIVES: &[&str] = &[".zip", ".egg", ".whl", ".jar"];

/// What a PyFlink build bakes, beyond the staged files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlinkSetup {
    /// The workers' Python in the image, resolved into its archive.
    pub executable: Option<String>,
    /// The Python that launches the job (`python.client.executable`), for the checks.
    pub client_executable: Option<String>,
    /// PYTHONPATH entries of the python files, in order (application layer).
    pub files_pythonpath: Vec<String>,
    /// `python.pythonpath` entries, resolved into archives where they point into one.
    pub extra_pythonpath: Vec<String>,
    /// Archive name → its directory in the image.
    pub archives: BTreeMap<String, String>,
    /// Whether the requirements install from a cache dir only (`--no-index`).
    pub requirements_cache: bool,
    /// The requirements input as given, for error messages.
    pub requirements_input: Option<String>,
}

impl FlinkSetup {
    /// The Python that installs the requirements in the image: the workers'.
    pub fn installer_python(&self) -> &str {
        self.executable.as_deref().unwrap_or("python3")
    }

    /// Every PYTHONPATH entry the image gets, in order.
    pub fn pythonpath(&self) -> Vec<String> {
        self.files_pythonpath
            .iter()
            .chain(&self.extra_pythonpath)
            .cloned()
            .collect()
    }

    /// Environment a layer image gets, on top of the base's (`base_env`).
    /// PYTHONPATH entries of python files only with `with_files`: the layer
    /// that has them (the application layer).
    pub fn env(&self, with_files: bool, base_env: &[String]) -> Vec<(String, String)> {
        let mut env = Vec::new();
        if let Some(exe) = &self.executable {
            env.push((PYTHON_ENV.to_string(), exe.clone()));
            env.push((CLIENT_PYTHON_ENV.to_string(), exe.clone()));
        }
        let mut path: Vec<String> = Vec::new();
        if with_files {
            path.extend(self.files_pythonpath.iter().cloned());
        }
        path.extend(self.extra_pythonpath.iter().cloned());
        if !path.is_empty() {
            let inherited = base_env
                .iter()
                .find_map(|e| e.strip_prefix("PYTHONPATH="))
                .filter(|p| !p.is_empty());
            if let Some(p) = inherited {
                path.push(p.to_string());
            }
            env.push(("PYTHONPATH".to_string(), path.join(":")));
        }
        env
    }
}

/// Where an option came from, to name it in errors.
struct Origin<'a> {
    flag: &'static str,
    key: &'static str,
    /// `Some(conf)` when the value came from the file.
    conf: Option<&'a Path>,
}

impl Origin<'_> {
    fn err(&self, value: &str, reason: impl Into<String>) -> Error {
        let input = match self.conf {
            None => format!("{} {value}", self.flag),
            Some(conf) => format!(
                "{} {value} (from --flink-conf {})",
                self.key,
                conf.display()
            ),
        };
        Error::PyFlinkInput {
            input,
            reason: reason.into(),
        }
    }
}

/// Merge the flags over `--flink-conf`, check every input and stage it.
/// Nothing is copied: artifacts point at the user's files.
pub fn stage(flags: PythonOptions, conf_path: Option<&Path>) -> Result<StagedSet> {
    stage_with(flags, conf_path, &DigestCache::in_memory())
}

/// [`stage`], digests remembered in `cache`.
pub fn stage_with(
    flags: PythonOptions,
    conf_path: Option<&Path>,
    cache: &DigestCache,
) -> Result<StagedSet> {
    let file = match conf_path {
        Some(p) => conf::read(p)?,
        None => PythonOptions::default(),
    };
    let origins = Origins::of(&flags, conf_path);
    let opts = flags.over(file);

    let mut staged = Staged {
        cache,
        artifacts: Vec::new(),
    };
    let requirements_cache = match &opts.requirements {
        Some(spec) => stage_requirements(spec, &origins.requirements, &mut staged)?,
        None => false,
    };
    let (archives, listings) = stage_archives(&opts.archives, &origins.archives, &mut staged)?;
    let executable = match &opts.executable {
        Some(exe) => Some(resolve(exe, &listings).map_err(|r| origins.executable.err(exe, r))?),
        None => None,
    };
    let extra_pythonpath = opts
        .pythonpath
        .iter()
        .map(|p| resolve_dir(p, &listings).map_err(|r| origins.pythonpath.err(p, r)))
        .collect::<Result<Vec<_>>>()?;
    let files_pythonpath = stage_files(&opts.files, &origins.files, &mut staged)?;

    if staged.artifacts.is_empty() {
        return Err(Error::NothingToInstall {
            what: "no --py-files, --py-requirements or --py-archives (nor python.files, python.requirements or python.archives in --flink-conf) were given".into(),
        });
    }
    let setup = FlinkSetup {
        executable,
        client_executable: opts.client_executable.clone(),
        files_pythonpath,
        extra_pythonpath,
        archives,
        requirements_cache,
        requirements_input: opts.requirements.clone(),
    };
    let dir = conf_path
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    Ok(StagedSet::new(staged.artifacts, dir, None).with_mode(SetupMode::Flink(setup)))
}

/// The artifacts staged so far, each digested through `cache`.
struct Staged<'c> {
    cache: &'c DigestCache,
    artifacts: Vec<Artifact>,
}

impl Staged<'_> {
    fn add(&mut self, name: String, path: &Path, role: Role) -> Result<()> {
        self.artifacts.push(artifact(self.cache, name, path, role)?);
        Ok(())
    }
}

/// Where each option came from: its flag when the flag was given, else the
/// `--flink-conf` file's key.
struct Origins<'a> {
    files: Origin<'a>,
    requirements: Origin<'a>,
    archives: Origin<'a>,
    executable: Origin<'a>,
    pythonpath: Origin<'a>,
}

impl<'a> Origins<'a> {
    fn of(flags: &PythonOptions, conf_path: Option<&'a Path>) -> Self {
        let origin = |flag_set: bool, flag, key| Origin {
            flag,
            key,
            conf: if flag_set { None } else { conf_path },
        };
        Origins {
            files: origin(!flags.files.is_empty(), "--py-files", conf::FILES_KEY),
            requirements: origin(
                flags.requirements.is_some(),
                "--py-requirements",
                conf::REQUIREMENTS_KEY,
            ),
            archives: origin(
                !flags.archives.is_empty(),
                "--py-archives",
                conf::ARCHIVES_KEY,
            ),
            executable: origin(
                flags.executable.is_some(),
                "--py-executable",
                conf::EXECUTABLE_KEY,
            ),
            pythonpath: origin(false, "--flink-conf", conf::PYTHONPATH_KEY),
        }
    }
}

/// Stage `FILE[#CACHE_DIR]`: the requirements file, and every file of the
/// cache directory under `cache/`. Whether there is a cache.
fn stage_requirements(spec: &str, origin: &Origin<'_>, staged: &mut Staged<'_>) -> Result<bool> {
    let (file, cache) = match conf::split_hash(spec) {
        Some((f, c)) => (f, Some(c)),
        None => (spec, None),
    };
    require(origin, spec, Path::new(file), false)?;
    staged.add(
        REQUIREMENTS_FILE.to_string(),
        Path::new(file),
        Role::Requirements,
    )?;
    let Some(cache) = cache else {
        return Ok(false);
    };
    require(origin, spec, Path::new(cache), true)?;
    for (name, path) in dir_files(Path::new(cache), false)? {
        staged.add(format!("cache/{name}"), &path, Role::RequirementsCache)?;
    }
    Ok(true)
}

/// By archive name: the directory it is extracted to, and its listing.
type StagedArchives = (BTreeMap<String, String>, BTreeMap<String, archive::Listing>);

/// Stage each `FILE#NAME` archive under `archives/NAME/`, checked.
fn stage_archives(
    specs: &[String],
    origin: &Origin<'_>,
    staged: &mut Staged<'_>,
) -> Result<StagedArchives> {
    let mut archives = BTreeMap::new();
    let mut listings = BTreeMap::new();
    for spec in specs {
        let Some((file, name)) = conf::split_hash(spec) else {
            return Err(origin.err(
                spec,
                "no #NAME: an archive is extracted under a directory name, e.g. venv.zip#venv",
            ));
        };
        check_name(name).map_err(|r| origin.err(spec, r))?;
        if archives.contains_key(name) {
            return Err(origin.err(spec, format!("the name {name} is given to two archives")));
        }
        let path = Path::new(file);
        require(origin, spec, path, false)?;
        let listing = archive::check(path).map_err(|r| origin.err(spec, r))?;
        let base = base_name(path).ok_or_else(|| origin.err(spec, "no file name"))?;
        staged.add(format!("archives/{name}/{base}"), path, Role::PyArchive)?;
        archives.insert(name.to_string(), format!("{ARCHIVES_DIR}/{name}"));
        listings.insert(name.to_string(), listing);
    }
    Ok((archives, listings))
}

/// Stage each `--py-files` entry (a file, or a directory's files) under
/// `files/<i>/`. The PYTHONPATH entry of each, in order.
fn stage_files(
    specs: &[String],
    origin: &Origin<'_>,
    staged: &mut Staged<'_>,
) -> Result<Vec<String>> {
    let mut pythonpath = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let path = Path::new(spec);
        let meta = std::fs::metadata(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                origin.err(spec, "no such file or directory")
            } else {
                Error::io(path, e)
            }
        })?;
        let base = base_name(path).ok_or_else(|| origin.err(spec, "no file name"))?;
        if meta.is_dir() {
            for (rel, p) in dir_files(path, true)? {
                staged.add(format!("files/{i}/{base}/{rel}"), &p, Role::PyFile)?;
            }
            pythonpath.push(format!("{FILES_DIR}/{i}"));
        } else {
            staged.add(format!("files/{i}/{base}"), path, Role::PyFile)?;
            if IMPORTABLE_ARCHIVES.iter().any(|s| base.ends_with(s)) {
                pythonpath.push(format!("{FILES_DIR}/{i}/{base}"));
            } else {
                pythonpath.push(format!("{FILES_DIR}/{i}"));
            }
        }
    }
    Ok(pythonpath)
}

/// `venv/bin/python` → `/opt/flink/python-archives/venv/bin/python` when
/// `venv` is an archive, which must hold `bin/python`; anything else as is.
fn resolve(
    exe: &str,
    listings: &BTreeMap<String, archive::Listing>,
) -> std::result::Result<String, String> {
    if exe.starts_with('/') {
        return Ok(exe.to_string());
    }
    let Some((first, rest)) = exe.split_once('/') else {
        return Ok(exe.to_string());
    };
    let Some(listing) = listings.get(first) else {
        return Err(format!(
            "{exe} is a relative path, but no archive is named {first}; point it into an archive (NAME/path) or give an absolute path in the image"
        ));
    };
    let rest = rest.trim_start_matches("./");
    if !listing.entries.contains(rest) {
        return Err(format!("the archive {first} holds no {rest}"));
    }
    Ok(format!("{ARCHIVES_DIR}/{first}/{rest}"))
}

/// A `python.pythonpath` entry: into an archive when its first component
/// names one, else as is.
fn resolve_dir(
    entry: &str,
    listings: &BTreeMap<String, archive::Listing>,
) -> std::result::Result<String, String> {
    match entry.split_once('/') {
        Some((first, rest)) if !entry.starts_with('/') && listings.contains_key(first) => {
            Ok(format!("{ARCHIVES_DIR}/{first}/{rest}"))
        }
        None if listings.contains_key(entry) => Ok(format!("{ARCHIVES_DIR}/{entry}")),
        _ if entry.starts_with('/') => Ok(entry.to_string()),
        _ => Err(
            "a relative entry must start with an archive's name; give an absolute path in the image otherwise"
                .to_string(),
        ),
    }
}

/// Archive names are directory names: letters, digits, `.`, `_`, `-`.
fn check_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the name {name:?} is not a directory name (letters, digits, . _ -)"
        ))
    }
}

fn require(origin: &Origin<'_>, spec: &str, path: &Path, dir: bool) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if dir && m.is_dir() => Ok(()),
        Ok(m) if !dir && m.is_file() => Ok(()),
        Ok(_) => Err(origin.err(
            spec,
            format!(
                "{} is not a {}",
                path.display(),
                if dir { "directory" } else { "regular file" }
            ),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(origin.err(spec, format!("{} does not exist", path.display())))
        }
        Err(e) => Err(Error::io(path, e)),
    }
}

fn base_name(path: &Path) -> Option<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
}

fn artifact(cache: &DigestCache, name: String, path: &Path, role: Role) -> Result<Artifact> {
    let d = cache.digest(path)?;
    Ok(Artifact {
        name,
        path: path.to_path_buf(),
        size: d.size,
        sha256: d.sha256,
        content_digest: d.content_digest,
        role,
        origin: None,
    })
}

/// Regular files in `dir` (recursively when asked, skipping `__pycache__`),
/// as (relative `/` path, path), sorted. Hidden files are skipped.
fn dir_files(dir: &Path, recursive: bool) -> Result<Vec<(String, PathBuf)>> {
    fn walk(
        root: &Path,
        dir: &Path,
        recursive: bool,
        out: &mut Vec<(String, PathBuf)>,
    ) -> Result<()> {
        for item in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let item = item.map_err(|e| Error::io(dir, e))?;
            let path = item.path();
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') || name == "__pycache__" {
                continue;
            }
            let meta = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
            // Linked directories are not followed (a link loop would never end).
            let link = item.file_type().is_ok_and(|t| t.is_symlink());
            if meta.is_dir() && recursive && !link {
                walk(root, &path, recursive, out)?;
            } else if meta.is_file() {
                let rel = path
                    .strip_prefix(root)
                    .map_err(|e| Error::io(&path, std::io::Error::other(e.to_string())))?;
                if let Some(rel) = rel.to_str() {
                    out.push((rel.to_string(), path.clone()));
                }
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, recursive, &mut out)?;
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests;
