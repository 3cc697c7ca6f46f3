//! The build's decisions against the recording fake engine and registry: no
//! daemon (`DOCKER_HOST` is never read here). Each test builds a small
//! staged set on disk and asserts what the build called, tagged, pushed,
//! left behind and reported.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::*;
use crate::engine::fake::{FakeEngine, FakeRegistry, Setup};
use crate::progress::Silent;
use crate::stage::{Artifact, Role};

const BASE: &str = "beam:2.77.0";
const REPO: &str = "localhost:5000/team/sdk";

/// Events as `Debug` text, in order.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Reporter for Recorder {
    fn event(&self, event: Event<'_>) {
        self.0.lock().unwrap().push(format!("{event:?}"));
    }
}

impl Recorder {
    fn saw(&self, what: &str) -> bool {
        self.0.lock().unwrap().iter().any(|e| e.contains(what))
    }
}

struct World {
    engine: FakeEngine,
    files: tempfile::TempDir,
    locks: tempfile::TempDir,
}

fn world() -> World {
    let engine = FakeEngine::new();
    engine.add_base(BASE);
    World {
        engine,
        files: tempfile::tempdir().unwrap(),
        locks: tempfile::tempdir().unwrap(),
    }
}

impl World {
    fn artifact(&self, name: &str, content: &str, role: Role) -> Artifact {
        let path = self.files.path().join(name);
        std::fs::write(&path, content).unwrap();
        let digest = hex::encode(sha2::Sha256::digest(content.as_bytes()));
        Artifact {
            name: name.to_string(),
            path,
            size: content.len() as u64,
            sha256: digest.clone(),
            content_digest: digest,
            role,
        }
    }

    /// requirements + a wheel (dependencies), workflow (application).
    fn set(&self, app: &str) -> StagedSet {
        let artifacts = vec![
            self.artifact("requirements.txt", "six==1.16.0\n", Role::Requirements),
            self.artifact(
                "six-1.16.0-py3-none-any.whl",
                "wheel",
                Role::RequirementsCache,
            ),
            self.artifact("workflow.tar.gz", app, Role::Workflow),
        ];
        StagedSet::new(artifacts, self.files.path().to_path_buf(), None)
    }

    fn opts(&self) -> Options {
        Options {
            base: BASE.into(),
            repository: REPO.into(),
            tags: Vec::new(),
            push: false,
            replace_tags: false,
            no_cache: false,
            no_check: true,
            boot_from: None,
            network: Network::None,
            lock_dir: self.locks.path().to_path_buf(),
            blob_map: self.locks.path().join("blobs"),
            scratch_dir: self.locks.path().to_path_buf(),
            commit: false,
            labels: Default::default(),
            pull: super::PullPolicy::Never,
            attestations: attest::Attestations::off(),
        }
    }

    async fn build(&self, opts: &Options, set: &StagedSet, rec: &Recorder) -> Result<Report> {
        let registry = self.engine.registry.clone();
        run(
            &self.engine,
            opts,
            set,
            || {
                Ok(Some(Remote {
                    registry,
                    credential: None,
                    base: None,
                    boot: None,
                }))
            },
            rec,
        )
        .await
    }

    async fn quick(&self, opts: &Options, set: &StagedSet) -> Result<Report> {
        self.build(opts, set, &Recorder::default()).await
    }

    fn result_tags(&self) -> Vec<String> {
        self.engine
            .tags()
            .into_iter()
            .filter(|t| t.starts_with(REPO))
            .collect()
    }
}

fn caches(r: &Report) -> Vec<CacheOutcome> {
    r.layers.iter().map(|l| l.cache).collect()
}

use sha2::Digest as _;
use CacheOutcome::{Hit, Miss, Registry as InRegistry};

#[tokio::test]
async fn a_cold_build_builds_every_layer_and_tags_them() {
    let w = world();
    let set = w.set("app v1");
    let r = w.quick(&w.opts(), &set).await.unwrap();
    assert_eq!(caches(&r), [Miss, Miss]);
    assert!(!r.cached);
    let tags = w.result_tags();
    assert_eq!(tags.len(), 2, "{tags:?}");
    assert!(tags.iter().any(|t| t.contains(":layer-")), "{tags:?}");
    assert!(tags.contains(&r.image), "{tags:?} {}", r.image);
    assert_eq!(
        w.engine.tagged(&r.image).unwrap().id,
        r.image_id.clone().unwrap()
    );
}

#[tokio::test]
async fn a_relaunch_hits_every_layer_and_creates_no_container() {
    let w = world();
    let set = w.set("app v1");
    let first = w.quick(&w.opts(), &set).await.unwrap();
    let creates = w.engine.count("create");
    let rec = Recorder::default();
    let again = w.build(&w.opts(), &set, &rec).await.unwrap();
    assert_eq!(caches(&again), [Hit, Hit]);
    assert!(again.cached);
    assert_eq!(again.image, first.image);
    assert_eq!(again.image_id, first.image_id);
    assert_eq!(w.engine.count("create"), creates, "no container on a hit");
    assert!(rec.saw("LayerHit"));
    assert!(!rec.saw("CreatingContainer"));
}

