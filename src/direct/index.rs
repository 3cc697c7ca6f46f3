//! The base index: everything a pip inside the base would see, read from
//! the base's config and layers (see [`super::rootfs`]) with no container:
//! the interpreter the boot runs (`python`, else `python3`, on the image's
//! PATH) and its version, the install scheme pip uses there (from the base's
//! `sysconfig.py`: Debian's `posix_local` or CPython's `posix_prefix`, a
//! venv's own), `sys.path` (from the base's `site.py` layout and `.pth`
//! files), the wheel tags it accepts (glibc from the base's libc,
//! architecture), pip's version, its script template and uninstall rule, and
//! every installed distribution with its location, version and files.
//!
//! The same type is the *installed set* a layer starts from: after a layer,
//! [`super::install`] returns the index with that layer's changes, and the
//! next layer starts from it. It is a small JSON document, kept per base
//! digest under the state root ([`load_cached`], [`store_cached`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::metadata::{self, Metadata};
use super::pyfacts;
use super::rootfs::{Capture, Kind, RootFs};
use super::tags;
use crate::error::{Error, Result};

/// Bumped when what the index holds or how it is derived changes: cached
/// indexes of another format are derived again.
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    pub format: u32,
    /// The base image's id (its config's digest).
    pub base: String,
    /// The image whose installed set this is: the base, or a layer image
    /// made on it (the key of the local cache).
    #[serde(default)]
    pub image: String,
    pub os: String,
    /// `uname -m` of the base's platform (`x86_64`, `aarch64`).
    pub machine: String,
    /// The image config's PATH (the boot's and pip's).
    pub path_env: String,
    pub python: Python,
    /// `glibc 2.36` → `[2, 36]`.
    pub glibc: (u32, u32),
    /// Every wheel tag pip accepts there, best first.
    pub tags: Vec<String>,
    pub scheme: Scheme,
    pub sys_path: Vec<String>,
    pub pip: Pip,
    pub distributions: Vec<Distribution>,
    /// Every path under [`Index::roots`] (directories end in `/`): what pip's
    /// uninstall finds on disk.
    pub files: BTreeSet<String>,
    pub roots: Vec<String>,
    /// Mode, uid and gid of the directories under and above the roots (and
    /// above Beam's directory) that are not 0755 root: a layer that writes
    /// into them repeats their entries as they are.
    #[serde(default)]
    pub dirs: BTreeMap<String, (u32, u64, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Python {
    /// `sys.executable` as the boot's `python` sees it (not resolved).
    pub executable: String,
    /// The interpreter binary, links followed.
    pub real: String,
    /// `3.11.2`.
    pub version: String,
    pub major: u32,
    pub minor: u32,
    /// `cp311` (or `cp313t` for free-threaded builds).
    pub abi: String,
    pub abiflags: String,
    pub prefix: String,
    pub base_prefix: String,
    pub stdlib: String,
    /// Set when the interpreter runs in a virtual environment (its prefix).
    #[serde(default)]
    pub venv: Option<String>,
}

impl Python {
    pub fn short(&self) -> String {
        format!("{}.{}", self.major, self.minor)
    }

    pub fn cache_tag(&self) -> String {
        format!("cpython-{}{}", self.major, self.minor)
    }
}

/// Where pip installs each part of a wheel (`headers` gets the
/// distribution's name appended).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scheme {
    pub name: String,
    pub purelib: String,
    pub platlib: String,
    pub scripts: String,
    pub data: String,
    pub include: String,
    /// The stdlib directories pip never uninstalls from.
    pub stdlib: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pip {
    pub version: String,
    /// Where `python -m pip` imports it from.
    pub location: String,
    /// distlib's launcher template (`%(module)s`, `%(import_name)s`, `%(func)s`).
    pub script_template: String,
    /// Debian's `is_local`: under `/usr`, only the scheme's paths are pip's.
    pub debian_is_local: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Distribution {
    /// As its metadata spells it.
    pub name: String,
    pub version: String,
    /// The `sys.path` directory it is found in.
    pub location: String,
    /// Its metadata directory's (or file's) name in `location`.
    pub info: String,
    #[serde(default)]
    pub installer: Option<String>,
    #[serde(default)]
    pub requested: bool,
    /// `direct_url.json`, as written.
    #[serde(default)]
    pub direct_url: Option<String>,
    /// Absolute paths its RECORD (or `installed-files.txt`) declares;
    /// `None` when it declares none (pip cannot uninstall it).
    #[serde(default)]
    pub files: Option<Vec<String>>,
    #[serde(default)]
    pub requires: Vec<String>,
    #[serde(default)]
    pub requires_python: Option<String>,
    #[serde(default)]
    pub console_scripts: Vec<String>,
    #[serde(default)]
    pub gui_scripts: Vec<String>,
}

impl Distribution {
    pub fn key(&self) -> String {
        crate::record::normalize(&self.name)
    }

    pub fn is_egg_info(&self) -> bool {
        self.info.ends_with(".egg-info")
    }

    pub fn info_path(&self) -> String {
        format!("{}/{}", self.location, self.info)
    }
}

/// What the index reads whole from the layers, and what it scans for versions.
pub fn capture(path: &str) -> Capture {
    let name = path.rsplit('/').next().unwrap_or("");
    let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
    let in_info = dir.ends_with(".dist-info") || dir.ends_with(".egg-info");
    if in_info
        && matches!(
            name,
            "METADATA"
                | "RECORD"
                | "entry_points.txt"
                | "INSTALLER"
                | "REQUESTED"
                | "direct_url.json"
                | "PKG-INFO"
                | "requires.txt"
                | "installed-files.txt"
        )
    {
        return Capture::Content;
    }
    if name.ends_with(".egg-info") || name.ends_with(".pth") || name == "pyvenv.cfg" {
        return Capture::Content;
    }
    let in_stdlib = dir
        .rsplit('/')
        .next()
        .is_some_and(|d| d.starts_with("python3"));
    if in_stdlib
        && (name == "sysconfig.py" || name == "site.py" || name.starts_with("_sysconfigdata_"))
    {
        return Capture::Content;
    }
    if path.ends_with("/pip/__init__.py")
        || path.ends_with("/pip/_vendor/distlib/scripts.py")
        || path.ends_with("/pip/_internal/utils/misc.py")
    {
        return Capture::Content;
    }
    if (name.starts_with("python3") && dir.ends_with("/bin"))
        || name.starts_with("libpython3")
        || name == "libc.so.6"
        || (name.starts_with("libc-2.") && name.ends_with(".so"))
    {
        return Capture::Versions;
    }
    Capture::No
}

/// Build the merged file system of a base from its layer tars (uncompressed
/// or gzip), bottom first.
pub fn read_layers(layers: &[PathBuf]) -> Result<RootFs> {
    let mut fs = RootFs::new();
    for l in layers {
        let r = super::rootfs::open_layer(l).map_err(|e| Error::io(l, e))?;
        fs.apply_layer(r, &capture).map_err(|e| Error::io(l, e))?;
    }
    Ok(fs)
}

/// The parts of an image config the index needs.
#[derive(Debug, Clone, Default)]
pub struct ImageConfig {
    pub id: String,
    pub os: String,
    pub architecture: String,
    pub env: Vec<String>,
}

impl ImageConfig {
    /// From the config JSON (OCI / Docker image config).
    pub fn parse(id: &str, config: &[u8]) -> Option<ImageConfig> {
        let v: serde_json::Value = serde_json::from_slice(config).ok()?;
        let env = v
            .pointer("/config/Env")
            .and_then(|e| e.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        Some(ImageConfig {
            id: id.to_string(),
            os: v
                .get("os")
                .and_then(|s| s.as_str())
                .unwrap_or("linux")
                .to_string(),
            architecture: v
                .get("architecture")
                .and_then(|s| s.as_str())
                .unwrap_or("amd64")
                .to_string(),
            env,
        })
    }

    pub fn env(&self, key: &str) -> Option<&str> {
        self.env.iter().find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == key).then_some(v)
        })
    }
}

