//! Fresh CI runners sharing one registry (issue 11): a runner whose engine
//! lacks the base finds the result in the registry without pulling anything,
//! and applies `--tag` there. The base lives in a real htpasswd
//! `docker-registry` under a reference the engine does not have.

use std::path::Path;
use std::process::Output;

use crate::fresh_engine::FreshEngine;
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

/// The fixture Beam image pushed as `reference`, then untagged here.
pub fn publish_base(fx: &Fixtures, config: &Path, reference: &str) {
    docker_ok(&["tag", &fx.beam_image, reference]);
    let o = docker(&["--config", config.to_str().unwrap(), "push", reference]);
    let _ = docker(&["rmi", reference]);
    assert!(
        o.status.success(),
        "push {reference}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn build(base: &str, repository: &str, req: &Path, config: &Path, extra: &[&str]) -> Output {
    build_on(None, base, repository, req, config, extra)
}

/// `build` on the engine at `host` (`DOCKER_HOST`), or the default one.
fn build_on(
    host: Option<&str>,
    base: &str,
    repository: &str,
    req: &Path,
    config: &Path,
    extra: &[&str],
) -> Output {
    let fx = Fixtures::load();
    let mut c = prebuilder();
    if let Some(h) = host {
        c.env("DOCKER_HOST", h);
    }
    run(c
        .env("DOCKER_CONFIG", config)
        .args([
            "build",
            "--base",
            base,
            "--network",
            "none",
            "--format",
            "json",
            "--push",
        ])
        .args(["--repository", repository, "--requirements-file"])
        .arg(req)
        .arg("--requirements-cache")
        .arg(&fx.demo_wheels)
        .args(extra))
}

fn on_engine(reference: &str) -> bool {
    docker(&["image", "inspect", reference]).status.success()
}

#[test]
fn a_runner_without_the_base_hits_the_registry_pulls_nothing_and_tags_there() {
    let fx = Fixtures::load();
    let registry = TestRegistry::start(Some(USER));
    let dir = tempfile::tempdir().unwrap();
    let config = logged_in(dir.path(), &registry.addr);
    let base = format!("{}/fr/base:{}", registry.addr, std::process::id());
    publish_base(&fx, &config, &base);
    let repository = format!("{}/fr/sdk", registry.addr);
    let _cleanup = TestRepo {
        name: repository.clone(),
    };
    let _base_cleanup = TestRepo {
        name: format!("{}/fr/base", registry.addr),
    };
    let req = unique_requirements(dir.path(), "tabulate==0.9.0\n");

    // The first runner builds (pulling the base) and pushes.
    let o = build(&base, &repository, &req, &config, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let first = json(&o);
    let digest = first["digest"].as_str().unwrap().to_string();

    // The next runner has nothing: not the base, not a layer.
    forget_local(&repository);
    let _ = docker(&["rmi", &base]);
    assert!(!on_engine(&base));
    let o = build(
        &base,
        &repository,
        &req,
        &config,
        &["--tag", "stable", "--tag", "fr-sha-1"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let hit = json(&o);
    let err = stderr(&o);
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
    assert!(err.contains("not pulled"), "{err}");
    assert!(!err.contains("pulling"), "{err}");
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
    let fx = Fixtures::load();
    let registry = TestRegistry::start(Some(USER));
    let dir = tempfile::tempdir().unwrap();
    let config = logged_in(dir.path(), &registry.addr);
    let base = format!("{}/fr/base:layers-{}", registry.addr, std::process::id());
    publish_base(&fx, &config, &base);
    let repository = format!("{}/fr/layers", registry.addr);
    let _cleanup = TestRepo {
        name: repository.clone(),
    };
    let _base_cleanup = TestRepo {
        name: format!("{}/fr/base", registry.addr),
    };
    let project = dir.path().join("pipeline");
    copy_tree(&crate::support::repo().join("demo/pipeline"), &project);
    let req = unique_requirements(dir.path(), &demo_requirements_text());
    let project_args = |extra: &[&str]| -> Vec<String> {
        let mut v = vec!["--setup-file".to_string(), project.display().to_string()];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };

    let args = project_args(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = build(&base, &repository, &req, &config, &args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let first = json(&o);
    let deps = layers(&first)[0].clone();
    assert_eq!(deps.0, "dependencies");
    assert!(
        stderr(&o).contains(":layer-"),
        "the dependency layer is pushed for other runners: {}",
        stderr(&o)
    );

    // An empty runner, and a code change.
    forget_local(&repository);
    let _ = docker(&["rmi", &base]);
    let transforms = project.join("demo_pipeline/transforms.py");
    let code = std::fs::read_to_string(&transforms).unwrap();
    std::fs::write(&transforms, format!("{code}\nFR_MARK = 'fresh'\n")).unwrap();
    let o = build(&base, &repository, &req, &config, &args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let second = json(&o);
    let err = stderr(&o);
    let l = layers(&second);
    assert_eq!(l[0].0, "dependencies");
    assert_eq!(l[0].1, "registry", "pulled, not rebuilt: {second}");
    assert_eq!(l[0].2, deps.2, "the very image the first runner built");
    assert_eq!(l[1].1, "miss", "the application layer is rebuilt");
    assert!(!err.contains("dependencies: building"), "{err}");
    assert!(err.contains("dependencies: found in the registry"), "{err}");
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
    let fx = Fixtures::load();
    let registry = TestRegistry::start(Some(USER));
    let dir = tempfile::tempdir().unwrap();
    let config = logged_in(dir.path(), &registry.addr);
    let base = format!("{}/fr/base:cross-{}", registry.addr, std::process::id());
    publish_base(&fx, &config, &base);
    let repository = format!("{}/fr/cross", registry.addr);
    let _cleanup = TestRepo {
        name: repository.clone(),
    };
    let _base_cleanup = TestRepo {
        name: format!("{}/fr/base", registry.addr),
    };
    let project = dir.path().join("pipeline");
    copy_tree(&crate::support::repo().join("demo/pipeline"), &project);
    let req = unique_requirements(dir.path(), &demo_requirements_text());
    let project_arg = project.display().to_string();
    let args = ["--setup-file", project_arg.as_str()];

    let o = build(&base, &repository, &req, &config, &args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let first = json(&o);

    let engine = FreshEngine::start();
    let host = Some(engine.host.as_str());
    assert_eq!(
        engine.docker_ok(&["images", "-q"]),
        "",
        "the second engine starts empty"
    );
    let t = std::time::Instant::now();
    let o = build_on(host, &base, &repository, &req, &config, &args);
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
    let o = build_on(host, &base, &other, &req, &config, &args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let second = json(&o);
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
