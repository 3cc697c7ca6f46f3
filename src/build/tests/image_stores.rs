//! Docker's containerd image store (issue 23): its image ids are manifest
//! digests, and a loaded image gets a repo digest of its own manifest. The
//! adapter names every image by its config digest (`engine::containerd`), so the
//! same inputs give the same keys, labels and image ids on either store.

use super::*;

#[tokio::test]
async fn the_same_inputs_give_the_same_keys_on_the_classic_and_the_containerd_store() {
    // A base loaded into the engine, then one pulled from a registry.
    for pulled in [false, true] {
        let classic = world();
        let containerd = world();
        if pulled {
            let by = format!("beam@sha256:{}", "ab".repeat(32));
            classic.engine.set_repo_digests(BASE, &[&by]);
            containerd.engine.set_repo_digests(BASE, &[&by]);
        }
        containerd.engine.as_containerd_store(pulled);
        let a = classic
            .quick(&classic.opts(), &classic.set("app v1"))
            .await
            .unwrap();
        let b = containerd
            .quick(&containerd.opts(), &containerd.set("app v1"))
            .await
            .unwrap();
        assert_eq!(a.base.id, b.base.id, "the base by its config digest");
        assert_eq!(a.image, b.image, "the same key (pulled: {pulled})");
        assert_eq!(a.image_id, b.image_id, "the same config digest");
        let ids =
            |r: &Report| -> Vec<String> { r.layers.iter().map(|l| l.image_id.clone()).collect() };
        assert_eq!(ids(&a), ids(&b));
        // A relaunch on the containerd store finds everything.
        let again = containerd
            .quick(&containerd.opts(), &containerd.set("app v1"))
            .await
            .unwrap();
        assert!(again.cached, "a relaunch builds nothing");
    }
}
