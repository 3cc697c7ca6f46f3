//! Direct mode (no container to install with) against the real thing: the
//! base index against what python and pip report inside the fixture base,
//! and (see `equivalence`) layers made by the library against the engine
//! path's image of the same inputs.

use std::path::{Path, PathBuf};
use std::process::Command;

use prebuilder::direct::index::{self, Index};

use crate::support::*;

/// The config and layer files of an image in the engine (`docker save`).
pub struct Saved {
    pub id: String,
    pub config: Vec<u8>,
    pub layers: Vec<PathBuf>,
    /// Holds the layer files until the test is done with them.
    pub _dir: tempfile::TempDir,
}

pub fn save(image: &str) -> Saved {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new("docker")
        .args(["save", image])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("docker save");
    let out = child.stdout.take().unwrap();
    let images = prebuilder::image::export::unpack(out, dir.path(), &|_| true).unwrap();
    assert!(child.wait().unwrap().success());
    let img = images.into_iter().next().unwrap();
    let id = prebuilder::image::image_id(&img.config);
    Saved {
        id,
        config: img.config,
        layers: img.layers.iter().map(|l| l.path.clone().unwrap()).collect(),
        _dir: dir,
    }
}

pub fn index_of(image: &str) -> Index {
    let s = save(image);
    index::index_layers(&s.id, &s.config, &s.layers).unwrap()
}

/// What python and pip say about themselves inside the image.
const PROBE: &str = r#"
import json, sys, sysconfig
from pip._internal.locations import get_scheme
from pip._internal.utils.compatibility_tags import get_supported
from pip._internal.metadata import get_default_environment
import pip
s = get_scheme("DIST")
dists = [
    {"name": d.canonical_name, "version": str(d.version), "location": d.location}
    for d in get_default_environment().iter_all_distributions()
]
print(json.dumps({
    "executable": sys.executable,
    "version": sys.version.split()[0],
    "sys_path": sys.path,
    "scheme": {"purelib": s.purelib, "platlib": s.platlib, "scripts": s.scripts,
               "data": s.data, "headers": s.headers},
    "pip": pip.__version__,
    "tags": [str(t) for t in get_supported()],
    "dists": dists,
}))
"#;

fn probe(image: &str) -> serde_json::Value {
    let o = python_in(image, PROBE);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn check_index_against_probe(image: &str) {
    let i = index_of(image);
    let p = probe(image);
    assert_eq!(i.python.executable, p["executable"].as_str().unwrap());
    assert_eq!(i.python.version, p["version"].as_str().unwrap());
    // The image's sys.path from python -c starts with '' (the script's directory).
    let sys_path: Vec<String> = strings(&p["sys_path"])
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(i.sys_path, sys_path);
    let s = &p["scheme"];
    assert_eq!(i.scheme.purelib, s["purelib"].as_str().unwrap());
    assert_eq!(i.scheme.platlib, s["platlib"].as_str().unwrap());
    assert_eq!(i.scheme.scripts, s["scripts"].as_str().unwrap());
    assert_eq!(i.scheme.data, s["data"].as_str().unwrap());
    assert_eq!(
        format!("{}/DIST", i.scheme.include),
        s["headers"].as_str().unwrap()
    );
    assert_eq!(i.pip.version, p["pip"].as_str().unwrap());
    assert_eq!(
        i.tags,
        strings(&p["tags"]),
        "pip's supported tags, in order"
    );
    let mut ours: Vec<(String, String, String)> = i
        .distributions
        .iter()
        .map(|d| (d.key(), d.version.clone(), d.location.clone()))
        .collect();
    let mut theirs: Vec<(String, String, String)> = p["dists"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap().to_string(),
                d["version"].as_str().unwrap().to_string(),
                d["location"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // pip lists the first distribution of each name on sys.path.
    let mut seen = std::collections::HashSet::new();
    ours.retain(|d| seen.insert(d.0.clone()));
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs);
}

#[test]
fn the_beam_base_is_indexed_as_its_python_and_pip_see_it() {
    let f = Fixtures::load();
    check_index_against_probe(&f.beam_image);
}

#[test]
fn the_plain_python_base_is_indexed_as_its_python_and_pip_see_it() {
    let f = Fixtures::load();
    check_index_against_probe(&f.python_image);
}

#[allow(dead_code)]
pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}
