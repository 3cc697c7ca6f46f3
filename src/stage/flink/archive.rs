//! Checks on a `--py-archives` archive before anything is built: it is
//! extracted as root inside the image, so no entry may land outside its
//! directory.
//!
//! Refused: absolute entry paths and `..` components; a relative symlink whose
//! target leaves the archive; a hard link to anything but another entry; any
//! entry whose path goes through a symlink of the archive (a link to `/etc`
//! followed by `link/passwd`). Absolute symlink targets are allowed, because
//! that is how a virtualenv names its interpreter (`bin/python ->
//! /usr/bin/python3.11`), and nothing of the archive is written through them.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component, Path};

/// What an archive holds: every entry path, relative and normalised
/// (`venv/bin/python`), directories included.
#[derive(Debug, Default)]
pub struct Listing {
    pub entries: BTreeSet<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
}

struct Entry {
    path: String,
    kind: Kind,
    /// Link target, as written in the archive.
    target: Option<String>,
}

/// List and check an archive (zip, tar, tar.gz by content). The error is the
/// reason, for the caller to put next to the input that named the archive.
pub fn check(path: &Path) -> Result<Listing, String> {
    let entries = read_entries(path)?;
    let mut listing = Listing::default();
    let mut links = BTreeSet::new();
    let mut checked = Vec::new();
    for e in entries {
        let Some(rel) = normalise(&e.path)? else {
            continue;
        };
        match e.kind {
            Kind::Symlink => {
                let target = e.target.unwrap_or_default();
                if !target.starts_with('/') && escapes(&rel, &target) {
                    return Err(format!(
                        "the symlink {rel} -> {target} points outside the archive's directory"
                    ));
                }
                links.insert(rel.clone());
            }
            Kind::Hardlink => {
                let target = e.target.unwrap_or_default();
                match normalise(&target) {
                    Ok(Some(_)) => {}
                    _ => {
                        return Err(format!(
                            "the hard link {rel} -> {target} points outside the archive's directory"
                        ))
                    }
                }
            }
            Kind::File | Kind::Dir => {}
        }
        checked.push(rel.clone());
        listing.entries.insert(rel);
    }
    for rel in &checked {
        let mut prefix = String::new();
        let parts: Vec<&str> = rel.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if links.contains(&prefix) {
                return Err(format!(
                    "the entry {rel} would be written through the symlink {prefix}"
                ));
            }
        }
    }
    Ok(listing)
}

/// `./a/b/` → `a/b`; `None` for the root itself; an error for absolute paths
/// and `..`.
fn normalise(name: &str) -> Result<Option<String>, String> {
    if name.starts_with('/') {
        return Err(format!("the entry {name:?} has an absolute path"));
    }
    let mut parts = Vec::new();
    for c in Path::new(name).components() {
        match c {
            Component::Normal(p) => parts.push(
                p.to_str()
                    .ok_or_else(|| format!("the entry {name:?} is not valid UTF-8"))?,
            ),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!(
                    "the entry {name:?} escapes the archive's directory (..)"
                ))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("the entry {name:?} has an absolute path"))
            }
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

/// Whether a relative symlink at `link` (normalised) resolves above the root.
fn escapes(link: &str, target: &str) -> bool {
    let mut depth: Vec<&str> = link.split('/').collect();
    depth.pop();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if depth.pop().is_none() {
                    return true;
                }
            }
            other => depth.push(other),
        }
    }
    false
}

fn read_entries(path: &Path) -> Result<Vec<Entry>, String> {
    let mut magic = [0u8; 4];
    let n = File::open(path)
        .and_then(|mut f| f.read(&mut magic))
        .map_err(|e| e.to_string())?;
    match &magic[..n.min(4)] {
        [b'P', b'K', 3, 4] | [b'P', b'K', 5, 6] => zip_entries(path),
        [0x1f, 0x8b, ..] => {
            let file = File::open(path).map_err(|e| e.to_string())?;
            tar_entries(flate2::read::GzDecoder::new(BufReader::new(file)))
        }
        _ if is_tar(path) => {
            tar_entries(BufReader::new(File::open(path).map_err(|e| e.to_string())?))
        }
        _ => Err("not a zip, tar or tar.gz archive".into()),
    }
}

/// A tar has `ustar` at offset 257.
fn is_tar(path: &Path) -> bool {
    let mut block = [0u8; 263];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut block))
        .is_ok()
        && &block[257..262] == b"ustar"
}

