//! Deterministic packing of a project directory into `workflow.tar.gz`.
//!
//! Beam builds the pipeline's source package with `setup.py sdist`, which
//! stamps new times into new bytes on every launch. Packing the tree ourselves,
//! with every piece of metadata fixed, gives the same bytes for the same files,
//! so the workflow layer is reused until the code itself changes. The result is
//! a source tree pip can install: one top-level directory holding `setup.py`
//! or `pyproject.toml`.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use flate2::{Compression, GzBuilder};

use crate::error::{Error, Result};

/// Every entry lives under this directory, as in an sdist.
const TOP_DIR: &str = "workflow";

/// 2000-01-01T00:00:00Z. Not 0: setuptools builds a wheel from this tree and
/// zip cannot store times before 1980.
const MTIME: u64 = 946_684_800;

const BUFFER_SIZE: usize = 1 << 20;

/// Names skipped anywhere in the tree: VCS data, caches, build debris and
/// virtualenvs, none of which pip needs and all of which change without the
/// code changing.
const SKIP_NAMES: &[&str] = &[
    ".git",
    ".hg",
    ".svn",
    "__pycache__",
    ".tox",
    ".nox",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".eggs",
    ".venv",
    "node_modules",
];
const SKIP_SUFFIXES: &[&str] = &[".pyc", ".pyo", ".egg-info"];
/// Skipped only directly under the project: setuptools' output directories.
/// Deeper, `build` or `dist` may well be a package.
const SKIP_TOP_NAMES: &[&str] = &["build", "dist"];

/// What goes into the archive for one path under the project.
enum Kind {
    Dir,
    File { size: u64, executable: bool },
    Symlink(PathBuf),
}

struct Entry {
    /// Relative to the project directory, `/`-separated.
    relative: PathBuf,
    kind: Kind,
}

/// Pack `project_dir` into a gzip'd tar at `out`. The same files give the same
/// bytes, whatever their times, owners, directory order or location.
pub fn pack_project(project_dir: &Path, out: &Path) -> Result<()> {
    let output = File::create(out).map_err(|e| Error::io(out, e))?;
    // `out` may sit inside the project (a previous pack); never pack it into itself.
    let out_meta = output.metadata().map_err(|e| Error::io(out, e))?;
    let out_id = (out_meta.dev(), out_meta.ino());

    let mut entries = Vec::new();
    collect(project_dir, Path::new(""), out_id, &mut entries)?;
    // Byte order of the full path, as the tar lists them.
    entries.sort_by(|a, b| {
        a.relative
            .as_os_str()
            .as_bytes()
            .cmp(b.relative.as_os_str().as_bytes())
    });

    let gzip = GzBuilder::new().mtime(0).write(
        BufWriter::with_capacity(BUFFER_SIZE, output),
        Compression::default(),
    );
    let mut tar = tar::Builder::new(gzip);
    let write_err = |e: io::Error| Error::io(out, e);

    let mut top = header(tar::EntryType::Directory, 0o755, 0);
    tar.append_data(&mut top, format!("{TOP_DIR}/"), io::empty())
        .map_err(write_err)?;
    for entry in &entries {
        let source = project_dir.join(&entry.relative);
        let name = Path::new(TOP_DIR).join(&entry.relative);
        match &entry.kind {
            Kind::Dir => {
                let mut h = header(tar::EntryType::Directory, 0o755, 0);
                tar.append_data(&mut h, &name, io::empty())
                    .map_err(write_err)?;
            }
            Kind::Symlink(target) => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                tar.append_link(&mut h, &name, target).map_err(write_err)?;
            }
            Kind::File { size, executable } => {
                let mode = if *executable { 0o755 } else { 0o644 };
                let mut h = header(tar::EntryType::Regular, mode, *size);
                let file = File::open(&source).map_err(|e| Error::io(&source, e))?;
                let mut reader = ExactReader {
                    inner: file.take(*size),
                    remaining: *size,
                    failed: None,
                };
                let appended = tar.append_data(&mut h, &name, &mut reader);
                // Tell a read error in the project from a write error in `out`.
                if let Some(error) = reader.failed.take() {
                    return Err(Error::io(&source, error));
                }
                appended.map_err(write_err)?;
            }
        }
    }

    let gzip = tar.into_inner().map_err(write_err)?;
    let mut buffered = gzip.finish().map_err(write_err)?;
    buffered.flush().map_err(write_err)?;
    buffered
        .into_inner()
        .map_err(|e| Error::io(out, e.into_error()))?
        .sync_all()
        .map_err(write_err)?;
    Ok(())
}

