//! Successful builds: from a context staged by real apache-beam and from the
//! Beam-style flags; what the image holds and what the report says.

use crate::support::*;

/// Checks shared by every successful build: the report matches the engine,
/// the image keeps the base's config, and no staged file is left inside.
fn check_image(fx: &Fixtures, report: &serde_json::Value, repo: &TestRepo) {
    let image = report["image"].as_str().unwrap();
    assert!(image.starts_with(&format!("{}:", repo.name)), "{image}");
    let id = docker_ok(&["image", "inspect", image, "--format", "{{.Id}}"]);
    assert_eq!(
        report["image_id"],
        id.as_str(),
        "report image_id matches docker image inspect"
    );
    assert_eq!(report["sdk_container_image"], image);
    assert!(report["digest"].is_null());
    assert_eq!(report["base"]["ref"], fx.beam_image.as_str());
    let base_id = docker_ok(&["image", "inspect", &fx.beam_image, "--format", "{{.Id}}"]);
    assert_eq!(report["base"]["id"], base_id.as_str());

    let inspect = |img: &str, what: &str| docker_ok(&["image", "inspect", img, "--format", what]);
    assert_eq!(
        inspect(image, "{{json .Config.Entrypoint}}"),
        inspect(&fx.beam_image, "{{json .Config.Entrypoint}}")
    );
    assert_eq!(
        inspect(image, "{{json .Config.Cmd}}"),
        inspect(&fx.beam_image, "{{json .Config.Cmd}}")
    );
    assert_eq!(
        inspect(image, "{{json .Config.Env}}"),
        inspect(&fx.beam_image, "{{json .Config.Env}}"),
        "the setup's environment (PIP_NO_INDEX) must not reach the image"
    );
    assert_eq!(
        inspect(image, "{{index .Config.Labels \"prebuilder\"}}"),
        "image"
    );
    assert_eq!(
        inspect(image, "{{index .Config.Labels \"prebuilder.layer\"}}"),
        "application"
    );
    assert_eq!(
        inspect(image, "{{index .Config.Labels \"prebuilder.base\"}}"),
        base_id
    );

    // Pipeline package and requirements import with no network.
    let o = python_in(
        image,
        "import demo_pipeline, slugify, tabulate; print(slugify.slugify('Hello World'))",
    );
    assert!(
        o.status.success(),
        "imports fail in {image}: {}",
        stderr(&o)
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "hello-world");

    // No staged artifact remains: the artifacts directory is empty and none
    // of the staged files (cache wheels, workflow.tar.gz) is anywhere in the image.
    let mut staged: Vec<String> = std::fs::read_dir(&fx.demo_wheels)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    staged.push("workflow.tar.gz".into());
    let code = format!(
        "import os,sys; staged={staged:?}; d='/opt/apache/beam/artifacts'; left=os.listdir(d) if os.path.isdir(d) else []; \
         found=[os.path.join(r,f) for r,_,fs in os.walk('/') if not r.startswith('/proc') for f in fs if f in staged]; \
         print(left, found); sys.exit(1 if left or found else 0)"
    );
    let o = python_in(image, &code);
    assert!(
        o.status.success(),
        "staged files left in {image}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    assert!(
        setup_containers().is_empty(),
        "no setup container may remain"
    );
}

