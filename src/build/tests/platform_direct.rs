//! `--platform` with no engine: each platform built directly on its own
//! base (the index's manifest, by digest) with its own wheels and its own
//! installed set, no container anywhere, then one index over the pushed
//! manifests; a fresh runner finds the whole index in the registry.

use std::sync::Arc;

use super::*;
use crate::build::platform::{direct, Job, Platform};
use crate::direct::index::{
    self,
    tests::{debian_index, with_beam},
};
use crate::direct::install::tests::make_wheel;
use crate::engine::store::{HeldLayer, Store};
use crate::registry::{LayerBlob, RawManifest, OCI_LAYER_GZIP};

const INDEXED: &str = "base.example/beam:2.77.0";

struct TwoBases {
    world: World,
    base: Arc<FakeRegistry>,
    results: Arc<FakeRegistry>,
    /// Each platform's base image id, amd64 first.
    ids: Vec<String>,
}

/// A base image for `arch` in `r` (its layer never read), tagged
/// `2.77.0-<arch>`; its id and manifest digest.
fn platform_base(r: &FakeRegistry, arch: &str) -> (String, String) {
    let layer = format!("the {arch} base's layer (never read)").into_bytes();
    let layer_digest = r.add_blob_content(&layer);
    let config = serde_json::json!({
        "os": "linux", "architecture": arch,
        "created": "2024-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "Entrypoint": ["/opt/apache/beam/boot"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest.clone()]},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "debootstrap"}],
    })
    .to_string()
    .into_bytes();
    let id = r.add_blob_content(&config);
    let blob = LayerBlob {
        media_type: OCI_LAYER_GZIP.into(),
        digest: layer_digest,
        size: layer.len() as u64,
    };
    let manifest = crate::registry::oci_manifest(&config, &[blob]).unwrap();
    let digest = manifest.digest.clone();
    r.put_raw(&format!("2.77.0-{arch}"), manifest);
    r.set_image_id(&digest, &id);
    (id, digest)
}

/// The installed set of the fixture base, as indexed for `machine`.
fn installed_for(id: &str, machine: &str) -> index::Index {
    let mut i = with_beam(debian_index());
    i.image = id.to_string();
    if machine != i.machine {
        i.tags = i
            .tags
            .iter()
            .map(|t| t.replace(&i.machine, machine))
            .collect();
        i.machine = machine.to_string();
    }
    i
}

/// An index over an amd64 and an arm64 base, their installed sets known on
/// this machine (so none of their layers is read).
fn two_bases(state: &std::path::Path) -> TwoBases {
    let base = Arc::new(FakeRegistry::at("base.example", "beam"));
    let mut ids = Vec::new();
    let mut entries = Vec::new();
    for (arch, machine) in [("amd64", "x86_64"), ("arm64", "aarch64")] {
        let (id, digest) = platform_base(&base, arch);
        index::store_cached(state, &installed_for(&id, machine)).unwrap();
        entries.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest, "size": 1,
            "platform": {"os": "linux", "architecture": arch},
        }));
        ids.push(id);
    }
    let bytes = serde_json::json!({"schemaVersion": 2, "manifests": entries})
        .to_string()
        .into_bytes();
    base.put_raw(
        "2.77.0",
        RawManifest {
            media_type: "application/vnd.oci.image.index.v1+json".into(),
            digest: format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes))),
            bytes,
        },
    );
    TwoBases {
        world: world(),
        base,
        results: Arc::new(FakeRegistry::new("localhost:5000")),
        ids,
    }
}

fn opts(w: &World, state: &std::path::Path) -> Options {
    let mut o = w.opts();
    o.base = INDEXED.into();
    o.builder = Builder::Direct;
    o.push = true;
    o.pull = PullPolicy::Missing;
    let dir = state.to_string_lossy().into_owned();
    o.settings = crate::settings::Settings::from_vars([
        (crate::state::STATE_DIR_ENV, dir.as_str()),
        ("SOURCE_DATE_EPOCH", "1700000000"),
    ]);
    o
}

