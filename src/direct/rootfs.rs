//! The base image's file system as its layers make it, without unpacking
//! it: layer tars applied in order (OCI whiteouts and opaque directories
//! honoured) into a tree of paths, kinds, modes and link targets, keeping the
//! content of only the few small files the index reads (sysconfig, site,
//! distribution metadata, pip's own sources) and, for the large binaries
//! whose versions matter (the interpreter, libc), only the version strings
//! found in them while they stream past.
//!
//! Why: indexing the base must work where no container can run (no engine,
//! another architecture) and must not hold the base's gigabytes in memory or
//! on disk.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, BufRead, BufReader, Read};

/// What a path is in the merged file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    /// A symbolic link and its target as written.
    Symlink(String),
    /// Anything else (devices, fifos): present, never read.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    pub mode: u32,
    pub size: u64,
    pub uid: u64,
    pub gid: u64,
}

/// What [`RootFs::apply_layer`] keeps of a regular file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    /// Only that it exists.
    No,
    /// The whole content (small text files).
    Content,
    /// The version strings in a binary (see [`scan_versions`]).
    Versions,
}

/// The merged tree. Paths are absolute (`/usr/lib/...`), without a trailing slash.
#[derive(Debug, Default)]
pub struct RootFs {
    nodes: BTreeMap<String, Node>,
    contents: HashMap<String, Vec<u8>>,
    versions: HashMap<String, Vec<String>>,
}

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";
/// Files larger than this are never captured whole, whatever the rule says.
const MAX_CAPTURE: u64 = 8 << 20;

/// `./usr/lib/` → `/usr/lib`; `.` → `/`.
pub fn absolute(path: &str) -> String {
    let p = path.trim_start_matches("./").trim_matches('/');
    if p.is_empty() || p == "." {
        "/".to_string()
    } else {
        format!("/{p}")
    }
}

fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

impl RootFs {
    pub fn new() -> RootFs {
        let mut fs = RootFs::default();
        fs.nodes.insert(
            "/".into(),
            Node {
                kind: Kind::Dir,
                mode: 0o755,
                size: 0,
                uid: 0,
                gid: 0,
            },
        );
        fs
    }

    /// Remove `path` and everything under it, except paths this layer made.
    fn remove_tree(&mut self, path: &str, keep: &BTreeSet<String>) {
        let prefix = format!("{}/", path.trim_end_matches('/'));
        let under: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .filter(|k| !keep.contains(k))
            .collect();
        for k in under {
            self.nodes.remove(&k);
            self.contents.remove(&k);
            self.versions.remove(&k);
        }
        if path != "/" && !keep.contains(path) {
            self.nodes.remove(path);
            self.contents.remove(path);
            self.versions.remove(path);
        }
    }

    /// Apply one uncompressed layer tar; `capture` says what to keep of each
    /// regular file (by absolute path).
    pub fn apply_layer<R: Read>(
        &mut self,
        layer: R,
        capture: &dyn Fn(&str) -> Capture,
    ) -> io::Result<()> {
        let mut archive = tar::Archive::new(layer);
        // Paths this layer wrote: an opaque directory hides only lower layers.
        let mut this_layer: BTreeSet<String> = BTreeSet::new();
        let mut opaque: Vec<String> = Vec::new();
        let mut hard_links: Vec<(String, String)> = Vec::new();
        for entry in archive.entries()? {
            let mut entry = entry?;
            let raw = entry.path()?.to_string_lossy().into_owned();
            let path = absolute(&raw);
            let name = path.rsplit('/').next().unwrap_or("");
            if name == OPAQUE {
                opaque.push(parent(&path).to_string());
                continue;
            }
            if let Some(hidden) = name.strip_prefix(WHITEOUT) {
                let target = join(parent(&path), hidden);
                self.remove_tree(&target, &this_layer);
                continue;
            }
            if entry.header().entry_type() == tar::EntryType::Link {
                let target = entry
                    .link_name()?
                    .map(|t| absolute(&t.to_string_lossy()))
                    .unwrap_or_default();
                hard_links.push((path, target));
                continue;
            }
            self.add_entry(&mut entry, &path, capture, &this_layer)?;
            this_layer.insert(path);
        }
        for dir in opaque {
            self.hide_lower(&dir, &this_layer);
        }
        // Hard links share their target's node (and what was captured of it).
        for (path, target) in hard_links {
            self.link(&path, &target);
        }
        Ok(())
    }

