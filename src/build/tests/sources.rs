//! Each layer's source (issue 18): on the engine, the whole result in the
//! registry, a layer in the registry, or missing; alone and mixed, with the
//! base on the engine or only in its registry (a fresh runner). The keys a
//! fresh runner computes equal the ones computed with everything local.

use super::*;
use crate::engine::fake::{remote_manifest_digest, GOOD_PROBE};
use crate::plan::BOOT;

/// The base's registry, reporting the id and manifest digest a pull of
/// [`BASE`] gives (as a real registry does).
fn base_registry(id: &str) -> Arc<FakeRegistry> {
    let r = Arc::new(FakeRegistry::new("beam.example"));
    let tag = crate::registry::ImageRef::parse(BASE)
        .tag_or_digest()
        .to_string();
    r.set_image_id(&tag, id);
    r.put(&tag, &remote_manifest_digest(BASE));
    r
}

/// [`world`], its base pulled from the registry [`base_registry`] describes
/// (so it records the same `repo@digest` a fresh runner reads there).
fn local_world() -> World {
    let w = world();
    w.engine
        .set_repo_digests(BASE, &[&format!("beam@{}", remote_manifest_digest(BASE))]);
    w
}

/// A fresh runner: an engine with nothing on it, the base only in its registry.
fn fresh_world() -> (World, Arc<FakeRegistry>) {
    let w = World {
        engine: FakeEngine::new(),
        files: tempfile::tempdir().unwrap(),
        locks: tempfile::tempdir().unwrap(),
    };
    let id = w
        .engine
        .add_remote_image(BASE, &[BOOT, "/bin/sh"], GOOD_PROBE);
    (w, base_registry(&id))
}

impl World {
    /// Build with `base` as the base's registry (and this engine's registry
    /// as the result's).
    async fn build_on(
        &self,
        opts: &Options,
        set: &StagedSet,
        base: Arc<FakeRegistry>,
        rec: &Recorder,
    ) -> Result<Report> {
        let registry = self.engine.registry.clone();
        run(
            &self.engine,
            opts,
            set,
            || {
                Ok(Some(Remote {
                    registry,
                    credential: None,
                    base: Some(base),
                    boot: None,
                }))
            },
            rec,
        )
        .await
    }

    fn pulls(&self) -> Vec<String> {
        self.engine
            .calls()
            .into_iter()
            .filter(|c| c.starts_with("pull "))
            .collect()
    }
}

/// `elsewhere` built `app`; its dependency layer is pushed to the registry
/// `w` shares with it (`REPO:layer-<key>`). The layer's pull reference.
async fn dependency_layer_pushed_from_elsewhere(w: &World) -> String {
    let elsewhere = world();
    let r = elsewhere
        .quick(&elsewhere.opts(), &elsewhere.set("app"))
        .await
        .unwrap();
    let dep = &r.layers[0];
    let key = elsewhere
        .engine
        .inspect(&dep.image_id)
        .await
        .unwrap()
        .unwrap()
        .labels[LABEL_KEY]
        .clone();
    let tag = format!("layer-{}", &key[..crate::plan::TAG_HEX_LEN]);
    w.engine.registry.put(&tag, "sha256:dependency-layer");
    let reference = format!("{REPO}:{tag}");
    elsewhere.engine.share(&dep.image_id, &reference, &w.engine);
    reference
}

#[tokio::test]
async fn a_layer_in_the_registry_is_pulled_not_built_and_the_layer_above_is_built() {
    let w = world();
    let reference = dependency_layer_pushed_from_elsewhere(&w).await;
    let rec = Recorder::default();
    let r = w.build(&w.opts(), &w.set("app v2"), &rec).await.unwrap();
    assert_eq!(caches(&r), [InRegistry, Miss]);
    assert_eq!(w.pulls(), [format!("pull {reference}")]);
    assert_eq!(w.engine.count("create"), 1, "only the application's setup");
    assert!(rec.saw("LayerFromRegistry"));
    assert!(!r.cached);
}

#[tokio::test]
async fn a_fresh_runner_pulls_the_registrys_layer_then_the_base_and_builds_the_rest() {
    let local = local_world();
    let want = local
        .quick(&local.opts(), &local.set("app v2"))
        .await
        .unwrap();
    let (w, base) = fresh_world();
    let reference = dependency_layer_pushed_from_elsewhere(&w).await;
    let mut opts = w.opts();
    opts.pull = PullPolicy::Missing;
    let rec = Recorder::default();
    let r = w
        .build_on(&opts, &w.set("app v2"), base, &rec)
        .await
        .unwrap();
    assert_eq!(caches(&r), [InRegistry, Miss]);
    assert_eq!(
        w.pulls(),
        [format!("pull {reference}"), format!("pull {BASE}")]
    );
    assert_eq!(r.image, want.image, "the keys of a local build");
    assert_eq!(r.image_id, want.image_id, "the image of a local build");
    assert!(rec.saw("BaseResolved"));
}

