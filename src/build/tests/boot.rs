//! --boot-from: the boot layer, locally and on an empty engine.

use super::*;

#[tokio::test]
async fn a_boot_layer_comes_first_and_is_reused() {
    let w = world();
    w.engine
        .add_image("gpu:1", &["/bin/sh"], crate::engine::fake::GOOD_PROBE);
    let mut opts = w.opts();
    opts.base = "gpu:1".into();
    opts.boot_from = Some(BASE.into());
    let set = w.set("app");
    let rec = Recorder::default();
    let r = w.build(&opts, &set, &rec).await.unwrap();
    let names: Vec<&str> = r.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["boot", "dependencies", "application"]);
    assert_eq!(caches(&r), [Miss, Miss, Miss]);
    assert!(rec.saw("BootCopying"));
    let boot = w
        .engine
        .tagged(&format!("{REPO}:layer-{}", &r.layers[1].image_id[..0]));
    assert!(boot.is_none(), "the boot layer is tagged by its key only");
    assert!(
        w.result_tags()
            .iter()
            .filter(|t| t.contains(":layer-"))
            .count()
            == 2
    );
    let image = w.engine.tagged(&r.image).unwrap();
    assert_eq!(image.entrypoint, [crate::plan::BOOT]);
    let again = w.quick(&opts, &set).await.unwrap();
    assert_eq!(caches(&again), [Hit, Hit, Hit]);
    assert!(w.engine.containers().is_empty());
}

#[tokio::test]
async fn a_boot_source_without_the_boot_is_refused() {
    let w = world();
    w.engine.add_image("gpu:1", &["/bin/sh"], "");
    w.engine.add_image("notbeam:1", &["/bin/sh"], "");
    let mut opts = w.opts();
    opts.base = "gpu:1".into();
    opts.boot_from = Some("notbeam:1".into());
    let err = w.quick(&opts, &w.set("app")).await.unwrap_err();
    assert!(matches!(err, Error::BootSourceMissing { .. }), "{err:?}");
    assert!(w.engine.containers().is_empty());
}

/// `--boot-from` on a fresh runner: a base `gpu:1` without the boot and the
/// Beam image [`BASE`] as the boot source, each only in its own registry
/// (which reports its id and manifest digest, as a real one does) until pulled.
struct BootWorld {
    w: World,
    base_registry: Arc<FakeRegistry>,
    boot_registry: Arc<FakeRegistry>,
    base_id: String,
}

const GPU: &str = "gpu:1";

fn boot_world() -> BootWorld {
    let w = World {
        engine: FakeEngine::new(),
        files: tempfile::tempdir().unwrap(),
        locks: tempfile::tempdir().unwrap(),
    };
    let base_id = w
        .engine
        .add_remote_image(GPU, &["/bin/sh"], crate::engine::fake::GOOD_PROBE);
    let boot_id = w.engine.add_remote_image(
        BASE,
        &[crate::plan::BOOT, "/bin/sh"],
        crate::engine::fake::GOOD_PROBE,
    );
    let registry = |host: &str, reference: &str, id: &str| {
        let r = Arc::new(FakeRegistry::new(host));
        let tag = crate::registry::ImageRef::parse(reference)
            .tag_or_digest()
            .to_string();
        r.set_image_id(&tag, id);
        r.put(
            &tag,
            &crate::engine::fake::remote_manifest_digest(reference),
        );
        r
    };
    BootWorld {
        base_registry: registry("gpu.example", GPU, &base_id),
        boot_registry: registry("beam.example", BASE, &boot_id),
        base_id,
        w,
    }
}

impl BootWorld {
    fn opts(&self) -> Options {
        let mut opts = self.w.opts();
        opts.base = GPU.into();
        opts.boot_from = Some(BASE.into());
        opts.pull = super::PullPolicy::Missing;
        opts
    }

    async fn build(&self, opts: &Options, set: &StagedSet, rec: &Recorder) -> Result<Report> {
        let registry = self.w.engine.registry.clone();
        let base = self.base_registry.clone();
        let boot = self.boot_registry.clone();
        run(
            &self.w.engine,
            opts,
            set,
            || {
                Ok(Some(Remote {
                    registry,
                    credential: None,
                    base: Some(base),
                    boot: Some(boot),
                }))
            },
            rec,
        )
        .await
    }

    fn pulls(&self) -> Vec<String> {
        self.w
            .engine
            .calls()
            .into_iter()
            .filter(|c| c.starts_with("pull "))
            .collect()
    }
}

/// The report of a `--boot-from` build with both images already pulled:
/// the keys of a local build.
async fn local_boot_build(app: &str) -> Report {
    let b = boot_world();
    for reference in [GPU, BASE] {
        pull::pull(&b.w.engine, &b.opts(), reference, &Silent)
            .await
            .unwrap();
    }
    let before = b.base_registry.lookups.lock().unwrap().len();
    let r = b
        .build(&b.opts(), &b.w.set(app), &Recorder::default())
        .await
        .unwrap();
    assert_eq!(caches(&r), [Miss, Miss, Miss]);
    assert_eq!(
        b.base_registry.lookups.lock().unwrap().len(),
        before,
        "both images local: their registries are not asked"
    );
    r
}

fn key_tag(image: &str) -> &str {
    image.rsplit_once(':').map_or(image, |(_, t)| t)
}