#[tokio::test]
async fn a_relaunch_that_hits_everything_never_asks_the_registry() {
    let w = world();
    let set = w.set("app v1");
    w.quick(&w.opts(), &set).await.unwrap();
    let lookups = w.engine.registry.lookups.lock().unwrap().len();
    let asked = std::sync::atomic::AtomicBool::new(false);
    let r = run(
        &w.engine,
        &w.opts(),
        &set,
        || -> Result<Option<Remote<Arc<FakeRegistry>>>> {
            asked.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(None)
        },
        &Silent,
    )
    .await
    .unwrap();
    assert!(r.cached);
    assert!(
        !asked.load(std::sync::atomic::Ordering::SeqCst),
        "no credentials read"
    );
    assert_eq!(w.engine.registry.lookups.lock().unwrap().len(), lookups);
}

#[tokio::test]
async fn a_code_change_reuses_the_dependency_layer() {
    let w = world();
    let first = w.quick(&w.opts(), &w.set("app v1")).await.unwrap();
    let second = w.quick(&w.opts(), &w.set("app v2")).await.unwrap();
    assert_eq!(caches(&second), [Hit, Miss]);
    assert_eq!(second.layers[0].image_id, first.layers[0].image_id);
    assert_ne!(second.image, first.image);
    assert_eq!(w.engine.count("create"), 3, "two builds, one reused layer");
}

#[tokio::test]
async fn the_application_layer_starts_from_the_dependency_layer() {
    let w = world();
    let r = w.quick(&w.opts(), &w.set("app")).await.unwrap();
    let deps = &r.layers[0].image_id;
    let creates: Vec<String> = w
        .engine
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("create setup"))
        .collect();
    assert_eq!(creates.len(), 2);
    assert!(creates[1].ends_with(deps.as_str()), "{creates:?}");
}

#[tokio::test]
async fn layers_are_loaded_from_the_snapshot_not_committed() {
    let w = world();
    let rec = Recorder::default();
    w.build(&w.opts(), &w.set("app"), &rec).await.unwrap();
    assert_eq!(w.engine.count("load"), 2);
    assert_eq!(w.engine.count("commit"), 0);
    assert!(rec.saw("LoadingLayer"));
}

#[tokio::test]
async fn prebuilder_commit_commits_instead_of_loading() {
    let w = world();
    let mut opts = w.opts();
    opts.commit = true;
    let rec = Recorder::default();
    let r = w.build(&opts, &w.set("app"), &rec).await.unwrap();
    assert_eq!(w.engine.count("load"), 0);
    assert_eq!(w.engine.count("commit"), 2);
    assert!(rec.saw("Committing"));
    assert_eq!(caches(&r), [Miss, Miss]);
}

#[tokio::test]
async fn a_base_without_gnu_tools_falls_back_to_a_commit() {
    let w = world();
    w.engine.set_setup(Setup {
        status: 0,
        output: vec![],
        snapshot: false,
    });
    let rec = Recorder::default();
    w.build(&w.opts(), &w.set("app"), &rec).await.unwrap();
    assert!(rec.saw("NoSnapshot"));
    assert_eq!(w.engine.count("commit"), 2);
    assert_eq!(w.engine.count("load"), 0);
}

#[tokio::test]
async fn a_failed_load_falls_back_to_a_commit() {
    let w = world();
    w.engine.fail_on("load");
    let r = w.quick(&w.opts(), &w.set("app")).await.unwrap();
    assert_eq!(caches(&r), [Miss, Miss]);
    assert_eq!(w.engine.count("commit"), 1, "the first layer was committed");
}

#[tokio::test]
async fn the_layer_keeps_the_bases_config_and_carries_key_and_record_labels() {
    let w = world();
    let r = w.quick(&w.opts(), &w.set("app")).await.unwrap();
    let image = w.engine.tagged(&r.image).unwrap();
    assert_eq!(image.entrypoint, [crate::plan::BOOT]);
    assert_eq!(image.env, ["PATH=/usr/local/bin:/usr/bin:/bin"]);
    assert_eq!(image.labels[LABEL_LAYER], "application");
    assert_eq!(image.labels[crate::engine::LABEL], "image");
    assert!(image.labels[LABEL_KEY].starts_with(&r.image[REPO.len() + 1..]));
    let record = crate::record::Record::parse(&image.labels[crate::record::LABEL_RECORD]).unwrap();
    assert_eq!(record.layer, "application");
    assert!(
        record.inputs.contains_key("dependencies"),
        "inputs chain: {record:?}"
    );
}

#[tokio::test]
async fn every_container_is_removed_after_a_build() {
    let w = world();
    w.quick(&w.opts(), &w.set("app")).await.unwrap();
    assert!(w.engine.containers().is_empty());
    assert_eq!(w.engine.count("remove_container"), w.engine.count("create"));
}

#[tokio::test]
async fn the_setup_gets_the_layers_artifacts_and_manifest() {
    let w = world();
    w.quick(&w.opts(), &w.set("app")).await.unwrap();
    let uploads: Vec<String> = w
        .engine
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("upload"))
        .collect();
    assert_eq!(uploads.len(), 2, "{uploads:?}");
    assert!(uploads.iter().all(|u| u.ends_with(crate::plan::BEAM_DIR)));
}

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

#[tokio::test]
async fn no_cache_rebuilds_every_layer() {
    let w = world();
    let set = w.set("app");
    w.quick(&w.opts(), &set).await.unwrap();
    let mut opts = w.opts();
    opts.no_cache = true;
    let r = w.quick(&opts, &set).await.unwrap();
    assert_eq!(caches(&r), [Miss, Miss]);
    assert_eq!(w.engine.count("create setup"), 4);
}

