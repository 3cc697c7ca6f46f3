//! Direct mode with no engine: the one pipeline on a [`Store`], the base in
//! its (fake) registry with its installed set known, the results in another.
//! Layers are really produced (`crate::direct`), from small wheels.

use std::sync::Arc;

use super::*;
use crate::direct::index::{
    self,
    tests::{debian_index, with_beam},
};
use crate::direct::install::tests::make_wheel;
use crate::engine::store::Store;
use crate::image;
use crate::registry::{LayerBlob, OCI_LAYER_GZIP};

const DIRECT_BASE: &str = "base.example/beam:2.77.0";

struct NoEngine {
    world: World,
    store: Store,
    base: Arc<FakeRegistry>,
    results: Arc<FakeRegistry>,
    state: tempfile::TempDir,
    base_id: String,
}

/// A base with Beam installed, in its registry; its installed set known on
/// this machine (so none of its layers is read).
fn no_engine() -> NoEngine {
    let world = world();
    let base = Arc::new(FakeRegistry::at("base.example", "beam"));
    let layer = b"the base's layer (never read)".to_vec();
    let layer_digest = base.add_blob_content(&layer);
    let config = serde_json::json!({
        "os": "linux", "architecture": "amd64",
        "created": "2024-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "Entrypoint": ["/opt/apache/beam/boot"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest.clone()]},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "debootstrap"}],
    })
    .to_string()
    .into_bytes();
    let base_id = base.add_blob_content(&config);
    let blob = LayerBlob {
        media_type: OCI_LAYER_GZIP.into(),
        digest: layer_digest,
        size: layer.len() as u64,
    };
    let manifest = crate::registry::oci_manifest(&config, &[blob]).unwrap();
    base.put_raw("2.77.0", manifest);
    base.set_image_id("2.77.0", &base_id);
    let state = tempfile::tempdir().unwrap();
    let mut installed = with_beam(debian_index());
    installed.image = base_id.clone();
    index::store_cached(state.path(), &installed).unwrap();
    let scratch = world.locks.path().join("held");
    std::fs::create_dir_all(&scratch).unwrap();
    NoEngine {
        store: Store::new(&scratch),
        world,
        base,
        results: Arc::new(FakeRegistry::new("localhost:5000")),
        state,
        base_id,
    }
}

impl NoEngine {
    fn opts(&self) -> Options {
        let mut o = self.world.opts();
        o.base = DIRECT_BASE.into();
        o.builder = Builder::Direct;
        o.push = true;
        o.pull = PullPolicy::Missing;
        let dir = self.state.path().to_string_lossy().into_owned();
        o.settings = crate::settings::Settings::from_vars([
            (crate::state::STATE_DIR_ENV, dir.as_str()),
            ("SOURCE_DATE_EPOCH", "1700000000"),
        ]);
        o
    }

    /// requirements (tabulate, pinned) and its wheel (dependencies), an
    /// extra package whose code is `code` (application).
    fn set(&self, requirements: &str, code: &str) -> StagedSet {
        let dir = self.world.files.path();
        let info = "tabulate-0.9.0.dist-info";
        make_wheel(
            dir,
            "tabulate-0.9.0-py3-none-any.whl",
            &[
                ("tabulate/__init__.py", "v = 1\n", 0o644),
                (
                    &format!("{info}/METADATA"),
                    "Metadata-Version: 2.1\nName: tabulate\nVersion: 0.9.0\n",
                    0o644,
                ),
                (
                    &format!("{info}/WHEEL"),
                    "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
                    0o644,
                ),
                (&format!("{info}/RECORD"), "", 0o644),
            ],
        );
        let app = "app-1.0.dist-info";
        make_wheel(
            dir,
            "app-1.0-py3-none-any.whl",
            &[
                ("app/__init__.py", code, 0o644),
                (
                    &format!("{app}/METADATA"),
                    "Metadata-Version: 2.1\nName: app\nVersion: 1.0\n",
                    0o644,
                ),
                (
                    &format!("{app}/WHEEL"),
                    "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
                    0o644,
                ),
                (&format!("{app}/RECORD"), "", 0o644),
            ],
        );
        let file = |name: &str, role: Role| {
            let path = dir.join(name);
            let bytes = std::fs::read(&path).unwrap();
            let digest = hex::encode(sha2::Sha256::digest(&bytes));
            Artifact {
                name: name.to_string(),
                path,
                size: bytes.len() as u64,
                sha256: digest.clone(),
                content_digest: digest,
                role,
                origin: None,
            }
        };
        std::fs::write(dir.join("requirements.txt"), requirements).unwrap();
        std::fs::write(dir.join("extra_packages.txt"), "app-1.0-py3-none-any.whl\n").unwrap();
        let artifacts = vec![
            file("requirements.txt", Role::Requirements),
            file("tabulate-0.9.0-py3-none-any.whl", Role::RequirementsCache),
            file("extra_packages.txt", Role::ExtraPackagesList),
            file("app-1.0-py3-none-any.whl", Role::ExtraPackage),
        ];
        StagedSet::new(artifacts, dir.to_path_buf(), None)
    }

