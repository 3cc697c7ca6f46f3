//! Staging Beam-style flags (`--requirements-file`, `--extra-package`, …)
//! into the layout Beam itself would stage, without Beam.
//!
//! The user's files are referenced where they are, not copied: a requirements
//! cache can be gigabytes. Only what the tool generates (`extra_packages.txt`,
//! `workflow.tar.gz`) is written, into a temporary directory the
//! [`StagedSet`] owns.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::digest::DigestCache;
use super::pack::pack_project;
use super::{
    Artifact, Inputs, Role, StagedSet, EXTRA_PACKAGES_FILE, MANIFEST_FILE, REQUIREMENTS_FILE,
    SDK_SOURCE_TARBALL, WORKFLOW_TARBALL,
};
use crate::error::{Error, Result};

const REQUIREMENTS_FLAG: &str = "--requirements-file";
const CACHE_FLAG: &str = "--requirements-cache";
const EXTRA_PACKAGE_FLAG: &str = "--extra-package";
const SETUP_FLAG: &str = "--setup-file";
const SDK_FLAG: &str = "--sdk-location";
const FILES_FLAG: &str = "--files-to-stage";

/// Files that mark a directory as an installable Python project.
const PROJECT_FILES: &[&str] = &["setup.py", "pyproject.toml"];

/// One artifact before digesting.
struct Staged {
    name: String,
    /// Where the bytes are (for generated files, inside the temporary directory).
    path: PathBuf,
    /// What the user passed, to name in conflicts (differs from `path` for
    /// generated files).
    source: PathBuf,
    role: Role,
}

/// Stage `inputs` in Beam's manifest order: SDK, requirements, cache, extra
/// packages list and packages, workflow, files to stage.
pub fn stage(inputs: &Inputs) -> Result<StagedSet> {
    stage_in(inputs, &std::env::temp_dir())
}

/// [`stage`], with the generated files (extra_packages.txt, workflow.tar.gz)
/// in a directory under `temp` (the build's scratch directory, which a later
/// run removes if this one is killed).
pub fn stage_in(inputs: &Inputs, temp: &Path) -> Result<StagedSet> {
    stage_with(inputs, temp, &DigestCache::in_memory())
}

/// [`stage_in`], digests remembered in `cache` (the user's files are read
/// where they are, so an unchanged relaunch reads none of them).
pub fn stage_with(inputs: &Inputs, temp: &Path, cache: &DigestCache) -> Result<StagedSet> {
    if inputs.is_empty() {
        return Err(Error::NothingToInstall {
            what: "no inputs were given".into(),
        });
    }
    let generated = tempfile::Builder::new()
        .prefix("prebuilder-stage-")
        .tempdir_in(temp)
        .map_err(|e| Error::io(temp, e))?;
    let dir = generated.path();
    let mut staged = Vec::new();
    if let Some(sdk) = &inputs.sdk_location {
        staged.push(stage_sdk(sdk)?);
    }
    if let Some(requirements) = &inputs.requirements_file {
        require_file(REQUIREMENTS_FLAG, requirements)?;
        staged.push(user_file(
            REQUIREMENTS_FILE.to_string(),
            requirements,
            Role::Requirements,
        ));
    }
    if let Some(cache) = &inputs.requirements_cache {
        staged.extend(stage_cache(cache, inputs.requirements_file.as_deref())?);
    }
    if !inputs.extra_packages.is_empty() {
        staged.extend(stage_extra_packages(&inputs.extra_packages, dir)?);
    }
    if let Some(setup) = &inputs.setup_file {
        let project = project_dir(setup)?;
        let tarball = dir.join(WORKFLOW_TARBALL);
        pack_project(&project, &tarball)?;
        staged.push(Staged {
            name: WORKFLOW_TARBALL.to_string(),
            path: tarball,
            source: setup.clone(),
            role: Role::Workflow,
        });
    }
    for file in &inputs.files_to_stage {
        require_file(FILES_FLAG, file)?;
        let name = base_name(FILES_FLAG, file)?;
        staged.push(user_file(name, file, Role::FileToStage));
    }
    check_names(&staged)?;
    let mut artifacts = Vec::with_capacity(staged.len());
    for item in staged {
        let digest = cache.digest(&item.path)?;
        artifacts.push(Artifact {
            name: item.name,
            path: item.path,
            size: digest.size,
            sha256: digest.sha256,
            content_digest: digest.content_digest,
            role: item.role,
            origin: None,
        });
    }
    Ok(StagedSet::new(
        artifacts,
        dir.to_path_buf(),
        Some(generated),
    ))
}

