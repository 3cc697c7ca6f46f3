//! Per-distribution layers: one installing layer's tree, split by the
//! distribution that installed each file, so that heavy distributions are
//! layers of their own that pipelines share (issue 22: a GPU pipeline's
//! dependency layer was one 5 GB blob; bumping one small requirement
//! re-pushed and re-pulled all of it, and two pipelines with the same torch
//! shared nothing in the registry or on a worker's disk).
//!
//! One pure function of an installed tree, used by every builder:
//! [`split_tree`] (a snapshot file in, layer files out; the engine builder's
//! `crate::build::layer` calls it, and direct mode's layer writer can call
//! it in place of `write_layer_from`), over [`Split::plan`] and
//! [`write_split_tree`]. The input is the setup's snapshot (a tar of the created and
//! changed paths, in byte order, every directory above them included, as
//! `crate::build::setup`'s script writes it), the deleted paths, and the
//! `RECORD` files of the distributions installed in it ([`Distribution`]);
//! the output is an ordered list of layer tars ([`Split`]):
//! - each distribution of at least the threshold's installed size alone,
//!   in reverse name order (heavy layers, shared, first; pip installs
//!   distributions of equal dependency weight in that order, so a layer is
//!   complete early, see [`early`]);
//! - the smaller distributions together (the pipeline-specific group);
//! - on top, what no `RECORD` claims, what several claim (the
//!   `nvidia/__init__.py` every nvidia-* wheel ships), each distribution's
//!   install markers (`RECORD`, `REQUESTED`, `direct_url.json`: they say
//!   how it was asked for, which differs between pipelines that share it),
//!   the whiteouts of what the setup removed, and prebuilder's record.
//!
//! Each layer carries the snapshot's directory entries above its files
//! (the same headers in every layer that needs them), so applying the
//! layers in order gives the file tree the unsplit layer gives
//! (`crate::image::write_layer`): same entries, headers normalised the same
//! way, same order within a layer. Hard links stay in their target's layer.
//! The bytes are deterministic: the same distribution on the same base and
//! epoch is the same layer, whatever else the pipeline installs.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{file_header, relative, reproducible, topmost_deleted, whiteout, Hashing};

pub mod early;

/// Installed size from which a distribution gets a layer of its own.
pub const DEFAULT_THRESHOLD: u64 = 64 << 20;
/// Layers one split may make at most: engines stack at most 127 layers
/// (overlayfs's lower directories), and the base has its own.
pub const MAX_LAYERS: usize = 16;

/// Files of a `.dist-info` that say how a distribution was installed, not
/// what: they go on top, so the distribution's layer is the same whether
/// it was asked for by name or came as a dependency.
const INSTALL_MARKERS: [&str; 3] = ["RECORD", "REQUESTED", "direct_url.json"];

/// One installed distribution, from its `RECORD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distribution {
    /// The `.dist-info` directory's name without the suffix: `torch-2.5.1`.
    pub name: String,
    /// The files it installed, relative to the root (`usr/lib/…`), as
    /// `RECORD` lists them, without its install markers.
    pub files: Vec<String>,
    /// Their installed size, as `RECORD` says.
    pub size: u64,
}

impl Distribution {
    /// The distribution whose `RECORD` is at `record_path` (relative to the
    /// root, `./` or not) and holds `bytes`; `None` when the path is not a
    /// `.dist-info/RECORD`. `RECORD` is a CSV of (path, hash, size), paths
    /// relative to the directory holding the `.dist-info` (`../../bin/x`
    /// for scripts) or absolute.
    pub fn from_record(record_path: &str, bytes: &[u8]) -> Option<Distribution> {
        let record_path = relative(record_path);
        let info = Path::new(record_path).parent()?;
        if Path::new(record_path).file_name()? != "RECORD" {
            return None;
        }
        let name = info
            .file_name()?
            .to_str()?
            .strip_suffix(".dist-info")?
            .to_string();
        let site = info.parent().unwrap_or(Path::new(""));
        let mut files = Vec::new();
        let mut size = 0u64;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(bytes);
        for row in reader.records().flatten() {
            let Some(listed) = row.get(0).filter(|p| !p.is_empty()) else {
                continue;
            };
            let Some(path) = resolve(site, listed) else {
                continue;
            };
            if Path::new(&path).parent() == Some(info)
                && INSTALL_MARKERS.iter().any(|m| path.ends_with(m))
            {
                continue;
            }
            size += row.get(2).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
            files.push(path);
        }
        Some(Distribution { name, files, size })
    }
}

/// `listed` (a RECORD path) relative to the root: joined to `site` unless
/// absolute, `..` resolved; `None` when it leaves the root.
fn resolve(site: &Path, listed: &str) -> Option<String> {
    let joined = if listed.starts_with('/') {
        Path::new(listed).to_path_buf()
    } else {
        site.join(listed)
    };
    let mut parts: Vec<&str> = Vec::new();
    for c in joined.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// What one layer of a split holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// One distribution of at least the threshold.
    Distribution { name: String, size: u64 },
    /// The smaller distributions, by name.
    Group { names: Vec<String>, size: u64 },
    /// What no single distribution claims, the install markers, the
    /// whiteouts and the record.
    Top,
}

impl Part {
    /// How progress lines and the image's history name the layer.
    pub fn label(&self) -> String {
        match self {
            Part::Distribution { name, .. } => name.clone(),
            Part::Group { names, .. } if names.len() == 1 => names[0].clone(),
            Part::Group { names, .. } => format!("{} distributions", names.len()),
            Part::Top => "the rest".to_string(),
        }
    }
}

/// The image label (`prebuilder.split`) of a split layer image: each
/// layer's [`Part::label`], bottom up, as a JSON array; the image's last
/// layers are these.
pub fn label(parts: &[&Part]) -> String {
    let labels: Vec<String> = parts.iter().map(|p| p.label()).collect();
    serde_json::Value::from(labels).to_string()
}

/// The part names a [`label`] holds (empty when it is not one).
pub fn parse_label(label: &str) -> Vec<String> {
    serde_json::from_str(label).unwrap_or_default()
}

/// The image history of a split layer: `entry` (what the whole layer
/// installed) for the top, and before it one entry per lower part saying
/// which distributions it holds (`docker history` pairs entries with
/// layers, so there is one each).
pub fn history<'a>(
    entry: &serde_json::Value,
    parts: impl Iterator<Item = &'a Part>,
) -> Vec<serde_json::Value> {
    let by = entry
        .get("created_by")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    parts
        .map(|part| match part {
            Part::Top => entry.clone(),
            Part::Distribution { name, .. } => part_entry(entry, format!("{by}: {name}, alone")),
            Part::Group { names, .. } => part_entry(entry, format!("{by}: {}", names.join(", "))),
        })
        .collect()
}

fn part_entry(entry: &serde_json::Value, created_by: String) -> serde_json::Value {
    let mut e = entry.clone();
    e["created_by"] = created_by.into();
    e
}

/// The layers a snapshot is split into, and which layer each file goes to.
#[derive(Debug, Clone)]
pub struct Split {
    /// In image order; the last is always [`Part::Top`].
    pub parts: Vec<Part>,
    /// Path → index in `parts`; paths not here go on top.
    owner: HashMap<String, usize>,
    /// Every directory above a path in `owner`.
    above_distributions: HashSet<String>,
    /// Per part, the last path (in byte order, as setup.sh sorts the
    /// snapshot) a `RECORD` gives it; `None` for the top. Once a sorted
    /// snapshot is past it, that layer is complete ([`split_stream`]).
    last: Vec<Option<String>>,
}

