//! Reading a Beam staging context: the directory Beam's
//! `SdkContainerImageBuilder._prepare_dependencies` fills with the staged
//! files, a `Dockerfile` (ignored here) and `artifacts_info.json`.
//!
//! Everything the boot would trip over later, inside a container, is checked
//! here instead, where the error can name the file: names that leave the
//! directory, files that are missing, digests that disagree, and a context
//! with nothing to install.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::digest::{DigestCache, FileDigest};
use super::manifest::{self, ManifestEntry};
use super::{
    Artifact, Role, StagedSet, EXTRA_PACKAGES_FILE, MANIFEST_FILE, PICKLED_MAIN_SESSION,
    REQUIREMENTS_FILE, SDK_SOURCE_TARBALL, SUBMISSION_ENV_FILE, WORKFLOW_TARBALL,
};
use crate::error::{Error, Result};

/// Files pip can take from the requirements cache (`--find-links <workdir>`).
const CACHE_SUFFIXES: &[&str] = &[
    ".whl", ".tar.gz", ".tgz", ".zip", ".tar", ".tar.bz2", ".egg",
];

/// Read and validate the context in `dir`, digesting every artifact the boot uses.
pub fn read(dir: &Path) -> Result<StagedSet> {
    read_with(dir, &DigestCache::in_memory(), &HashMap::new())
}

/// [`read`], with digests remembered in `cache`, and `origins`: for staged
/// names, the file each was copied from. Beam copies every artifact into a
/// fresh directory on each launch (new inodes, no digests in its manifest),
/// so only the originals can be remembered: a staged file whose original
/// has the same size takes the original's digests (remembered, else read
/// and remembered), and is marked to be checked against them when its own
/// bytes are uploaded ([`Artifact::origin`]). An unverified digest may
/// decide a cache lookup, never what enters an image.
pub fn read_with(
    dir: &Path,
    cache: &DigestCache,
    origins: &HashMap<String, PathBuf>,
) -> Result<StagedSet> {
    let (manifest_path, entries) = read_manifest(dir)?;
    let canonical_dir = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
    let context = Context {
        dir,
        canonical_dir: &canonical_dir,
        manifest: &manifest_path,
        cache,
        origins,
    };

    let mut first_index: HashMap<&str, usize> = HashMap::new();
    let mut paths = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        if let Some(first) = first_index.insert(&entry.path, index) {
            return Err(Error::ManifestInvalid {
                path: manifest_path.clone(),
                reason: format!(
                    "entry {index} stages {:?} again (first at entry {first})",
                    entry.path
                ),
            });
        }
        paths.push(context.resolve(&entry.path)?);
    }

    let extra_packages = match entries.iter().position(|e| e.path == EXTRA_PACKAGES_FILE) {
        Some(at) => context.extra_packages(&paths[at], &first_index)?,
        None => HashSet::new(),
    };

    let mut artifacts = Vec::with_capacity(entries.len());
    for (entry, path) in entries.into_iter().zip(paths) {
        let role = match role_of(&entry.path) {
            Role::RequirementsCache | Role::FileToStage
                if extra_packages.contains(entry.path.as_str()) =>
            {
                Role::ExtraPackage
            }
            role => role,
        };
        artifacts.push(context.artifact(entry, path, role)?);
    }

    if !artifacts.iter().any(|a| is_installed(a.role)) {
        return Err(Error::NothingToInstall {
            what: format!(
                "{} stages no SDK, requirements.txt, extra package or workflow.tar.gz",
                manifest_path.display()
            ),
        });
    }
    Ok(StagedSet::new(artifacts, dir.to_path_buf(), None))
}