/// `--sdk-location`: a wheel keeps its name, a source tarball gets Beam's.
fn stage_sdk(sdk: &Path) -> Result<Staged> {
    require_file(SDK_FLAG, sdk)?;
    let base = base_name(SDK_FLAG, sdk)?;
    let name = if base.ends_with(".whl") {
        // The boot finds the SDK wheel by this prefix; any other name
        // would be skipped and the image would lack the SDK it was given.
        if !base.starts_with("apache_beam-") {
            return Err(Error::InputInvalid {
                flag: SDK_FLAG,
                path: sdk.to_path_buf(),
                reason: "an SDK wheel must keep the name pip built it with, apache_beam-<version>-<tags>.whl".into(),
            });
        }
        base
    } else {
        SDK_SOURCE_TARBALL.to_string()
    };
    Ok(user_file(name, sdk, Role::Sdk))
}

/// `--requirements-cache`: every file of the directory but the requirements
/// file itself (`--requirements-file deps/requirements.txt
/// --requirements-cache deps` is a natural layout).
fn stage_cache(cache: &Path, requirements: Option<&Path>) -> Result<Vec<Staged>> {
    let requirements = match requirements {
        Some(path) => Some(file_id(path)?),
        None => None,
    };
    let mut staged = Vec::new();
    for (name, path) in cache_files(cache)? {
        if requirements.is_some() && Some(file_id(&path)?) == requirements {
            continue;
        }
        staged.push(Staged {
            name,
            source: path.clone(),
            path,
            role: Role::RequirementsCache,
        });
    }
    Ok(staged)
}

/// `--extra-package`: `extra_packages.txt` (written into `dir`) then the packages.
fn stage_extra_packages(packages: &[PathBuf], dir: &Path) -> Result<Vec<Staged>> {
    let mut names = Vec::with_capacity(packages.len());
    let mut staged = Vec::with_capacity(packages.len() + 1);
    for package in packages {
        require_file(EXTRA_PACKAGE_FLAG, package)?;
        let name = base_name(EXTRA_PACKAGE_FLAG, package)?;
        names.push(name.clone());
        staged.push(user_file(name, package, Role::ExtraPackage));
    }
    // One name per line, newline-terminated, as Beam's stager writes it.
    let list = dir.join(EXTRA_PACKAGES_FILE);
    let text: String = names.iter().map(|name| format!("{name}\n")).collect();
    fs::write(&list, text).map_err(|e| Error::io(&list, e))?;
    staged.insert(
        0,
        Staged {
            name: EXTRA_PACKAGES_FILE.to_string(),
            source: list.clone(),
            path: list,
            role: Role::ExtraPackagesList,
        },
    );
    Ok(staged)
}

fn user_file(name: String, path: &Path, role: Role) -> Staged {
    Staged {
        name,
        path: path.to_path_buf(),
        source: path.to_path_buf(),
        role,
    }
}

