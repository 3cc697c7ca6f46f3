//! Failures and interrupts: nothing tagged, no container left.

use super::*;

#[tokio::test]
async fn a_setup_failure_removes_the_container_and_tags_nothing() {
    let w = world();
    w.engine.set_setup(Setup {
        status: 1,
        output: vec![
            "ERROR: No matching distribution found for nope==1".into(),
            "boot: failed to install requirements.txt: exit status 1".into(),
        ],
        snapshot: true,
    });
    let err = w.quick(&w.opts(), &w.set("app")).await.unwrap_err();
    match &err {
        Error::SetupFailed {
            layer, step, tail, ..
        } => {
            assert_eq!(layer, "dependencies");
            assert!(
                step.contains("failed to install requirements.txt"),
                "{step}"
            );
            assert!(tail.contains("nope==1"), "{tail}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.exit_code(), 1);
    assert!(w.engine.containers().is_empty());
    assert!(w.result_tags().is_empty());
    assert_eq!(w.engine.count("load") + w.engine.count("commit"), 0);
}

#[tokio::test]
async fn a_failure_in_the_second_layer_keeps_the_first_tagged_as_a_layer_only() {
    let w = world();
    w.engine.fail_on_nth("run", 2);
    let err = w.quick(&w.opts(), &w.set("app")).await.unwrap_err();
    assert!(matches!(err, Error::Engine { .. }), "{err:?}");
    let tags = w.result_tags();
    assert_eq!(tags.len(), 1, "{tags:?}");
    assert!(tags[0].contains(":layer-"), "no result tag: {tags:?}");
    assert!(w.engine.containers().is_empty());
}

/// Ctrl-C drops the build future at any call: every container is then
/// removed (as the binary does with `remove_leftovers`) and no result tag exists.
#[tokio::test]
async fn an_interrupt_at_each_step_leaves_no_container_and_no_result_tag() {
    for op in [
        "create", "exists", "upload", "run", "download", "load", "tag",
    ] {
        let w = world();
        w.engine.hang_on(op);
        let set = w.set("app");
        let opts = w.opts();
        let build = w.quick(&opts, &set);
        tokio::select! {
            r = build => panic!("{op}: the build finished: {r:?}"),
            _ = w.engine.reached() => {}
        }
        w.engine.remove_leftovers().await;
        assert!(w.engine.containers().is_empty(), "{op}");
        let results: Vec<String> = w
            .result_tags()
            .into_iter()
            .filter(|t| !t.contains(":layer-"))
            .collect();
        assert!(results.is_empty(), "{op}: {results:?}");
    }
}

#[tokio::test]
async fn an_interrupt_while_pushing_leaves_the_registry_untouched() {
    let w = world();
    w.engine.hang_on("export");
    let mut opts = w.opts();
    opts.push = true;
    let set = w.set("app");
    tokio::select! {
        r = w.quick(&opts, &set) => panic!("finished: {r:?}"),
        _ = w.engine.reached() => {}
    }
    w.engine.remove_leftovers().await;
    assert!(w.engine.containers().is_empty());
    assert!(w
        .engine
        .registry
        .get(&w.result_tags()[1][REPO.len() + 1..])
        .is_none());
}

#[tokio::test]
async fn an_engine_failure_at_each_step_removes_the_container() {
    for op in ["exists", "upload", "run", "download", "load", "commit"] {
        let w = world();
        let mut opts = w.opts();
        opts.commit = op == "commit";
        w.engine.fail_on(op);
        let r = w.quick(&opts, &w.set("app")).await;
        // A failed load falls back to a commit; everything else fails the build.
        if op != "load" {
            assert!(r.is_err(), "{op}: {r:?}");
            assert!(w.result_tags().is_empty(), "{op}");
        }
        assert!(w.engine.containers().is_empty(), "{op}");
    }
}