/// The manifest of the staging context `dir` (its path, its entries): it
/// must exist, be UTF-8 and list at least one artifact.
fn read_manifest(dir: &Path) -> Result<(PathBuf, Vec<ManifestEntry>)> {
    if !dir.is_dir() {
        return Err(Error::ContextMissing {
            dir: dir.to_path_buf(),
        });
    }
    let manifest_path = dir.join(MANIFEST_FILE);
    let bytes = match fs::read(&manifest_path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::ManifestMissing {
                dir: dir.to_path_buf(),
                manifest: manifest_path,
            })
        }
        Err(e) => return Err(Error::io(&manifest_path, e)),
    };
    let text = String::from_utf8(bytes).map_err(|e| Error::ManifestInvalid {
        path: manifest_path.clone(),
        reason: format!("it is not UTF-8: {e}"),
    })?;
    let entries = manifest::decode(&text, &manifest_path)?;
    if entries.is_empty() {
        return Err(Error::NothingToInstall {
            what: format!("{} lists no artifacts", manifest_path.display()),
        });
    }
    Ok((manifest_path, entries))
}

/// The role the boot gives a staged name (extra packages are known only
/// from `extra_packages.txt`, so they are assigned by the caller).
fn role_of(name: &str) -> Role {
    match name {
        REQUIREMENTS_FILE => Role::Requirements,
        EXTRA_PACKAGES_FILE => Role::ExtraPackagesList,
        WORKFLOW_TARBALL => Role::Workflow,
        SDK_SOURCE_TARBALL => Role::Sdk,
        SUBMISSION_ENV_FILE | PICKLED_MAIN_SESSION => Role::Ignored,
        _ if name.starts_with("apache_beam-") && name.ends_with(".whl") => Role::Sdk,
        _ if CACHE_SUFFIXES.iter().any(|suffix| name.ends_with(suffix)) => Role::RequirementsCache,
        _ => Role::FileToStage,
    }
}

/// Roles the boot's setup-only mode installs something from.
fn is_installed(role: Role) -> bool {
    matches!(
        role,
        Role::Sdk | Role::Requirements | Role::ExtraPackage | Role::Workflow
    )
}

struct Context<'a> {
    dir: &'a Path,
    canonical_dir: &'a Path,
    manifest: &'a Path,
    cache: &'a DigestCache,
    origins: &'a HashMap<String, PathBuf>,
}