/// Staged names must be unique, and names the boot gives a meaning to may only
/// carry that meaning: a `requirements.txt` in the cache would be installed
/// as requirements, an `artifacts_info.json` would replace the manifest.
fn check_names(staged: &[Staged]) -> Result<()> {
    let mut seen: HashMap<&str, &Path> = HashMap::new();
    for item in staged {
        if let Some(first) = seen.insert(&item.name, &item.source) {
            return Err(Error::StagedNameConflict {
                name: item.name.clone(),
                first: first.to_path_buf(),
                second: item.source.clone(),
            });
        }
    }
    for item in staged {
        let meant = match item.name.as_str() {
            REQUIREMENTS_FILE => Some(Role::Requirements),
            EXTRA_PACKAGES_FILE => Some(Role::ExtraPackagesList),
            WORKFLOW_TARBALL => Some(Role::Workflow),
            SDK_SOURCE_TARBALL => Some(Role::Sdk),
            MANIFEST_FILE => None,
            _ => continue,
        };
        if meant != Some(item.role) {
            return Err(Error::InputInvalid {
                flag: flag_of(item.role),
                path: item.source.clone(),
                reason: format!(
                    "the boot gives the staged name {} a meaning of its own; rename the file{}",
                    item.name,
                    match meant.map(flag_of) {
                        Some(flag) => format!(" or pass it with {flag}"),
                        None => String::new(),
                    }
                ),
            });
        }
    }
    Ok(())
}

/// Identifies a file whatever path names it.
fn file_id(path: &Path) -> Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(path).map_err(|e| Error::io(path, e))?;
    Ok((meta.dev(), meta.ino()))
}

fn flag_of(role: Role) -> &'static str {
    match role {
        Role::Sdk => SDK_FLAG,
        Role::Requirements => REQUIREMENTS_FLAG,
        Role::RequirementsCache => CACHE_FLAG,
        Role::ExtraPackagesList | Role::ExtraPackage => EXTRA_PACKAGE_FLAG,
        Role::Workflow => SETUP_FLAG,
        Role::FileToStage | Role::Ignored => FILES_FLAG,
        Role::PyArchive => "--py-archives",
        Role::PyFile => "--py-files",
    }
}

fn require_file(flag: &'static str, path: &Path) -> Result<()> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err(Error::InputInvalid {
            flag,
            path: path.to_path_buf(),
            reason: "not a regular file".into(),
        }),
        Err(e) => Err(not_found_or_io(flag, path, e)),
    }
}

fn not_found_or_io(flag: &'static str, path: &Path, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::NotFound {
        Error::InputMissing {
            flag,
            path: path.to_path_buf(),
        }
    } else {
        Error::io(path, e)
    }
}

/// The staged name of a user's file: its base name, which must be UTF-8
/// because the manifest stores names as protobuf strings.
fn base_name(flag: &'static str, path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|name| name.to_str())
        .map(str::to_string)
        .ok_or_else(|| Error::InputInvalid {
            flag,
            path: path.to_path_buf(),
            reason: "the file name is missing or not valid UTF-8".into(),
        })
}

/// Regular, non-hidden files directly in the cache directory, by name.
/// Symlinks to files count: pip caches and CI caches often use them.
fn cache_files(cache: &Path) -> Result<Vec<(String, PathBuf)>> {
    match fs::metadata(cache) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(Error::InputInvalid {
                flag: CACHE_FLAG,
                path: cache.to_path_buf(),
                reason: "not a directory".into(),
            })
        }
        Err(e) => return Err(not_found_or_io(CACHE_FLAG, cache, e)),
    }
    let mut files = Vec::new();
    for item in fs::read_dir(cache).map_err(|e| Error::io(cache, e))? {
        let item = item.map_err(|e| Error::io(cache, e))?;
        let path = item.path();
        let Some(name) = item.file_name().to_str().map(str::to_string) else {
            return Err(Error::InputInvalid {
                flag: CACHE_FLAG,
                path,
                reason: "the file name is not valid UTF-8".into(),
            });
        };
        if name.starts_with('.') {
            continue;
        }
        let meta = fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
        if meta.is_file() {
            files.push((name, path));
        }
    }
    files.sort();
    Ok(files)
}