impl Split {
    /// Split `distributions` (as found in one snapshot): each of at least
    /// `threshold` bytes alone, in reverse name order, the others in one group, and
    /// the top; at most `max_layers` (at least 2): past it, the smallest of
    /// the heavy ones join the group.
    pub fn plan(mut distributions: Vec<Distribution>, threshold: u64, max_layers: usize) -> Split {
        distributions.sort_by(|a, b| a.name.cmp(&b.name));
        distributions.dedup_by(|a, b| a.name == b.name);
        // No distribution worth a layer of its own: the layer stays whole
        // (a group and a top would share nothing more between pipelines).
        if distributions.iter().all(|d| d.size < threshold) {
            distributions.clear();
        }
        // A path two distributions claim is on top: its content is whichever
        // was installed last, which no single distribution's layer may decide.
        let mut claims: HashMap<&str, usize> = HashMap::new();
        for d in &distributions {
            let mut own: Vec<&str> = d.files.iter().map(String::as_str).collect();
            own.sort_unstable();
            own.dedup();
            for f in own {
                *claims.entry(f).or_default() += 1;
            }
        }
        let slots = max_layers.max(2) - 2;
        let mut heavy: Vec<&Distribution> = distributions
            .iter()
            .filter(|d| d.size >= threshold)
            .collect();
        if heavy.len() > slots {
            heavy.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.name.cmp(&b.name)));
            heavy.truncate(slots);
        }
        // Reverse name order: pip installs distributions of the same
        // dependency weight in that order (torch's CUDA wheels: cublas
        // last), so the layers below are complete first (`early`).
        heavy.sort_by(|a, b| b.name.cmp(&a.name));
        let heavy_names: HashSet<&str> = heavy.iter().map(|d| d.name.as_str()).collect();
        let mut parts: Vec<Part> = heavy
            .iter()
            .map(|d| Part::Distribution {
                name: d.name.clone(),
                size: d.size,
            })
            .collect();
        let group: Vec<&Distribution> = distributions
            .iter()
            .filter(|d| !heavy_names.contains(d.name.as_str()))
            .collect();
        if !group.is_empty() {
            parts.push(Part::Group {
                names: group.iter().map(|d| d.name.clone()).collect(),
                size: group.iter().map(|d| d.size).sum(),
            });
        }
        let group_index = heavy.len();
        let mut owner = HashMap::new();
        for d in &distributions {
            let index = heavy
                .iter()
                .position(|h| h.name == d.name)
                .unwrap_or(group_index);
            for f in &d.files {
                if claims.get(f.as_str()) == Some(&1) {
                    owner.insert(f.clone(), index);
                }
            }
        }
        parts.push(Part::Top);
        let last = last_paths(&owner, parts.len());
        let mut above_distributions = HashSet::new();
        for path in owner.keys() {
            for a in Path::new(path).ancestors().skip(1).filter_map(Path::to_str) {
                if a.is_empty() || !above_distributions.insert(a.to_string()) {
                    break;
                }
            }
        }
        Split {
            parts,
            owner,
            above_distributions,
            last,
        }
    }

    /// The snapshot's paths in the parts [`split_parts`] reads, as
    /// NUL-separated lists (`all`: setup.sh's list of the snapshot, sorted,
    /// `./`-prefixed, NUL-separated): first every directory above a
    /// distribution's file (held back by the writer, whose headers must be
    /// in before any file below them), then each layer's files, then the
    /// top's files and the other directories; each list in `all`'s order.
    /// Whatever is in `all` is in one list; a path whose entry turns out to
    /// be of another kind than guessed here (a directory listed alone is
    /// taken for a file) still ends where the writer puts it.
    pub fn part_lists(&self, all: &[u8]) -> Vec<Vec<u8>> {
        let paths: Vec<&[u8]> = all.split(|&b| b == 0).filter(|p| !p.is_empty()).collect();
        let rel = |p: &[u8]| relative(&String::from_utf8_lossy(p)).to_string();
        let mut parents: HashSet<String> = HashSet::new();
        for p in &paths {
            if let Some(parent) = Path::new(&rel(p)).parent().and_then(Path::to_str) {
                parents.insert(parent.to_string());
            }
        }
        let top = self.parts.len() - 1;
        let mut lists = vec![Vec::new(); self.parts.len() + 1];
        for p in paths {
            let r = rel(p);
            let part = if self.above_distributions.contains(&r) {
                0
            } else if parents.contains(&r) {
                top + 1
            } else {
                self.layer_of(&r) + 1
            };
            lists[part].extend_from_slice(p);
            lists[part].push(0);
        }
        lists
    }

    /// The paths layer `i` holds (relative to the root), as `RECORD`s give them.
    pub fn owned_by(&self, i: usize) -> HashSet<&str> {
        self.owner
            .iter()
            .filter(|(_, &layer)| layer == i)
            .map(|(p, _)| p.as_str())
            .collect()
    }

    /// The layer `path` (relative to the root) goes to.
    fn layer_of(&self, path: &str) -> usize {
        self.owner
            .get(path)
            .copied()
            .unwrap_or(self.parts.len() - 1)
    }
}

/// Per part (of `parts`), the last of the paths `owner` gives it, in byte order.
fn last_paths(owner: &HashMap<String, usize>, parts: usize) -> Vec<Option<String>> {
    let mut last: Vec<Option<String>> = vec![None; parts];
    for (path, &i) in owner {
        if last[i].as_ref().is_none_or(|l| path > l) {
            last[i] = Some(path.clone());
        }
    }
    last
}

/// Per output layer: its tar, and which snapshot directories it holds.
struct Out<W: Write> {
    builder: tar::Builder<Hashing<W>>,
    dirs: HashSet<String>,
}

impl<W: Write> Out<W> {
    /// Write the snapshot directories above `path` this layer lacks,
    /// outermost first.
    fn ancestors(&mut self, path: &str, dirs: &mut Dirs) -> io::Result<()> {
        let mut above: Vec<&str> = Path::new(path)
            .ancestors()
            .skip(1)
            .filter_map(Path::to_str)
            .filter(|a| !a.is_empty())
            .collect();
        above.reverse();
        for dir in above {
            self.dir(dir, dirs)?;
        }
        Ok(())
    }

    /// Write the snapshot directory `dir` here unless it is here already
    /// (nothing when the snapshot has no entry for it).
    fn dir(&mut self, dir: &str, dirs: &mut Dirs) -> io::Result<()> {
        let Some(header) = dirs.headers.get(dir) else {
            return Ok(());
        };
        if self.dirs.insert(dir.to_string()) {
            dirs.placed.insert(dir.to_string());
            let mut h = header.clone();
            self.builder.append_data(&mut h, dir, io::empty())?;
        }
        Ok(())
    }
}

/// The snapshot's directories read so far: their (normalised) headers, and
/// which some layer holds.
#[derive(Default)]
struct Dirs {
    headers: HashMap<String, tar::Header>,
    placed: HashSet<String>,
    /// Directories held back (they are above a distribution's file), in
    /// snapshot order.
    deferred: Vec<String>,
}

/// Write the layers of `split` from the snapshot (`outer`: the engine's tar
/// holding the setup's `layer.tar`, as [`super::write_layer`] takes it),
/// one into each of `outs` (as many as `split.parts`); whiteouts for
/// `deleted` and `record` (absolute path, content) in the top layer. Every
/// header normalised to `epoch`. Returns each layer's diff id.
pub fn write_split<R: Read, W: Write>(
    outer: R,
    deleted: &[u8],
    record: Option<(&str, &[u8])>,
    epoch: u64,
    split: &Split,
    outs: Vec<W>,
) -> io::Result<Vec<String>> {
    write_split_each(outer, (deleted, record, epoch), split, outs, None)
}

/// [`write_split`], handing each layer to `done` (index in `split.parts`,
/// diff id, its output) as soon as it is complete: with `done`, a layer
/// is complete once the snapshot (sorted, as setup.sh sorts it) is past
/// the last path its `RECORD`s give it, long before the end of a
/// multi-GB snapshot (issue 22: the engine loads it meanwhile).
pub fn write_split_each<R: Read, W: Write>(
    outer: R,
    top: OnTop<'_>,
    split: &Split,
    outs: Vec<W>,
    done: Option<Early<'_, W>>,
) -> io::Result<Vec<String>> {
    let mut outer = tar::Archive::new(outer);
    let mut entries = outer.entries()?;
    let inner = super::inner_tar(&mut entries, "the snapshot holds no layer.tar")?;
    write_split_tree_each(inner, top, split, outs, done)
}

/// What goes on top besides the snapshot's own entries: the deleted paths
/// (NUL-separated), the record (absolute path, content), and the epoch.
pub type OnTop<'a> = (&'a [u8], Option<(&'a str, &'a [u8])>, u64);

/// Where [`split_stream`] writes (a directory) and whom it tells of each
/// complete layer (its index in the split's parts, and it).
pub type LayerSink<'a> = (
    &'a Path,
    &'a mut dyn FnMut(usize, &Written) -> io::Result<()>,
);

/// What takes each complete layer: its index in the split's parts, its
/// diff id and its output, flushed.
pub type Done<'a, W> = &'a mut dyn FnMut(usize, String, W) -> io::Result<()>;

/// Early completion ([`write_split_each`]): `done` takes each complete
/// layer; `reopen` reads a complete layer back (a hard link that comes
/// after its target's layer is complete is written as a copy of the
/// target, from there).
pub struct Early<'a, W> {
    pub done: Done<'a, W>,
    pub reopen: &'a dyn Fn(usize) -> io::Result<File>,
}

/// How a layer is cut: the installed size from which a distribution is a
/// layer of its own, and the most layers one split makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub threshold: u64,
    pub max_layers: usize,
}

impl Default for Rule {
    fn default() -> Rule {
        Rule {
            threshold: DEFAULT_THRESHOLD,
            max_layers: MAX_LAYERS,
        }
    }
}

impl Rule {
    /// A rule from `PREBUILDER_SPLIT_THRESHOLD`'s value: bytes, with an
    /// optional `k`, `m` or `g` suffix (powers of 1024), or `off` (`None`:
    /// the layer stays whole).
    pub fn parse(value: &str) -> std::result::Result<Option<Rule>, String> {
        let v = value.trim().to_ascii_lowercase();
        if v == "off" {
            return Ok(None);
        }
        let (digits, shift) = match v.strip_suffix(['k', 'm', 'g']) {
            Some(d) if v.ends_with('k') => (d, 10),
            Some(d) if v.ends_with('m') => (d, 20),
            Some(d) => (d, 30),
            None => (v.as_str(), 0),
        };
        let n: u64 = digits.trim().parse().map_err(|_| {
            format!("{value:?} is not a size (bytes, or a number with k, m or g) nor `off`")
        })?;
        Ok(Some(Rule {
            threshold: n.saturating_mul(1 << shift),
            ..Rule::default()
        }))
    }
}

/// A snapshot tar as a region of a file: the whole file (direct mode's
/// snapshot), or the `layer.tar` inside the engine's tar around it.
#[derive(Debug, Clone)]
pub struct TreeFile {
    pub path: PathBuf,
    pub start: u64,
    pub len: u64,
}

impl TreeFile {
    /// The whole file at `path`.
    pub fn whole(path: &Path) -> io::Result<TreeFile> {
        let len = std::fs::metadata(path)?.len();
        Ok(TreeFile {
            path: path.to_path_buf(),
            start: 0,
            len,
        })
    }

    /// The first regular file inside the tar at `path` (the engine's
    /// download of the setup's `layer.tar`).
    pub fn inside(path: &Path) -> io::Result<TreeFile> {
        let mut outer = tar::Archive::new(File::open(path)?);
        for entry in outer.entries_with_seek()? {
            let entry = entry?;
            if entry.header().entry_type().is_file() {
                return Ok(TreeFile {
                    path: path.to_path_buf(),
                    start: entry.raw_file_position(),
                    len: entry.size(),
                });
            }
        }
        Err(io::Error::other("the snapshot holds no layer.tar"))
    }

