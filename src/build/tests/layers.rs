//! The engine setup producer: snapshot loads, commits, labels, containers.

use super::*;

#[tokio::test]
async fn layers_are_loaded_from_the_snapshot_not_committed() {
    let w = world();
    let rec = Recorder::default();
    w.build(&w.opts(), &w.set("app"), &rec).await.unwrap();
    assert_eq!(w.engine.count("load"), 2);
    assert_eq!(w.engine.count("commit"), 0);
    assert!(rec.saw("LoadingLayer"));
}

#[tokio::test]
async fn prebuilder_commit_commits_instead_of_loading() {
    let w = world();
    let mut opts = w.opts();
    opts.commit = true;
    let rec = Recorder::default();
    let r = w.build(&opts, &w.set("app"), &rec).await.unwrap();
    assert_eq!(w.engine.count("load"), 0);
    assert_eq!(w.engine.count("commit"), 2);
    assert!(rec.saw("Committing"));
    assert_eq!(caches(&r), [Miss, Miss]);
}

#[tokio::test]
async fn a_base_without_gnu_tools_falls_back_to_a_commit() {
    let w = world();
    w.engine.set_setup(Setup {
        status: 0,
        output: vec![],
        snapshot: false,
    });
    let rec = Recorder::default();
    w.build(&w.opts(), &w.set("app"), &rec).await.unwrap();
    assert!(rec.saw("NoSnapshot"));
    assert_eq!(w.engine.count("commit"), 2);
    assert_eq!(w.engine.count("load"), 0);
}

#[tokio::test]
async fn a_failed_load_falls_back_to_a_commit() {
    let w = world();
    w.engine.fail_on("load");
    let r = w.quick(&w.opts(), &w.set("app")).await.unwrap();
    assert_eq!(caches(&r), [Miss, Miss]);
    assert_eq!(w.engine.count("commit"), 1, "the first layer was committed");
}

#[tokio::test]
async fn the_layer_keeps_the_bases_config_and_carries_key_and_record_labels() {
    let w = world();
    let r = w.quick(&w.opts(), &w.set("app")).await.unwrap();
    let image = w.engine.tagged(&r.image).unwrap();
    assert_eq!(image.entrypoint, [crate::plan::BOOT]);
    assert_eq!(image.env, ["PATH=/usr/local/bin:/usr/bin:/bin"]);
    assert_eq!(image.labels[LABEL_LAYER], "application");
    assert_eq!(image.labels[crate::engine::LABEL], "image");
    assert!(image.labels[LABEL_KEY].starts_with(&r.image[REPO.len() + 1..]));
    let record = crate::record::Record::parse(&image.labels[crate::record::LABEL_RECORD]).unwrap();
    assert_eq!(record.layer, "application");
    assert!(
        record.inputs.contains_key("dependencies"),
        "inputs chain: {record:?}"
    );
}

#[tokio::test]
async fn every_container_is_removed_after_a_build() {
    let w = world();
    w.quick(&w.opts(), &w.set("app")).await.unwrap();
    assert!(w.engine.containers().is_empty());
    assert_eq!(w.engine.count("remove_container"), w.engine.count("create"));
}

#[tokio::test]
async fn the_setup_gets_the_layers_artifacts_and_manifest() {
    let w = world();
    w.quick(&w.opts(), &w.set("app")).await.unwrap();
    let uploads: Vec<String> = w
        .engine
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("upload"))
        .collect();
    assert_eq!(uploads.len(), 2, "{uploads:?}");
    assert!(uploads.iter().all(|u| u.ends_with(crate::plan::BEAM_DIR)));
}

#[tokio::test]
async fn setup_output_reaches_the_reporter_line_by_line() {
    let w = world();
    w.engine.set_setup(Setup {
        status: 0,
        output: vec!["one".into(), "two".into()],
        snapshot: true,
    });
    let rec = Recorder::default();
    w.build(&w.opts(), &w.set("app"), &rec).await.unwrap();
    let lines: Vec<String> = rec
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.starts_with("SetupOutput"))
        .cloned()
        .collect();
    assert_eq!(lines.len(), 4, "two lines per layer: {lines:?}");
    assert!(lines[0].contains("\"one\""), "{lines:?}");
}

#[tokio::test]
async fn an_engine_that_ignores_the_commit_config_is_refused_and_nothing_is_tagged() {
    let w = world();
    w.engine.commit_ignores_config();
    let mut opts = w.opts();
    opts.commit = true;
    let err = w.quick(&opts, &w.set("app")).await.unwrap_err();
    let Error::ResultMismatch { differences, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(
        differences[0].starts_with("Entrypoint is [\"/bin/sh\""),
        "{differences:?}"
    );
    assert!(differences
        .iter()
        .any(|d| d.contains("label prebuilder.key is missing")));
    assert!(w.result_tags().is_empty(), "{:?}", w.result_tags());
    assert!(w.engine.containers().is_empty());
    assert_eq!(
        w.engine.count("remove_image"),
        1,
        "the wrong image is removed"
    );
}

#[tokio::test]
async fn a_staged_file_left_in_a_committed_container_is_refused() {
    let w = world();
    w.engine
        .setup_leaves("/opt/apache/beam/artifacts/requirements.txt");
    let mut opts = w.opts();
    opts.commit = true;
    let err = w.quick(&opts, &w.set("app")).await.unwrap_err();
    let Error::ResultMismatch { differences, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        differences,
        &["setup leftovers in the image: /opt/apache/beam/artifacts/requirements.txt"]
    );
    assert!(w.result_tags().is_empty());
}

/// Issue 12: 50,000 inputs made the artifacts label 4 MB; it is bounded,
/// and the setup's staged files go on a volume (fast on any storage driver).
#[tokio::test]
async fn labels_stay_bounded_and_staged_files_go_on_a_volume() {
    let w = world();
    let mut artifacts = vec![w.artifact("requirements.txt", "six\n", Role::Requirements)];
    for i in 0..2000 {
        artifacts.push(w.artifact(&format!("f{i:05}.txt"), "x", Role::FileToStage));
    }
    let set = StagedSet::new(artifacts, w.files.path().to_path_buf(), None);
    let r = w.quick(&w.opts(), &set).await.unwrap();
    let image = w.engine.tagged(&r.image).unwrap();
    let label = &image.labels[LABEL_ARTIFACTS];
    assert!(label.len() < 1024, "{}", label.len());
    assert!(
        label.starts_with("sha256:") && label.contains("2000 artifacts"),
        "{label}"
    );
    let total: usize = image.labels.values().map(String::len).sum();
    assert!(total <= 64 * 1024, "all labels: {total} bytes");
    let setups: Vec<_> = w
        .engine
        .created()
        .into_iter()
        .filter(|c| c.role == "setup")
        .collect();
    assert!(!setups.is_empty());
    assert!(
        setups
            .iter()
            .all(|c| c.volume.as_deref() == Some(crate::plan::ARTIFACTS_DIR)),
        "{setups:?}"
    );
}