#[tokio::test]
async fn no_cache_ignores_the_registry() {
    let w = world();
    let set = w.set("app");
    let first = w.quick(&w.opts(), &set).await.unwrap();
    w.engine
        .registry
        .put(&first.image[REPO.len() + 1..], "sha256:remote");
    let mut opts = w.opts();
    opts.no_cache = true;
    let r = w.quick(&opts, &set).await.unwrap();
    assert_eq!(caches(&r), [Miss, Miss]);
    assert!(r.digest.is_none());
}

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

#[tokio::test]
async fn two_concurrent_runs_build_once_under_one_lock() {
    let w = world();
    let (a, b) = (w.set("app"), w.set("app"));
    let (oa, ob) = (w.opts(), w.opts());
    let (ra, rb) = tokio::join!(w.quick(&oa, &a), w.quick(&ob, &b));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.image, rb.image);
    assert_eq!(ra.image_id, rb.image_id);
    assert_eq!(w.engine.count("create setup"), 2, "each layer built once");
    let mut all = caches(&ra);
    all.extend(caches(&rb));
    assert_eq!(all.iter().filter(|c| **c == Miss).count(), 2, "{all:?}");
}

#[tokio::test]
async fn an_unwritable_lock_directory_builds_anyway() {
    let w = world();
    let mut opts = w.opts();
    let file = w.locks.path().join("not-a-dir");
    std::fs::write(&file, "").unwrap();
    opts.lock_dir = file;
    let r = w.quick(&opts, &w.set("app")).await.unwrap();
    assert_eq!(caches(&r), [Miss, Miss]);
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

#[tokio::test]
async fn a_boot_layer_comes_first_and_is_reused() {
    let w = world();
    w.engine
        .add_image("gpu:1", &["/bin/sh"], crate::engine::fake::GOOD_PROBE);
    let mut opts = w.opts();
    opts.base = "gpu:1".into();
    opts.boot_from = Some(BASE.into());
    let set = w.set("app");
    let rec = Recorder::default();
    let r = w.build(&opts, &set, &rec).await.unwrap();
    let names: Vec<&str> = r.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["boot", "dependencies", "application"]);
    assert_eq!(caches(&r), [Miss, Miss, Miss]);
    assert!(rec.saw("BootCopying"));
    let boot = w
        .engine
        .tagged(&format!("{REPO}:layer-{}", &r.layers[1].image_id[..0]));
    assert!(boot.is_none(), "the boot layer is tagged by its key only");
    assert!(
        w.result_tags()
            .iter()
            .filter(|t| t.contains(":layer-"))
            .count()
            == 2
    );
    let image = w.engine.tagged(&r.image).unwrap();
    assert_eq!(image.entrypoint, [crate::plan::BOOT]);
    let again = w.quick(&opts, &set).await.unwrap();
    assert_eq!(caches(&again), [Hit, Hit, Hit]);
    assert!(w.engine.containers().is_empty());
}

#[tokio::test]
async fn a_boot_source_without_the_boot_is_refused() {
    let w = world();
    w.engine.add_image("gpu:1", &["/bin/sh"], "");
    w.engine.add_image("notbeam:1", &["/bin/sh"], "");
    let mut opts = w.opts();
    opts.base = "gpu:1".into();
    opts.boot_from = Some("notbeam:1".into());
    let err = w.quick(&opts, &w.set("app")).await.unwrap_err();
    assert!(matches!(err, Error::BootSourceMissing { .. }), "{err:?}");
    assert!(w.engine.containers().is_empty());
}

/// `--boot-from` on a fresh runner: a base `gpu:1` without the boot and the
/// Beam image [`BASE`] as the boot source, each only in its own registry
/// (which reports its id and manifest digest, as a real one does) until pulled.
struct BootWorld {
    w: World,
    base_registry: Arc<FakeRegistry>,
    boot_registry: Arc<FakeRegistry>,
    base_id: String,
}

const GPU: &str = "gpu:1";

fn boot_world() -> BootWorld {
    let w = World {
        engine: FakeEngine::new(),
        files: tempfile::tempdir().unwrap(),
        locks: tempfile::tempdir().unwrap(),
    };
    let base_id = w
        .engine
        .add_remote_image(GPU, &["/bin/sh"], crate::engine::fake::GOOD_PROBE);
    let boot_id = w.engine.add_remote_image(
        BASE,
        &[crate::plan::BOOT, "/bin/sh"],
        crate::engine::fake::GOOD_PROBE,
    );
    let registry = |host: &str, reference: &str, id: &str| {
        let r = Arc::new(FakeRegistry::new(host));
        let tag = crate::registry::ImageRef::parse(reference)
            .tag_or_digest()
            .to_string();
        r.set_image_id(&tag, id);
        r.put(
            &tag,
            &crate::engine::fake::remote_manifest_digest(reference),
        );
        r
    };
    BootWorld {
        base_registry: registry("gpu.example", GPU, &base_id),
        boot_registry: registry("beam.example", BASE, &boot_id),
        base_id,
        w,
    }
}