/// The engine's default PATH for a container whose image sets none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn refuse(image: &str, reason: impl Into<String>) -> Error {
    Error::DirectBase {
        image: image.to_string(),
        reason: reason.into(),
    }
}

fn text(fs: &RootFs, path: &str) -> Option<String> {
    fs.read(path)
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

fn parent(p: &str) -> &str {
    match p.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &p[..i],
    }
}

/// Derive the index of a base from its config and merged file system.
pub fn derive(config: &ImageConfig, fs: &RootFs) -> Result<Index> {
    let image = config.id.as_str();
    let machine = machine(config)?;
    let path_env = config.env("PATH").unwrap_or(DEFAULT_PATH).to_string();
    // 1. The interpreter: Beam's boot runs `python`, else `python3`, from PATH.
    let interp = interpreter(image, fs, &path_env)?;
    // 2. Its version and build (the stdlib beside it, sysconfig, the binary).
    let build = python_build(image, fs, &interp.real)?;
    // 3. libc: glibc's banner in libc.so.6; musl bases are not handled.
    let glibc = glibc(image, fs, &build.multiarch)?;
    // 4. The install scheme pip uses (sysconfig's preferred one).
    let (prefix, scheme) = scheme(config, fs, &build, interp.venv.as_deref());
    // 5. sys.path: the stdlib, then site.py's site directories that exist,
    //    then what their .pth files add.
    let site_dirs = site_dirs(fs, &build, &interp);
    let (sys_path, pth_dirs) = sys_path(fs, &build, &site_dirs);
    // 6. pip: the first on sys.path.
    let pip = pip(image, fs, &sys_path, &interp.executable)?;
    // 7. Installed distributions, in sys.path order.
    let distributions = installed(fs, &sys_path);
    // 8. The files pip's uninstall can see, and the directories it writes in.
    let roots = roots(&site_dirs, &pth_dirs, &scheme);
    let (files, dirs) = visible(fs, &roots);
    let platforms = tags::linux_platforms(&machine, glibc);
    let tags = tags::cpython_tags(3, build.minor, &build.abi, &platforms);
    Ok(Index {
        format: FORMAT,
        base: config.id.clone(),
        image: config.id.clone(),
        os: config.os.clone(),
        machine,
        path_env,
        python: Python {
            executable: interp.executable,
            real: interp.real,
            version: build.version,
            major: 3,
            minor: build.minor,
            abi: build.abi,
            abiflags: build.abiflags,
            prefix,
            base_prefix: build.base_prefix,
            stdlib: build.stdlib,
            venv: interp.venv,
        },
        glibc,
        tags,
        scheme,
        sys_path,
        pip,
        distributions,
        files,
        roots,
        dirs,
    })
}

/// The wheel platform's machine of a linux base's architecture.
fn machine(config: &ImageConfig) -> Result<String> {
    let image = config.id.as_str();
    if config.os != "linux" {
        return Err(refuse(image, format!("its os is {}, not linux", config.os)));
    }
    let machine = match config.architecture.as_str() {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "ppc64le" => "ppc64le",
        "s390x" => "s390x",
        other => {
            return Err(refuse(
                image,
                format!("its architecture {other} has no manylinux wheels direct mode knows"),
            ))
        }
    };
    Ok(machine.to_string())
}

/// The interpreter the boot runs, and its virtual environment if any.
struct Interpreter {
    /// As found on PATH.
    executable: String,
    /// Links followed.
    real: String,
    /// The venv's directory (where `pyvenv.cfg` is).
    venv: Option<String>,
    /// `pyvenv.cfg`'s settings, keys lowercased.
    venv_vars: BTreeMap<String, String>,
}

