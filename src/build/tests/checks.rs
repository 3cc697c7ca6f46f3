//! The base checks: once, before the first install, never on a full hit.

use super::*;

#[tokio::test]
async fn a_base_without_the_boot_is_refused_before_the_setup_runs() {
    let w = world();
    w.engine.add_image("plain:1", &["/bin/sh"], "");
    let mut opts = w.opts();
    opts.base = "plain:1".into();
    let err = w.quick(&opts, &w.set("app")).await.unwrap_err();
    assert!(matches!(err, Error::BootMissing { .. }), "{err:?}");
    assert_eq!(w.engine.count("run"), 0);
    assert!(w.engine.containers().is_empty());
}

#[tokio::test]
async fn a_missing_base_fails_before_anything_is_created() {
    let w = world();
    let mut opts = w.opts();
    opts.base = "absent:1".into();
    let err = w.quick(&opts, &w.set("app")).await.unwrap_err();
    assert!(matches!(err, Error::BaseMissing { .. }), "{err:?}");
    assert!(err.hint().unwrap().contains("never pulls"));
    assert_eq!(w.engine.count("create"), 0);
}

#[tokio::test]
async fn the_base_is_checked_once_before_the_first_install() {
    let w = world();
    let mut opts = w.opts();
    opts.no_check = false;
    let rec = Recorder::default();
    w.build(&opts, &w.set("app"), &rec).await.unwrap();
    let probes: Vec<String> = w
        .engine
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("create probe"))
        .collect();
    assert_eq!(probes.len(), 1, "{probes:?}");
    assert!(rec.saw("CheckingBase"));
}

#[tokio::test]
async fn a_fully_cached_build_probes_nothing() {
    let w = world();
    let mut opts = w.opts();
    opts.no_check = false;
    let set = w.set("app");
    w.quick(&opts, &set).await.unwrap();
    let probes = w.engine.count("create probe");
    w.quick(&opts, &set).await.unwrap();
    assert_eq!(w.engine.count("create probe"), probes);
}

#[tokio::test]
async fn a_code_change_does_not_probe_the_base_again() {
    let w = world();
    let mut opts = w.opts();
    opts.no_check = false;
    w.quick(&opts, &w.set("app v1")).await.unwrap();
    assert_eq!(w.engine.count("create probe"), 1);
    let rec = Recorder::default();
    let second = w.build(&opts, &w.set("app v2"), &rec).await.unwrap();
    assert_eq!(caches(&second), [Hit, Miss]);
    assert_eq!(
        w.engine.count("create probe"),
        1,
        "the dependency layer found on the base proves it was checked"
    );
    assert!(!rec.saw("CheckingBase"));
    // A --no-cache rebuild finds nothing, so it checks again.
    opts.no_cache = true;
    w.quick(&opts, &w.set("app v2")).await.unwrap();
    assert_eq!(w.engine.count("create probe"), 2);
}

#[tokio::test]
async fn a_broken_base_is_refused_with_its_findings_and_nothing_built() {
    let w = world();
    w.engine.add_image(
        "nopython:1",
        &[crate::plan::BOOT, "/bin/sh"],
        r#"prebuilder-probe: {"mode": "image", "boot": "executable"}"#,
    );
    let mut opts = w.opts();
    opts.base = "nopython:1".into();
    opts.no_check = false;
    let err = w.quick(&opts, &w.set("app")).await.unwrap_err();
    match &err {
        Error::BaseRefused {
            image, findings, ..
        } => {
            assert_eq!(image, "nopython:1");
            assert!(findings.contains("fix:"), "{findings}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(w.engine.count("create setup"), 0);
    assert!(w.engine.containers().is_empty());
}
