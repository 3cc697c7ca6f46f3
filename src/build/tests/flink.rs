//! PyFlink builds.

use super::*;

/// A PyFlink set: requirements and an archive below, a python file above.
fn flink_set(w: &World, udf: &str) -> StagedSet {
    use crate::stage::flink::FlinkSetup;
    let artifacts = vec![
        w.artifact("requirements.txt", "tabulate==0.9.0\n", Role::Requirements),
        w.artifact("venv.zip", "zip", Role::PyArchive),
        w.artifact("udfs.py", udf, Role::PyFile),
    ];
    let setup = FlinkSetup {
        executable: Some("/opt/flink/python-archives/venv/bin/python".into()),
        client_executable: None,
        files_pythonpath: vec!["/opt/flink/python-files/0".into()],
        extra_pythonpath: vec![],
        archives: [(
            "venv".to_string(),
            "/opt/flink/python-archives/venv".to_string(),
        )]
        .into(),
        requirements_cache: false,
        requirements_input: Some("requirements.txt".into()),
    };
    StagedSet::new(artifacts, w.files.path().to_path_buf(), None)
        .with_mode(crate::stage::SetupMode::Flink(setup))
}

const FLINK_BASE: &str = "flink:2.3.0-py3.11";

#[tokio::test]
async fn a_pyflink_build_runs_its_own_setup_on_a_base_without_the_boot() {
    let w = world();
    w.engine.add_image(
        FLINK_BASE,
        &["/bin/sh"],
        "java=yes\npython=3.11.2\nflink=2.3.0",
    );
    let mut opts = w.opts();
    opts.base = FLINK_BASE.into();
    let rec = Recorder::default();
    let r = w.build(&opts, &flink_set(&w, "v1"), &rec).await.unwrap();
    assert_eq!(caches(&r), [Miss, Miss]);
    assert!(rec.saw("the PyFlink setup"), "the step is named");
    let uploads: Vec<String> = w
        .engine
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("upload"))
        .collect();
    assert_eq!(uploads.len(), 2, "{uploads:?}");
    assert!(uploads.iter().all(|u| u.ends_with(" /tmp")), "{uploads:?}");
    let image = w.engine.tagged(&r.image).unwrap();
    let exe = "/opt/flink/python-archives/venv/bin/python";
    assert!(
        image.env.contains(&format!("PYFLINK_PYTHON={exe}")),
        "{:?}",
        image.env
    );
    assert!(image
        .env
        .contains(&"PYTHONPATH=/opt/flink/python-files/0".to_string()));
    let flink = r.flink.as_ref().unwrap();
    assert_eq!(flink.python_executable.as_deref(), Some(exe));
    assert_eq!(flink.archives["venv"], "/opt/flink/python-archives/venv");

    // A python file change: the dependencies layer is reused.
    let again = w.quick(&opts, &flink_set(&w, "v2")).await.unwrap();
    assert_eq!(caches(&again), [Hit, Miss]);
    assert_eq!(again.layers[0].image_id, r.layers[0].image_id);
}

#[tokio::test]
async fn a_pyflink_base_without_java_or_flink_is_refused_before_any_setup() {
    let w = world();
    w.engine.add_image(
        FLINK_BASE,
        &["/bin/sh"],
        "java=no\npython=3.11.2\nflink=none",
    );
    let mut opts = w.opts();
    opts.base = FLINK_BASE.into();
    opts.no_check = false;
    let e = w.quick(&opts, &flink_set(&w, "v1")).await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("not ready for PyFlink") && text.contains("java") && text.contains("pyflink"),
        "{text}"
    );
    assert_eq!(w.engine.count("upload"), 0, "nothing set up");
    assert!(w.result_tags().is_empty());
    assert!(w.engine.containers().is_empty());
}

#[test]
fn pyflink_for_arm64_is_refused_with_the_reason() {
    let w = world();
    let set = flink_set(&w, "def f(): pass\n");
    let amd64 = crate::build::platform::Platform::parse("linux/amd64").unwrap();
    let arm64 = crate::build::platform::Platform::parse("linux/arm64").unwrap();
    crate::build::platform::check_set(&set, &amd64).unwrap();
    let e = crate::build::platform::check_set(&set, &arm64).unwrap_err();
    assert!(e.to_string().contains("the PyFlink inputs"), "{e}");
    assert!(e.to_string().contains("Java home"), "{e}");
    assert!(e.hint().unwrap().contains("linux/amd64"));
}