fn interpreter(image: &str, fs: &RootFs, path_env: &str) -> Result<Interpreter> {
    let executable = ["python", "python3"]
        .iter()
        .find_map(|name| {
            path_env
                .split(':')
                .filter(|d| d.starts_with('/'))
                .map(|d| format!("{}/{name}", d.trim_end_matches('/')))
                .find(|p| {
                    fs.resolve(p)
                        .and_then(|r| fs.node(&r).cloned())
                        .is_some_and(|n| n.kind == Kind::File && n.mode & 0o111 != 0)
                })
        })
        .ok_or_else(|| {
            refuse(
                image,
                format!("no `python` or `python3` on its PATH ({path_env}); Beam's boot needs one"),
            )
        })?;
    let real = fs
        .resolve(&executable)
        .ok_or_else(|| refuse(image, format!("{executable} does not resolve")))?;
    let venv_cfg = [parent(&executable), parent(parent(&executable))]
        .iter()
        .map(|d| format!("{}/pyvenv.cfg", d.trim_end_matches('/')))
        .find(|p| fs.is_file(p));
    let venv_vars: BTreeMap<String, String> = venv_cfg
        .as_deref()
        .and_then(|p| text(fs, p))
        .map(|t| {
            t.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
                .collect()
        })
        .unwrap_or_default();
    Ok(Interpreter {
        venv: venv_cfg.as_deref().map(|p| parent(p).to_string()),
        executable,
        real,
        venv_vars,
    })
}

/// What the interpreter's installation says of its build.
struct PythonBuild {
    /// `sys.base_prefix`: the directory whose `lib/python3.X` is the stdlib.
    base_prefix: String,
    minor: u32,
    /// `3.X`.
    short: String,
    stdlib: String,
    abiflags: String,
    multiarch: String,
    abi: String,
    platlibdir: String,
    /// The full version (`3.11.2`).
    version: String,
}

fn python_build(image: &str, fs: &RootFs, real: &str) -> Result<PythonBuild> {
    let (base_prefix, minor) = stdlib_above(image, fs, real)?;
    let short = format!("3.{minor}");
    let stdlib = format!("{}/lib/python{short}", base_prefix.trim_end_matches('/'));
    let sysconfigdata = fs
        .children(&stdlib)
        .into_iter()
        .filter(|(n, _)| n.starts_with("_sysconfigdata_") && n.ends_with(".py"))
        .map(|(n, _)| n)
        .max_by_key(|n| (n.contains("_linux_"), n.clone()));
    let vars = sysconfigdata
        .as_deref()
        .and_then(|n| text(fs, &format!("{stdlib}/{n}")))
        .map(|t| pyfacts::sysconfig_vars(&t))
        .unwrap_or_default();
    let flag = |k: &str| vars.get(k).is_some_and(|v| v == "1");
    let abi = format!(
        "cp3{minor}{}{}",
        if flag("Py_GIL_DISABLED") { "t" } else { "" },
        if flag("Py_DEBUG") { "d" } else { "" }
    );
    let multiarch = vars.get("MULTIARCH").cloned().unwrap_or_default();
    let version = full_version(image, fs, (real, &base_prefix, &multiarch), minor)?;
    Ok(PythonBuild {
        abiflags: vars.get("ABIFLAGS").cloned().unwrap_or_default(),
        platlibdir: vars
            .get("PLATLIBDIR")
            .cloned()
            .unwrap_or_else(|| "lib".to_string()),
        base_prefix,
        minor,
        short,
        stdlib,
        multiarch,
        abi,
        version,
    })
}

/// The prefix above `real` whose `lib/python3.X/os.py` exists, and X: the
/// minor the binary's name says, else the highest there.
fn stdlib_above(image: &str, fs: &RootFs, real: &str) -> Result<(String, u32)> {
    let mut prefix_candidates: Vec<String> = Vec::new();
    let mut d = parent(real);
    while d != "/" {
        d = parent(d);
        prefix_candidates.push(d.to_string());
    }
    let name_minor = real
        .rsplit('/')
        .next()
        .and_then(|n| n.strip_prefix("python3."))
        .and_then(|m| m.parse::<u32>().ok());
    prefix_candidates
        .iter()
        .find_map(|p| {
            let lib = format!("{}/lib", p.trim_end_matches('/'));
            let mut minors: Vec<u32> = fs
                .children(&lib)
                .into_iter()
                .filter_map(|(n, _)| n.strip_prefix("python3.")?.parse::<u32>().ok())
                .filter(|m| fs.is_file(&format!("{lib}/python3.{m}/os.py")))
                .collect();
            minors.sort_unstable();
            let m = match name_minor {
                Some(m) if minors.contains(&m) => Some(m),
                Some(_) => None,
                None => minors.last().copied(),
            }?;
            Some((p.clone(), m))
        })
        .ok_or_else(|| {
            refuse(
                image,
                format!("no standard library (lib/python3.X/os.py) above {real}"),
            )
        })
}

/// `3.X.N`, from the version strings in the binary or its libpython.
fn full_version(
    image: &str,
    fs: &RootFs,
    (real, base_prefix, multiarch): (&str, &str, &str),
    minor: u32,
) -> Result<String> {
    let mut version_sources = vec![real.to_string()];
    for dir in [
        format!("{}/lib", base_prefix.trim_end_matches('/')),
        format!("{}/lib/{multiarch}", base_prefix.trim_end_matches('/')),
        format!("/usr/lib/{multiarch}"),
    ] {
        for (n, _) in fs.children(&dir) {
            if n.starts_with(&format!("libpython3.{minor}")) {
                version_sources.push(format!("{dir}/{n}"));
            }
        }
    }
    let prefix_want = format!("3.{minor}.");
    let version = version_sources
        .iter()
        .filter_map(|p| fs.resolve(p))
        .filter_map(|p| fs.versions(&p).map(<[String]>::to_vec))
        .flatten()
        .find(|v| v.starts_with(&prefix_want))
        .ok_or_else(|| {
            refuse(
                image,
                format!(
                    "cannot tell the full Python version of {real} (no 3.{minor}.N in the binary)"
                ),
            )
        })?;
    Ok(version.trim_end_matches('+').to_string())
}

/// glibc's version, from the banner of the base's `libc.so.6`.
fn glibc(image: &str, fs: &RootFs, multiarch: &str) -> Result<(u32, u32)> {
    let mut libc_dirs = vec!["/lib64".to_string(), "/usr/lib64".to_string()];
    if !multiarch.is_empty() {
        libc_dirs.insert(0, format!("/lib/{multiarch}"));
        libc_dirs.insert(1, format!("/usr/lib/{multiarch}"));
    }
    libc_dirs.push("/lib".into());
    libc_dirs.push("/usr/lib".into());
    libc_dirs
        .iter()
        .filter_map(|d| fs.resolve(&format!("{d}/libc.so.6")))
        .filter_map(|p| fs.versions(&p).map(<[String]>::to_vec))
        .flatten()
        .find_map(|s| glibc_version(&s))
        .ok_or_else(|| {
            let musl = fs
                .children("/lib")
                .iter()
                .any(|(n, _)| n.starts_with("ld-musl"));
            refuse(
                image,
                if musl {
                    "it is a musl (Alpine-like) base; direct mode handles glibc bases".to_string()
                } else {
                    "no glibc (libc.so.6 with a version banner) found".to_string()
                },
            )
        })
}

