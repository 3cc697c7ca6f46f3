//! Heavy layers made while pip still runs (issue 22: on a GPU-size set pip
//! installs on one core for minutes while the other idles, and the layers
//! were cut and loaded only after it).
//!
//! pip installs distributions of the same dependency weight in reverse name
//! order, which is the split's order of heavy layers ([`Split::plan`]), so
//! the bottom layers are complete long before pip ends. What that needs,
//! and what this module decides without an engine:
//! - [`Prediction`]: from the `RECORD`s of the staged wheels, the heavy
//!   layers the split will begin with, in order, and the paths several
//!   wheels install (`nvidia/__init__.py`: on top in the split, so never in
//!   an early layer);
//! - [`Prediction::layer_of`]: once pip has written a distribution's final
//!   `RECORD`, the files its layer holds; [`list`]: what a `tar` of them in
//!   the setup container reads; [`write_layer`]: that tar cut into the layer,
//!   byte for byte the layer the whole snapshot's split gives it;
//! - [`holds`]: after pip, whether the split of the whole snapshot begins
//!   with exactly those layers. When it does not (a wheel built from an
//!   sdist, a distribution pip replaced again, a size the prediction got
//!   wrong), the early layers are dropped and the whole split is made as
//!   before: a wrong prediction costs time, never bytes.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::path::Path;

use super::{relative, Distribution, Part, Rule, Split, Writer, MAX_LAYERS};

/// What the split of a setup's install is expected to begin with, from the
/// wheels staged for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prediction {
    /// The heavy distributions (`.dist-info` names without the suffix,
    /// `torch-2.5.1`), in the split's order.
    pub order: Vec<String>,
    /// Paths (as `RECORD`s list them, relative to the site directory) that
    /// more than one staged wheel installs.
    shared: HashSet<String>,
}

