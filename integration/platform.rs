//! Multi-platform prebuilds (issue 20) on the real engine with qemu-user
//! emulation: the fixture SDK base for amd64 and its arm64 twin
//! (integration/fixtures/arm64.sh) pushed as one index to a loopback
//! registry; `--platform linux/amd64,linux/arm64` pushes an index whose two
//! images each run their own interpreter; a relaunch finds everything; a
//! code change rebuilds only each platform's application layer; and the
//! refusals come before any work.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::daemons::Engine;
use crate::support::*;

struct Arm64 {
    image: String,
    /// `DIR/linux_amd64`, `DIR/linux_arm64`: the demo's wheels and numpy.
    wheels: PathBuf,
    requirement: String,
}

fn arm64_fixture() -> Arm64 {
    let cache = std::env::var("PREBUILDER_FIXTURE_CACHE")
        .unwrap_or_else(|_| "/var/cache/prebuilder-fixtures".into());
    let path = Path::new(&cache).join("arm64.env");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run `bash integration/fixtures/arm64.sh` (make fixtures)",
            path.display()
        )
    });
    let vars: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    Arm64 {
        image: vars["FIXTURE_ARM64_IMAGE"].into(),
        wheels: vars["FIXTURE_PLATFORM_WHEELS"].into(),
        requirement: vars["FIXTURE_PLATFORM_REQUIREMENT"].into(),
    }
}

/// The password the loopback index wants: it must appear in no output,
/// report, attestation, image config or history.
const INDEX_PASSWORD: &str = "idx-pw-7f3e9a1c";

/// A PEP 503 index (Python's http.server on 127.0.0.1) over the wheels of a
/// directory: `/simple/<project>/` lists a project's files with their
/// `#sha256=`, `/files/<name>` serves one; a request without HTTP basic
/// `prebuilder:INDEX_PASSWORD` is answered 401. Each request is logged
/// (`auth PATH` or `none PATH`). Stopped (by its pid) on drop.
struct LoopbackIndex {
    child: std::process::Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

const INDEX_SERVER: &str = r#"
import base64, hashlib, http.server, os, re, sys
root, password, port_file, log = sys.argv[1:5]
want = "Basic " + base64.b64encode(("prebuilder:" + password).encode()).decode()
def norm(n): return re.sub(r"[-_.]+", "-", n).lower()
files = {f: hashlib.sha256(open(os.path.join(root, f), "rb").read()).hexdigest()
         for f in os.listdir(root) if f.endswith(".whl")}
class Index(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.headers.get("Authorization") == want
        with open(log, "a") as f: f.write(("auth " if ok else "none ") + self.path + "\n")
        if not ok:
            return self.answer(401, "text/plain", b"credentials required")
        m = re.fullmatch(r"/simple/([^/]+)/", self.path)
        if m:
            mine = [f for f in sorted(files) if norm(f.split("-")[0]) == m.group(1)]
            if not mine:
                return self.answer(404, "text/plain", b"no such project")
            links = "".join('<a href="../../files/%s#sha256=%s">%s</a><br>\n' % (f, files[f], f) for f in mine)
            return self.answer(200, "text/html", ("<!DOCTYPE html><html><body>%s</body></html>" % links).encode())
        name = self.path[len("/files/"):] if self.path.startswith("/files/") else ""
        if name in files:
            with open(os.path.join(root, name), "rb") as f:
                return self.answer(200, "application/octet-stream", f.read())
        self.answer(404, "text/plain", b"not found")
    def answer(self, status, ctype, body):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="index"')
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args): pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Index)
with open(port_file + ".tmp", "w") as f: f.write(str(server.server_address[1]))
os.rename(port_file + ".tmp", port_file)
server.serve_forever()
"#;