/// CPython's `posix_prefix` scheme, for a `sysconfig.py` that names none.
fn posix_prefix_default() -> BTreeMap<String, String> {
    [
        (
            "stdlib",
            "{installed_base}/{platlibdir}/python{py_version_short}",
        ),
        (
            "platstdlib",
            "{platbase}/{platlibdir}/python{py_version_short}",
        ),
        (
            "purelib",
            "{base}/lib/python{py_version_short}/site-packages",
        ),
        (
            "platlib",
            "{platbase}/{platlibdir}/python{py_version_short}/site-packages",
        ),
        (
            "include",
            "{installed_base}/include/python{py_version_short}{abiflags}",
        ),
        ("scripts", "{base}/bin"),
        ("data", "{base}"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The name of the scheme pip installs with (sysconfig's preferred one).
fn scheme_name(
    config: &ImageConfig,
    schemes: &BTreeMap<String, BTreeMap<String, String>>,
    venv: bool,
) -> &'static str {
    if venv {
        if schemes.contains_key("posix_venv") {
            "posix_venv"
        } else {
            "posix_prefix"
        }
    } else if schemes.contains_key("posix_local") {
        match config.env("DEB_PYTHON_INSTALL_LAYOUT") {
            Some("deb") | Some("deb_system") if schemes.contains_key("deb_system") => "deb_system",
            _ => "posix_local",
        }
    } else {
        "posix_prefix"
    }
}

/// `sys.prefix` and the install scheme pip uses there.
fn scheme(
    config: &ImageConfig,
    fs: &RootFs,
    b: &PythonBuild,
    venv: Option<&str>,
) -> (String, Scheme) {
    let schemes = text(fs, &format!("{}/sysconfig.py", b.stdlib))
        .map(|t| pyfacts::install_schemes(&t))
        .unwrap_or_default();
    let prefix = venv.map_or_else(|| b.base_prefix.clone(), str::to_string);
    let name = scheme_name(config, &schemes, venv.is_some());
    let default = posix_prefix_default();
    let templates = schemes.get(name).unwrap_or(&default);
    let svars: BTreeMap<&str, String> = BTreeMap::from([
        ("base", prefix.clone()),
        ("platbase", prefix.clone()),
        ("installed_base", b.base_prefix.clone()),
        ("installed_platbase", b.base_prefix.clone()),
        ("py_version_short", b.short.clone()),
        ("py_version_nodot", format!("3{}", b.minor)),
        ("abiflags", b.abiflags.clone()),
        ("platlibdir", b.platlibdir.clone()),
    ]);
    let get = |k: &str| {
        templates
            .get(k)
            .or_else(|| default.get(k))
            .map(|t| pyfacts::expand(t, &svars))
            .unwrap_or_default()
    };
    let include = match venv {
        // pip's own rule in a virtual environment.
        Some(v) => format!("{v}/include/site/python{}", b.short),
        None => get("include"),
    };
    let mut stdlib = vec![get("stdlib"), get("platstdlib")];
    stdlib.dedup();
    let scheme = Scheme {
        name: name.to_string(),
        purelib: get("purelib"),
        platlib: get("platlib"),
        scripts: get("scripts"),
        data: get("data"),
        include,
        stdlib,
    };
    (prefix, scheme)
}

/// The site directories `site.py` adds that exist, in its order.
fn site_dirs(fs: &RootFs, b: &PythonBuild, interp: &Interpreter) -> Vec<String> {
    let site_src = text(fs, &format!("{}/site.py", b.stdlib)).unwrap_or_default();
    let debian_site = site_src.contains("dist-packages");
    let mut prefixes: Vec<String> = Vec::new();
    if let Some(v) = &interp.venv {
        prefixes.push(v.clone());
        if interp
            .venv_vars
            .get("include-system-site-packages")
            .is_some_and(|s| s.eq_ignore_ascii_case("true"))
        {
            prefixes.push(b.base_prefix.clone());
        }
    } else {
        prefixes.push(b.base_prefix.clone());
    }
    let short = &b.short;
    let mut libdirs = vec![b.platlibdir.clone()];
    if b.platlibdir != "lib" {
        libdirs.push("lib".into());
    }
    let mut site_dirs: Vec<String> = Vec::new();
    for p in &prefixes {
        let p = p.trim_end_matches('/');
        let mut cands = Vec::new();
        if debian_site {
            if interp.venv.is_some() {
                cands.push(format!("{p}/lib/python{short}/site-packages"));
            }
            cands.push(format!("{p}/local/lib/python{short}/dist-packages"));
            cands.push(format!("{p}/lib/python3/dist-packages"));
            for l in &libdirs {
                cands.push(format!("{p}/{l}/python{short}/dist-packages"));
            }
        } else {
            for l in &libdirs {
                cands.push(format!("{p}/{l}/python{short}/site-packages"));
            }
        }
        for c in cands {
            if !site_dirs.contains(&c) && fs.is_dir(&c) {
                site_dirs.push(c);
            }
        }
    }
    site_dirs
}

/// `sys.path`: the stdlib's entries, the site directories, then the
/// directories their `.pth` files add (also returned alone).
fn sys_path(fs: &RootFs, b: &PythonBuild, site_dirs: &[String]) -> (Vec<String>, Vec<String>) {
    let mut sys_path = vec![
        format!(
            "{}/lib/python3{}.zip",
            b.base_prefix.trim_end_matches('/'),
            b.minor
        ),
        b.stdlib.clone(),
        format!("{}/lib-dynload", b.stdlib),
    ];
    let mut pth_dirs: Vec<String> = Vec::new();
    for site in site_dirs {
        sys_path.push(site.clone());
        for dir in pth_lines(fs, site) {
            if fs.is_dir(&dir) && !sys_path.contains(&dir) && !pth_dirs.contains(&dir) {
                pth_dirs.push(dir);
            }
        }
    }
    sys_path.extend(pth_dirs.iter().cloned());
    (sys_path, pth_dirs)
}

/// The directories the `.pth` files of `site` name, in file-name order
/// (comments and `import` lines skipped; relative paths from `site`).
fn pth_lines(fs: &RootFs, site: &str) -> Vec<String> {
    let mut pths: Vec<String> = fs
        .children(site)
        .into_iter()
        .filter(|(n, _)| n.ends_with(".pth") && !n.starts_with('.'))
        .map(|(n, _)| n)
        .collect();
    pths.sort();
    let mut dirs = Vec::new();
    for pth in pths {
        let Some(t) = text(fs, &format!("{site}/{pth}")) else {
            continue;
        };
        for line in t.lines() {
            let l = line.trim_end();
            if l.is_empty()
                || l.starts_with('#')
                || l.starts_with("import ")
                || l.starts_with("import\t")
            {
                continue;
            }
            dirs.push(if l.starts_with('/') {
                pyfacts::normalize(l)
            } else {
                pyfacts::normalize(&format!("{site}/{l}"))
            });
        }
    }
    dirs
}

/// The pip `python -m pip` imports: the first on `sys.path`.
fn pip(image: &str, fs: &RootFs, sys_path: &[String], executable: &str) -> Result<Pip> {
    let pip_dir = sys_path
        .iter()
        .map(|d| format!("{d}/pip"))
        .find(|d| fs.is_file(&format!("{d}/__init__.py")))
        .ok_or_else(|| {
            refuse(
                image,
                format!("{executable} has no pip on its sys.path; Beam's boot installs with `python -m pip`"),
            )
        })?;
    Ok(Pip {
        version: text(fs, &format!("{pip_dir}/__init__.py"))
            .and_then(|t| pyfacts::dunder_version(&t))
            .ok_or_else(|| refuse(image, format!("no __version__ in {pip_dir}/__init__.py")))?,
        location: parent(&pip_dir).to_string(),
        script_template: text(fs, &format!("{pip_dir}/_vendor/distlib/scripts.py"))
            .and_then(|t| pyfacts::script_template(&t))
            .ok_or_else(|| {
                refuse(
                    image,
                    format!("no SCRIPT_TEMPLATE in {pip_dir}/_vendor/distlib/scripts.py (pip's launcher template)"),
                )
            })?,
        debian_is_local: text(fs, &format!("{pip_dir}/_internal/utils/misc.py"))
            .is_some_and(|t| pyfacts::debian_is_local(&t)),
    })
}

/// Every `.dist-info` and `.egg-info` on `sys.path` (after its first
/// entry), in `sys.path` order.
fn installed(fs: &RootFs, sys_path: &[String]) -> Vec<Distribution> {
    let mut distributions = Vec::new();
    for dir in sys_path.iter().skip(1) {
        for (name, node) in fs.children(dir) {
            let is_dist_info = name.ends_with(".dist-info") && node.kind == Kind::Dir;
            let is_egg_info = name.ends_with(".egg-info");
            if !(is_dist_info || is_egg_info) {
                continue;
            }
            if let Some(d) = read_distribution(fs, dir, &name) {
                distributions.push(d);
            }
        }
    }
    distributions
}

/// The directories pip may install into or uninstall from, none inside another.
fn roots(site_dirs: &[String], pth_dirs: &[String], scheme: &Scheme) -> Vec<String> {
    let mut roots: Vec<String> = site_dirs
        .iter()
        .chain(pth_dirs.iter())
        .cloned()
        .chain([
            scheme.purelib.clone(),
            scheme.platlib.clone(),
            scheme.scripts.clone(),
            scheme.data.clone(),
            scheme.include.clone(),
        ])
        .collect();
    roots.sort();
    roots.dedup();
    roots
        .iter()
        .filter(|r| {
            !roots
                .iter()
                .any(|o| o != *r && r.starts_with(&format!("{}/", o.trim_end_matches('/'))))
        })
        .cloned()
        .collect()
}

/// Every path under `roots` (directories with a trailing `/`), and the
/// directories there, above them or above Beam's that are not 0755 root.
#[allow(clippy::type_complexity)]
fn visible(fs: &RootFs, roots: &[String]) -> (BTreeSet<String>, BTreeMap<String, (u32, u64, u64)>) {
    let mut files = BTreeSet::new();
    for r in roots {
        for (p, n) in fs.under(r) {
            files.insert(if n.kind == Kind::Dir {
                format!("{p}/")
            } else {
                p.clone()
            });
        }
    }
    let mut dirs = BTreeMap::new();
    let mut note_dir = |p: &str| {
        if let Some(n) = fs.node(p) {
            if n.kind == Kind::Dir && (n.mode != 0o755 || n.uid != 0 || n.gid != 0) {
                dirs.insert(p.to_string(), (n.mode, n.uid, n.gid));
            }
        }
    };
    for r in roots
        .iter()
        .map(String::as_str)
        .chain([crate::plan::ARTIFACTS_DIR])
    {
        let mut d = r;
        while d != "/" {
            note_dir(d);
            d = parent(d);
        }
        for (p, n) in fs.under(r) {
            if n.kind == Kind::Dir {
                note_dir(p);
            }
        }
    }
    (files, dirs)
}

/// `... release version 2.36.` → (2, 36).
fn glibc_version(banner: &str) -> Option<(u32, u32)> {
    let rest = banner.split("release version ").nth(1)?;
    let v = rest.trim_end_matches('.');
    let mut it = v.split('.');
    let major = it.next()?.parse().ok()?;
    let minor: String = it
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor.parse().ok()?))
}

/// One distribution's metadata directory (or egg-info file) in `dir`.
fn read_distribution(fs: &RootFs, dir: &str, info: &str) -> Option<Distribution> {
    let info_path = format!("{dir}/{info}");
    let is_dir = fs.is_dir(&info_path);
    let read = |f: &str| -> Option<String> {
        if is_dir {
            text(fs, &format!("{info_path}/{f}"))
        } else {
            None
        }
    };
    let meta_text = if info.ends_with(".dist-info") {
        read("METADATA")?
    } else if is_dir {
        read("PKG-INFO")?
    } else {
        text(fs, &info_path)?
    };
    let meta = Metadata::parse(&meta_text);
    let name = meta.name()?.to_string();
    let version = meta.version()?.to_string();
    let mut requires = meta.requires_dist();
    if info.ends_with(".egg-info") {
        if let Some(r) = read("requires.txt") {
            requires = metadata::requires_txt(&r);
        }
    }
    let files = if info.ends_with(".dist-info") {
        read("RECORD").map(|r| {
            metadata::parse_record(&r)
                .into_iter()
                .map(|row| pyfacts::normalize(&format!("{dir}/{}", row.path)))
                .collect()
        })
    } else {
        read("installed-files.txt").map(|r| {
            r.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| pyfacts::normalize(&format!("{info_path}/{}", l.trim())))
                .collect()
        })
    };
    let eps = read("entry_points.txt")
        .map(|t| metadata::parse_entry_points(&t))
        .unwrap_or_default();
    let names = |g: &str| -> Vec<String> {
        eps.get(g)
            .map(|v| v.iter().map(|(n, _)| n.clone()).collect())
            .unwrap_or_default()
    };
    Some(Distribution {
        name,
        version,
        location: dir.to_string(),
        info: info.to_string(),
        installer: read("INSTALLER").map(|s| s.trim().to_string()),
        requested: is_dir && fs.is_file(&format!("{info_path}/REQUESTED")),
        direct_url: read("direct_url.json"),
        files,
        requires,
        requires_python: meta.requires_python().map(str::to_string),
        console_scripts: names("console_scripts"),
        gui_scripts: names("gui_scripts"),
    })
}

