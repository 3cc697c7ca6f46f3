//! Reproducible images (issue 11): the same inputs give the same image id
//! however often they are built, so CI runners racing on one cold build push
//! one digest. Built with `--no-cache` twice on the real engine with real pip.

use crate::support::*;

fn build(
    fx: &Fixtures,
    repo: &TestRepo,
    req: &std::path::Path,
    project: &std::path::Path,
) -> serde_json::Value {
    Build::new(&fx.beam_image)
        // The default epoch: the base's `created` (SOURCE_DATE_EPOCH is unit-tested).
        .env_remove("SOURCE_DATE_EPOCH")
        .arg("--no-cache")
        .repository(&repo.name)
        .requirements(req)
        .cache(&fx.demo_wheels)
        .setup_file(project)
        .ok()
}

fn inspect(image: &str, format: &str) -> String {
    docker_ok(&["image", "inspect", "--format", format, image])
}

#[test]
fn the_same_inputs_built_twice_give_the_same_image_ids() {
    let fx = Fixtures::load();
    let repo = TestRepo::new("fr-repro");
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("pipeline");
    copy_tree(&crate::support::repo().join("demo/pipeline"), &project);
    let req = unique_requirements(dir.path(), &demo_requirements_text());

    let first = build(&fx, &repo, &req, &project);
    let second = build(&fx, &repo, &req, &project);
    let (a, b) = (layers(&first), layers(&second));
    assert_eq!(a.len(), 2, "{first}");
    assert!(
        a.iter().chain(&b).all(|l| l.1 == "miss"),
        "--no-cache builds every layer"
    );
    assert_eq!(a[0].2, b[0].2, "the dependency layer repeats byte for byte");
    assert_eq!(a[1].2, b[1].2, "the result repeats byte for byte");
    assert_eq!(first["image_id"], second["image_id"]);

    let image = first["image"].as_str().unwrap();
    // `created` is the base's, not the build time; SOURCE_DATE_EPOCH stayed
    // in the setup and never reached the config.
    // (To the second: the config's date has no fraction.)
    let created = inspect(image, "{{.Created}}");
    let base_created = inspect(&fx.beam_image, "{{.Created}}");
    assert_eq!(
        created.get(..19),
        base_created.get(..19),
        "{created} vs {base_created}"
    );
    let env = inspect(image, "{{json .Config.Env}}");
    assert!(!env.contains("SOURCE_DATE_EPOCH"), "{env}");
    // pip compiled hash-based .pyc (PEP 552 flags 1 or 3), not mtime-based (0).
    let o = python_in(
        image,
        "import importlib.util, tabulate; p = importlib.util.cache_from_source(tabulate.__file__); \
         print(int.from_bytes(open(p, 'rb').read()[4:8], 'little'))",
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let flags = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(flags == "1" || flags == "3", "pyc flags {flags}");
    // And the image still works, offline.
    let o = python_in(
        image,
        "import demo_pipeline.transforms, slugify; print('ok')",
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "ok",
        "{}",
        stderr(&o)
    );
}
