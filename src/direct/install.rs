//! Installing and uninstalling as pip does, into an overlay of the
//! installed set: what a layer adds (files, with where their bytes come
//! from) and what it deletes (paths of the layers below).
//!
//! - [`State::install_wheel`] follows pip's `install_wheel` (PEP 427/491):
//!   the wheel's root into purelib or platlib (`Root-Is-Purelib`),
//!   `.data/<key>/` into the scheme's paths, `.data/scripts` with a
//!   `#!python` shebang rewritten to the interpreter, setuptools' own
//!   wrappers of entry points skipped, console and GUI scripts generated
//!   from `entry_points.txt` with the base's pip template, then `INSTALLER`,
//!   `direct_url.json`, `REQUESTED` and the rewritten `RECORD`; file modes
//!   as pip leaves them under umask 022;
//! - [`State::uninstall`] follows pip's `UninstallPathSet`: the files the
//!   RECORD declares that exist and pip may touch (`is_local`), each `.py`'s
//!   `.pyc`, the entry points' scripts, whole directories when everything in
//!   them goes (`compress_for_rename`).
//!
//! `.pyc` files are compiled at the end of the layer ([`State::finish`]), by
//! an interpreter of the base's version on this machine when there is one.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::index::{Distribution, Index, Scheme};
use super::metadata::{self, Metadata, RecordRow, WheelInfo};
use super::pyfacts::normalize;
use crate::error::{Error, Result};

/// Where an added file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Bytes(Arc<Vec<u8>>),
    /// A member of a wheel, copied as it is.
    Zip {
        wheel: Arc<PathBuf>,
        member: String,
    },
    /// A file on this machine (compiled `.pyc`).
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upper {
    Dir {
        mode: u32,
    },
    File {
        mode: u32,
        size: u64,
        content: Content,
    },
}

/// A distribution installed in this layer whose RECORD is written at the end
/// (after `.pyc` files are compiled).
#[derive(Debug, Clone)]
struct Pending {
    /// The distribution's `RECORD` path.
    record: String,
    lib_dir: String,
    rows: Vec<RecordRow>,
    /// `.py` files pip byte-compiles, absolute.
    py: Vec<String>,
}

/// The installed set during a layer: the set below (`index`, whose `files`
/// are the lower layers'), what this layer added and deleted, and the
/// distributions as pip now sees them.
#[derive(Debug, Clone)]
pub struct State {
    pub index: Index,
    pub upper: BTreeMap<String, Upper>,
    pub deleted: BTreeSet<String>,
    pending: BTreeMap<String, Pending>,
    /// What pip would print that is worth saying (warnings, "not uninstalling").
    pub notes: Vec<String>,
}

/// A wheel, opened: its names, metadata and members.
#[derive(Debug, Clone)]
pub struct Wheel {
    pub path: Arc<PathBuf>,
    pub file_name: String,
    pub dist_info: String,
    pub metadata: Metadata,
    pub info: WheelInfo,
    pub record: String,
    pub entry_points: BTreeMap<String, Vec<(String, String)>>,
    /// Member name → (unix mode from the zip, uncompressed size); no directories.
    pub members: Vec<(String, u32, u64)>,
}

fn bad_wheel(path: &Path, reason: impl Into<String>) -> Error {
    Error::DirectRefused {
        input: path.display().to_string(),
        reason: format!("it is not a wheel pip would install: {}", reason.into()),
    }
}

impl Wheel {
    pub fn open(path: &Path) -> Result<Wheel> {
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let mut zip = zip::ZipArchive::new(f).map_err(|e| bad_wheel(path, e.to_string()))?;
        let mut members = Vec::new();
        for i in 0..zip.len() {
            let m = zip
                .by_index_raw(i)
                .map_err(|e| bad_wheel(path, e.to_string()))?;
            let name = m.name().to_string();
            if name.ends_with('/') {
                continue;
            }
            members.push((name, m.unix_mode().unwrap_or(0), m.size()));
        }
        // pip: exactly one top-level .dist-info directory, named for the project.
        let mut infos: BTreeSet<String> = members
            .iter()
            .filter_map(|(n, _, _)| n.split('/').next())
            .filter(|d| d.ends_with(".dist-info"))
            .map(str::to_string)
            .collect();
        if infos.len() != 1 {
            return Err(bad_wheel(
                path,
                format!("{} .dist-info directories", infos.len()),
            ));
        }
        let dist_info = infos.pop_first().unwrap_or_default();
        let mut read = |member: &str| -> Result<Option<String>> {
            match zip.by_name(member) {
                Ok(mut m) => {
                    let mut s = String::new();
                    m.read_to_string(&mut s)
                        .map_err(|e| bad_wheel(path, format!("{member}: {e}")))?;
                    Ok(Some(s))
                }
                Err(zip::result::ZipError::FileNotFound) => Ok(None),
                Err(e) => Err(bad_wheel(path, format!("{member}: {e}"))),
            }
        };
        let meta = read(&format!("{dist_info}/METADATA"))?
            .ok_or_else(|| bad_wheel(path, format!("no {dist_info}/METADATA")))?;
        let wheel = read(&format!("{dist_info}/WHEEL"))?
            .ok_or_else(|| bad_wheel(path, format!("no {dist_info}/WHEEL")))?;
        let record = read(&format!("{dist_info}/RECORD"))?
            .ok_or_else(|| bad_wheel(path, format!("no {dist_info}/RECORD")))?;
        let eps = read(&format!("{dist_info}/entry_points.txt"))?
            .map(|t| metadata::parse_entry_points(&t))
            .unwrap_or_default();
        let info = metadata::parse_wheel_file(&wheel);
        if !info.version.starts_with("1.") {
            return Err(bad_wheel(
                path,
                format!("Wheel-Version {} (pip installs 1.x)", info.version),
            ));
        }
        Ok(Wheel {
            path: Arc::new(path.to_path_buf()),
            file_name,
            dist_info,
            metadata: Metadata::parse(&meta),
            info,
            record,
            entry_points: eps,
            members,
        })
    }

