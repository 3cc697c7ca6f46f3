//! Fresh CI runners sharing one registry (issue 11): a runner whose engine
//! lacks the base finds the result in the registry without pulling anything,
//! and applies `--tag` there. The base lives in a real htpasswd
//! `docker-registry` under a reference the engine does not have.

use std::path::Path;
use std::process::Output;

use crate::daemons::Engine;
use serde_json::json;

use crate::support::*;

pub const USER: (&str, &str) = ("fr-user", "pw-5b2e9d-not-a-real-secret");

/// A docker CLI config directory logged in to `registry`.
pub fn logged_in(dir: &Path, registry: &str) -> std::path::PathBuf {
    use base64::Engine as _;
    let d = dir.join("docker-config");
    std::fs::create_dir_all(&d).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", USER.0, USER.1));
    std::fs::write(
        d.join("config.json"),
        format!(r#"{{"auths": {{"{registry}": {{"auth": "{auth}"}}}}}}"#),
    )
    .unwrap();
    d
}

/// The fixture Beam image pushed as `reference` (see [`publish`]), then untagged here.
pub fn publish_base(fx: &Fixtures, config: &Path, reference: &str) {
    publish(&fx.beam_image, reference, Some(config));
}

/// `prebuilder build` of `req` (cache: the demo wheels) on `base` into
/// `repository`, with the docker CLI configuration `config` (logged in).
fn build(base: &str, repository: &str, req: &Path, config: &Path) -> Build {
    let fx = Fixtures::load();
    Build::new(base)
        .args(["--progress", "json"])
        .repository(repository)
        .requirements(req)
        .cache(&fx.demo_wheels)
        .docker_config(config)
}

fn on_engine(reference: &str) -> bool {
    docker(&["image", "inspect", reference]).status.success()
}

/// What the fresh-runner tests share: an htpasswd registry holding the
/// fixture base as `NS/base:<tag prefix><pid>` (pushed with a login whose
/// docker config is `config`), and the result repository `NS/NAME` in it;
/// the local tags of both repositories are removed on drop.
struct Shared {
    registry: TestRegistry,
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    base: String,
    repository: String,
    _cleanup: [TestRepo; 2],
}

fn shared(ns: &str, name: &str, tag_prefix: &str) -> Shared {
    let fx = Fixtures::load();
    let registry = TestRegistry::start(Some(USER));
    let dir = tempfile::tempdir().unwrap();
    let config = logged_in(dir.path(), &registry.addr);
    let base = format!(
        "{}/{ns}/base:{tag_prefix}{}",
        registry.addr,
        std::process::id()
    );
    publish_base(&fx, &config, &base);
    let repository = format!("{}/{ns}/{name}", registry.addr);
    let _cleanup = [
        TestRepo {
            name: repository.clone(),
        },
        TestRepo {
            name: format!("{}/{ns}/base", registry.addr),
        },
    ];
    Shared {
        registry,
        dir,
        config,
        base,
        repository,
        _cleanup,
    }
}

#[test]
fn a_runner_without_the_base_hits_the_registry_pulls_nothing_and_tags_there() {
    let Shared {
        registry,
        dir,
        config,
        base,
        repository,
        _cleanup,
    } = shared("fr", "sdk", "");
    let req = unique_requirements(dir.path(), "tabulate==0.9.0\n");

    // The first runner builds (pulling the base) and pushes.
    let launch = build(&base, &repository, &req, &config).push();
    let o = launch.run();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let first = json(&o);
    let digest = first["digest"].as_str().unwrap().to_string();

    // The next runner has nothing: not the base, not a layer.
    forget_local(&repository);
    let _ = docker(&["rmi", &base]);
    assert!(!on_engine(&base));
    let o = launch.tag("stable").tag("fr-sha-1").run();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let hit = json(&o);
    let seen = events(&o);
    assert_eq!(hit["cached"], true, "{hit}");
    assert_eq!(hit["digest"], digest.as_str());
    assert_eq!(
        hit["image"], first["image"],
        "same key from the registry's base id"
    );
    assert_eq!(
        hit["base"]["id"], first["base"]["id"],
        "the base id read from the registry is the engine's id for it"
    );
    assert!(
        hit["layers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["cache"] == "registry"),
        "{hit}"
    );
    assert!(saw(&seen, "nothing_pulled", json!({})), "{seen:?}");
    assert!(!saw(&seen, "pulling", json!({})), "{seen:?}");
    assert!(!on_engine(&base), "the base was not pulled");
    assert!(
        docker_ok(&["images", &repository, "-q"]).is_empty(),
        "no layer was pulled"
    );
    eprintln!(
        "registry hit on a runner without the base: {} s",
        hit["seconds"]
    );

    // --tag on the hit: a manifest put under each tag, the same digest.
    for t in ["stable", "fr-sha-1"] {
        assert_eq!(
            registry.digest("fr/sdk", t, Some(USER)).as_deref(),
            Some(digest.as_str()),
            "{t}"
        );
    }
    assert_eq!(
        hit["tags"],
        serde_json::json!([
            format!("{repository}:stable"),
            format!("{repository}:fr-sha-1")
        ])
    );
}

#[test]
fn a_code_change_on_an_empty_runner_pulls_the_dependency_layer_instead_of_rebuilding_it() {
    let Shared {
        registry: _registry,
        dir,
        config,
        base,
        repository,
        _cleanup,
    } = shared("fr", "layers", "layers-");
    let project = dir.path().join("pipeline");
    copy_tree(&crate::support::repo().join("demo/pipeline"), &project);
    let req = unique_requirements(dir.path(), &demo_requirements_text());
    let launch = build(&base, &repository, &req, &config)
        .push()
        .setup_file(&project);
    let o = launch.run();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let first = json(&o);
    let deps = layers(&first)[0].clone();
    assert_eq!(deps.0, "dependencies");
    assert!(
        events(&o).iter().any(|e| e["event"] == "pushing"
            && e["reference"]
                .as_str()
                .is_some_and(|r| r.contains(":layer-"))),
        "the dependency layer is pushed for other runners: {}",
        stderr(&o)
    );

    // An empty runner, and a code change.
    forget_local(&repository);
    let _ = docker(&["rmi", &base]);
    let transforms = project.join("demo_pipeline/transforms.py");
    let code = std::fs::read_to_string(&transforms).unwrap();
    std::fs::write(&transforms, format!("{code}\nFR_MARK = 'fresh'\n")).unwrap();
    let o = launch.run();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let second = json(&o);
    let seen = events(&o);
    let l = layers(&second);
    assert_eq!(l[0].0, "dependencies");
    assert_eq!(l[0].1, "registry", "pulled, not rebuilt: {second}");
    assert_eq!(l[0].2, deps.2, "the very image the first runner built");
    assert_eq!(l[1].1, "miss", "the application layer is rebuilt");
    let deps_layer = json!({"layer": "dependencies"});
    assert!(
        !saw(&seen, "layer_building", deps_layer.clone()),
        "{seen:?}"
    );
    assert!(saw(&seen, "layer_from_registry", deps_layer), "{seen:?}");
    let o = python_in(
        second["image"].as_str().unwrap(),
        "import demo_pipeline.transforms as t, slugify; print(t.FR_MARK)",
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "fresh",
        "{}",
        stderr(&o)
    );
}

/// Two engines, one registry: a second engine, empty and on another storage
/// driver (vfs), finds the first engine's result without pulling a byte, and
/// building the same inputs there gives the same image ids.
#[test]
fn an_empty_vfs_engine_hits_without_pulling_and_builds_the_same_image_ids() {
    let Shared {
        registry,
        dir,
        config,
        base,
        repository,
        _cleanup,
    } = shared("fr", "cross", "cross-");
    let project = dir.path().join("pipeline");
    copy_tree(&crate::support::repo().join("demo/pipeline"), &project);
    let req = unique_requirements(dir.path(), &demo_requirements_text());
    let build_into = |repository: &str| {
        build(&base, repository, &req, &config)
            .push()
            .setup_file(&project)
    };

    let first = build_into(&repository).ok();

    let engine = Engine::dockerd().storage("vfs").start();
    assert_eq!(
        engine.docker_ok(&["images", "-q"]),
        "",
        "the second engine starts empty"
    );
    let t = std::time::Instant::now();
    let o = build_into(&repository).host(&engine.host()).run();
    let hit_seconds = t.elapsed().as_secs_f64();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let hit = json(&o);
    assert_eq!(hit["cached"], true, "{hit}");
    assert_eq!(hit["digest"], first["digest"]);
    assert_eq!(
        engine.docker_ok(&["images", "-aq"]),
        "",
        "nothing was pulled: not the base, not a layer"
    );
    eprintln!("registry hit on an empty engine: {hit_seconds:.2} s (process), 0 images pulled");

    // The same inputs built on the empty vfs engine (into another repository,
    // so that nothing is found): the same ids as on the first engine.
    let other = format!("{}/fr/cross-b", registry.addr);
    let second = build_into(&other).host(&engine.host()).ok();
    let (a, b) = (layers(&first), layers(&second));
    assert!(
        b.iter().all(|l| l.1 == "miss"),
        "built on the second engine: {second}"
    );
    assert_eq!(a[0].2, b[0].2, "same dependency layer id on both engines");
    assert_eq!(a[1].2, b[1].2, "same result id on both engines");
    assert_eq!(first["image_id"], second["image_id"]);
    eprintln!(
        "pushed digests: first engine {} / second engine {}",
        first["digest"], second["digest"]
    );
    // Same image bytes, and prebuilder compresses and writes the manifest
    // itself (not the engine): the same digest.
    assert_eq!(
        first["digest"], second["digest"],
        "racing runners push one digest"
    );
    let image = second["image"].as_str().unwrap();
    let o = engine.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "python",
        image,
        "-c",
        "import demo_pipeline.transforms, slugify; print('ok')",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "ok",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// What a runner prints while another process holds the lock of the layer
/// it is about to build (`Event::WaitingForLock`, `--progress json`).
fn waiting(line: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v["event"] == "waiting_for_lock")
}

/// A `prebuilder build` running in the background, its stderr read line by
/// line as it comes: each line saying it waits for a layer's lock, and the
/// end of its stderr, go to `events` as `(index, waiting?)`. Stopped with
/// SIGINT (it removes its setup container) if the test ends before it.
struct Racer {
    child: std::process::Child,
    stdout: Option<std::thread::JoinHandle<Vec<u8>>>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Racer {
    fn spawn(
        index: usize,
        c: &mut std::process::Command,
        events: std::sync::mpsc::Sender<(usize, bool)>,
    ) -> Racer {
        use std::io::{BufRead, Read};
        let mut child = c
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn prebuilder");
        track(child.id());
        let mut out = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = out.read_to_end(&mut v);
            v
        });
        let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
        let stderr = std::thread::spawn(move || {
            let mut all = String::new();
            let mut line = Vec::new();
            while matches!(err.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                let text = String::from_utf8_lossy(&line);
                if waiting(&text) {
                    let _ = events.send((index, true));
                }
                all.push_str(&text);
                line.clear();
            }
            let _ = events.send((index, false));
            all
        });
        Racer {
            child,
            stdout: Some(stdout),
            stderr: Some(stderr),
        }
    }

    /// Wait for the process; its exit status, stdout and stderr.
    fn finish(&mut self) -> Output {
        let status = self.child.wait().expect("wait for prebuilder");
        let stdout = self
            .stdout
            .take()
            .map_or_else(Vec::new, |h| h.join().unwrap());
        let stderr = self
            .stderr
            .take()
            .map_or_else(String::new, |h| h.join().unwrap());
        Output {
            status,
            stdout,
            stderr: stderr.into_bytes(),
        }
    }
}

impl Drop for Racer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = std::process::Command::new("kill")
                .args(["-INT", &self.child.id().to_string()])
                .status();
            let _ = self.child.wait();
        }
    }
}