fn zip_entries(path: &Path) -> Result<Vec<Entry>, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(zip.len());
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).map_err(|e| e.to_string())?;
        let name = f.name().to_string();
        let (kind, target) = if f.is_symlink() {
            let mut t = String::new();
            f.read_to_string(&mut t)
                .map_err(|e| format!("reading the symlink {name}: {e}"))?;
            (Kind::Symlink, Some(t))
        } else if f.is_dir() {
            (Kind::Dir, None)
        } else {
            (Kind::File, None)
        };
        out.push(Entry {
            path: name,
            kind,
            target,
        });
    }
    Ok(out)
}

fn tar_entries(reader: impl Read) -> Result<Vec<Entry>, String> {
    let mut archive = tar::Archive::new(reader);
    let mut out = Vec::new();
    for e in archive.entries().map_err(|e| e.to_string())? {
        let e = e.map_err(|e| e.to_string())?;
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let target = e
            .link_name_bytes()
            .map(|t| String::from_utf8_lossy(&t).into_owned());
        let kind = match e.header().entry_type() {
            tar::EntryType::Symlink => Kind::Symlink,
            tar::EntryType::Link => Kind::Hardlink,
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
            // PAX/GNU headers are consumed by the reader; devices, fifos and
            // the like have no place in a Python archive.
            other => {
                return Err(format!(
                    "the entry {name} is a {other:?}, not a file, directory or link"
                ))
            }
        };
        out.push(Entry {
            path: name,
            kind,
            target,
        });
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// A zip from (name, content or symlink target, is_symlink).
    pub(crate) fn zip_file(path: &Path, entries: &[(&str, &str, bool)]) {
        let mut w = zip::ZipWriter::new(File::create(path).unwrap());
        for (name, content, link) in entries {
            if *link {
                w.add_symlink(*name, *content, zip::write::SimpleFileOptions::default())
                    .unwrap();
            } else if name.ends_with('/') {
                w.add_directory(*name, zip::write::SimpleFileOptions::default())
                    .unwrap();
            } else {
                w.start_file(*name, zip::write::SimpleFileOptions::default())
                    .unwrap();
                w.write_all(content.as_bytes()).unwrap();
            }
        }
        w.finish().unwrap();
    }

    fn tar_gz(path: &Path, entries: &[(&str, tar::EntryType, &str)]) {
        let gz = flate2::write::GzEncoder::new(File::create(path).unwrap(), Default::default());
        let mut b = tar::Builder::new(gz);
        for (name, kind, target) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_size(0);
            // set_path refuses `..`; write the raw name like a hostile tool would.
            let raw = &mut h.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            if !target.is_empty() {
                h.set_link_name(target).unwrap();
            }
            h.set_cksum();
            b.append(&h, std::io::empty()).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
    }

    #[test]
    fn a_venv_like_zip_passes_with_its_entries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("venv.zip");
        zip_file(
            &p,
            &[
                ("bin/", "", false),
                ("bin/python", "/usr/bin/python3", true),
                ("bin/python3", "python", true),
                ("pyvenv.cfg", "home = /usr/bin\n", false),
                ("data/words.txt", "hello", false),
            ],
        );
        let l = check(&p).unwrap();
        for e in [
            "bin",
            "bin/python",
            "bin/python3",
            "pyvenv.cfg",
            "data/words.txt",
        ] {
            assert!(l.entries.contains(e), "{e} in {:?}", l.entries);
        }
    }

    #[test]
    fn escaping_entries_and_links_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.zip");
        zip_file(&p, &[("../evil.py", "x", false)]);
        assert!(check(&p).unwrap_err().contains("escapes"), "dotdot");
        zip_file(&p, &[("/etc/evil", "x", false)]);
        assert!(check(&p).unwrap_err().contains("absolute"), "absolute");
        zip_file(&p, &[("a/link", "../../etc", true)]);
        let e = check(&p).unwrap_err();
        assert!(e.contains("a/link -> ../../etc"), "{e}");
        zip_file(&p, &[("etc", "/etc", true), ("etc/passwd", "x", false)]);
        let e = check(&p).unwrap_err();
        assert!(e.contains("through the symlink etc"), "{e}");
        // Inside the directory: fine.
        zip_file(&p, &[("a/b/link", "../c", true), ("c", "x", false)]);
        assert!(check(&p).is_ok());
    }

    #[test]
    fn tar_gz_checks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.tgz");
        tar_gz(&p, &[("ok/file", tar::EntryType::Regular, "")]);
        assert!(check(&p).unwrap().entries.contains("ok/file"));
        tar_gz(&p, &[("../../x", tar::EntryType::Regular, "")]);
        assert!(check(&p).unwrap_err().contains("escapes"));
        tar_gz(&p, &[("h", tar::EntryType::Link, "../outside")]);
        assert!(check(&p).unwrap_err().contains("hard link"));
        std::fs::write(&p, "just text").unwrap();
        assert!(check(&p).unwrap_err().contains("not a zip"));
    }
}