    pub fn name(&self) -> &str {
        self.metadata.name().unwrap_or("")
    }

    pub fn version(&self) -> &str {
        self.metadata.version().unwrap_or("")
    }

    /// Reads one member whole.
    pub fn read_member(&self, member: &str) -> Result<Vec<u8>> {
        let f = std::fs::File::open(self.path.as_ref())
            .map_err(|e| Error::io(self.path.as_ref(), e))?;
        let mut zip = zip::ZipArchive::new(f).map_err(|e| bad_wheel(&self.path, e.to_string()))?;
        let mut m = zip
            .by_name(member)
            .map_err(|e| bad_wheel(&self.path, format!("{member}: {e}")))?;
        let mut buf = Vec::new();
        m.read_to_end(&mut buf)
            .map_err(|e| bad_wheel(&self.path, format!("{member}: {e}")))?;
        Ok(buf)
    }
}

/// `sha256=<urlsafe base64, no padding>` and the length, as pip's `rehash`.
pub fn record_hash(bytes: &[u8]) -> (String, String) {
    let d = Sha256::digest(bytes);
    (
        format!(
            "sha256={}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d)
        ),
        bytes.len().to_string(),
    )
}

/// `os.path.relpath(path, start)` for absolute normalized paths.
pub fn relpath(path: &str, start: &str) -> String {
    let p: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let s: Vec<&str> = start.split('/').filter(|c| !c.is_empty()).collect();
    let common = p.iter().zip(&s).take_while(|(a, b)| a == b).count();
    let mut out: Vec<&str> = vec![".."; s.len() - common];
    out.extend(&p[common..]);
    if out.is_empty() {
        ".".into()
    } else {
        out.join("/")
    }
}

/// `importlib.util.cache_from_source` for a `.py` file.
pub fn cache_from_source(py: &str, cache_tag: &str) -> String {
    let (dir, file) = py.rsplit_once('/').unwrap_or(("", py));
    let stem = file.strip_suffix(".py").unwrap_or(file);
    format!("{dir}/__pycache__/{stem}.{cache_tag}.pyc")
}

fn parent(p: &str) -> &str {
    match p.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &p[..i],
    }
}

/// Mode of a file pip extracts (umask 022): 0755 when the zip says it is executable.
fn extracted_mode(zip_mode: u32) -> u32 {
    let is_reg = zip_mode & 0o170000 == 0o100000;
    if zip_mode != 0 && is_reg && zip_mode & 0o111 != 0 {
        0o755
    } else {
        0o644
    }
}

/// distlib's `get_export_entry`: `name = module:attr.sub [flags]` → (module, attr path).
fn export_entry(value: &str) -> Option<(String, String)> {
    let callable = value.split('[').next()?.trim();
    let (module, attrs) = callable.split_once(':')?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.split('.')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_'))
    };
    (ok(module.trim()) && ok(attrs.trim()))
        .then(|| (module.trim().to_string(), attrs.trim().to_string()))
}

/// pip's `get_console_script_specs`: pip and easy_install get versioned names.
fn console_script_specs(console: &[(String, String)], short: &str) -> Vec<(String, String)> {
    let mut rest: Vec<(String, String)> = console.to_vec();
    let mut out = Vec::new();
    let take = |rest: &mut Vec<(String, String)>, name: &str| {
        rest.iter()
            .position(|(n, _)| n == name)
            .map(|i| rest.remove(i).1)
    };
    if let Some(v) = take(&mut rest, "pip") {
        out.push(("pip".to_string(), v.clone()));
        out.push(("pip3".to_string(), v.clone()));
        out.push((format!("pip{short}"), v));
        rest.retain(|(n, _)| {
            let tail = n.strip_prefix("pip").unwrap_or("x");
            !(tail.is_empty() || tail.chars().all(|c| c.is_ascii_digit() || c == '.'))
        });
    }
    if let Some(v) = take(&mut rest, "easy_install") {
        out.push(("easy_install".to_string(), v.clone()));
        out.push((format!("easy_install-{short}"), v));
        rest.retain(|(n, _)| {
            !(n == "easy_install"
                || n.strip_prefix("easy_install-")
                    .is_some_and(|t| t.chars().all(|c| c.is_ascii_digit() || c == '.')))
        });
    }
    out.extend(rest);
    out
}

/// The launcher distlib writes for a console or GUI script (POSIX).
pub fn launcher(template: &str, executable: &str, module: &str, attrs: &str) -> Vec<u8> {
    let import_name = attrs.split('.').next().unwrap_or(attrs);
    let body = template
        .replace("%(module)s", module)
        .replace("%(import_name)s", import_name)
        .replace("%(func)s", attrs);
    let mut out = shebang(executable);
    out.extend(body.as_bytes());
    out
}

