//! Never rebuild what has not changed: hits, layer reuse on a code change,
//! misses on a requirements change, one build for concurrent runs, gc.

use std::path::Path;

use crate::support::*;

/// A build of `requirements` (cache: the demo wheels) into `repo`.
fn build(fx: &Fixtures, repo: &TestRepo, requirements: &Path) -> Build {
    Build::new(&fx.beam_image)
        .repository(&repo.name)
        .requirements(requirements)
        .cache(&fx.demo_wheels)
}

#[test]
fn code_change_rebuilds_only_the_application_layer_and_gc_keeps_what_results_need() {
    let fx = Fixtures::load();
    let repo = TestRepo::new("codechange");
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("pipeline");
    copy_tree(&crate::support::repo().join("demo/pipeline"), &project);
    let requirements = unique_requirements(dir.path(), &demo_requirements_text());

    let launch = build(&fx, &repo, &requirements).setup_file(&project);
    let first = launch.ok();
    let transforms = project.join("demo_pipeline/transforms.py");
    let code = std::fs::read_to_string(&transforms).unwrap();
    std::fs::write(
        &transforms,
        format!("{code}\nPREBUILDER_TEST_MARK = 'second'\n"),
    )
    .unwrap();
    let second = launch.ok();

    let (a, b) = (layers(&first), layers(&second));
    assert_eq!(b[0].0, "dependencies");
    assert_eq!(b[0].1, "hit", "the dependency layer is reused: {second}");
    assert_eq!(
        b[0].2, a[0].2,
        "the dependency layer's image id is unchanged"
    );
    assert_eq!(b[1].1, "miss", "the application layer is rebuilt");
    assert_ne!(second["image"], first["image"]);
    assert_eq!(second["cached"], false);
    let image = second["image"].as_str().unwrap();
    let o = python_in(
        image,
        "import demo_pipeline.transforms as t; print(t.PREBUILDER_TEST_MARK)",
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "second",
        "the new code is in the image: {}",
        stderr(&o)
    );
    let o = python_in(
        first["image"].as_str().unwrap(),
        "import demo_pipeline.transforms as t; print(hasattr(t, 'PREBUILDER_TEST_MARK'))",
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "False");

    // gc --keep 1: the older result goes, the shared dependency layer and the newer result stay.
    let gc = |extra: &[&str]| {
        let o = run(prebuilder()
            .args([
                "gc",
                "--repository",
                &repo.name,
                "--keep",
                "1",
                "--format",
                "json",
            ])
            .args(extra));
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        json(&o)
    };
    let dry = gc(&["--dry-run"]);
    let would: Vec<&str> = dry["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(would, [first["image_id"].as_str().unwrap()], "{dry}");
    assert!(
        docker(&["image", "inspect", first["image"].as_str().unwrap()])
            .status
            .success(),
        "dry run removes nothing"
    );
    gc(&[]);
    assert!(
        !docker(&["image", "inspect", first["image"].as_str().unwrap()])
            .status
            .success(),
        "the old result is gone"
    );
    assert!(
        docker(&["image", "inspect", image]).status.success(),
        "the newest result stays"
    );
    assert!(
        docker(&["image", "inspect", &a[0].2]).status.success(),
        "its dependency layer stays"
    );
}

#[test]
fn requirements_change_misses_every_layer() {
    let fx = Fixtures::load();
    let repo = TestRepo::new("reqchange");
    let dir = tempfile::tempdir().unwrap();
    let req = unique_requirements(dir.path(), "text-unidecode==1.3\n");
    let first = build(&fx, &repo, &req).ok();
    std::fs::write(
        &req,
        std::fs::read_to_string(&req).unwrap() + "tabulate==0.9.0\n",
    )
    .unwrap();
    let second = build(&fx, &repo, &req).ok();

    assert_eq!(layers(&first)[0].1, "miss");
    assert_eq!(layers(&second)[0].1, "miss", "{second}");
    assert_ne!(layers(&second)[0].2, layers(&first)[0].2);
    assert!(
        python_in(second["image"].as_str().unwrap(), "import tabulate")
            .status
            .success()
    );
    assert!(
        !python_in(first["image"].as_str().unwrap(), "import tabulate")
            .status
            .success()
    );
}

#[test]
fn concurrent_runs_with_the_same_inputs_build_once() {
    let fx = Fixtures::load();
    let repo = TestRepo::new("concurrent");
    let dir = tempfile::tempdir().unwrap();
    let req = dir.path().join("requirements.txt");
    // Unique content: nobody has built this key before.
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::fs::write(
        &req,
        format!("# concurrency test {nonce}\ntabulate==0.9.0\n"),
    )
    .unwrap();
    let spawn = || {
        let child = build(&fx, &repo, &req)
            .command()
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        track(child.id());
        child
    };
    let (c1, c2) = (spawn(), spawn());
    let (o1, o2) = (
        c1.wait_with_output().unwrap(),
        c2.wait_with_output().unwrap(),
    );
    assert_eq!(o1.status.code(), Some(0), "{}", stderr(&o1));
    assert_eq!(o2.status.code(), Some(0), "{}", stderr(&o2));
    let (r1, r2) = (json(&o1), json(&o2));
    assert_eq!(r1["image_id"], r2["image_id"], "both report the same image");
    let outcomes = [layers(&r1)[0].1.clone(), layers(&r2)[0].1.clone()];
    assert_eq!(
        outcomes.iter().filter(|o| *o == "miss").count(),
        1,
        "exactly one run built: {outcomes:?}\n{}\n{}",
        stderr(&o1),
        stderr(&o2)
    );
    assert!(setup_containers().is_empty());
}

#[test]
fn no_cache_rebuilds() {
    let fx = Fixtures::load();
    let repo = TestRepo::new("nocache");
    let dir = tempfile::tempdir().unwrap();
    let req = unique_requirements(dir.path(), "text-unidecode==1.3\n");
    let first = build(&fx, &repo, &req).ok();
    let second = build(&fx, &repo, &req).arg("--no-cache").ok();
    assert_eq!(layers(&second)[0].1, "miss", "{second}");
    // Rebuilt, and reproducible (issue 11): the same inputs give the same image.
    assert_eq!(second["image_id"], first["image_id"]);
    assert_eq!(
        second["image"], first["image"],
        "same inputs, same content-addressed tag"
    );
    assert_eq!(
        docker_ok(&[
            "image",
            "inspect",
            second["image"].as_str().unwrap(),
            "--format",
            "{{.Id}}"
        ]),
        second["image_id"].as_str().unwrap(),
        "the tag moved to the new build"
    );
    // Were it not reproducible, the superseded build would be untagged now: remove it too.
    if second["image_id"] != first["image_id"] {
        let _ = docker(&["rmi", first["image_id"].as_str().unwrap()]);
    }
}