/// A wheel of `fast` 1.0 compiled for `machine` (its `arch.txt` says
/// which), pinned; an extra package whose code is `code`.
fn platform_set(dir: &std::path::Path, machine: &str, code: &str) -> StagedSet {
    std::fs::create_dir_all(dir).unwrap();
    let tag = format!("cp311-cp311-manylinux_2_17_{machine}.manylinux2014_{machine}");
    let wheel = format!("fast-1.0-{tag}.whl");
    let info = "fast-1.0.dist-info";
    make_wheel(
        dir,
        &wheel,
        &[
            ("fast/__init__.py", "", 0o644),
            ("fast/arch.txt", machine, 0o644),
            (
                &format!("{info}/METADATA"),
                "Metadata-Version: 2.1\nName: fast\nVersion: 1.0\n",
                0o644,
            ),
            (
                &format!("{info}/WHEEL"),
                &format!("Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: {tag}\n"),
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
    std::fs::write(dir.join("requirements.txt"), "fast==1.0\n").unwrap();
    std::fs::write(dir.join("extra_packages.txt"), "app-1.0-py3-none-any.whl\n").unwrap();
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
    let artifacts = vec![
        file("requirements.txt", Role::Requirements),
        file(&wheel, Role::RequirementsCache),
        file("extra_packages.txt", Role::ExtraPackagesList),
        file("app-1.0-py3-none-any.whl", Role::ExtraPackage),
    ];
    StagedSet::new(artifacts, dir.to_path_buf(), None)
}

impl TwoBases {
    async fn build(
        &self,
        store: &Store,
        opts: &Options,
        sets: &[StagedSet],
        rec: &Recorder,
    ) -> Result<Report> {
        let platforms = Platform::parse_list("linux/amd64,linux/arm64").unwrap();
        let jobs: Vec<Job> = platforms
            .iter()
            .zip(sets)
            .map(|(p, set)| Job {
                platform: p.clone(),
                set,
            })
            .collect();
        let (registry, base) = (self.results.clone(), self.base.clone());
        let remote = move || {
            Ok(Some(Remote {
                registry: registry.clone(),
                credential: None,
                base: Some(base.clone()),
                boot: None,
            }))
        };
        direct::run(store, opts, &jobs, &self.base, &remote, rec).await
    }
}

/// The content of `path` in a produced layer's tar.
fn in_layer(layer: &HeldLayer, path: &str) -> Option<String> {
    let HeldLayer::Tar(tar) = layer else {
        return None;
    };
    let mut archive = tar::Archive::new(std::fs::File::open(tar).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_string_lossy() == path {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut entry, &mut s).unwrap();
            return Some(s);
        }
    }
    None
}

#[tokio::test]
async fn with_no_engine_each_platform_is_built_directly_under_one_index() {
    let state = tempfile::tempdir().unwrap();
    let t = two_bases(state.path());
    let files = t.world.files.path();
    let sets = [
        platform_set(&files.join("amd64"), "x86_64", "x = 1\n"),
        platform_set(&files.join("arm64"), "aarch64", "x = 1\n"),
    ];
    let scratch = t.world.locks.path().join("held");
    std::fs::create_dir_all(&scratch).unwrap();
    let store = Store::new(&scratch);
    let rec = Recorder::default();
    let o = opts(&t.world, state.path());
    let r = t.build(&store, &o, &sets, &rec).await.unwrap();

    // No container anywhere: the fake engine saw nothing.
    assert!(t.world.engine.created().is_empty());
    assert_eq!(r.builder, "direct");
    assert_eq!(r.platforms.len(), 2);
    // The index, under the result's content tag, over both manifests.
    let digest = r.digest.clone().unwrap();
    let tag = r.image.rsplit(':').next().unwrap();
    assert_eq!(t.results.get(tag), Some(digest.clone()));
    let stored = t.results.stored_by_digest(&digest).unwrap();
    let index: serde_json::Value = serde_json::from_slice(&stored.bytes).unwrap();
    for (i, (p, (arch, machine))) in r
        .platforms
        .iter()
        .zip([("amd64", "x86_64"), ("arm64", "aarch64")])
        .enumerate()
    {
        assert_eq!(index["manifests"][i]["digest"], p.digest.clone().unwrap());
        assert_eq!(index["manifests"][i]["platform"]["architecture"], arch);
        assert!(p.layers.iter().all(|l| l.cache == Miss), "{p:?}");
        // Each platform's image on its own base, recording its architecture,
        // with its own platform's wheel installed.
        let deps = store.get(&p.layers[0].image_id).unwrap();
        assert_eq!(deps.info.architecture, arch);
        assert_eq!(deps.info.labels[crate::engine::LABEL_BASE], t.ids[i]);
        let arch_txt = in_layer(
            deps.layers.last().unwrap(),
            "usr/local/lib/python3.11/dist-packages/fast/arch.txt",
        );
        assert_eq!(arch_txt.as_deref(), Some(machine), "{arch}");
    }

    // A fresh runner (its own store, only the bases' sets known): the whole
    // index is found in the registry, nothing produced.
    let state2 = tempfile::tempdir().unwrap();
    for (id, machine) in t.ids.iter().zip(["x86_64", "aarch64"]) {
        index::store_cached(state2.path(), &installed_for(id, machine)).unwrap();
    }
    let scratch2 = t.world.locks.path().join("held2");
    std::fs::create_dir_all(&scratch2).unwrap();
    let rec = Recorder::default();
    let again = t
        .build(
            &Store::new(&scratch2),
            &opts(&t.world, state2.path()),
            &sets,
            &rec,
        )
        .await
        .unwrap();
    assert_eq!(again.digest.as_deref(), Some(digest.as_str()));
    assert!(again.cached);
    assert!(!rec.saw("RunningSetup"), "nothing produced");
    for p in &again.platforms {
        assert!(p.layers.iter().all(|l| l.cache == InRegistry), "{p:?}");
    }

    // A code change: only each platform's application layer is produced.
    let changed = [
        platform_set(&files.join("amd64b"), "x86_64", "x = 2\n"),
        platform_set(&files.join("arm64b"), "aarch64", "x = 2\n"),
    ];
    let scratch3 = t.world.locks.path().join("held3");
    std::fs::create_dir_all(&scratch3).unwrap();
    let code = t
        .build(
            &Store::new(&scratch3),
            &opts(&t.world, state2.path()),
            &changed,
            &Recorder::default(),
        )
        .await
        .unwrap();
    assert_ne!(code.digest.as_deref(), Some(digest.as_str()));
    for p in &code.platforms {
        let caches: Vec<CacheOutcome> = p.layers.iter().map(|l| l.cache).collect();
        assert_eq!(caches, [InRegistry, Miss], "{}", p.platform);
    }
}

#[tokio::test]
async fn with_no_engine_a_multi_platform_base_needs_platform_and_wheels_for_each() {
    let state = tempfile::tempdir().unwrap();
    let t = two_bases(state.path());
    // No --platform: the base's platforms are listed.
    let e = direct::only_platform(&*t.base, INDEXED).await.unwrap_err();
    let (text, hint) = (e.to_string(), e.hint().unwrap_or_default());
    assert!(
        text.contains("linux/amd64, linux/arm64") && text.contains(INDEXED),
        "{text}"
    );
    assert!(
        hint.contains("--platform linux/amd64,linux/arm64 --push"),
        "{hint}"
    );
    // One platform's image alone: that platform.
    let one = direct::only_platform(&*t.base, "base.example/beam:2.77.0-arm64")
        .await
        .unwrap();
    assert_eq!(one, None, "a single image manifest is built as it is");

    // The amd64 wheels for both: refused for arm64 before anything is read.
    let files = t.world.files.path();
    let sets = [
        platform_set(&files.join("a"), "x86_64", "x = 1\n"),
        platform_set(&files.join("b"), "x86_64", "x = 1\n"),
    ];
    let store = Store::new(t.world.locks.path());
    let e = t
        .build(
            &store,
            &opts(&t.world, state.path()),
            &sets,
            &Recorder::default(),
        )
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("linux/arm64") && e.to_string().contains("fast==1.0"),
        "{e}"
    );
    assert!(t.results.writes().is_empty(), "nothing pushed");
    // An index needs a registry.
    let mut o = opts(&t.world, state.path());
    o.push = false;
    let e = t
        .build(&store, &o, &sets, &Recorder::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("image index"), "{e}");
}

#[test]
fn each_platform_of_an_index_writes_its_attestations_in_its_own_directory() {
    let w = world();
    let mut opts = w.opts();
    opts.attestations.dir = Some("att".into());
    opts.tags = vec!["stable".into()];
    let arm64 = Platform::parse("linux/arm64/v8").unwrap();
    let several = direct::options_for(&opts, &arm64, true);
    assert_eq!(several.attestations.dir, Some("att/linux-arm64".into()));
    assert!(several.tags.is_empty(), "the tags name the index");
    assert_eq!(several.platform.as_deref(), Some("linux/arm64"));
    // One platform: a plain build, its attestations where asked.
    let one = direct::options_for(&opts, &arm64, false);
    assert_eq!(one.attestations.dir, Some("att".into()));
    assert_eq!(one.tags, ["stable"]);
}