    fn open(&self) -> io::Result<Region> {
        let mut file = File::open(&self.path)?;
        file.seek(SeekFrom::Start(self.start))?;
        Ok(Region {
            file,
            start: self.start,
            len: self.len,
            pos: 0,
        })
    }
}

/// A region of a file, read and sought within its bounds.
struct Region {
    file: File,
    start: u64,
    len: u64,
    pos: u64,
}

impl Read for Region {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read(&mut buf[..want])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Region {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
        }
        .ok_or_else(|| io::Error::other("seek outside the snapshot"))?;
        self.file.seek(SeekFrom::Start(self.start + target))?;
        self.pos = target;
        Ok(target)
    }
}

/// One layer [`split_tree`] wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub part: Part,
    /// The layer tar (uncompressed).
    pub path: PathBuf,
    pub diff_id: String,
    pub size: u64,
}

/// The one function every builder cuts its installed tree with: the
/// layers of `snapshot` (the tree's tar, as the setup script or direct
/// mode writes it), whiteouts for `deleted` and `record` (absolute path,
/// content) on top, every header dated `epoch`, written into `dir` as
/// `layer-<i>.tar`, in image order. `None` for `rule`: one layer, the
/// unsplit one (as is a tree without a distribution over the threshold).
/// Reads the snapshot twice: its `RECORD`s (seeking past everything
/// else), then every entry.
pub fn split_tree(
    snapshot: &TreeFile,
    deleted: &[u8],
    record: Option<(&str, &[u8])>,
    epoch: u64,
    rule: Option<Rule>,
    dir: &Path,
) -> io::Result<Vec<Written>> {
    let found = match rule {
        Some(_) => records_in(snapshot.open()?)?,
        None => Vec::new(),
    };
    let split = plan_from_records(&found, rule);
    let reader = BufReader::with_capacity(1 << 20, snapshot.open()?);
    write_files(dir, split, |outs, split| {
        write_split_tree(reader, deleted, record, epoch, split, outs)
    })
}

/// The split `rule` makes of a snapshot whose `RECORD` files are `records`
/// (path relative to the root, content; as [`records_in`] finds them):
/// one layer when `rule` is `None`.
pub fn plan_from_records(records: &[(String, Vec<u8>)], rule: Option<Rule>) -> Split {
    match rule {
        Some(rule) => {
            let dists = records
                .iter()
                .filter_map(|(p, b)| Distribution::from_record(p, b))
                .collect();
            Split::plan(dists, rule.threshold, rule.max_layers)
        }
        None => Split::plan(Vec::new(), 0, MAX_LAYERS),
    }
}

/// [`split_tree`] in one pass over a stream: the engine's tar around the
/// setup's `layer.tar` (as [`write_split`] reads it, never seeking), cut
/// by `split` (planned beforehand from the snapshot's `RECORD`s,
/// [`plan_from_records`]), into `dir` as `layer-<i>.tar`. Same layers,
/// byte for byte, as [`split_tree`] of that snapshot. Each layer goes to
/// `ready` as soon as it is complete ([`write_split_each`]), the top last.
pub fn split_stream<R: Read>(
    outer: R,
    deleted: &[u8],
    record: Option<(&str, &[u8])>,
    epoch: u64,
    split: Split,
    (dir, ready): LayerSink<'_>,
) -> io::Result<Vec<Written>> {
    early_files(&split, (dir, ready), |outs, early| {
        write_split_each(outer, (deleted, record, epoch), &split, outs, Some(early)).map(|_| ())
    })
}

/// The layer files of `split` in `dir`, written by `write` with early
/// completion: each to `ready` once complete (its file flushed and closed).
fn early_files(
    split: &Split,
    (dir, ready): LayerSink<'_>,
    write: impl FnOnce(Vec<BufWriter<File>>, Early<'_, BufWriter<File>>) -> io::Result<()>,
) -> io::Result<Vec<Written>> {
    let paths = layer_paths(dir, split);
    let outs = create_all(&paths)?;
    let mut written: Vec<Option<Written>> = vec![None; paths.len()];
    let mut done = |i: usize, diff_id: String, out: BufWriter<File>| -> io::Result<()> {
        out.into_inner().map_err(|e| e.into_error())?;
        let w = Written {
            part: split.parts[i].clone(),
            path: paths[i].clone(),
            size: std::fs::metadata(&paths[i])?.len(),
            diff_id,
        };
        ready(i, &w)?;
        written[i] = Some(w);
        Ok(())
    };
    let reopen = |i: usize| File::open(&paths[i]);
    write(
        outs,
        Early {
            done: &mut done,
            reopen: &reopen,
        },
    )?;
    Ok(written.into_iter().flatten().collect())
}

/// `dir/layer-<i>.tar` for each part of `split`.
fn layer_paths(dir: &Path, split: &Split) -> Vec<PathBuf> {
    (0..split.parts.len())
        .map(|i| dir.join(format!("layer-{i}.tar")))
        .collect()
}

fn create_all(paths: &[PathBuf]) -> io::Result<Vec<BufWriter<File>>> {
    paths
        .iter()
        .map(|p| Ok(BufWriter::with_capacity(1 << 20, File::create(p)?)))
        .collect()
}

/// The layer files of `split` in `dir`, filled by `write` (which returns
/// each layer's diff id).
fn write_files(
    dir: &Path,
    split: Split,
    write: impl FnOnce(Vec<BufWriter<File>>, &Split) -> io::Result<Vec<String>>,
) -> io::Result<Vec<Written>> {
    let paths = layer_paths(dir, &split);
    let ids = write(create_all(&paths)?, &split)?;
    let mut written = Vec::with_capacity(ids.len());
    for ((part, path), diff_id) in split.parts.into_iter().zip(paths).zip(ids) {
        let size = std::fs::metadata(&path)?.len();
        written.push(Written {
            part,
            path,
            diff_id,
            size,
        });
    }
    Ok(written)
}

/// `RECORD` files in a snapshot tar, seeking past every other entry's
/// data: what [`Distribution::from_record`] takes.
pub fn records_in<R: Read + Seek>(snapshot: R) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut archive = tar::Archive::new(snapshot);
    let mut found = Vec::new();
    for entry in archive.entries_with_seek()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path()?.to_string_lossy().into_owned();
        let rel = relative(&path);
        if rel.ends_with(".dist-info/RECORD") {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes)?;
            found.push((rel.to_string(), bytes));
        }
    }
    Ok(found)
}

/// [`write_split`] from the snapshot's own tar (not wrapped by the engine).
///
/// Directories: one above no distribution's file is written on top where
/// the snapshot has it (so a split that is only the top is the unsplit
/// layer, byte for byte); one above a distribution's file is held back and
/// written into each layer just before the first entry it holds there,
/// and on top at the end if no layer took it.
pub fn write_split_tree<R: Read, W: Write>(
    snapshot: R,
    deleted: &[u8],
    record: Option<(&str, &[u8])>,
    epoch: u64,
    split: &Split,
    outs: Vec<W>,
) -> io::Result<Vec<String>> {
    write_split_tree_each(snapshot, (deleted, record, epoch), split, outs, None)
}

/// [`write_split_tree`], handing each layer to `done` as soon as it is
/// complete (see [`write_split_each`]).
fn write_split_tree_each<R: Read, W: Write>(
    snapshot: R,
    (deleted, record, epoch): OnTop<'_>,
    split: &Split,
    outs: Vec<W>,
    done: Option<Early<'_, W>>,
) -> io::Result<Vec<String>> {
    let by_last = done.is_some();
    let mut writer = Writer::new(split, outs, done, by_last)?;
    writer.place_all(snapshot, record.map(|(path, _)| relative(path)), epoch)?;
    writer.finish(deleted, record, epoch)
}

/// The layers of `split` from the snapshot in the parts
/// [`Split::part_lists`] lists, each part GNU tar's archive of that list
/// (`build::setup::part_tar_command`), as `parts` gives them: into `dir` as
/// `layer-<i>.tar`, each layer to `ready` once its part is in (the
/// top last). The same layers, byte for byte, as [`split_stream`] of the
/// whole sorted snapshot, but for a hard link to a file of another part:
/// a file of its own here (each part is a tar of its own). `made`: the
/// first layers were made elsewhere (while the setup ran, [`early`]):
/// their parts are empty, and the directories above their files count as
/// held by them (not put on top).
pub fn split_parts(
    parts: impl Iterator<Item = io::Result<Box<dyn Read + Send>>>,
    (deleted, record, epoch): OnTop<'_>,
    (split, made): (Split, usize),
    sink: LayerSink<'_>,
) -> io::Result<Vec<Written>> {
    early_files(&split, sink, |outs, early| {
        let mut writer = Writer::new(&split, outs, Some(early), false)?;
        for (path, _) in split.owner.iter().filter(|(_, &i)| i < made) {
            for a in Path::new(path).ancestors().skip(1).filter_map(Path::to_str) {
                if a.is_empty() || !writer.dirs.placed.insert(a.to_string()) {
                    break;
                }
            }
        }
        let skip = record.map(|(path, _)| relative(path));
        let top = split.parts.len() - 1;
        let mut count = 0;
        for (i, part) in parts.enumerate() {
            let mut part = part?;
            writer.place_all(&mut part, skip, epoch)?;
            // Past the tar's end (its padding): where a failure of what
            // wrote the part shows (`tar`'s status, after its output).
            io::copy(&mut part, &mut io::sink())?;
            // Part 0 holds directories; part i the layer i - 1 (the top last).
            if (1..=top).contains(&i) {
                writer.complete(i - 1)?;
            }
            count = i + 1;
        }
        if count != split.parts.len() + 1 {
            return Err(io::Error::other(format!(
                "{count} of the snapshot's {} parts came",
                split.parts.len() + 1
            )));
        }
        writer.finish(deleted, record, epoch).map(|_| ())
    })
}

