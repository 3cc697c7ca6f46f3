//! Shared harness: fixture locations, running the binary and docker, and
//! guards that remove what a test created even when it fails.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Fixtures {
    pub python_image: String,
    pub beam_image: String,
    pub demo_wheels: PathBuf,
    pub venv_python: PathBuf,
}

impl Fixtures {
    pub fn load() -> Fixtures {
        let cache = std::env::var("PREBUILDER_FIXTURE_CACHE")
            .unwrap_or_else(|_| "/var/cache/prebuilder-fixtures".into());
        let path = Path::new(&cache).join("fixtures.env");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run `make fixtures` first", path.display()));
        let vars: HashMap<String, String> = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| {
                (
                    k.trim().to_string(),
                    v.trim().trim_matches('"').trim_matches('\'').to_string(),
                )
            })
            .collect();
        let get = |k: &str| {
            vars.get(k)
                .cloned()
                .unwrap_or_else(|| panic!("{} lacks {k}", path.display()))
        };
        Fixtures {
            python_image: get("FIXTURE_PYTHON_IMAGE"),
            beam_image: get("FIXTURE_BEAM_IMAGE"),
            demo_wheels: get("FIXTURE_DEMO_WHEELS").into(),
            venv_python: get("FIXTURE_BEAM_VENV_PYTHON").into(),
        }
    }

    /// A staging context written by real apache-beam's `_prepare_dependencies`.
    pub fn beam_context(&self, out: &Path, args: &[&str]) {
        let script = repo().join("integration/fixtures/beam_context.py");
        let o = Command::new(&self.venv_python)
            .arg(script)
            .arg("--out")
            .arg(out)
            .args(args)
            .output()
            .expect("run beam_context.py");
        assert!(
            o.status.success(),
            "beam_context.py failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(out.join("artifacts_info.json").is_file());
    }
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn demo_requirements() -> PathBuf {
    repo().join("demo/requirements.txt")
}

pub fn demo_setup() -> PathBuf {
    repo().join("demo/pipeline/setup.py")
}

/// The engine the tests run against: `DOCKER_HOST`, or the default socket.
pub fn main_host() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| prebuilder::engine::endpoint::DEFAULT_HOST.to_string())
}

pub fn prebuilder() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_prebuilder"));
    c.env_remove("PREBUILDER_LOG");
    c
}

