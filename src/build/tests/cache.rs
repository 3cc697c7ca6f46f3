//! Layers found on the engine, rebuilt with --no-cache, locked by key.

use super::*;

#[tokio::test]
async fn a_cold_build_builds_every_layer_and_tags_them() {
    let w = world();
    let set = w.set("app v1");
    let r = w.quick(&w.opts(), &set).await.unwrap();
    assert_eq!(caches(&r), [Miss, Miss]);
    assert!(!r.cached);
    let tags = w.result_tags();
    assert_eq!(tags.len(), 2, "{tags:?}");
    assert!(tags.iter().any(|t| t.contains(":layer-")), "{tags:?}");
    assert!(tags.contains(&r.image), "{tags:?} {}", r.image);
    assert_eq!(
        w.engine.tagged(&r.image).unwrap().id,
        r.image_id.clone().unwrap()
    );
}

#[tokio::test]
async fn a_relaunch_hits_every_layer_and_creates_no_container() {
    let w = world();
    let set = w.set("app v1");
    let first = w.quick(&w.opts(), &set).await.unwrap();
    let creates = w.engine.count("create");
    let rec = Recorder::default();
    let again = w.build(&w.opts(), &set, &rec).await.unwrap();
    assert_eq!(caches(&again), [Hit, Hit]);
    assert!(again.cached);
    assert_eq!(again.image, first.image);
    assert_eq!(again.image_id, first.image_id);
    assert_eq!(w.engine.count("create"), creates, "no container on a hit");
    assert!(rec.saw("LayerHit"));
    assert!(!rec.saw("CreatingContainer"));
}

#[tokio::test]
async fn a_relaunch_that_hits_everything_never_asks_the_registry() {
    let w = world();
    let set = w.set("app v1");
    w.quick(&w.opts(), &set).await.unwrap();
    let lookups = w.engine.registry.lookups.lock().unwrap().len();
    let asked = std::sync::atomic::AtomicBool::new(false);
    let r = run(
        &w.engine,
        &w.opts(),
        &set,
        || -> Result<Option<Remote<Arc<FakeRegistry>>>> {
            asked.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(None)
        },
        &Silent,
    )
    .await
    .unwrap();
    assert!(r.cached);
    assert!(
        !asked.load(std::sync::atomic::Ordering::SeqCst),
        "no credentials read"
    );
    assert_eq!(w.engine.registry.lookups.lock().unwrap().len(), lookups);
}

#[tokio::test]
async fn a_code_change_reuses_the_dependency_layer() {
    let w = world();
    let first = w.quick(&w.opts(), &w.set("app v1")).await.unwrap();
    let second = w.quick(&w.opts(), &w.set("app v2")).await.unwrap();
    assert_eq!(caches(&second), [Hit, Miss]);
    assert_eq!(second.layers[0].image_id, first.layers[0].image_id);
    assert_ne!(second.image, first.image);
    assert_eq!(w.engine.count("create"), 3, "two builds, one reused layer");
}

#[tokio::test]
async fn the_application_layer_starts_from_the_dependency_layer() {
    let w = world();
    let r = w.quick(&w.opts(), &w.set("app")).await.unwrap();
    let deps = &r.layers[0].image_id;
    let creates: Vec<String> = w
        .engine
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("create setup"))
        .collect();
    assert_eq!(creates.len(), 2);
    assert!(creates[1].ends_with(deps.as_str()), "{creates:?}");
}

#[tokio::test]
async fn no_cache_rebuilds_every_layer() {
    let w = world();
    let set = w.set("app");
    w.quick(&w.opts(), &set).await.unwrap();
    let mut opts = w.opts();
    opts.no_cache = true;
    let r = w.quick(&opts, &set).await.unwrap();
    assert_eq!(caches(&r), [Miss, Miss]);
    assert_eq!(w.engine.count("create setup"), 4);
}

#[tokio::test]
async fn no_cache_ignores_the_registry() {
    let w = world();
    let set = w.set("app");
    let first = w.quick(&w.opts(), &set).await.unwrap();
    w.engine
        .registry
        .put(&first.image[REPO.len() + 1..], "sha256:remote");
    let mut opts = w.opts();
    opts.no_cache = true;
    let r = w.quick(&opts, &set).await.unwrap();
    assert_eq!(caches(&r), [Miss, Miss]);
    assert!(r.digest.is_none());
}

#[tokio::test]
async fn two_concurrent_runs_build_once_under_one_lock() {
    let w = world();
    let (a, b) = (w.set("app"), w.set("app"));
    let (oa, ob) = (w.opts(), w.opts());
    let (ra, rb) = tokio::join!(w.quick(&oa, &a), w.quick(&ob, &b));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.image, rb.image);
    assert_eq!(ra.image_id, rb.image_id);
    assert_eq!(w.engine.count("create setup"), 2, "each layer built once");
    let mut all = caches(&ra);
    all.extend(caches(&rb));
    assert_eq!(all.iter().filter(|c| **c == Miss).count(), 2, "{all:?}");
}

#[tokio::test]
async fn an_unwritable_lock_directory_builds_anyway() {
    let w = world();
    let mut opts = w.opts();
    let file = w.locks.path().join("not-a-dir");
    std::fs::write(&file, "").unwrap();
    opts.lock_dir = file;
    let r = w.quick(&opts, &w.set("app")).await.unwrap();
    assert_eq!(caches(&r), [Miss, Miss]);
}

#[tokio::test]
async fn the_report_lists_layers_in_order_with_image_ids() {
    let w = world();
    let r = w.quick(&w.opts(), &w.set("app")).await.unwrap();
    let names: Vec<&str> = r.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["dependencies", "application"]);
    assert_eq!(r.layers[1].image_id, r.image_id.clone().unwrap());
    assert_eq!(r.base.reference, BASE);
    assert_eq!(r.base.id, w.engine.tagged(BASE).unwrap().id);
    assert_eq!(r.sdk_container_image, r.image);
    assert!(r.digest.is_none());
}

#[tokio::test]
async fn only_files_to_stage_is_nothing_to_install() {
    let w = world();
    let set = StagedSet::new(
        vec![w.artifact("data.txt", "x", Role::FileToStage)],
        PathBuf::from(w.files.path()),
        None,
    );
    let err = w.quick(&w.opts(), &set).await.unwrap_err();
    assert!(matches!(err, Error::NothingToInstall { .. }), "{err:?}");
    assert_eq!(w.engine.count("create"), 0);
}