impl Index {
    /// The distribution pip sees for a (normalized) name: the first on sys.path.
    pub fn find(&self, key: &str) -> Option<&Distribution> {
        self.distributions.iter().find(|d| d.key() == key)
    }

    /// `pip freeze --all`, as the record keeps it: normalized name → version
    /// (or `@ URL` for a direct reference).
    pub fn freeze(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for d in &self.distributions {
            let key = d.key();
            if out.contains_key(&key) {
                continue;
            }
            let url = d.direct_url.as_deref().and_then(|j| {
                let v: serde_json::Value = serde_json::from_str(j).ok()?;
                if v.get("dir_info")
                    .and_then(|i| i.get("editable"))
                    .is_some_and(|e| e == true)
                {
                    return None;
                }
                v.get("url")?.as_str().map(str::to_string)
            });
            let value = match url {
                Some(u) => format!("@ {}", crate::redact::redact(&u)),
                None => d.version.clone(),
            };
            out.insert(key, value);
        }
        out
    }

    /// Pip's `is_local` for a path (may pip remove it?).
    pub fn is_local(&self, path: &str) -> bool {
        if let Some(v) = &self.python.venv {
            return path.starts_with(v.as_str());
        }
        if !self.pip.debian_is_local {
            return true;
        }
        if !path.starts_with("/usr") {
            return true;
        }
        let s = &self.scheme;
        [&s.purelib, &s.platlib, &s.include, &s.scripts, &s.data]
            .iter()
            .any(|p| path.starts_with(p.as_str()))
    }