/// distlib's `_build_shebang`: the simple form unless the path has a space
/// or the line would pass 127 bytes, then the `/bin/sh` trampoline.
fn shebang(executable: &str) -> Vec<u8> {
    let simple = !executable.contains(' ') && executable.len() + 3 <= 127;
    if simple {
        format!("#!{executable}\n").into_bytes()
    } else {
        let exe = if executable.contains(' ') {
            format!("\"{executable}\"")
        } else {
            executable.to_string()
        };
        format!("#!/bin/sh\n'''exec' {exe} \"$0\" \"$@\"\n' '''\n").into_bytes()
    }
}

/// How an install was asked for (what pip writes into the dist-info).
#[derive(Debug, Clone, Default)]
pub struct InstallOptions {
    /// The user named it (a requirements line or a path): `REQUESTED`.
    pub requested: bool,
    /// A path or URL requirement: `direct_url.json`'s `url`.
    pub direct_url: Option<String>,
}

impl State {
    pub fn new(index: Index) -> State {
        State {
            index,
            upper: BTreeMap::new(),
            deleted: BTreeSet::new(),
            pending: BTreeMap::new(),
            notes: Vec::new(),
        }
    }

    fn lower_has(&self, path: &str) -> Option<bool> {
        if self.deleted.contains(path) {
            return None;
        }
        if self.index.files.contains(path) {
            Some(false)
        } else if self.index.files.contains(&format!("{path}/")) {
            Some(true)
        } else {
            None
        }
    }

    /// Whether `path` exists now; `Some(true)` for a directory.
    pub fn exists(&self, path: &str) -> Option<bool> {
        match self.upper.get(path) {
            Some(Upper::Dir { .. }) => Some(true),
            Some(Upper::File { .. }) => Some(false),
            None => self.lower_has(path),
        }
    }

    /// Every non-directory path under `dir` now (for pip's directory check).
    fn files_under(&self, dir: &str) -> BTreeSet<String> {
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        let mut out: BTreeSet<String> = self
            .index
            .files
            .range(prefix.clone()..)
            .take_while(|p| p.starts_with(&prefix))
            .filter(|p| !p.ends_with('/') && !self.deleted.contains(p.as_str()))
            .cloned()
            .collect();
        for (p, u) in self.upper.range(prefix.clone()..) {
            if !p.starts_with(&prefix) {
                break;
            }
            if matches!(u, Upper::File { .. }) {
                out.insert(p.clone());
            }
        }
        out
    }

    /// Remove `path` (and, for a directory, everything under it).
    fn remove(&mut self, path: &str) {
        let prefix = format!("{}/", path.trim_end_matches('/'));
        let uppers: Vec<String> = self
            .upper
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .map(|(p, _)| p.clone())
            .collect();
        for p in uppers {
            self.upper.remove(&p);
        }
        self.upper.remove(path);
        let lowers: Vec<String> = self
            .index
            .files
            .range(prefix.clone()..)
            .take_while(|p| p.starts_with(&prefix))
            .map(|p| p.trim_end_matches('/').to_string())
            .collect();
        for p in lowers {
            self.deleted.insert(p);
        }
        if self.lower_has(path).is_some() {
            self.deleted.insert(path.to_string());
        }
    }

    /// Create the directories above `path` that do not exist (0755, as `os.makedirs`).
    fn make_parents(&mut self, path: &str) {
        let mut missing = Vec::new();
        let mut d = parent(path);
        while d != "/" && self.exists(d).is_none() {
            missing.push(d.to_string());
            d = parent(d);
        }
        for m in missing {
            self.deleted.remove(&m);
            self.upper.insert(m, Upper::Dir { mode: 0o755 });
        }
    }

    fn write(&mut self, path: &str, mode: u32, size: u64, content: Content) {
        if self.exists(path) == Some(true) {
            // pip would fail to open a directory for writing; a wheel
            // replacing a directory by a file does not happen in practice.
            self.remove(path);
        }
        self.make_parents(path);
        self.deleted.remove(path);
        self.upper.insert(
            path.to_string(),
            Upper::File {
                mode,
                size,
                content,
            },
        );
    }

    fn write_bytes(&mut self, path: &str, mode: u32, bytes: Vec<u8>) {
        let size = bytes.len() as u64;
        self.write(path, mode, size, Content::Bytes(Arc::new(bytes)));
    }

    /// Uninstall a distribution as pip does before installing another
    /// version of it. `Ok(false)` when pip leaves it (outside the
    /// environment: Debian's apt directory, or the standard library).
    pub fn uninstall(&mut self, dist: &Distribution) -> Result<bool> {
        if !self.index.is_local(&dist.location) {
            self.notes.push(format!(
                "Not uninstalling {} at {}, outside environment {}",
                dist.key(),
                dist.location,
                self.index.python.prefix
            ));
            return Ok(false);
        }
        if self.index.scheme.stdlib.contains(&dist.location) {
            self.notes.push(format!(
                "Not uninstalling {} at {}, as it is in the standard library.",
                dist.key(),
                dist.location
            ));
            return Ok(false);
        }
        let info = dist.info_path();
        let declared: Vec<String> = match (&dist.files, self.pending.get(&info)) {
            (_, Some(p)) => p
                .rows
                .iter()
                .map(|r| normalize(&format!("{}/{}", p.lib_dir, r.path)))
                .chain(p.py.iter().map(|py| cache_from_source(py, &self.index.python.cache_tag())))
                .collect(),
            (Some(files), None) => files.clone(),
            (None, None) => {
                return Err(Error::DirectFailed {
                    step: format!("uninstalling {} {}", dist.name, dist.version),
                    reason: format!(
                        "{info} declares no files (no RECORD or installed-files.txt); pip cannot uninstall it"
                    ),
                })
            }
        };
        let paths = self.uninstall_paths(dist, &declared);
        self.remove_paths(&paths);
        self.pending.remove(&info);
        let key = dist.key();
        let loc = dist.location.clone();
        self.index
            .distributions
            .retain(|d| !(d.key() == key && d.location == loc));
        Ok(true)
    }

