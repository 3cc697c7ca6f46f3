//! Issue 22: the dependency layer split by distribution, on the real engine
//! with real pip, and pushed to a real registry. Small wheels: numpy (which
//! replaces the base's numpy) stands for torch, `PREBUILDER_SPLIT_THRESHOLD`
//! of 1 MiB makes it heavy; two probe wheels both ship `probe_ns/__init__.py`
//! (as every nvidia-* wheel ships `nvidia/__init__.py`).

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::Digest as _;

use crate::support::*;

const SITE: &str = "usr/local/lib/python3.11/dist-packages";
const THRESHOLD: &str = "1m";
const REQUIREMENTS: &str = "numpy==2.1.3\nmore-itertools==10.7.0\nprobe-a==1.0\nprobe-b==1.0\n";

/// The direct fixture's wheels this test installs, and the two probes.
fn wheels(dir: &Path) -> PathBuf {
    let cache = std::env::var("PREBUILDER_FIXTURE_CACHE")
        .unwrap_or_else(|_| "/var/cache/prebuilder-fixtures".into());
    let from = Path::new(&cache).join("wheels/direct");
    let out = dir.join("wheels");
    std::fs::create_dir_all(&out).unwrap();
    for e in std::fs::read_dir(&from)
        .unwrap_or_else(|e| panic!("{}: {e} (run `make fixtures`)", from.display()))
    {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if ["numpy-", "more_itertools-", "jaraco.functools-"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            std::fs::copy(from.join(&name), out.join(&name)).unwrap();
        }
    }
    for (name, module) in [("probe_a", "a"), ("probe_b", "b")] {
        wheel(
            &out,
            name,
            &[
                ("probe_ns/__init__.py", "# the namespace, shipped twice\n"),
                (&format!("probe_ns/{module}.py"), "VALUE = 1\n"),
            ],
        );
    }
    out
}

/// A pure-Python wheel `name-1.0` holding `files`.
fn wheel(dir: &Path, name: &str, files: &[(&str, &str)]) {
    use base64::Engine as _;
    let info = format!("{name}-1.0.dist-info");
    let metadata = format!(
        "Metadata-Version: 2.1\nName: {}\nVersion: 1.0\n",
        name.replace('_', "-")
    );
    let wheel = "Wheel-Version: 1.0\nGenerator: prebuilder-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n";
    let mut all: Vec<(String, String)> = files
        .iter()
        .map(|(p, c)| (p.to_string(), c.to_string()))
        .collect();
    all.push((format!("{info}/METADATA"), metadata));
    all.push((format!("{info}/WHEEL"), wheel.to_string()));
    let path = dir.join(format!("{name}-1.0-py3-none-any.whl"));
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let mut record = String::new();
    for (name, content) in &all {
        zip.start_file(name.as_str(), zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(content.as_bytes()).unwrap();
        let hash = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(content.as_bytes()));
        record.push_str(&format!("{name},sha256={hash},{}\n", content.len()));
    }
    record.push_str(&format!("{info}/RECORD,,\n"));
    zip.start_file(
        format!("{info}/RECORD"),
        zip::write::SimpleFileOptions::default(),
    )
    .unwrap();
    zip.write_all(record.as_bytes()).unwrap();
    zip.finish().unwrap();
}

