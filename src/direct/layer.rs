//! One layer, produced with no container: the boot replayed over the
//! layer's artifacts into an overlay of the installed set below
//! ([`super::boot`], [`super::install`]), then written as the engine path
//! writes its snapshot: every added path with the directories above it (as
//! they are below, or 0755 root when new), in byte order, and cut by the
//! same function the engine path cuts its snapshot with
//! ([`crate::image::split::split_tree`]: same epoch, ownership and whiteout
//! rules, the record in place; one layer, or with a split rule one per
//! heavy distribution, the smaller ones together, and the top).
//!
//! In: the installed set below (the base's index, or what the layer below
//! returned) and the layer's staged artifacts. Out: the layer tars (bottom
//! up) with their diff ids, the image's record, and the installed set
//! after the layer.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::boot::{self, Artifact, Log};
use super::host::{self, HostCompiler, Interpreter};
use super::index::Index;
use super::install::{Compiler, Content, State, Upper};
use crate::error::{Error, Result};
use crate::image::split;
use crate::record::{Record, FORMAT, RECORD_FILE};

/// What to produce.
#[derive(Debug, Clone)]
pub struct Spec<'a> {
    /// The layer's name (`dependencies`, `application`).
    pub name: &'a str,
    pub key: &'a str,
    /// Its staged artifacts, in manifest order.
    pub artifacts: Vec<Artifact>,
    /// Staged name → content digest, for the record.
    pub inputs: BTreeMap<String, String>,
    /// The record's inputs of the layers below.
    pub lower_inputs: BTreeMap<String, BTreeMap<String, String>>,
    /// The layer's staged artifacts as staged (roles, digests): what the
    /// record's `distributions` name as each one's source.
    pub staged: &'a [crate::stage::Artifact],
    /// The record of the layer below, when there is one.
    pub parent: Option<&'a Record>,
    /// The base image's id, as the record names it.
    pub base_id: &'a str,
    pub boot_from: Option<&'a str>,
    /// Every date in the layer (see `crate::image::reproducible`).
    pub epoch: u64,
}

/// How to use this machine.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The Python that builds sdists (the launch host's).
    pub python: Option<PathBuf>,
    /// Byte-compile with an interpreter of the base's version when one is
    /// here (else, or when false, the layer has no `.pyc`).
    pub compile: bool,
    /// How the layer is cut by distribution (`None`: one layer), as the
    /// engine path cuts its dependency layer.
    pub split: Option<split::Rule>,
}

/// A produced layer.
#[derive(Debug)]
pub struct Produced {
    /// The uncompressed layer tars, bottom up: one, or the parts of a
    /// split (the last is [`split::Part::Top`], with the record).
    pub layers: Vec<split::Written>,
    pub record: Record,
    /// The installed set after this layer: the next layer's `lower`.
    pub installed: Index,
    pub log: Log,
    /// The interpreter that compiled the `.pyc` files; `None`: none were written.
    pub compiled_by: Option<Interpreter>,
}

