//! `--platform` through the whole pipeline: each platform built on its own
//! base (the index's manifest digest), with its own keys and setup
//! containers created for it, then one index over the pushed manifests.

use super::*;
use crate::build::platform::{self, Job, Platform};
use crate::registry::RawManifest;

const INDEXED: &str = "localhost:5000/beam:2.77";
const AMD: &str = "localhost:5000/beam@sha256:amd";
const ARM: &str = "localhost:5000/beam@sha256:arm";

/// The base's registry, holding an index over an amd64 and an arm64 image
/// (both on the engine already, under their digest references).
fn base_index(w: &World) -> Arc<FakeRegistry> {
    let r = FakeRegistry::at("localhost:5000", "beam");
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [
        {"digest": "sha256:amd", "platform": {"os": "linux", "architecture": "amd64"}},
        {"digest": "sha256:arm", "platform": {"os": "linux", "architecture": "arm64"}},
    ]})
    .to_string()
    .into_bytes();
    r.put_raw(
        "2.77",
        RawManifest {
            media_type: "application/vnd.oci.image.index.v1+json".into(),
            digest: format!("sha256:{}", hex::encode(sha2::Sha256::digest(&index))),
            bytes: index,
        },
    );
    w.engine.add_base(AMD);
    w.engine.add_base(ARM);
    w.engine.set_architecture(ARM, "arm64");
    Arc::new(r)
}

fn both() -> Vec<Platform> {
    Platform::parse_list("linux/amd64,linux/arm64").unwrap()
}

async fn build_for(
    w: &World,
    opts: &Options,
    platforms: &[Platform],
    set: &StagedSet,
) -> Result<Report> {
    let base = base_index(w);
    let jobs: Vec<Job> = platforms
        .iter()
        .map(|p| Job {
            platform: p.clone(),
            set,
        })
        .collect();
    let registry = w.engine.registry.clone();
    let remote = || {
        Ok(Some(Remote {
            registry: registry.clone(),
            credential: None,
            base: None,
            boot: None,
        }))
    };
    platform::run(&w.engine, opts, &jobs, Some(&base), &remote, &Silent).await
}

#[tokio::test]
async fn two_platforms_are_two_builds_on_their_own_bases_under_one_index() {
    let w = world();
    let mut opts = w.opts();
    opts.base = INDEXED.into();
    opts.push = true;
    opts.tags = vec!["stable".into()];
    let set = w.set("app");
    let r = build_for(&w, &opts, &both(), &set).await.unwrap();

    // Probes first, then each platform's setups, created for it, on its base.
    let created = w.engine.created();
    let roles: Vec<(String, Option<String>)> = created
        .iter()
        .map(|c| (c.role.clone(), c.platform.clone()))
        .collect();
    let p = |s: &str| Some(s.to_string());
    assert_eq!(
        roles,
        vec![
            ("probe".into(), p("linux/amd64")),
            ("probe".into(), p("linux/arm64")),
            ("setup".into(), p("linux/amd64")),
            ("setup".into(), p("linux/amd64")),
            ("setup".into(), p("linux/arm64")),
            ("setup".into(), p("linux/arm64")),
        ]
    );
    let amd_id = w.engine.tagged(AMD).unwrap().id;
    let arm_id = w.engine.tagged(ARM).unwrap().id;
    assert_eq!(created[2].image, amd_id);
    assert_eq!(created[4].image, arm_id);

    // Each platform its own keys (own content tag), its own manifest.
    assert_eq!(r.platforms.len(), 2);
    let (amd, arm) = (&r.platforms[0], &r.platforms[1]);
    assert_eq!(amd.platform, "linux/amd64");
    assert_eq!(arm.platform, "linux/arm64");
    assert_ne!(amd.image, arm.image);
    assert_ne!(amd.layers[0].image_id, arm.layers[0].image_id);
    let arm_image = w.engine.inspect(arm.image_id.as_ref().unwrap()).await;
    assert_eq!(arm_image.unwrap().unwrap().architecture, "arm64");

    // The index: under the result's tag and --tag, naming both manifests.
    let digest = r.digest.clone().unwrap();
    assert_eq!(r.sdk_container_image, format!("{REPO}@{digest}"));
    assert!(r.image_id.is_none());
    let tag = &r.image[REPO.len() + 1..];
    for t in [tag, "stable"] {
        let index = w.engine.registry.stored(t).unwrap();
        assert_eq!(index.digest, digest, "{t}");
        let v: serde_json::Value = serde_json::from_slice(&index.bytes).unwrap();
        assert_eq!(v["mediaType"], "application/vnd.oci.image.index.v1+json");
        assert_eq!(
            v["manifests"][0]["digest"],
            amd.digest.clone().unwrap().as_str()
        );
        assert_eq!(
            v["manifests"][1]["digest"],
            arm.digest.clone().unwrap().as_str()
        );
        assert_eq!(v["manifests"][1]["platform"]["architecture"], "arm64");
    }
    assert_eq!(r.tags, vec![format!("{REPO}:stable")]);
    assert_eq!(caches(&r), vec![Miss, Miss]);

    // A relaunch: every layer found, the same index; only probes created.
    let again = build_for(&w, &opts, &both(), &set).await.unwrap();
    assert!(again.cached);
    assert_eq!(again.digest, r.digest);
    assert_eq!(w.engine.created().len(), created.len() + 2);
}

