//! --push through the registry API, --tag and its conflicts.

use super::*;

/// The manifest put under `tag`: its config digest and layer digests.
fn pushed(w: &World, tag: &str) -> crate::registry::ImageLayers {
    let m = w
        .engine
        .registry
        .stored(tag)
        .expect("a manifest put under the tag");
    crate::registry::image_layers(&m.bytes).expect("an image manifest")
}

#[tokio::test]
async fn push_puts_every_blob_then_the_manifests_bottom_up_and_reports_the_digest() {
    let w = world();
    let mut opts = w.opts();
    opts.push = true;
    let r = w.quick(&opts, &w.set("app")).await.unwrap();
    let tag = &r.image[REPO.len() + 1..];
    let digest = w.engine.registry.get(tag).unwrap();
    assert_eq!(r.digest.as_deref(), Some(digest.as_str()));
    assert_eq!(r.sdk_container_image, format!("{REPO}@{digest}"));
    // prebuilder's own OCI manifest: its config is the result's image id
    // (the engine's config bytes), one blob per layer, each in the registry.
    let m = pushed(&w, tag);
    assert_eq!(Some(m.config.clone()), r.image_id);
    assert_eq!(m.layers.len(), 3, "base, dependencies, application");
    for l in &m.layers {
        assert_eq!(l.media_type, crate::registry::OCI_LAYER_GZIP);
        assert!(w.engine.registry.has_blob(&l.digest), "{l:?}");
    }
    assert!(w.engine.registry.has_blob(&m.config));
    // The dependency layer below it too, as `layer-<key>` (issue 11), on
    // the same blobs; each blob uploaded once; one export from the engine.
    let layer_tags: Vec<String> = w
        .engine
        .registry
        .lookups
        .lock()
        .unwrap()
        .iter()
        .filter(|t| t.starts_with("layer-"))
        .cloned()
        .collect();
    let below = pushed(&w, &layer_tags[0]);
    assert_eq!(below.config, r.layers[0].image_id);
    assert_eq!(below.layers[..], m.layers[..2]);
    let uploads = w.engine.registry.writes();
    assert_eq!(uploads.len(), 5, "3 layers, 2 configs: {uploads:?}");
    assert_eq!(w.engine.count("export"), 1);
}

#[tokio::test]
async fn a_push_of_a_key_the_registry_has_is_skipped() {
    let w = world();
    let set = w.set("app");
    let mut opts = w.opts();
    opts.push = true;
    let first = w.quick(&opts, &set).await.unwrap();
    let writes = w.engine.registry.writes();
    let rec = Recorder::default();
    let again = w.build(&opts, &set, &rec).await.unwrap();
    assert_eq!(again.digest, first.digest);
    assert_eq!(w.engine.registry.writes(), writes, "nothing uploaded again");
    assert_eq!(w.engine.count("export"), 1, "nothing exported again");
    assert!(rec.saw("AlreadyPushed"));
}

#[tokio::test]
async fn a_code_change_uploads_only_the_new_layer_and_its_config() {
    let w = world();
    let mut opts = w.opts();
    opts.push = true;
    let first = w.quick(&opts, &w.set("app v1")).await.unwrap();
    let before = w.engine.registry.writes().len();
    let second = w.quick(&opts, &w.set("app v2")).await.unwrap();
    assert_ne!(first.digest, second.digest);
    let new: Vec<String> = w.engine.registry.writes()[before..].to_vec();
    // The base and dependency blobs are known from the layer image pushed
    // before (its manifest), so they are neither compressed nor sent.
    let m = pushed(&w, &second.image[REPO.len() + 1..]);
    // Configs go first: a registry that refuses writes says so before any
    // layer is compressed.
    assert_eq!(
        new,
        [
            format!("upload {}", m.config),
            format!("upload {}", m.layers[2].digest),
        ]
    );
}

