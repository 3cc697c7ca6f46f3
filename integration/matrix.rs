//! The engine matrix (issue 23): the Docker versions users run, each from
//! Debian packages (`integration/fixtures/engines.sh`), started once per
//! test by `engine.sh` and stopped by its pid:
//! - Docker 28 (Debian unstable, containerd 2.1) with the containerd image
//!   store, the default of new Docker Engine 29 installs and Docker Desktop:
//!   cold build, unchanged relaunch, code-only change, gc, push, a registry
//!   hit on the engine emptied, and the image runs the pipeline offline;
//! - Docker 26 (Debian 13, containerd 1.7) with the containerd store and
//!   Docker 28 with the classic store: build, push, run.
//!
//! Docker 20.10 (this machine's) runs every other integration test; Podman
//! 4.3 runs `engines::podman_builds_correct_images_reuses_them_and_pushes`.
//! Every engine here builds the same inputs on the same base as the main
//! engine, and must give the same config digest (the image id the report
//! gives; the containerd store's own id is a manifest digest) and the same
//! pushed digest ([`same_as_docker_20`]), in one test
//! ([`every_engine_builds_the_same_image_as_docker_20`]).
//!
//! The base comes from a loopback registry (pushed there from the main
//! engine), as on a CI runner: the engines pull it. The snapshotters are
//! the fast ones (`overlayfs`, `overlay2`): the copying ones (`native`,
//! `vfs`) take ~30 s to create or remove each container of a 2 GB image here.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Output;

use crate::daemons::Engine;
use crate::support::*;

/// The root of Docker `version`'s Debian packages (`$CACHE/engines.env`).
fn engine_root(version: u32) -> PathBuf {
    let cache = std::env::var("PREBUILDER_FIXTURE_CACHE")
        .unwrap_or_else(|_| "/var/cache/prebuilder-fixtures".into());
    let path = PathBuf::from(cache).join("engines.env");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run `bash integration/fixtures/engines.sh` (part of `make fixtures`)",
            path.display()
        )
    });
    let vars: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    let key = format!("FIXTURE_DOCKER{version}_ROOT");
    PathBuf::from(
        vars.get(key.as_str())
            .unwrap_or_else(|| panic!("{} lacks {key}", path.display())),
    )
}

/// What every engine of a test builds: the demo requirements (a comment
/// unique to the test, so keys are new) and a copy of the demo project, on
/// the fixture base in a loopback registry.
struct Inputs {
    registry: TestRegistry,
    base: String,
    requirements: PathBuf,
    project: PathBuf,
    _dir: tempfile::TempDir,
    _cleanup: Vec<TestRepo>,
}

impl Inputs {
    fn new(name: &str) -> Inputs {
        let fx = Fixtures::load();
        let registry = TestRegistry::start(None);
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("docker-config");
        std::fs::create_dir_all(&config).unwrap();
        let base = format!(
            "{}/prebuilder-test/{name}-base:{}",
            registry.addr,
            std::process::id()
        );
        crate::fresh::publish_base(&fx, &config, &base);
        let project = dir.path().join("pipeline");
        copy_tree(&repo().join("demo/pipeline"), &project);
        let requirements = unique_requirements(dir.path(), &demo_requirements_text());
        let _cleanup = vec![
            TestRepo {
                name: format!("{}/prebuilder-test/{name}-base", registry.addr),
            },
            TestRepo {
                name: self_repo(&registry, "docker-20"),
            },
        ];
        Inputs {
            registry,
            base,
            requirements,
            project,
            _dir: dir,
            _cleanup,
        }
    }

    /// The build of these inputs into `repo` on the engine at `host`.
    fn build(&self, host: &str, repo: &str) -> Build {
        Build::new(&self.base)
            .repository(repo)
            .requirements(&self.requirements)
            .cache(Fixtures::load().demo_wheels)
            .setup_file(&self.project)
            .host(host)
    }

    /// The result repository of engine `name` in the registry.
    fn repo(&self, name: &str) -> String {
        self_repo(&self.registry, name)
    }
}