/// Produce one layer in `scratch` (which must exist).
pub fn produce(lower: &Index, spec: &Spec, opts: &Options, scratch: &Path) -> Result<Produced> {
    let mut state = State::new(lower.clone());
    let build_dir = scratch.join("built");
    std::fs::create_dir_all(&build_dir).map_err(|e| Error::io(&build_dir, e))?;
    // The host interpreter is looked for while the boot is replayed (which
    // may build an sdist with another Python).
    let version = lower.python.version.clone();
    let finding = opts
        .compile
        .then(|| std::thread::spawn(move || host::find_compiler(&version)));
    let log = boot::run(
        &mut state,
        &spec.artifacts,
        &boot::Tools {
            python: opts.python.as_deref(),
            scratch: &build_dir,
        },
    )?;
    let compiled_by = finding.and_then(|f| f.join().ok().flatten());
    let compiler = compiled_by.clone().map(|python| HostCompiler {
        python,
        dir: scratch.join("pyc"),
    });
    let installed = state.finish(compiler.as_ref().map(|c| c as &dyn Compiler))?;

    let mut inputs = spec.lower_inputs.clone();
    inputs.insert(spec.name.to_string(), spec.inputs.clone());
    let record = Record {
        format: FORMAT,
        layer: spec.name.to_string(),
        key: spec.key.to_string(),
        base: spec.base_id.to_string(),
        boot_from: spec.boot_from.map(str::to_string),
        python: Some(lower.python.version.clone()),
        inputs,
        packages: Some(installed.freeze()),
        distributions: Some(super::sbom::distributions(
            spec.name,
            spec.staged,
            &state,
            (lower, &installed),
            spec.parent,
        )),
    };

    let inner = scratch.join("snapshot.tar");
    write_snapshot(&state, lower, spec.epoch, &inner)?;
    let mut deleted: Vec<u8> = Vec::new();
    for d in &state.deleted {
        deleted.extend_from_slice(d.as_bytes());
        deleted.push(0);
    }
    let file = record.to_file();
    let layers = split::TreeFile::whole(&inner)
        .and_then(|tree| {
            split::split_tree(
                &tree,
                &deleted,
                Some((RECORD_FILE, file.as_bytes())),
                spec.epoch,
                opts.split,
                scratch,
            )
        })
        .map_err(|e| Error::io(scratch, e))?;
    let _ = std::fs::remove_file(&inner);
    Ok(Produced {
        layers,
        record,
        installed,
        log,
        compiled_by,
    })
}

fn parent(p: &str) -> &str {
    match p.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &p[..i],
    }
}

fn header(
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    epoch: u64,
) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_size(size);
    h.set_mtime(epoch);
    h
}