impl BootWorld {
    fn opts(&self) -> Options {
        let mut opts = self.w.opts();
        opts.base = GPU.into();
        opts.boot_from = Some(BASE.into());
        opts.pull = super::PullPolicy::Missing;
        opts
    }

    async fn build(&self, opts: &Options, set: &StagedSet, rec: &Recorder) -> Result<Report> {
        let registry = self.w.engine.registry.clone();
        let base = self.base_registry.clone();
        let boot = self.boot_registry.clone();
        run(
            &self.w.engine,
            opts,
            set,
            || {
                Ok(Some(Remote {
                    registry,
                    credential: None,
                    base: Some(base),
                    boot: Some(boot),
                }))
            },
            rec,
        )
        .await
    }

    fn pulls(&self) -> Vec<String> {
        self.w
            .engine
            .calls()
            .into_iter()
            .filter(|c| c.starts_with("pull "))
            .collect()
    }
}

/// The report of a `--boot-from` build with both images already pulled:
/// the keys of a local build.
async fn local_boot_build(app: &str) -> Report {
    let b = boot_world();
    for reference in [GPU, BASE] {
        pull::pull(&b.w.engine, reference, &Silent).await.unwrap();
    }
    let before = b.base_registry.lookups.lock().unwrap().len();
    let r = b
        .build(&b.opts(), &b.w.set(app), &Recorder::default())
        .await
        .unwrap();
    assert_eq!(caches(&r), [Miss, Miss, Miss]);
    assert_eq!(
        b.base_registry.lookups.lock().unwrap().len(),
        before,
        "both images local: their registries are not asked"
    );
    r
}

fn key_tag(image: &str) -> &str {
    image.rsplit_once(':').map_or(image, |(_, t)| t)
}

#[tokio::test]
async fn boot_from_on_an_empty_engine_hits_the_registry_with_nothing_pulled() {
    let local = local_boot_build("app").await;
    let b = boot_world();
    b.w.engine
        .registry
        .put(key_tag(&local.image), "sha256:result-in-registry");
    let rec = Recorder::default();
    let r = b.build(&b.opts(), &b.w.set("app"), &rec).await.unwrap();
    assert_eq!(r.image, local.image, "the keys of a local build");
    assert!(r.cached);
    assert_eq!(r.digest.as_deref(), Some("sha256:result-in-registry"));
    assert_eq!(
        r.sdk_container_image,
        format!("{REPO}@sha256:result-in-registry")
    );
    let names: Vec<&str> = r.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["boot", "dependencies", "application"]);
    assert_eq!(caches(&r), [InRegistry, InRegistry, InRegistry]);
    assert_eq!(r.base.id, b.base_id);
    assert!(b.pulls().is_empty(), "{:?}", b.pulls());
    assert_eq!(b.w.engine.image_count(), 0, "nothing on the engine");
    assert_eq!(b.w.engine.count("create"), 0);
    assert!(rec.saw("BaseResolved"));
    assert!(rec.saw("BootResolved"));
    assert!(rec.saw("NothingPulled"));
    assert!(!rec.saw("Pulling"));
}

#[tokio::test]
async fn boot_from_on_an_empty_engine_pulls_the_base_and_the_boot_image_on_a_miss() {
    let local = local_boot_build("app").await;
    let b = boot_world();
    let rec = Recorder::default();
    let r = b.build(&b.opts(), &b.w.set("app"), &rec).await.unwrap();
    assert_eq!(b.pulls(), [format!("pull {GPU}"), format!("pull {BASE}")]);
    assert_eq!(caches(&r), [Miss, Miss, Miss]);
    assert_eq!(r.image, local.image, "the keys of a local build");
    assert_eq!(r.image_id, local.image_id);
    assert_eq!(r.base.id, b.base_id);
    assert!(rec.saw("BootCopying"));
    // The registry was asked for the result before anything was pulled.
    let calls = b.w.engine.calls();
    let first_pull = calls.iter().position(|c| c.starts_with("pull ")).unwrap();
    assert!(
        calls[..first_pull].iter().all(|c| !c.starts_with("create")),
        "{calls:?}"
    );
    assert!(b
        .w
        .engine
        .registry
        .lookups
        .lock()
        .unwrap()
        .contains(&key_tag(&r.image).to_string()));
    // Relaunched: everything is local now, no registry is asked.
    let lookups = b.boot_registry.lookups.lock().unwrap().len();
    let again = b
        .build(&b.opts(), &b.w.set("app"), &Recorder::default())
        .await
        .unwrap();
    assert_eq!(caches(&again), [Hit, Hit, Hit]);
    assert_eq!(b.pulls().len(), 2);
    assert_eq!(b.boot_registry.lookups.lock().unwrap().len(), lookups);
}

#[tokio::test]
async fn a_boot_image_missing_alone_is_resolved_from_its_registry_not_pulled() {
    let local = local_boot_build("app").await;
    let b = boot_world();
    pull::pull(&b.w.engine, GPU, &Silent).await.unwrap();
    b.w.engine
        .registry
        .put(key_tag(&local.image), "sha256:result-in-registry");
    let r = b
        .build(&b.opts(), &b.w.set("app"), &Recorder::default())
        .await
        .unwrap();
    assert!(r.cached);
    assert_eq!(r.image, local.image);
    assert_eq!(
        b.pulls(),
        [format!("pull {GPU}")],
        "only the test's own pull"
    );
    assert!(
        b.base_registry.lookups.lock().unwrap().is_empty(),
        "the base is local"
    );
    assert_eq!(
        *b.boot_registry.lookups.lock().unwrap(),
        ["image_id 2.77.0"]
    );
}