impl Prediction {
    /// From each staged wheel's `.dist-info` name (`torch-2.5.1`) and the
    /// `RECORD` it carries, split by `rule`. The sizes are the wheels'
    /// (without the `.pyc` pip adds): a distribution near the threshold may
    /// be predicted wrong, which [`holds`] then finds.
    pub fn from_wheels(records: &[(String, Vec<u8>)], rule: Rule) -> Prediction {
        let dists: Vec<Distribution> = records
            .iter()
            .filter_map(|(stem, bytes)| {
                Distribution::from_record(&format!("{stem}.dist-info/RECORD"), bytes)
            })
            .collect();
        let split = Split::plan(dists.clone(), rule.threshold, rule.max_layers);
        // What the split gives no single layer: claimed more than once.
        let shared = dists
            .iter()
            .flat_map(|d| &d.files)
            .filter(|f| !split.owner.contains_key(*f))
            .cloned()
            .collect();
        let order = split
            .parts
            .iter()
            .filter_map(|p| match p {
                Part::Distribution { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect();
        Prediction { order, shared }
    }

    /// The installed distribution whose `RECORD` is at `record_path`
    /// (relative to the root) and holds `bytes`, with the files its own
    /// layer holds: what the `RECORD` lists but the install markers and
    /// what another staged wheel installs too (with its `__pycache__`
    /// files), sorted. `None` when the path is not a `.dist-info/RECORD`.
    pub fn layer_of(&self, record_path: &str, bytes: &[u8]) -> Option<Distribution> {
        let mut d = Distribution::from_record(record_path, bytes)?;
        let site = Path::new(relative(record_path))
            .parent()
            .and_then(Path::parent)
            .and_then(Path::to_str)
            .map(|s| format!("{s}/"))
            .unwrap_or_default();
        d.files.retain(|f| {
            let listed = f.strip_prefix(site.as_str()).unwrap_or(f);
            !self.shared.contains(listed)
                && source_of(listed).is_none_or(|s| !self.shared.contains(&s))
        });
        d.files.sort_unstable();
        d.files.dedup();
        Some(d)
    }
}

/// The source a compiled file is of: `a/__pycache__/m.cpython-311.pyc` →
/// `a/m.py`; `None` for any other path.
fn source_of(path: &str) -> Option<String> {
    let (dir, file) = path.rsplit_once('/')?;
    let above = match dir.rsplit_once('/') {
        Some((above, "__pycache__")) => format!("{above}/"),
        None if dir == "__pycache__" => String::new(),
        _ => return None,
    };
    let module = file.strip_suffix(".pyc")?.split('.').next()?;
    Some(format!("{above}{module}.py"))
}

/// What a `tar` of `d`'s layer reads: its files and every directory above
/// them, `./`-prefixed, NUL-separated, in byte order (as setup.sh sorts
/// its snapshot, so the layer's entries come in the same order).
pub fn list(d: &Distribution) -> Vec<u8> {
    let mut paths: HashSet<&str> = HashSet::new();
    for f in &d.files {
        paths.insert(f);
        for a in Path::new(f).ancestors().skip(1).filter_map(Path::to_str) {
            if a.is_empty() || !paths.insert(a) {
                break;
            }
        }
    }
    let mut sorted: Vec<String> = paths.into_iter().map(|p| format!("./{p}")).collect();
    sorted.sort_unstable();
    let mut out = Vec::new();
    for p in sorted {
        out.extend_from_slice(p.as_bytes());
        out.push(0);
    }
    out
}

/// `d`'s layer from `tar` (a tar of [`list`] as the setup's own snapshot
/// tar writes it) into `out`: its diff id. The same bytes as `d`'s layer in
/// the split of the whole snapshot when that split gives `d` the same
/// files ([`holds`]). A hard link is an error: the whole split keeps it in
/// its target's layer, which may be another.
pub fn write_layer<R: Read, W: Write>(
    tar: R,
    d: &Distribution,
    epoch: u64,
    out: W,
) -> io::Result<String> {
    let split = Split::plan(vec![d.clone()], 0, MAX_LAYERS);
    let outs: Vec<Box<dyn Write + '_>> = vec![Box::new(out), Box::new(io::sink())];
    let mut writer = Writer::new(&split, outs, None, false)?;
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries()? {
        let entry = entry?;
        let raw = entry.path()?.to_string_lossy().into_owned();
        let path = relative(&raw).to_string();
        if path.is_empty() {
            continue;
        }
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::Link {
            return Err(io::Error::other(format!(
                "{path} is a hard link: {}'s layer is made with the others",
                d.name
            )));
        }
        if !kind.is_dir() && !split.owner.contains_key(&path) {
            return Err(io::Error::other(format!(
                "{path} is not one of {}'s files",
                d.name
            )));
        }
        writer.place(entry, path, epoch)?;
    }
    writer.complete(0)?;
    writer.ids[0]
        .clone()
        .ok_or_else(|| io::Error::other(format!("{}'s layer was not written", d.name)))
}

/// Whether `split` (of the whole snapshot) begins with the layers of
/// `early`, in that order: the same distributions, each with the same
/// files.
pub fn holds(split: &Split, early: &[Distribution]) -> bool {
    early.len() < split.parts.len()
        && early.iter().enumerate().all(|(i, d)| {
            let same_part =
                matches!(&split.parts[i], Part::Distribution { name, .. } if *name == d.name);
            let files: HashSet<&str> = d.files.iter().map(String::as_str).collect();
            same_part && split.owned_by(i) == files
        })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{distributions, install, split_layers, tar_of, Dist, E, EPOCH};
    use super::*;

    const THRESHOLD: u64 = 100;

    /// Three heavy distributions (two sharing `nv/__init__.py`), one small.
    const DISTS: [Dist; 4] = [
        (
            "nv_a",
            "1.0",
            &[
                ("nv/__init__.py", 1),
                ("nv/a/lib.so", 60),
                ("nv/a/x.py", 50),
            ],
        ),
        (
            "nv_b",
            "2.0",
            &[("nv/__init__.py", 1), ("nv/b/lib.so", 200)],
        ),
        (
            "torch",
            "2.5.1",
            &[("torch/__init__.py", 150), ("torch/lib/t.so", 10)],
        ),
        ("six", "1.16.0", &[("six.py", 5)]),
    ];

    /// The staged wheels' RECORDs for `dists` (as in the wheels: no
    /// `.pyc`, no INSTALLER).
    fn wheel_records(dists: &[Dist]) -> Vec<(String, Vec<u8>)> {
        dists
            .iter()
            .map(|(name, version, files)| {
                let stem = format!("{name}-{version}");
                let rows: String = files
                    .iter()
                    .map(|(p, size)| format!("{p},sha256=x,{size}\n"))
                    .chain([format!("{stem}.dist-info/RECORD,,\n")])
                    .collect();
                (stem, rows.into_bytes())
            })
            .collect()
    }

    fn rule() -> Rule {
        Rule {
            threshold: THRESHOLD,
            max_layers: MAX_LAYERS,
        }
    }

    /// The entries of `snapshot` whose paths `list` names, in its order.
    fn tar_of_list(snapshot: &[E], list: &[u8]) -> Vec<u8> {
        let wanted: Vec<String> = list
            .split(|&b| b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| relative(&String::from_utf8_lossy(p)).to_string())
            .collect();
        let chosen: Vec<E> = wanted
            .iter()
            .map(|w| {
                snapshot
                    .iter()
                    .find(|e| relative(e.path()) == w.as_str())
                    .unwrap_or_else(|| panic!("{w} is not in the snapshot"))
                    .clone()
            })
            .collect();
        tar_of(&chosen)
    }

    fn record_of(snapshot: &[u8], name: &str) -> (String, Vec<u8>) {
        super::super::records_in(io::Cursor::new(snapshot))
            .unwrap()
            .into_iter()
            .find(|(p, _)| p.contains(&format!("/{name}.dist-info/")))
            .unwrap()
    }

    #[test]
    fn the_prediction_is_the_heavy_layers_in_reverse_name_order_without_shared_paths() {
        let p = Prediction::from_wheels(&wheel_records(&DISTS), rule());
        assert_eq!(p.order, ["torch-2.5.1", "nv_b-2.0", "nv_a-1.0"]);
        let shared: Vec<&String> = p.shared.iter().collect();
        assert_eq!(shared, ["nv/__init__.py"]);
        // The installed RECORD (with its .pyc): the shared file and its
        // compiled twin are left for the top.
        let rec = "nv/__init__.py,sha256=x,1\nnv/__pycache__/__init__.cpython-311.pyc,,9\n\
                   nv/a/x.py,sha256=x,50\nnv/a/__pycache__/x.cpython-311.pyc,,70\n\
                   nv_a-1.0.dist-info/INSTALLER,sha256=x,4\nnv_a-1.0.dist-info/RECORD,,\n";
        let d = p
            .layer_of(
                "./usr/lib/python3/site-packages/nv_a-1.0.dist-info/RECORD",
                rec.as_bytes(),
            )
            .unwrap();
        assert_eq!(d.name, "nv_a-1.0");
        assert_eq!(
            d.files,
            [
                "usr/lib/python3/site-packages/nv/a/__pycache__/x.cpython-311.pyc",
                "usr/lib/python3/site-packages/nv/a/x.py",
                "usr/lib/python3/site-packages/nv_a-1.0.dist-info/INSTALLER",
            ]
        );
    }

    #[test]
    fn compiled_files_map_to_their_source() {
        assert_eq!(
            source_of("a/b/__pycache__/m.cpython-311.pyc").as_deref(),
            Some("a/b/m.py")
        );
        assert_eq!(
            source_of("__pycache__/six.cpython-311.opt-1.pyc").as_deref(),
            Some("six.py")
        );
        assert_eq!(source_of("a/b/m.py"), None);
        assert_eq!(source_of("a/notcache/m.cpython-311.pyc"), None);
    }

    #[test]
    fn an_early_layer_is_byte_for_byte_its_layer_in_the_whole_split() {
        let entries = install(&DISTS, &[file("./usr/bin/tool", "x")]);
        let snapshot = tar_of(&entries);
        let (split, layers, ids) = split_layers(&snapshot, b"", THRESHOLD, MAX_LAYERS);
        let p = Prediction::from_wheels(&wheel_records(&DISTS), rule());
        let mut early = Vec::new();
        for (i, name) in p.order.iter().enumerate() {
            let (path, bytes) = record_of(&snapshot, name);
            let d = p.layer_of(&path, &bytes).unwrap();
            let tar = tar_of_list(&entries, &list(&d));
            let mut out = Vec::new();
            let id = write_layer(&tar[..], &d, EPOCH, &mut out).unwrap();
            assert_eq!(out, layers[i], "{name}'s layer");
            assert_eq!(id, ids[i]);
            early.push(d);
        }
        assert!(holds(&split, &early));
        assert!(holds(&split, &early[..1]));
        assert!(holds(&split, &[]));
    }

    #[test]
    fn a_split_that_differs_from_the_early_layers_does_not_hold() {
        let snapshot = tar_of(&install(&DISTS, &[]));
        let (split, _, _) = split_layers(&snapshot, b"", THRESHOLD, MAX_LAYERS);
        let p = Prediction::from_wheels(&wheel_records(&DISTS), rule());
        let (path, bytes) = record_of(&snapshot, "torch-2.5.1");
        let torch = p.layer_of(&path, &bytes).unwrap();
        let (path, bytes) = record_of(&snapshot, "nv_b-2.0");
        let nv_b = p.layer_of(&path, &bytes).unwrap();
        // Out of order.
        assert!(!holds(&split, std::slice::from_ref(&nv_b)));
        // A file more or less than the split gives the layer.
        let mut more = torch.clone();
        more.files
            .push("usr/lib/python3/site-packages/torch/extra.py".into());
        assert!(!holds(&split, &[more]));
        let mut less = torch.clone();
        less.files.pop();
        assert!(!holds(&split, &[less]));
        // A prediction that missed the shared file: nv/__init__.py in nv_b's layer.
        let blind = Prediction::from_wheels(&wheel_records(&DISTS[1..]), rule());
        let (path, bytes) = record_of(&snapshot, "nv_b-2.0");
        let wrong = blind.layer_of(&path, &bytes).unwrap();
        assert!(!holds(&split, &[torch.clone(), wrong]));
        assert!(holds(&split, &[torch.clone(), nv_b]));
        // A split with nothing heavy (one layer) holds no early layer.
        let whole = Split::plan(distributions(&snapshot), u64::MAX, MAX_LAYERS);
        assert_eq!(whole.parts, [Part::Top]);
        assert!(!holds(&whole, &[torch]));
    }

    #[test]
    fn a_hard_link_or_a_stranger_in_an_early_tar_is_refused() {
        let p = Prediction::from_wheels(&wheel_records(&DISTS), rule());
        let snapshot = tar_of(&install(&DISTS, &[]));
        let (path, bytes) = record_of(&snapshot, "six-1.16.0");
        let d = p.layer_of(&path, &bytes).unwrap();
        let six = format!("./{}", d.files[0]);
        let linked = tar_of(&[E::Hard(six.clone(), "./usr/bin/other".into())]);
        let e = write_layer(&linked[..], &d, EPOCH, io::sink()).unwrap_err();
        assert!(e.to_string().contains("hard link"), "{e}");
        let stranger = tar_of(&[file("./usr/bin/other", "x")]);
        let e = write_layer(&stranger[..], &d, EPOCH, io::sink()).unwrap_err();
        assert!(
            e.to_string().contains("not one of six-1.16.0's files"),
            "{e}"
        );
    }

    fn file(path: &str, body: &str) -> E {
        E::File(path.to_string(), body.as_bytes().to_vec())
    }
}