#[tokio::test]
async fn a_fresh_runner_that_misses_everything_pulls_the_base_and_builds_every_layer() {
    let local = local_world();
    let want = local.quick(&local.opts(), &local.set("app")).await.unwrap();
    let (w, base) = fresh_world();
    let mut opts = w.opts();
    opts.pull = PullPolicy::Missing;
    let r = w
        .build_on(&opts, &w.set("app"), base, &Recorder::default())
        .await
        .unwrap();
    assert_eq!(caches(&r), [Miss, Miss]);
    assert_eq!(w.pulls(), [format!("pull {BASE}")]);
    assert_eq!(r.image, want.image);
    assert_eq!(r.image_id, want.image_id);
    assert_eq!(r.base.id, want.base.id);
}

#[tokio::test]
async fn every_layer_on_the_engine_needs_no_base_and_no_pull() {
    let (w, base) = fresh_world();
    let mut opts = w.opts();
    opts.pull = PullPolicy::Missing;
    let first = w
        .build_on(&opts, &w.set("app"), base.clone(), &Recorder::default())
        .await
        .unwrap();
    // The base's tag goes (a `docker rmi` of it); the layers stay.
    w.engine.remove_image(BASE).await.unwrap();
    assert!(w.engine.inspect(BASE).await.unwrap().is_none());
    let pulls_before = w.pulls().len();
    let r = w
        .build_on(&opts, &w.set("app"), base, &Recorder::default())
        .await
        .unwrap();
    assert_eq!(caches(&r), [Hit, Hit]);
    assert_eq!(r.image_id, first.image_id);
    assert_eq!(w.pulls().len(), pulls_before, "{:?}", w.pulls());
}

#[tokio::test]
async fn the_result_in_the_registry_ends_a_fresh_runners_build_with_nothing_pulled() {
    let local = local_world();
    let want = local.quick(&local.opts(), &local.set("app")).await.unwrap();
    let (w, base) = fresh_world();
    w.engine
        .registry
        .put(&want.image[REPO.len() + 1..], "sha256:result");
    let rec = Recorder::default();
    let r = w
        .build_on(&w.opts(), &w.set("app"), base, &rec)
        .await
        .unwrap();
    assert_eq!(caches(&r), [InRegistry, InRegistry]);
    assert_eq!(r.image, want.image);
    assert_eq!(r.base.id, want.base.id);
    assert!(w.pulls().is_empty(), "{:?}", w.pulls());
    assert_eq!(w.engine.image_count(), 0);
    assert!(rec.saw("NothingPulled"));
}

#[tokio::test]
async fn keys_of_a_fresh_runner_equal_keys_with_everything_local_labels_included() {
    let labelled = |w: &World| {
        let mut opts = w.opts();
        opts.labels.user = vec![("team".into(), "data".into())];
        opts.pull = PullPolicy::Missing;
        opts
    };
    let local = local_world();
    let want = local
        .quick(&labelled(&local), &local.set("app"))
        .await
        .unwrap();
    let (w, base) = fresh_world();
    let r = w
        .build_on(&labelled(&w), &w.set("app"), base, &Recorder::default())
        .await
        .unwrap();
    assert_eq!(r.image, want.image, "same result key");
    assert_eq!(r.image_id, want.image_id, "same image");
    assert_eq!(
        layer_keys(&w.engine, &r).await,
        layer_keys(&local.engine, &want).await,
        "every layer's key"
    );
}

/// The `prebuilder.key` of every layer image of a report, bottom up.
async fn layer_keys(engine: &FakeEngine, r: &Report) -> Vec<String> {
    let mut keys = Vec::new();
    for l in &r.layers {
        let image = engine.inspect(&l.image_id).await.unwrap().unwrap();
        keys.push(image.labels[LABEL_KEY].clone());
    }
    keys
}

#[tokio::test]
async fn a_base_that_moves_between_its_lookup_and_its_pull_is_refused_unbuilt() {
    let (w, _) = fresh_world();
    // The registry names another image than the one a pull then gives.
    let moved =
        base_registry("sha256:0000000000000000000000000000000000000000000000000000000000000001");
    let mut opts = w.opts();
    opts.pull = PullPolicy::Missing;
    let err = w
        .build_on(&opts, &w.set("app"), moved, &Recorder::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::BaseMoved { .. }), "{err:?}");
    assert_eq!(err.exit_code(), crate::error::EXIT_UNAVAILABLE);
    assert_eq!(w.engine.count("create"), 0);
    assert!(w.result_tags().is_empty());
}
