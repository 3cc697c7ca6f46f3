//! The registry as a source: the result found there, an unreachable one.

use super::*;

#[tokio::test]
async fn a_registry_hit_builds_nothing_and_reports_the_digest() {
    let w = world();
    let set = w.set("app");
    // Learn the result's tag on another engine, then seed the registry with it.
    let elsewhere = world();
    let tag = elsewhere
        .quick(&elsewhere.opts(), &elsewhere.set("app"))
        .await
        .unwrap()
        .image;
    let tag = &tag[REPO.len() + 1..];
    w.engine.registry.put(tag, "sha256:feed");
    let rec = Recorder::default();
    let r = w.build(&w.opts(), &set, &rec).await.unwrap();
    assert_eq!(caches(&r), [InRegistry, InRegistry]);
    assert!(r.cached);
    assert_eq!(r.digest.as_deref(), Some("sha256:feed"));
    assert_eq!(r.sdk_container_image, format!("{REPO}@sha256:feed"));
    assert!(r.image_id.is_none());
    assert_eq!(w.engine.count("create"), 0);
    assert!(w.result_tags().is_empty(), "nothing pulled or tagged");
    assert!(rec.saw("RegistryHit"));
}

#[tokio::test]
async fn an_unreachable_registry_without_push_builds_locally() {
    let w = world();
    w.engine.registry.set_down(true);
    let rec = Recorder::default();
    let r = w.build(&w.opts(), &w.set("app"), &rec).await.unwrap();
    assert_eq!(caches(&r), [Miss, Miss]);
    assert!(rec.saw("RegistrySkipped"));
}

#[tokio::test]
async fn an_unreachable_registry_with_push_fails_before_building() {
    let w = world();
    w.engine.registry.set_down(true);
    let mut opts = w.opts();
    opts.push = true;
    let err = w.quick(&opts, &w.set("app")).await.unwrap_err();
    assert!(matches!(err, Error::RegistryUnreachable { .. }), "{err:?}");
    assert_eq!(w.engine.count("create"), 0);
}

/// Issue 11: `--tag` on a registry hit is a manifest put under the tag (the
/// same digest); nothing is pushed or pulled.
#[tokio::test]
async fn a_registry_hit_applies_every_tag_by_a_manifest_put() {
    let first = world();
    let built = first.quick(&first.opts(), &first.set("app")).await.unwrap();
    let tag = built.image[REPO.len() + 1..].to_string();

    let w = world();
    w.engine.registry.put(&tag, "sha256:feed");
    let mut opts = w.opts();
    opts.push = true;
    opts.tags = vec!["stable".into(), "sha-1".into()];
    let r = w.quick(&opts, &w.set("app")).await.unwrap();
    assert!(r.cached);
    assert_eq!(r.digest.as_deref(), Some("sha256:feed"));
    assert_eq!(
        w.engine.registry.get("stable").as_deref(),
        Some("sha256:feed")
    );
    assert_eq!(
        w.engine.registry.get("sha-1").as_deref(),
        Some("sha256:feed")
    );
    assert_eq!(r.tags, [format!("{REPO}:stable"), format!("{REPO}:sha-1")]);
    assert_eq!(w.engine.count("push"), 0);
    assert_eq!(w.engine.count("pull"), 0);
    assert_eq!(w.engine.count("create"), 0);

    // A tag holding another digest is refused, as on a push.
    w.engine.registry.put("taken", "sha256:other");
    opts.tags = vec!["taken".into()];
    let err = w.quick(&opts, &w.set("app")).await.unwrap_err();
    assert!(matches!(err, Error::TagConflict { .. }), "{err:?}");
}