#[test]
fn builds_from_a_context_staged_by_real_beam_then_reuses_it() {
    let fx = Fixtures::load();
    let repo = TestRepo::new("context");
    let ctx = tempfile::tempdir().unwrap();
    let inputs = tempfile::tempdir().unwrap();
    let requirements = unique_requirements(inputs.path(), &demo_requirements_text());
    let cache = fx.demo_wheels.to_str().unwrap().to_string();
    fx.beam_context(
        ctx.path(),
        &[
            "--requirements_file",
            requirements.to_str().unwrap(),
            "--requirements_cache",
            &cache,
            "--setup_file",
            demo_setup().to_str().unwrap(),
        ],
    );
    let report_file = ctx.path().join("report.json");
    let o = Build::new(&fx.beam_image)
        .tag("extra")
        .repository(&repo.name)
        .context(ctx.path())
        .arg("--report")
        .arg(&report_file)
        .run();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let report = json(&o);
    let from_file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_file).unwrap()).unwrap();
    assert_eq!(report, from_file, "--report holds the same JSON as stdout");
    assert_eq!(report["cached"], false);
    let layers: Vec<(&str, &str)> = report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["name"].as_str().unwrap(), l["cache"].as_str().unwrap()))
        .collect();
    assert_eq!(layers, [("dependencies", "miss"), ("application", "miss")]);
    check_image(&fx, &report, &repo);
    let extra = format!("{}:extra", repo.name);
    assert_eq!(
        docker_ok(&["image", "inspect", &extra, "--format", "{{.Id}}"]),
        report["image_id"].as_str().unwrap()
    );
    assert!(
        stderr(&o).contains("| "),
        "the setup's output is streamed to stderr"
    );
    assert_layers_loaded(&o);

    // Regenerating the context with real Beam (new sdist bytes) finds everything built.
    let ctx2 = tempfile::tempdir().unwrap();
    fx.beam_context(
        ctx2.path(),
        &[
            "--requirements_file",
            requirements.to_str().unwrap(),
            "--requirements_cache",
            &cache,
            "--setup_file",
            demo_setup().to_str().unwrap(),
        ],
    );
    let again = Build::new(&fx.beam_image)
        .repository(&repo.name)
        .context(ctx2.path())
        .ok();
    assert_eq!(again["cached"], true, "{again}");
    assert_eq!(again["image"], report["image"]);
    assert_eq!(again["image_id"], report["image_id"]);
    assert!(again["layers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["cache"] == "hit"));
}

/// Layers come from the setup's snapshot, loaded as images, not from a commit.
fn assert_layers_loaded(o: &std::process::Output) {
    let err = stderr(o);
    assert!(
        err.contains("dependencies: loading the layer")
            && err.contains("application: loading the layer"),
        "{err}"
    );
    assert!(!err.contains("committing"), "no layer was committed: {err}");
}

/// The fallback for bases without GNU find/tar (forced here): a commit of the
/// setup container gives an image that passes the same checks.
#[test]
fn the_commit_fallback_builds_the_same_image() {
    let fx = Fixtures::load();
    let repo = TestRepo::new("commit");
    let inputs = tempfile::tempdir().unwrap();
    let requirements = unique_requirements(inputs.path(), &demo_requirements_text());
    let o = Build::new(&fx.beam_image)
        .env("PREBUILDER_COMMIT", "1")
        .repository(&repo.name)
        .requirements(&requirements)
        .cache(&fx.demo_wheels)
        .setup_file(demo_setup())
        .run();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("dependencies: committing") && !err.contains("loading the layer"),
        "{err}"
    );
    let report = json(&o);
    // The engine's bytes: the report and the label say the layer was committed.
    for layer in report["layers"].as_array().unwrap() {
        assert_eq!(layer["committed"], true, "{report}");
    }
    let label = docker_ok(&[
        "image",
        "inspect",
        report["image"].as_str().unwrap(),
        "--format",
        "{{index .Config.Labels \"prebuilder.committed\"}}",
    ]);
    assert_eq!(label.trim(), "true");
    check_image(&fx, &report, &repo);
}

#[test]
fn builds_from_beam_style_flags() {
    let fx = Fixtures::load();
    let repo = TestRepo::new("flags");
    let inputs = tempfile::tempdir().unwrap();
    let requirements = unique_requirements(inputs.path(), &demo_requirements_text());
    let build = Build::new(&fx.beam_image)
        .repository(&repo.name)
        .requirements(&requirements)
        .cache(&fx.demo_wheels)
        .setup_file(demo_setup());
    let o = build.run();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let report = json(&o);
    check_image(&fx, &report, &repo);
    assert_layers_loaded(&o);

    // Text format tells what to launch with.
    let o = build.text().run();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(&format!(
            "--sdk_container_image={}",
            report["image"].as_str().unwrap()
        )),
        "{text}"
    );
    assert!(text.contains("cached, nothing built"), "{text}");
}