#[tokio::test]
async fn boot_from_on_an_empty_engine_hits_the_registry_with_nothing_pulled() {
    let local = local_boot_build("app").await;
    let b = boot_world();
    b.w.engine
        .registry
        .put(key_tag(&local.image), "sha256:result-in-registry");
    let rec = Recorder::default();
    let r = b.build(&b.opts(), &b.w.set("app"), &rec).await.unwrap();
    assert_eq!(r.image, local.image, "the keys of a local build");
    assert!(r.cached);
    assert_eq!(r.digest.as_deref(), Some("sha256:result-in-registry"));
    assert_eq!(
        r.sdk_container_image,
        format!("{REPO}@sha256:result-in-registry")
    );
    let names: Vec<&str> = r.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["boot", "dependencies", "application"]);
    assert_eq!(caches(&r), [InRegistry, InRegistry, InRegistry]);
    assert_eq!(r.base.id, b.base_id);
    assert!(b.pulls().is_empty(), "{:?}", b.pulls());
    assert_eq!(b.w.engine.image_count(), 0, "nothing on the engine");
    assert_eq!(b.w.engine.count("create"), 0);
    assert!(rec.saw("BaseResolved"));
    assert!(rec.saw("BootResolved"));
    assert!(rec.saw("NothingPulled"));
    assert!(!rec.saw("Pulling"));
}

#[tokio::test]
async fn boot_from_on_an_empty_engine_pulls_the_base_and_the_boot_image_on_a_miss() {
    let local = local_boot_build("app").await;
    let b = boot_world();
    let rec = Recorder::default();
    let r = b.build(&b.opts(), &b.w.set("app"), &rec).await.unwrap();
    assert_eq!(b.pulls(), [format!("pull {GPU}"), format!("pull {BASE}")]);
    assert_eq!(caches(&r), [Miss, Miss, Miss]);
    assert_eq!(r.image, local.image, "the keys of a local build");
    assert_eq!(r.image_id, local.image_id);
    assert_eq!(r.base.id, b.base_id);
    assert!(rec.saw("BootCopying"));
    // The registry was asked for the result before anything was pulled.
    let calls = b.w.engine.calls();
    let first_pull = calls.iter().position(|c| c.starts_with("pull ")).unwrap();
    assert!(
        calls[..first_pull].iter().all(|c| !c.starts_with("create")),
        "{calls:?}"
    );
    assert!(b
        .w
        .engine
        .registry
        .lookups
        .lock()
        .unwrap()
        .contains(&key_tag(&r.image).to_string()));
    // Relaunched: everything is local now, no registry is asked.
    let lookups = b.boot_registry.lookups.lock().unwrap().len();
    let again = b
        .build(&b.opts(), &b.w.set("app"), &Recorder::default())
        .await
        .unwrap();
    assert_eq!(caches(&again), [Hit, Hit, Hit]);
    assert_eq!(b.pulls().len(), 2);
    assert_eq!(b.boot_registry.lookups.lock().unwrap().len(), lookups);
}

#[tokio::test]
async fn a_boot_image_missing_alone_is_resolved_from_its_registry_not_pulled() {
    let local = local_boot_build("app").await;
    let b = boot_world();
    pull::pull(&b.w.engine, &b.opts(), GPU, &Silent)
        .await
        .unwrap();
    b.w.engine
        .registry
        .put(key_tag(&local.image), "sha256:result-in-registry");
    let r = b
        .build(&b.opts(), &b.w.set("app"), &Recorder::default())
        .await
        .unwrap();
    assert!(r.cached);
    assert_eq!(r.image, local.image);
    assert_eq!(
        b.pulls(),
        [format!("pull {GPU}")],
        "only the test's own pull"
    );
    assert!(
        b.base_registry.lookups.lock().unwrap().is_empty(),
        "the base is local"
    );
    assert_eq!(
        *b.boot_registry.lookups.lock().unwrap(),
        ["image_id 2.77.0"]
    );
}

#[tokio::test]
async fn a_code_change_with_boot_from_on_an_empty_engine_misses_and_builds() {
    let local = local_boot_build("app v1").await;
    let b = boot_world();
    b.w.engine
        .registry
        .put(key_tag(&local.image), "sha256:result-in-registry");
    let r = b
        .build(&b.opts(), &b.w.set("app v2"), &Recorder::default())
        .await
        .unwrap();
    assert_ne!(r.image, local.image);
    assert_eq!(caches(&r), [Miss, Miss, Miss]);
    assert_eq!(b.pulls().len(), 2);
}

#[tokio::test]
async fn pull_never_refuses_a_missing_boot_image_by_name_and_builds_nothing() {
    let b = boot_world();
    pull::pull(&b.w.engine, &b.opts(), GPU, &Silent)
        .await
        .unwrap();
    let mut opts = b.opts();
    opts.pull = super::PullPolicy::Never;
    let err = b
        .build(&opts, &b.w.set("app"), &Recorder::default())
        .await
        .unwrap_err();
    match &err {
        Error::ImageMissing { what, image, .. } => {
            assert_eq!(*what, "--boot-from image");
            assert_eq!(image, BASE);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.hint().unwrap().contains("--pull missing"),
        "{:?}",
        err.hint()
    );
    assert_eq!(b.pulls().len(), 1, "only the test's own pull");
    assert_eq!(b.w.engine.count("create"), 0);
}