fn self_repo(registry: &TestRegistry, name: &str) -> String {
    format!("{}/prebuilder-test/matrix-{name}", registry.addr)
}

/// Seconds since `start`, for the timings the test prints.
fn since(start: std::time::Instant) -> String {
    format!("{:.1} s", start.elapsed().as_secs_f64())
}

fn ok(o: &Output) -> serde_json::Value {
    assert_eq!(o.status.code(), Some(0), "{}", stderr(o));
    json(o)
}

/// The engine keeps its images in the containerd store (`/info`'s driver type).
fn assert_containerd_store(engine: &Engine, wanted: bool) {
    let status = engine.docker_ok(&["info", "--format", "{{json .DriverStatus}}"]);
    assert_eq!(
        status.contains("io.containerd.snapshotter.v1"),
        wanted,
        "driver status: {status}"
    );
}

/// The image runs the demo pipeline (Beam's DirectRunner) with no network.
fn runs_the_pipeline_offline(engine: &Engine, image: &str) {
    let out = engine.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "sh",
        image,
        "-c",
        "test ! -e /.prebuilder-snapshot && python -m demo_pipeline.main --output /tmp/t.txt \
         >/dev/null 2>&1 && cat /tmp/t.txt",
    ]);
    assert!(out.contains("hello-world"), "the pipeline's table: {out}");
}

fn no_containers(engine: &Engine) {
    let left = engine.docker_ok(&["ps", "-aq"]);
    assert!(left.is_empty(), "containers left: {left}");
}

/// Docker 20.10's build and push of the inputs (the main engine): what
/// every engine must give.
fn docker_20(inputs: &Inputs) -> serde_json::Value {
    inputs
        .build(&main_host(), &inputs.repo("docker-20"))
        .push()
        .ok()
}

/// `pushed` has the config digest and pushed digest of Docker 20.10's `twin`.
fn same_as_docker_20(twin: &serde_json::Value, pushed: &serde_json::Value, engine: &str) {
    eprintln!(
        "{engine} / Docker 20.10: config digest {} / {}, pushed {} / {}",
        pushed["image_id"], twin["image_id"], pushed["digest"], twin["digest"]
    );
    assert_eq!(
        pushed["image_id"], twin["image_id"],
        "{engine}: same config digest"
    );
    assert_eq!(
        pushed["digest"], twin["digest"],
        "{engine}: same pushed digest"
    );
}

/// The matrix, one registry and one base for every engine (pushing the base
/// there takes ~50 s here); each engine started once and stopped by its pid
/// when its part ends.
#[test]
fn every_engine_builds_the_same_image_as_docker_20() {
    let t = std::time::Instant::now();
    let inputs = Inputs::new("matrix");
    let twin = docker_20(&inputs);
    eprintln!(
        "matrix timing: base pushed, Docker 20.10 built and pushed at {}",
        since(t)
    );
    docker_28_containerd_store(&inputs, &twin, t);
    build_push_run(&inputs, &twin, t);
}