    /// What pip's UninstallPathSet holds for `dist`: its declared files
    /// (with `.pyc`/`.pyo` beside each `.py`, and its scripts) that exist
    /// and pip may touch; a `.py` brings its cached `.pyc`.
    fn uninstall_paths(&self, dist: &Distribution, declared: &[String]) -> BTreeSet<String> {
        let tag = self.index.python.cache_tag();
        let mut candidates: BTreeSet<String> = BTreeSet::new();
        if dist.is_egg_info() {
            candidates.insert(dist.info_path());
        }
        for f in declared {
            candidates.insert(f.clone());
            if let Some(stem) = f.strip_suffix(".py") {
                candidates.insert(format!("{stem}.pyc"));
                candidates.insert(format!("{stem}.pyo"));
            }
        }
        let bin = &self.index.scheme.scripts;
        for s in dist.console_scripts.iter().chain(&dist.gui_scripts) {
            candidates.insert(format!("{bin}/{s}"));
        }
        let mut paths: BTreeSet<String> = BTreeSet::new();
        let mut add = |p: &str| {
            if self.exists(p).is_some() && self.index.is_local(p) {
                paths.insert(p.to_string());
            }
        };
        for c in &candidates {
            add(c);
            if c.ends_with(".py") && self.exists(c).is_some() {
                add(&cache_from_source(c, &tag));
            }
        }
        paths
    }

    /// Remove `paths` as pip's compress_for_rename groups them: a directory
    /// goes whole when every file in it goes.
    fn remove_paths(&mut self, paths: &BTreeSet<String>) {
        let mut remaining = paths.clone();
        let mut roots: Vec<String> = paths.iter().map(|p| parent(p).to_string()).collect();
        roots.sort_by_key(|r| r.len());
        roots.dedup();
        let mut wildcards: Vec<String> = Vec::new();
        for root in roots {
            if wildcards
                .iter()
                .any(|w| root == *w || root.starts_with(&format!("{w}/")))
            {
                continue;
            }
            let all = self.files_under(&root);
            if all.iter().all(|f| remaining.contains(f)) {
                for f in &all {
                    remaining.remove(f);
                }
                wildcards.push(root);
            }
        }
        for w in &wildcards {
            self.remove(w);
        }
        for p in &remaining {
            if wildcards.iter().any(|w| p.starts_with(&format!("{w}/"))) {
                continue;
            }
            self.remove(p);
        }
    }