#[tokio::test]
async fn a_code_change_with_boot_from_on_an_empty_engine_misses_and_builds() {
    let local = local_boot_build("app v1").await;
    let b = boot_world();
    b.w.engine
        .registry
        .put(key_tag(&local.image), "sha256:result-in-registry");
    let r = b
        .build(&b.opts(), &b.w.set("app v2"), &Recorder::default())
        .await
        .unwrap();
    assert_ne!(r.image, local.image);
    assert_eq!(caches(&r), [Miss, Miss, Miss]);
    assert_eq!(b.pulls().len(), 2);
}

#[tokio::test]
async fn pull_never_refuses_a_missing_boot_image_by_name_and_builds_nothing() {
    let b = boot_world();
    pull::pull(&b.w.engine, GPU, &Silent).await.unwrap();
    let mut opts = b.opts();
    opts.pull = super::PullPolicy::Never;
    let err = b
        .build(&opts, &b.w.set("app"), &Recorder::default())
        .await
        .unwrap_err();
    match &err {
        Error::ImageMissing { what, image } => {
            assert_eq!(*what, "--boot-from image");
            assert_eq!(image, BASE);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.hint().unwrap().contains("--pull missing"),
        "{:?}",
        err.hint()
    );
    assert_eq!(b.pulls().len(), 1, "only the test's own pull");
    assert_eq!(b.w.engine.count("create"), 0);
}

#[tokio::test]
async fn the_report_lists_layers_in_order_with_image_ids() {
    let w = world();
    let r = w.quick(&w.opts(), &w.set("app")).await.unwrap();
    let names: Vec<&str> = r.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["dependencies", "application"]);
    assert_eq!(r.layers[1].image_id, r.image_id.clone().unwrap());
    assert_eq!(r.base.reference, BASE);
    assert_eq!(r.base.id, w.engine.tagged(BASE).unwrap().id);
    assert_eq!(r.sdk_container_image, r.image);
    assert!(r.digest.is_none());
}

#[tokio::test]
async fn setup_output_reaches_the_reporter_line_by_line() {
    let w = world();
    w.engine.set_setup(Setup {
        status: 0,
        output: vec!["one".into(), "two".into()],
        snapshot: true,
    });
    let rec = Recorder::default();
    w.build(&w.opts(), &w.set("app"), &rec).await.unwrap();
    let lines: Vec<String> = rec
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.starts_with("SetupOutput"))
        .cloned()
        .collect();
    assert_eq!(lines.len(), 4, "two lines per layer: {lines:?}");
    assert!(lines[0].contains("\"one\""), "{lines:?}");
}