/// Hold the lock file of `key` in the lock directory prebuilder uses for the
/// engine at `host` under the state root `state` (see `prebuilder::state`).
fn hold_lock(state: &Path, host: &str, key: &str) -> std::fs::File {
    let dir = prebuilder::state::lock_dir(state, host);
    std::fs::create_dir_all(&dir).unwrap();
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!("{key}.lock")))
        .unwrap();
    f.lock().unwrap();
    f
}

/// Two runners, the main engine and an empty second one (overlay2: the
/// copying vfs driver, which the test above covers, takes tens of seconds
/// per container and layer of the 640 MB base), start the same
/// cold `build --push` into one repository at the same moment. Neither
/// locks out the other (their engines differ, so their locks do), both
/// build, both push: one digest, the one the registry holds, and one image
/// id.
///
/// Synchronised without sleeps: the test holds the dependency layer's lock
/// on both engines (its key learned from a build of the same inputs whose
/// images are then removed), so each runner stops right before building,
/// after it looked the result up in the registry and found nothing; once
/// both say they wait, both locks go at once and they build side by side.
#[test]
fn two_runners_racing_the_same_cold_build_push_one_digest_and_one_image() {
    let Shared {
        registry,
        dir,
        config,
        base,
        repository,
        _cleanup,
    } = shared("fresh2", "race", "race-");
    let req = unique_requirements(dir.path(), "tabulate==0.9.0\n");
    // Both runners' locks under one state root of this test's own.
    let state = dir.path().join("state");
    let main_host = main_host();

    // The layer keys of these inputs: one build here, not pushed, then
    // forgotten (its images and the base's tag), so the race starts cold.
    let build_on = |repository: &str, host: &str| {
        build(&base, repository, &req, &config)
            .host(host)
            .env("PREBUILDER_STATE_DIR", &state)
    };
    let learned = build_on(&repository, &main_host).ok();
    let keys: Vec<String> = layers(&learned)
        .iter()
        .map(|l| {
            assert_eq!(l.1, "miss", "inputs no earlier build has seen: {learned}");
            docker_ok(&[
                "image",
                "inspect",
                "--format",
                "{{index .Config.Labels \"prebuilder.key\"}}",
                &l.2,
            ])
        })
        .collect();
    assert!(
        keys.iter().all(|k| k.len() == 64),
        "every layer carries its key: {keys:?}"
    );
    forget_local(&repository);
    let _ = docker(&["rmi", &base]);
    assert!(docker_ok(&["images", "-q", &repository]).is_empty());
    assert!(learned["digest"].is_null(), "not pushed: {learned}");

    let engine = Engine::dockerd().storage("overlay2").start();
    assert_eq!(engine.docker_ok(&["images", "-aq"]), "", "empty engine");
    let engine_host = engine.host();
    let hosts = [main_host.as_str(), engine_host.as_str()];
    let locks: Vec<std::fs::File> = hosts
        .iter()
        .map(|h| hold_lock(&state, h, &keys[0]))
        .collect();

    let (tx, rx) = std::sync::mpsc::channel();
    let mut racers: Vec<Racer> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            Racer::spawn(
                i,
                &mut build_on(&repository, h).push().command(),
                tx.clone(),
            )
        })
        .collect();
    drop(tx);
    // Both at the lock: both looked the result up and found nothing. (The
    // timeout only turns a hang into a failure; the second engine pulls the
    // base first.)
    let mut waiting = [false, false];
    while !waiting.iter().all(|w| *w) {
        match rx.recv_timeout(std::time::Duration::from_secs(600)) {
            Ok((i, true)) => waiting[i] = true,
            Ok((i, false)) => {
                let o = racers[i].finish();
                panic!(
                    "runner {i} ({}) ended before it reached the build (status {:?}):\n{}",
                    hosts[i],
                    o.status.code(),
                    stderr(&o)
                );
            }
            Err(e) => panic!("the runners did not both reach the build's lock: {e}"),
        }
    }
    drop(locks);
    let outputs: Vec<Output> = racers.iter_mut().map(Racer::finish).collect();
    for (h, o) in hosts.iter().zip(&outputs) {
        eprintln!(
            "--- runner on {h} exited {:?}\n--- stderr:\n{}",
            o.status.code(),
            stderr(o)
        );
    }
    for o in &outputs {
        assert_eq!(o.status.code(), Some(0), "{}", stderr(o));
    }
    let (a, b) = (json(&outputs[0]), json(&outputs[1]));
    for r in [&a, &b] {
        assert!(
            layers(r).iter().all(|l| l.1 == "miss"),
            "each runner built every layer (a race, not a cache hit): {r}"
        );
    }
    let digest = a["digest"].as_str().expect("a pushed digest").to_string();
    assert!(digest.starts_with("sha256:"), "{a}");
    assert_eq!(b["digest"], a["digest"], "racing runners push one digest");
    assert_eq!(b["image"], a["image"], "one content tag");
    let image = a["image"].as_str().unwrap();
    let tag = &image[image.rfind(':').unwrap() + 1..];
    assert_eq!(
        registry.digest("fresh2/race", tag, Some(USER)).as_deref(),
        Some(digest.as_str()),
        "the registry's content tag holds that digest"
    );
    assert!(a["image_id"].is_string(), "{a}");
    assert_eq!(a["image_id"], b["image_id"], "one image id on both engines");
    assert_eq!(
        a["image_id"], learned["image_id"],
        "the id the first build had"
    );
    let late: Vec<&str> = hosts
        .iter()
        .zip(&outputs)
        .filter(|(_, o)| saw(&events(o), "already_pushed", json!({})))
        .map(|(h, _)| *h)
        .collect();
    eprintln!(
        "racing runners: digest {digest}, image id {} on both engines ({} s / {} s); found the content tag already pushed: {late:?}",
        a["image_id"], a["seconds"], b["seconds"]
    );

    // Whichever pushed first, each runner's own image pushes to that digest
    // (the later one found the tag taken and pushed nothing): each runner
    // pushes its local result again, through prebuilder, into a repository
    // of its own, where nothing is there yet.
    for (i, h) in hosts.iter().enumerate() {
        let own = format!("{repository}-{i}");
        let _own_cleanup = TestRepo { name: own.clone() };
        let o = build_on(&own, h).push().run();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let again = json(&o);
        assert!(
            layers(&again).iter().all(|l| l.1 == "hit"),
            "the runner's own local image: {again}"
        );
        let seen = events(&o);
        assert!(
            saw(&seen, "pushing", json!({})) && !saw(&seen, "already_pushed", json!({})),
            "pushed, not found there: {}",
            stderr(&o)
        );
        assert_eq!(
            again["digest"].as_str(),
            Some(digest.as_str()),
            "the image built on {h} pushes to the same digest"
        );
    }
}