/// The overlay's added paths and the directories above them, in byte
/// order, as a tar (the engine path's snapshot `layer.tar`).
fn write_snapshot(state: &State, lower: &Index, epoch: u64, path: &Path) -> Result<()> {
    let mut all: BTreeSet<&str> = BTreeSet::new();
    for p in state.upper.keys() {
        all.insert(p.as_str());
        let mut d = parent(p);
        while d != "/" {
            all.insert(d);
            d = parent(d);
        }
    }
    let f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut b = tar::Builder::new(BufWriter::new(f));
    let mut zips: BTreeMap<PathBuf, zip::ZipArchive<std::fs::File>> = BTreeMap::new();
    let io = |e: std::io::Error| Error::io(path, e);
    let mut sorted: Vec<&str> = all.into_iter().collect();
    sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for p in sorted {
        let name = p.trim_start_matches('/');
        match state.upper.get(p) {
            Some(Upper::Dir { mode }) => {
                let mut h = header(tar::EntryType::Directory, *mode, 0, 0, 0, epoch);
                b.append_data(&mut h, name, std::io::empty()).map_err(io)?;
            }
            Some(Upper::File {
                mode,
                size,
                content,
            }) => {
                let mut h = header(tar::EntryType::Regular, *mode, 0, 0, *size, epoch);
                match content {
                    Content::Bytes(bytes) => b.append_data(&mut h, name, &bytes[..]).map_err(io)?,
                    Content::File(src) => {
                        let f = std::fs::File::open(src).map_err(|e| Error::io(src, e))?;
                        b.append_data(&mut h, name, f).map_err(io)?
                    }
                    Content::Zip { wheel, member } => {
                        let key = wheel.as_ref().clone();
                        if !zips.contains_key(&key) {
                            let f = std::fs::File::open(&key).map_err(|e| Error::io(&key, e))?;
                            let z = zip::ZipArchive::new(f)
                                .map_err(|e| Error::io(&key, std::io::Error::other(e)))?;
                            zips.insert(key.clone(), z);
                        }
                        let z = zips
                            .get_mut(&key)
                            .ok_or_else(|| Error::io(&key, std::io::Error::other("zip")))?;
                        let m = z
                            .by_name(member)
                            .map_err(|e| Error::io(&key, std::io::Error::other(e)))?;
                        let mut limited = m.take(*size);
                        b.append_data(&mut h, name, &mut limited).map_err(io)?
                    }
                }
            }
            None => {
                // A directory of the layers below: repeated as it is there.
                let (mode, uid, gid) = lower.dirs.get(p).copied().unwrap_or((0o755, 0, 0));
                let mut h = header(tar::EntryType::Directory, mode, uid, gid, 0, epoch);
                b.append_data(&mut h, name, std::io::empty()).map_err(io)?;
            }
        }
    }
    let mut w = b.into_inner().map_err(io)?;
    w.flush().map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::direct::index::tests::{debian_index, with_beam};
    use crate::direct::resolve::tests::Fixture;

    fn entries(layer: &Path) -> Vec<(String, u32, Vec<u8>)> {
        let mut a = tar::Archive::new(std::fs::File::open(layer).unwrap());
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let p = e.path().unwrap().to_string_lossy().into_owned();
                let m = e.header().mode().unwrap();
                let mut c = Vec::new();
                e.read_to_end(&mut c).unwrap();
                (p, m, c)
            })
            .collect()
    }

    fn spec(artifacts: Vec<Artifact>) -> Spec<'static> {
        Spec {
            name: "dependencies",
            key: "k",
            artifacts,
            inputs: BTreeMap::from([("requirements.txt".into(), "d".into())]),
            lower_inputs: BTreeMap::new(),
            base_id: "sha256:base",
            boot_from: None,
            epoch: 1_700_000_000,
            staged: &[],
            parent: None,
        }
    }

    #[test]
    fn a_requirements_layer_is_written_as_the_engine_writes_its_snapshot() {
        let mut f = Fixture::new();
        f.wheel("tabulate-0.9.0-py3-none-any.whl", &[], None);
        let req = f.dir.path().join("requirements.txt");
        std::fs::write(&req, "tabulate==0.9.0\n").unwrap();
        let mut arts = vec![Artifact {
            name: "requirements.txt".into(),
            path: req,
        }];
        arts.extend(f.staged.iter().map(|s| Artifact {
            name: s.name.clone(),
            path: s.path.clone(),
        }));
        let scratch = tempfile::tempdir().unwrap();
        let lower = with_beam(debian_index());
        let p = produce(
            &lower,
            &spec(arts.clone()),
            &Options::default(),
            scratch.path(),
        )
        .unwrap();
        assert_eq!(p.layers.len(), 1, "no split rule: one layer");
        let e = entries(&p.layers[0].path);
        let names: Vec<&str> = e.iter().map(|(n, _, _)| n.as_str()).collect();
        let site = "usr/local/lib/python3.11/dist-packages";
        // The old version's files are whited out, the new ones written.
        assert!(
            names.contains(&format!("{site}/.wh.tabulate-0.8.0.dist-info").as_str()),
            "{names:?}"
        );
        assert!(
            names.contains(&format!("{site}/tabulate/__init__.py").as_str()),
            "{names:?}"
        );
        assert!(names.contains(&format!("{site}/tabulate-0.9.0.dist-info/RECORD").as_str()));
        // Parents first, byte order, the record last.
        let first_file = names
            .iter()
            .position(|n| n.ends_with("__init__.py"))
            .unwrap();
        assert!(
            names[..first_file].contains(&"usr/local/lib/python3.11/dist-packages"),
            "{names:?}"
        );
        assert_eq!(
            names.last().unwrap(),
            &"opt/apache/beam/prebuilder-record.json"
        );
        let rec = Record::parse(std::str::from_utf8(&e.last().unwrap().2).unwrap()).unwrap();
        assert_eq!(rec.packages.as_ref().unwrap()["tabulate"], "0.9.0");
        assert_eq!(rec.python.as_deref(), Some("3.11.2"));
        assert_eq!(p.installed.find("tabulate").unwrap().version, "0.9.0");
        // Same inputs, same bytes.
        let scratch2 = tempfile::tempdir().unwrap();
        let q = produce(&lower, &spec(arts), &Options::default(), scratch2.path()).unwrap();
        assert_eq!(p.layers[0].diff_id, q.layers[0].diff_id);
        assert_eq!(
            std::fs::read(&p.layers[0].path).unwrap(),
            std::fs::read(&q.layers[0].path).unwrap()
        );
    }

    /// A wheel `name-version` whose module holds `size` bytes.
    fn sized_wheel(f: &Fixture, name: &str, version: &str, size: usize) -> Artifact {
        let file = format!("{name}-{version}-py3-none-any.whl");
        let info = format!("{name}-{version}.dist-info");
        let meta = format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n");
        let body = format!("BLOB = {:?}\n", "x".repeat(size));
        // Sizes as a wheel's RECORD gives them (pip copies them): what the
        // split weighs each distribution by.
        let record = format!(
            "{name}/__init__.py,,0\n{name}/data.py,,{}\n{info}/METADATA,,{}\n{info}/WHEEL,,\n{info}/RECORD,,\n",
            body.len(),
            meta.len()
        );
        let path = crate::direct::install::tests::make_wheel(
            f.dir.path(),
            &file,
            &[
                (&format!("{name}/__init__.py"), "", 0o644),
                (&format!("{name}/data.py"), &body, 0o644),
                (&format!("{info}/METADATA"), &meta, 0o644),
                (
                    &format!("{info}/WHEEL"),
                    "Wheel-Version: 1.0\nRoot-Is-Purelib: true\n",
                    0o644,
                ),
                (&format!("{info}/RECORD"), &record, 0o644),
            ],
        );
        Artifact { name: file, path }
    }

    /// The layer set `requirements` installs from `wheels`, cut by `rule`.
    fn layers_of(
        f: &Fixture,
        requirements: &str,
        wheels: &[Artifact],
        rule: Option<split::Rule>,
    ) -> (Produced, tempfile::TempDir) {
        let req = f.dir.path().join(format!("req-{}.txt", wheels.len()));
        std::fs::write(&req, requirements).unwrap();
        let mut arts = vec![Artifact {
            name: "requirements.txt".into(),
            path: req,
        }];
        arts.extend(wheels.iter().cloned());
        let scratch = tempfile::tempdir().unwrap();
        let opts = Options {
            split: rule,
            ..Options::default()
        };
        let lower = with_beam(debian_index());
        let p = produce(&lower, &spec(arts), &opts, scratch.path()).unwrap();
        (p, scratch)
    }

    /// Path -> (kind, mode, content) of every entry, the layers applied in
    /// order (a later entry replaces an earlier one).
    fn tree(layers: &[split::Written]) -> BTreeMap<String, (u8, u32, Vec<u8>)> {
        let mut t = BTreeMap::new();
        for l in layers {
            let mut a = tar::Archive::new(std::fs::File::open(&l.path).unwrap());
            for e in a.entries().unwrap() {
                let mut e = e.unwrap();
                let p = e.path().unwrap().to_string_lossy().into_owned();
                let h = e.header().clone();
                let mut c = Vec::new();
                e.read_to_end(&mut c).unwrap();
                t.insert(p, (h.entry_type().as_byte(), h.mode().unwrap(), c));
            }
        }
        t
    }

    #[test]
    fn a_direct_layer_is_cut_by_distribution_as_the_engine_cuts_its_snapshot() {
        let mut f = Fixture::new();
        let tab = Artifact {
            name: "tabulate-0.9.0-py3-none-any.whl".into(),
            path: f.wheel("tabulate-0.9.0-py3-none-any.whl", &[], None),
        };
        let big = sized_wheel(&f, "heavy", "1.0", 300_000);
        let small = sized_wheel(&f, "light", "2.0", 100);
        let reqs = "heavy==1.0\nlight==2.0\ntabulate==0.9.0\n";
        let wheels = [big.clone(), small, tab];
        let rule = split::Rule {
            threshold: 200_000,
            max_layers: split::MAX_LAYERS,
        };
        let (cut, _s1) = layers_of(&f, reqs, &wheels, Some(rule));
        let (whole, _s2) = layers_of(&f, reqs, &wheels, None);

        // Heavy first, the smaller ones together, then the top.
        let labels: Vec<String> = cut.layers.iter().map(|l| l.part.label()).collect();
        assert_eq!(labels, ["heavy-1.0", "2 distributions", "the rest"]);
        assert_eq!(
            cut.layers[1].part,
            split::Part::Group {
                names: vec!["light-2.0".into(), "tabulate-0.9.0".into()],
                size: match &cut.layers[1].part {
                    split::Part::Group { size, .. } => *size,
                    _ => 0,
                },
            }
        );
        // Each part's diff id is its tar's digest.
        for l in &cut.layers {
            assert_eq!(
                l.diff_id,
                crate::image::image_id(&std::fs::read(&l.path).unwrap())
            );
        }
        // The heavy layer holds its files, not how it was installed; the
        // top holds every RECORD, the whiteouts and the record, last.
        let site = "usr/local/lib/python3.11/dist-packages";
        let heavy: Vec<String> = tree(&cut.layers[..1]).into_keys().collect();
        assert!(
            heavy.contains(&format!("{site}/heavy/data.py")),
            "{heavy:?}"
        );
        assert!(heavy.contains(&format!("{site}/heavy-1.0.dist-info/METADATA")));
        assert!(!heavy
            .iter()
            .any(|p| p.ends_with("RECORD") || p.contains("light")));
        let top = entries(&cut.layers[2].path);
        let top_names: Vec<&str> = top.iter().map(|(n, _, _)| n.as_str()).collect();
        for r in ["heavy-1.0", "light-2.0", "tabulate-0.9.0"] {
            assert!(
                top_names.contains(&format!("{site}/{r}.dist-info/RECORD").as_str()),
                "{top_names:?}"
            );
        }
        assert!(top_names.contains(&format!("{site}/.wh.tabulate-0.8.0.dist-info").as_str()));
        assert_eq!(
            top_names.last().unwrap(),
            &"opt/apache/beam/prebuilder-record.json"
        );

        // Applied in order, the parts give the unsplit layer's tree.
        assert_eq!(whole.layers.len(), 1);
        assert_eq!(tree(&cut.layers), tree(&whole.layers));
        assert_eq!(cut.record, whole.record);

        // The heavy layer is the same bytes whatever else the layer installs.
        let (alone, _s3) = layers_of(&f, "heavy==1.0\n", &[big], Some(rule));
        assert_eq!(alone.layers[0].part.label(), "heavy-1.0");
        assert_eq!(alone.layers[0].diff_id, cut.layers[0].diff_id);
    }

    #[test]
    fn a_direct_layer_with_no_heavy_distribution_is_one_layer_as_without_a_rule() {
        let f = Fixture::new();
        let small = sized_wheel(&f, "light", "2.0", 100);
        let rule = split::Rule {
            threshold: 200_000,
            max_layers: split::MAX_LAYERS,
        };
        let (cut, _s1) = layers_of(&f, "light==2.0\n", std::slice::from_ref(&small), Some(rule));
        let (whole, _s2) = layers_of(&f, "light==2.0\n", &[small], None);
        assert_eq!(cut.layers.len(), 1);
        assert_eq!(cut.layers[0].part, split::Part::Top);
        assert_eq!(cut.layers[0].diff_id, whole.layers[0].diff_id);
    }

    #[test]
    fn no_beam_in_the_base_and_none_staged_is_refused_first() {
        let f = Fixture::new();
        let _ = &f;
        let scratch = tempfile::tempdir().unwrap();
        let e = produce(
            &debian_index(),
            &spec(vec![]),
            &Options::default(),
            scratch.path(),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("Apache Beam is not installed"),
            "{e}"
        );
        assert_eq!(e.exit_code(), 1);
    }
}