fn header(entry_type: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    // GNU headers carry long names in extra entries; user and group names stay empty.
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(entry_type);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(MTIME);
    header.set_uid(0);
    header.set_gid(0);
    header
}

fn is_skipped(name: &OsStr, top_level: bool) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    SKIP_NAMES.contains(&name)
        || SKIP_SUFFIXES.iter().any(|suffix| name.ends_with(suffix))
        || (top_level && SKIP_TOP_NAMES.contains(&name))
}

/// Walk `root/relative` without following symlinks, appending what to pack.
fn collect(
    root: &Path,
    relative: &Path,
    out_id: (u64, u64),
    entries: &mut Vec<Entry>,
) -> Result<()> {
    let dir = if relative.as_os_str().is_empty() {
        root.to_path_buf()
    } else {
        root.join(relative)
    };
    let read_dir = fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
    let mut names: Vec<OsString> = Vec::new();
    for item in read_dir {
        let item = item.map_err(|e| Error::io(&dir, e))?;
        names.push(item.file_name());
    }
    let top_level = relative.as_os_str().is_empty();
    for name in names {
        if is_skipped(&name, top_level) {
            continue;
        }
        let child = relative.join(&name);
        let path = root.join(&child);
        let meta = fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
        if (meta.dev(), meta.ino()) == out_id {
            continue;
        }
        let file_type = meta.file_type();
        if file_type.is_dir() {
            // A virtualenv under any name: it is an install, not source.
            if path.join("pyvenv.cfg").exists() {
                continue;
            }
            entries.push(Entry {
                relative: child.clone(),
                kind: Kind::Dir,
            });
            collect(root, &child, out_id, entries)?;
        } else if file_type.is_file() {
            entries.push(Entry {
                relative: child,
                kind: Kind::File {
                    size: meta.len(),
                    executable: meta.mode() & 0o111 != 0,
                },
            });
        } else if file_type.is_symlink() {
            let target = fs::read_link(&path).map_err(|e| Error::io(&path, e))?;
            entries.push(Entry {
                relative: child,
                kind: Kind::Symlink(target),
            });
        }
        // Sockets, FIFOs and devices are not source: skipped.
    }
    Ok(())
}