impl LoopbackIndex {
    fn serve(wheels: &Path) -> LoopbackIndex {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("index.py");
        std::fs::write(&script, INDEX_SERVER).unwrap();
        let (port_file, log) = (dir.path().join("port"), dir.path().join("requests.log"));
        let child = std::process::Command::new("python3")
            .arg(&script)
            .arg(wheels)
            .arg(INDEX_PASSWORD)
            .args([&port_file, &log])
            .spawn()
            .expect("python3 for the loopback index");
        let started = std::time::Instant::now();
        while !port_file.exists() {
            assert!(
                started.elapsed().as_secs() < 20,
                "the loopback index did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let port = std::fs::read_to_string(&port_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        LoopbackIndex {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    /// PIP_INDEX_URL with the credentials in its userinfo.
    fn url(&self) -> String {
        format!(
            "http://prebuilder:{INDEX_PASSWORD}@127.0.0.1:{}/simple",
            self.port
        )
    }

    fn shown(&self) -> String {
        format!("http://127.0.0.1:{}/simple", self.port)
    }

    /// Every request, as logged.
    fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for LoopbackIndex {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The password is nowhere in `text`.
fn no_password(what: &str, text: &str) {
    assert!(
        !text.contains(INDEX_PASSWORD),
        "the index password is in {what}:\n{text}"
    );
}

/// Every file under `dir` (none when it does not exist).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The manifest of `path:reference` (digest, media type, size) as stored.
fn manifest(addr: &str, path: &str, reference: &str) -> (String, String, usize) {
    let o = run(std::process::Command::new("curl").args([
        "-s",
        "-D",
        "-",
        "-H",
        "Accept: application/vnd.docker.distribution.manifest.v2+json",
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json",
        "-H",
        "Accept: application/vnd.oci.image.index.v1+json",
        &format!("http://{addr}/v2/{path}/manifests/{reference}"),
    ]));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix(&format!("{name}:"))
                    .map(|v| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no {name} in {head}"))
    };
    (
        header("docker-content-digest"),
        body.to_string(),
        header("content-length").parse().unwrap(),
    )
}

/// The two fixture bases pushed to `registry` as one index (a Docker
/// manifest list, as multi-arch images on Docker Hub are); its reference.
fn publish_index(registry: &TestRegistry, tag: &str) -> String {
    let fx = Fixtures::load();
    let arm = arm64_fixture();
    let repo = format!("{}/platform/base", registry.addr);
    let mut entries = Vec::new();
    for (image, arch) in [(&fx.beam_image, "amd64"), (&arm.image, "arm64")] {
        let reference = format!("{repo}:{tag}-{arch}");
        publish(image, &reference, None);
        let (digest, _, size) = manifest(&registry.addr, "platform/base", &format!("{tag}-{arch}"));
        entries.push(serde_json::json!({
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "digest": digest, "size": size,
            "platform": {"os": "linux", "architecture": arch},
        }));
    }
    let list = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": entries,
    });
    let o = run(std::process::Command::new("curl").args([
        "-sf",
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/vnd.docker.distribution.manifest.list.v2+json",
        "--data-binary",
        &list.to_string(),
        &format!("http://{}/v2/platform/base/manifests/{tag}", registry.addr),
    ]));
    assert!(o.status.success(), "putting the base index: {}", stderr(&o));
    format!("{repo}:{tag}")
}

/// `prebuilder build` for both platforms: amd64's wheels staged with the
/// plain --requirements-cache, arm64's added by [`arm64_from_index`] or
/// [`arm64_from_dir`]; pip's configuration files not read, the state (the
/// wheels fetched) under `state`.
fn two_platforms(base: &str, repository: &str, req: &Path, project: &Path, state: &Path) -> Build {
    let arm = arm64_fixture();
    Build::new(base)
        .args(["--platform", "linux/amd64,linux/arm64"])
        .repository(repository)
        .requirements(req)
        .cache(arm.wheels.join("linux_amd64"))
        .setup_file(project)
        .env("PIP_CONFIG_FILE", "/dev/null")
        .env("PREBUILDER_STATE_DIR", state)
        .push()
}

/// arm64's wheels fetched from the loopback index (credentials in PIP_INDEX_URL).
fn arm64_from_index(build: Build, index: &LoopbackIndex) -> Build {
    build.env("PIP_INDEX_URL", index.url())
}

/// arm64's wheels from `--requirements-cache linux/arm64=DIR`.
fn arm64_from_dir(build: Build) -> Build {
    let arm = arm64_fixture();
    build.arg("--requirements-cache").arg(format!(
        "linux/arm64={}",
        arm.wheels.join("linux_arm64").display()
    ))
}

/// `uname -m`, numpy and the demo's requirement inside the image for
/// `platform` (pulled by its manifest digest), under emulation for arm64.
fn runs_as(image: &str, platform: &str) -> String {
    let o = docker(&["pull", "--platform", platform, image]);
    assert!(o.status.success(), "pull {image}: {}", stderr(&o));
    let arch = docker_ok(&["image", "inspect", "-f", "{{.Architecture}}", image]);
    assert_eq!(arch.trim(), platform.rsplit('/').next().unwrap(), "{image}");
    let o = docker(&[
        "run", "--rm", "--network", "none", "--platform", platform, "--label", "prebuilder=test",
        "--entrypoint", "sh", image, "-c",
        "uname -m && python -c 'import numpy, slugify, demo_pipeline.transforms as t; print(numpy.__version__, getattr(t, \"PLATFORM_MARK\", \"-\"))'",
    ]);
    assert!(o.status.success(), "{image} on {platform}: {}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).trim().replace('\n', " ")
}

/// Every reference of `repo` on the engine (tags and `repo@digest` of
/// digest-only pulls) removed by name, never by id: the bases pulled here
/// share their ids with the fixture images, which must stay.
fn forget_references(repo: &str) {
    let list = docker_ok(&[
        "images",
        "--digests",
        repo,
        "--format",
        "{{.Repository}}:{{.Tag}} {{.Repository}}@{{.Digest}}",
    ]);
    // Two passes: a layer with a child still on the engine goes in the second.
    for _ in 0..2 {
        for reference in list.split_whitespace() {
            if !reference.ends_with(":<none>") && !reference.ends_with("@<none>") {
                let _ = docker(&["rmi", reference]);
            }
        }
    }
}

/// Every local reference of these repositories removed when the test ends,
/// passed or not.
struct Forget(Vec<String>);

impl Drop for Forget {
    fn drop(&mut self) {
        for repo in &self.0 {
            forget_references(repo);
        }
    }
}

fn platform_layers(report: &serde_json::Value, platform: &str) -> Vec<(String, String)> {
    report["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["platform"] == platform)
        .unwrap_or_else(|| panic!("no {platform} in {report}"))["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap().to_string(),
                l["cache"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Where no engine answers: the direct builds' `DOCKER_HOST`.
const NOWHERE: &str = "unix:///nonexistent/docker.sock";

/// The installed files of an image (path, mode, owner, size, content hash;
/// a `.pyc` by its header and code objects), walked as
/// integration/direct.rs's equivalence oracle walks them, but over the
/// image's exported filesystem on this machine (read from stdin as a tar):
/// no emulated Python walks the arm64 images.
const WALK_EXPORT: &str = r#"
import hashlib, json, marshal, sys, tarfile, types
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
roots = ["/usr/local/", "/usr/lib/python3/dist-packages/", "/usr/include/"]
out, seen = {}, {}
with tarfile.open(fileobj=sys.stdin.buffer, mode="r|") as t:
    for m in t:
        p = "/" + m.name.lstrip("./").rstrip("/")
        if not any(p.startswith(r) for r in roots):
            continue
        if m.isdir():
            out[p + "/"] = ["d", oct(m.mode & 0o7777), m.uid, m.gid]
        elif m.issym():
            out[p] = ["l", m.linkname]
        elif m.islnk():
            out[p] = seen["/" + m.linkname.lstrip("./")]
        elif m.isfile():
            f = ["f", oct(m.mode & 0o7777), m.size, digest(p, t.extractfile(m).read())]
            out[p] = seen[p] = f
print(json.dumps(out))
"#;

/// What the oracle compares in `image` for `platform`: its installed files
/// (from its export), and, run in it (under emulation for arm64), its
/// machine, Python version, `pip freeze --all` and `pip check`.
fn oracle_facts(image: &str, platform: &str) -> (serde_json::Value, String, String) {
    let o = docker(&["pull", "-q", "--platform", platform, image]);
    assert!(o.status.success(), "pull {image}: {}", stderr(&o));
    let id = docker_ok(&[
        "create",
        "--platform",
        platform,
        "--label",
        "prebuilder=test",
        "--network",
        "none",
        "--entrypoint",
        "true",
        image,
    ]);
    let id = id.trim();
    let mut export = std::process::Command::new("docker")
        .args(["export", id])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let walk = std::process::Command::new("python3")
        .args(["-c", WALK_EXPORT])
        .stdin(export.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(export.wait().unwrap().success(), "docker export {image}");
    let _ = docker(&["rm", id]);
    assert!(walk.status.success(), "{}", stderr(&walk));
    let files: serde_json::Value = serde_json::from_slice(&walk.stdout).unwrap();
    let o = docker(&[
        "run", "--rm", "--network", "none", "--platform", platform, "--label", "prebuilder=test",
        "--entrypoint", "sh", image, "-c",
        "uname -m; python -c 'import sys; print(sys.version.split()[0])'; python -m pip freeze --all; echo ---; python -m pip check; echo rc=$?",
    ]);
    assert!(o.status.success(), "{image} on {platform}: {}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let (head, check) = text.split_once("---\n").unwrap();
    let mut lines = head.lines();
    let machine = lines.next().unwrap().to_string();
    let version = lines.next().unwrap().to_string();
    let freeze = lines.collect::<Vec<_>>().join("\n");
    assert!(
        check.trim_end().ends_with("rc=0"),
        "pip check in {image}: {check}"
    );
    (files, format!("{machine} {version}"), freeze)
}

/// Issue 19's equivalence, per platform: the engine's image (built under
/// emulation) and the direct one have the same installed files apart from
/// INSTALLER, RECORD, direct_url.json and the pipeline's own dist-info
/// (`.pyc` compared exactly when `compiled_by` is the image's Python, else by
/// presence), the same `pip freeze --all`, and `pip check` passes in both.
fn assert_equivalent_on(engine: &str, direct: &str, platform: &str, compiled_by: &str) {
    let (ef, e_python, e_freeze) = oracle_facts(engine, platform);
    let (df, d_python, d_freeze) = oracle_facts(direct, platform);
    assert_eq!(e_python, d_python, "{platform}");
    let exact_pyc = e_python.ends_with(compiled_by);
    let own = "prebuilder_demo-0.1.0.dist-info";
    let skip = |p: &str| {
        let name = p.rsplit('/').next().unwrap_or("");
        matches!(name, "INSTALLER" | "RECORD" | "direct_url.json") || p.contains(own)
    };
    let (ef, df) = (ef.as_object().unwrap(), df.as_object().unwrap());
    let keys: std::collections::BTreeSet<&String> = ef.keys().chain(df.keys()).collect();
    let mut diffs = Vec::new();
    for k in keys.into_iter().filter(|k| !skip(k)) {
        match (ef.get(k), df.get(k)) {
            (Some(_), Some(_)) if k.ends_with(".pyc") && !exact_pyc => {}
            (Some(a), Some(b)) if a != b => diffs.push(format!("{k}: engine {a} direct {b}")),
            (Some(_), None) => diffs.push(format!("{k}: only in the engine image")),
            (None, Some(_)) => diffs.push(format!("{k}: only in the direct image")),
            _ => {}
        }
    }
    assert!(
        diffs.is_empty(),
        "{platform}: {} differences (pyc exact: {exact_pyc}):\n{}",
        diffs.len(),
        diffs
            .iter()
            .take(60)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(e_freeze, d_freeze, "{platform}: pip freeze --all");
    assert!(
        ef.len() > 1000,
        "{platform}: the walk saw the installed set"
    );
}

/// The host Python direct mode compiles `.pyc` with (`--launch-python`'s
/// version, as the fixture venv has it).
fn launch_python_version(python: &Path) -> String {
    let o = run(std::process::Command::new(python)
        .args(["-c", "import sys; print(sys.version.split()[0])"]));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn two_platforms_push_an_index_whose_images_run_their_own_interpreter() {
    let registry = TestRegistry::start(None);
    let base = publish_index(&registry, &format!("2.77.0-{}", std::process::id()));
    let repository = format!("{}/platform/result", registry.addr);
    let _cleanup = Forget(vec![
        repository.clone(),
        format!("{}/platform/base", registry.addr),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("pipeline");
    copy_tree(&repo().join("demo/pipeline"), &project);
    let arm = arm64_fixture();
    let req = unique_requirements(
        dir.path(),
        &format!("{}{}\n", demo_requirements_text(), arm.requirement),
    );
    // arm64's wheels: the pure ones staged, numpy's from the loopback index.
    let index = LoopbackIndex::serve(&arm.wheels.join("linux_arm64"));
    let (report, attestations) = (
        dir.path().join("report.json"),
        dir.path().join("attestations"),
    );
    let state = dir.path().join("state");
    let launch = arm64_from_index(
        two_platforms(&base, &repository, &req, &project, &state),
        &index,
    )
    .arg("--report")
    .arg(&report)
    .arg("--attestations-dir")
    .arg(&attestations);

    let started = std::time::Instant::now();
    let o = launch.run();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let first = json(&o);
    eprintln!(
        "two-platform cold build: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // The index was asked with the credentials, for numpy only, once.
    let asked = index.requests();
    assert!(asked.iter().all(|r| r.starts_with("auth ")), "{asked:?}");
    assert!(
        asked.contains(&"auth /simple/numpy/".to_string()),
        "{asked:?}"
    );
    let downloads = |asked: &[String]| asked.iter().filter(|r| r.contains("/files/")).count();
    assert_eq!(downloads(&asked), 1, "{asked:?}");
    assert!(
        asked.iter().any(|r| r.contains("manylinux_2_17_aarch64")),
        "{asked:?}"
    );
    // ... and its password is in no output, report or attestation.
    no_password("stdout", &String::from_utf8_lossy(&o.stdout));
    no_password("stderr", &stderr(&o));
    no_password("the report", &std::fs::read_to_string(&report).unwrap());
    for entry in walk(&attestations) {
        no_password(
            &entry.display().to_string(),
            &String::from_utf8_lossy(&std::fs::read(&entry).unwrap()),
        );
    }
    let index_digest = first["digest"].as_str().unwrap().to_string();
    assert_eq!(
        first["sdk_container_image"],
        format!("{repository}@{index_digest}")
    );
    assert!(
        first["image_id"].is_null(),
        "an index has no image id: {first}"
    );
    let (digest, body, _) = manifest(&registry.addr, "platform/result", &index_digest);
    assert_eq!(digest, index_digest);
    let stored: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        stored["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let platforms = first["platforms"].as_array().unwrap();
    assert_eq!(platforms.len(), 2);
    for (i, (platform, machine)) in [("linux/amd64", "x86_64"), ("linux/arm64", "aarch64")]
        .into_iter()
        .enumerate()
    {
        let p = &platforms[i];
        assert_eq!(p["platform"], platform);
        assert_eq!(stored["manifests"][i]["digest"], p["digest"]);
        assert_eq!(
            stored["manifests"][i]["platform"]["architecture"],
            platform.rsplit('/').next().unwrap()
        );
        let layers = platform_layers(&first, platform);
        assert!(
            layers.iter().all(|(_, c)| c == "miss"),
            "{platform}: {layers:?}"
        );
        let image = format!("{repository}@{}", p["digest"].as_str().unwrap());
        assert_eq!(runs_as(&image, platform), format!("{machine} 2.2.6 -"));
        no_password(
            "the image config",
            &docker_ok(&["image", "inspect", &image]),
        );
        no_password(
            "the image history",
            &docker_ok(&["history", "--no-trunc", &image]),
        );
    }
    // The two platforms' dependency layers are two images (their own keys).
    assert_ne!(platforms[0]["image"], platforms[1]["image"]);

    // The same inputs built directly: no engine answers, nothing emulated;
    // each platform's image equals the engine's by issue 19's oracle.
    let venv = Fixtures::load().venv_python;
    // arm64's wheels from its directory: the same bytes the engine build
    // fetched from the index, so the same inputs.
    let no_engine = |state: &str, builder: &str| {
        arm64_from_dir(two_platforms(
            &base,
            &repository,
            &req,
            &project,
            &dir.path().join(state),
        ))
        .env("DOCKER_HOST", NOWHERE)
        .args(["--builder", builder, "--launch-python"])
        .arg(&venv)
    };
    let direct = |state: &str| no_engine(state, "direct");
    // No engine and no --platform: the base's platforms are listed.
    let o = Build::new(&base)
        .env("DOCKER_HOST", NOWHERE)
        .args(["--builder", "direct"])
        .repository(&repository)
        .requirements(&req)
        .push()
        .run();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = error_object(&o);
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("linux/amd64, linux/arm64"),
        "{e}"
    );
    assert!(e["hint"].as_str().unwrap().contains("--platform"), "{e}");
    let started = std::time::Instant::now();
    let built = direct("direct-cold").ok();
    eprintln!(
        "two-platform direct cold build: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(built["builder"], "direct");
    let compiled_by = launch_python_version(&venv);
    for (i, platform) in ["linux/amd64", "linux/arm64"].into_iter().enumerate() {
        let d = &built["platforms"][i];
        assert_eq!(d["platform"], platform);
        let layers = platform_layers(&built, platform);
        assert!(
            layers.iter().all(|(_, c)| c == "miss"),
            "{platform}: {layers:?}"
        );
        let engine = format!("{repository}@{}", platforms[i]["digest"].as_str().unwrap());
        let direct = format!("{repository}@{}", d["digest"].as_str().unwrap());
        assert_equivalent_on(&engine, &direct, platform, &compiled_by);
    }
    // Each platform's SBOMs and provenance are attached to its manifest, and
    // found from the index: verify and sbom follow it to this machine's image.
    let index_ref = format!("{repository}@{}", built["digest"].as_str().unwrap());
    let o = run(prebuilder().args(["verify", "--format", "json", &index_ref]));
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    let verdict = json(&o);
    assert_eq!(
        verdict["digest"], built["platforms"][0]["digest"],
        "{verdict}"
    );
    let o = run(prebuilder().args(["sbom", &index_ref]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("numpy"),
        "the amd64 image's SBOM"
    );

    // A relaunch: every layer of every platform found, the same index; the
    // wheel is not downloaded again (kept under the state dir by digest).
    let again = launch.ok();
    assert_eq!(again["cached"], true, "{again}");
    assert_eq!(again["digest"], index_digest.as_str());
    assert_eq!(downloads(&index.requests()), 1);

    // The same wheels staged for arm64 instead: the same keys (fetched
    // wheels enter them by content), the index not asked. From here on.
    let launch = arm64_from_dir(two_platforms(&base, &repository, &req, &project, &state));
    let asked = index.requests().len();

    // A code change: only each platform's application layer is rebuilt.
    let transforms = project.join("demo_pipeline/transforms.py");
    let code = std::fs::read_to_string(&transforms).unwrap();
    std::fs::write(&transforms, format!("{code}\nPLATFORM_MARK = 'changed'\n")).unwrap();
    let started = std::time::Instant::now();
    let changed = launch.ok();
    eprintln!(
        "two-platform code change: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_ne!(changed["digest"], index_digest.as_str());
    assert_eq!(index.requests().len(), asked, "the index was asked again");
    for (platform, machine) in [("linux/amd64", "x86_64"), ("linux/arm64", "aarch64")] {
        let layers = platform_layers(&changed, platform);
        assert_eq!(
            layers[0],
            ("dependencies".into(), "hit".into()),
            "{platform}"
        );
        assert_eq!(
            layers[1],
            ("application".into(), "miss".into()),
            "{platform}"
        );
        let p = changed["platforms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["platform"] == platform)
            .unwrap();
        let image = format!("{repository}@{}", p["digest"].as_str().unwrap());
        assert_eq!(
            runs_as(&image, platform),
            format!("{machine} 2.2.6 changed")
        );
    }

    // Directly, on a fresh runner (no engine, no state): the same code
    // change rebuilds only each platform's application layer.
    let code = direct("direct-code").ok();
    for platform in ["linux/amd64", "linux/arm64"] {
        let layers = platform_layers(&code, platform);
        let caches: Vec<&str> = layers.iter().map(|(_, c)| c.as_str()).collect();
        assert_eq!(caches, ["registry", "miss"], "{platform}");
    }
    assert_ne!(code["digest"], built["digest"]);
    // And another fresh runner with no engine (`--builder auto`): a registry
    // hit for the whole index, nothing pulled.
    let o = no_engine("direct-fresh", "auto")
        .args(["--progress", "json"])
        .run();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let hit = json(&o);
    assert_eq!(
        hit["builder"], "direct",
        "auto with no engine builds directly"
    );
    assert_eq!(hit["digest"], code["digest"]);
    assert_eq!(hit["cached"], true);
    for platform in ["linux/amd64", "linux/arm64"] {
        let layers = platform_layers(&hit, platform);
        assert!(
            layers.iter().all(|(_, c)| c == "registry"),
            "{platform}: {layers:?}"
        );
    }
    let seen = events(&o);
    let nothing = seen
        .iter()
        .filter(|e| e["event"] == "nothing_pulled")
        .count();
    assert_eq!(nothing, 2, "one per platform: {seen:?}");

    // A fresh runner (nothing of the result or the bases on its engine): the
    // whole index is a registry hit, and nothing is pulled for any platform.
    forget_references(&repository);
    forget_references(&format!("{}/platform/base", registry.addr));
    let o = launch.clone().args(["--progress", "json"]).run();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let fresh = json(&o);
    assert_eq!(fresh["digest"], changed["digest"]);
    assert_eq!(fresh["cached"], true);
    for platform in ["linux/amd64", "linux/arm64"] {
        let layers = platform_layers(&fresh, platform);
        assert!(
            layers.iter().all(|(_, c)| c == "registry"),
            "{platform}: {layers:?}"
        );
    }
    let seen = events(&o);
    let nothing = seen
        .iter()
        .filter(|e| e["event"] == "nothing_pulled")
        .count();
    assert_eq!(nothing, 2, "one per platform: {seen:?}");
    assert!(!seen.iter().any(|e| e["event"] == "pulling"), "{seen:?}");
}

/// A base with one arm64 image and no layers (its config and manifest put
/// with curl): enough for prebuilder to learn its platform.
fn arm64_only_base(registry: &TestRegistry) -> String {
    let config = br#"{"architecture":"arm64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#;
    let digest = format!("sha256:{}", sha256_hex(config));
    let o = run(std::process::Command::new("curl").args([
        "-s",
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-X",
        "POST",
        &format!(
            "http://{}/v2/platform/arm-only/blobs/uploads/",
            registry.addr
        ),
    ]));
    let head = String::from_utf8_lossy(&o.stdout).to_string();
    let location = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("Location: ")
                .or_else(|| l.strip_prefix("location: "))
        })
        .expect("an upload location")
        .trim()
        .to_string();
    let sep = if location.contains('?') { '&' } else { '?' };
    let url = if location.starts_with("http") {
        location
    } else {
        format!("http://{}{location}", registry.addr)
    };
    let o = run(std::process::Command::new("curl").args([
        "-sf",
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        std::str::from_utf8(config).unwrap(),
        &format!("{url}{sep}digest={digest}"),
    ]));
    assert!(o.status.success(), "config blob: {}", stderr(&o));
    let m = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": config.len()},
        "layers": [],
    });
    let o = run(std::process::Command::new("curl").args([
        "-sf",
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/vnd.oci.image.manifest.v1+json",
        "--data-binary",
        &m.to_string(),
        &format!("http://{}/v2/platform/arm-only/manifests/1", registry.addr),
    ]));
    assert!(o.status.success(), "manifest: {}", stderr(&o));
    format!("{}/platform/arm-only:1", registry.addr)
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn platforms_the_base_or_the_wheels_cannot_serve_are_refused_before_any_work() {
    let registry = TestRegistry::start(None);
    let base = arm64_only_base(&registry);
    let repository = format!("{}/platform/refused", registry.addr);
    let dir = tempfile::tempdir().unwrap();
    let arm = arm64_fixture();
    let with_numpy = unique_requirements(
        dir.path(),
        &format!("{}{}\n", demo_requirements_text(), arm.requirement),
    );
    let amd64_wheels = arm.wheels.join("linux_amd64");
    // The package index pip's configuration names has only amd64 wheels.
    let index = LoopbackIndex::serve(&amd64_wheels);
    let refused = |platforms: &str, req: &Path| {
        let o = Build::new(&base)
            .args(["--platform", platforms])
            .repository(&repository)
            .requirements(req)
            .cache(&amd64_wheels)
            .env("PIP_CONFIG_FILE", "/dev/null")
            .env("PIP_INDEX_URL", index.url())
            .push()
            .run();
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        no_password("stdout", &String::from_utf8_lossy(&o.stdout));
        no_password("stderr", &stderr(&o));
        let e = error_object(&o);
        (
            e["error"].as_str().unwrap().to_string(),
            e["hint"].as_str().unwrap().to_string(),
        )
    };
    let containers = setup_containers().len();

    // Only amd64 wheels, staged and on the index: numpy has none for arm64.
    let (error, hint) = refused("linux/amd64,linux/arm64", &with_numpy);
    assert!(
        error.contains("linux/arm64") && error.contains("numpy==2.2.6"),
        "{error}"
    );
    assert!(
        error.contains(&format!("asked: {}", index.shown())),
        "{error}"
    );
    assert!(hint.contains("--requirements-cache linux/arm64="), "{hint}");
    let asked = index.requests();
    assert_eq!(asked, ["auth /simple/numpy/"], "nothing downloaded");

    // A platform the base lacks, listing those it has.
    let pure = unique_requirements(dir.path(), &demo_requirements_text());
    let (error, _) = refused("linux/amd64", &pure);
    assert!(
        error.contains("has no linux/amd64 image") && error.contains("linux/arm64"),
        "{error}"
    );

    // A platform this machine has no emulation for: the engine's probe says.
    if !Path::new("/proc/sys/fs/binfmt_misc/qemu-s390x").exists() {
        let (error, hint) = refused("linux/arm64,linux/s390x", &pure);
        assert!(
            error.contains("cannot run linux/s390x containers"),
            "{error}"
        );
        assert!(hint.contains("qemu-user-static"), "{hint}");
    }
    assert_eq!(
        setup_containers().len(),
        containers,
        "no setup container was made"
    );
    let leftovers = docker_ok(&["images", "prebuilder-probe", "--format", "{{.Tag}}"]);
    assert!(
        leftovers.trim().is_empty(),
        "probe images removed: {leftovers}"
    );
}

/// Beam's own SDK wheel for the fixtures' launch (x86_64), from the
/// fixtures' Beam wheels.
fn beam_sdk_wheel() -> PathBuf {
    let cache = std::env::var("PREBUILDER_FIXTURE_CACHE")
        .unwrap_or_else(|_| "/var/cache/prebuilder-fixtures".into());
    let dir = Path::new(&cache).join("wheels/beam");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; run make fixtures", dir.display()))
        .map(|e| e.unwrap().path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            name.starts_with("apache_beam-2.77.0-") && name.ends_with("x86_64.whl")
        })
        .expect("the fixtures' apache_beam 2.77.0 wheel")
}

/// Beam's boot installs only its x86_64 SDK wheel name: an arm64 build on
/// the engine leaves the staged SDK out and uses the base's own apache-beam
/// when it is the staged wheel's version, or is refused before pip runs,
/// naming both versions and the platform. The arm64 fixture base (on the
/// engine) has apache-beam 2.77.0.
#[test]
fn an_arm64_build_uses_the_base_s_apache_beam_for_the_staged_sdk_or_is_refused() {
    let arm = arm64_fixture();
    let dir = tempfile::tempdir().unwrap();
    let repository = format!("prebuilder-test/sdk-arm64-{}", std::process::id());
    let _cleanup = Forget(vec![repository.clone()]);
    let wheels = arm.wheels.join("linux_arm64");
    let req = unique_requirements(dir.path(), "tabulate==0.9.0\n");
    let sdk = beam_sdk_wheel();
    // The same bytes under another version's name: the name decides.
    let newer = dir
        .path()
        .join("apache_beam-2.78.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl");
    std::fs::copy(&sdk, &newer).unwrap();
    let build = |sdk: &Path| {
        Build::new(&arm.image)
            .args(["--platform", "linux/arm64"])
            .repository(&repository)
            .requirements(&req)
            .cache(&wheels)
            .arg("--sdk-location")
            .arg(sdk)
            .env("PIP_CONFIG_FILE", "/dev/null")
            .env("PREBUILDER_STATE_DIR", dir.path().join("state"))
    };
    let started = std::time::Instant::now();
    let o = build(&newer).run();
    assert_ne!(o.status.code(), Some(0), "{}", stderr(&o));
    let e = error_object(&o);
    let error = e["error"].as_str().unwrap();
    assert!(
        error.contains("linux/arm64: the base's apache-beam is 2.77.0, not 2.78.0"),
        "{e}"
    );
    assert!(!stderr(&o).contains("tabulate"), "refused before pip ran");
    eprintln!(
        "arm64 SDK refusal: {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let started = std::time::Instant::now();
    let o = build(&sdk).run();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let report = json(&o);
    assert!(
        stderr(&o).contains("linux/arm64: the base's own apache-beam 2.77.0 is used"),
        "{}",
        stderr(&o)
    );
    assert_eq!(report["sdk"]["source"], "base", "{report}");
    assert_eq!(report["sdk"]["version"], "2.77.0", "{report}");
    assert_eq!(
        report["sdk"]["left_out"].as_str(),
        sdk.file_name().unwrap().to_str()
    );
    let image = report["image"].as_str().unwrap();
    let shown = docker_ok(&[
        "run",
        "--rm",
        "--platform",
        "linux/arm64",
        "--network",
        "none",
        "--entrypoint",
        "python3",
        image,
        "-c",
        "import platform, tabulate; from importlib.metadata import version; print(platform.machine(), version('apache-beam'))",
    ]);
    assert_eq!(shown.trim(), "aarch64 2.77.0");
    eprintln!(
        "arm64 build on the base's SDK: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// `--platform linux/arm64` on Podman 4.3 through its Docker-compatible API
/// (which ignores `platform` on `/containers/create`: the container runs the
/// image's own architecture, here arm64 under qemu-user): the probe runs, the
/// arm64 base loaded into Podman is used, the image records arm64 and runs
/// `uname -m` = aarch64 and numpy; a relaunch finds it; a platform with no
/// emulation is refused by the probe, on Podman, before any setup container.
/// The fixture base's history entries carry no date, which Podman 4.3's
/// history endpoint cannot show (it answers 500): said, and built on anyway.
#[test]
fn podman_platform_builds_an_arm64_image_that_runs_under_emulation() {
    let arm = arm64_fixture();
    let podman = Engine::podman().start();
    podman.load_from_main(&arm.image);
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("pipeline");
    copy_tree(&repo().join("demo/pipeline"), &project);
    let with_numpy = unique_requirements(
        dir.path(),
        &format!("{}{}\n", demo_requirements_text(), arm.requirement),
    );
    let repository = format!("prebuilder-test/podman-platform-{}", std::process::id());
    let on_podman = |platform: &str, req: &Path| {
        Build::new(&arm.image)
            .args(["--platform", platform])
            .repository(&repository)
            .requirements(req)
            .cache(arm.wheels.join("linux_arm64"))
            .setup_file(&project)
            .env("PIP_CONFIG_FILE", "/dev/null")
            .env("PREBUILDER_STATE_DIR", dir.path().join("state"))
            .host(&podman.host())
    };

    let started = std::time::Instant::now();
    let o = on_podman("linux/arm64", &with_numpy).run();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    eprintln!(
        "arm64 build on Podman: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        stderr(&o).contains("Podman cannot show the history of"),
        "{}",
        stderr(&o)
    );
    let first = json(&o);
    assert_eq!(first["cached"], false);
    let image = first["image"].as_str().unwrap();
    assert!(image.starts_with(&format!("{repository}:")), "{image}");
    for (name, _, id) in layers(&first) {
        let platform =
            podman.docker_ok(&["image", "inspect", "-f", "{{.Os}}/{{.Architecture}}", &id]);
        assert_eq!(platform, "linux/arm64", "layer {name} ({id})");
    }
    let ran = podman.docker_ok(&[
        "run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c",
        "uname -m && python -c 'import numpy, slugify, demo_pipeline.transforms; print(numpy.__version__)'",
    ]);
    let numpy = arm.requirement.rsplit("==").next().unwrap();
    assert_eq!(ran.lines().collect::<Vec<_>>(), ["aarch64", numpy], "{ran}");
    // The base's layer keeps an entry of its own in the image's history.
    let comments = podman.docker_ok(&["history", "--format", "{{.Comment}}", image]);
    assert!(
        comments.contains("not readable through Podman's API"),
        "{comments}"
    );

    // A relaunch finds the image on Podman.
    let again = on_podman("linux/arm64", &with_numpy).ok();
    assert_eq!(again["cached"], true);
    assert_eq!(again["image_id"], first["image_id"]);

    // No emulation for s390x here: Podman's own probe says so, first.
    if !Path::new("/proc/sys/fs/binfmt_misc/qemu-s390x").exists() {
        let pure = unique_requirements(dir.path(), &demo_requirements_text());
        let o = on_podman("linux/s390x", &pure).run();
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let error = error_object(&o)["error"].as_str().unwrap().to_string();
        assert!(
            error.contains("cannot run linux/s390x containers"),
            "{error}"
        );
    }
    let left = podman.docker_ok(&["ps", "-aq"]);
    assert!(left.is_empty(), "containers left on Podman: {left}");
    let probes = podman.docker_ok(&["images", "-q", "--filter", "label=prebuilder=probe"]);
    assert!(probes.is_empty(), "probe images left on Podman: {probes}");
}
