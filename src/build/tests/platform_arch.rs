//! `--platform`: what is taken from a registry for a platform (the base an
//! index entry names, a result found instead of built) must record that
//! platform in its image config; the engine's own layers are checked by
//! `check_architecture` (tests in `platform`).

use super::*;
use crate::build::platform::{self, arch, Job, Platform, PlatformBase};
use crate::registry::RawManifest;

fn raw(media_type: &str, bytes: Vec<u8>) -> RawManifest {
    RawManifest {
        media_type: media_type.into(),
        digest: format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes))),
        bytes,
    }
}

/// An image manifest in `r` under `tag` whose config records `config`.
fn image(r: &FakeRegistry, tag: &str, config: &str) -> RawManifest {
    let digest = r.add_blob_content(config.as_bytes());
    let m = raw(
        "application/vnd.oci.image.manifest.v1+json",
        serde_json::json!({"schemaVersion": 2, "config": {"digest": digest}, "layers": []})
            .to_string()
            .into_bytes(),
    );
    r.put_raw(tag, m.clone());
    m
}

const AMD64: &str = r#"{"os":"linux","architecture":"amd64"}"#;
const ARM64: &str = r#"{"os":"linux","architecture":"arm64","variant":"v8"}"#;

fn both() -> Vec<Platform> {
    Platform::parse_list("linux/amd64,linux/arm64").unwrap()
}

async fn run_on(
    w: &World,
    opts: &Options,
    set: &StagedSet,
    base: &Arc<FakeRegistry>,
) -> Result<Report> {
    let jobs: Vec<Job> = both()
        .into_iter()
        .map(|platform| Job { platform, set })
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
    platform::run(&w.engine, opts, &jobs, Some(base), &remote, &Silent).await
}

/// The base's index: amd64 and arm64 entries over images whose configs
/// record `amd` and `arm`; both on the engine under their digest references.
fn base_index(w: &World, amd: &str, arm: &str) -> Arc<FakeRegistry> {
    let r = FakeRegistry::at("localhost:5000", "beam-index");
    let a = image(&r, "amd", amd);
    let b = image(&r, "arm", arm);
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [
        {"digest": a.digest, "platform": {"os": "linux", "architecture": "amd64"}},
        {"digest": b.digest, "platform": {"os": "linux", "architecture": "arm64"}},
    ]});
    r.put_raw(
        "2.77",
        raw(
            "application/vnd.oci.image.index.v1+json",
            index.to_string().into_bytes(),
        ),
    );
    for (m, arch) in [(&a, "amd64"), (&b, "arm64")] {
        let reference = format!("localhost:5000/beam-index@{}", m.digest);
        w.engine.add_base(&reference);
        w.engine.set_architecture(&reference, arch);
    }
    Arc::new(r)
}

fn index_opts(w: &World) -> Options {
    let mut opts = w.opts();
    opts.base = "localhost:5000/beam-index:2.77".into();
    opts.push = true;
    opts
}

#[tokio::test]
async fn a_base_whose_config_is_not_the_platform_its_index_names_is_refused_before_any_setup() {
    let w = world();
    let base = base_index(&w, AMD64, AMD64);
    let e = run_on(&w, &index_opts(&w), &w.set("app"), &base)
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(text.contains("cannot build for linux/arm64"), "{text}");
    assert!(
        text.contains("base localhost:5000/beam-index@sha256:"),
        "{text}"
    );
    assert!(text.contains("records linux/amd64"), "{text}");
    assert_eq!(e.exit_code(), 2);
    assert!(
        w.engine.created().iter().all(|c| c.role == "probe"),
        "no setup container: {:?}",
        w.engine.created()
    );

    // The configs agree with the index: the build goes on.
    let w = world();
    let base = base_index(&w, AMD64, ARM64);
    let r = run_on(&w, &index_opts(&w), &w.set("app"), &base)
        .await
        .unwrap();
    assert_eq!(r.platforms.len(), 2);
}

#[tokio::test]
async fn a_result_found_in_the_registry_for_another_architecture_is_refused() {
    // Learn each platform's result tag from a build elsewhere.
    let elsewhere = world();
    let base = base_index(&elsewhere, AMD64, ARM64);
    let built = run_on(
        &elsewhere,
        &index_opts(&elsewhere),
        &elsewhere.set("app"),
        &base,
    )
    .await
    .unwrap();
    let tags: Vec<String> = built
        .platforms
        .iter()
        .map(|p| p.image[REPO.len() + 1..].to_string())
        .collect();

    // A fresh engine whose registry holds, under both tags, amd64 images.
    let w = world();
    let base = base_index(&w, AMD64, ARM64);
    for t in &tags {
        image(&w.engine.registry, t, AMD64);
    }
    let e = run_on(&w, &index_opts(&w), &w.set("app"), &base)
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(text.contains("cannot build for linux/arm64"), "{text}");
    assert!(text.contains("the result found in the registry"), "{text}");
    assert!(text.contains("records linux/amd64"), "{text}");

    // The right arm64 image there: the whole index is a registry hit.
    let w = world();
    let base = base_index(&w, AMD64, ARM64);
    image(&w.engine.registry, &tags[0], AMD64);
    image(&w.engine.registry, &tags[1], ARM64);
    let r = run_on(&w, &index_opts(&w), &w.set("app"), &base)
        .await
        .unwrap();
    assert!(r.cached, "{r:?}");
    assert!(r.layers.iter().all(|l| l.cache == InRegistry));
}

#[tokio::test]
async fn a_variant_the_platform_names_must_be_recorded() {
    let r = FakeRegistry::at("localhost:5000", "arm-index");
    let v6 = image(
        &r,
        "v6",
        r#"{"os":"linux","architecture":"arm","variant":"v6"}"#,
    );
    let v7 = image(
        &r,
        "v7",
        r#"{"os":"linux","architecture":"arm","variant":"v7"}"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let arm7 = vec![Platform::parse("linux/arm/v7").unwrap()];
    let base = |digest: &str| {
        vec![PlatformBase {
            reference: format!("localhost:5000/arm-index@{digest}"),
            digest: digest.to_string(),
        }]
    };
    arch::check_bases(&r, &arm7, &base(&v7.digest), dir.path())
        .await
        .unwrap();
    let e = arch::check_bases(&r, &arm7, &base(&v6.digest), dir.path())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("records linux/arm/v6"), "{e}");
}