    /// Install a wheel as pip's `install_wheel` does (see the module). The
    /// caller has uninstalled what pip would.
    pub fn install_wheel(&mut self, wheel: &Wheel, opts: &InstallOptions) -> Result<Distribution> {
        let lib_dir = if wheel.info.root_is_purelib {
            self.index.scheme.purelib.clone()
        } else {
            self.index.scheme.platlib.clone()
        };
        let entry_points = |group: &str| -> Vec<(String, String)> {
            wheel.entry_points.get(group).cloned().unwrap_or_default()
        };
        let (console, gui) = (entry_points("console_scripts"), entry_points("gui_scripts"));
        let ep_names: BTreeSet<&str> = console
            .iter()
            .chain(&gui)
            .map(|(n, _)| n.as_str())
            .collect();
        let (installed, changed) = self.unpack(wheel, &lib_dir, &ep_names)?;
        // .py files pip byte-compiles (deduplicated installed paths).
        let py: Vec<String> = installed
            .values()
            .map(|r| normalize(&format!("{lib_dir}/{r}")))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|p| p.ends_with(".py") && self.exists(p) == Some(false))
            .collect();
        let info_dir = format!("{lib_dir}/{}", wheel.dist_info);
        let mut generated = self.entry_point_scripts(wheel, &console, &gui)?;
        generated.extend(self.installer_files(&info_dir, opts));
        let rows = self.record_rows(wheel, &lib_dir, (installed, &changed), &generated)?;
        let dist = Distribution {
            name: wheel.name().to_string(),
            version: wheel.version().to_string(),
            location: lib_dir.clone(),
            info: wheel.dist_info.clone(),
            installer: Some("pip".into()),
            requested: opts.requested,
            direct_url: opts.direct_url.as_deref().map(direct_url_json),
            files: None,
            requires: wheel.metadata.requires_dist(),
            requires_python: wheel.metadata.requires_python().map(str::to_string),
            console_scripts: console.iter().map(|(n, _)| n.clone()).collect(),
            gui_scripts: gui.iter().map(|(n, _)| n.clone()).collect(),
        };
        // A placeholder until finish() writes the real RECORD.
        let record_path = format!("{info_dir}/RECORD");
        self.write_bytes(&record_path, 0o644, Vec::new());
        self.pending.insert(
            info_dir,
            Pending {
                record: record_path,
                lib_dir,
                rows,
                py,
            },
        );
        self.add_distribution(dist.clone());
        Ok(dist)
    }

    /// Every member of the wheel written where pip puts it: its record path
    /// → its installed path (relative to `lib_dir`), and the installed paths
    /// whose bytes were rewritten (scripts' `#!python`).
    #[allow(clippy::type_complexity)]
    fn unpack(
        &mut self,
        wheel: &Wheel,
        lib_dir: &str,
        entry_points: &BTreeSet<&str>,
    ) -> Result<(BTreeMap<String, String>, BTreeSet<String>)> {
        let mut installed: BTreeMap<String, String> = BTreeMap::new();
        let mut changed: BTreeSet<String> = BTreeSet::new();
        for (member, zmode, size) in &wheel.members {
            let top = member.split('/').next().unwrap_or("");
            let dest = if top.ends_with(".data") {
                let (key, dest) = data_dest(&self.index.scheme, wheel, member)?;
                if key == "scripts" {
                    match self.script(wheel, member, (&dest, *zmode), entry_points)? {
                        Script::Wrapper => continue,
                        Script::Fixed => {
                            let rec = relpath(&dest, lib_dir);
                            installed.insert(member.clone(), rec.clone());
                            changed.insert(rec);
                            continue;
                        }
                        Script::AsIs => {}
                    }
                }
                dest
            } else {
                let dest = normalize(&format!("{lib_dir}/{member}"));
                if !dest.starts_with(&format!("{}/", lib_dir.trim_end_matches('/'))) {
                    return Err(bad_wheel(
                        &wheel.path,
                        format!("{member:?} escapes {lib_dir}"),
                    ));
                }
                dest
            };
            let content = Content::Zip {
                wheel: wheel.path.clone(),
                member: member.clone(),
            };
            self.write(&dest, extracted_mode(*zmode), *size, content);
            installed.insert(member.clone(), relpath(&dest, lib_dir));
        }
        Ok((installed, changed))
    }

    /// A `.data/scripts` member: skipped when it is setuptools' wrapper of
    /// an entry point, written with the base's interpreter when it starts
    /// `#!python` (pip's fix_script), else copied as it is.
    fn script(
        &mut self,
        wheel: &Wheel,
        member: &str,
        (dest, zmode): (&str, u32),
        entry_points: &BTreeSet<&str>,
    ) -> Result<Script> {
        let file = dest.rsplit('/').next().unwrap_or("");
        let lower = file.to_ascii_lowercase();
        let m = if lower.ends_with(".exe") || lower.ends_with(".pya") {
            &file[..file.len() - 4]
        } else if lower.ends_with("-script.py") {
            &file[..file.len() - 10]
        } else {
            file
        };
        if entry_points.contains(m) {
            return Ok(Script::Wrapper);
        }
        let bytes = wheel.read_member(member)?;
        if !bytes.starts_with(b"#!python") {
            return Ok(Script::AsIs);
        }
        let rest = match bytes.iter().position(|b| *b == b'\n') {
            Some(i) => &bytes[i + 1..],
            None => &[][..],
        };
        let mut out = format!("#!{}\n", self.index.python.executable).into_bytes();
        out.extend_from_slice(rest);
        self.write_bytes(dest, extracted_mode(zmode), out);
        Ok(Script::Fixed)
    }

    /// The console and GUI scripts of the wheel's entry points, in the
    /// launcher text the base's pip writes; their paths.
    fn entry_point_scripts(
        &mut self,
        wheel: &Wheel,
        console: &[(String, String)],
        gui: &[(String, String)],
    ) -> Result<Vec<String>> {
        let template = self.index.pip.script_template.clone();
        let executable = self.index.python.executable.clone();
        let specs = console_script_specs(console, &self.index.python.short());
        let mut generated = Vec::new();
        for (script, value) in specs.iter().chain(gui.iter()) {
            let Some((module, attrs)) = export_entry(value) else {
                return Err(bad_wheel(
                    &wheel.path,
                    format!("entry point {script} = {value} is not module:attr"),
                ));
            };
            let dest = format!("{}/{script}", self.index.scheme.scripts);
            let text = launcher(&template, &executable, &module, &attrs);
            self.write_bytes(&dest, 0o755, text);
            generated.push(dest);
        }
        Ok(generated)
    }

    /// `INSTALLER`, `direct_url.json` and `REQUESTED` as pip writes them;
    /// their paths.
    fn installer_files(&mut self, info_dir: &str, opts: &InstallOptions) -> Vec<String> {
        let mut generated = Vec::new();
        let installer = format!("{info_dir}/INSTALLER");
        self.write_bytes(&installer, 0o644, b"pip\n".to_vec());
        generated.push(installer);
        if let Some(url) = &opts.direct_url {
            let p = format!("{info_dir}/direct_url.json");
            self.write_bytes(&p, 0o644, direct_url_json(url).into_bytes());
            generated.push(p);
        }
        if opts.requested {
            let p = format!("{info_dir}/REQUESTED");
            self.write_bytes(&p, 0o644, Vec::new());
            generated.push(p);
        }
        generated
    }

    /// The installed `RECORD`'s rows (pip's get_csv_rows_for_installed): the
    /// wheel's rows at their installed paths (rewritten files hashed again),
    /// the generated files, then members the wheel's RECORD did not list.
    fn record_rows(
        &self,
        wheel: &Wheel,
        lib_dir: &str,
        (mut installed, changed): (BTreeMap<String, String>, &BTreeSet<String>),
        generated: &[String],
    ) -> Result<Vec<RecordRow>> {
        let mut rows = Vec::new();
        for row in metadata::parse_record(&wheel.record) {
            let new_path = installed.remove(&row.path).unwrap_or(row.path.clone());
            if changed.contains(&new_path) {
                let abs = normalize(&format!("{lib_dir}/{new_path}"));
                let (h, n) = self.hash_of(&abs)?;
                rows.push(RecordRow {
                    path: new_path,
                    hash: h,
                    size: n,
                });
            } else {
                rows.push(RecordRow {
                    path: new_path,
                    hash: row.hash,
                    size: row.size,
                });
            }
        }
        for g in generated {
            let (h, n) = self.hash_of(g)?;
            rows.push(RecordRow {
                path: relpath(g, lib_dir),
                hash: h,
                size: n,
            });
        }
        for (_, rest) in installed {
            rows.push(RecordRow {
                path: rest,
                hash: String::new(),
                size: String::new(),
            });
        }
        Ok(rows)
    }

    /// Put a distribution where pip finds it: in sys.path order.
    fn add_distribution(&mut self, dist: Distribution) {
        let rank = |loc: &str| {
            self.index
                .sys_path
                .iter()
                .position(|p| p == loc)
                .unwrap_or(usize::MAX)
        };
        let r = rank(&dist.location);
        let at = self
            .index
            .distributions
            .iter()
            .position(|d| rank(&d.location) > r)
            .unwrap_or(self.index.distributions.len());
        self.index.distributions.insert(at, dist);
    }

    /// RECORD hash of a file this layer wrote from bytes.
    fn hash_of(&self, path: &str) -> Result<(String, String)> {
        match self.upper.get(path) {
            Some(Upper::File {
                content: Content::Bytes(b),
                ..
            }) => Ok(record_hash(b)),
            _ => Err(Error::DirectFailed {
                step: "writing a RECORD".into(),
                reason: format!("{path} was not written by this layer"),
            }),
        }
    }

    /// Byte-compile what pip would, write every RECORD, and return the
    /// installed set after the layer (its `files` now the merged ones).
    pub fn finish(&mut self, compiler: Option<&dyn Compiler>) -> Result<Index> {
        let tag = self.index.python.cache_tag();
        // Sources: every pending .py still present with this layer's bytes.
        let mut jobs: Vec<(String, Content)> = Vec::new();
        for p in self.pending.values() {
            for py in &p.py {
                if let Some(Upper::File { content, .. }) = self.upper.get(py) {
                    jobs.push((py.clone(), content.clone()));
                }
            }
        }
        let compiled: BTreeMap<String, PathBuf> = match compiler {
            Some(c) if !jobs.is_empty() => c.compile(&jobs)?,
            _ => BTreeMap::new(),
        };
        for (py, pyc) in &compiled {
            let size = std::fs::metadata(pyc).map_err(|e| Error::io(pyc, e))?.len();
            let dest = cache_from_source(py, &tag);
            self.write(&dest, 0o644, size, Content::File(pyc.clone()));
        }
        let pending = std::mem::take(&mut self.pending);
        for (info_dir, p) in pending {
            let mut rows = p.rows.clone();
            for py in &p.py {
                if compiled.contains_key(py) {
                    rows.push(RecordRow {
                        path: relpath(&cache_from_source(py, &tag), &p.lib_dir),
                        hash: String::new(),
                        size: String::new(),
                    });
                }
            }
            let text = metadata::write_record(&rows);
            self.write_bytes(&p.record, 0o644, text.into_bytes());
            let files: Vec<String> = rows
                .iter()
                .map(|r| normalize(&format!("{}/{}", p.lib_dir, r.path)))
                .collect();
            if let Some(d) = self
                .index
                .distributions
                .iter_mut()
                .find(|d| d.info_path() == info_dir)
            {
                d.files = Some(files);
            }
        }
        let mut after = self.index.clone();
        for d in &self.deleted {
            after.files.remove(d);
            after.files.remove(&format!("{d}/"));
        }
        for (p, u) in &self.upper {
            if after
                .roots
                .iter()
                .any(|r| p == r || p.starts_with(&format!("{r}/")))
            {
                after.files.insert(match u {
                    Upper::Dir { .. } => format!("{p}/"),
                    Upper::File { .. } => p.clone(),
                });
            }
        }
        Ok(after)
    }
}