/// The report's parts of the dependency layer: (name, diff id).
fn parts(report: &serde_json::Value) -> Vec<(String, String)> {
    report["layers"][0]["parts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap().to_string(),
                        p["diff_id"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The push statuses of a `--progress json` run that say a blob was
/// uploaded (not found, not mounted).
fn uploads(o: &std::process::Output) -> Vec<String> {
    events(o)
        .iter()
        .filter(|e| e["event"] == "push_status")
        .filter_map(|e| e["status"].as_str())
        .filter(|s| s.contains(" uploaded ("))
        .map(str::to_string)
        .collect()
}

/// The last `n` layers of `image` (`docker save`), bottom up: each entry's
/// path, kind and content digest.
fn last_layers(image: &str, n: usize, dir: &Path) -> Vec<Vec<(String, char)>> {
    let archive = dir.join("saved.tar");
    docker_ok(&["save", "-o", archive.to_str().unwrap(), image]);
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    let mut manifest = Vec::new();
    let mut a = tar::Archive::new(std::fs::File::open(&archive).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut body = Vec::new();
        if name == "manifest.json" || name.ends_with("/layer.tar") {
            e.read_to_end(&mut body).unwrap();
        }
        if name == "manifest.json" {
            manifest = body;
        } else if name.ends_with("/layer.tar") {
            files.insert(name, body);
        }
    }
    let _ = std::fs::remove_file(&archive);
    let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let names: Vec<&str> = m[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    names[names.len() - n..]
        .iter()
        .map(|name| {
            tar::Archive::new(&files[*name][..])
                .entries()
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    let kind = match e.header().entry_type() {
                        tar::EntryType::Directory => 'd',
                        tar::EntryType::Symlink => 'l',
                        tar::EntryType::Link => 'h',
                        _ => 'f',
                    };
                    (e.path().unwrap().to_string_lossy().into_owned(), kind)
                })
                .collect()
        })
        .collect()
}

/// An image's file tree as a container of it shows it (`docker export`):
/// path → (kind, mode, uid, gid, mtime, link, content digest).
type Tree = BTreeMap<String, (u8, u32, u64, u64, u64, String, String)>;

fn tree(image: &str) -> Tree {
    let name = format!("prebuilder-split-tree-{}", std::process::id());
    let _ = docker(&["rm", "-f", &name]);
    docker_ok(&[
        "create",
        "--name",
        &name,
        "--label",
        "prebuilder=test",
        image,
    ]);
    let mut child = std::process::Command::new("docker")
        .args(["export", &name])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = Tree::new();
    let mut a = tar::Archive::new(child.stdout.take().unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let h = e.header().clone();
        let link = e
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut hasher = sha2::Sha256::new();
        std::io::copy(&mut e, &mut hasher).unwrap();
        out.insert(
            path,
            (
                h.entry_type().as_byte(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.mtime().unwrap(),
                link,
                hex::encode(hasher.finalize()),
            ),
        );
    }
    child.wait().unwrap();
    let _ = docker(&["rm", "-f", &name]);
    out
}

/// How many `RECORD`s of the image claim each path (relative to the root),
/// from the `RECORD` files in the top layer of its split.
fn claims(image: &str) -> HashMap<String, usize> {
    let code = r#"
import csv, glob, os
for record in glob.glob("/usr/local/lib/python3.11/dist-packages/*.dist-info/RECORD"):
    site = os.path.dirname(os.path.dirname(record))
    paths = {os.path.normpath(os.path.join(site, row[0])) for row in csv.reader(open(record)) if row}
    for path in sorted(paths):
        print(path.lstrip("/"))
"#;
    let o = python_in(image, code);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut claims = HashMap::new();
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        *claims.entry(line.to_string()).or_insert(0) += 1;
    }
    claims
}

/// Issue 22's tests on the real engine: two pipelines sharing a heavy
/// distribution get the same layer for it; the package pip replaced in the
/// base is whiteouts in the top layer; what no single RECORD claims is in
/// the top layer and nowhere else; the layer count is bounded; the split
/// image's file tree equals the unsplit one's; and the second pipeline's
/// push to another repository of the registry uploads only the layers that
/// changed (the base's and numpy's are mounted).
#[test]
fn heavy_distributions_are_shared_layers_and_the_tree_is_unchanged() {
    let fx = Fixtures::load();
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let dir = tempfile::tempdir().unwrap();
    let cache = wheels(dir.path());
    let registry = TestRegistry::start(None);
    let one = format!("{}/split/one", registry.addr);
    let two = format!("{}/split/two", registry.addr);
    let (_one, _two) = (
        TestRepo { name: one.clone() },
        TestRepo { name: two.clone() },
    );
    let unsplit = TestRepo::new("split-unsplit");
    let config = dir.path().join("docker");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("config.json"), "{}").unwrap();
    let build = |repository: &str, requirements: &Path| {
        Build::new(&fx.beam_image)
            .repository(repository)
            .requirements(requirements)
            .cache(&cache)
            .docker_config(&config)
            .env("PREBUILDER_STATE_DIR", dir.path().join("state"))
            .env("PREBUILDER_SPLIT_THRESHOLD", THRESHOLD)
            .args(["--progress", "json"])
    };

    let first_requirements = unique_requirements(dir.path(), REQUIREMENTS);
    let o = build(&one, &first_requirements).push().run();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // On Docker's classic store the split snapshot comes in parts, each
    // read from a `tar` prebuilder runs in the setup container, cut and
    // loaded while the next is read (the file tree is compared with the
    // unsplit one's below).
    assert!(
        stderr(&o).contains("prebuilder: snapshot listed"),
        "{}",
        stderr(&o)
    );
    // numpy's layer was made and loaded while pip still ran (the staged
    // wheel's RECORD predicted it, the setup announced it) and kept.
    let early: Vec<String> = events(&o)
        .iter()
        .filter(|e| e["event"] == "early_layer")
        .filter_map(|e| e["part"].as_str().map(str::to_string))
        .collect();
    assert_eq!(early, ["numpy-2.1.3"], "{}", stderr(&o));
    assert!(!stderr(&o).contains("early_layers_dropped"));
    let first = json(&o);
    let first_parts = parts(&first);
    let names: Vec<&str> = first_parts.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["numpy-2.1.3", "3 distributions", "the rest"]);
    assert!(first_parts.len() <= 16, "the layer count bound");

    let second_requirements = unique_requirements(
        dir.path(),
        &format!("{REQUIREMENTS}jaraco.functools==4.1.0\n"),
    );
    let o = build(&two, &second_requirements).push().run();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let second = json(&o);
    let second_parts = parts(&second);
    assert_eq!(second_parts[0], first_parts[0], "numpy is the same layer");
    assert_eq!(second_parts.len(), 3, "{second_parts:?}");
    assert_ne!(second_parts[1].1, first_parts[1].1, "the group differs");
    // Only the group and the top are new to the registry: numpy's layer and
    // the base's are mounted from the first repository.
    let uploaded = uploads(&o);
    assert_eq!(uploaded.len(), 2, "{uploaded:?}");
    let statuses = stderr(&o);
    assert!(statuses.contains("mounted from split/one"), "{statuses}");

    // The first image's split, as the engine holds it.
    let image = first["image"].as_str().unwrap();
    let layers = last_layers(image, first_parts.len(), dir.path());
    let top = layers.last().unwrap();
    let has = |layer: &[(String, char)], p: &str| layer.iter().any(|(q, _)| q == p);
    assert!(
        has(top, &format!("{SITE}/.wh.numpy-2.2.6.dist-info")),
        "the base's numpy, replaced by pip, is whited out on top"
    );
    assert!(has(top, "opt/apache/beam/prebuilder-record.json"));
    assert!(has(top, &format!("{SITE}/probe_ns/__init__.py")));
    assert!(has(&layers[0], &format!("{SITE}/numpy/__init__.py")));
    let claims = claims(image);
    for (i, layer) in layers[..layers.len() - 1].iter().enumerate() {
        for (path, kind) in layer {
            assert!(!path.contains(".wh."), "whiteouts only on top: {path}");
            if *kind != 'd' {
                assert_eq!(
                    claims.get(path.as_str()),
                    Some(&1),
                    "{path} in layer {i}: only what one RECORD claims"
                );
            }
        }
    }

    // The same inputs with no layer made while pip runs: the same layers,
    // the same image.
    let late = TestRepo::new("split-late");
    let late_run = build(&late.name, &first_requirements)
        .env("PREBUILDER_EARLY_LAYERS", "off")
        .arg("--no-cache")
        .run();
    assert_eq!(late_run.status.code(), Some(0), "{}", stderr(&late_run));
    assert!(!stderr(&late_run).contains("\"early_layer\""));
    let late_report = json(&late_run);
    assert_eq!(parts(&late_report), first_parts);
    assert_eq!(
        late_report["layers"][0]["image_id"],
        first["layers"][0]["image_id"]
    );

    // The same inputs, unsplit: one dependency layer, the same file tree.
    let whole_run = build(&unsplit.name, &first_requirements)
        .env("PREBUILDER_SPLIT_THRESHOLD", "off")
        .arg("--no-cache")
        .run();
    assert_eq!(whole_run.status.code(), Some(0), "{}", stderr(&whole_run));
    assert!(!stderr(&whole_run).contains("prebuilder: snapshot listed"));
    let whole = json(&whole_run);
    assert!(parts(&whole).is_empty());
    let split_image = first["layers"][0]["image_id"].as_str().unwrap();
    let whole_image = whole["layers"][0]["image_id"].as_str().unwrap();
    let layer_count = |id: &str| {
        docker_ok(&["inspect", "-f", "{{len .RootFS.Layers}}", id])
            .trim()
            .parse::<usize>()
            .unwrap()
    };
    assert_eq!(
        layer_count(split_image),
        layer_count(whole_image) + first_parts.len() - 1
    );
    // A directory no layer has an entry for (`opt/` above the record) is
    // made by the engine when it applies the layer, dated then: in both
    // images, so such dates are not compared. One the snapshot has is
    // dated by prebuilder (the base's date) and must be the same.
    let engine_dated = |mut t: Tree| {
        for (kind, _, _, _, mtime, _, _) in t.values_mut() {
            if *kind == b'5' && *mtime >= started {
                *mtime = 0;
            }
        }
        t
    };
    let (split_tree, whole_tree) = (
        engine_dated(tree(split_image)),
        engine_dated(tree(whole_image)),
    );
    let differences: Vec<&String> = split_tree
        .keys()
        .chain(whole_tree.keys())
        .filter(|p| split_tree.get(*p) != whole_tree.get(*p))
        .filter(|p| !made_by_the_container(p))
        .collect();
    assert!(
        differences.is_empty(),
        "{} paths differ, e.g. {:?}",
        differences.len(),
        differences
            .iter()
            .take(10)
            .map(|p| (p, split_tree.get(*p), whole_tree.get(*p)))
            .collect::<Vec<_>>()
    );
    assert!(split_tree.len() > 10_000, "{}", split_tree.len());
}

/// What the engine writes into every container it creates (its init
/// layer), dated when the container was: not the image's.
fn made_by_the_container(path: &str) -> bool {
    [
        ".dockerenv",
        "etc/",
        "etc/hostname",
        "etc/hosts",
        "etc/resolv.conf",
        "etc/mtab",
    ]
    .contains(&path)
        || ["dev/", "proc/", "sys/"]
            .iter()
            .any(|d| path.starts_with(d))
}