#[tokio::test]
async fn a_layer_compressed_before_on_this_machine_is_not_compressed_again() {
    let w = world();
    let mut opts = w.opts();
    opts.push = true;
    let first = w.quick(&opts, &w.set("app")).await.unwrap();
    let base_blob = pushed(&w, &first.image[REPO.len() + 1..]).layers[0].clone();
    // Other requirements: no layer image of this plan is in the registry,
    // but this machine remembers the blob the base layer compressed to.
    let mut set = w.set("app");
    set.artifacts[0] = w.artifact("requirements.txt", "six==1.17.0\n", Role::Requirements);
    let rec = Recorder::default();
    let second = w.build(&opts, &set, &rec).await.unwrap();
    let m = pushed(&w, &second.image[REPO.len() + 1..]);
    assert_eq!(m.layers[0], base_blob, "the same base blob");
    let compressed: Vec<String> = rec
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.contains("compressing"))
        .cloned()
        .collect();
    assert_eq!(
        compressed.len(),
        2,
        "dependencies and application only: {compressed:?}"
    );
    assert!(!compressed.iter().any(|e| e.contains(&first.base.id[..19])));
    // Without the memory, the base layer is compressed again.
    std::fs::remove_dir_all(&opts.blob_map).unwrap();
    set.artifacts[0] = w.artifact("requirements.txt", "six==1.15.0\n", Role::Requirements);
    let rec = Recorder::default();
    w.build(&opts, &set, &rec).await.unwrap();
    assert_eq!(
        rec.0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.contains("compressing"))
            .count(),
        3
    );
}

/// The base as its registry `host` holds it (`library/beam:2.77.0`, one
/// layer blob of `media_type`), pulled from there (the engine records the
/// manifest it came by and the name): the registry, and options that build
/// on it with `--push`.
fn base_from_registry(
    w: &World,
    base: &ImageInfo,
    host: &str,
    blob: &crate::registry::LayerBlob,
) -> (Arc<FakeRegistry>, Options) {
    let registry = Arc::new(FakeRegistry::at(host, "library/beam"));
    let bytes = serde_json::json!({
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1, "digest": base.id},
        "layers": [{"mediaType": blob.media_type, "size": blob.size, "digest": blob.digest}],
    })
    .to_string()
    .into_bytes();
    registry.put_raw(
        "2.77.0",
        crate::registry::RawManifest {
            media_type: "application/vnd.docker.distribution.manifest.v2+json".into(),
            digest: crate::image::image_id(&bytes),
            bytes,
        },
    );
    let pulled_by = registry.get("2.77.0").unwrap();
    let name = format!("{host}/library/beam");
    w.engine
        .set_repo_digests(BASE, &[&format!("{name}@{pulled_by}")]);
    w.engine.tag_as(BASE, &format!("{name}:2.77.0"));
    let opts = Options {
        base: format!("{name}:2.77.0"),
        push: true,
        ..w.opts()
    };
    (registry, opts)
}

