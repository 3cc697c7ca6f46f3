//! The engine setup producer: snapshot loads, commits, labels, containers.

use super::*;

/// The setup installs `heavy` 1.0: one 4 KiB file and its RECORD; the
/// options split at 1000 bytes (so it is a layer of its own), the layer
/// files in `scratch`.
fn heavy(w: &World, scratch: &std::path::Path) -> Options {
    use crate::image::split::{Rule, MAX_LAYERS};
    let site = "usr/lib/python3/dist-packages";
    let big = vec![b'x'; 4096];
    let record = b"heavy/data.bin,sha256=x,4096\nheavy-1.0.dist-info/RECORD,,\n";
    let data = format!("{site}/heavy/data.bin");
    let record_path = format!("{site}/heavy-1.0.dist-info/RECORD");
    w.engine
        .snapshot_adds(&[(&data, &big[..]), (&record_path, &record[..])]);
    let mut opts = w.opts();
    opts.scratch_dir = scratch.to_path_buf();
    opts.split = Some(Rule {
        threshold: 1000,
        max_layers: MAX_LAYERS,
    });
    opts
}

#[tokio::test]
async fn layers_are_loaded_from_the_snapshot_not_committed() {
    let w = world();
    let rec = Recorder::default();
    let r = w.build(&w.opts(), &w.set("app"), &rec).await.unwrap();
    assert_eq!(w.engine.count("load"), 2);
    assert_eq!(w.engine.count("commit"), 0);
    assert!(rec.saw("LoadingLayer"));
    assert!(r.layers.iter().all(|l| !l.committed), "{:?}", r.layers);
    assert!(!r.to_json().contains("committed"));
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
    // The engine's bytes: the report says so, and a relaunch still does.
    assert!(r.layers.iter().all(|l| l.committed), "{:?}", r.layers);
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(json["layers"][1]["committed"], true, "{json}");
    let again = w.build(&opts, &w.set("app"), &rec).await.unwrap();
    assert_eq!(caches(&again), [Hit, Hit]);
    assert!(
        again.layers.iter().all(|l| l.committed),
        "{:?}",
        again.layers
    );
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

/// Issue 22: once the setup took a snapshot the container holds it, so a
/// commit could never pass the check; a failed load is the error, not a
/// commit refused later with a message that blames the engine.
#[tokio::test]
async fn a_failed_load_is_the_error_not_a_commit() {
    let w = world();
    w.engine.fail_on("load");
    let err = w.quick(&w.opts(), &w.set("app")).await.unwrap_err();
    assert!(matches!(err, Error::Engine { .. }), "{err:?}");
    assert!(err.to_string().contains("load"), "{err}");
    assert_eq!(w.engine.count("commit"), 0);
    assert!(w.engine.containers().is_empty());
}

/// Issue 22: a layer bigger than the scratch directory's free space is
/// named before anything is written: which directory, how much, and
/// PREBUILDER_STATE_DIR; nothing falls back, nothing is left behind.
#[tokio::test]
async fn a_layer_too_big_for_the_scratch_directory_is_named_before_it_is_written() {
    let w = world();
    let scratch = tempfile::tempdir().unwrap();
    let mut opts = w.opts();
    opts.scratch_dir = scratch.path().to_path_buf();
    // Far more than any test machine has free: 1 EB.
    w.engine.claim_snapshot_size(1 << 60);
    let err = w.quick(&opts, &w.set("app")).await.unwrap_err();
    match &err {
        Error::DiskFull {
            what,
            dir,
            needed,
            available,
        } => {
            assert_eq!(what, "dependencies layer");
            assert_eq!(dir, scratch.path());
            // The layer files only: the snapshot is a stream, the load
            // archive too (the fake takes streams, as the classic store).
            assert!(*needed >= 1 << 60, "the layer files: {needed}");
            assert!(*needed < 2 << 60, "no snapshot or archive copy: {needed}");
            assert!(available < needed);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.hint().unwrap().contains("PREBUILDER_STATE_DIR"));
    assert_eq!(w.engine.count("commit"), 0);
    assert_eq!(w.engine.count("load"), 0);
    assert!(w.engine.containers().is_empty());
    assert_eq!(
        std::fs::read_dir(scratch.path()).unwrap().count(),
        0,
        "nothing left in the scratch directory"
    );
}

/// The setup's own tar failed inside the container (its disk is full):
/// the snapshot directory is there without a layer.tar. Not a commit that
/// would carry it.
#[tokio::test]
async fn a_snapshot_that_failed_in_the_container_is_the_error() {
    let w = world();
    w.engine.break_snapshot();
    let err = w.quick(&w.opts(), &w.set("app")).await.unwrap_err();
    assert!(
        matches!(&err, Error::SnapshotFailed { layer, .. } if layer == "dependencies"),
        "{err:?}"
    );
    assert!(err.hint().unwrap().contains("docker system df"));
    assert_eq!(w.engine.count("commit"), 0);
    assert!(w.engine.containers().is_empty());
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

/// Issue 22: the dependency layer's snapshot is cut by distribution (one
/// over the threshold alone, the rest on top) and loaded as one image of
/// several layers, found again by its key; the application layer stays
/// whole; the report names the parts. With the split off: one layer.
#[tokio::test]
async fn the_dependency_layer_is_split_by_distribution() {
    use crate::image::split::{Rule, MAX_LAYERS};
    for (split, parts) in [
        (
            Some(Rule {
                threshold: 1000,
                max_layers: MAX_LAYERS,
            }),
            vec!["heavy-1.0", "the rest"],
        ),
        (None, vec![]),
        (Some(Rule::default()), vec![]),
    ] {
        let w = world();
        let scratch = tempfile::tempdir().unwrap();
        let mut opts = heavy(&w, scratch.path());
        opts.split = split;
        let r = w
            .build(&opts, &w.set("app"), &Recorder::default())
            .await
            .unwrap();
        let names: Vec<&str> = r.layers[0].parts.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, parts, "{split:?}");
        assert!(
            r.layers[1].parts.is_empty(),
            "the application layer is whole"
        );
        let base = w.engine.inspect(BASE).await.unwrap().unwrap();
        let deps = w
            .engine
            .inspect(&r.layers[0].image_id)
            .await
            .unwrap()
            .unwrap();
        let app = w
            .engine
            .inspect(&r.layers[1].image_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(deps.layers.len(), base.layers.len() + parts.len().max(1));
        assert_eq!(app.layers[..deps.layers.len()], deps.layers[..]);
        assert_eq!(app.layers.len(), deps.layers.len() + 1);
        for (p, diff_id) in r.layers[0]
            .parts
            .iter()
            .zip(&deps.layers[base.layers.len()..])
        {
            assert_eq!(&p.diff_id, diff_id);
        }
        // Found by its key again, with its parts.
        let again = w
            .build(&opts, &w.set("app"), &Recorder::default())
            .await
            .unwrap();
        assert_eq!(caches(&again), [Hit, Hit]);
        assert_eq!(again.layers[0].parts, r.layers[0].parts);
    }
}

/// Issue 22: an engine that loads from files gets the archive as a file,
/// and the scratch check counts it (layer files and archive).
#[tokio::test]
async fn an_engine_that_loads_files_needs_room_for_the_archive_too() {
    let w = world();
    w.engine.load_files_only();
    let scratch = tempfile::tempdir().unwrap();
    let mut opts = w.opts();
    opts.scratch_dir = scratch.path().to_path_buf();
    w.engine.claim_snapshot_size(1 << 60);
    let err = w.quick(&opts, &w.set("app")).await.unwrap_err();
    match &err {
        Error::DiskFull { needed, .. } => {
            assert!(*needed >= 2 << 60, "layer files and archive: {needed}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);
}

/// Issue 22: the snapshot is read once, as a stream, and each layer of the
/// split streamed to an engine that takes streams as soon as it is
/// complete, one load each (nothing but the layer files on disk, the
/// images below the last removed); an engine that loads files gets the
/// same image, split the same way, from one file. Nothing is left in the
/// scratch directory, no image but the layers' and the base.
#[tokio::test]
async fn streamed_and_file_loads_give_the_same_split_image() {
    let mut results = Vec::new();
    for files_only in [false, true] {
        let w = world();
        if files_only {
            w.engine.load_files_only();
        }
        let scratch = tempfile::tempdir().unwrap();
        let opts = heavy(&w, scratch.path());
        let images = w.engine.image_count();
        let r = w
            .build(&opts, &w.set("app"), &Recorder::default())
            .await
            .unwrap();
        // Streamed: the dependency layer's two parts, then the application's.
        assert_eq!(w.engine.count("load"), if files_only { 2 } else { 3 });
        assert_eq!(w.engine.loads_from_files(), if files_only { 2 } else { 0 });
        assert_eq!(w.engine.image_count(), images + 2, "the two layer images");
        assert_eq!(
            w.engine.count("remove_image"),
            if files_only { 0 } else { 1 }
        );
        assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);
        let parts: Vec<String> = r.layers[0].parts.iter().map(|p| p.name.clone()).collect();
        assert_eq!(parts, ["heavy-1.0", "the rest"]);
        results.push((r.layers[0].image_id.clone(), r.layers[0].parts.clone()));
    }
    assert_eq!(results[0], results[1]);
}

/// Issue 22: when a layer of the split fails to load, the images loaded
/// below it are removed, the error is the engine's, and nothing is left
/// (no container, no scratch file, no image but the base's).
#[tokio::test]
async fn a_split_layer_that_fails_to_load_leaves_no_image_below_it() {
    let w = world();
    let scratch = tempfile::tempdir().unwrap();
    let opts = heavy(&w, scratch.path());
    let images = w.engine.image_count();
    w.engine.fail_on_nth("load", 2);
    let err = w
        .build(&opts, &w.set("app"), &Recorder::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Engine { .. }), "{err:?}");
    assert_eq!(w.engine.count("load"), 2, "the heavy layer, then the top");
    assert_eq!(w.engine.count("remove_image"), 1, "the heavy layer's image");
    assert_eq!(w.engine.image_count(), images);
    assert!(w.engine.containers().is_empty());
    assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);
}

/// Issue 22: Ctrl-C while a split's second layer loads (the build future
/// dropped): `remove_leftovers` removes the image of the layer below, so
/// no image is left but the base's, and no container.
#[tokio::test]
async fn an_interrupt_between_split_layer_loads_leaves_no_image() {
    let w = world();
    let scratch = tempfile::tempdir().unwrap();
    let opts = heavy(&w, scratch.path());
    let images = w.engine.image_count();
    w.engine.hang_on_nth("load", 2);
    let set = w.set("app");
    let recorder = Recorder::default();
    let mut build = Box::pin(w.build(&opts, &set, &recorder));
    tokio::select! {
        r = &mut build => panic!("the build finished: {r:?}"),
        _ = w.engine.reached() => {}
    }
    // The first load goes on beside the hanging second: let it end.
    let more = tokio::time::timeout(std::time::Duration::from_millis(300), &mut build).await;
    assert!(more.is_err(), "the build finished: {more:?}");
    drop(build);
    assert_eq!(
        w.engine.image_count(),
        images + 1,
        "the heavy layer's image"
    );
    w.engine.remove_leftovers().await;
    assert_eq!(w.engine.image_count(), images);
    assert!(w.engine.containers().is_empty());
}

/// Issue 22: where the engine takes the snapshot in parts (Docker's classic
/// store), the setup lists it, gets the part lists, and each part is cut
/// and its layer loaded as it comes: the same image as the whole snapshot
/// gives, one load per layer, nothing left in the scratch directory and
/// no image below the last.
#[tokio::test]
async fn a_snapshot_in_parts_gives_the_image_of_the_whole() {
    let mut results = Vec::new();
    for in_parts in [false, true] {
        let w = world();
        if in_parts {
            w.engine.snapshot_in_parts(None);
        }
        let scratch = tempfile::tempdir().unwrap();
        let opts = heavy(&w, scratch.path());
        let images = w.engine.image_count();
        let r = w
            .build(&opts, &w.set("app"), &Recorder::default())
            .await
            .unwrap();
        assert_eq!(w.engine.count("load"), 3, "two parts, then the application");
        if in_parts {
            // Three parts (the directories, then each layer's), each read
            // from a `tar` in the container; then the setup may end.
            assert_eq!(w.engine.count("exec"), 3);
            assert_eq!(w.engine.count("parts-read"), 1);
            assert_eq!(w.engine.count("parts-unread"), 0);
        }
        assert_eq!(w.engine.image_count(), images + 2);
        assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);
        let created = w.engine.created();
        let asked = |c: &crate::engine::ContainerSpec| {
            c.entrypoint
                .iter()
                .any(|a| a.contains("PREBUILDER_PARTS='1'"))
        };
        // Only the split layer (the dependencies) in parts.
        assert_eq!(
            created.iter().filter(|c| asked(c)).count(),
            usize::from(in_parts)
        );
        results.push((
            r.layers[0].image_id.clone(),
            r.layers[0].parts.clone(),
            r.layers[1].image_id.clone(),
        ));
    }
    assert_eq!(results[0], results[1]);
}

/// Issue 22: a part whose `tar` fails in the setup container (a file it
/// cannot read) fails the build with tar's message, naming the layer and
/// the container; nothing is left.
#[tokio::test]
async fn a_snapshot_part_the_setup_cannot_write_leaves_nothing() {
    for fails in [0, 2] {
        let w = world();
        w.engine.snapshot_in_parts(Some(fails));
        let scratch = tempfile::tempdir().unwrap();
        let opts = heavy(&w, scratch.path());
        let images = w.engine.image_count();
        let err = w
            .build(&opts, &w.set("app"), &Recorder::default())
            .await
            .unwrap_err();
        let shown = format!(
            "{err}: {}",
            std::error::Error::source(&err)
                .map(|s| s.to_string())
                .unwrap_or_default()
        );
        assert!(
            matches!(err, Error::Engine { .. })
                && shown.contains("dependencies layer's snapshot")
                && shown.contains("the fake cannot write this part"),
            "part {fails}: {shown}"
        );
        assert_eq!(w.engine.image_count(), images, "part {fails}");
        assert!(w.engine.containers().is_empty());
        assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);
    }
}

/// The set of [`heavy`] with the heavy distribution staged as a wheel
/// (its `RECORD` predicts the split's first layer, `build::early`).
fn heavy_wheel_set(w: &World) -> StagedSet {
    let wheel = crate::direct::install::tests::make_wheel(
        w.files.path(),
        "heavy-1.0-py3-none-any.whl",
        &[
            ("heavy/data.bin", &"x".repeat(4096), 0o644),
            (
                "heavy-1.0.dist-info/RECORD",
                "heavy/data.bin,sha256=x,4096\nheavy-1.0.dist-info/RECORD,,\n",
                0o644,
            ),
        ],
    );
    let bytes = std::fs::read(&wheel).unwrap();
    let digest = hex::encode(sha2::Sha256::digest(&bytes));
    let mut artifacts = w.set("app").artifacts;
    artifacts.insert(
        1,
        Artifact {
            name: "heavy-1.0-py3-none-any.whl".into(),
            path: wheel,
            size: bytes.len() as u64,
            sha256: digest.clone(),
            content_digest: digest,
            role: Role::RequirementsCache,
            origin: None,
        },
    );
    StagedSet::new(artifacts, w.files.path().to_path_buf(), None)
}

/// Issue 22: with the parts, the heavy layer the staged wheel predicts is
/// made and loaded while the setup runs (once announced), and its part is
/// not read again: the same image as without it (`PREBUILDER_EARLY_LAYERS=
/// off`). When the early layer's files changed after it was read, its
/// image is removed and every layer made from the snapshot: the same
/// image again. Nothing is left in either case.
#[tokio::test]
async fn a_heavy_layer_made_while_the_setup_runs_gives_the_same_image() {
    use crate::settings::{Settings, PREBUILDER_EARLY_LAYERS};
    let mut results = Vec::new();
    for (case, early, changed) in [
        ("off", false, None),
        ("kept", true, None),
        (
            "changed",
            true,
            Some("./usr/lib/python3/dist-packages/heavy/data.bin"),
        ),
    ] {
        let w = world();
        w.engine.snapshot_in_parts(None);
        w.engine.announce_installs(usize::from(early), changed);
        let scratch = tempfile::tempdir().unwrap();
        let mut opts = heavy(&w, scratch.path());
        if !early {
            opts.settings = Settings::from_vars([(PREBUILDER_EARLY_LAYERS, "off")]);
        }
        let images = w.engine.image_count();
        let rec = Recorder::default();
        let r = w.build(&opts, &heavy_wheel_set(&w), &rec).await.unwrap();
        let execs = w.engine.calls();
        let early_tars = execs
            .iter()
            .filter(|c| c.starts_with("exec ") && c.contains(" prebuilder-early "))
            .count();
        let checks = execs
            .iter()
            .filter(|c| c.starts_with("exec ") && c.contains(" prebuilder-early-check "))
            .count();
        assert_eq!(early_tars, usize::from(early), "{case}");
        assert_eq!(checks, usize::from(early), "{case}");
        assert_eq!(rec.saw("EarlyLayer"), early, "{case}");
        assert_eq!(rec.saw("EarlyLayersDropped"), changed.is_some(), "{case}");
        // The parts read from the setup: the directories, the heavy layer
        // (unless made early and kept), the top.
        let kept = early && changed.is_none();
        assert_eq!(
            w.engine.count("exec") - early_tars - checks,
            if kept { 2 } else { 3 },
            "{case}"
        );
        // The early layer's load, then the split's other loads, then the
        // application's.
        assert_eq!(
            w.engine.count("load"),
            usize::from(early) + if kept { 2 } else { 3 },
            "{case}"
        );
        assert_eq!(
            w.engine.image_count(),
            images + 2,
            "{case}: only the layers' images stay"
        );
        assert_eq!(
            std::fs::read_dir(scratch.path()).unwrap().count(),
            0,
            "{case}"
        );
        assert_eq!(w.engine.count("parts-read"), 1, "{case}");
        results.push((
            r.layers[0].image_id.clone(),
            r.layers[0].parts.clone(),
            r.layers[1].image_id.clone(),
        ));
    }
    assert_eq!(results[0], results[1]);
    assert_eq!(results[0], results[2]);
}