impl Context<'_> {
    /// Where a staged name's bytes are, refusing anything outside the context:
    /// the boot resolves names against its workdir, and this tool uploads them.
    fn resolve(&self, name: &str) -> Result<PathBuf> {
        let escapes = || Error::ArtifactEscapes {
            manifest: self.manifest.to_path_buf(),
            name: name.to_string(),
        };
        // `.` is not an escape, but it would let two names stage one file.
        if name.starts_with('/')
            || name.contains('\\')
            || name
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err(escapes());
        }
        let path = self.dir.join(name);
        let missing = || Error::ArtifactMissing {
            manifest: self.manifest.to_path_buf(),
            name: name.to_string(),
            path: path.clone(),
        };
        // A symlink may point anywhere; what counts is where it lands.
        let canonical = path.canonicalize();
        if matches!(&canonical, Ok(c) if !c.starts_with(self.canonical_dir)) {
            return Err(escapes());
        }
        // Beam stages flat names only; its boot and prebuilder's own manifest
        // share the directory, so a subdirectory or the manifest's own name
        // would fail (or be overwritten) inside the container, far from here.
        if name.contains('/') {
            return Err(self.invalid(format!(
                "{name:?} is in a subdirectory; staged names are plain file names in the context directory"
            )));
        }
        if name == MANIFEST_FILE {
            return Err(self.invalid(format!(
                "it lists {MANIFEST_FILE:?}, the manifest itself; that name is reserved for the manifest prebuilder writes"
            )));
        }
        let canonical = canonical.map_err(|_| missing())?;
        match fs::metadata(&canonical) {
            Ok(meta) if meta.is_file() => Ok(path),
            _ => Err(missing()),
        }
    }

    fn invalid(&self, reason: String) -> Error {
        Error::ManifestInvalid {
            path: self.manifest.to_path_buf(),
            reason,
        }
    }

    /// The names `extra_packages.txt` lists, each of which must be staged.
    fn extra_packages(
        &self,
        list: &Path,
        staged: &HashMap<&str, usize>,
    ) -> Result<HashSet<String>> {
        let text = fs::read_to_string(list).map_err(|e| Error::io(list, e))?;
        let mut names = HashSet::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if !staged.contains_key(line) {
                return Err(Error::ArtifactMissing {
                    manifest: self.manifest.to_path_buf(),
                    name: line.to_string(),
                    path: self.dir.join(line),
                });
            }
            names.insert(line.to_string());
        }
        Ok(names)
    }

    /// The digests of a staged file, and the original they were taken
    /// from when they are not the file's own (see [`read_with`]).
    fn digest(&self, name: &str, path: &Path) -> Result<(FileDigest, Option<PathBuf>)> {
        if let Some(original) = self.origins.get(name) {
            let size = fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
            let same_size = fs::metadata(original).is_ok_and(|m| m.is_file() && m.len() == size);
            let staged = Path::new(name);
            let found = if same_size {
                match self.cache.remembered_as(original, staged) {
                    Some(d) => Some(d),
                    // The original can be remembered for the next launch;
                    // its copy cannot. Unreadable: the copy is read instead.
                    None => self.cache.digest_as(original, staged).ok(),
                }
            } else {
                None
            };
            if let Some(d) = found.filter(|d| d.size == size) {
                return Ok((d, Some(original.clone())));
            }
        }
        Ok((self.cache.digest(path)?, None))
    }

    fn artifact(&self, entry: ManifestEntry, path: PathBuf, role: Role) -> Result<Artifact> {
        // The boot skips ignored files, so reading them would only cost time.
        let mut origin = None;
        let digest = if role == Role::Ignored {
            let size = fs::metadata(&path).map_err(|e| Error::io(&path, e))?.len();
            FileDigest {
                size,
                sha256: String::new(),
                content_digest: String::new(),
            }
        } else {
            let (digest, from) = self.digest(&entry.path, &path)?;
            origin = from;
            if !entry.sha256.is_empty() && !entry.sha256.eq_ignore_ascii_case(&digest.sha256) {
                return Err(Error::DigestMismatch {
                    path,
                    expected: entry.sha256,
                    actual: digest.sha256,
                });
            }
            digest
        };
        Ok(Artifact {
            name: entry.path,
            path,
            size: digest.size,
            sha256: digest.sha256,
            content_digest: digest.content_digest,
            role,
            origin,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::manifest::encode;
    use std::os::unix::fs::symlink;

    fn entry(path: &str) -> ManifestEntry {
        ManifestEntry {
            path: path.into(),
            sha256: String::new(),
        }
    }

    /// A context with `files` on disk and a manifest listing `listed`. Files
    /// named like source archives become real archives holding the text, so
    /// they digest; other files hold the text itself.
    fn context(files: &[(&str, &str)], listed: &[ManifestEntry]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            let path = dir.path().join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, archive_or_text(name, content)).unwrap();
        }
        fs::write(dir.path().join(MANIFEST_FILE), encode(listed)).unwrap();
        dir
    }

    fn archive_or_text(name: &str, content: &str) -> Vec<u8> {
        use std::io::Write;
        let tar = || {
            let mut builder = tar::Builder::new(Vec::new());
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            builder
                .append_data(&mut header, "pkg/file", content.as_bytes())
                .unwrap();
            builder.into_inner().unwrap()
        };
        if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&tar()).unwrap();
            gz.finish().unwrap()
        } else if name.ends_with(".tar") {
            tar()
        } else if name.ends_with(".zip") {
            let mut zip = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
            zip.start_file("pkg/file", zip::write::SimpleFileOptions::default())
                .unwrap();
            zip.write_all(content.as_bytes()).unwrap();
            zip.finish().unwrap().into_inner()
        } else {
            content.as_bytes().to_vec()
        }
    }

    /// Files and a manifest listing exactly those files, in order.
    fn simple(files: &[(&str, &str)]) -> tempfile::TempDir {
        let listed: Vec<_> = files.iter().map(|(name, _)| entry(name)).collect();
        context(files, &listed)
    }

    fn sha256_hex(bytes: &[u8]) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(bytes))
    }

    #[test]
    fn beam_context_gets_roles_in_manifest_order() {
        let files = [
            (
                "apache_beam-2.77.0-cp311-cp311-manylinux_2_17_x86_64.whl",
                "sdk",
            ),
            ("requirements.txt", "numpy\n"),
            ("numpy-2.0.0-cp311-cp311-manylinux_2_17_x86_64.whl", "np"),
            ("six-1.16.0.tar.gz", "six"),
            ("legacy-1.0.egg", "egg"),
            (
                "extra_packages.txt",
                "# mine\nmylib-1.0.tar.gz\n\n  other.whl  \n",
            ),
            ("mylib-1.0.tar.gz", "lib"),
            ("other.whl", "other"),
            ("workflow.tar.gz", "wf"),
            ("submission_environment_dependencies.txt", "pip freeze"),
            ("pickled_main_session", "pickle"),
            ("data.csv", "a,b\n"),
        ];
        let listed: Vec<_> = files.iter().map(|(name, _)| entry(name)).collect();
        let dir = context(&files, &listed);
        fs::write(dir.path().join("Dockerfile"), "FROM x\n").unwrap();
        let set = read(dir.path()).unwrap();

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
                ("six-1.16.0.tar.gz", Role::RequirementsCache),
                ("legacy-1.0.egg", Role::RequirementsCache),
                ("extra_packages.txt", Role::ExtraPackagesList),
                ("mylib-1.0.tar.gz", Role::ExtraPackage),
                ("other.whl", Role::ExtraPackage),
                ("workflow.tar.gz", Role::Workflow),
                ("submission_environment_dependencies.txt", Role::Ignored),
                ("pickled_main_session", Role::Ignored),
                ("data.csv", Role::FileToStage),
            ]
        );
        assert_eq!(set.dir, dir.path());
        let reqs = &set.artifacts[1];
        assert_eq!(reqs.path, dir.path().join("requirements.txt"));
        assert_eq!(reqs.size, 6);
        assert_eq!(reqs.sha256, sha256_hex(b"numpy\n"));
        assert_eq!(reqs.content_digest, reqs.sha256);
        let ignored = &set.artifacts[10];
        assert_eq!(
            (ignored.sha256.as_str(), ignored.content_digest.as_str()),
            ("", "")
        );
        assert_eq!(ignored.size, 6);
        assert_eq!(set.with_role(Role::ExtraPackage).count(), 2);
    }

    #[test]
    fn sdk_source_tarball_is_the_sdk() {
        let dir = simple(&[("dataflow_python_sdk.tar", "")]);
        let set = read(dir.path()).unwrap();
        assert_eq!(set.artifacts[0].role, Role::Sdk);
    }

    #[test]
    fn manifest_sha256_is_checked() {
        let good = ManifestEntry {
            path: "requirements.txt".into(),
            sha256: sha256_hex(b"numpy\n").to_uppercase(),
        };
        let dir = context(&[("requirements.txt", "numpy\n")], &[good]);
        assert_eq!(read(dir.path()).unwrap().artifacts.len(), 1);

        let bad = ManifestEntry {
            path: "requirements.txt".into(),
            sha256: "0".repeat(64),
        };
        let dir = context(&[("requirements.txt", "numpy\n")], &[bad]);
        match read(dir.path()).unwrap_err() {
            Error::DigestMismatch {
                path,
                expected,
                actual,
            } => {
                assert_eq!(path, dir.path().join("requirements.txt"));
                assert_eq!(expected, "0".repeat(64));
                assert_eq!(actual, sha256_hex(b"numpy\n"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn missing_or_non_directory_context() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nope");
        assert!(matches!(read(&missing), Err(Error::ContextMissing { dir }) if dir == missing));
        let file = tmp.path().join("file");
        fs::write(&file, "x").unwrap();
        assert!(matches!(read(&file), Err(Error::ContextMissing { .. })));
    }

    #[test]
    fn missing_manifest() {
        let tmp = tempfile::tempdir().unwrap();
        match read(tmp.path()).unwrap_err() {
            Error::ManifestMissing { dir, manifest } => {
                assert_eq!(dir, tmp.path());
                assert_eq!(manifest, tmp.path().join(MANIFEST_FILE));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unreadable_manifest_is_io() {
        let tmp = tempfile::tempdir().unwrap();
        // A directory where the manifest should be cannot be read.
        fs::create_dir(tmp.path().join(MANIFEST_FILE)).unwrap();
        match read(tmp.path()).unwrap_err() {
            Error::Io { path, .. } => assert_eq!(path, tmp.path().join(MANIFEST_FILE)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn invalid_manifests() {
        for text in [&b"{not json"[..], b"{}", b"[1]", b"\xff\xfe"] {
            let tmp = tempfile::tempdir().unwrap();
            fs::write(tmp.path().join(MANIFEST_FILE), text).unwrap();
            match read(tmp.path()).unwrap_err() {
                Error::ManifestInvalid { path, .. } => {
                    assert_eq!(path, tmp.path().join(MANIFEST_FILE))
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn wrong_type_urn() {
        let tmp = tempfile::tempdir().unwrap();
        let info = r#"{"typeUrn": "beam:artifact:type:url:v1", "typePayload": "CgF4"}"#;
        let text = format!("[{}]", serde_json::Value::String(info.into()));
        fs::write(tmp.path().join(MANIFEST_FILE), text).unwrap();
        assert!(matches!(
            read(tmp.path()).unwrap_err(),
            Error::WrongTypeUrn { index: 0, .. }
        ));
    }

    #[test]
    fn names_that_escape() {
        for name in [
            "../x",
            "/etc/passwd",
            "a/../../x",
            "a\\b",
            "a//b",
            "a/",
            "./requirements.txt",
        ] {
            let dir = context(
                &[("requirements.txt", "x")],
                &[entry("requirements.txt"), entry(name)],
            );
            match read(dir.path()).unwrap_err() {
                Error::ArtifactEscapes { name: n, manifest } => {
                    assert_eq!(n, name);
                    assert_eq!(manifest, dir.path().join(MANIFEST_FILE));
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn subdirectories_and_the_manifest_name_are_refused_up_front() {
        for (name, says) in [
            ("sub/data.txt", "subdirectory"),
            (MANIFEST_FILE, "reserved"),
        ] {
            let dir = context(
                &[("requirements.txt", "x"), ("sub/data.txt", "d")],
                &[entry("requirements.txt"), entry(name)],
            );
            match read(dir.path()).unwrap_err() {
                Error::ManifestInvalid { path, reason } => {
                    assert_eq!(path, dir.path().join(MANIFEST_FILE));
                    assert!(reason.contains(name), "{name}: {reason}");
                    assert!(reason.contains(says), "{name}: {reason}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn symlink_out_of_the_context_escapes() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret.txt"), "x").unwrap();
        let dir = simple(&[("requirements.txt", "x")]);
        symlink(
            outside.path().join("secret.txt"),
            dir.path().join("link.txt"),
        )
        .unwrap();
        symlink(outside.path(), dir.path().join("sub")).unwrap();
        for name in ["link.txt", "sub/secret.txt"] {
            fs::write(
                dir.path().join(MANIFEST_FILE),
                encode(&[entry("requirements.txt"), entry(name)]),
            )
            .unwrap();
            assert!(
                matches!(read(dir.path()), Err(Error::ArtifactEscapes { .. })),
                "{name}"
            );
        }
    }

    #[test]
    fn symlink_inside_the_context_is_followed() {
        let dir = simple(&[("real.txt", "numpy\n")]);
        symlink("real.txt", dir.path().join("requirements.txt")).unwrap();
        fs::write(
            dir.path().join(MANIFEST_FILE),
            encode(&[entry("requirements.txt")]),
        )
        .unwrap();
        let set = read(dir.path()).unwrap();
        assert_eq!(set.artifacts[0].sha256, sha256_hex(b"numpy\n"));
    }

    #[test]
    fn missing_artifact_or_not_a_file() {
        let dir = context(
            &[("requirements.txt", "x")],
            &[entry("requirements.txt"), entry("gone.whl")],
        );
        match read(dir.path()).unwrap_err() {
            Error::ArtifactMissing { name, path, .. } => {
                assert_eq!(name, "gone.whl");
                assert_eq!(path, dir.path().join("gone.whl"));
            }
            other => panic!("{other:?}"),
        }
        let dir = context(
            &[("requirements.txt", "x")],
            &[entry("requirements.txt"), entry("sub")],
        );
        fs::create_dir(dir.path().join("sub")).unwrap();
        assert!(matches!(
            read(dir.path()),
            Err(Error::ArtifactMissing { .. })
        ));
        let dir = context(
            &[("requirements.txt", "x")],
            &[entry("requirements.txt"), entry("dangling")],
        );
        symlink("nowhere", dir.path().join("dangling")).unwrap();
        assert!(matches!(
            read(dir.path()),
            Err(Error::ArtifactMissing { .. })
        ));
    }

    #[test]
    fn extra_package_not_staged() {
        let dir = simple(&[
            ("extra_packages.txt", "mylib-1.0.tar.gz\nabsent-1.0.whl\n"),
            ("mylib-1.0.tar.gz", "x"),
        ]);
        match read(dir.path()).unwrap_err() {
            Error::ArtifactMissing { name, .. } => assert_eq!(name, "absent-1.0.whl"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn duplicate_names_are_invalid() {
        let dir = context(
            &[("requirements.txt", "x")],
            &[entry("requirements.txt"), entry("requirements.txt")],
        );
        match read(dir.path()).unwrap_err() {
            Error::ManifestInvalid { reason, .. } => {
                assert!(reason.contains("entry 1"), "{reason}");
                assert!(reason.contains("entry 0"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nothing_to_install() {
        let dir = context(&[], &[]);
        assert!(matches!(
            read(dir.path()),
            Err(Error::NothingToInstall { .. })
        ));
        let dir = simple(&[
            ("numpy-2.0.0-py3-none-any.whl", "x"),
            ("pickled_main_session", "x"),
            ("data.csv", "x"),
            ("extra_packages.txt", "# nothing\n"),
        ]);
        assert!(matches!(
            read(dir.path()),
            Err(Error::NothingToInstall { .. })
        ));
    }

    #[test]
    fn source_archives_get_content_digests() {
        let dir = tempfile::tempdir().unwrap();
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, "wf/setup.py", &b"x"[..])
            .unwrap();
        fs::write(
            dir.path().join(WORKFLOW_TARBALL),
            builder.into_inner().unwrap(),
        )
        .unwrap();
        fs::write(
            dir.path().join(MANIFEST_FILE),
            encode(&[entry(WORKFLOW_TARBALL)]),
        )
        .unwrap();
        let set = read(dir.path()).unwrap();
        let wf = &set.artifacts[0];
        assert_eq!(wf.role, Role::Workflow);
        assert_ne!(wf.content_digest, wf.sha256);
    }

    /// Issue 22, the plugin path: Beam's copies are new files on every
    /// launch; their originals' digests are looked up, remembered, and the
    /// copies marked to be checked when uploaded.
    #[test]
    fn copies_take_their_originals_digests_and_are_marked_for_checking() {
        let originals = tempfile::tempdir().unwrap();
        let sdist = archive_or_text("pkg-1.0.tar.gz", "print(1)\n");
        fs::write(originals.path().join("pkg-1.0.tar.gz"), &sdist).unwrap();
        fs::write(originals.path().join("six.whl"), b"wheel").unwrap();
        fs::write(originals.path().join("short.whl"), b"w").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let files = [
            ("requirements.txt", "six\n"),
            ("six.whl", "wheel"),
            ("other.whl", "wheel"),
            ("gone.whl", "gone!"),
        ];
        let dir = simple(&files);
        fs::write(dir.path().join("pkg-1.0.tar.gz"), &sdist).unwrap();
        fs::write(
            dir.path().join(MANIFEST_FILE),
            encode(&[
                entry("requirements.txt"),
                entry("six.whl"),
                entry("other.whl"),
                entry("gone.whl"),
                entry("pkg-1.0.tar.gz"),
            ]),
        )
        .unwrap();
        let origins = HashMap::from([
            ("six.whl".to_string(), originals.path().join("six.whl")),
            // Another size: not the file it was copied from.
            ("other.whl".to_string(), originals.path().join("short.whl")),
            ("gone.whl".to_string(), originals.path().join("gone.whl")),
            (
                "pkg-1.0.tar.gz".to_string(),
                originals.path().join("pkg-1.0.tar.gz"),
            ),
        ]);
        let state = tempfile::tempdir().unwrap();
        let open = || {
            DigestCache::open(state.path().join("d"))
                .with_granularity(std::time::Duration::from_millis(10))
        };
        let cache = open();
        let plain = read(dir.path()).unwrap();
        let set = read_with(dir.path(), &cache, &origins).unwrap();
        cache.save().unwrap();
        for (with, without) in set.artifacts.iter().zip(&plain.artifacts) {
            assert_eq!(
                (&with.sha256, &with.content_digest, with.size),
                (&without.sha256, &without.content_digest, without.size),
                "{}",
                with.name
            );
            assert_eq!(with.path, without.path, "the copy's bytes are uploaded");
        }
        let origin = |name: &str| {
            set.artifacts
                .iter()
                .find(|a| a.name == name)
                .unwrap()
                .origin
                .clone()
        };
        assert_eq!(origin("six.whl"), Some(originals.path().join("six.whl")));
        assert_eq!(
            origin("pkg-1.0.tar.gz"),
            Some(originals.path().join("pkg-1.0.tar.gz"))
        );
        assert_ne!(
            set.artifacts[4].content_digest, set.artifacts[4].sha256,
            "digested as the staged name says"
        );
        assert_eq!(origin("other.whl"), None);
        assert_eq!(origin("gone.whl"), None);
        assert_eq!(origin("requirements.txt"), None);

        // The next launch: new copies (new inodes), the originals remembered.
        let relaunch = simple(&files);
        fs::write(relaunch.path().join("pkg-1.0.tar.gz"), &sdist).unwrap();
        fs::copy(
            dir.path().join(MANIFEST_FILE),
            relaunch.path().join(MANIFEST_FILE),
        )
        .unwrap();
        let cache = open();
        let again = read_with(relaunch.path(), &cache, &origins).unwrap();
        assert_eq!(cache.stats().remembered, 2);
        assert_eq!(cache.stats().read, 3, "the copies without an original");
        for (a, b) in again.artifacts.iter().zip(&set.artifacts) {
            assert_eq!(a.content_digest, b.content_digest);
        }
    }

    #[test]
    fn corrupt_archive_in_context() {
        let dir = simple(&[("requirements.txt", "x")]);
        fs::write(dir.path().join("six-1.16.0.tar.gz"), b"\x1f\x8bgarbage").unwrap();
        fs::write(
            dir.path().join(MANIFEST_FILE),
            encode(&[entry("requirements.txt"), entry("six-1.16.0.tar.gz")]),
        )
        .unwrap();
        assert!(matches!(read(dir.path()), Err(Error::Archive { .. })));
    }

    #[test]
    fn role_names() {
        assert_eq!(role_of("apache_beam-2.77.0.whl"), Role::Sdk);
        assert_eq!(
            role_of("apache_beam-2.77.0.tar.gz"),
            Role::RequirementsCache
        );
        assert_eq!(role_of("pkg.tar.bz2"), Role::RequirementsCache);
        assert_eq!(role_of("pkg.tgz"), Role::RequirementsCache);
        assert_eq!(role_of("pkg.zip"), Role::RequirementsCache);
        assert_eq!(role_of("pkg.tar"), Role::RequirementsCache);
        assert_eq!(role_of("Dockerfile"), Role::FileToStage);
        assert_eq!(role_of("notes.txt"), Role::FileToStage);
    }
}