/// The project directory for `--setup-file`: the parent of a `setup.py` or
/// `pyproject.toml`, or a directory holding one.
fn project_dir(setup: &Path) -> Result<PathBuf> {
    let meta = fs::metadata(setup).map_err(|e| not_found_or_io(SETUP_FLAG, setup, e))?;
    let invalid = |reason: String| Error::InputInvalid {
        flag: SETUP_FLAG,
        path: setup.to_path_buf(),
        reason,
    };
    if meta.is_dir() {
        if PROJECT_FILES.iter().any(|name| setup.join(name).is_file()) {
            return Ok(setup.to_path_buf());
        }
        return Err(invalid(
            "the directory holds neither setup.py nor pyproject.toml, so pip cannot install it"
                .into(),
        ));
    }
    let name = setup.file_name().and_then(|name| name.to_str());
    if !meta.is_file() || !name.is_some_and(|name| PROJECT_FILES.contains(&name)) {
        return Err(invalid(
            "expected a setup.py, a pyproject.toml, or the project directory holding one".into(),
        ));
    }
    Ok(match setup.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, content: &str) -> PathBuf {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
        path.to_path_buf()
    }

    fn sha256_hex(bytes: &[u8]) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(bytes))
    }

    fn sdist(path: &Path) -> PathBuf {
        use std::io::Write;
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(2);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, "lib-1.0/setup.py", &b"x\n"[..])
            .unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&builder.into_inner().unwrap()).unwrap();
        fs::write(path, gz.finish().unwrap()).unwrap();
        path.to_path_buf()
    }

    #[test]
    fn full_staging_in_beam_order() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let cache = t.join("cache");
        write(&cache.join("six-1.16.0-py2.py3-none-any.whl"), "six");
        write(
            &cache.join("numpy-2.0.0-cp311-cp311-manylinux_2_17_x86_64.whl"),
            "np",
        );
        write(&cache.join(".hidden.whl"), "no");
        fs::create_dir(cache.join("subdir")).unwrap();
        std::os::unix::fs::symlink(
            cache.join("six-1.16.0-py2.py3-none-any.whl"),
            cache.join("six-link.whl"),
        )
        .unwrap();
        write(
            &t.join("project/setup.py"),
            "from setuptools import setup\nsetup()\n",
        );
        write(&t.join("project/pkg/__init__.py"), "");
        let inputs = Inputs {
            requirements_file: Some(write(&t.join("reqs/my-reqs.txt"), "numpy\nsix\n")),
            requirements_cache: Some(cache.clone()),
            extra_packages: vec![
                sdist(&t.join("zlib-1.0.tar.gz")),
                write(&t.join("a/alpha-2.0-py3-none-any.whl"), "alpha"),
            ],
            setup_file: Some(t.join("project/setup.py")),
            sdk_location: Some(write(
                &t.join("apache_beam-2.77.0-cp311-cp311-manylinux_2_17_x86_64.whl"),
                "sdk",
            )),
            files_to_stage: vec![write(&t.join("data/config.json"), "{}")],
        };
        let set = stage(&inputs).unwrap();
        let got: Vec<(&str, Role)> = set
            .artifacts
            .iter()
            .map(|a| (a.name.as_str(), a.role))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "apache_beam-2.77.0-cp311-cp311-manylinux_2_17_x86_64.whl",
                    Role::Sdk
                ),
                ("requirements.txt", Role::Requirements),
                (
                    "numpy-2.0.0-cp311-cp311-manylinux_2_17_x86_64.whl",
                    Role::RequirementsCache
                ),
                ("six-1.16.0-py2.py3-none-any.whl", Role::RequirementsCache),
                ("six-link.whl", Role::RequirementsCache),
                ("extra_packages.txt", Role::ExtraPackagesList),
                ("zlib-1.0.tar.gz", Role::ExtraPackage),
                ("alpha-2.0-py3-none-any.whl", Role::ExtraPackage),
                ("workflow.tar.gz", Role::Workflow),
                ("config.json", Role::FileToStage),
            ]
        );

        // User files are referenced, not copied; generated ones live in `dir`.
        assert_eq!(set.artifacts[1].path, t.join("reqs/my-reqs.txt"));
        assert_eq!(set.artifacts[1].sha256, sha256_hex(b"numpy\nsix\n"));
        assert_eq!(set.artifacts[1].size, 10);
        assert_eq!(
            set.artifacts[2].path,
            cache.join("numpy-2.0.0-cp311-cp311-manylinux_2_17_x86_64.whl")
        );
        let list = &set.artifacts[5];
        assert_eq!(list.path, set.dir.join("extra_packages.txt"));
        assert_eq!(
            fs::read_to_string(&list.path).unwrap(),
            "zlib-1.0.tar.gz\nalpha-2.0-py3-none-any.whl\n"
        );
        assert_eq!(
            list.sha256,
            sha256_hex(b"zlib-1.0.tar.gz\nalpha-2.0-py3-none-any.whl\n")
        );
        let workflow = &set.artifacts[8];
        assert_eq!(workflow.path, set.dir.join("workflow.tar.gz"));
        assert_ne!(workflow.content_digest, workflow.sha256);
        let zlib = &set.artifacts[6];
        assert_ne!(zlib.content_digest, zlib.sha256);
        for artifact in &set.artifacts {
            assert!(artifact.path.is_file(), "{}", artifact.path.display());
            assert_eq!(
                artifact.sha256,
                sha256_hex(&fs::read(&artifact.path).unwrap())
            );
        }

        // The generated files go away with the set.
        let dir = set.dir.clone();
        assert!(dir.is_dir());
        drop(set);
        assert!(!dir.exists());
    }

    #[test]
    fn workflow_is_reproducible_across_stagings() {
        let tmp = tempfile::tempdir().unwrap();
        write(
            &tmp.path().join("p/pyproject.toml"),
            "[project]\nname='p'\n",
        );
        let inputs = Inputs {
            setup_file: Some(tmp.path().join("p")),
            ..Inputs::default()
        };
        let first = stage(&inputs).unwrap();
        let second = stage(&inputs).unwrap();
        assert_ne!(first.dir, second.dir);
        assert_eq!(first.artifacts[0].sha256, second.artifacts[0].sha256);
    }

    #[test]
    fn sdk_tarball_is_renamed() {
        let tmp = tempfile::tempdir().unwrap();
        let inputs = Inputs {
            sdk_location: Some(sdist(&tmp.path().join("apache-beam-2.77.0.tar.gz"))),
            ..Inputs::default()
        };
        let set = stage(&inputs).unwrap();
        assert_eq!(set.artifacts[0].name, "dataflow_python_sdk.tar");
        assert_eq!(set.artifacts[0].role, Role::Sdk);
        assert_eq!(
            set.artifacts[0].path,
            tmp.path().join("apache-beam-2.77.0.tar.gz")
        );
    }

    #[test]
    fn sdk_wheel_must_be_named_apache_beam() {
        let tmp = tempfile::tempdir().unwrap();
        let wheel = write(&tmp.path().join("beam-2.77.0-py3-none-any.whl"), "x");
        let inputs = Inputs {
            sdk_location: Some(wheel.clone()),
            ..Inputs::default()
        };
        match stage(&inputs).unwrap_err() {
            Error::InputInvalid { flag, path, reason } => {
                assert_eq!(flag, "--sdk-location");
                assert_eq!(path, wheel);
                assert!(reason.contains("apache_beam-"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn requirements_cache_alone_is_allowed() {
        let tmp = tempfile::tempdir().unwrap();
        write(&tmp.path().join("cache/a.whl"), "a");
        let inputs = Inputs {
            requirements_cache: Some(tmp.path().join("cache")),
            ..Inputs::default()
        };
        let set = stage(&inputs).unwrap();
        assert_eq!(set.artifacts.len(), 1);
        assert_eq!(set.artifacts[0].role, Role::RequirementsCache);
    }

    #[test]
    fn missing_inputs_name_their_flag() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("missing");
        let cases: Vec<(Inputs, &str)> = vec![
            (
                Inputs {
                    requirements_file: Some(missing.clone()),
                    ..Inputs::default()
                },
                "--requirements-file",
            ),
            (
                Inputs {
                    requirements_cache: Some(missing.clone()),
                    ..Inputs::default()
                },
                "--requirements-cache",
            ),
            (
                Inputs {
                    extra_packages: vec![missing.clone()],
                    ..Inputs::default()
                },
                "--extra-package",
            ),
            (
                Inputs {
                    setup_file: Some(missing.clone()),
                    ..Inputs::default()
                },
                "--setup-file",
            ),
            (
                Inputs {
                    sdk_location: Some(missing.clone()),
                    ..Inputs::default()
                },
                "--sdk-location",
            ),
            (
                Inputs {
                    files_to_stage: vec![missing.clone()],
                    ..Inputs::default()
                },
                "--files-to-stage",
            ),
        ];
        for (inputs, expected) in cases {
            match stage(&inputs).unwrap_err() {
                Error::InputMissing { flag, path } => {
                    assert_eq!(flag, expected);
                    assert_eq!(path, missing);
                }
                other => panic!("{expected}: {other:?}"),
            }
        }
    }

    #[test]
    fn wrong_kinds_of_inputs() {
        let tmp = tempfile::tempdir().unwrap();
        let file = write(&tmp.path().join("file.txt"), "x");
        let dir = tmp.path().join("dir");
        fs::create_dir(&dir).unwrap();
        let cases: Vec<(Inputs, &str)> = vec![
            (
                Inputs {
                    requirements_file: Some(dir.clone()),
                    ..Inputs::default()
                },
                "--requirements-file",
            ),
            (
                Inputs {
                    requirements_cache: Some(file.clone()),
                    ..Inputs::default()
                },
                "--requirements-cache",
            ),
            (
                Inputs {
                    extra_packages: vec![dir.clone()],
                    ..Inputs::default()
                },
                "--extra-package",
            ),
            (
                Inputs {
                    files_to_stage: vec![dir.clone()],
                    ..Inputs::default()
                },
                "--files-to-stage",
            ),
            (
                Inputs {
                    sdk_location: Some(dir.clone()),
                    ..Inputs::default()
                },
                "--sdk-location",
            ),
        ];
        for (inputs, expected) in cases {
            match stage(&inputs).unwrap_err() {
                Error::InputInvalid { flag, .. } => assert_eq!(flag, expected),
                other => panic!("{expected}: {other:?}"),
            }
        }
    }

    #[test]
    fn setup_file_forms() {
        let tmp = tempfile::tempdir().unwrap();
        let project = tmp.path().join("project");
        write(
            &project.join("setup.py"),
            "from setuptools import setup\nsetup()\n",
        );
        write(&project.join("mod.py"), "x = 1\n");

        let digest_for = |setup: PathBuf| {
            let set = stage(&Inputs {
                setup_file: Some(setup),
                ..Inputs::default()
            })
            .unwrap();
            assert_eq!(set.artifacts.len(), 1);
            assert_eq!(set.artifacts[0].role, Role::Workflow);
            assert_eq!(set.artifacts[0].name, "workflow.tar.gz");
            set.artifacts[0].sha256.clone()
        };
        // The file and its directory pack the same tree.
        assert_eq!(
            digest_for(project.join("setup.py")),
            digest_for(project.clone())
        );

        let pyproject = tmp.path().join("modern");
        write(&pyproject.join("pyproject.toml"), "[project]\nname = 'm'\n");
        digest_for(pyproject.join("pyproject.toml"));
        digest_for(pyproject);

        let empty = tmp.path().join("empty");
        write(&empty.join("README"), "no setup here");
        for bad in [empty.clone(), empty.join("README")] {
            match stage(&Inputs {
                setup_file: Some(bad.clone()),
                ..Inputs::default()
            })
            .unwrap_err()
            {
                Error::InputInvalid { flag, path, reason } => {
                    assert_eq!(flag, "--setup-file");
                    assert_eq!(path, bad);
                    assert!(reason.contains("setup.py"), "{reason}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn name_conflicts_name_both_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let a = write(&tmp.path().join("a/lib-1.0.whl"), "a");
        let b = write(&tmp.path().join("b/lib-1.0.whl"), "b");
        match stage(&Inputs {
            extra_packages: vec![a.clone(), b.clone()],
            ..Inputs::default()
        })
        .unwrap_err()
        {
            Error::StagedNameConflict {
                name,
                first,
                second,
            } => {
                assert_eq!(name, "lib-1.0.whl");
                assert_eq!((first, second), (a.clone(), b.clone()));
            }
            other => panic!("{other:?}"),
        }

        // A cache file and an extra package.
        write(&tmp.path().join("cache/lib-1.0.whl"), "c");
        assert!(matches!(
            stage(&Inputs {
                requirements_cache: Some(tmp.path().join("cache")),
                extra_packages: vec![a.clone()],
                ..Inputs::default()
            }),
            Err(Error::StagedNameConflict { .. })
        ));

        // A file to stage that takes a name the tool generates.
        let project = tmp.path().join("p");
        write(&project.join("setup.py"), "x");
        let clash = write(&tmp.path().join("c/workflow.tar.gz"), "x");
        match stage(&Inputs {
            setup_file: Some(project.clone()),
            files_to_stage: vec![clash.clone()],
            ..Inputs::default()
        })
        .unwrap_err()
        {
            Error::StagedNameConflict { first, second, .. } => {
                assert_eq!((first, second), (project, clash));
            }
            other => panic!("{other:?}"),
        }

        // requirements.txt staged twice.
        let reqs = write(&tmp.path().join("requirements.txt"), "x");
        let other = write(&tmp.path().join("d/requirements.txt"), "y");
        assert!(matches!(
            stage(&Inputs {
                requirements_file: Some(reqs),
                files_to_stage: vec![other],
                ..Inputs::default()
            }),
            Err(Error::StagedNameConflict { .. })
        ));
    }

    #[test]
    fn requirements_file_inside_the_cache_is_staged_once() {
        let tmp = tempfile::tempdir().unwrap();
        let deps = tmp.path().join("deps");
        let reqs = write(&deps.join("requirements.txt"), "six\n");
        write(&deps.join("six-1.16.0-py2.py3-none-any.whl"), "six");
        let set = stage(&Inputs {
            requirements_file: Some(reqs),
            requirements_cache: Some(deps),
            ..Inputs::default()
        })
        .unwrap();
        let names: Vec<_> = set.artifacts.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            ["requirements.txt", "six-1.16.0-py2.py3-none-any.whl"]
        );
    }

    #[test]
    fn boot_names_keep_their_meaning() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("cache");
        let stray = write(&cache.join("requirements.txt"), "x");
        match stage(&Inputs {
            requirements_cache: Some(cache),
            ..Inputs::default()
        })
        .unwrap_err()
        {
            Error::InputInvalid { flag, path, reason } => {
                assert_eq!(flag, "--requirements-cache");
                assert_eq!(path, stray);
                assert!(reason.contains("--requirements-file"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let list = write(&tmp.path().join("x/extra_packages.txt"), "a.whl\n");
        assert!(matches!(
            stage(&Inputs {
                files_to_stage: vec![list],
                ..Inputs::default()
            }),
            Err(Error::InputInvalid {
                flag: "--files-to-stage",
                ..
            })
        ));
    }

    #[test]
    fn manifest_name_is_reserved() {
        let tmp = tempfile::tempdir().unwrap();
        let file = write(&tmp.path().join("artifacts_info.json"), "[]");
        assert!(matches!(
            stage(&Inputs {
                files_to_stage: vec![file],
                ..Inputs::default()
            }),
            Err(Error::InputInvalid {
                flag: "--files-to-stage",
                ..
            })
        ));
    }

    #[test]
    fn no_inputs_is_nothing_to_install() {
        assert!(matches!(
            stage(&Inputs::default()),
            Err(Error::NothingToInstall { .. })
        ));
    }

    #[test]
    fn corrupt_extra_package_archive_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let bad = write(&tmp.path().join("lib-1.0.tar.gz"), "not gzip");
        match stage(&Inputs {
            extra_packages: vec![bad.clone()],
            ..Inputs::default()
        })
        .unwrap_err()
        {
            Error::Archive { path, .. } => assert_eq!(path, bad),
            other => panic!("{other:?}"),
        }
    }
}