#[tokio::test]
async fn one_platform_is_a_plain_build_on_that_platform_s_base() {
    let w = world();
    let mut opts = w.opts();
    opts.base = INDEXED.into();
    let set = w.set("app");
    let arm = Platform::parse_list("linux/arm64/v8").unwrap();
    let r = build_for(&w, &opts, &arm, &set).await.unwrap();
    assert!(r.platforms.is_empty());
    assert!(r.image_id.is_some());
    assert_eq!(r.base.reference, ARM);
    // Its keys name the platform: not the keys of a build with no --platform.
    let mut plain = w.opts();
    plain.base = ARM.into();
    let other = w.quick(&plain, &set).await.unwrap();
    assert_ne!(other.image, r.image);
}

#[tokio::test]
async fn two_platforms_without_push_are_refused_before_any_container() {
    let w = world();
    let mut opts = w.opts();
    opts.base = INDEXED.into();
    let set = w.set("app");
    let e = build_for(&w, &opts, &both(), &set).await.unwrap_err();
    assert!(e.to_string().contains("image index"), "{e}");
    assert!(w.engine.created().is_empty());
}

#[tokio::test]
async fn one_platform_the_engine_s_base_is_for_needs_no_registry() {
    let w = world();
    w.engine.add_base("local/beam-arm:1");
    w.engine.set_architecture("local/beam-arm:1", "arm64");
    let mut opts = w.opts();
    opts.base = "local/beam-arm:1".into();
    let set = w.set("app");
    let arm = Platform::parse_list("linux/arm64").unwrap();
    let jobs = [Job {
        platform: arm[0].clone(),
        set: &set,
    }];
    let remote = || Ok(None::<Remote<Arc<FakeRegistry>>>);
    let r = platform::run(&w.engine, &opts, &jobs, None, &remote, &Silent)
        .await
        .unwrap();
    assert_eq!(r.base.reference, "local/beam-arm:1");
    let setups: Vec<_> = w
        .engine
        .created()
        .into_iter()
        .filter(|c| c.role == "setup")
        .collect();
    assert!(setups
        .iter()
        .all(|c| c.platform.as_deref() == Some("linux/arm64")));
    // The engine's copy is arm64: amd64 is refused, naming what it is.
    let amd = Platform::parse_list("linux/amd64").unwrap();
    let jobs = [Job {
        platform: amd[0].clone(),
        set: &set,
    }];
    let e = platform::run(&w.engine, &opts, &jobs, None, &remote, &Silent)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("linux/arm64"), "{e}");
}