/// What became of a `.data/scripts` member.
enum Script {
    /// setuptools' wrapper of an entry point: pip skips it.
    Wrapper,
    /// `#!python` rewritten to the interpreter.
    Fixed,
    AsIs,
}

/// Where a `.data/<key>/<path>` member goes: its scheme key and path.
fn data_dest(scheme: &Scheme, wheel: &Wheel, member: &str) -> Result<(String, String)> {
    let normed = normalize(&format!("/{member}"));
    let parts: Vec<&str> = normed.trim_start_matches('/').splitn(3, '/').collect();
    if parts.len() < 3 {
        return Err(bad_wheel(
            &wheel.path,
            format!("unexpected file {member:?}: .data contents must be <scheme key>/<path>"),
        ));
    }
    let base = match parts[1] {
        "purelib" => scheme.purelib.clone(),
        "platlib" => scheme.platlib.clone(),
        "headers" => format!("{}/{}", scheme.include, wheel.name()),
        "scripts" => scheme.scripts.clone(),
        "data" => scheme.data.clone(),
        other => {
            return Err(bad_wheel(
                &wheel.path,
                format!("unknown scheme key {other:?} (for file {member:?})"),
            ))
        }
    };
    let dest = normalize(&format!("{base}/{}", parts[2]));
    if !dest.starts_with(&format!("{}/", base.trim_end_matches('/'))) {
        return Err(bad_wheel(&wheel.path, format!("{member:?} escapes {base}")));
    }
    Ok((parts[1].to_string(), dest))
}