/// Yields exactly the size written in the header: a file that shrinks while
/// being packed would otherwise produce a corrupt tar, so it is an error.
struct ExactReader<R> {
    inner: R,
    remaining: u64,
    failed: Option<io::Error>,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let result = match self.inner.read(buf) {
            Ok(0) if self.remaining > 0 && !buf.is_empty() => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "file shrank while being packed ({} bytes missing)",
                    self.remaining
                ),
            )),
            other => other,
        };
        match result {
            Ok(n) => {
                self.remaining -= n as u64;
                Ok(n)
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.failed = Some(io::Error::new(e.kind(), e.to_string()));
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::process::Command;

    fn write(root: &Path, relative: &str, content: &str) {
        let path = root.join(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    fn chmod(root: &Path, relative: &str, mode: u32) {
        fs::set_permissions(root.join(relative), fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A project with a bit of everything the packer must handle.
    fn project(root: &Path) {
        write(
            root,
            "setup.py",
            "from setuptools import setup\nsetup(name='p')\n",
        );
        write(root, "pkg/__init__.py", "");
        write(root, "pkg/core.py", "def f():\n    return 1\n");
        write(
            root,
            "pkg/build/keep.py",
            "# build/ below the top is a package\n",
        );
        write(root, "scripts/run.sh", "#!/bin/sh\necho run\n");
        chmod(root, "scripts/run.sh", 0o700);
        write(root, "pkg/odd_mode.py", "x = 1\n");
        chmod(root, "pkg/odd_mode.py", 0o600);
        write(
            root,
            &format!("pkg/{}/deep.py", "long_directory_name".repeat(8)),
            "y = 2\n",
        );
        symlink("pkg/core.py", root.join("core_link.py")).unwrap();
        symlink("/nonexistent/target", root.join("dangling")).unwrap();
        // Everything below must stay out.
        write(root, ".git/HEAD", "ref: refs/heads/main\n");
        write(root, "pkg/__pycache__/core.cpython-311.pyc", "junk");
        write(root, "pkg/stale.pyc", "junk");
        write(root, "pkg/stale.pyo", "junk");
        write(root, "p.egg-info/PKG-INFO", "junk");
        write(root, "build/lib/pkg/core.py", "junk");
        write(root, "dist/p-1.0.tar.gz", "junk");
        write(root, ".tox/py311/x", "junk");
        write(root, ".venv/bin/python", "junk");
        write(root, "myenv/pyvenv.cfg", "home = /usr/bin\n");
        write(root, "myenv/lib/site.py", "junk");
        write(root, "web/node_modules/x/index.js", "junk");
        write(root, "sub/.mypy_cache/x", "junk");
    }

    fn pack(dir: &Path, out: &Path) -> Vec<u8> {
        pack_project(dir, out).unwrap();
        fs::read(out).unwrap()
    }

    struct Listed {
        kind: tar::EntryType,
        mode: u32,
        mtime: u64,
        uid: u64,
        gid: u64,
        user: Vec<u8>,
        link: Option<PathBuf>,
        content: Vec<u8>,
    }

    /// Entries in archive order, as (path, details).
    fn list(bytes: &[u8]) -> Vec<(String, Listed)> {
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
        let mut out = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
            let header = entry.header().clone();
            let link = entry.link_name().unwrap().map(|l| l.into_owned());
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            out.push((
                path,
                Listed {
                    kind: header.entry_type(),
                    mode: header.mode().unwrap(),
                    mtime: header.mtime().unwrap(),
                    uid: header.uid().unwrap(),
                    gid: header.gid().unwrap(),
                    user: header.username_bytes().unwrap_or_default().to_vec(),
                    link,
                    content,
                },
            ));
        }
        out
    }

    #[test]
    fn layout_modes_and_skips() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("project");
        project(&root);
        let bytes = pack(&root, &tmp.path().join("workflow.tar.gz"));
        let entries = list(&bytes);
        let by_path: BTreeMap<_, _> = entries.iter().map(|(p, l)| (p.as_str(), l)).collect();

        let paths: Vec<&str> = entries.iter().map(|(p, _)| p.as_str()).collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted, "entries are sorted");
        assert!(
            paths.iter().all(|p| p.starts_with("workflow/")),
            "{paths:?}"
        );
        assert_eq!(paths[0].trim_end_matches('/'), "workflow");

        for present in [
            "workflow/setup.py",
            "workflow/pkg",
            "workflow/pkg/__init__.py",
            "workflow/pkg/core.py",
            "workflow/pkg/build/keep.py",
            "workflow/scripts/run.sh",
            "workflow/core_link.py",
            "workflow/dangling",
        ] {
            assert!(
                by_path.contains_key(present)
                    || by_path.contains_key(format!("{present}/").as_str()),
                "{present} missing from {paths:?}"
            );
        }
        for absent in [
            ".git",
            "__pycache__",
            ".pyc",
            ".pyo",
            "egg-info",
            "workflow/build",
            "workflow/dist",
            ".tox",
            ".venv",
            "myenv",
            "node_modules",
            ".mypy_cache",
        ] {
            assert!(
                !paths.iter().any(|p| p.contains(absent)),
                "{absent} should be skipped: {paths:?}"
            );
        }

        for (path, entry) in &entries {
            assert_eq!(entry.mtime, MTIME, "{path}");
            assert_eq!((entry.uid, entry.gid), (0, 0), "{path}");
            assert!(entry.user.is_empty(), "{path}");
            match entry.kind {
                tar::EntryType::Directory => assert_eq!(entry.mode, 0o755, "{path}"),
                tar::EntryType::Symlink => {}
                tar::EntryType::Regular => {
                    let expected = if path.ends_with("run.sh") {
                        0o755
                    } else {
                        0o644
                    };
                    assert_eq!(entry.mode, expected, "{path}");
                }
                other => panic!("{path}: unexpected {other:?}"),
            }
        }

        let link = by_path["workflow/core_link.py"];
        assert_eq!(link.kind, tar::EntryType::Symlink);
        assert_eq!(link.link.as_deref(), Some(Path::new("pkg/core.py")));
        assert!(link.content.is_empty());
        let dangling = by_path["workflow/dangling"];
        assert_eq!(
            dangling.link.as_deref(),
            Some(Path::new("/nonexistent/target"))
        );
        assert_eq!(
            by_path["workflow/pkg/core.py"].content,
            b"def f():\n    return 1\n"
        );
        let long = format!("workflow/pkg/{}/deep.py", "long_directory_name".repeat(8));
        assert_eq!(by_path[long.as_str()].content, b"y = 2\n");
    }

    #[test]
    fn gzip_header_is_fixed() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "p/setup.py", "x");
        let bytes = pack(&tmp.path().join("p"), &tmp.path().join("out.tar.gz"));
        assert_eq!(&bytes[..3], &[0x1f, 0x8b, 8]);
        assert_eq!(bytes[3] & 0x08, 0, "no file name");
        assert_eq!(&bytes[4..8], &[0, 0, 0, 0], "mtime 0");
    }

    #[test]
    fn deterministic_twice_after_touch_and_elsewhere() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("a/project");
        project(&root);
        let first = pack(&root, &tmp.path().join("1.tar.gz"));
        let second = pack(&root, &tmp.path().join("2.tar.gz"));
        assert_eq!(first, second);

        // New mtimes on every file and directory.
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for item in fs::read_dir(&dir).unwrap() {
                let item = item.unwrap();
                if item.file_type().unwrap().is_dir() {
                    stack.push(item.path());
                } else if item.file_type().unwrap().is_file() {
                    File::options()
                        .write(true)
                        .open(item.path())
                        .unwrap()
                        .set_modified(later)
                        .unwrap();
                }
            }
        }
        assert_eq!(first, pack(&root, &tmp.path().join("3.tar.gz")));

        // A copy elsewhere, created in reverse order so directory order differs.
        let copy = tmp.path().join("b/elsewhere/other-name");
        copy_tree(&root, &copy);
        assert_eq!(first, pack(&copy, &tmp.path().join("4.tar.gz")));

        // And a real change is seen.
        write(&copy, "pkg/core.py", "def f():\n    return 2\n");
        assert_ne!(first, pack(&copy, &tmp.path().join("5.tar.gz")));
    }

    fn copy_tree(from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        let mut items: Vec<_> = fs::read_dir(from).unwrap().map(|i| i.unwrap()).collect();
        items.sort_by_key(|i| std::cmp::Reverse(i.file_name()));
        for item in items {
            let target = to.join(item.file_name());
            let file_type = item.file_type().unwrap();
            if file_type.is_symlink() {
                symlink(fs::read_link(item.path()).unwrap(), &target).unwrap();
            } else if file_type.is_dir() {
                copy_tree(&item.path(), &target);
            } else {
                fs::copy(item.path(), &target).unwrap();
            }
        }
    }

    #[test]
    fn mode_change_changes_output() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("p");
        write(&root, "setup.py", "x");
        write(&root, "tool.py", "y");
        let before = pack(&root, &tmp.path().join("1.tar.gz"));
        chmod(&root, "tool.py", 0o755);
        let after = pack(&root, &tmp.path().join("2.tar.gz"));
        assert_ne!(before, after);
        // Only the exec bit matters, not the rest of the mode.
        chmod(&root, "tool.py", 0o711);
        assert_eq!(after, pack(&root, &tmp.path().join("3.tar.gz")));
    }

    #[test]
    fn output_inside_the_project_is_not_packed_into_itself() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("p");
        write(&root, "setup.py", "x");
        let out = root.join("workflow.tar.gz");
        let first = pack(&root, &out);
        let second = pack(&root, &out);
        assert_eq!(first, second);
        assert!(!list(&second)
            .iter()
            .any(|(p, _)| p.contains("workflow.tar.gz")));
    }

    #[test]
    fn missing_project_is_an_io_error() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nope");
        match pack_project(&missing, &tmp.path().join("out.tar.gz")) {
            Err(Error::Io { path, .. }) => assert_eq!(path, missing),
            other => panic!("{other:?}"),
        }
        match pack_project(tmp.path(), &missing.join("out.tar.gz")) {
            Err(Error::Io { path, .. }) => assert_eq!(path, missing.join("out.tar.gz")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn python_tarfile_reads_it() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("project");
        project(&root);
        let out = tmp.path().join("workflow.tar.gz");
        pack_project(&root, &out).unwrap();
        let script = "import sys, tarfile\n\
                      with tarfile.open(sys.argv[1]) as t:\n    \
                      names = t.getnames()\n    \
                      assert 'workflow/setup.py' in names, names\n    \
                      assert t.extractfile('workflow/pkg/core.py').read() == b'def f():\\n    return 1\\n'\n    \
                      assert t.getmember('workflow/core_link.py').issym()\n    \
                      print(len(names))\n";
        let output = match Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&out)
            .output()
        {
            Ok(output) => output,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                eprintln!("python3 not found; skipping");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        assert!(
            output.status.success(),
            "python3 failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let count: usize = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap();
        assert_eq!(count, list(&fs::read(&out).unwrap()).len());
    }
}