#[tokio::test]
async fn only_files_to_stage_is_nothing_to_install() {
    let w = world();
    let set = StagedSet::new(
        vec![w.artifact("data.txt", "x", Role::FileToStage)],
        PathBuf::from(w.files.path()),
        None,
    );
    let err = w.quick(&w.opts(), &set).await.unwrap_err();
    assert!(matches!(err, Error::NothingToInstall { .. }), "{err:?}");
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

#[tokio::test]
async fn an_engine_that_ignores_the_commit_config_is_refused_and_nothing_is_tagged() {
    let w = world();
    w.engine.commit_ignores_config();
    let mut opts = w.opts();
    opts.commit = true;
    let err = w.quick(&opts, &w.set("app")).await.unwrap_err();
    let Error::ResultMismatch { differences, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(
        differences[0].starts_with("Entrypoint is [\"/bin/sh\""),
        "{differences:?}"
    );
    assert!(differences
        .iter()
        .any(|d| d.contains("label prebuilder.key is missing")));
    assert!(w.result_tags().is_empty(), "{:?}", w.result_tags());
    assert!(w.engine.containers().is_empty());
    assert_eq!(
        w.engine.count("remove_image"),
        1,
        "the wrong image is removed"
    );
}

#[tokio::test]
async fn a_staged_file_left_in_a_committed_container_is_refused() {
    let w = world();
    w.engine
        .setup_leaves("/opt/apache/beam/artifacts/requirements.txt");
    let mut opts = w.opts();
    opts.commit = true;
    let err = w.quick(&opts, &w.set("app")).await.unwrap_err();
    let Error::ResultMismatch { differences, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        differences,
        &["setup leftovers in the image: /opt/apache/beam/artifacts/requirements.txt"]
    );
    assert!(w.result_tags().is_empty());
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
/// Now it is refused before any work and the registry keeps both tags.
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
    opts.tags = vec!["stable".into()];
    let err = w.quick(&opts, &set).await.unwrap_err();
    assert!(matches!(err, Error::ContentTagTaken { .. }), "{err:?}");
    assert!(err.hint().unwrap().contains("nothing was built or pushed"));
    // Even --replace-tags never moves a content tag.
    opts.replace_tags = true;
    let err = w.quick(&opts, &set).await.unwrap_err();
    assert!(matches!(err, Error::ContentTagTaken { .. }), "{err:?}");
    assert_eq!(w.engine.count("create"), builds, "nothing built");
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

/// Issue 12: 50,000 inputs made the artifacts label 4 MB; it is bounded,
/// and the setup's staged files go on a volume (fast on any storage driver).
#[tokio::test]
async fn labels_stay_bounded_and_staged_files_go_on_a_volume() {
    let w = world();
    let mut artifacts = vec![w.artifact("requirements.txt", "six\n", Role::Requirements)];
    for i in 0..2000 {
        artifacts.push(w.artifact(&format!("f{i:05}.txt"), "x", Role::FileToStage));
    }
    let set = StagedSet::new(artifacts, w.files.path().to_path_buf(), None);
    let r = w.quick(&w.opts(), &set).await.unwrap();
    let image = w.engine.tagged(&r.image).unwrap();
    let label = &image.labels[LABEL_ARTIFACTS];
    assert!(label.len() < 1024, "{}", label.len());
    assert!(
        label.starts_with("sha256:") && label.contains("2000 artifacts"),
        "{label}"
    );
    let total: usize = image.labels.values().map(String::len).sum();
    assert!(total <= 64 * 1024, "all labels: {total} bytes");
    let setups: Vec<_> = w
        .engine
        .created()
        .into_iter()
        .filter(|c| c.role == "setup")
        .collect();
    assert!(!setups.is_empty());
    assert!(
        setups
            .iter()
            .all(|c| c.volume.as_deref() == Some(crate::plan::ARTIFACTS_DIR)),
        "{setups:?}"
    );
}

/// A PyFlink set: requirements and an archive below, a python file above.
fn flink_set(w: &World, udf: &str) -> StagedSet {
    use crate::stage::flink::FlinkSetup;
    let artifacts = vec![
        w.artifact("requirements.txt", "tabulate==0.9.0\n", Role::Requirements),
        w.artifact("venv.zip", "zip", Role::PyArchive),
        w.artifact("udfs.py", udf, Role::PyFile),
    ];
    let setup = FlinkSetup {
        executable: Some("/opt/flink/python-archives/venv/bin/python".into()),
        client_executable: None,
        files_pythonpath: vec!["/opt/flink/python-files/0".into()],
        extra_pythonpath: vec![],
        archives: [(
            "venv".to_string(),
            "/opt/flink/python-archives/venv".to_string(),
        )]
        .into(),
        requirements_cache: false,
        requirements_input: Some("requirements.txt".into()),
    };
    StagedSet::new(artifacts, w.files.path().to_path_buf(), None)
        .with_mode(crate::stage::SetupMode::Flink(setup))
}

const FLINK_BASE: &str = "flink:2.3.0-py3.11";

#[tokio::test]
async fn a_pyflink_build_runs_its_own_setup_on_a_base_without_the_boot() {
    let w = world();
    w.engine.add_image(
        FLINK_BASE,
        &["/bin/sh"],
        "java=yes\npython=3.11.2\nflink=2.3.0",
    );
    let mut opts = w.opts();
    opts.base = FLINK_BASE.into();
    let rec = Recorder::default();
    let r = w.build(&opts, &flink_set(&w, "v1"), &rec).await.unwrap();
    assert_eq!(caches(&r), [Miss, Miss]);
    assert!(rec.saw("the PyFlink setup"), "the step is named");
    let uploads: Vec<String> = w
        .engine
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("upload"))
        .collect();
    assert_eq!(uploads.len(), 2, "{uploads:?}");
    assert!(uploads.iter().all(|u| u.ends_with(" /tmp")), "{uploads:?}");
    let image = w.engine.tagged(&r.image).unwrap();
    let exe = "/opt/flink/python-archives/venv/bin/python";
    assert!(
        image.env.contains(&format!("PYFLINK_PYTHON={exe}")),
        "{:?}",
        image.env
    );
    assert!(image
        .env
        .contains(&"PYTHONPATH=/opt/flink/python-files/0".to_string()));
    let flink = r.flink.as_ref().unwrap();
    assert_eq!(flink.python_executable.as_deref(), Some(exe));
    assert_eq!(flink.archives["venv"], "/opt/flink/python-archives/venv");

    // A python file change: the dependencies layer is reused.
    let again = w.quick(&opts, &flink_set(&w, "v2")).await.unwrap();
    assert_eq!(caches(&again), [Hit, Miss]);
    assert_eq!(again.layers[0].image_id, r.layers[0].image_id);
}

#[tokio::test]
async fn a_pyflink_base_without_java_or_flink_is_refused_before_any_setup() {
    let w = world();
    w.engine.add_image(
        FLINK_BASE,
        &["/bin/sh"],
        "java=no\npython=3.11.2\nflink=none",
    );
    let mut opts = w.opts();
    opts.base = FLINK_BASE.into();
    opts.no_check = false;
    let e = w.quick(&opts, &flink_set(&w, "v1")).await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("not ready for PyFlink") && text.contains("java") && text.contains("pyflink"),
        "{text}"
    );
    assert_eq!(w.engine.count("upload"), 0, "nothing set up");
    assert!(w.result_tags().is_empty());
    assert!(w.engine.containers().is_empty());
}

// ---- attestations (see `attest`): SBOMs and provenance as referrers ----

fn attesting(w: &World) -> Options {
    Options {
        push: true,
        attestations: attest::Attestations::default(),
        ..w.opts()
    }
}

/// The kinds of the referrers the registry lists for `digest`.
async fn referrer_kinds(registry: &FakeRegistry, digest: &str) -> Vec<String> {
    crate::registry::referrers::list(registry, digest)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|d| d.artifact_type)
        .collect()
}