/// The set of `w.set`, with Beam's x86_64 SDK wheel of `version` (bytes `content`).
fn with_sdk(w: &World, version: &str, content: &str) -> StagedSet {
    let mut set = w.set("app");
    let name =
        format!("apache_beam-{version}-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl");
    set.artifacts
        .insert(0, w.artifact(&name, content, crate::stage::Role::Sdk));
    set
}

/// Beam's boot installs only its x86_64 SDK wheel name: on amd64 the staged
/// wheel is handed to it; on arm64 it is left out (no setup names it, it is
/// not in the keys) and the setup is told the base's apache-beam version to
/// check before the boot runs, which is in the keys instead.
#[tokio::test]
async fn an_sdk_wheel_arm64_s_boot_would_not_install_is_left_to_the_base_s_apache_beam() {
    let w = world();
    let mut opts = w.opts();
    opts.base = INDEXED.into();
    opts.push = true;
    let set = with_sdk(&w, "2.77.0", "sdk-a");
    let r = build_for(&w, &opts, &both(), &set).await.unwrap();
    let setups: Vec<_> = w
        .engine
        .created()
        .into_iter()
        .filter(|c| c.role == "setup")
        .collect();
    let sdk = "apache_beam-2.77.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl";
    let (amd, arm): (Vec<_>, Vec<_>) = setups
        .iter()
        .partition(|c| c.platform.as_deref() == Some("linux/amd64"));
    assert!(amd.iter().any(|c| c.entrypoint.iter().any(|a| a == sdk)));
    assert!(amd
        .iter()
        .all(|c| c.entrypoint[2].contains("PREBUILDER_BASE_BEAM=''")));
    assert!(!arm.is_empty());
    for c in &arm {
        assert!(!c.entrypoint.iter().any(|a| a == sdk), "{:?}", c.entrypoint);
        assert!(c.entrypoint[2]
            .contains("PREBUILDER_BASE_BEAM='2.77.0'; PREBUILDER_PLATFORM='linux/arm64'"));
    }
    // The report says where arm64's apache-beam came from.
    assert!(r.platforms[0].sdk.is_none());
    let used = r.platforms[1].sdk.clone().unwrap();
    assert_eq!(
        (
            used.source.as_str(),
            used.version.as_str(),
            used.left_out.as_str()
        ),
        ("base", "2.77.0", sdk)
    );
    // Other bytes of the same version: a new amd64 image, the same arm64 one
    // (the wheel never enters it); another version: a new arm64 one too.
    let other = with_sdk(&w, "2.77.0", "sdk-b");
    let r2 = build_for(&w, &opts, &both(), &other).await.unwrap();
    assert_ne!(r2.platforms[0].image, r.platforms[0].image);
    assert_eq!(r2.platforms[1].image, r.platforms[1].image);
    let newer = with_sdk(&w, "2.78.0", "sdk-a");
    let r3 = build_for(&w, &opts, &both(), &newer).await.unwrap();
    assert_ne!(r3.platforms[1].image, r.platforms[1].image);
    // With no SDK staged, arm64's keys do not ask for a base version.
    let plain = build_for(&w, &opts, &both(), &w.set("app")).await.unwrap();
    assert_ne!(plain.platforms[1].image, r.platforms[1].image);
}

#[tokio::test]
async fn an_engine_failing_to_show_the_base_is_blamed_not_the_base_s_registry() {
    let w = world();
    let mut opts = w.opts();
    opts.base = INDEXED.into();
    let set = w.set("app");
    let arm = Platform::parse_list("linux/arm64").unwrap();
    // The probe inspects nothing; the base's inspect fails.
    w.engine.fail_on("inspect");
    let e = build_for(&w, &opts, &arm, &set).await.unwrap_err();
    assert!(matches!(e, crate::error::Error::Engine { .. }), "{e}");
    assert!(e.to_string().contains("inspect"), "{e}");
    assert!(w.engine.created().iter().all(|c| c.role == "probe"));
}