/// The output of layer `i` of `outs`, still open (a file `path` needs).
fn open<'o, W: Write>(
    outs: &'o mut [Option<Out<W>>],
    parts: &[Part],
    i: usize,
    path: &str,
) -> io::Result<&'o mut Out<W>> {
    outs[i].as_mut().ok_or_else(|| {
        io::Error::other(format!(
            "{path} belongs in the layer of {}, which was already complete: a hard link \
             across distributions, or a snapshot out of order; \
             PREBUILDER_SPLIT_THRESHOLD=off builds one layer",
            parts[i].label()
        ))
    })
}

/// The split being written: the layers, the snapshot's directories, and
/// where each file went.
struct Writer<'a, 'd, W: Write> {
    /// `None` once complete (its diff id in `ids`).
    outs: Vec<Option<Out<W>>>,
    ids: Vec<Option<String>>,
    dirs: Dirs,
    /// Where each file went, for hard links (they stay with their target).
    placed: HashMap<String, usize>,
    /// With `done`: where each regular file's bytes are in a layer that
    /// completes early (layer, offset, size), for [`Early::reopen`].
    data_at: HashMap<String, (usize, u64, u64)>,
    split: &'a Split,
    /// Takes each layer once complete; `None`: every layer at the end.
    done: Option<Early<'d, W>>,
    /// With `done`: a layer is complete once the (sorted) snapshot is
    /// past its last path; else when told ([`split_parts`]).
    by_last: bool,
}

impl<'a, 'd, W: Write> Writer<'a, 'd, W> {
    fn new(
        split: &'a Split,
        outs: Vec<W>,
        done: Option<Early<'d, W>>,
        by_last: bool,
    ) -> io::Result<Self> {
        if outs.len() != split.parts.len() {
            return Err(io::Error::other(format!(
                "{} outputs for a split of {} layers",
                outs.len(),
                split.parts.len()
            )));
        }
        let outs = outs
            .into_iter()
            .map(|w| {
                Some(Out {
                    builder: tar::Builder::new(Hashing {
                        inner: w,
                        hasher: Sha256::new(),
                        written: 0,
                    }),
                    dirs: HashSet::new(),
                })
            })
            .collect();
        Ok(Writer {
            outs,
            ids: vec![None; split.parts.len()],
            dirs: Dirs::default(),
            placed: HashMap::new(),
            data_at: HashMap::new(),
            split,
            done,
            by_last,
        })
    }

    /// Every entry of `snapshot` (a tar) but the root and `skip`.
    fn place_all<R: Read>(
        &mut self,
        snapshot: R,
        skip: Option<&str>,
        epoch: u64,
    ) -> io::Result<()> {
        let mut archive = tar::Archive::new(snapshot);
        for entry in archive.entries()? {
            let entry = entry?;
            let raw = entry.path()?.to_string_lossy().into_owned();
            let path = relative(&raw).to_string();
            if path.is_empty() || skip == Some(path.as_str()) {
                continue;
            }
            self.place(entry, path, epoch)?;
        }
        Ok(())
    }

    fn top(&self) -> usize {
        self.outs.len() - 1
    }

    /// Close layer `i`: its diff id, and its output to `done`.
    fn complete(&mut self, i: usize) -> io::Result<()> {
        let Some(out) = self.outs[i].take() else {
            return Ok(());
        };
        let mut hashing = out.builder.into_inner()?;
        hashing.flush()?;
        let id = format!("sha256:{}", hex::encode(hashing.hasher.finalize()));
        self.ids[i] = Some(id.clone());
        match self.done.as_mut() {
            Some(early) => (early.done)(i, id, hashing.inner),
            None => Ok(()),
        }
    }

    /// With `done`, every layer but the top whose last path `path` is at
    /// or past (the snapshot is in byte order: nothing more comes for it).
    fn complete_before(&mut self, path: &str) -> io::Result<()> {
        if self.done.is_none() || !self.by_last {
            return Ok(());
        }
        for i in 0..self.top() {
            let past = match &self.split.last[i] {
                Some(last) => last.as_str() <= path,
                None => false,
            };
            if past && self.outs[i].is_some() {
                self.complete(i)?;
            }
        }
        Ok(())
    }