    /// One entry of a layer (not a whiteout, not a hard link) over what is
    /// below: a non-directory over a lower directory hides all of it.
    fn add_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &str,
        capture: &dyn Fn(&str) -> Capture,
        this_layer: &BTreeSet<String>,
    ) -> io::Result<()> {
        let header = entry.header();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let (size, uid, gid) = (
            header.size().unwrap_or(0),
            header.uid().unwrap_or(0),
            header.gid().unwrap_or(0),
        );
        let kind = match header.entry_type() {
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Symlink => Kind::Symlink(
                entry
                    .link_name()?
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
            t if t.is_file() => Kind::File,
            _ => Kind::Other,
        };
        if kind != Kind::Dir && self.nodes.get(path).is_some_and(|o| o.kind == Kind::Dir) {
            self.remove_tree(path, this_layer);
        }
        self.contents.remove(path);
        self.versions.remove(path);
        if kind == Kind::File {
            match capture(path) {
                Capture::Content if size <= MAX_CAPTURE => {
                    let mut buf = Vec::with_capacity(size as usize);
                    entry.read_to_end(&mut buf)?;
                    self.contents.insert(path.to_string(), buf);
                }
                Capture::Versions => {
                    let found = scan_versions(entry)?;
                    self.versions.insert(path.to_string(), found);
                }
                _ => {}
            }
        }
        let node = Node {
            kind,
            mode,
            size,
            uid,
            gid,
        };
        self.nodes.insert(path.to_string(), node);
        Ok(())
    }

    /// An opaque directory: what lower layers had under `dir` is hidden.
    fn hide_lower(&mut self, dir: &str, this_layer: &BTreeSet<String>) {
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        let under: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .filter(|k| !this_layer.contains(k))
            .collect();
        for k in under {
            self.nodes.remove(&k);
            self.contents.remove(&k);
            self.versions.remove(&k);
        }
    }

    /// A hard link: the target's node and what was captured of it.
    fn link(&mut self, path: &str, target: &str) {
        if let Some(node) = self.nodes.get(target).cloned() {
            if let Some(c) = self.contents.get(target).cloned() {
                self.contents.insert(path.to_string(), c);
            }
            if let Some(v) = self.versions.get(target).cloned() {
                self.versions.insert(path.to_string(), v);
            }
            self.nodes.insert(path.to_string(), node);
        }
    }

    pub fn node(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    pub fn content(&self, path: &str) -> Option<&[u8]> {
        self.contents.get(path).map(Vec::as_slice)
    }

    pub fn versions(&self, path: &str) -> Option<&[String]> {
        self.versions.get(path).map(Vec::as_slice)
    }

    /// Every path under `dir` (not `dir` itself), in byte order.
    pub fn under<'a>(&'a self, dir: &str) -> impl Iterator<Item = (&'a String, &'a Node)> + 'a {
        let prefix = if dir == "/" {
            "/".to_string()
        } else {
            format!("{}/", dir.trim_end_matches('/'))
        };
        self.nodes
            .range(prefix.clone()..)
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| k.as_str() != "/")
    }

    /// The names directly in `dir`.
    pub fn children(&self, dir: &str) -> Vec<(String, &Node)> {
        let depth = if dir == "/" {
            1
        } else {
            dir.matches('/').count() + 1
        };
        self.under(dir)
            .filter(|(k, _)| k.matches('/').count() == depth)
            .map(|(k, n)| (k.rsplit('/').next().unwrap_or("").to_string(), n))
            .collect()
    }

    /// `path` with every symbolic link on the way followed (as the kernel
    /// does, inside this tree); `None` when the links loop. The path need
    /// not exist: callers look its node up.
    pub fn resolve(&self, path: &str) -> Option<String> {
        let mut pending: Vec<String> = path
            .split('/')
            .filter(|c| !c.is_empty())
            .rev()
            .map(str::to_string)
            .collect();
        let mut current = String::from("/");
        let mut hops = 0;
        while let Some(component) = pending.pop() {
            match component.as_str() {
                "." => continue,
                ".." => {
                    current = parent(&current).to_string();
                    continue;
                }
                _ => {}
            }
            let next = join(&current, &component);
            // A path a tar never listed a directory for is an implicit directory.
            match self.nodes.get(&next).map(|n| &n.kind) {
                Some(Kind::Symlink(target)) => {
                    hops += 1;
                    if hops > 40 {
                        return None;
                    }
                    if target.starts_with('/') {
                        current = "/".into();
                    }
                    for c in target.split('/').filter(|c| !c.is_empty()).rev() {
                        pending.push(c.to_string());
                    }
                }
                _ => current = next,
            }
        }
        Some(current)
    }

    /// Whether `path` (links followed) is a regular file.
    pub fn is_file(&self, path: &str) -> bool {
        self.resolve(path)
            .and_then(|p| self.nodes.get(&p))
            .is_some_and(|n| n.kind == Kind::File)
    }

    /// Whether `path` (links followed) is a directory (listed, or implied
    /// by paths under it).
    pub fn is_dir(&self, path: &str) -> bool {
        let Some(p) = self.resolve(path) else {
            return false;
        };
        match self.nodes.get(&p) {
            Some(n) => n.kind == Kind::Dir,
            None => self.under(&p).next().is_some(),
        }
    }

    /// The content of `path` with links followed.
    pub fn read(&self, path: &str) -> Option<&[u8]> {
        let real = self.resolve(path)?;
        self.content(&real)
    }
}

