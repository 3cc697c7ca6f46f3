//! The push's progress lines name the image they are about: issue 18 found
//! the result's lines under the `layer-` tag of the image below it.

use super::*;

/// `(reference, "pushing" or the status)` of every push event, in order.
#[derive(Default)]
struct Pushes(Mutex<Vec<(String, String)>>);

impl Reporter for Pushes {
    fn event(&self, event: Event<'_>) {
        let entry = match event {
            Event::Pushing { reference } => (reference.to_string(), "pushing".to_string()),
            Event::PushStatus { reference, status } => (reference.to_string(), status.to_string()),
            _ => return,
        };
        self.0.lock().unwrap().push(entry);
    }
}

impl Pushes {
    fn all(&self) -> Vec<(String, String)> {
        self.0.lock().unwrap().clone()
    }

    fn pushing(&self) -> Vec<String> {
        self.all()
            .into_iter()
            .filter(|(_, s)| s == "pushing")
            .map(|(r, _)| r)
            .collect()
    }

    /// The statuses told under `reference`.
    fn under(&self, reference: &str) -> Vec<String> {
        self.all()
            .into_iter()
            .filter(|(r, s)| r == reference && s != "pushing")
            .map(|(_, s)| s)
            .collect()
    }
}

async fn push(w: &World, set: &StagedSet, rec: &Pushes) -> Report {
    let mut opts = w.opts();
    opts.push = true;
    let registry = w.engine.registry.clone();
    let remote = || {
        Ok(Some(Remote {
            registry,
            credential: None,
            base: None,
            boot: None,
        }))
    };
    run(&w.engine, &opts, set, remote, rec).await.unwrap()
}

/// The `layer-<key>` tags the build looked up, oldest first.
fn layer_tags(w: &World) -> Vec<String> {
    let lookups = w.engine.registry.lookups.lock().unwrap().clone();
    let mut tags: Vec<String> = lookups
        .into_iter()
        .filter(|t| t.starts_with(crate::plan::LAYER_TAG_PREFIX))
        .collect();
    tags.dedup();
    tags
}

#[tokio::test]
async fn the_result_and_the_layer_below_are_each_pushed_under_their_own_tag() {
    let w = world();
    let rec = Pushes::default();
    let r = push(&w, &w.set("app"), &rec).await;
    let result = r.image.clone();
    let layer = format!("{REPO}:{}", layer_tags(&w)[0]);
    assert_ne!(result, layer);
    assert_eq!(rec.pushing(), [layer.clone(), result.clone()]);
    // Each announced before its first status.
    let all = rec.all();
    for reference in [&layer, &result] {
        let first = all.iter().position(|(r, _)| r == reference).unwrap();
        assert_eq!(all[first].1, "pushing", "{reference}: {all:?}");
    }
    assert!(
        all.iter().all(|(r, _)| *r == layer || *r == result),
        "{all:?}"
    );
    // The layer image: the base's layer and the dependency layer compressed
    // and uploaded; the result: only its own application layer.
    let below = rec.under(&layer);
    let above = rec.under(&result);
    let count = |lines: &[String], what: &str| lines.iter().filter(|s| s.contains(what)).count();
    assert_eq!(count(&below, "compressing"), 2, "{below:?}");
    assert_eq!(count(&above, "compressing"), 1, "{above:?}");
    assert_eq!(count(&above, "uploaded"), 1, "{above:?}");
    let digest = r.digest.clone().unwrap();
    assert_eq!(above.last(), Some(&format!("{result} is {digest}")));
    let layer_digest = w.engine.registry.get(&layer_tags(&w)[0]).unwrap();
    assert_eq!(below.last(), Some(&format!("{layer} is {layer_digest}")));
}

#[tokio::test]
async fn a_result_pushed_over_a_layer_in_the_registry_is_the_only_one_named() {
    let w = world();
    push(&w, &w.set("app v1"), &Pushes::default()).await;
    let rec = Pushes::default();
    let r = push(&w, &w.set("app v2"), &rec).await;
    assert_eq!(rec.pushing(), vec![r.image.clone()]);
    let all = rec.all();
    assert!(
        all.iter().all(|(reference, _)| *reference == r.image),
        "{all:?}"
    );
    assert_eq!(
        rec.under(&r.image).last(),
        Some(&format!("{} is {}", r.image, r.digest.unwrap()))
    );
}