    async fn build(&self, opts: &Options, set: &StagedSet, rec: &Recorder) -> Result<Report> {
        let (registry, base) = (self.results.clone(), self.base.clone());
        run(
            &self.store,
            opts,
            set,
            || {
                Ok(Some(Remote {
                    registry,
                    credential: None,
                    base: Some(base),
                    boot: None,
                }))
            },
            rec,
        )
        .await
    }

    /// The tags the result repository holds.
    fn pushed(&self) -> Vec<String> {
        self.results
            .writes()
            .into_iter()
            .filter(|w| w.starts_with("upload"))
            .collect()
    }
}

const REQS: &str = "tabulate==0.9.0\n";

#[tokio::test]
async fn with_no_engine_both_layers_are_produced_and_pushed_with_their_installed_sets() {
    let n = no_engine();
    let set = n.set(REQS, "x = 1\n");
    let rec = Recorder::default();
    let r = n.build(&n.opts(), &set, &rec).await.unwrap();
    assert_eq!(r.builder, "direct");
    assert_eq!(caches(&r), [Miss, Miss]);
    let digest = r.digest.clone().unwrap();
    assert_eq!(r.sdk_container_image, format!("{REPO}@{digest}"));
    let key = r.image.rsplit(':').next().unwrap().to_string();
    assert_eq!(n.results.get(&key), Some(digest));
    // The base's layer was mounted or copied, never read here; the two
    // produced layers uploaded; each produced image's installed set beside it.
    assert!(rec.saw("BaseResolved"), "the ground came from the registry");
    let index_tags: Vec<String> = r
        .layers
        .iter()
        .map(|l| crate::build::engineless::index_tag(&l.image_id))
        .collect();
    for t in &index_tags {
        assert!(n.results.get(t).is_some(), "{t} not pushed");
    }
    // The result's labels say direct mode made it.
    let top = n.store.get(&r.layers[1].image_id).unwrap();
    assert_eq!(
        top.info.labels[crate::build::direct::LABEL_BUILDER],
        "direct"
    );
    assert_eq!(top.info.labels[crate::engine::LABEL_BASE], n.base_id);
}

#[tokio::test]
async fn with_no_engine_a_result_in_the_registry_is_found_and_nothing_is_produced() {
    let n = no_engine();
    let set = n.set(REQS, "x = 1\n");
    let first = n
        .build(&n.opts(), &set, &Recorder::default())
        .await
        .unwrap();
    let writes = n.results.writes().len();
    // A fresh runner: nothing held, the same inputs.
    let again = no_engine_like(&n);
    let rec = Recorder::default();
    let r = again.build(&again.opts(), &set, &rec).await.unwrap();
    assert_eq!(caches(&r), [InRegistry, InRegistry]);
    assert_eq!(r.digest, first.digest);
    assert_eq!(r.image_id, None);
    assert!(!rec.saw("LayerBuilding"), "nothing produced");
    assert!(!rec.saw("RunningSetup"), "nothing produced");
    assert_eq!(again.results.writes().len(), writes, "nothing pushed");
}