    /// One snapshot entry (at `path`, relative) into its layer.
    fn place<R: Read>(
        &mut self,
        mut entry: tar::Entry<R>,
        path: String,
        epoch: u64,
    ) -> io::Result<()> {
        let mut header = entry.header().clone();
        reproducible::normalize_header(&mut header, epoch);
        let kind = header.entry_type();
        let top = self.top();
        if kind.is_dir() {
            self.dirs.headers.insert(path.clone(), header);
            if self.split.above_distributions.contains(&path) {
                self.dirs.deferred.push(path);
            } else {
                let out = open(&mut self.outs, &self.split.parts, top, &path)?;
                out.ancestors(&path, &mut self.dirs)?;
                out.dir(&path, &mut self.dirs)?;
            }
            return Ok(());
        }
        let link = match kind {
            tar::EntryType::Symlink | tar::EntryType::Link => Some(
                entry
                    .link_name()?
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
            _ => None,
        };
        let layer = match (&link, kind) {
            (Some(target), tar::EntryType::Link) => self
                .placed
                .get(relative(target))
                .copied()
                .unwrap_or_else(|| self.split.layer_of(&path)),
            _ => self.split.layer_of(&path),
        };
        if let (Some(target), tar::EntryType::Link) = (&link, kind) {
            if self.outs[layer].is_none() {
                return self.copy_of_link(header, path, relative(target));
            }
        }
        let out = open(&mut self.outs, &self.split.parts, layer, &path)?;
        out.ancestors(&path, &mut self.dirs)?;
        let size = header.size()?;
        match (link, kind) {
            (Some(target), tar::EntryType::Symlink) => {
                out.builder.append_link(&mut header, &path, target)?
            }
            (Some(target), _) => out
                .builder
                .append_link(&mut header, &path, relative(&target))?,
            _ => out.builder.append_data(&mut header, &path, &mut entry)?,
        }
        self.placed_in(path, layer, kind.is_file().then_some(size))
    }

    /// `path` is in `layer` now (a regular file of `size` bytes, just
    /// written there, when `file` is that size): noted for hard links,
    /// and for early completion (where a file's bytes are, for a copy).
    fn placed_in(&mut self, path: String, layer: usize, file: Option<u64>) -> io::Result<()> {
        let early = self.done.is_some() && self.by_last && layer != self.top();
        if let (Some(size), true) = (file, early) {
            let end = self.outs[layer]
                .as_ref()
                .map_or(0, |o| o.builder.get_ref().written);
            self.data_at
                .insert(path.clone(), (layer, end - size.div_ceil(512) * 512, size));
        }
        self.complete_before(&path)?;
        self.placed.insert(path, layer);
        Ok(())
    }

    /// A hard link at `path` to `target`, whose layer is already complete:
    /// a copy of the target (read back from that layer) where `path` goes
    /// on its own. The tree holds the same bytes at both paths, as two
    /// files. Only with early completion (else no layer is complete yet).
    fn copy_of_link(
        &mut self,
        mut header: tar::Header,
        path: String,
        target: &str,
    ) -> io::Result<()> {
        let found = self.data_at.get(target).copied();
        let (Some(early), Some((from, offset, size))) = (self.done.as_ref(), found) else {
            let layer = self.placed.get(target).copied().unwrap_or(self.top());
            return open(&mut self.outs, &self.split.parts, layer, &path).map(|_| ());
        };
        let mut bytes = (early.reopen)(from)?;
        bytes.seek(io::SeekFrom::Start(offset))?;
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(size);
        header.as_old_mut().linkname.fill(0);
        let layer = self.split.layer_of(&path);
        let out = open(&mut self.outs, &self.split.parts, layer, &path)?;
        out.ancestors(&path, &mut self.dirs)?;
        out.builder
            .append_data(&mut header, &path, bytes.take(size))?;
        self.placed_in(path, layer, Some(size))
    }

    /// The held-back directories no layer took, the whiteouts and the
    /// record on top; each layer's diff id.
    fn finish(
        mut self,
        deleted: &[u8],
        record: Option<(&str, &[u8])>,
        epoch: u64,
    ) -> io::Result<Vec<String>> {
        let top = self.top();
        // Nothing under them was in the snapshot: on top, so the tree has
        // every directory of the snapshot.
        for dir in std::mem::take(&mut self.dirs.deferred) {
            if !self.dirs.placed.contains(&dir) {
                let out = open(&mut self.outs, &self.split.parts, top, &dir)?;
                out.ancestors(&dir, &mut self.dirs)?;
                out.dir(&dir, &mut self.dirs)?;
            }
        }
        for p in topmost_deleted(deleted) {
            // The directory above a whiteout, as the snapshot has it: else
            // the engine makes it when it applies the top layer, dated then
            // (the unsplit layer has it beside the whiteout).
            let out = open(&mut self.outs, &self.split.parts, top, &p)?;
            out.ancestors(&p, &mut self.dirs)?;
            out.builder.append_data(
                &mut file_header(0, 0o600, epoch),
                whiteout(&p),
                io::empty(),
            )?;
        }
        if let Some((path, content)) = record {
            let mut h = file_header(content.len() as u64, 0o644, epoch);
            open(&mut self.outs, &self.split.parts, top, path)?
                .builder
                .append_data(&mut h, relative(path), content)?;
        }
        // The rest in image order, the top last.
        for i in 0..self.outs.len() {
            self.complete(i)?;
        }
        Ok(self.ids.into_iter().flatten().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const SITE: &str = "usr/lib/python3/site-packages";
    pub(super) const EPOCH: u64 = 1_600_000_000;

    /// One snapshot entry: path (with `./`, as GNU tar writes it), kind, body.
    #[derive(Clone)]
    pub(super) enum E {
        Dir(&'static str),
        File(String, Vec<u8>),
        Link(String, String),
        Hard(String, String),
    }

    fn file(path: &str, body: &str) -> E {
        E::File(path.to_string(), body.as_bytes().to_vec())
    }

    impl E {
        /// The entry's path, as written in the tar.
        pub(super) fn path(&self) -> &str {
            match self {
                E::Dir(p) => p,
                E::File(p, _) | E::Link(p, _) | E::Hard(p, _) => p,
            }
        }
    }

    pub(super) fn tar_of(entries: &[E]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let header = |kind, size: u64, mode| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_size(size);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_mtime(1_700_000_000);
            h
        };
        for e in entries {
            match e {
                E::Dir(p) => b
                    .append_data(
                        &mut header(tar::EntryType::Directory, 0, 0o755),
                        p,
                        io::empty(),
                    )
                    .unwrap(),
                E::File(p, body) => b
                    .append_data(
                        &mut header(tar::EntryType::Regular, body.len() as u64, 0o644),
                        p,
                        &body[..],
                    )
                    .unwrap(),
                E::Link(p, t) => b
                    .append_link(&mut header(tar::EntryType::Symlink, 0, 0o777), p, t)
                    .unwrap(),
                E::Hard(p, t) => b
                    .append_link(&mut header(tar::EntryType::Link, 0, 0o644), p, t)
                    .unwrap(),
            }
        }
        b.into_inner().unwrap()
    }

    /// The engine's wrapping: a tar holding `layer.tar`.
    fn outer(inner: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(inner.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, "layer.tar", inner).unwrap();
        b.into_inner().unwrap()
    }

    fn record(files: &[(&str, usize)]) -> String {
        files
            .iter()
            .map(|(p, size)| format!("{p},sha256=x,{size}\n"))
            .collect()
    }

    /// A pipeline's snapshot: each (name, version, files with sizes) as pip
    /// installs it under SITE, plus `extra` entries, sorted as setup.sh sorts.
    /// A distribution as a fixture: name, version, (RECORD path, size) each.
    pub(super) type Dist = (&'static str, &'static str, &'static [(&'static str, usize)]);

    pub(super) fn install(dists: &[Dist], extra: &[E]) -> Vec<E> {
        let mut all: BTreeMap<String, E> = BTreeMap::new();
        let mut dir = |p: String| {
            let p: &'static str = Box::leak(format!("./{p}/").into_boxed_str());
            all.entry(p.trim_end_matches('/').to_string())
                .or_insert(E::Dir(p));
        };
        for d in ["usr", "usr/lib", "usr/lib/python3", SITE, "usr/bin"] {
            dir(d.to_string());
        }
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        for (name, version, listed) in dists {
            let info = format!("{name}-{version}.dist-info");
            let mut rows: Vec<(String, usize)> = Vec::new();
            for (p, size) in listed.iter() {
                let full = resolve(Path::new(SITE), p).unwrap();
                let mut parent = Path::new(&full).parent();
                while let Some(d) = parent.filter(|d| !d.as_os_str().is_empty()) {
                    dir(d.to_string_lossy().into_owned());
                    parent = d.parent();
                }
                files.push((full, format!("{name}:{p}:").repeat(*size).into_bytes()));
                rows.push((p.to_string(), *size));
            }
            dir(format!("{SITE}/{info}"));
            let markers = [
                (format!("{info}/INSTALLER"), b"pip\n".to_vec()),
                (format!("{info}/REQUESTED"), Vec::new()),
            ];
            for (p, body) in markers {
                rows.push((p.clone(), body.len()));
                files.push((format!("{SITE}/{p}"), body));
            }
            rows.push((format!("{info}/RECORD"), 0));
            let refs: Vec<(&str, usize)> = rows.iter().map(|(p, s)| (p.as_str(), *s)).collect();
            files.push((format!("{SITE}/{info}/RECORD"), record(&refs).into_bytes()));
        }
        for (p, body) in files {
            all.insert(p.clone(), E::File(format!("./{p}"), body));
        }
        for e in extra {
            let key = match e {
                E::Dir(p) => relative(p).to_string(),
                E::File(p, _) | E::Link(p, _) | E::Hard(p, _) => relative(p).to_string(),
            };
            all.insert(key, e.clone());
        }
        all.into_values().collect()
    }

    pub(super) fn distributions(snapshot: &[u8]) -> Vec<Distribution> {
        records_in(io::Cursor::new(snapshot))
            .unwrap()
            .iter()
            .filter_map(|(p, b)| Distribution::from_record(p, b))
            .collect()
    }

    pub(super) fn split_layers(
        snapshot: &[u8],
        deleted: &[u8],
        threshold: u64,
        max: usize,
    ) -> (Split, Vec<Vec<u8>>, Vec<String>) {
        let split = Split::plan(distributions(snapshot), threshold, max);
        let outs = vec![Vec::new(); split.parts.len()];
        let mut layers = Vec::new();
        let ids = {
            let mut cells: Vec<io::Cursor<Vec<u8>>> =
                outs.into_iter().map(io::Cursor::new).collect();
            let ids = write_split(
                &outer(snapshot)[..],
                deleted,
                Some(("/opt/apache/beam/prebuilder-record.json", b"{}")),
                EPOCH,
                &split,
                cells.iter_mut().collect(),
            )
            .unwrap();
            layers.extend(cells.into_iter().map(io::Cursor::into_inner));
            ids
        };
        (split, layers, ids)
    }

    fn unsplit(snapshot: &[u8], deleted: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        super::super::write_layer(
            &outer(snapshot)[..],
            deleted,
            Some(("/opt/apache/beam/prebuilder-record.json", b"{}")),
            EPOCH,
            &mut out,
        )
        .unwrap();
        out
    }

    /// A file tree as an engine builds it from layers: path → (kind, mode,
    /// uid, mtime, link target, content), whiteouts applied.
    type Tree = BTreeMap<String, (u8, u32, u64, u64, String, Vec<u8>)>;

    fn apply(tree: &mut Tree, layer: &[u8]) {
        let mut a = tar::Archive::new(layer);
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let (dir, name) = match path.rsplit_once('/') {
                Some((d, n)) => (format!("{d}/"), n.to_string()),
                None => (String::new(), path.clone()),
            };
            if let Some(gone) = name.strip_prefix(".wh.") {
                let gone = format!("{dir}{gone}");
                tree.retain(|p, _| p != &gone && !p.starts_with(&format!("{gone}/")));
                continue;
            }
            let h = e.header().clone();
            let link = e
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut body = Vec::new();
            e.read_to_end(&mut body).unwrap();
            if h.entry_type() == tar::EntryType::Link {
                // A hard link: the target's content, as the engine makes it.
                body = tree[&link].5.clone();
            }
            tree.insert(
                path,
                (
                    h.entry_type().as_byte(),
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                    h.mtime().unwrap(),
                    link,
                    body,
                ),
            );
        }
    }

    fn base() -> Tree {
        let mut t = Tree::new();
        apply(
            &mut t,
            &tar_of(&[
                E::Dir("usr/"),
                E::Dir("usr/lib/"),
                E::Dir("usr/lib/python3/"),
                E::Dir("usr/lib/python3/site-packages/"),
                E::Dir("usr/lib/python3/site-packages/old/"),
                file("usr/lib/python3/site-packages/old/__init__.py", "old"),
                E::Dir("usr/lib/python3/site-packages/old-1.0.dist-info/"),
                file("usr/lib/python3/site-packages/old-1.0.dist-info/RECORD", ""),
                file("etc/gone.conf", "x"),
                E::Dir("usr/lib/python3/site-packages/torch/"),
                file("usr/lib/python3/site-packages/torch/gone.py", "old torch"),
            ]),
        );
        t
    }