    /// The marker environment of the base's interpreter (PEP 508). The
    /// platform's release and version are the running kernel's, as in a
    /// container on this machine.
    pub fn markers(&self) -> Result<pep508_rs::MarkerEnvironment> {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string();
        let kversion = std::fs::read_to_string("/proc/sys/kernel/version")
            .unwrap_or_default()
            .trim()
            .to_string();
        let short = self.python.short();
        let builder = pep508_rs::MarkerEnvironmentBuilder {
            implementation_name: "cpython",
            implementation_version: &self.python.version,
            os_name: "posix",
            platform_machine: &self.machine,
            platform_python_implementation: "CPython",
            platform_release: &release,
            platform_system: "Linux",
            platform_version: &kversion,
            python_full_version: &self.python.version,
            python_version: &short,
            sys_platform: "linux",
        };
        pep508_rs::MarkerEnvironment::try_from(builder).map_err(|e| Error::DirectBase {
            image: self.base.clone(),
            reason: format!("Python version {} is not PEP 440: {e}", self.python.version),
        })
    }
}

/// Index a base from its config and its layer files (bottom first).
pub fn index_layers(id: &str, config: &[u8], layers: &[PathBuf]) -> Result<Index> {
    let cfg =
        ImageConfig::parse(id, config).ok_or_else(|| refuse(id, "its image config is not JSON"))?;
    let fs = read_layers(layers)?;
    derive(&cfg, &fs)
}

/// Index a base from its layers as readers (tests, streams).
pub fn index_readers<R: Read>(id: &str, config: &[u8], layers: Vec<R>) -> Result<Index> {
    let cfg =
        ImageConfig::parse(id, config).ok_or_else(|| refuse(id, "its image config is not JSON"))?;
    let mut fs = RootFs::new();
    for r in layers {
        fs.apply_layer(r, &capture)
            .map_err(|e| refuse(id, format!("reading a layer: {e}")))?;
    }
    derive(&cfg, &fs)
}

/// Where the installed set of an image is kept: `<state root>/direct/index/<hex>.json`.
pub fn cache_path(state_root: &Path, image_id: &str) -> PathBuf {
    let hex = image_id.rsplit(':').next().unwrap_or(image_id);
    state_root
        .join("direct")
        .join("index")
        .join(format!("{hex}.json"))
}

/// The cached installed set of an image, when there is one of this format.
/// Installed sets parsed or made in this process, by image id: one build
/// reads a base's (megabytes of JSON) once, not once per step that needs it.
static PARSED: std::sync::Mutex<BTreeMap<String, Index>> = std::sync::Mutex::new(BTreeMap::new());

/// Remember `index` for [`recall`] in this process.
pub fn note(index: &Index) {
    if let Ok(mut m) = PARSED.lock() {
        m.insert(index.image.clone(), index.clone());
    }
}

/// The installed set of `image_id` noted in this process.
pub fn recall(image_id: &str) -> Option<Index> {
    PARSED.lock().ok()?.get(image_id).cloned()
}