/// `direct_url.json` for a local archive, as pip writes it (sorted keys).
pub fn direct_url_json(url: &str) -> String {
    format!(
        "{{\"archive_info\": {{}}, \"url\": {}}}",
        serde_json::Value::String(url.to_string())
    )
}

/// Byte-compiles sources as pip does (`compileall.compile_file`, hash-based
/// because the setup runs with `SOURCE_DATE_EPOCH`, the installed path as
/// the code's file name). Returns installed path → compiled file, for the
/// sources that compiled.
pub trait Compiler {
    fn compile(&self, sources: &[(String, Content)]) -> Result<BTreeMap<String, PathBuf>>;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::direct::index::tests::debian_index;
    use std::io::Write;

    /// A wheel file built in a temp dir: members (name, content, mode).
    pub fn make_wheel(dir: &Path, file: &str, members: &[(&str, &str, u32)]) -> PathBuf {
        let path = dir.join(file);
        let f = std::fs::File::create(&path).unwrap();
        let mut z = zip::ZipWriter::new(f);
        for (name, content, mode) in members {
            let opts = zip::write::SimpleFileOptions::default().unix_permissions(*mode);
            z.start_file(*name, opts).unwrap();
            z.write_all(content.as_bytes()).unwrap();
        }
        z.finish().unwrap();
        path
    }

    fn slugify_like(dir: &Path) -> PathBuf {
        make_wheel(
            dir,
            "demo_pkg-1.0-py3-none-any.whl",
            &[
                ("demo_pkg/__init__.py", "x = 1\n", 0o644),
                ("demo_pkg/tool.sh", "#!/bin/sh\n", 0o755),
                ("demo_pkg-1.0.data/scripts/runme", "#!python\nprint(1)\n", 0o755),
                ("demo_pkg-1.0.data/scripts/demo", "#!python\n# setuptools wrapper\n", 0o755),
                ("demo_pkg-1.0.data/headers/demo.h", "/* h */\n", 0o644),
                ("demo_pkg-1.0.data/data/share/demo/x.txt", "data\n", 0o644),
                ("demo_pkg-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: demo-pkg\nVersion: 1.0\nRequires-Dist: six\n", 0o644),
                ("demo_pkg-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n", 0o644),
                ("demo_pkg-1.0.dist-info/entry_points.txt", "[console_scripts]\ndemo = demo_pkg.cli:main.run\n", 0o644),
                ("demo_pkg-1.0.dist-info/RECORD", "demo_pkg/__init__.py,sha256=abc,6\ndemo_pkg/tool.sh,sha256=t,10\ndemo_pkg-1.0.data/scripts/runme,sha256=r,18\ndemo_pkg-1.0.data/scripts/demo,sha256=d,10\ndemo_pkg-1.0.data/headers/demo.h,sha256=h,8\ndemo_pkg-1.0.data/data/share/demo/x.txt,sha256=x,5\ndemo_pkg-1.0.dist-info/METADATA,sha256=m,1\ndemo_pkg-1.0.dist-info/WHEEL,sha256=w,1\ndemo_pkg-1.0.dist-info/entry_points.txt,sha256=e,1\ndemo_pkg-1.0.dist-info/RECORD,,\n", 0o644),
            ],
        )
    }

    fn file_bytes(st: &State, p: &str) -> Vec<u8> {
        match st.upper.get(p) {
            Some(Upper::File {
                content: Content::Bytes(b),
                ..
            }) => b.to_vec(),
            Some(Upper::File {
                content: Content::Zip { wheel, member },
                ..
            }) => {
                let w = Wheel::open(wheel).unwrap();
                w.read_member(member).unwrap()
            }
            other => panic!("{p}: {other:?}"),
        }
    }

    fn mode(st: &State, p: &str) -> u32 {
        match st.upper.get(p) {
            Some(Upper::File { mode, .. }) => *mode,
            other => panic!("{p}: {other:?}"),
        }
    }