    fn entries(layer: &[u8]) -> Vec<String> {
        tar::Archive::new(layer)
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    const TORCH: Dist = (
        "torch",
        "2.5.1",
        &[
            ("torch/__init__.py", 300),
            ("torch/lib/libtorch.so", 900),
            ("torch/lib/libtorch_hard.so", 1),
            ("../../../bin/torchrun", 10),
        ],
    );
    const CUDNN: Dist = (
        "nvidia_cudnn_cu12",
        "9.1.0.70",
        &[
            ("nvidia/__init__.py", 0),
            ("nvidia/cudnn/lib/libcudnn.so", 700),
        ],
    );
    const CUBLAS: Dist = (
        "nvidia_cublas_cu12",
        "12.4.5.8",
        &[
            ("nvidia/__init__.py", 0),
            ("nvidia/cublas/lib/libcublas.so", 800),
        ],
    );
    const SIX: Dist = ("six", "1.16.0", &[("six.py", 20)]);
    const IDNA: Dist = ("idna", "3.7", &[("idna/__init__.py", 30)]);

    /// Sizes in the fixtures are repeats of a ~20-byte line: the threshold
    /// 500 makes torch and the nvidia wheels heavy, six and idna small.
    const THRESHOLD: u64 = 500;

    fn gpu_pipeline(extra_dists: &[Dist]) -> Vec<E> {
        let mut dists = vec![TORCH, CUDNN, CUBLAS];
        dists.extend_from_slice(extra_dists);
        install(
            &dists,
            &[
                // Outside every RECORD: the record's place, a stray cache.
                file("./root/.cache/pip/selfcheck.json", "{}"),
                E::Dir("./root/"),
                E::Dir("./root/.cache/"),
                E::Dir("./root/.cache/pip/"),
                E::Dir("./usr/lib/python3/site-packages/emptydir/"),
                E::Dir("./opt/"),
                E::Dir("./opt/apache/"),
                E::Dir("./opt/apache/beam/"),
                file("./opt/apache/beam/prebuilder-record.json", "freeze"),
                E::Link(
                    "./usr/bin/torch-link".into(),
                    "../lib/python3/site-packages/torch/__init__.py".into(),
                ),
                E::Hard(
                    "./usr/lib/python3/site-packages/torch/lib/libtorch_hard.so".into(),
                    "./usr/lib/python3/site-packages/torch/lib/libtorch.so".into(),
                ),
            ],
        )
    }

    const DELETED: &[u8] = b"./usr/lib/python3/site-packages/old\0./usr/lib/python3/site-packages/old/__init__.py\0./usr/lib/python3/site-packages/old-1.0.dist-info\0./usr/lib/python3/site-packages/old-1.0.dist-info/RECORD\0./etc/gone.conf\0./usr/lib/python3/site-packages/torch/gone.py\0";

    #[test]
    fn records_name_the_files_their_distribution_installed() {
        let bytes = b"torch/__init__.py,sha256=abc,300\n\"torch/a,b.py\",sha256=d,5\n../../../bin/torchrun,sha256=e,10\ntorch-2.5.1.dist-info/RECORD,,\ntorch-2.5.1.dist-info/REQUESTED,sha256=f,0\ntorch-2.5.1.dist-info/INSTALLER,sha256=g,4\n/etc/abs.conf,sha256=h,1\n../../../../../../escape,,\n";
        let d = Distribution::from_record(
            "./usr/lib/python3/site-packages/torch-2.5.1.dist-info/RECORD",
            bytes,
        )
        .unwrap();
        assert_eq!(d.name, "torch-2.5.1");
        assert_eq!(
            d.files,
            [
                "usr/lib/python3/site-packages/torch/__init__.py",
                "usr/lib/python3/site-packages/torch/a,b.py",
                "usr/bin/torchrun",
                "usr/lib/python3/site-packages/torch-2.5.1.dist-info/INSTALLER",
                "etc/abs.conf",
            ]
        );
        assert_eq!(d.size, 300 + 5 + 10 + 4 + 1);
        assert!(Distribution::from_record("usr/lib/x.egg-info/RECORD", b"").is_none());
        assert!(Distribution::from_record("usr/lib/x-1.dist-info/METADATA", b"").is_none());
    }

    #[test]
    fn heavy_distributions_alone_in_reverse_name_order_the_rest_grouped_then_the_top() {
        let snapshot = tar_of(&gpu_pipeline(&[SIX, IDNA]));
        let (split, layers, _) = split_layers(&snapshot, DELETED, THRESHOLD, MAX_LAYERS);
        let labels: Vec<String> = split.parts.iter().map(Part::label).collect();
        assert_eq!(
            labels,
            [
                "torch-2.5.1",
                "nvidia_cudnn_cu12-9.1.0.70",
                "nvidia_cublas_cu12-12.4.5.8",
                "2 distributions",
                "the rest"
            ]
        );
        let torch = entries(&layers[0]);
        assert!(torch.contains(&format!("{SITE}/torch/lib/libtorch.so")));
        assert!(torch.contains(&"usr/bin/torchrun".to_string()));
        assert!(
            torch.contains(&format!("{SITE}/torch/lib/libtorch_hard.so")),
            "a hard link stays with its target"
        );
        assert!(torch.contains(&format!("{SITE}/torch-2.5.1.dist-info/INSTALLER")));
        let group = entries(&layers[3]);
        assert!(group.contains(&format!("{SITE}/six.py")));
        assert!(group.contains(&format!("{SITE}/idna/__init__.py")));
        let top = entries(&layers[4]);
        for p in [
            format!("{SITE}/nvidia/__init__.py"),
            format!("{SITE}/torch-2.5.1.dist-info/RECORD"),
            format!("{SITE}/torch-2.5.1.dist-info/REQUESTED"),
            "root/.cache/pip/selfcheck.json".to_string(),
            format!("{SITE}/emptydir"),
            "usr/bin/torch-link".to_string(),
        ] {
            assert!(top.contains(&p), "{p} on top: {top:?}");
            for lower in &layers[..4] {
                assert!(!entries(lower).contains(&p), "{p} only on top");
            }
        }
        // Every layer's entries come in the snapshot's (byte) order, each
        // directory before what is under it.
        for layer in &layers {
            let names = entries(layer);
            let files: Vec<&String> = names.iter().filter(|n| !n.contains(".wh.")).collect();
            for (i, n) in files.iter().enumerate() {
                if let Some((parent, _)) = n.rsplit_once('/') {
                    assert!(
                        files[..i].iter().any(|p| *p == parent) || parent.is_empty(),
                        "{parent} before {n} in {files:?}"
                    );
                }
            }
        }
    }

    /// Issue 22's test: the top holds the whiteouts of what pip removed from
    /// the base, and prebuilder's record in place of the snapshot's.
    #[test]
    fn whiteouts_and_the_record_are_on_top() {
        let snapshot = tar_of(&gpu_pipeline(&[SIX]));
        let (_, layers, _) = split_layers(&snapshot, DELETED, THRESHOLD, MAX_LAYERS);
        let top = layers.last().unwrap();
        let names = entries(top);
        assert!(names.contains(&format!("{SITE}/.wh.old")));
        assert!(names.contains(&format!("{SITE}/.wh.old-1.0.dist-info")));
        assert!(names.contains(&"etc/.wh.gone.conf".to_string()));
        assert!(
            !names.iter().any(|n| n.contains(".wh.__init__.py")),
            "only the topmost deleted path"
        );
        for lower in &layers[..layers.len() - 1] {
            assert!(!entries(lower).iter().any(|n| n.contains(".wh.")));
        }
        // The snapshot's directory above each whiteout is in the same layer
        // (else an engine dates the one it makes to apply it).
        for whiteout in names.iter().filter(|n| n.contains(".wh.")) {
            let (parent, _) = whiteout.rsplit_once('/').unwrap();
            if parent != "etc" {
                assert!(
                    names.iter().any(|n| n.trim_end_matches('/') == parent),
                    "{parent} with {whiteout} in {names:?}"
                );
            }
        }
        let mut tree = Tree::new();
        apply(&mut tree, top);
        assert_eq!(tree["opt/apache/beam/prebuilder-record.json"].5, b"{}");
    }

    /// Issue 22's test: applying the split layers gives the tree the
    /// unsplit layer gives, on a base with paths pip removed.
    #[test]
    fn the_split_tree_equals_the_unsplit_one() {
        for extra in [&[][..], &[SIX, IDNA][..]] {
            let snapshot = tar_of(&gpu_pipeline(extra));
            for (threshold, max) in [
                (THRESHOLD, MAX_LAYERS),
                (THRESHOLD, 3),
                (0, 2),
                (1 << 40, 16),
            ] {
                let (split, layers, ids) = split_layers(&snapshot, DELETED, threshold, max);
                let mut whole = base();
                apply(&mut whole, &unsplit(&snapshot, DELETED));
                let mut parts = base();
                for layer in &layers {
                    apply(&mut parts, layer);
                }
                assert_eq!(parts, whole, "threshold {threshold}, max {max}");
                assert!(!whole.contains_key("etc/gone.conf"));
                assert!(!whole.contains_key(&format!("{SITE}/old/__init__.py")));
                assert_eq!(ids.len(), split.parts.len());
                for (layer, id) in layers.iter().zip(&ids) {
                    assert_eq!(
                        id,
                        &format!("sha256:{}", hex::encode(Sha256::digest(layer)))
                    );
                }
            }
        }
    }

    /// Issue 22's test: the layer count bound holds; past it the smallest
    /// heavy distributions join the group.
    #[test]
    fn the_layer_count_is_bounded() {
        let many: Vec<(String, Vec<(String, usize)>)> = (0..40)
            .map(|i| {
                (
                    format!("pkg{i:02}"),
                    vec![(format!("pkg{i:02}/data.bin"), 300 + i)],
                )
            })
            .collect();
        let dists: Vec<Distribution> = many
            .iter()
            .map(|(name, files)| {
                let refs: Vec<(&str, usize)> =
                    files.iter().map(|(p, s)| (p.as_str(), *s)).collect();
                Distribution::from_record(
                    &format!("{SITE}/{name}-1.0.dist-info/RECORD"),
                    record(&refs).as_bytes(),
                )
                .unwrap()
            })
            .collect();
        for max in [2, 3, 5, MAX_LAYERS, 100] {
            let split = Split::plan(dists.clone(), 300, max);
            assert!(
                split.parts.len() <= max.max(2),
                "{max}: {}",
                split.parts.len()
            );
            let alone: Vec<&Part> = split
                .parts
                .iter()
                .filter(|p| matches!(p, Part::Distribution { .. }))
                .collect();
            assert_eq!(alone.len(), (max.max(2) - 2).min(40));
            // The largest are the ones alone.
            if let Some(Part::Distribution { size, .. }) = alone.first() {
                assert!(*size >= 300 + 40 - alone.len() as u64);
            }
        }
        let none = Split::plan(Vec::new(), 300, MAX_LAYERS);
        assert_eq!(none.parts, [Part::Top]);
    }

    /// Issue 22's test: two pipelines sharing torch (one with more small
    /// requirements, torch asked for in one and a dependency in the other)
    /// get the same layer digest for torch and for each nvidia wheel.
    #[test]
    fn pipelines_sharing_a_distribution_share_its_layer() {
        let first = tar_of(&gpu_pipeline(&[SIX]));
        let mut second_entries = gpu_pipeline(&[SIX, IDNA]);
        // torch came as a dependency here: no REQUESTED, another RECORD.
        second_entries.retain(
            |e| !matches!(e, E::File(p, _) if p.ends_with("torch-2.5.1.dist-info/REQUESTED")),
        );
        let second = tar_of(&second_entries);
        let (s1, l1, ids1) = split_layers(&first, b"", THRESHOLD, MAX_LAYERS);
        let (s2, _, ids2) = split_layers(&second, DELETED, THRESHOLD, MAX_LAYERS);
        assert_eq!(s1.parts[..3], s2.parts[..3]);
        assert_eq!(ids1[..3], ids2[..3], "the heavy layers are the same bytes");
        assert_ne!(ids1[3], ids2[3], "the group differs");
        assert_ne!(ids1[4], ids2[4]);
        // And the same bytes again from the same input.
        let (_, again, ids_again) = split_layers(&first, b"", THRESHOLD, MAX_LAYERS);
        assert_eq!(ids_again, ids1);
        assert_eq!(again, l1);
        // Headers normalised as the unsplit layer's are.
        let mut a = tar::Archive::new(&l1[2][..]);
        for e in a.entries().unwrap() {
            let e = e.unwrap();
            assert!(e.header().mtime().unwrap() <= EPOCH);
            assert_eq!(e.header().username().unwrap().unwrap_or(""), "");
        }
    }

    #[test]
    fn a_snapshot_without_distributions_is_one_layer_like_the_unsplit_one() {
        let snapshot = tar_of(&[
            E::Dir("./etc/"),
            file("./etc/app.conf", "x=1"),
            file("./opt/apache/beam/prebuilder-record.json", "freeze"),
        ]);
        let (split, layers, _) = split_layers(&snapshot, DELETED, THRESHOLD, MAX_LAYERS);
        assert_eq!(split.parts, [Part::Top]);
        assert_eq!(layers[0], unsplit(&snapshot, DELETED), "byte for byte");
    }

    #[test]
    fn outputs_must_match_the_parts() {
        let snapshot = tar_of(&gpu_pipeline(&[]));
        let split = Split::plan(distributions(&snapshot), THRESHOLD, MAX_LAYERS);
        let err = write_split_tree(&snapshot[..], b"", None, EPOCH, &split, vec![Vec::new()])
            .unwrap_err();
        assert!(err.to_string().contains("outputs"), "{err}");
    }
    #[test]
    fn the_threshold_is_a_size_or_off() {
        let t = |v: &str| Rule::parse(v).map(|r| r.map(|r| r.threshold));
        assert_eq!(t("64m"), Ok(Some(64 << 20)));
        assert_eq!(t(" 1K "), Ok(Some(1024)));
        assert_eq!(t("2g"), Ok(Some(2 << 30)));
        assert_eq!(t("500"), Ok(Some(500)));
        assert_eq!(t("OFF"), Ok(None));
        let err = t("lots").unwrap_err();
        assert!(err.contains("\"lots\""), "{err}");
        assert_eq!(Rule::default().threshold, DEFAULT_THRESHOLD);
    }

    /// The label names the parts bottom up; the history has one entry per
    /// layer, the whole layer's on top.
    #[test]
    fn label_and_history_name_each_part() {
        let snapshot = tar_of(&gpu_pipeline(&[SIX, IDNA]));
        let split = Split::plan(distributions(&snapshot), THRESHOLD, MAX_LAYERS);
        let parts: Vec<&Part> = split.parts.iter().collect();
        let names = parse_label(&label(&parts));
        assert_eq!(names.len(), 5);
        assert_eq!(names[0], "torch-2.5.1");
        assert_eq!(names[4], "the rest");
        assert!(parse_label("not json").is_empty());
        let entry = serde_json::json!({"created": "x", "created_by": "prebuilder dependencies layer: installed torch"});
        let history = history(&entry, split.parts.iter());
        assert_eq!(history.len(), 5);
        assert_eq!(history[4], entry);
        assert!(history[0]["created_by"]
            .as_str()
            .unwrap()
            .ends_with(": torch-2.5.1, alone"));
        assert!(history[3]["created_by"]
            .as_str()
            .unwrap()
            .contains("idna-3.7, six-1.16.0"));
    }

    /// `split_tree` from a file: the engine's wrapping or the bare tree,
    /// the same layers; `None` for the rule is the unsplit layer.
    #[test]
    fn split_tree_reads_the_snapshot_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = tar_of(&gpu_pipeline(&[SIX]));
        let wrapped = dir.path().join("outer.tar");
        std::fs::write(&wrapped, outer(&snapshot)).unwrap();
        let bare = dir.path().join("bare.tar");
        std::fs::write(&bare, &snapshot).unwrap();
        let record = Some(("/opt/apache/beam/prebuilder-record.json", &b"{}"[..]));
        let rule = Rule {
            threshold: THRESHOLD,
            max_layers: MAX_LAYERS,
        };
        let out = |name: &str| {
            let d = dir.path().join(name);
            std::fs::create_dir(&d).unwrap();
            d
        };
        let a = split_tree(
            &TreeFile::inside(&wrapped).unwrap(),
            DELETED,
            record,
            EPOCH,
            Some(rule),
            &out("a"),
        )
        .unwrap();
        let b = split_tree(
            &TreeFile::whole(&bare).unwrap(),
            DELETED,
            record,
            EPOCH,
            Some(rule),
            &out("b"),
        )
        .unwrap();
        let ids = |w: &[Written]| w.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&a), ids(&b));
        let (_, _, expected) = split_layers(&snapshot, DELETED, THRESHOLD, MAX_LAYERS);
        assert_eq!(ids(&a), expected);
        for l in &a {
            assert_eq!(std::fs::metadata(&l.path).unwrap().len(), l.size);
        }
        let whole = split_tree(
            &TreeFile::whole(&bare).unwrap(),
            DELETED,
            record,
            EPOCH,
            None,
            &out("c"),
        )
        .unwrap();
        assert_eq!(whole.len(), 1);
        assert_eq!(
            std::fs::read(&whole[0].path).unwrap(),
            unsplit(&snapshot, DELETED)
        );
        assert!(TreeFile::inside(&dir.path().join("a/layer-0.tar")).is_ok());
        std::fs::write(dir.path().join("empty.tar"), tar_of(&[])).unwrap();
        assert!(TreeFile::inside(&dir.path().join("empty.tar")).is_err());
    }

    /// A reader that never seeks and hands out a few bytes at a time, as
    /// the engine's stream does.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.0.len()).min(777);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// Issue 22's one pass: the split planned from the RECORDs alone, then
    /// the engine's wrapped stream read once, gives the layers `split_tree`
    /// writes from the file, byte for byte.
    #[test]
    fn split_stream_in_one_pass_equals_split_tree() {
        let dir = tempfile::tempdir().unwrap();
        // A hard link whose target's layer is complete before it comes is
        // a copy (see the test after this one): none here.
        let entries: Vec<E> = gpu_pipeline(&[SIX])
            .into_iter()
            .filter(|e| !matches!(e, E::Hard(..)))
            .collect();
        let snapshot = tar_of(&entries);
        let bare = dir.path().join("bare.tar");
        std::fs::write(&bare, &snapshot).unwrap();
        let record = Some(("/opt/apache/beam/prebuilder-record.json", &b"{}"[..]));
        let rule = Some(Rule {
            threshold: THRESHOLD,
            max_layers: MAX_LAYERS,
        });
        let out = |name: &str| {
            let d = dir.path().join(name);
            std::fs::create_dir(&d).unwrap();
            d
        };
        let from_file = split_tree(
            &TreeFile::whole(&bare).unwrap(),
            DELETED,
            record,
            EPOCH,
            rule,
            &out("file"),
        )
        .unwrap();
        // The RECORDs on their own, as setup.sh's records.tar holds them.
        let records = records_in(io::Cursor::new(&snapshot)).unwrap();
        assert!(!records.is_empty());
        let wrapped = outer(&snapshot);
        // Each layer is handed over complete, the heavy ones well before
        // the end of the stream, the top last.
        let read = std::cell::Cell::new(0usize);
        let mut handed: Vec<(usize, usize, Vec<u8>)> = Vec::new();
        let mut ready = |i: usize, w: &Written| {
            handed.push((i, read.get(), std::fs::read(&w.path)?));
            Ok(())
        };
        let streamed = split_stream(
            Counted(Trickle(&wrapped), &read),
            DELETED,
            record,
            EPOCH,
            plan_from_records(&records, rule),
            (&out("stream"), &mut ready),
        )
        .unwrap();
        assert!(streamed.len() > 2, "a real split: {streamed:?}");
        let mut order: Vec<usize> = handed.iter().map(|h| h.0).collect();
        assert_eq!(order.last(), Some(&(streamed.len() - 1)), "the top last");
        order.sort_unstable();
        assert_eq!(order, (0..streamed.len()).collect::<Vec<_>>(), "each once");
        let when: Vec<(usize, usize)> = handed.iter().map(|h| (h.0, h.1)).collect();
        let early = when.iter().filter(|(_, at)| *at < wrapped.len()).count();
        assert!(
            early > 0,
            "every layer at the end of {} bytes: {when:?}",
            wrapped.len()
        );
        for (i, _, bytes) in &handed {
            assert_eq!(
                bytes,
                &std::fs::read(&streamed[*i].path).unwrap(),
                "layer {i} complete when handed"
            );
        }
        assert_eq!(streamed.len(), from_file.len());
        for (s, f) in streamed.iter().zip(&from_file) {
            assert_eq!(s.part, f.part);
            assert_eq!(s.diff_id, f.diff_id);
            assert_eq!(s.size, f.size);
            assert_eq!(
                std::fs::read(&s.path).unwrap(),
                std::fs::read(&f.path).unwrap()
            );
        }
        // No rule: the unsplit layer.
        let whole = split_stream(
            Trickle(&wrapped),
            DELETED,
            record,
            EPOCH,
            plan_from_records(&records, None),
            (&out("whole"), &mut |_, _| Ok(())),
        )
        .unwrap();
        assert_eq!(
            std::fs::read(&whole[0].path).unwrap(),
            unsplit(&snapshot, DELETED)
        );
    }

    /// A reader that counts what it gave.
    struct Counted<'a, R>(R, &'a std::cell::Cell<usize>);

    impl<R: Read> Read for Counted<'_, R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.read(buf)?;
            self.1.set(self.1.get() + n);
            Ok(n)
        }
    }

    /// A hard link that comes after its target's layer is complete (here
    /// one outside every RECORD, after everything torch installed) is
    /// written on top as a copy of the target, read back from torch's
    /// layer: the tree holds the same bytes there, as a file of its own.
    #[test]
    fn a_hard_link_after_its_targets_layer_is_complete_is_a_copy() {
        let dir = tempfile::tempdir().unwrap();
        let mut tree_entries = gpu_pipeline(&[]);
        tree_entries.push(E::Hard(
            format!("./{SITE}/zz_copy.so"),
            format!("./{SITE}/torch/lib/libtorch.so"),
        ));
        let snapshot = tar_of(&tree_entries);
        let records = records_in(io::Cursor::new(&snapshot)).unwrap();
        let rule = Some(Rule {
            threshold: THRESHOLD,
            max_layers: MAX_LAYERS,
        });
        let layers = split_stream(
            Trickle(&outer(&snapshot)),
            DELETED,
            Some(("/opt/apache/beam/prebuilder-record.json", &b"{}"[..])),
            EPOCH,
            plan_from_records(&records, rule),
            (dir.path(), &mut |_, _| Ok(())),
        )
        .unwrap();
        let hard = format!("{SITE}/zz_copy.so");
        let target = format!("{SITE}/torch/lib/libtorch.so");
        let torch = layers
            .iter()
            .position(
                |l| matches!(&l.part, Part::Distribution { name, .. } if name.starts_with("torch")),
            )
            .unwrap();
        let bytes = |i: usize| std::fs::read(&layers[i].path).unwrap();
        assert!(!entries(&bytes(torch)).contains(&hard));
        let top = layers.len() - 1;
        let mut tree = base();
        for i in 0..layers.len() {
            apply(&mut tree, &bytes(i));
        }
        let mut whole = base();
        apply(&mut whole, &unsplit(&snapshot, DELETED));
        let copy = tree.remove(&hard).unwrap();
        let link = whole.remove(&hard).unwrap();
        assert_eq!(copy.0, b'0', "a regular file");
        assert_eq!(link.0, b'1', "a hard link in the unsplit layer");
        assert_eq!(copy.5, whole[&target].5, "the target's bytes");
        assert_eq!((copy.1, copy.2, copy.3), (link.1, link.2, link.3));
        assert!(entries(&bytes(top)).contains(&hard));
        assert_eq!(tree, whole, "every other path as unsplit");
    }

    /// Issue 22: the snapshot in the parts `part_lists` makes (each a tar
    /// of its own, in the engine's wrapping) gives the layers the whole
    /// sorted snapshot gives, byte for byte, each handed over once its
    /// part is in: the directories first, then a part per layer.
    #[test]
    fn the_snapshot_in_parts_gives_the_layers_of_the_whole() {
        let dir = tempfile::tempdir().unwrap();
        for extra in [&[][..], &[SIX, IDNA][..]] {
            let entries: Vec<E> = gpu_pipeline(extra)
                .into_iter()
                .filter(|e| !matches!(e, E::Hard(..)))
                .collect();
            let snapshot = tar_of(&entries);
            let records = records_in(io::Cursor::new(&snapshot)).unwrap();
            let rule = Some(Rule {
                threshold: THRESHOLD,
                max_layers: MAX_LAYERS,
            });
            let record = Some(("/opt/apache/beam/prebuilder-record.json", &b"{}"[..]));
            let out = |name: &str| {
                let d = dir.path().join(format!("{name}-{}", extra.len()));
                std::fs::create_dir(&d).unwrap();
                d
            };
            let whole = split_stream(
                Trickle(&outer(&snapshot)),
                DELETED,
                record,
                EPOCH,
                plan_from_records(&records, rule),
                (&out("whole"), &mut |_, _| Ok(())),
            )
            .unwrap();
            // setup.sh's list: every path of the snapshot, in its order.
            let mut all = Vec::new();
            let mut by_path: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            let mut a = tar::Archive::new(&snapshot[..]);
            for e in a.entries().unwrap() {
                let e = e.unwrap();
                let path = e.path_bytes().into_owned();
                let mut one = tar::Builder::new(Vec::new());
                let mut h = e.header().clone();
                let link = e.link_name().unwrap().map(|l| l.into_owned());
                match link {
                    Some(l) => one
                        .append_link(&mut h, &*String::from_utf8_lossy(&path), l)
                        .unwrap(),
                    None => {
                        let mut e = e;
                        let mut body = Vec::new();
                        e.read_to_end(&mut body).unwrap();
                        one.append_data(&mut h, &*String::from_utf8_lossy(&path), &body[..])
                            .unwrap()
                    }
                }
                let mut bytes = one.into_inner().unwrap();
                bytes.truncate(bytes.len() - 1024);
                all.extend_from_slice(&path);
                all.push(0);
                by_path.insert(path, bytes);
            }
            let split = plan_from_records(&records, rule);
            let lists = split.part_lists(&all);
            assert_eq!(lists.len(), split.parts.len() + 1);
            let listed: usize = lists
                .iter()
                .map(|l| l.iter().filter(|&&b| b == 0).count())
                .sum();
            assert_eq!(listed, by_path.len(), "every path in one part");
            let tars: Vec<Vec<u8>> = lists
                .iter()
                .map(|l| {
                    let mut t: Vec<u8> = l
                        .split(|&b| b == 0)
                        .filter(|p| !p.is_empty())
                        .flat_map(|p| by_path[p].clone())
                        .collect();
                    // The end and GNU tar's padding to its 10240-byte records.
                    t.extend_from_slice(&[0u8; 1024]);
                    t.resize(t.len().div_ceil(10240) * 10240, 0);
                    t
                })
                .collect();
            // The first `made` layers made elsewhere (while the setup
            // ran): their parts empty, every other layer the same.
            for made in [0, 1, 2] {
                let mut handed = Vec::new();
                let mut ready = |i: usize, _: &Written| {
                    handed.push(i);
                    Ok(())
                };
                let mut tars = tars.clone();
                for t in tars.iter_mut().skip(1).take(made) {
                    *t = vec![0u8; 10240];
                }
                let parts = split_parts(
                    tars.into_iter()
                        .map(|t| Ok(Box::new(io::Cursor::new(t)) as Box<dyn Read + Send>)),
                    (DELETED, record, EPOCH),
                    (split.clone(), made),
                    (&out(&format!("parts-{made}")), &mut ready),
                )
                .unwrap();
                assert_eq!(
                    handed,
                    (0..whole.len()).collect::<Vec<_>>(),
                    "in image order"
                );
                assert_eq!(parts.len(), whole.len());
                for (p, w) in parts.iter().zip(&whole).skip(made) {
                    assert_eq!(p.part, w.part);
                    assert_eq!(p.diff_id, w.diff_id, "{:?}, {made} made", p.part);
                    assert_eq!(
                        std::fs::read(&p.path).unwrap(),
                        std::fs::read(&w.path).unwrap()
                    );
                }
            }
        }
    }

    /// Fewer parts than the lists: an error, not a short layer.
    #[test]
    fn a_missing_part_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = tar_of(&gpu_pipeline(&[]));
        let records = records_in(io::Cursor::new(&snapshot)).unwrap();
        let split = plan_from_records(&records, Some(Rule::default()));
        let empty = vec![0u8; 1024];
        let err = split_parts(
            std::iter::once(Ok(Box::new(io::Cursor::new(empty)) as Box<dyn Read + Send>)),
            (DELETED, None, EPOCH),
            (split, 0),
            (dir.path(), &mut |_, _| Ok(())),
        )
        .unwrap_err();
        assert!(err.to_string().contains("parts came"), "{err}");
    }

    /// A part whose writer fails once its tar is out (GNU tar's status
    /// comes after its output: a file it could not read is missing from
    /// an archive that looks whole): an error, not a layer without it.
    #[test]
    fn a_part_whose_tar_failed_after_its_output_is_an_error() {
        struct FailsAtEnd(io::Cursor<Vec<u8>>);
        impl Read for FailsAtEnd {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                match self.0.read(buf)? {
                    0 => Err(io::Error::other("tar exited with status 2")),
                    n => Ok(n),
                }
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let snapshot = tar_of(&gpu_pipeline(&[]));
        let records = records_in(io::Cursor::new(&snapshot)).unwrap();
        let split = plan_from_records(&records, Some(Rule::default()));
        let n = split.parts.len() + 1;
        let parts = (0..n).map(|_| {
            Ok(Box::new(FailsAtEnd(io::Cursor::new(vec![0u8; 10240]))) as Box<dyn Read + Send>)
        });
        let err = split_parts(
            parts,
            (DELETED, None, EPOCH),
            (split, 0),
            (dir.path(), &mut |_, _| Ok(())),
        )
        .unwrap_err();
        assert!(err.to_string().contains("status 2"), "{err}");
    }
}