/// Another runner on the same registries (its own store and state).
fn no_engine_like(n: &NoEngine) -> NoEngine {
    let fresh = no_engine();
    NoEngine {
        base: n.base.clone(),
        results: n.results.clone(),
        base_id: n.base_id.clone(),
        ..fresh
    }
}

#[tokio::test]
async fn with_no_engine_a_code_change_produces_only_the_application_layer() {
    let n = no_engine();
    let cold = n
        .build(&n.opts(), &n.set(REQS, "x = 1\n"), &Recorder::default())
        .await
        .unwrap();
    // A fresh runner (nothing held, no installed sets cached but the
    // base's): the dependencies layer comes from the registry, with its
    // installed set; only the application is produced and pushed.
    let warm = no_engine_like(&n);
    let before = n.pushed().len();
    let rec = Recorder::default();
    let r = warm
        .build(&warm.opts(), &warm.set(REQS, "x = 2\n"), &rec)
        .await
        .unwrap();
    assert_eq!(caches(&r), [InRegistry, Miss]);
    assert_eq!(r.layers[0].image_id, cold.layers[0].image_id);
    assert_ne!(r.digest, cold.digest);
    assert!(rec.saw("LayerFromRegistry"));
    assert!(
        !rec.saw("layer: Dependencies, artifacts"),
        "dependencies not produced"
    );
    // One new layer blob and the new config uploaded; the base's and the
    // dependencies' blobs already there.
    let uploads: Vec<String> = warm.pushed()[before..].to_vec();
    let top = warm.store.get(r.layers[1].image_id.as_str()).unwrap();
    let config = image::image_id(&top.config);
    assert!(uploads.iter().any(|u| u.contains(&config)), "{uploads:?}");
    assert!(
        uploads.len() <= 4,
        "layer, config, and the installed set (blob + empty config): {uploads:?}"
    );
}

#[tokio::test]
async fn with_no_engine_refusals_push_nothing() {
    let n = no_engine();
    for (requirements, named) in [
        ("tabulate>=0.9\n", "requirements.txt"),
        ("colorama==0.4.6\n", "colorama"),
    ] {
        let rec = Recorder::default();
        let e = n
            .build(&n.opts(), &n.set(requirements, "x = 1\n"), &rec)
            .await
            .unwrap_err();
        assert!(e.to_string().contains(named), "{requirements}: {e}");
        assert!(n.results.writes().is_empty(), "{requirements}: pushed");
    }
    // What direct mode never builds is refused before anything is read.
    let mut o = n.opts();
    o.boot_from = Some("beam:boot".into());
    let e = n
        .build(&o, &n.set(REQS, "x = 1\n"), &Recorder::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("--boot-from"), "{e}");
    assert!(n.results.writes().is_empty());
}

#[tokio::test]
async fn with_an_engine_auto_builds_on_the_engine_and_direct_mode_loads_into_it() {
    let w = world();
    let set = w.set("app");
    let mut o = w.opts();
    o.builder = Builder::Auto;
    let r = w.quick(&o, &set).await.unwrap();
    assert_eq!(r.builder, "engine");
    assert!(w.engine.count("create") > 0, "a setup container ran");
}

#[tokio::test]
async fn a_direct_record_lists_each_distribution_and_the_sbom_names_them() {
    let n = no_engine();
    let docs = tempfile::tempdir().unwrap();
    let mut o = n.opts();
    o.attestations = attest::Attestations {
        attach: false,
        wanted: crate::attest::Wanted::ALL,
        dir: Some(docs.path().to_path_buf()),
    };
    let r = n
        .build(&o, &n.set(REQS, "x = 1\n"), &Recorder::default())
        .await
        .unwrap();
    let top = n.store.get(&r.layers[1].image_id).unwrap();
    let record =
        crate::record::Record::parse(&top.info.labels[crate::record::LABEL_RECORD]).unwrap();
    let d = record
        .distributions
        .expect("direct records list distributions");
    // Each with the layer that installed it and the staged file it came from.
    assert_eq!(d["tabulate"].layer, "dependencies");
    assert_eq!(
        d["tabulate"].artifact.as_ref().unwrap().name,
        "tabulate-0.9.0-py3-none-any.whl"
    );
    assert_eq!(d["app"].layer, "application");
    assert_eq!(
        d["app"].artifact.as_ref().unwrap().name,
        "app-1.0-py3-none-any.whl"
    );
    assert_eq!(d["apache-beam"].layer, crate::record::IN_BASE);
    // The SBOM made of the pushed result names what direct mode installed.
    let spdx = std::fs::read_to_string(docs.path().join("sbom.spdx.json")).unwrap();
    assert!(spdx.contains("tabulate"), "{spdx}");
    assert!(spdx.contains("app-1.0-py3-none-any.whl"), "{spdx}");
}