/// Runs of printable ASCII in a binary that look like a version the index
/// needs: CPython's `PY_VERSION` (`3.11.2`, a NUL-terminated string of its
/// own) and glibc's banner (`... release version 2.36.`).
pub fn scan_versions<R: Read>(r: R) -> io::Result<Vec<String>> {
    let mut found: BTreeSet<String> = BTreeSet::new();
    let mut reader = BufReader::with_capacity(1 << 16, r);
    let mut run: Vec<u8> = Vec::new();
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        let n = buf.len();
        for &b in buf {
            if (0x20..0x7f).contains(&b) {
                if run.len() < 200 {
                    run.push(b);
                }
            } else {
                if run.len() >= 5 {
                    if let Ok(s) = std::str::from_utf8(&run) {
                        if is_python_version(s) || s.contains("release version ") {
                            found.insert(s.to_string());
                        }
                    }
                }
                run.clear();
            }
        }
        reader.consume(n);
    }
    Ok(found.into_iter().collect())
}

/// `3.11.2`, `3.13.0rc1`, `3.12.1+`: a whole string that is a CPython version.
pub fn is_python_version(s: &str) -> bool {
    let core = s.trim_end_matches('+');
    let mut parts = core.splitn(3, '.');
    let (Some(major), Some(minor), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let micro: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let pre = &rest[micro.len()..];
    let pre_ok = pre.is_empty()
        || ["a", "b", "rc"].iter().any(|p| {
            pre.strip_prefix(p)
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        });
    major == "3"
        && !minor.is_empty()
        && minor.len() <= 2
        && minor.bytes().all(|b| b.is_ascii_digit())
        && !micro.is_empty()
        && micro.len() <= 2
        && pre_ok
}

/// Open a layer blob as its uncompressed tar: gzip is recognised by its magic.
pub fn open_layer(path: &std::path::Path) -> io::Result<Box<dyn Read>> {
    let mut f = BufReader::new(std::fs::File::open(path)?);
    let magic = f.fill_buf()?;
    if magic.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(f)))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a zstd-compressed layer (direct mode reads gzip and uncompressed layers)",
        ))
    } else {
        Ok(Box::new(f))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A layer tar from (path, kind) pairs: `"f:content"`, `"x:content"`
    /// (executable), `"d"`, `"l:target"`, `"h:target"`.
    pub fn layer(entries: &[(&str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, spec) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            if *spec == "d" {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, path, io::empty()).unwrap();
            } else if let Some(t) = spec.strip_prefix("l:") {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, path, t).unwrap();
            } else if let Some(t) = spec.strip_prefix("h:") {
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                b.append_link(&mut h, path, t).unwrap();
            } else {
                if spec.starts_with("x:") {
                    h.set_mode(0o755);
                }
                let c = spec
                    .strip_prefix("f:")
                    .or_else(|| spec.strip_prefix("x:"))
                    .unwrap_or(spec);
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(c.len() as u64);
                b.append_data(&mut h, path, c.as_bytes()).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    fn all(_: &str) -> Capture {
        Capture::Content
    }

    #[test]
    fn whiteouts_remove_lower_paths_and_opaque_dirs_hide_lower_content() {
        let mut fs = RootFs::new();
        let l1 = layer(&[
            ("usr", "d"),
            ("usr/lib", "d"),
            ("usr/lib/a.txt", "f:one"),
            ("usr/lib/sub", "d"),
            ("usr/lib/sub/x", "f:x"),
            ("opt", "d"),
            ("opt/keep", "f:k"),
            ("opt/gone", "f:g"),
        ]);
        fs.apply_layer(&l1[..], &all).unwrap();
        let l2 = layer(&[
            ("usr/lib/.wh.sub", "f:"),
            ("usr/lib/a.txt", "f:two"),
            ("opt/.wh..wh..opq", "f:"),
            ("opt/new", "f:n"),
        ]);
        fs.apply_layer(&l2[..], &all).unwrap();
        assert!(fs.node("/usr/lib/sub").is_none());
        assert!(fs.node("/usr/lib/sub/x").is_none());
        assert_eq!(fs.content("/usr/lib/a.txt"), Some(&b"two"[..]));
        assert!(fs.node("/opt/keep").is_none() && fs.node("/opt/gone").is_none());
        assert!(
            fs.node("/opt/new").is_some(),
            "the opaque layer's own entries stay"
        );
        assert!(fs.node("/opt").is_some());
    }

    #[test]
    fn a_file_over_a_lower_directory_hides_it() {
        let mut fs = RootFs::new();
        fs.apply_layer(&layer(&[("d", "d"), ("d/x", "f:x")])[..], &all)
            .unwrap();
        fs.apply_layer(&layer(&[("d", "f:now a file")])[..], &all)
            .unwrap();
        assert!(fs.node("/d/x").is_none());
        assert_eq!(fs.read("/d"), Some(&b"now a file"[..]));
    }

    #[test]
    fn links_resolve_relative_absolute_and_through_directories() {
        let mut fs = RootFs::new();
        fs.apply_layer(
            &layer(&[
                ("usr", "d"),
                ("usr/bin", "d"),
                ("usr/bin/python3.11", "f:elf"),
                ("usr/bin/python3", "l:python3.11"),
                ("usr/local", "d"),
                ("usr/local/bin", "d"),
                ("usr/local/bin/python", "l:/usr/bin/python3"),
                ("bin", "l:usr/bin"),
                ("loop", "l:loop"),
                ("hard", "h:usr/bin/python3.11"),
            ])[..],
            &all,
        )
        .unwrap();
        assert_eq!(
            fs.resolve("/usr/local/bin/python").as_deref(),
            Some("/usr/bin/python3.11")
        );
        assert_eq!(
            fs.resolve("/bin/python3").as_deref(),
            Some("/usr/bin/python3.11")
        );
        assert!(fs.is_file("/bin/python3"));
        assert_eq!(fs.resolve("/loop"), None);
        assert_eq!(fs.resolve("/missing/x").as_deref(), Some("/missing/x"));
        assert!(!fs.is_file("/missing/x") && !fs.is_dir("/missing"));
        assert_eq!(fs.read("/hard"), Some(&b"elf"[..]));
        let names: Vec<String> = fs
            .children("/usr/bin")
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["python3", "python3.11"]);
    }

    #[test]
    fn versions_are_found_in_binaries() {
        let mut bin = b"\x7fELF\0\0garbage\x013.11.2\0main, Mar 13 2023\0GNU C Library (Debian GLIBC 2.36-9+deb12u4) stable release version 2.36.\0".to_vec();
        bin.extend(vec![0u8; 100_000]);
        bin.extend(b"3.11\x003.1.2.3\x00");
        let v = scan_versions(&bin[..]).unwrap();
        assert!(v.contains(&"3.11.2".to_string()), "{v:?}");
        assert!(
            v.iter().any(|s| s.ends_with("release version 2.36.")),
            "{v:?}"
        );
        assert!(!v.contains(&"3.11".to_string()) && !v.contains(&"3.1.2.3".to_string()));
        assert!(is_python_version("3.13.0rc1") && is_python_version("3.12.1+"));
        assert!(!is_python_version("3.11.2a") && !is_python_version("2.7.18"));
    }
}
