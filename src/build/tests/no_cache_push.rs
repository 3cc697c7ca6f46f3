//! `--no-cache --push` when the registry holds the content tags already
//! (issue 18). prebuilder's rebuilds are byte-identical, so an identical
//! rebuild is pushed and moves nothing; a rebuild with another digest (the
//! tag was put by other bytes: another tool, a commit fallback) is refused
//! once its digest is known, before any tag is put, naming both digests.
//!
//! The fake engine's snapshot layer depends on the setup's inputs only, as a
//! real one does, so a rebuild is identical; its commit fallback (what
//! PREBUILDER_COMMIT or a base without GNU find/tar gives) makes a layer of
//! each container, as `docker commit` does: another digest.

use super::*;

/// Push events' statuses, in order.
#[derive(Default)]
struct Statuses(Mutex<Vec<(String, String)>>);

impl Reporter for Statuses {
    fn event(&self, event: Event<'_>) {
        if let Event::PushStatus { reference, status } = event {
            self.0
                .lock()
                .unwrap()
                .push((reference.to_string(), status.to_string()));
        }
    }
}

async fn push(w: &World, opts: &Options, rec: &dyn Reporter) -> Result<Report> {
    let registry = w.engine.registry.clone();
    let remote = || {
        Ok(Some(Remote {
            registry,
            credential: None,
            base: None,
            boot: None,
        }))
    };
    run(&w.engine, opts, &w.set("app"), remote, rec).await
}

/// A second runner: a new fake engine on the first one's registry.
fn runner_on(first: &World) -> World {
    let mut w = world();
    w.engine.registry = first.engine.registry.clone();
    w
}

/// Every tag in the registry that the push put (content, layer, --tag),
/// with its digest.
fn registry_tags(w: &World, tags: &[&str]) -> Vec<(String, Option<String>)> {
    let lookups = w.engine.registry.lookups.lock().unwrap().clone();
    let mut all: Vec<String> = lookups
        .into_iter()
        .filter(|t| !t.starts_with("image_id "))
        .chain(tags.iter().map(|t| t.to_string()))
        .collect();
    all.sort();
    all.dedup();
    all.into_iter()
        .map(|t| {
            let d = w.engine.registry.get(&t);
            (t, d)
        })
        .collect()
}

fn pushing(w: &World) -> Options {
    let mut opts = w.opts();
    opts.push = true;
    opts.tags = vec!["stable".into()];
    opts
}

#[tokio::test]
async fn an_identical_no_cache_rebuild_is_pushed_and_moves_nothing() {
    let first = world();
    let pushed = push(&first, &pushing(&first), &Silent).await.unwrap();
    let before = registry_tags(&first, &["stable"]);
    assert!(before.iter().all(|(_, d)| d.is_some()), "{before:?}");

    let second = runner_on(&first);
    let mut opts = pushing(&second);
    opts.no_cache = true;
    let rec = Statuses::default();
    let rebuilt = push(&second, &opts, &rec).await.unwrap();
    assert_eq!(second.engine.count("create"), 2, "both layers rebuilt");
    assert_eq!(rebuilt.digest, pushed.digest);
    assert_eq!(rebuilt.image_id, pushed.image_id);
    assert_eq!(registry_tags(&first, &["stable"]), before, "nothing moved");
    // Both images (the layer below and the result) were found identical.
    let same: Vec<String> = rec
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, s)| s.ends_with("already: the rebuild is identical"))
        .map(|(r, _)| r.clone())
        .collect();
    assert_eq!(same.len(), 2, "{same:?}");
    assert_eq!(same[1], rebuilt.image);
}

#[tokio::test]
async fn a_no_cache_rebuild_with_other_bytes_is_refused_with_both_digests() {
    let w = world();
    push(&w, &pushing(&w), &Silent).await.unwrap();
    let before = registry_tags(&w, &["stable"]);
    let builds = w.engine.count("create");

    let mut opts = pushing(&w);
    opts.no_cache = true;
    opts.commit = true;
    let err = push(&w, &opts, &Silent).await.unwrap_err();
    assert!(w.engine.count("create") > builds, "refused once rebuilt");
    let Error::ContentTagTaken {
        reference,
        pushed,
        rebuilt,
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_ne!(pushed, rebuilt);
    // The lowest image that differs: the layer below the result.
    let tag = reference.strip_prefix(&format!("{REPO}:")).unwrap();
    assert!(
        tag.starts_with(crate::plan::LAYER_TAG_PREFIX),
        "{reference}"
    );
    assert_eq!(w.engine.registry.get(tag).as_ref(), Some(pushed));
    let said = err.to_string();
    assert!(
        said.contains(pushed) && said.contains(rebuilt) && !said.contains("would push"),
        "{said}"
    );
    assert_eq!(
        registry_tags(&w, &["stable"]),
        before,
        "no tag put or moved"
    );
}

/// The layers are identical but another tool put the content tag: the
/// true reason is that tag's bytes, and it keeps them.
#[tokio::test]
async fn a_content_tag_put_by_other_bytes_is_refused_and_kept() {
    let first = world();
    let pushed = push(&first, &pushing(&first), &Silent).await.unwrap();
    let tag = pushed.image[REPO.len() + 1..].to_string();
    first.engine.registry.put(&tag, "sha256:other-tool");

    let second = runner_on(&first);
    let mut opts = pushing(&second);
    opts.no_cache = true;
    opts.tags.clear();
    let err = push(&second, &opts, &Silent).await.unwrap_err();
    let Error::ContentTagTaken {
        reference,
        pushed: theirs,
        rebuilt,
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(*reference, pushed.image);
    assert_eq!(theirs, "sha256:other-tool");
    assert_eq!(
        Some(rebuilt),
        pushed.digest.as_ref(),
        "ours is the first push's"
    );
    assert_eq!(
        first.engine.registry.get(&tag).as_deref(),
        Some("sha256:other-tool")
    );
    assert!(err.hint().unwrap().contains("another tool"));
}