thread_local! {
    /// pids of the prebuilder processes this test (thread) started: setup
    /// containers are named `prebuilder-setup-<layer>-<key>-<pid>`, so leftover
    /// checks see only this test's containers, whatever else uses the engine.
    static PIDS: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Remember a prebuilder process started with `spawn`.
pub fn track(pid: u32) {
    PIDS.with(|p| p.borrow_mut().push(pid));
}

/// `prebuilder build` as the tests run it: `--base BASE --network none
/// --format json`, then every flag in the order it was given. The one place
/// that writes the build's command line; a test states only what differs.
/// Run it as often as needed (`run`, `ok`), or `clone` it to vary a flag.
#[derive(Clone)]
pub struct Build {
    base: String,
    network: String,
    json: bool,
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
}

impl Build {
    pub fn new(base: &str) -> Build {
        Build {
            base: base.to_string(),
            network: "none".into(),
            json: true,
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Build {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    pub fn args<A: AsRef<OsStr>>(self, args: impl IntoIterator<Item = A>) -> Build {
        args.into_iter().fold(self, Build::arg)
    }

    pub fn repository(self, repository: &str) -> Build {
        self.args(["--repository", repository])
    }

    /// `--requirements-file`.
    pub fn requirements(self, file: impl AsRef<OsStr>) -> Build {
        self.arg("--requirements-file").arg(file)
    }

    /// `--requirements-cache`.
    pub fn cache(self, dir: impl AsRef<OsStr>) -> Build {
        self.arg("--requirements-cache").arg(dir)
    }

    pub fn setup_file(self, project: impl AsRef<OsStr>) -> Build {
        self.arg("--setup-file").arg(project)
    }

    pub fn context(self, dir: impl AsRef<OsStr>) -> Build {
        self.arg("--context").arg(dir)
    }

    pub fn tag(self, tag: &str) -> Build {
        self.args(["--tag", tag])
    }

    pub fn push(self) -> Build {
        self.arg("--push")
    }

    /// The setup container's `--network` (instead of `none`).
    pub fn network(mut self, mode: &str) -> Build {
        self.network = mode.to_string();
        self
    }

    /// The text report on stdout (no `--format json`).
    pub fn text(mut self) -> Build {
        self.json = false;
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Build {
        self.env
            .push((key.into(), Some(value.as_ref().to_os_string())));
        self
    }

    pub fn env_remove(mut self, key: &str) -> Build {
        self.env.push((key.into(), None));
        self
    }

    /// The engine at `host` (`DOCKER_HOST`).
    pub fn host(self, host: &str) -> Build {
        self.env("DOCKER_HOST", host)
    }

    /// The docker CLI configuration directory (`DOCKER_CONFIG`).
    pub fn docker_config(self, dir: &Path) -> Build {
        self.env("DOCKER_CONFIG", dir)
    }

    /// The command, to spawn it (`run` and `ok` wait for it).
    pub fn command(&self) -> Command {
        let mut c = prebuilder();
        c.args(["build", "--base", &self.base, "--network", &self.network]);
        if self.json {
            c.args(["--format", "json"]);
        }
        c.args(&self.args);
        for (key, value) in &self.env {
            match value {
                Some(v) => c.env(key, v),
                None => c.env_remove(key),
            };
        }
        c
    }

    /// Run it (see [`run`]).
    pub fn run(&self) -> Output {
        run(&mut self.command())
    }

    /// Run it; it must succeed. Its JSON report.
    pub fn ok(&self) -> serde_json::Value {
        let o = self.run();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        json(&o)
    }
}

pub fn run(c: &mut Command) -> Output {
    let child = c
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    track(child.id());
    let o = child.wait_with_output().expect("wait");
    eprintln!(
        "--- {:?} exited {:?}\n--- stderr:\n{}",
        c,
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("run docker")
}

pub fn docker_ok(args: &[&str]) -> String {
    let o = docker(args);
    assert!(
        o.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Run `python -c CODE` in an image with no network. The container is labelled
/// (it inherits `prebuilder=image` from the image) and removed (`--rm`).
pub fn python_in(image: &str, code: &str) -> Output {
    docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--label",
        "prebuilder.test=1",
        "--entrypoint",
        "python",
        image,
        "-c",
        code,
    ])
}

/// Setup containers that this test's prebuilder processes created and that
/// are still on the engine.
pub fn setup_containers() -> Vec<String> {
    let pids = PIDS.with(|p| p.borrow().clone());
    let out = docker_ok(&[
        "ps",
        "-a",
        "--filter",
        "label=prebuilder",
        "--format",
        "{{.Names}}",
    ]);
    out.lines()
        .filter(|name| pids.iter().any(|pid| name.ends_with(&format!("-{pid}"))))
        .map(str::to_string)
        .collect()
}

/// A repository unique to one test; dropping it untags everything in it, which
/// removes the images no other tag holds.
pub struct TestRepo {
    pub name: String,
}

impl TestRepo {
    pub fn new(test: &str) -> TestRepo {
        let r = TestRepo {
            name: format!("prebuilder-test/{test}-{}", std::process::id()),
        };
        r.clean();
        r
    }

    pub fn tags(&self) -> Vec<String> {
        docker_ok(&["images", &self.name, "--format", "{{.Repository}}:{{.Tag}}"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn clean(&self) {
        for t in self.tags() {
            let _ = docker(&["rmi", &t]);
        }
    }
}

impl Drop for TestRepo {
    fn drop(&mut self) {
        self.clean();
    }
}

pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}",
            String::from_utf8_lossy(&o.stdout)
        )
    })
}

/// stdout of a failed `--format json` run: the error object and nothing
/// else (no report), its `exit_code` the process's.
pub fn error_object(o: &Output) -> serde_json::Value {
    let v = json(o);
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    keys.sort();
    assert_eq!(keys, ["causes", "error", "exit_code", "hint"], "{v}");
    assert_eq!(
        v["exit_code"].as_i64(),
        o.status.code().map(i64::from),
        "{v}"
    );
    v
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Copy a directory tree (the demo project) so a test can change it.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name == "__pycache__" || name.to_string_lossy().ends_with(".egg-info") {
            continue;
        }
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(&name));
        } else {
            std::fs::copy(e.path(), to.join(&name)).unwrap();
        }
    }
}

/// `(layer name, cache outcome, layer image id)` of a report.
pub fn layers(report: &serde_json::Value) -> Vec<(String, String, String)> {
    report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap().to_string(),
                l["cache"].as_str().unwrap().to_string(),
                l["image_id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A copy of `requirements` with a comment unique to this call, so its keys
/// are new: a test that asserts a build (a miss) must not find the image of
/// another test, an earlier run or `make demo`. pip and Beam skip comments.
pub fn unique_requirements(dir: &Path, requirements: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let path = dir.join(format!("requirements-{n}.txt"));
    std::fs::write(
        &path,
        format!(
            "# prebuilder test {}-{nanos}-{n}\n{requirements}",
            std::process::id()
        ),
    )
    .unwrap();
    path
}

pub fn demo_requirements_text() -> String {
    std::fs::read_to_string(demo_requirements()).unwrap()
}

/// A real registry (Debian's `docker-registry`) on a free 127.0.0.1 port,
/// optionally with htpasswd auth; stopped and deleted on drop.
pub struct TestRegistry {
    pub addr: String,
    child: std::process::Child,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestRegistry {
    pub fn start(user: Option<(&str, &str)>) -> TestRegistry {
        Self::start_with(user, false)
    }

    /// `read_only`: the registry answers reads and refuses every write.
    pub fn start_with(user: Option<(&str, &str)>, read_only: bool) -> TestRegistry {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n",
            dir.path().join("data").display()
        );
        if read_only {
            config.push_str("  maintenance:\n    readonly:\n      enabled: true\n");
        }
        config.push_str(&format!("http:\n  addr: {addr}\n"));
        if let Some((u, p)) = user {
            let out = Command::new("htpasswd")
                .args(["-Bbn", u, p])
                .output()
                .expect("htpasswd (apache2-utils)");
            assert!(out.status.success());
            std::fs::write(dir.path().join("htpasswd"), out.stdout).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: prebuilder-test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let child = spawn_registry(&config_path);
        wait_for_port(&addr);
        registries().insert(addr.clone(), dir.path().join("data"));
        TestRegistry {
            addr,
            child,
            config: config_path,
            _dir: dir,
        }
    }

    /// Restart on the same port and storage, read-only or not.
    pub fn restart(&mut self, read_only: bool) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let text = std::fs::read_to_string(&self.config).unwrap();
        let ro = "  maintenance:\n    readonly:\n      enabled: true\n";
        let text = if read_only && !text.contains(ro) {
            text.replace("http:\n", &format!("{ro}http:\n"))
        } else if !read_only {
            text.replace(ro, "")
        } else {
            text
        };
        std::fs::write(&self.config, text).unwrap();
        self.child = spawn_registry(&self.config);
        wait_for_port(&self.addr);
    }

    /// The manifest digest the registry itself reports for `path:tag`.
    pub fn digest(&self, path: &str, tag: &str, user: Option<(&str, &str)>) -> Option<String> {
        manifest_digest(&self.addr, path, tag, user)
    }
}

/// The digest the registry at `addr` reports for `path:tag`, whichever
/// manifest format was pushed (prebuilder pushes OCI manifests; a registry
/// answers "unknown" for an OCI manifest to a client that does not accept one).
pub fn manifest_digest(
    addr: &str,
    path: &str,
    tag: &str,
    user: Option<(&str, &str)>,
) -> Option<String> {
    let mut c = Command::new("curl");
    c.args([
        "-sI",
        "-H",
        "Accept: application/vnd.docker.distribution.manifest.v2+json",
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json",
    ]);
    if let Some((u, p)) = user {
        c.args(["-u", &format!("{u}:{p}")]);
    }
    let out = c
        .arg(format!("http://{addr}/v2/{path}/manifests/{tag}"))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("docker-content-digest:")
            .map(|d| d.trim().to_string())
    })
}

fn spawn_registry(config: &Path) -> std::process::Child {
    Command::new("docker-registry")
        .arg("serve")
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("docker-registry (run `make fixtures`)")
}

fn wait_for_port(addr: &str) {
    for _ in 0..100 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("registry on {addr} did not start");
}

impl TestRegistry {
    /// The registry's storage root (`docker/registry/v2/…` under it).
    pub fn storage(&self) -> PathBuf {
        self._dir.path().join("data")
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        registries().remove(&self.addr);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Remove every local image tagged in `repo` (all their tags), as if this
/// machine had never built them.
pub fn forget_local(repo: &str) {
    let ids = docker_ok(&["images", repo, "--format", "{{.ID}}"]);
    let mut ids: Vec<&str> = ids.lines().collect();
    ids.sort_unstable();
    ids.dedup();
    // Two passes: a layer with a child still on the engine goes in the second.
    for _ in 0..2 {
        for id in &ids {
            let _ = docker(&["rmi", "-f", id]);
        }
    }
}

/// The events of a run with `--progress json`: each stderr line that is a
/// JSON object (machines read these, never the English words).
pub fn events(o: &Output) -> Vec<serde_json::Value> {
    stderr(o)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.is_object())
        .collect()
}

/// Whether `events` hold an `event` whose fields include `fields` (a JSON
/// object; `{}` matches any event of that name).
pub fn saw(events: &[serde_json::Value], event: &str, fields: serde_json::Value) -> bool {
    events.iter().any(|e| {
        e["event"] == event
            && fields
                .as_object()
                .is_none_or(|f| f.iter().all(|(k, v)| &e[k] == v))
    })
}

/// The registries this process started ([`TestRegistry`]): address → storage
/// root, for [`publish`].
fn registries() -> std::sync::MutexGuard<'static, HashMap<String, PathBuf>> {
    static REGISTRIES: std::sync::OnceLock<std::sync::Mutex<HashMap<String, PathBuf>>> =
        std::sync::OnceLock::new();
    REGISTRIES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// The fixture cache (`PREBUILDER_FIXTURE_CACHE`).
pub fn fixture_cache() -> PathBuf {
    std::env::var("PREBUILDER_FIXTURE_CACHE")
        .unwrap_or_else(|_| "/var/cache/prebuilder-fixtures".into())
        .into()
}

/// Put `image` (on the main engine) into a registry as `reference`
/// (`ADDR/PATH:TAG`), as `docker push` would, and leave no local tag of
/// `reference`. For a [`TestRegistry`] of this process, the registry's storage
/// gets the files of one real `docker push` of that image id, made once per
/// machine into `$PREBUILDER_FIXTURE_CACHE/registry-seeds/` (the blobs
/// hard-linked, the repository's links written under PATH and TAG): the same
/// blobs, manifest and digest as a push, in a second instead of the ~50 s of
/// compressing and uploading a 640 MB base every time. The engine knows those
/// blobs (it pushed them), so pulling the reference back downloads nothing,
/// as after a push. Any other registry, or no seed: `docker push` (with the
/// docker CLI configuration `config`).
pub fn publish(image: &str, reference: &str, config: Option<&Path>) {
    if let Some((storage, path, tag)) = own_registry(reference) {
        if let Some(seed) = registry_seed(image) {
            copy_seed(&seed, &storage, &path, &tag);
            return;
        }
    }
    docker_push(image, reference, config);
}

/// `docker tag IMAGE REFERENCE`, `docker push`, then the tag removed.
fn docker_push(image: &str, reference: &str, config: Option<&Path>) {
    docker_ok(&["tag", image, reference]);
    let mut args = Vec::new();
    if let Some(c) = config {
        args.extend(["--config".to_string(), c.display().to_string()]);
    }
    args.extend(["push".to_string(), reference.to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = docker(&args);
    let _ = docker(&["rmi", reference]);
    assert!(
        o.status.success(),
        "push {reference}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `reference` in a registry this process started: its storage, path and tag.
fn own_registry(reference: &str) -> Option<(PathBuf, String, String)> {
    let (addr, rest) = reference.split_once('/')?;
    let (path, tag) = rest.rsplit_once(':')?;
    if path.contains('@') || tag.contains('/') {
        return None;
    }
    let storage = registries().get(addr)?.clone();
    Some((storage, path.to_string(), tag.to_string()))
}

const SEED_PATH: &str = "seed/image";
const SEED_TAG: &str = "seed";

/// The storage root of a registry holding `image` as `seed/image:seed`,
/// pushed there by the main engine once per machine and image id; `None`
/// when the cache cannot hold it.
fn registry_seed(image: &str) -> Option<PathBuf> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let id = docker_ok(&["image", "inspect", "--format", "{{.Id}}", image]);
    let hex = id.trim_start_matches("sha256:");
    let seeds = fixture_cache().join("registry-seeds");
    let seed = seeds.join(hex);
    if seed.join("ready").is_file() {
        return Some(seed);
    }
    std::fs::create_dir_all(&seeds).ok()?;
    let tmp = tempfile::Builder::new()
        .prefix(".seed-")
        .tempdir_in(&seeds)
        .ok()?;
    let started = std::time::Instant::now();
    let registry = SeedRegistry::start(&tmp.path().join("data"));
    docker_push(
        image,
        &format!("{}/{SEED_PATH}:{SEED_TAG}", registry.addr),
        None,
    );
    drop(registry);
    std::fs::write(tmp.path().join("image"), format!("{image} {id}\n")).ok()?;
    std::fs::write(tmp.path().join("ready"), "").ok()?;
    let tmp = tmp.keep();
    // Another process may have made it meanwhile: theirs stays.
    if std::fs::rename(&tmp, &seed).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    forget_older_seeds(&seeds, image, hex);
    eprintln!(
        "registry seed of {image} ({hex}) pushed into {} in {:.1} s",
        seed.display(),
        started.elapsed().as_secs_f64()
    );
    seed.join("ready").is_file().then_some(seed)
}

/// The seeds of earlier ids of `image` (a fixture rebuilt since) removed.
fn forget_older_seeds(seeds: &Path, image: &str, hex: &str) {
    let Ok(entries) = std::fs::read_dir(seeds) else {
        return;
    };
    for e in entries.flatten() {
        let named = std::fs::read_to_string(e.path().join("image")).unwrap_or_default();
        if e.file_name() != hex && named.split_whitespace().next() == Some(image) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A registry on `storage` with no auth, for making a seed; stopped on drop.
struct SeedRegistry {
    addr: String,
    child: std::process::Child,
}

impl SeedRegistry {
    fn start(storage: &Path) -> SeedRegistry {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        std::fs::create_dir_all(storage).unwrap();
        let config = storage.with_file_name("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                storage.display()
            ),
        )
        .unwrap();
        let child = spawn_registry(&config);
        wait_for_port(&addr);
        SeedRegistry { addr, child }
    }
}

impl Drop for SeedRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The seed's blobs hard-linked (copied across file systems) into the
/// registry storage `storage`, and its repository's links written as `path`
/// with the tag `tag` (merged with what `path` already holds).
fn copy_seed(seed: &Path, storage: &Path, path: &str, tag: &str) {
    let v2 = |root: &Path| root.join("docker/registry/v2");
    let from = v2(&seed.join("data"));
    let to = v2(storage);
    link_tree(&from.join("blobs"), &to.join("blobs"), true);
    let repo_from = from.join("repositories").join(SEED_PATH);
    let repo_to = to.join("repositories").join(path);
    for part in ["_layers", "_manifests/revisions"] {
        link_tree(&repo_from.join(part), &repo_to.join(part), false);
    }
    let tag_dir = repo_to.join("_manifests/tags").join(tag);
    let _ = std::fs::remove_dir_all(&tag_dir);
    link_tree(
        &repo_from.join("_manifests/tags").join(SEED_TAG),
        &tag_dir,
        false,
    );
}

/// Every file under `from` put at the same place under `to` (kept when it is
/// there already): hard-linked when `link` (copied when that fails), else copied.
fn link_tree(from: &Path, to: &Path, link: bool) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("{}: {e}", to.display()));
    for e in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let e = e.unwrap();
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type().unwrap().is_dir() {
            link_tree(&src, &dst, link);
        } else if dst.exists() || (link && std::fs::hard_link(&src, &dst).is_ok()) {
            continue;
        } else {
            std::fs::copy(&src, &dst)
                .unwrap_or_else(|e| panic!("{} -> {}: {e}", src.display(), dst.display()));
        }
    }
}