#[tokio::test]
async fn with_no_engine_and_no_push_the_result_is_written_as_an_oci_layout() {
    let n = no_engine();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("image");
    let mut o = n.opts();
    o.push = false;
    o.output = Some(engineless::Output::Oci(dir.clone()));
    let r = n
        .build(&o, &n.set(REQS, "x = 1\n"), &Recorder::default())
        .await
        .unwrap();
    assert_eq!(r.digest, None);
    assert!(n.results.writes().is_empty(), "nothing pushed");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let blob = |d: &str| {
        dir.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let m = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(m)).unwrap()).unwrap();
    // The config is the result's; every layer (the base's too) is there.
    assert_eq!(manifest["config"]["digest"].as_str(), r.image_id.as_deref());
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3, "the base's layer and the two produced");
    for l in layers {
        let path = blob(l["digest"].as_str().unwrap());
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            l["size"].as_u64().unwrap()
        );
    }
}

/// The dependency layer cut as the engine path cuts it (a rule under which
/// tabulate is heavy): its parts in the report, the label and one history
/// entry per part; the store holds every part, the push uploads each and
/// `--output` writes each; the application layer stays one layer.
#[tokio::test]
async fn with_no_engine_the_dependency_layer_is_cut_by_distribution_pushed_and_written() {
    let n = no_engine();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("image");
    let mut o = n.opts();
    o.split = Some(crate::image::split::Rule {
        threshold: 1,
        max_layers: crate::image::split::MAX_LAYERS,
    });
    o.output = Some(engineless::Output::Oci(dir.clone()));
    let r = n
        .build(&o, &n.set(REQS, "x = 1\n"), &Recorder::default())
        .await
        .unwrap();
    let names: Vec<&str> = r.layers[0].parts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["tabulate-0.9.0", "the rest"]);
    assert!(r.layers[1].parts.is_empty(), "the application is one layer");

    let deps = n.store.get(&r.layers[0].image_id).unwrap();
    let parts: Vec<String> = r.layers[0]
        .parts
        .iter()
        .map(|p| p.diff_id.clone())
        .collect();
    assert_eq!(deps.info.layers.len(), 3, "the base's layer and two parts");
    assert_eq!(deps.info.layers[1..], parts[..]);
    assert_eq!(deps.layers.len(), 3);
    assert_eq!(
        deps.info.labels[crate::engine::LABEL_SPLIT],
        r#"["tabulate-0.9.0","the rest"]"#
    );
    let config: serde_json::Value = serde_json::from_slice(&deps.config).unwrap();
    let history: Vec<&str> = config["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["created_by"].as_str().unwrap())
        .collect();
    assert_eq!(history.len(), 3, "{history:?}");
    assert!(
        history[1].ends_with("(direct): tabulate-0.9.0, alone"),
        "{history:?}"
    );
    assert!(history[2].ends_with("(direct)"), "{history:?}");

    // Pushed: the result's manifest names every part, each uploaded.
    let key = r.image.rsplit(':').next().unwrap().to_string();
    let pushed: serde_json::Value =
        serde_json::from_slice(&n.results.stored(&key).unwrap().bytes).unwrap();
    let blobs = pushed["layers"].as_array().unwrap();
    assert_eq!(blobs.len(), 4, "base, two parts, application");
    for b in &blobs[1..] {
        assert!(n.results.has_blob(b["digest"].as_str().unwrap()));
    }
    // Written: the OCI layout's manifest is the pushed one.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["digest"].as_str(),
        r.digest.as_deref()
    );
}
