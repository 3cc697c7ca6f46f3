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

// ---------------------------------------------------------------------------
// The equivalence oracle: the same inputs built by the engine path and by
// the direct library give the same installed files, pip freeze and pip check.

use std::collections::BTreeMap;

use prebuilder::direct::boot::Artifact;
use prebuilder::direct::layer::{self, Options, Spec};
use prebuilder::stage::{Inputs, StagedSet};

/// Images built for one comparison, removed on drop.
pub struct Built {
    pub engine: String,
    pub direct: String,
    /// The interpreter version that compiled the direct image's .pyc.
    pub compiled_by: Option<String>,
    pub base_python: String,
    /// The direct image's record (its top layer's).
    pub direct_record: Option<prebuilder::record::Record>,
    _repo: TestRepo,
}

/// A base's id, config and index.
type BaseFacts = (String, Vec<u8>, Index);

/// The base's id, config and index, derived once per test process.
fn base(image: &str) -> BaseFacts {
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<BTreeMap<String, BaseFacts>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(BTreeMap::new()));
    if let Some(b) = cache.lock().unwrap().get(image) {
        return b.clone();
    }
    let s = save(image);
    let i = index::index_layers(&s.id, &s.config, &s.layers).unwrap();
    let b = (s.id.clone(), s.config.clone(), i);
    cache.lock().unwrap().insert(image.to_string(), b.clone());
    b
}

/// Load `base_config` plus `layers` (uncompressed tars) as `tag`: a `docker
/// load` archive that names every layer but holds only the new ones (the
/// engine has the base's), as prebuilder's own loads do.
fn load(base_config: &[u8], layers: &[PathBuf], tag: &str) {
    let mut config: serde_json::Value = serde_json::from_slice(base_config).unwrap();
    let mut diff_ids: Vec<serde_json::Value> =
        config["rootfs"]["diff_ids"].as_array().unwrap().clone();
    let below = diff_ids.len();
    let mut history: Vec<serde_json::Value> =
        config["history"].as_array().cloned().unwrap_or_default();
    for l in layers {
        let d = prebuilder::image::image_id(&std::fs::read(l).unwrap());
        diff_ids.push(serde_json::Value::String(d));
        history.push(serde_json::json!({"created_by": "prebuilder direct (test)"}));
    }
    config["rootfs"]["diff_ids"] = serde_json::Value::Array(diff_ids.clone());
    config["history"] = serde_json::Value::Array(history);
    let config = serde_json::to_vec(&config).unwrap();
    let names: Vec<String> = (0..diff_ids.len())
        .map(|i| format!("{i}/layer.tar"))
        .collect();
    let manifest =
        serde_json::json!([{"Config": "config.json", "RepoTags": [tag], "Layers": names}]);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("image.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&archive).unwrap());
    let mut add = |name: &str, bytes: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, bytes).unwrap();
    };
    add("config.json", &config);
    add("manifest.json", manifest.to_string().as_bytes());
    for (n, p) in names[below..].iter().zip(layers) {
        b.append_path_with_name(p, n).unwrap();
    }
    b.finish().unwrap();
    drop(b);
    docker_ok(&["load", "-q", "-i", archive.to_str().unwrap()]);
}

