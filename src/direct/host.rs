//! The Python of this machine, for the two things direct mode needs from an
//! interpreter: byte-compiling installed sources as pip would in the base
//! (only an interpreter of the base's minor version makes `.pyc` the base
//! reads), and building the pipeline's sdist into a wheel (the launch host
//! always has a Python with setuptools: Beam built that sdist with it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::install::{Compiler, Content, Wheel};
use crate::error::{Error, Result};

/// An interpreter and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpreter {
    pub path: PathBuf,
    pub version: String,
}

/// `sys.version_info[:3]` of an interpreter, `None` when it does not run.
pub fn version_of(python: &Path) -> Option<String> {
    let o = Command::new(python)
        .args([
            "-I",
            "-c",
            "import sys; print('%d.%d.%d' % sys.version_info[:3])",
        ])
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// The interpreter to compile with for a base running Python `version`
/// (`3.11.2`): the same version when this machine has it, else the same
/// minor version; `None` when there is neither (then no `.pyc` is written).
/// Looks on PATH and in the usual prefixes.
pub fn find_compiler(version: &str) -> Option<Interpreter> {
    use std::sync::{Mutex, OnceLock};
    // Asked once per version per process: every layer asks.
    static FOUND: OnceLock<Mutex<BTreeMap<String, Option<Interpreter>>>> = OnceLock::new();
    let found = FOUND.get_or_init(|| Mutex::new(BTreeMap::new()));
    if let Some(hit) = found.lock().ok().and_then(|m| m.get(version).cloned()) {
        return hit;
    }
    let answer = search_compiler(version);
    if let Ok(mut m) = found.lock() {
        m.insert(version.to_string(), answer.clone());
    }
    answer
}

fn search_compiler(version: &str) -> Option<Interpreter> {
    let minor: String = version.split('.').take(2).collect::<Vec<_>>().join(".");
    let names = [format!("python{minor}"), "python3".into(), "python".into()];
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in ["/usr/bin", "/usr/local/bin", "/bin"] {
        dirs.push(PathBuf::from(d));
    }
    let mut seen = std::collections::BTreeSet::new();
    let candidates: Vec<PathBuf> = dirs
        .iter()
        .flat_map(|d| names.iter().map(move |n| d.join(n)))
        .filter(|p| p.is_file() && seen.insert(std::fs::canonicalize(p).unwrap_or(p.clone())))
        .collect();
    // Interpreters first, wrapper scripts (pyenv's shims, which run several
    // shell processes per call) only when no interpreter of the exact
    // version is found.
    let (scripts, binaries): (Vec<PathBuf>, Vec<PathBuf>) =
        candidates.into_iter().partition(|p| is_script(p));
    let mut same_minor: Option<Interpreter> = None;
    for p in binaries.into_iter().chain(scripts) {
        let Some(v) = version_of(&p) else { continue };
        if v == version {
            return Some(Interpreter {
                path: p,
                version: v,
            });
        }
        if v.split('.').take(2).collect::<Vec<_>>().join(".") == minor && same_minor.is_none() {
            same_minor = Some(Interpreter {
                path: p,
                version: v,
            });
        }
    }
    same_minor
}

/// Whether `path` is a `#!` script (a wrapper), not an interpreter binary.
fn is_script(path: &Path) -> bool {
    let mut head = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .is_ok_and(|()| &head == b"#!")
}

/// Compiles with a host interpreter: `py_compile` in checked-hash mode with
/// the installed path as `dfile`, which is what pip's `compileall.compile_file`
/// does in the setup container (it runs with `SOURCE_DATE_EPOCH`).
pub struct HostCompiler {
    pub python: Interpreter,
    /// Where sources and compiled files are written.
    pub dir: PathBuf,
}

const COMPILE: &str = r#"
import json, py_compile, sys
jobs = json.load(open(sys.argv[1]))
ok = []
for src, dfile, cfile in jobs:
    try:
        py_compile.compile(src, cfile=cfile, dfile=dfile, doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
        ok.append(dfile)
    except Exception:
        pass
json.dump(ok, open(sys.argv[2], "w"))
"#;

impl Compiler for HostCompiler {
    fn compile(&self, sources: &[(String, Content)]) -> Result<BTreeMap<String, PathBuf>> {
        let dir = &self.dir;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut jobs = Vec::new();
        let mut zips: BTreeMap<PathBuf, zip::ZipArchive<std::fs::File>> = BTreeMap::new();
        let mut out = BTreeMap::new();
        for (i, (installed, content)) in sources.iter().enumerate() {
            let src = dir.join(format!("{i}.py"));
            let cfile = dir.join(format!("{i}.pyc"));
            let bytes: Vec<u8> = match content {
                Content::Bytes(b) => b.to_vec(),
                Content::File(p) => std::fs::read(p).map_err(|e| Error::io(p, e))?,
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
                    let mut m = z
                        .by_name(member)
                        .map_err(|e| Error::io(&key, std::io::Error::other(e)))?;
                    let mut b = Vec::new();
                    std::io::Read::read_to_end(&mut m, &mut b).map_err(|e| Error::io(&key, e))?;
                    b
                }
            };
            std::fs::write(&src, bytes).map_err(|e| Error::io(&src, e))?;
            jobs.push(serde_json::json!([src, installed, cfile]));
            out.insert(installed.clone(), cfile);
        }
        let list = dir.join("jobs.json");
        let done = dir.join("done.json");
        std::fs::write(&list, serde_json::to_vec(&jobs).unwrap_or_default())
            .map_err(|e| Error::io(&list, e))?;
        let o = Command::new(&self.python.path)
            .arg("-I")
            .arg("-c")
            .arg(COMPILE)
            .arg(&list)
            .arg(&done)
            .output()
            .map_err(|e| Error::io(&self.python.path, e))?;
        if !o.status.success() {
            return Err(Error::DirectFailed {
                step: format!("byte-compiling with {}", self.python.path.display()),
                reason: String::from_utf8_lossy(&o.stderr).trim().to_string(),
            });
        }
        let ok: Vec<String> = std::fs::read(&done)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        out.retain(|k, _| ok.contains(k));
        Ok(out)
    }
}

/// PEP 517's `build_wheel`, called in one process with the host's
/// installed backend (what `python -m build --no-isolation --wheel` does,
/// without its extra processes): the sdist unpacked, the backend its
/// `pyproject.toml` names (setuptools' legacy backend without one), the
/// wheel's file name printed last.
const BUILD: &str = r#"
import importlib, os, sys, tarfile
sdist, out, work = sys.argv[1], sys.argv[2], sys.argv[3]
def build():
    with tarfile.open(sdist) as t:
        try:
            t.extractall(work, filter="data")
        except TypeError:
            t.extractall(work)
    entries = os.listdir(work)
    root = work
    if len(entries) == 1 and os.path.isdir(os.path.join(work, entries[0])):
        root = os.path.join(work, entries[0])
    os.chdir(root)
    sys.path.insert(0, root)
    backend, paths = "setuptools.build_meta:__legacy__", []
    if os.path.exists("pyproject.toml"):
        import tomllib
        with open("pyproject.toml", "rb") as f:
            bs = tomllib.load(f).get("build-system", {})
        backend = bs.get("build-backend", backend)
        paths = bs.get("backend-path", [])
    for p in paths:
        sys.path.insert(0, os.path.join(root, p))
    mod, _, obj = backend.partition(":")
    hooks = importlib.import_module(mod)
    for a in filter(None, obj.split(".")):
        hooks = getattr(hooks, a)
    real_stdout = sys.stdout
    sys.stdout = sys.stderr
    name = hooks.build_wheel(out)
    real_stdout.write("prebuilder-wheel:" + name + "\n")
build()
"#;

/// Build an sdist into a wheel with a host Python, offline, and check that
/// the wheel is pure Python (what direct mode can install for any base).
/// `what` names the input in messages (`workflow.tar.gz`).
pub fn build_wheel(python: &Path, sdist: &Path, what: &str, out: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let out = std::fs::canonicalize(out).map_err(|e| Error::io(out, e))?;
    let out = out.as_path();
    // Where the sdist is unpacked: removed when this returns, whatever
    // happened (it was left in the system's temporary directory).
    let work = tempfile::Builder::new()
        .prefix(".sdist-")
        .tempdir_in(out)
        .map_err(|e| Error::io(out, e))?;
    let o = Command::new(python)
        .arg("-c")
        .arg(BUILD)
        .arg(sdist)
        .arg(out)
        .arg(work.path())
        .env("PIP_NO_INDEX", "1")
        .env_remove("PIP_FIND_LINKS")
        .output()
        .map_err(|e| Error::io(python, e))?;
    if !o.status.success() {
        let tail: Vec<String> = String::from_utf8_lossy(&o.stderr)
            .lines()
            .rev()
            .take(6)
            .map(str::to_string)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(Error::DirectRefused {
            input: what.to_string(),
            reason: format!(
                "{} could not build it into a wheel offline (direct mode builds with the launch host's Python and its installed build backend): {}",
                python.display(),
                tail.join(" | ")
            ),
        });
    }
    let wheel = std::fs::read_dir(out)
        .map_err(|e| Error::io(out, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| Error::DirectRefused {
            input: what.to_string(),
            reason: "pip wheel made no wheel".into(),
        })?;
    let w = Wheel::open(&wheel)?;
    let name = super::tags::WheelName::parse(&w.file_name);
    let pure = w.info.root_is_purelib
        && name.is_some_and(|n| n.tags.iter().all(|t| t.ends_with("-none-any")));
    if !pure {
        return Err(Error::DirectRefused {
            input: what.to_string(),
            reason: format!(
                "it builds into {}, which is not a pure-Python wheel: its compiled parts must be built for the base, in a container",
                w.file_name
            ),
        });
    }
    Ok(wheel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interpreter_of_the_same_minor_is_found_or_none() {
        // Whatever this machine has: the answer is consistent with itself.
        if let Some(i) = find_compiler("3.11.2") {
            assert!(i.version.starts_with("3.11."), "{i:?}");
            assert_eq!(version_of(&i.path).as_deref(), Some(i.version.as_str()));
        }
        assert_eq!(find_compiler("3.99.0"), None);
    }

    #[test]
    fn wrapper_scripts_are_told_from_interpreters() {
        let dir = tempfile::tempdir().unwrap();
        let shim = dir.path().join("python3");
        std::fs::write(
            &shim,
            "#!/usr/bin/env bash\nexec pyenv exec python3 \"$@\"\n",
        )
        .unwrap();
        assert!(is_script(&shim));
        assert!(!is_script(&std::env::current_exe().unwrap()));
        assert!(!is_script(&dir.path().join("absent")));
    }

    /// A gzipped sdist of `demo` 0.1 with an in-tree PEP 517 backend (no
    /// setuptools or wheel needed) whose `build_wheel` runs `body` first.
    fn sdist(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("demo-0.1.tar.gz");
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&path).unwrap(),
            flate2::Compression::fast(),
        );
        let mut t = tar::Builder::new(gz);
        let backend = format!(
            "import os, zipfile\n\
             def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):\n    \
             {body}\n    \
             name = 'demo-0.1-py3-none-any.whl'\n    \
             with zipfile.ZipFile(os.path.join(wheel_directory, name), 'w') as z:\n        \
             z.writestr('demo.py', 'X = 1\\n')\n        \
             z.writestr('demo-0.1.dist-info/METADATA', 'Metadata-Version: 2.1\\nName: demo\\nVersion: 0.1\\n')\n        \
             z.writestr('demo-0.1.dist-info/WHEEL', 'Wheel-Version: 1.0\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n')\n        \
             z.writestr('demo-0.1.dist-info/RECORD', '')\n    \
             return name\n"
        );
        let pyproject =
            "[build-system]\nrequires = []\nbuild-backend = \"backend\"\nbackend-path = [\".\"]\n";
        for (name, text) in [
            ("demo-0.1/pyproject.toml", pyproject),
            ("demo-0.1/backend.py", backend.as_str()),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(text.len() as u64);
            h.set_mode(0o644);
            t.append_data(&mut h, name, text.as_bytes()).unwrap();
        }
        t.into_inner().unwrap().finish().unwrap();
        path
    }

    /// The sdist is unpacked in a directory of its own under `out`, gone
    /// once built (it was left in the system's temporary directory after
    /// every build), and when the build fails too.
    #[test]
    fn an_sdist_is_built_into_a_wheel_and_nothing_else_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let python = Path::new("python3");
        // Where the unpacked sdist used to be left.
        let strays = || -> Vec<String> {
            std::fs::read_dir(std::env::temp_dir())
                .unwrap()
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("prebuilder-sdist-"))
                .collect()
        };
        let before = strays();
        let wheel =
            build_wheel(python, &sdist(dir.path(), "pass"), "demo-0.1.tar.gz", &out).unwrap();
        let names = |d: &Path| -> Vec<String> {
            let mut n: Vec<String> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            n.sort();
            n
        };
        assert_eq!(
            names(&out),
            [wheel.file_name().unwrap().to_string_lossy().into_owned()]
        );
        let broken = dir.path().join("broken");
        std::fs::create_dir(&broken).unwrap();
        let out = dir.path().join("out-broken");
        let err = build_wheel(
            python,
            &sdist(&broken, "raise SystemExit('no')"),
            "demo-0.1.tar.gz",
            &out,
        )
        .unwrap_err();
        assert!(matches!(err, Error::DirectRefused { .. }), "{err:?}");
        assert!(names(&out).is_empty(), "{:?}", names(&out));
        assert_eq!(strays(), before);
    }
}