/// Build `set` with `base` as the base's registry.
async fn build_with_base_registry(w: &World, opts: &Options, base: Arc<FakeRegistry>) -> Report {
    let registry = w.engine.registry.clone();
    run(
        &w.engine,
        opts,
        &w.set("app"),
        || {
            Ok(Some(Remote {
                registry,
                credential: None,
                base: Some(base),
                boot: None,
            }))
        },
        &Recorder::default(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn base_layers_in_another_registry_are_copied_as_they_are() {
    let w = world();
    let base = w.engine.inspect(BASE).await.unwrap().unwrap();
    // Another registry holds the base, with its blob's bytes.
    let bytes = b"the base layer, compressed by whoever pushed it";
    let blob = crate::registry::LayerBlob {
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        digest: crate::image::image_id(bytes),
        size: bytes.len() as u64,
    };
    let (other, opts) = base_from_registry(&w, &base, "mirror.example:443", &blob);
    other.add_blob_content(bytes);
    let r = build_with_base_registry(&w, &opts, other).await;
    // Same digest as in the base's registry: the next runner finds it there.
    let writes = w.engine.registry.writes();
    assert!(
        writes.contains(&format!("upload {}", blob.digest)),
        "{writes:?}"
    );
    assert_eq!(writes.len(), 5, "the copy, 2 layers, 2 configs: {writes:?}");
    let m = pushed(&w, &r.image[REPO.len() + 1..]);
    assert_eq!(m.layers[0].digest, blob.digest);
}

#[tokio::test]
async fn base_layers_are_mounted_from_the_bases_repository_in_the_same_registry() {
    let w = world();
    let base = w.engine.inspect(BASE).await.unwrap().unwrap();
    // Same host, another repository; a Docker-typed blob the registry has.
    let blob = crate::registry::LayerBlob {
        media_type: "application/vnd.docker.image.rootfs.diff.tar.gzip".into(),
        digest: format!("sha256:{}", "b".repeat(64)),
        size: 42,
    };
    let (base_registry, opts) = base_from_registry(&w, &base, "localhost:5000", &blob);
    w.engine.registry.allow_mount("library/beam", &blob.digest);
    let r = build_with_base_registry(&w, &opts, base_registry).await;
    let writes = w.engine.registry.writes();
    assert_eq!(writes[0], format!("mount {} library/beam", blob.digest));
    // The base layer is named by the base's own blob, as OCI media type.
    let m = pushed(&w, &r.image[REPO.len() + 1..]);
    assert_eq!(m.layers[0].digest, blob.digest);
    assert_eq!(m.layers[0].media_type, crate::registry::OCI_LAYER_GZIP);
    assert_eq!(
        writes.iter().filter(|w| w.starts_with("upload")).count(),
        4,
        "2 layers, 2 configs; the base layer not uploaded: {writes:?}"
    );
}

#[tokio::test]
async fn a_push_failure_after_tagging_fails_the_build_but_keeps_the_local_tags() {
    let w = world();
    w.engine.fail_on("export");
    let mut opts = w.opts();
    opts.push = true;
    opts.tags = vec!["stable".into()];
    let err = w.quick(&opts, &w.set("app")).await.unwrap_err();
    assert!(matches!(err, Error::Engine { .. }), "{err:?}");
    assert!(w.result_tags().iter().any(|t| t.ends_with(":stable")));
    assert!(w.engine.registry.get("stable").is_none(), "nothing pushed");
    assert!(w.engine.registry.writes().is_empty(), "nothing uploaded");
    assert!(w.engine.containers().is_empty());
}

#[tokio::test]
async fn extra_tags_point_at_the_result_and_are_reported() {
    let w = world();
    let mut opts = w.opts();
    opts.tags = vec!["stable".into(), "v1".into()];
    let r = w.quick(&opts, &w.set("app")).await.unwrap();
    assert_eq!(r.tags, [format!("{REPO}:stable"), format!("{REPO}:v1")]);
    let id = r.image_id.unwrap();
    assert_eq!(w.engine.tagged(&format!("{REPO}:stable")).unwrap().id, id);
    assert_eq!(w.engine.tagged(&format!("{REPO}:v1")).unwrap().id, id);
}

#[tokio::test]
async fn a_pushed_tag_that_points_elsewhere_is_a_conflict() {
    let w = world();
    w.engine.registry.put("stable", "sha256:other");
    let mut opts = w.opts();
    opts.push = true;
    opts.tags = vec!["stable".into()];
    let err = w.quick(&opts, &w.set("app")).await.unwrap_err();
    assert!(matches!(err, Error::TagConflict { .. }), "{err:?}");
    assert_eq!(
        w.engine.registry.get("stable").as_deref(),
        Some("sha256:other")
    );
}

#[tokio::test]
async fn replace_tags_moves_a_pushed_tag() {
    let w = world();
    w.engine.registry.put("stable", "sha256:other");
    let mut opts = w.opts();
    opts.push = true;
    opts.replace_tags = true;
    opts.tags = vec!["stable".into()];
    let rec = Recorder::default();
    let r = w.build(&opts, &w.set("app"), &rec).await.unwrap();
    assert!(rec.saw("MovingTag"));
    assert_eq!(w.engine.registry.get("stable"), r.digest);
}

/// Issue 12: a `--tag` the registry holds for other content is refused
/// before anything is built or pushed.
#[tokio::test]
async fn a_tag_conflict_is_refused_before_any_work() {
    let w = world();
    w.engine.registry.put("stable", "sha256:other");
    let mut opts = w.opts();
    opts.push = true;
    opts.tags = vec!["stable".into()];
    let err = w.quick(&opts, &w.set("app")).await.unwrap_err();
    assert!(matches!(err, Error::TagConflict { .. }), "{err:?}");
    assert_eq!(w.engine.count("create"), 0, "nothing built");
    assert_eq!(w.engine.count("push"), 0, "nothing pushed");
    assert_eq!(
        w.engine.registry.get("stable").as_deref(),
        Some("sha256:other")
    );
}

/// Issue 12: `--no-cache --push --tag stable` pushed a new digest under the
/// content tag, then failed on `stable`: the registry's two tags disagreed.
/// Issue 18: a rebuild is pushed when it is identical (no_cache_push.rs);
/// one with another digest (here: the commit fallback's layers differ per
/// container) is refused once built, and the registry keeps both tags.
#[tokio::test]
async fn no_cache_push_never_moves_a_content_tag() {
    let w = world();
    let set = w.set("app");
    let mut opts = w.opts();
    opts.push = true;
    let first = w.quick(&opts, &set).await.unwrap();
    let tag = first.image[REPO.len() + 1..].to_string();
    let digest = first.digest.clone().unwrap();
    w.engine.registry.put("stable", "sha256:other");
    let builds = w.engine.count("create");
    let pushes = w.engine.count("push");

    opts.no_cache = true;
    opts.commit = true;
    opts.tags = vec!["stable".into()];
    let err = w.quick(&opts, &set).await.unwrap_err();
    assert!(matches!(err, Error::TagConflict { .. }), "{err:?}");
    assert_eq!(w.engine.count("create"), builds, "refused before any work");
    // Even --replace-tags never moves a content tag.
    opts.replace_tags = true;
    let err = w.quick(&opts, &set).await.unwrap_err();
    assert!(matches!(err, Error::ContentTagTaken { .. }), "{err:?}");
    assert!(err.hint().unwrap().contains("No tag was put or moved"));
    assert!(w.engine.count("create") > builds, "rebuilt");
    assert_eq!(w.engine.count("push"), pushes, "nothing pushed");
    assert_eq!(w.engine.registry.get(&tag), Some(digest));
    assert_eq!(
        w.engine.registry.get("stable").as_deref(),
        Some("sha256:other")
    );
}

/// A `--tag` already on the result's content is no conflict (a relaunch).
#[tokio::test]
async fn a_tag_on_the_results_own_digest_is_no_conflict() {
    let w = world();
    let set = w.set("app");
    let mut opts = w.opts();
    opts.push = true;
    opts.tags = vec!["stable".into()];
    let first = w.quick(&opts, &set).await.unwrap();
    let again = w.quick(&opts, &set).await.unwrap();
    assert_eq!(again.digest, first.digest);
    assert_eq!(w.engine.registry.get("stable"), first.digest);
}

/// Issue 22: a push to another repository of the same registry mounts each
/// blob this machine put in the first one (remembered per registry), and
/// uploads only the configs; a mount the registry refuses is an upload.
#[tokio::test]
async fn blobs_pushed_to_one_repository_are_mounted_into_another() {
    let w = world();
    let mut opts = w.opts();
    opts.push = true;
    let first = w.quick(&opts, &w.set("app")).await.unwrap();
    let blobs = pushed(&w, &first.image[REPO.len() + 1..]).layers;
    assert_eq!(blobs.len(), 3);
    for allow in [true, false] {
        let other = Arc::new(FakeRegistry::at("localhost:5000", "team/other"));
        if allow {
            for b in &blobs {
                other.allow_mount("team/sdk", &b.digest);
            }
        }
        let mut opts = opts.clone();
        opts.repository = "localhost:5000/team/other".into();
        let registry = other.clone();
        let r = run(
            &w.engine,
            &opts,
            &w.set("app"),
            || {
                Ok(Some(Remote {
                    registry,
                    credential: None,
                    base: None,
                    boot: None,
                }))
            },
            &Recorder::default(),
        )
        .await
        .unwrap();
        assert!(r.digest.is_some());
        let writes = other.writes();
        let mounts = writes.iter().filter(|w| w.starts_with("mount")).count();
        let uploads = writes.iter().filter(|w| w.starts_with("upload")).count();
        match allow {
            true => {
                assert_eq!(mounts, 3, "{writes:?}");
                assert!(writes.contains(&format!("mount {} team/sdk", blobs[0].digest)));
                assert_eq!(uploads, 2, "the configs only: {writes:?}");
            }
            false => assert_eq!((mounts, uploads), (0, 5), "{writes:?}"),
        }
    }
}