pub fn load_cached(state_root: &Path, image_id: &str) -> Option<Index> {
    load_cached_json(state_root, image_id).map(|(i, _)| i)
}

/// The kept index of `image_id` and its JSON as kept.
pub fn load_cached_json(state_root: &Path, image_id: &str) -> Option<(Index, Vec<u8>)> {
    let bytes = std::fs::read(cache_path(state_root, image_id)).ok()?;
    let index: Index = serde_json::from_slice(&bytes).ok()?;
    (index.format == FORMAT && index.image == image_id).then_some((index, bytes))
}

/// Keep the index (written to a temporary file, then renamed into place).
pub fn store_cached(state_root: &Path, index: &Index) -> Result<PathBuf> {
    let path = cache_path(state_root, &index.image);
    let bytes =
        serde_json::to_vec(index).map_err(|e| Error::io(&path, std::io::Error::other(e)))?;
    store_cached_json(state_root, &index.image, &bytes)
}

/// Keep the index of `image_id` already serialized as `json`.
pub fn store_cached_json(state_root: &Path, image_id: &str, json: &[u8]) -> Result<PathBuf> {
    let path = cache_path(state_root, image_id);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == json.len() as u64) {
        // Kept already (an index is named by its image id).
        return Ok(path);
    }
    let dir = path.parent().unwrap_or(state_root);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = dir.join(format!(".{}.tmp", std::process::id()));
    std::fs::write(&tmp, json).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    Ok(path)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::direct::rootfs::tests::layer;

    pub const DEBIAN_SYSCONFIG: &str = r#"
_INSTALL_SCHEMES = {
    'posix_prefix': {
        'stdlib': '{installed_base}/{platlibdir}/python{py_version_short}',
        'platstdlib': '{platbase}/{platlibdir}/python{py_version_short}',
        'purelib': '{base}/lib/python{py_version_short}/site-packages',
        'platlib': '{platbase}/{platlibdir}/python{py_version_short}/site-packages',
        'include':
            '{installed_base}/include/python{py_version_short}{abiflags}',
        'scripts': '{base}/bin',
        'data': '{base}',
        },
    'posix_local': {
        'stdlib': '{installed_base}/lib/python{py_version_short}',
        'platstdlib': '{platbase}/lib/python{py_version_short}',
        'purelib': '{base}/local/lib/python{py_version_short}/dist-packages',
        'platlib': '{platbase}/local/lib/python{py_version_short}/dist-packages',
        'include':
            '{installed_base}/include/python{py_version_short}{abiflags}',
        'scripts': '{base}/local/bin',
        'data': '{base}/local',
        },
    }