fn referrer_writes(registry: &FakeRegistry) -> usize {
    registry
        .writes()
        .iter()
        .filter(|w| w.starts_with("referrer "))
        .count()
}

#[tokio::test]
async fn a_push_attaches_both_sboms_and_the_provenance_and_keeps_the_images_digest() {
    let plain = world();
    let bare = plain
        .quick(
            &Options {
                push: true,
                ..plain.opts()
            },
            &plain.set("app"),
        )
        .await
        .unwrap();
    let w = world();
    let rec = Recorder::default();
    let r = w.build(&attesting(&w), &w.set("app"), &rec).await.unwrap();
    let digest = r.digest.clone().unwrap();
    assert_eq!(
        bare.digest, r.digest,
        "the result's own digest is unchanged"
    );
    let tag = &r.image[REPO.len() + 1..];
    assert_eq!(w.engine.registry.get(tag).as_deref(), Some(digest.as_str()));
    assert_eq!(
        referrer_kinds(&w.engine.registry, &digest).await,
        [
            "application/spdx+json",
            "application/vnd.cyclonedx+json",
            "application/vnd.in-toto+json"
        ]
    );
    assert_eq!(
        rec.0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.contains("Attestation {"))
            .count(),
        3
    );
    // The provenance is about the pushed digest, and names the record's inputs.
    let dir = tempfile::tempdir().unwrap();
    let provenance = crate::attest::attach::fetch(
        &*w.engine.registry,
        &digest,
        crate::attest::Kind::Provenance,
        dir.path(),
    )
    .await
    .unwrap()
    .unwrap();
    let claims = crate::attest::provenance::claims(&provenance).unwrap();
    assert_eq!(claims.subjects, std::slice::from_ref(&digest));
    let (_, record) = crate::record::load_complete(&w.engine, r.image_id.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(claims.inputs, record.inputs);
    // The SBOM lists the freeze, six from its staged wheel.
    let sbom = crate::attest::attach::fetch(
        &*w.engine.registry,
        &digest,
        crate::attest::Kind::Spdx,
        dir.path(),
    )
    .await
    .unwrap()
    .unwrap();
    let sbom: serde_json::Value = serde_json::from_slice(&sbom).unwrap();
    let six = sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "six")
        .unwrap();
    let wheel = &w.set("app").artifacts[1];
    assert_eq!(six["packageFileName"], wheel.name.as_str());
    assert_eq!(six["checksums"][0]["checksumValue"], wheel.sha256.as_str());
    let pip = sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "pip")
        .unwrap();
    assert_eq!(pip["sourceInfo"], "in the base image");
}

#[tokio::test]
async fn a_second_push_attaches_nothing_new() {
    let w = world();
    let set = w.set("app");
    let first = w.quick(&attesting(&w), &set).await.unwrap();
    let writes = w.engine.registry.writes();
    let rec = Recorder::default();
    let again = w.build(&attesting(&w), &set, &rec).await.unwrap();
    assert_eq!(again.digest, first.digest);
    assert_eq!(w.engine.registry.writes(), writes, "nothing written again");
    assert!(rec.saw("existing: true"));
    assert!(!rec.saw("existing: false"));
}

#[tokio::test]
async fn no_attestations_attaches_nothing() {
    let w = world();
    let mut opts = attesting(&w);
    opts.attestations.attach = false;
    let r = w.quick(&opts, &w.set("app")).await.unwrap();
    assert_eq!(referrer_writes(&w.engine.registry), 0);
    assert!(referrer_kinds(&w.engine.registry, &r.digest.unwrap())
        .await
        .is_empty());
}

#[tokio::test]
async fn only_the_chosen_sbom_format_is_attached() {
    let w = world();
    let mut opts = attesting(&w);
    opts.attestations.wanted.spdx = false;
    let r = w.quick(&opts, &w.set("app")).await.unwrap();
    assert_eq!(
        referrer_kinds(&w.engine.registry, &r.digest.unwrap()).await,
        [
            "application/vnd.cyclonedx+json",
            "application/vnd.in-toto+json"
        ]
    );
}

#[tokio::test]
async fn without_push_the_registry_is_not_written_but_the_directory_is() {
    let w = world();
    let dir = tempfile::tempdir().unwrap();
    let mut opts = attesting(&w);
    opts.push = false;
    opts.attestations.dir = Some(dir.path().join("docs"));
    let r = w.quick(&opts, &w.set("app")).await.unwrap();
    assert_eq!(referrer_writes(&w.engine.registry), 0);
    let id = r.image_id.unwrap();
    let spdx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("docs/sbom.spdx.json")).unwrap())
            .unwrap();
    assert_eq!(
        spdx["packages"][0]["versionInfo"],
        id.as_str(),
        "about the image id"
    );
    let provenance = std::fs::read(dir.path().join("docs/provenance.intoto.json")).unwrap();
    assert_eq!(
        crate::attest::provenance::claims(&provenance)
            .unwrap()
            .subjects,
        [id]
    );
    assert!(dir.path().join("docs/sbom.cdx.json").is_file());
}