/// Build `inputs` on `base` both ways.
pub fn build_both(test: &str, base: &str, inputs: &Inputs, extra_args: &[&str]) -> Built {
    let repo = TestRepo::new(test);
    // The engine path, as users run it.
    let mut args: Vec<String> = vec![
        "build".into(),
        "--base".into(),
        base.into(),
        "--network".into(),
        "none".into(),
        "--repository".into(),
        repo.name.clone(),
        "--format".into(),
        "json".into(),
    ];
    if let Some(r) = &inputs.requirements_file {
        args.extend(["--requirements-file".into(), r.display().to_string()]);
    }
    if let Some(c) = &inputs.requirements_cache {
        args.extend(["--requirements-cache".into(), c.display().to_string()]);
    }
    for e in &inputs.extra_packages {
        args.extend(["--extra-package".into(), e.display().to_string()]);
    }
    if let Some(s) = &inputs.setup_file {
        args.extend(["--setup-file".into(), s.display().to_string()]);
    }
    args.extend(extra_args.iter().map(|s| s.to_string()));
    let o = run(prebuilder().args(&args));
    assert!(o.status.success(), "engine build failed:\n{}", stderr(&o));
    let engine = json(&o)["image"].as_str().unwrap().to_string();

    // The direct library, from the base's saved layers.
    let (base_id, base_config, index) = self::base(base);
    let created = serde_json::from_slice::<serde_json::Value>(&base_config).unwrap()["created"]
        .as_str()
        .map(str::to_string);
    let epoch = prebuilder::image::reproducible::epoch(None, created.as_deref());
    let tmp = tempfile::tempdir().unwrap();
    let set = StagedSet::from_inputs_in(inputs, tmp.path()).unwrap();
    let plan = prebuilder::plan::plan(&set, &base_id).unwrap();
    let mut lower = index.clone();
    let mut lower_inputs = BTreeMap::new();
    let mut parent: Option<prebuilder::record::Record> = None;
    let mut layers = Vec::new();
    let mut compiled_by = None;
    let work = tempfile::tempdir().unwrap();
    for (i, l) in plan.layers.iter().enumerate() {
        let scratch = work.path().join(format!("layer{i}"));
        std::fs::create_dir_all(&scratch).unwrap();
        let staged: Vec<_> = l.artifacts.iter().map(|a| (*a).clone()).collect();
        let spec = Spec {
            name: l.name.as_str(),
            key: &l.key,
            artifacts: l
                .artifacts
                .iter()
                .map(|a| Artifact {
                    name: a.name.clone(),
                    path: a.path.clone(),
                })
                .collect(),
            inputs: l
                .artifacts
                .iter()
                .map(|a| (a.name.clone(), a.content_digest.clone()))
                .collect(),
            lower_inputs: lower_inputs.clone(),
            base_id: &base_id,
            boot_from: None,
            epoch,
            staged: &staged,
            parent: parent.as_ref(),
        };
        let p = layer::produce(
            &lower,
            &spec,
            &Options {
                python: Some(Fixtures::load().venv_python),
                compile: true,
                split: None,
            },
            &scratch,
        )
        .unwrap_or_else(|e| panic!("direct {}: {e}", l.name));
        for w in &p.log.warnings {
            eprintln!("direct {}: pip would warn: {w}", l.name);
        }
        compiled_by = p.compiled_by.as_ref().map(|c| c.version.clone());
        lower_inputs = p.record.inputs.clone();
        parent = Some(p.record.clone());
        lower = p.installed;
        layers.extend(p.layers.into_iter().map(|w| w.path));
    }
    let direct = format!("{}:direct", repo.name);
    load(&base_config, &layers, &direct);
    Built {
        engine,
        direct,
        compiled_by,
        base_python: index.python.version.clone(),
        direct_record: parent,
        _repo: repo,
    }
}