"#;

    pub const TEMPLATE: &str = "# -*- coding: utf-8 -*-\nimport re\nimport sys\nfrom %(module)s import %(import_name)s\nif __name__ == '__main__':\n    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n    sys.exit(%(func)s())\n";

    /// A small Debian-like base: python3.11 with apt's pip and six in
    /// /usr/lib/python3/dist-packages, and `tabulate` installed by pip in
    /// /usr/local.
    pub fn debian_layers() -> Vec<Vec<u8>> {
        let scripts = format!("SCRIPT_TEMPLATE = r'''{TEMPLATE}'''\n");
        let misc = "def is_local(path: str) -> bool:\n    prefix = '/usr'\n    from pip._internal.locations import get_scheme\n\ndef x(): pass\n";
        let py = "\x7fELF\0\x003.11.2\0main\0";
        let libc = "\0GNU C Library (Debian GLIBC 2.36-9) stable release version 2.36.\0";
        let entries: Vec<(String, String)> = vec![
            ("usr", "d"), ("usr/bin", "d"), ("usr/lib", "d"), ("usr/lib/python3.11", "d"),
            ("usr/lib/python3.11/os.py", "f:"),
            ("usr/lib/python3.11/site.py", "f:# dist-packages\n"),
            ("usr/lib/python3.11/sysconfig.py", &format!("f:{DEBIAN_SYSCONFIG}")),
            ("usr/lib/python3.11/_sysconfigdata__linux_x86_64-linux-gnu.py", "f:build_time_vars = {'ABIFLAGS': '',\n 'MULTIARCH': 'x86_64-linux-gnu',\n 'Py_DEBUG': 0}\n"),
            ("usr/lib/python3", "d"), ("usr/lib/python3/dist-packages", "d"),
            ("usr/lib/python3/dist-packages/pip", "d"),
            ("usr/lib/python3/dist-packages/pip/__init__.py", "f:__version__ = \"23.0.1\"\n"),
            ("usr/lib/python3/dist-packages/pip/_vendor/distlib/scripts.py", &format!("f:{scripts}")),
            ("usr/lib/python3/dist-packages/pip/_internal/utils/misc.py", &format!("f:{misc}")),
            ("usr/lib/python3/dist-packages/pip-23.0.1.dist-info", "d"),
            ("usr/lib/python3/dist-packages/pip-23.0.1.dist-info/METADATA", "f:Name: pip\nVersion: 23.0.1\n"),
            ("usr/lib/python3/dist-packages/six.py", "f:"),
            ("usr/lib/python3/dist-packages/six-1.16.0.egg-info", "f:Metadata-Version: 1.1\nName: six\nVersion: 1.16.0\n"),
            ("usr/lib/x86_64-linux-gnu", "d"),
            ("usr/lib/x86_64-linux-gnu/libc.so.6", &format!("f:{libc}")),
            ("usr/bin/python3.11", &format!("x:{py}")),
            ("usr/bin/python3", "l:python3.11"),
            ("usr/local", "d"), ("usr/local/bin", "d"),
            ("usr/local/bin/python", "l:/usr/bin/python3"),
            ("usr/local/bin/tabulate", "f:#!/usr/local/bin/python\n"),
            ("usr/local/lib", "d"), ("usr/local/lib/python3.11", "d"),
            ("usr/local/lib/python3.11/dist-packages", "d"),
            ("usr/local/lib/python3.11/dist-packages/tabulate", "d"),
            ("usr/local/lib/python3.11/dist-packages/tabulate/__init__.py", "f:x = 1\n"),
            ("usr/local/lib/python3.11/dist-packages/tabulate/__pycache__", "d"),
            ("usr/local/lib/python3.11/dist-packages/tabulate/__pycache__/__init__.cpython-311.pyc", "f:pyc"),
            ("usr/local/lib/python3.11/dist-packages/tabulate-0.8.0.dist-info", "d"),
            ("usr/local/lib/python3.11/dist-packages/tabulate-0.8.0.dist-info/METADATA", "f:Metadata-Version: 2.1\nName: tabulate\nVersion: 0.8.0\nRequires-Dist: wcwidth ; extra == 'widechars'\n"),
            ("usr/local/lib/python3.11/dist-packages/tabulate-0.8.0.dist-info/INSTALLER", "f:pip\n"),
            ("usr/local/lib/python3.11/dist-packages/tabulate-0.8.0.dist-info/RECORD", "f:../../../bin/tabulate,sha256=x,25\ntabulate-0.8.0.dist-info/INSTALLER,,\ntabulate-0.8.0.dist-info/METADATA,,\ntabulate-0.8.0.dist-info/RECORD,,\ntabulate-0.8.0.dist-info/entry_points.txt,,\ntabulate/__init__.py,sha256=y,6\ntabulate/__pycache__/__init__.cpython-311.pyc,,\n"),
            ("usr/local/lib/python3.11/dist-packages/tabulate-0.8.0.dist-info/entry_points.txt", "f:[console_scripts]\ntabulate = tabulate:_main\n"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let refs: Vec<(&str, &str)> = entries
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        vec![layer(&refs)]
    }

    pub fn debian_config() -> Vec<u8> {
        serde_json::json!({
            "os": "linux", "architecture": "amd64",
            "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
            "rootfs": {"type": "layers", "diff_ids": []}
        })
        .to_string()
        .into_bytes()
    }

    /// `i` with apache-beam 2.77.0 installed by pip (a Beam base's index).
    pub fn with_beam(mut i: Index) -> Index {
        i.distributions.push(Distribution {
            name: "apache-beam".into(),
            version: "2.77.0".into(),
            location: "/usr/local/lib/python3.11/dist-packages".into(),
            info: "apache_beam-2.77.0.dist-info".into(),
            installer: Some("pip".into()),
            requested: true,
            direct_url: None,
            files: Some(vec![]),
            requires: vec![],
            requires_python: None,
            console_scripts: vec![],
            gui_scripts: vec![],
        });
        i
    }

    pub fn debian_index() -> Index {
        let layers = debian_layers();
        index_readers(
            "sha256:base",
            &debian_config(),
            layers.iter().map(|l| &l[..]).collect(),
        )
        .unwrap()
    }

    #[test]
    fn a_debian_base_is_indexed_as_its_pip_sees_it() {
        let i = debian_index();
        assert_eq!(i.python.executable, "/usr/local/bin/python");
        assert_eq!(i.python.real, "/usr/bin/python3.11");
        assert_eq!(i.python.version, "3.11.2");
        assert_eq!(i.python.abi, "cp311");
        assert_eq!(i.glibc, (2, 36));
        assert_eq!(i.scheme.name, "posix_local");
        assert_eq!(i.scheme.purelib, "/usr/local/lib/python3.11/dist-packages");
        assert_eq!(i.scheme.scripts, "/usr/local/bin");
        assert_eq!(i.scheme.data, "/usr/local");
        assert_eq!(i.scheme.include, "/usr/include/python3.11");
        assert_eq!(
            &i.sys_path[1..],
            [
                "/usr/lib/python3.11",
                "/usr/lib/python3.11/lib-dynload",
                "/usr/local/lib/python3.11/dist-packages",
                "/usr/lib/python3/dist-packages"
            ]
        );
        assert_eq!(i.pip.version, "23.0.1");
        assert!(i.pip.debian_is_local);
        assert_eq!(i.pip.script_template, TEMPLATE);
        assert_eq!(i.tags[0], "cp311-cp311-manylinux_2_36_x86_64");
        let names: Vec<String> = i.distributions.iter().map(|d| d.key()).collect();
        assert_eq!(names, ["tabulate", "pip", "six"]);
        let t = i.find("tabulate").unwrap();
        assert_eq!(t.version, "0.8.0");
        assert!(t
            .files
            .as_ref()
            .unwrap()
            .contains(&"/usr/local/bin/tabulate".to_string()));
        assert_eq!(t.console_scripts, ["tabulate"]);
        assert_eq!(t.installer.as_deref(), Some("pip"));
        assert!(i
            .files
            .contains("/usr/local/lib/python3.11/dist-packages/tabulate/"));
        assert!(i.files.contains("/usr/lib/python3/dist-packages/six.py"));
        assert!(i.is_local("/usr/local/lib/python3.11/dist-packages/x"));
        assert!(!i.is_local("/usr/lib/python3/dist-packages/six.py"));
        assert_eq!(i.freeze()["six"], "1.16.0");
        let m = i.markers().unwrap();
        assert_eq!(m.python_full_version().to_string(), "3.11.2");
    }

    #[test]
    fn the_index_round_trips_through_the_cache() {
        let i = debian_index();
        let dir = tempfile::tempdir().unwrap();
        assert!(load_cached(dir.path(), &i.base).is_none());
        store_cached(dir.path(), &i).unwrap();
        assert_eq!(load_cached(dir.path(), &i.base).unwrap(), i);
        assert!(load_cached(dir.path(), "sha256:other").is_none());
    }

    #[test]
    fn bases_direct_mode_cannot_read_are_refused_with_the_reason() {
        let cfg = serde_json::json!({"os": "linux", "architecture": "amd64", "config": {"Env": ["PATH=/bin"]}}).to_string();
        let l = layer(&[("bin", "d"), ("bin/sh", "f:")]);
        let e = index_readers("sha256:x", cfg.as_bytes(), vec![&l[..]]).unwrap_err();
        assert!(e.to_string().contains("no `python` or `python3`"), "{e}");
        let win = serde_json::json!({"os": "windows", "architecture": "amd64"}).to_string();
        let e = index_readers("sha256:x", win.as_bytes(), vec![&l[..]]).unwrap_err();
        assert!(e.to_string().contains("windows"), "{e}");
    }
}