#[tokio::test]
async fn the_directory_holds_the_bytes_attached() {
    let w = world();
    let dir = tempfile::tempdir().unwrap();
    let mut opts = attesting(&w);
    opts.attestations.dir = Some(dir.path().to_path_buf());
    let r = w.quick(&opts, &w.set("app")).await.unwrap();
    let digest = r.digest.unwrap();
    for kind in crate::attest::Kind::ALL {
        let attached = crate::attest::attach::fetch(&*w.engine.registry, &digest, kind, dir.path())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            attached,
            std::fs::read(dir.path().join(kind.file_name())).unwrap(),
            "{kind:?}"
        );
    }
}

/// A registry hit of a result pushed without attestations: they are made
/// from what the registry holds (nothing is pulled) and attached, the same
/// bytes as the machine that built it makes.
#[tokio::test]
async fn a_registry_hit_attaches_what_is_missing_from_the_registrys_copy() {
    let builder = world();
    let set = builder.set("app");
    let dir = tempfile::tempdir().unwrap();
    let mut opts = attesting(&builder);
    opts.attestations.attach = false;
    opts.attestations.dir = Some(dir.path().join("builder"));
    let built = builder.quick(&opts, &set).await.unwrap();
    assert_eq!(referrer_writes(&builder.engine.registry), 0);

    let mut engine = FakeEngine::new();
    engine.add_base(BASE);
    engine.registry = builder.engine.registry.clone();
    let w = World {
        engine,
        files: tempfile::tempdir().unwrap(),
        locks: tempfile::tempdir().unwrap(),
    };
    let mut opts = attesting(&w);
    opts.attestations.dir = Some(dir.path().join("hit"));
    let rec = Recorder::default();
    let hit = w.build(&opts, &w.set("app"), &rec).await.unwrap();
    assert!(rec.saw("RegistryHit"));
    assert!(hit.image_id.is_none(), "nothing pulled");
    assert_eq!(hit.digest, built.digest);
    assert_eq!(w.engine.count("pull"), 0);
    assert_eq!(referrer_writes(&w.engine.registry), 3);
    for kind in crate::attest::Kind::ALL {
        assert_eq!(
            std::fs::read_to_string(dir.path().join("hit").join(kind.file_name())).unwrap(),
            std::fs::read_to_string(dir.path().join("builder").join(kind.file_name())).unwrap(),
            "{kind:?}: the same facts, from the engine or the registry"
        );
    }
}

#[tokio::test]
async fn a_registry_hit_without_push_writes_nothing_to_the_registry() {
    let builder = world();
    let built = builder
        .quick(
            &Options {
                push: true,
                ..builder.opts()
            },
            &builder.set("app"),
        )
        .await
        .unwrap();
    let mut engine = FakeEngine::new();
    engine.add_base(BASE);
    engine.registry = builder.engine.registry.clone();
    let w = World {
        engine,
        files: tempfile::tempdir().unwrap(),
        locks: tempfile::tempdir().unwrap(),
    };
    let mut opts = attesting(&w);
    opts.push = false;
    let hit = w.quick(&opts, &w.set("app")).await.unwrap();
    assert_eq!(hit.digest, built.digest);
    assert_eq!(referrer_writes(&w.engine.registry), 0);
}

/// `prebuilder verify`'s reading of a pushed result: everything agrees;
/// a provenance about other inputs, attached by someone else, does not.
#[tokio::test]
async fn a_pushed_result_verifies_and_a_foreign_provenance_does_not() {
    let w = world();
    let r = w.quick(&attesting(&w), &w.set("app")).await.unwrap();
    let digest = r.digest.clone().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tag = &r.image[REPO.len() + 1..];
    let v = crate::commands::verify::judge(&*w.engine.registry, REPO, tag, dir.path())
        .await
        .unwrap();
    assert!(v.agree, "{}", v.to_text());
    assert_eq!(v.digest, digest);
    assert!(crate::commands::verify::verdict(&v).is_ok());

    // Another registry holding the same image with a provenance of other inputs.
    let other = world();
    let mut opts = attesting(&other);
    opts.attestations.wanted = crate::attest::Wanted {
        spdx: true,
        cyclonedx: true,
        provenance: false,
    };
    other.quick(&opts, &other.set("app")).await.unwrap();
    let (info, mut record) =
        crate::record::load_complete(&w.engine, r.image_id.as_deref().unwrap())
            .await
            .unwrap();
    record
        .inputs
        .get_mut("application")
        .unwrap()
        .insert("workflow.tar.gz".into(), "0".repeat(64));
    let described =
        crate::attest::image::Described::local(&info, record, REPO, Some(digest.as_str()));
    let forged = crate::attest::Kind::Provenance.make(&described.facts(), &Default::default());
    let subject = other.engine.registry.stored(tag).unwrap();
    crate::attest::attach::attach(
        &*other.engine.registry,
        &subject,
        &[(crate::attest::Kind::Provenance, forged)],
        "2026-01-01T00:00:00Z",
    )
    .await
    .unwrap();
    let v = crate::commands::verify::judge(&*other.engine.registry, REPO, &digest, dir.path())
        .await
        .unwrap();
    assert!(!v.agree, "{}", v.to_text());
    let failed: Vec<&str> = v.checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
    assert_eq!(failed, ["provenance inputs"], "{}", v.to_text());
    let e = crate::commands::verify::verdict(&v).unwrap_err();
    assert_eq!(e.exit_code(), 1);
}