    #[test]
    fn a_wheel_lands_where_pip_puts_each_part() {
        let dir = tempfile::tempdir().unwrap();
        let w = Wheel::open(&slugify_like(dir.path())).unwrap();
        let mut st = State::new(debian_index());
        let opts = InstallOptions {
            requested: true,
            direct_url: Some(
                "file:///opt/apache/beam/artifacts/demo_pkg-1.0-py3-none-any.whl".into(),
            ),
        };
        let d = st.install_wheel(&w, &opts).unwrap();
        assert_eq!(d.location, "/usr/local/lib/python3.11/dist-packages");
        let site = "/usr/local/lib/python3.11/dist-packages";
        assert_eq!(
            file_bytes(&st, &format!("{site}/demo_pkg/__init__.py")),
            b"x = 1\n"
        );
        assert_eq!(mode(&st, &format!("{site}/demo_pkg/__init__.py")), 0o644);
        assert_eq!(mode(&st, &format!("{site}/demo_pkg/tool.sh")), 0o755);
        assert_eq!(
            file_bytes(&st, "/usr/local/bin/runme"),
            b"#!/usr/local/bin/python\nprint(1)\n"
        );
        assert_eq!(
            file_bytes(&st, "/usr/local/bin/demo"),
            b"#!/usr/local/bin/python\n# -*- coding: utf-8 -*-\nimport re\nimport sys\nfrom demo_pkg.cli import main\nif __name__ == '__main__':\n    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n    sys.exit(main.run())\n",
            "the generated launcher, not the wheel's wrapper"
        );
        assert_eq!(mode(&st, "/usr/local/bin/demo"), 0o755);
        assert!(st
            .upper
            .contains_key("/usr/include/python3.11/demo-pkg/demo.h"));
        assert!(st.upper.contains_key("/usr/local/share/demo/x.txt"));
        assert_eq!(
            file_bytes(&st, &format!("{site}/demo_pkg-1.0.dist-info/INSTALLER")),
            b"pip\n"
        );
        assert_eq!(
            String::from_utf8(file_bytes(&st, &format!("{site}/demo_pkg-1.0.dist-info/direct_url.json"))).unwrap(),
            "{\"archive_info\": {}, \"url\": \"file:///opt/apache/beam/artifacts/demo_pkg-1.0-py3-none-any.whl\"}"
        );
        assert!(st
            .upper
            .contains_key(&format!("{site}/demo_pkg-1.0.dist-info/REQUESTED")));
        let after = st.finish(None).unwrap();
        let record = String::from_utf8(file_bytes(
            &st,
            &format!("{site}/demo_pkg-1.0.dist-info/RECORD"),
        ))
        .unwrap();
        let rows: Vec<&str> = record.lines().collect();
        assert!(
            rows.iter()
                .any(|r| r.starts_with("../../../bin/demo,sha256=")),
            "{record}"
        );
        assert!(
            rows.iter()
                .any(|r| r.starts_with("../../../bin/runme,sha256=") && !r.contains("sha256=r,")),
            "rehashed: {record}"
        );
        assert!(
            rows.contains(&"demo_pkg/__init__.py,sha256=abc,6"),
            "{record}"
        );
        assert!(
            rows.contains(&"../../../../include/python3.11/demo-pkg/demo.h,sha256=h,8"),
            "{record}"
        );
        assert!(rows.contains(&"demo_pkg-1.0.dist-info/RECORD,,"));
        assert!(
            rows.contains(&"demo_pkg-1.0.data/scripts/demo,sha256=d,10"),
            "pip keeps a skipped wrapper's row as the wheel has it: {record}"
        );
        let mut sorted = rows.clone();
        sorted.sort();
        assert_eq!(rows, sorted);
        let dd = after.find("demo-pkg").unwrap();
        assert!(dd
            .files
            .as_ref()
            .unwrap()
            .contains(&"/usr/local/bin/demo".to_string()));
        assert_eq!(
            after.freeze()["demo-pkg"],
            "@ file:///opt/apache/beam/artifacts/demo_pkg-1.0-py3-none-any.whl"
        );
        assert!(after
            .files
            .contains(&format!("{site}/demo_pkg/__init__.py")));
    }

    #[test]
    fn uninstall_removes_what_the_record_declares_whole_directories_at_once() {
        let mut st = State::new(debian_index());
        let t = st.index.find("tabulate").unwrap().clone();
        assert!(st.uninstall(&t).unwrap());
        let site = "/usr/local/lib/python3.11/dist-packages";
        for p in [
            format!("{site}/tabulate"),
            format!("{site}/tabulate-0.8.0.dist-info"),
            "/usr/local/bin/tabulate".to_string(),
        ] {
            assert!(st.deleted.contains(&p), "{p}: {:?}", st.deleted);
            assert_eq!(st.exists(&p), None);
        }
        assert!(st.deleted.contains(&format!(
            "{site}/tabulate/__pycache__/__init__.cpython-311.pyc"
        )));
        assert!(
            !st.deleted.contains("/usr/local/bin"),
            "bin has other files"
        );
        assert!(st.index.find("tabulate").is_none());
    }

    #[test]
    fn apt_packages_are_shadowed_not_uninstalled() {
        let mut st = State::new(debian_index());
        let six = st.index.find("six").unwrap().clone();
        assert!(!st.uninstall(&six).unwrap());
        assert!(st.deleted.is_empty());
        assert!(
            st.notes[0].contains("Not uninstalling six at /usr/lib/python3/dist-packages"),
            "{:?}",
            st.notes
        );
    }

    #[test]
    fn console_scripts_of_pip_get_versioned_names() {
        let s = console_script_specs(
            &[
                ("pip".into(), "pip._internal.cli.main:main".into()),
                ("pip3.9".into(), "pip._internal.cli.main:main".into()),
                ("other".into(), "m:f".into()),
            ],
            "3.11",
        );
        let names: Vec<&str> = s.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["pip", "pip3", "pip3.11", "other"]);
        assert_eq!(
            relpath(
                "/usr/local/bin/x",
                "/usr/local/lib/python3.11/dist-packages"
            ),
            "../../../bin/x"
        );
        assert_eq!(
            cache_from_source("/a/b/c.py", "cpython-311"),
            "/a/b/__pycache__/c.cpython-311.pyc"
        );
        let long = "/x".repeat(70);
        assert!(String::from_utf8(shebang(&long))
            .unwrap()
            .starts_with("#!/bin/sh\n'''exec' "));
    }
}