/// The records' `distributions` (what the SBOM lists) agree on everything
/// a layer installed: version, layer, and the staged file with its digest.
fn assert_same_distributions(b: &Built) {
    let o = python_in(
        &b.engine,
        "print(open('/opt/apache/beam/prebuilder-record.json').read())",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let engine = prebuilder::record::Record::parse(&String::from_utf8_lossy(&o.stdout)).unwrap();
    let theirs = engine
        .distributions
        .expect("the engine's record lists distributions");
    let ours = b
        .direct_record
        .as_ref()
        .and_then(|r| r.distributions.clone())
        .expect("the direct record lists distributions");
    let fact = |d: &prebuilder::record::Distribution| {
        (
            d.version.clone(),
            d.layer.clone(),
            d.artifact
                .as_ref()
                .map(|a| (a.name.clone(), a.digest.clone())),
        )
    };
    for (key, d) in theirs
        .iter()
        .filter(|(_, d)| d.layer != prebuilder::record::IN_BASE)
    {
        let mine = ours
            .get(key)
            .unwrap_or_else(|| panic!("{key} not in the direct record"));
        assert_eq!(fact(mine), fact(d), "{key}");
    }
}

/// Installed files, pip freeze and pip check inside an image.
///
/// A `.pyc` is digested over its header and its code objects (every field,
/// `co_filename` included), not its bytes: marshal marks objects it has seen
/// twice by their reference counts in the compiling process, so two
/// compilations of one source by one interpreter can differ in those flag
/// bits alone.
const WALK: &str = r#"
import hashlib, json, marshal, os, stat, subprocess, sys, types
def canon(o):
    if isinstance(o, types.CodeType):
        fields = ("co_filename", "co_name", "co_qualname", "co_firstlineno", "co_flags",
                  "co_argcount", "co_posonlyargcount", "co_kwonlyargcount", "co_stacksize",
                  "co_code", "co_linetable", "co_exceptiontable", "co_names", "co_varnames",
                  "co_freevars", "co_cellvars")
        return ("code",) + tuple(getattr(o, f, None) for f in fields) + (tuple(canon(c) for c in o.co_consts),)
    if isinstance(o, (tuple, list)):
        return (type(o).__name__, tuple(canon(x) for x in o))
    if isinstance(o, frozenset):
        return ("frozenset", tuple(sorted((canon(x) for x in o), key=repr)))
    return (type(o).__name__, repr(o))
def digest(p, data):
    if p.endswith(".pyc") and len(data) > 16:
        try:
            return "pyc:" + hashlib.sha256(data[:16] + repr(canon(marshal.loads(data[16:]))).encode()).hexdigest()
        except Exception:
            pass
    return hashlib.sha256(data).hexdigest()
out = {}
for root in ["/usr/local", "/usr/lib/python3/dist-packages", "/usr/include"]:
    for dp, dns, fns in os.walk(root):
        for n in dns:
            p = os.path.join(dp, n)
            st = os.lstat(p)
            out[p + "/"] = ["d", oct(st.st_mode & 0o7777), st.st_uid, st.st_gid]
        for n in fns:
            p = os.path.join(dp, n)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[p] = ["l", os.readlink(p)]
            else:
                with open(p, "rb") as f:
                    h = digest(p, f.read())
                out[p] = ["f", oct(st.st_mode & 0o7777), st.st_size, h]
freeze = subprocess.run([sys.executable, "-m", "pip", "freeze", "--all"], capture_output=True, text=True)
check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
print(json.dumps({"files": out, "freeze": freeze.stdout, "check": [check.returncode, check.stdout + check.stderr]}))
"#;

fn walk(image: &str) -> serde_json::Value {
    let o = python_in(image, WALK);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Compare the two images; `own` names dist-info directories whose files
/// are left out (the pipeline's own package, built by another backend).
pub fn assert_equivalent(b: &Built, own: &[&str]) {
    let e = walk(&b.engine);
    let d = walk(&b.direct);
    let exact_pyc = b.compiled_by.as_deref() == Some(b.base_python.as_str());
    let skip = |p: &str| {
        let name = p.rsplit('/').next().unwrap_or("");
        matches!(name, "INSTALLER" | "RECORD" | "direct_url.json")
            || own.iter().any(|o| p.contains(&format!("/{o}")))
    };
    let ef = e["files"].as_object().unwrap();
    let df = d["files"].as_object().unwrap();
    let mut diffs = Vec::new();
    let keys: std::collections::BTreeSet<&String> = ef.keys().chain(df.keys()).collect();
    for k in keys {
        if skip(k) {
            continue;
        }
        match (ef.get(k), df.get(k)) {
            (Some(a), Some(b)) => {
                if k.ends_with(".pyc") && !exact_pyc {
                    continue;
                }
                if a != b {
                    diffs.push(format!("{k}: engine {a} direct {b}"));
                }
            }
            (Some(_), None) => diffs.push(format!("{k}: only in the engine image")),
            (None, Some(_)) => diffs.push(format!("{k}: only in the direct image")),
            (None, None) => {}
        }
    }
    assert!(
        diffs.is_empty(),
        "{} differences (pyc exact: {exact_pyc}):\n{}",
        diffs.len(),
        diffs
            .iter()
            .take(60)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(e["freeze"], d["freeze"], "pip freeze --all");
    assert_same_distributions(b);
    assert_eq!(
        e["check"][0], 0,
        "pip check in the engine image: {}",
        e["check"][1]
    );
    assert_eq!(
        d["check"][0], 0,
        "pip check in the direct image: {}",
        d["check"][1]
    );
}

#[test]
fn the_demo_is_the_same_built_directly_or_by_the_engine() {
    let f = Fixtures::load();
    let tmp = tempfile::tempdir().unwrap();
    let inputs = Inputs {
        requirements_file: Some(unique_requirements(tmp.path(), &demo_requirements_text())),
        requirements_cache: Some(f.demo_wheels.clone()),
        setup_file: Some(repo().join("demo/pipeline")),
        ..Inputs::default()
    };
    let b = build_both("direct-demo", &f.beam_image, &inputs, &[]);
    assert_equivalent(&b, &["prebuilder_demo-0.1.0.dist-info"]);
}

fn direct_wheels() -> PathBuf {
    let cache = std::env::var("PREBUILDER_FIXTURE_CACHE")
        .unwrap_or_else(|_| "/var/cache/prebuilder-fixtures".into());
    let dir = Path::new(&cache).join("wheels/direct");
    assert!(
        dir.join(".stamp").is_file(),
        "{} is missing: run `make fixtures` (integration/fixtures/direct.sh)",
        dir.display()
    );
    dir
}

fn requirements_set(test: &str, requirements: &str) -> Built {
    let f = Fixtures::load();
    let tmp = tempfile::tempdir().unwrap();
    let inputs = Inputs {
        requirements_file: Some(unique_requirements(tmp.path(), requirements)),
        requirements_cache: Some(direct_wheels()),
        ..Inputs::default()
    };
    build_both(test, &f.beam_image, &inputs, &[])
}

/// numpy replaces the base's (its numpy.libs and console scripts too);
/// pandas, compiled, joins it with the tzdata it needs.
#[test]
fn compiled_wheels_with_libs_and_console_scripts_are_the_same_built_directly() {
    let b = requirements_set(
        "direct-compiled",
        "numpy==2.1.3\npandas==2.2.3\ntzdata==2025.2\n",
    );
    assert_equivalent(&b, &[]);
}

/// Debian's pip leaves apt's wheel 0.38.4 where it is and installs 0.45.1 in
/// /usr/local, which then comes first on sys.path.
#[test]
fn an_upgrade_of_a_base_package_is_the_same_built_directly() {
    let b = requirements_set("direct-upgrade", "wheel==0.45.1\n");
    assert_equivalent(&b, &[]);
}

#[test]
fn a_namespace_package_split_over_two_distributions_is_the_same_built_directly() {
    let b = requirements_set(
        "direct-namespace",
        "jaraco.functools==4.1.0\njaraco.context==6.0.1\nmore-itertools==10.7.0\nbackports.tarfile==1.2.0\n",
    );
    assert_equivalent(&b, &[]);
}

/// An extra package is forced in (`--upgrade --force-reinstall --no-deps`)
/// and recorded with its file URL.
#[test]
fn an_extra_package_wheel_is_the_same_built_directly() {
    let f = Fixtures::load();
    let wheel = f.demo_wheels.join("tabulate-0.9.0-py3-none-any.whl");
    let tmp = tempfile::tempdir().unwrap();
    // A copy under a name unique to this run, so the build is a miss.
    let dir = tmp.path().join(format!("x{}", std::process::id()));
    std::fs::create_dir(&dir).unwrap();
    let copy = dir.join("tabulate-0.9.0-py3-none-any.whl");
    std::fs::copy(&wheel, &copy).unwrap();
    let inputs = Inputs {
        requirements_file: Some(unique_requirements(tmp.path(), "")),
        extra_packages: vec![copy],
        ..Inputs::default()
    };
    let b = build_both("direct-extra", &f.beam_image, &inputs, &[]);
    assert_equivalent(&b, &[]);
}

/// The report's parts of its dependency layer: (name, diff id).
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

/// `docker image inspect IMAGE` (the first object).
fn inspect(image: &str) -> serde_json::Value {
    let out = docker_ok(&["image", "inspect", image]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0].clone()
}

/// One layer's entries: path -> (kind, mode, uid, gid, mtime, size, sha256).
type Entries = BTreeMap<String, (u8, u32, u64, u64, u64, u64, String)>;

/// The entries of the last `n` layers of `image`, bottom up (`docker save`,
/// read twice: its manifest, then only those layers).
fn last_layers(image: &str, n: usize, dir: &Path) -> Vec<Entries> {
    use sha2::Digest as _;
    use std::io::Read as _;
    let archive = dir.join(format!("{}.tar", image.replace([':', '/'], "-")));
    docker_ok(&["save", "-o", archive.to_str().unwrap(), image]);
    let mut manifest = Vec::new();
    let mut a = tar::Archive::new(std::fs::File::open(&archive).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some("manifest.json") {
            e.read_to_end(&mut manifest).unwrap();
        }
    }
    let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let names: Vec<String> = serde_json::from_value(m[0]["Layers"].clone()).unwrap();
    let wanted = &names[names.len() - n..];
    let mut found: BTreeMap<String, Entries> = BTreeMap::new();
    let mut a = tar::Archive::new(std::fs::File::open(&archive).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        if !wanted.contains(&name) {
            continue;
        }
        let mut entries = Entries::new();
        for inner in tar::Archive::new(&mut e).entries().unwrap() {
            let mut inner = inner.unwrap();
            let h = inner.header().clone();
            let path = inner.path().unwrap().to_string_lossy().into_owned();
            let mut hasher = sha2::Sha256::new();
            std::io::copy(&mut inner, &mut hasher).unwrap();
            let fact = (
                h.entry_type().as_byte(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.mtime().unwrap(),
                h.size().unwrap(),
                hex::encode(hasher.finalize()),
            );
            entries.insert(path, fact);
        }
        found.insert(name, entries);
    }
    let _ = std::fs::remove_file(&archive);
    wanted.iter().map(|n| found.remove(n).unwrap()).collect()
}

/// What one builder writes and the other cannot write alike: how each
/// distribution was installed (`RECORD`, `direct_url.json`), the record,
/// and directories the setup container made (`tmp/`).
fn installed_alike(path: &str, kind: u8) -> bool {
    let name = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    !(matches!(
        name,
        "RECORD" | "direct_url.json" | "prebuilder-record.json"
    ) || (kind == b'5' && path.trim_end_matches('/') == "tmp"))
}

/// The dependency layer image of a report (its id).
fn deps_ref(report: &serde_json::Value) -> String {
    report["layers"][0]["image_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `--builder direct` with an engine that answers and no `--push`: the
/// image is loaded into the engine (it runs there with no network), and its
/// dependency layer is cut by distribution as the engine path cuts the
/// engine-built image of the same inputs: the same parts, bottom up, under
/// the same label and history, each holding the same entries as the
/// engine's part (headers and content; `.pyc` files by presence). Their
/// digests differ (see README: the `.pyc` bytes, the engine's directory
/// headers), so they are only printed.
#[test]
fn with_an_engine_direct_mode_loads_an_image_cut_as_the_engine_cuts_its_own() {
    let f = Fixtures::load();
    let tmp = tempfile::tempdir().unwrap();
    let requirements = unique_requirements(
        tmp.path(),
        "numpy==2.1.3\nmore-itertools==10.7.0\njaraco.functools==4.1.0\n",
    );
    let state = tmp.path().join("state");
    let engine_repo = TestRepo::new("direct3-cut-engine");
    let direct_repo = TestRepo::new("direct3-cut-direct");
    let build = |repository: &str| {
        Build::new(&f.beam_image)
            .repository(repository)
            .requirements(&requirements)
            .cache(direct_wheels())
            .env("PREBUILDER_STATE_DIR", &state)
            .env("PREBUILDER_SPLIT_THRESHOLD", "1m")
    };
    let engine = build(&engine_repo.name).ok();
    let direct = build(&direct_repo.name)
        .args(["--builder", "direct", "--launch-python"])
        .arg(&f.venv_python)
        .ok();
    assert_eq!(engine["builder"], "engine");
    assert_eq!(direct["builder"], "direct");
    assert_eq!(direct["digest"], serde_json::Value::Null, "not pushed");

    // The same cut: numpy alone, the smaller ones together, then the top.
    let (e_parts, d_parts) = (parts(&engine), parts(&direct));
    let names = |p: &[(String, String)]| -> Vec<String> { p.iter().map(|x| x.0.clone()).collect() };
    assert_eq!(names(&d_parts), names(&e_parts));
    assert_eq!(d_parts.first().unwrap().0, "numpy-2.1.3", "{d_parts:?}");
    assert_eq!(d_parts.last().unwrap().0, "the rest");
    assert!(d_parts.len() >= 3, "{d_parts:?}");
    let same: Vec<&str> = e_parts
        .iter()
        .zip(&d_parts)
        .filter(|(e, d)| e.1 == d.1)
        .map(|(e, _)| e.0.as_str())
        .collect();
    eprintln!("parts with the same diff id in both builders: {same:?}");

    // Loaded into the engine, as the report says, with its parts as layers.
    let id = direct["image_id"].as_str().unwrap();
    let image = direct["image"].as_str().unwrap();
    let loaded = inspect(image);
    assert_eq!(loaded["Id"], id);
    let deps = inspect(&deps_ref(&direct));
    let layers: Vec<String> = serde_json::from_value(deps["RootFS"]["Layers"].clone()).unwrap();
    let tail: Vec<String> = d_parts.iter().map(|p| p.1.clone()).collect();
    assert_eq!(layers[layers.len() - tail.len()..], tail[..]);
    let e_deps = inspect(&deps_ref(&engine));
    let label =
        |i: &serde_json::Value, k: &str| i["Config"]["Labels"][k].as_str().map(str::to_string);
    assert_eq!(
        label(&deps, "prebuilder.split"),
        label(&e_deps, "prebuilder.split")
    );
    assert_eq!(
        label(&loaded, "prebuilder.builder").as_deref(),
        Some("direct")
    );
    let history = docker_ok(&["history", "-q", "--no-trunc", image]);
    let e_history = docker_ok(&[
        "history",
        "-q",
        "--no-trunc",
        engine["image"].as_str().unwrap(),
    ]);
    assert_eq!(
        history.lines().count(),
        e_history.lines().count(),
        "one entry per layer"
    );

    // It runs with no network.
    let o = python_in(
        image,
        "import numpy, more_itertools, jaraco.functools; print(numpy.__version__)",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "2.1.3");

    // Part by part, the same entries as the engine's: every path in the
    // same part, with the same header and content (a `.pyc` by presence:
    // marshal's reference flags depend on the compiling process).
    let (e_layers, d_layers) = (
        last_layers(&deps_ref(&engine), e_parts.len(), tmp.path()),
        last_layers(&deps_ref(&direct), d_parts.len(), tmp.path()),
    );
    let mut pyc_bytes_differ = 0;
    for (i, (e, d)) in e_layers.iter().zip(&d_layers).enumerate() {
        let part = &d_parts[i].0;
        let keys: std::collections::BTreeSet<&String> = e.keys().chain(d.keys()).collect();
        let mut diffs = Vec::new();
        for k in keys {
            match (e.get(k), d.get(k)) {
                (Some(a), Some(b)) if k.ends_with(".pyc") => {
                    pyc_bytes_differ += usize::from(a != b);
                }
                (Some(a), Some(b)) if a != b && installed_alike(k, a.0) => {
                    diffs.push(format!("{k}: engine {a:?} direct {b:?}"))
                }
                (Some(a), None) if installed_alike(k, a.0) => {
                    diffs.push(format!("{k}: only in the engine's part"))
                }
                (None, Some(b)) if installed_alike(k, b.0) => {
                    diffs.push(format!("{k}: only in the direct part"))
                }
                _ => {}
            }
        }
        assert!(
            diffs.is_empty(),
            "part {part}: {} differences, e.g.\n{}",
            diffs.len(),
            diffs[..diffs.len().min(20)].join("\n")
        );
    }
    eprintln!("{pyc_bytes_differ} .pyc files differ in their bytes (not their presence)");
    drop((engine_repo, direct_repo));
}

// ---------------------------------------------------------------------------
// No engine at all: DOCKER_HOST points nowhere, the base and the results live
// in two loopback registries.

const NOWHERE: &str = "unix:///nonexistent/docker.sock";

fn direct_build(
    base: &str,
    repository: &str,
    state: &Path,
    requirements: &Path,
    setup: &Path,
    extra: &[&str],
) -> std::process::Output {
    let f = Fixtures::load();
    let mut c = prebuilder();
    c.env("DOCKER_HOST", NOWHERE)
        .env("PREBUILDER_STATE_DIR", state)
        .args([
            "build",
            "--builder",
            "direct",
            "--format",
            "json",
            "--base",
            base,
        ])
        .args(["--repository", repository])
        .arg("--launch-python")
        .arg(&f.venv_python)
        .arg("--requirements-file")
        .arg(requirements)
        .arg("--requirements-cache")
        .arg(&f.demo_wheels)
        .arg("--setup-file")
        .arg(setup)
        .args(extra);
    run(&mut c)
}

fn tags(registry: &TestRegistry, path: &str) -> Vec<String> {
    let o = Command::new("curl")
        .args([
            "-sf",
            &format!("http://{}/v2/{path}/tags/list", registry.addr),
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    let mut t: Vec<String> = v["tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    t.sort();
    t
}

/// Delete the data of the base's layer blobs in its registry: a build that
/// reads any byte of them fails.
fn drop_base_layers(registry: &TestRegistry, path: &str, tag: &str) {
    let o = Command::new("curl")
        .args([
            "-sf",
            "-H",
            "Accept: application/vnd.docker.distribution.manifest.v2+json",
            &format!("http://{}/v2/{path}/manifests/{tag}", registry.addr),
        ])
        .output()
        .unwrap();
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut dropped = 0;
    for l in m["layers"].as_array().unwrap() {
        let hex = l["digest"].as_str().unwrap().trim_start_matches("sha256:");
        let data = registry
            .storage()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data");
        std::fs::remove_file(&data).unwrap_or_else(|e| panic!("{}: {e}", data.display()));
        dropped += 1;
    }
    assert!(dropped > 0);
}

#[test]
fn with_no_engine_direct_mode_builds_pushes_refuses_and_rebuilds_code_without_base_layers() {
    let f = Fixtures::load();
    let base_registry = TestRegistry::start(None);
    let results = TestRegistry::start(None);
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("docker-config");
    std::fs::create_dir_all(&config).unwrap();
    let base = format!("{}/fx/beam:2.77.0", base_registry.addr);
    crate::fresh::publish_base(&f, &config, &base);
    let repo = format!("{}/fx/demo", results.addr);
    let req = unique_requirements(tmp.path(), &demo_requirements_text());
    let app = tmp.path().join("pipeline");
    copy_tree(&repo_path("demo/pipeline"), &app);

    // 1. Cold: the base indexed from its layers (once), both layers made and pushed.
    let state1 = tmp.path().join("state1");
    let o = direct_build(&base, &repo, &state1, &req, &app, &["--push"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cold = json(&o);
    assert_eq!(cold["builder"], "direct");
    assert!(cold["digest"].as_str().unwrap().starts_with("sha256:"));
    let pushed = tags(&results, "fx/demo");
    assert!(
        pushed
            .iter()
            .filter(|t| t.starts_with("direct-index-"))
            .count()
            >= 2,
        "the base's and the layers' installed sets beside the results: {pushed:?}"
    );

    // 1b. No registry written: the same inputs as a `docker load` archive
    //     (the result is made, not found: the dependency layer comes from
    //     the registry, the application layer is produced), which loads and
    //     runs as the report says.
    let archive = tmp.path().join("image.tar");
    let out = format!("docker-archive:{}", archive.display());
    let o = direct_build(&base, &repo, &state1, &req, &app, &["--output", &out]);
    assert!(o.status.success(), "{}", stderr(&o));
    let written = json(&o);
    assert_eq!(written["digest"], serde_json::Value::Null);
    assert_eq!(
        written["image_id"], cold["image_id"],
        "the pushed image, written"
    );
    assert_eq!(tags(&results, "fx/demo"), pushed, "nothing pushed");
    let loaded = docker_ok(&["load", "-q", "-i", archive.to_str().unwrap()]);
    let reference = written["image"].as_str().unwrap();
    assert!(loaded.contains(reference), "{loaded}");
    let inspect = |i: &str| -> serde_json::Value {
        serde_json::from_str::<serde_json::Value>(&docker_ok(&["image", "inspect", i])).unwrap()[0]
            .clone()
    };
    let image = inspect(reference);
    assert_eq!(image["Id"], written["image_id"]);
    let layers = |v: &serde_json::Value| -> Vec<String> {
        serde_json::from_value(v["RootFS"]["Layers"].clone()).unwrap()
    };
    let base_layers = layers(&inspect(&f.beam_image));
    let result_layers = layers(&image);
    assert_eq!(result_layers[..base_layers.len()], base_layers[..]);
    assert_eq!(
        result_layers.len(),
        base_layers.len() + 2,
        "dependencies, application"
    );
    let o = python_in(reference, "import demo_pipeline, slugify, tabulate");
    let _ = docker(&["rmi", reference]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // 2. Refusals, each naming its input, fast, nothing pushed: an unpinned
    //    line, an sdist pip would build, no wheel for the base's platform, a
    //    dependency nothing provides.
    let cache = |name: &str, files: &[(&str, &str)]| -> PathBuf {
        let d = tmp.path().join(name);
        std::fs::create_dir(&d).unwrap();
        for (from, to) in files {
            if from.is_empty() {
                // A real (tiny) sdist: staging digests archives by their entries.
                let gz = flate2::write::GzEncoder::new(
                    std::fs::File::create(d.join(to)).unwrap(),
                    flate2::Compression::default(),
                );
                let mut t = tar::Builder::new(gz);
                let mut h = tar::Header::new_gnu();
                let setup = b"from setuptools import setup\nsetup(name='crcmod', version='1.7')\n";
                h.set_size(setup.len() as u64);
                h.set_mode(0o644);
                t.append_data(&mut h, "crcmod-1.7/setup.py", &setup[..])
                    .unwrap();
                t.into_inner().unwrap().finish().unwrap();
            } else {
                std::fs::copy(f.demo_wheels.join(from), d.join(to)).unwrap();
            }
        }
        d
    };
    let tab = "tabulate-0.9.0-py3-none-any.whl";
    let slug = "python_slugify-8.0.4-py2.py3-none-any.whl";
    let cases = [
        (
            "tabulate>=0.9\n",
            cache("c1", &[(tab, tab)]),
            "requirements.txt line 2",
        ),
        (
            "crcmod==1.7\n",
            cache("c2", &[("", "crcmod-1.7.tar.gz")]),
            "crcmod-1.7.tar.gz",
        ),
        (
            "tabulate==0.9.0\n",
            cache("c3", &[(tab, "tabulate-0.9.0-cp311-cp311-win_amd64.whl")]),
            "tabulate-0.9.0-cp311-cp311-win_amd64.whl",
        ),
        (
            "python-slugify==8.0.4\n",
            cache("c4", &[(slug, slug)]),
            "text-unidecode",
        ),
    ];
    for (line, dir, named) in cases {
        let r = unique_requirements(tmp.path(), line);
        let t0 = std::time::Instant::now();
        let mut c = prebuilder();
        c.env("DOCKER_HOST", NOWHERE)
            .env("PREBUILDER_STATE_DIR", &state1)
            .args([
                "build",
                "--builder",
                "direct",
                "--base",
                &base,
                "--repository",
                &repo,
                "--push",
            ])
            .arg("--requirements-file")
            .arg(&r)
            .arg("--requirements-cache")
            .arg(&dir);
        let o = run(&mut c);
        let took = t0.elapsed();
        let err = stderr(&o);
        assert!(!o.status.success(), "{line}: built");
        assert!(
            err.contains("direct mode refuses") || err.contains("ERROR:"),
            "{line}: not direct mode's: {err}"
        );
        assert!(err.contains(named), "{line}: {err}");
        assert!(err.contains("hint:"), "{err}");
        eprintln!("refused {line:?} in {:.2} s", took.as_secs_f64());
        // The issue's target, for the binary the tests run (the debug one).
        assert!(
            took.as_secs_f64() < 1.0,
            "{line}: refused in {took:?}, not under 1 s"
        );
        assert_eq!(tags(&results, "fx/demo"), pushed, "nothing pushed");
    }

    // 3. A code change on a fresh runner: the base's layers are gone from its
    //    registry, so any byte of them read would fail the build.
    drop_base_layers(&base_registry, "fx/beam", "2.77.0");
    std::fs::write(app.join("demo_pipeline/changed.py"), "X = 1\n").unwrap();
    let state2 = tmp.path().join("state2");
    let t0 = std::time::Instant::now();
    let o = direct_build(&base, &repo, &state2, &req, &app, &["--push"]);
    let took = t0.elapsed();
    assert!(o.status.success(), "{}", stderr(&o));
    let warm = json(&o);
    let caches: Vec<&str> = warm["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["cache"].as_str().unwrap())
        .collect();
    assert_eq!(caches, ["registry", "miss"]);
    eprintln!(
        "code-only change, no engine, fresh state: {:.2} s end to end",
        took.as_secs_f64()
    );
    assert!(
        took.as_secs_f64() < 3.0,
        "code-only change in {took:?}, not under 3 s"
    );

    // 4. The result runs in the real engine.
    let pulled = format!("{repo}@{}", warm["digest"].as_str().unwrap());
    docker_ok(&["pull", "-q", &pulled]);
    let o = python_in(
        &pulled,
        "import demo_pipeline.changed, slugify, tabulate; print(slugify.slugify('No engine!'))",
    );
    let _ = docker(&["rmi", &pulled]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "no-engine");
}

fn repo_path(p: &str) -> PathBuf {
    repo().join(p)
}