/// Docker 28's containerd store, every step of the issue: the image ids the
/// report gives are config digests (the engine's are manifest digests), and
/// the same inputs give the same image and digest as on Docker 20.10.
fn docker_28_containerd_store(inputs: &Inputs, twin: &serde_json::Value, t: std::time::Instant) {
    let engine = Engine::dockerd()
        .binaries(&engine_root(28))
        .containerd_store()
        .storage("overlayfs")
        .start();
    assert_containerd_store(&engine, true);
    let repo = inputs.repo("docker-28-containerd");
    let launch = inputs.build(&engine.host(), &repo);

    // A cold build: the base pulled from the registry, two layers loaded.
    let o = launch.run();
    let first = ok(&o);
    assert_eq!(first["cached"], false, "{first}");
    let err = stderr(&o);
    assert!(
        err.contains("application: loading the layer") && !err.contains("committing"),
        "layers are loaded, not committed: {err}"
    );
    let image = first["image"].as_str().unwrap();
    let engine_id = engine.docker_ok(&["image", "inspect", image, "--format", "{{.Id}}"]);
    assert_ne!(
        first["image_id"].as_str().unwrap(),
        engine_id,
        "the report gives the config digest, the store its manifest digest"
    );
    eprintln!(
        "matrix timing: Docker 28 containerd cold build done at {}",
        since(t)
    );
    runs_the_pipeline_offline(&engine, image);
    no_containers(&engine);

    // An unchanged relaunch builds nothing and creates no container.
    let o = launch.run();
    let again = ok(&o);
    assert_eq!(again["cached"], true, "{again}");
    assert_eq!(again["image_id"], first["image_id"]);
    assert!(!stderr(&o).contains("container"), "{}", stderr(&o));

    // gc sees the result and its dependency layer by their labels.
    let o = run(prebuilder()
        .args(["gc", "--dry-run", "--format", "json", "--repository", &repo])
        .env("DOCKER_HOST", engine.host()));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        json(&o)["kept"],
        2,
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );

    // A code-only change rebuilds the application layer only.
    let transforms = inputs.project.join("demo_pipeline/transforms.py");
    let code = std::fs::read_to_string(&transforms).unwrap();
    std::fs::write(&transforms, format!("{code}\n# changed on docker 28\n")).unwrap();
    let changed = launch.ok();
    let got: Vec<(String, String)> = layers(&changed)
        .into_iter()
        .map(|(n, c, _)| (n, c))
        .collect();
    assert_eq!(
        got,
        [
            ("dependencies".to_string(), "hit".to_string()),
            ("application".to_string(), "miss".to_string())
        ]
    );
    assert_eq!(layers(&changed)[0].2, layers(&first)[0].2);
    std::fs::write(&transforms, &code).unwrap();

    eprintln!(
        "matrix timing: relaunch, gc, code change done at {}",
        since(t)
    );
    // Push; Docker 20.10 gives the same config digest and pushed digest.
    let pushed = launch.clone().push().ok();
    assert_eq!(pushed["image_id"], first["image_id"]);
    assert!(pushed["digest"].as_str().unwrap().starts_with("sha256:"));
    same_as_docker_20(twin, &pushed, "Docker 28, containerd store");
    eprintln!(
        "matrix timing: pushed, Docker 20.10 twin done at {}",
        since(t)
    );

    // The engine emptied: a registry hit, nothing pulled or built.
    let ids = engine.docker_ok(&["images", "-aq"]);
    for id in ids.lines().collect::<std::collections::BTreeSet<_>>() {
        engine.docker_ok(&["rmi", "-f", id]);
    }
    let hit = launch.clone().push().ok();
    assert_eq!(hit["cached"], true, "{hit}");
    assert_eq!(hit["digest"], pushed["digest"]);
    assert!(
        engine.docker_ok(&["images", "-q"]).is_empty(),
        "a registry hit pulls nothing"
    );
    eprintln!("matrix timing: registry hit done at {}", since(t));
}

/// Docker 26's containerd store and Docker 28's classic store: a build, a
/// push and a run, each the same image and digest as Docker 20.10's.
fn build_push_run(inputs: &Inputs, twin: &serde_json::Value, t: std::time::Instant) {
    for (name, version, containerd, storage) in [
        ("Docker 26, containerd store", 26, true, "overlayfs"),
        ("Docker 28, classic store", 28, false, "overlay2"),
    ] {
        let builder = Engine::dockerd()
            .binaries(&engine_root(version))
            .storage(storage);
        let engine = match containerd {
            true => builder.containerd_store().start(),
            false => builder.start(),
        };
        assert_containerd_store(&engine, containerd);
        let repo = inputs.repo(&format!("docker-{version}-{storage}"));
        let pushed = inputs.build(&engine.host(), &repo).push().ok();
        assert_eq!(pushed["cached"], false, "{pushed}");
        eprintln!("matrix timing: {name} build and push done at {}", since(t));
        runs_the_pipeline_offline(&engine, pushed["image"].as_str().unwrap());
        no_containers(&engine);
        same_as_docker_20(twin, &pushed, name);
        eprintln!(
            "matrix timing: {name} run, Docker 20.10 twin done at {}",
            since(t)
        );
    }
}
