//! `--platform`'s decisions: parsing, what each platform's wheels and SDK
//! allow, the base's index per platform, the probe binary (run for real on
//! this machine, and under emulation when binfmt_misc has qemu-aarch64),
//! and the index put over the platforms' manifests.

use std::path::PathBuf;

use super::*;
use crate::engine::fake::{FakeEngine, FakeRegistry};
use crate::stage::{Artifact, StagedSet};

fn arm64() -> Platform {
    Platform::parse("linux/arm64").unwrap()
}

fn amd64() -> Platform {
    Platform::parse("linux/amd64").unwrap()
}

#[test]
fn platforms_are_read_in_docker_spelling() {
    assert_eq!(Platform::parse("linux/arm64/v8").unwrap(), arm64());
    assert_eq!(arm64().name(), "linux/arm64");
    assert_eq!(arm64().machine(), "aarch64");
    assert_eq!(amd64().machine(), "x86_64");
    let list = Platform::parse_list("linux/amd64, linux/arm64,linux/arm64/v8").unwrap();
    assert_eq!(list, vec![amd64(), arm64()]);
    for bad in ["windows/amd64", "linux", "linux/sparc", "a/b/c/d", ""] {
        let e = Platform::parse_list(bad).unwrap_err();
        assert!(e.to_string().contains("--platform"), "{bad}: {e}");
        assert_eq!(e.exit_code(), 2);
    }
    assert!(arm64().matches("linux", "arm64", Some("v8")));
    assert!(arm64().matches("linux", "arm64", None));
    assert!(!arm64().matches("linux", "amd64", None));
}

struct Files(tempfile::TempDir);

impl Files {
    fn artifact(&self, name: &str, content: &str, role: Role) -> Artifact {
        let path = self.0.path().join(name);
        std::fs::write(&path, content).unwrap();
        Artifact {
            name: name.into(),
            path,
            size: content.len() as u64,
            sha256: "x".into(),
            content_digest: "x".into(),
            role,
            origin: None,
        }
    }

    fn set(&self, artifacts: Vec<Artifact>) -> StagedSet {
        StagedSet::new(artifacts, PathBuf::from(self.0.path()), None)
    }
}

fn files() -> Files {
    Files(tempfile::tempdir().unwrap())
}

#[test]
fn a_pin_staged_only_for_another_machine_is_refused_naming_it() {
    let f = files();
    let set = f.set(vec![
        f.artifact(
            "requirements.txt",
            "# pins\ntabulate==0.9.0\nNumPy==2.2.6 ; python_version >= '3.9'\n",
            Role::Requirements,
        ),
        f.artifact(
            "tabulate-0.9.0-py3-none-any.whl",
            "w",
            Role::RequirementsCache,
        ),
        f.artifact(
            "numpy-2.2.6-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
            "w",
            Role::RequirementsCache,
        ),
    ]);
    check_set(&set, &amd64()).unwrap();
    let e = check_set(&set, &arm64()).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("linux/arm64"), "{text}");
    assert!(text.contains("numpy==2.2.6"), "{text}");
    assert!(text.contains("no wheel for aarch64"), "{text}");
    assert!(e
        .hint()
        .unwrap()
        .contains("--requirements-cache linux/arm64=DIR"));
    assert_eq!(e.exit_code(), 2);

    // The arm64 wheel beside it: both platforms are served.
    let set = f.set(vec![
        f.artifact("requirements.txt", "numpy==2.2.6\n", Role::Requirements),
        f.artifact(
            "numpy-2.2.6-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl",
            "w",
            Role::RequirementsCache,
        ),
        f.artifact(
            "numpy-2.2.6-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
            "w",
            Role::RequirementsCache,
        ),
    ]);
    check_set(&set, &arm64()).unwrap();
    check_set(&set, &amd64()).unwrap();
}

#[test]
fn an_x86_64_sdk_wheel_is_refused_for_arm64_as_beams_boot_would() {
    let f = files();
    // Beam's boot only accepts SDK wheels whose name says x86_64
    // (its acceptable-wheel list): an arm64 build must not stage one.
    let set = f.set(vec![f.artifact(
        "apache_beam-2.77.0-cp311-cp311-manylinux2014_x86_64.whl",
        "w",
        Role::Sdk,
    )]);
    check_set(&set, &amd64()).unwrap();
    let e = check_set(&set, &arm64()).unwrap_err();
    assert!(
        e.to_string().contains("the staged SDK apache_beam-2.77.0"),
        "{e}"
    );
    assert!(e.hint().unwrap().contains("--sdk-location"));
}

#[test]
fn pins_and_dists_are_read_as_pip_names_them() {
    assert_eq!(
        pins("a==1\n-r other.txt\nB_c[extra]==2.0 --hash=sha256:00\n  # c==3\nd>=4\n"),
        vec![("a".into(), "1".into()), ("b-c".into(), "2.0".into())]
    );
    assert_eq!(
        dist_of("python_slugify-8.0.4-py2.py3-none-any.whl"),
        Some(("python-slugify".into(), "8.0.4".into()))
    );
    assert!(wheel_fits("x-1-py3-none-any.whl", &arm64()));
    assert!(wheel_fits("x-1.tar.gz", &arm64()));
    assert!(!wheel_fits("x-1-cp311-cp311-linux_x86_64.whl", &arm64()));
}

fn raw(media_type: &str, bytes: Vec<u8>) -> RawManifest {
    RawManifest {
        media_type: media_type.into(),
        digest: format!("sha256:{:x}", Sha256::digest(&bytes)),
        bytes,
    }
}

#[tokio::test]
async fn each_platform_s_base_is_its_manifest_digest_in_the_index() {
    let registry = FakeRegistry::at("localhost:5000", "beam");
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"digest": "sha256:amd", "platform": {"os": "linux", "architecture": "amd64"}},
        {"digest": "sha256:arm", "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        {"digest": "sha256:att", "platform": {"os": "unknown", "architecture": "unknown"}},
    ]});
    registry.put_raw("2.77", raw(OCI_INDEX, index.to_string().into_bytes()));
    let dir = tempfile::tempdir().unwrap();
    let found = bases(
        &registry,
        "localhost:5000/beam:2.77",
        &[amd64(), arm64()],
        dir.path(),
    )
    .await
    .unwrap();
    assert_eq!(found[0].reference, "localhost:5000/beam@sha256:amd");
    assert_eq!(found[1].reference, "localhost:5000/beam@sha256:arm");

    let e = bases(
        &registry,
        "localhost:5000/beam:2.77",
        &[Platform::parse("linux/s390x").unwrap()],
        dir.path(),
    )
    .await
    .unwrap_err();
    let text = e.to_string();
    assert!(text.contains("has no linux/s390x image"), "{text}");
    assert!(text.contains("linux/amd64, linux/arm64/v8"), "{text}");
    assert!(!text.contains("unknown"), "{text}");
}

#[tokio::test]
async fn a_single_manifest_base_serves_the_platform_its_config_names() {
    let registry = FakeRegistry::at("localhost:5000", "beam");
    let config = registry.add_blob_content(br#"{"os":"linux","architecture":"amd64"}"#);
    let manifest = serde_json::json!({"schemaVersion": 2, "config": {"digest": config}});
    let m = raw(
        "application/vnd.oci.image.manifest.v1+json",
        manifest.to_string().into_bytes(),
    );
    registry.put_raw("2.77", m.clone());
    let dir = tempfile::tempdir().unwrap();
    let found = bases(
        &registry,
        "localhost:5000/beam:2.77",
        &[amd64()],
        dir.path(),
    )
    .await
    .unwrap();
    assert_eq!(found[0].digest, m.digest);
    let e = bases(
        &registry,
        "localhost:5000/beam:2.77",
        &[arm64()],
        dir.path(),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("the index has: linux/amd64"), "{e}");
}

/// Runs the probe binary as a file: natively for this machine's platform,
/// and for arm64 when binfmt_misc has qemu-aarch64 registered.
#[test]
fn the_probe_binary_exits_zero_on_its_platform() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut platforms = vec![];
    if std::env::consts::ARCH == "x86_64" {
        platforms.push(amd64());
    }
    if std::env::consts::ARCH == "aarch64"
        || std::path::Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists()
    {
        platforms.push(arm64());
    }
    assert!(!platforms.is_empty(), "no platform to run the probe on");
    for p in platforms {
        let bin = dir.path().join(p.machine());
        std::fs::write(&bin, probe_binary(&p).unwrap()).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let status = std::process::Command::new(&bin).status().unwrap();
        assert!(status.success(), "{}: {status}", p.name());
    }
    // s390x (big-endian) through qemu directly, whatever binfmt_misc holds.
    let s390x = Platform::parse("linux/s390x").unwrap();
    let bin = dir.path().join("s390x");
    std::fs::write(&bin, probe_binary(&s390x).unwrap()).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    if let Ok(status) = std::process::Command::new("qemu-s390x-static")
        .arg(&bin)
        .status()
    {
        assert!(status.success(), "s390x: {status}");
    }
    assert!(probe_binary(&Platform::parse("linux/riscv64").unwrap()).is_none());
}

#[tokio::test]
async fn the_probe_runs_a_container_created_for_the_platform_and_removes_its_image() {
    let engine = FakeEngine::new();
    let dir = tempfile::tempdir().unwrap();
    probe(&engine, &arm64(), dir.path()).await.unwrap();
    let created = engine.created();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].platform.as_deref(), Some("linux/arm64"));
    assert_eq!(created[0].network, Network::None);
    assert!(
        created[0].image.starts_with("sha256:"),
        "{}",
        created[0].image
    );
    assert_eq!(engine.count("load"), 1);
    assert!(
        engine.tags().iter().all(|t| !t.contains("probe")),
        "{:?}",
        engine.tags()
    );
    assert!(engine.containers().is_empty());
}

#[tokio::test]
async fn an_engine_that_cannot_run_the_platform_is_refused_with_how_to_add_emulation() {
    let engine = FakeEngine::new();
    engine.fail_on("run");
    let dir = tempfile::tempdir().unwrap();
    let e = probe(&engine, &arm64(), dir.path()).await.unwrap_err();
    assert!(
        e.to_string().contains("cannot run linux/arm64 containers"),
        "{e}"
    );
    assert!(e.hint().unwrap().contains("qemu-user-static"));
    assert!(engine.containers().is_empty());
}

#[tokio::test]
async fn the_index_names_each_platform_s_manifest_and_its_tag_follows_them() {
    let registry = FakeRegistry::at("localhost:5000", "team/sdk");
    let amd = raw(
        "application/vnd.oci.image.manifest.v1+json",
        b"{\"amd\":1}".to_vec(),
    );
    let arm = raw(
        "application/vnd.oci.image.manifest.v1+json",
        b"{\"arm\":1}".to_vec(),
    );
    registry.put_raw("a", amd.clone());
    registry.put_raw("b", arm.clone());
    let report = |digest: &str| Report {
        image: String::new(),
        image_id: None,
        digest: Some(digest.into()),
        sdk_container_image: String::new(),
        cached: false,
        layers: Vec::new(),
        base: crate::report::BaseReport {
            reference: String::new(),
            id: String::new(),
        },
        tags: Vec::new(),
        seconds: 0.0,
        builder: String::new(),
        flink: None,
        platforms: Vec::new(),
        sdk: None,
    };
    let platforms = [amd64(), arm64()];
    let reports = [report(&amd.digest), report(&arm.digest)];
    let (tag, index) = index_of(&registry, &platforms, &reports).await.unwrap();
    assert_eq!(tag.len(), TAG_HEX_LEN);
    assert_eq!(index.media_type, OCI_INDEX);
    let v: serde_json::Value = serde_json::from_slice(&index.bytes).unwrap();
    assert_eq!(v["manifests"][0]["digest"], amd.digest.as_str());
    assert_eq!(v["manifests"][0]["size"], amd.bytes.len());
    assert_eq!(v["manifests"][1]["platform"]["architecture"], "arm64");
    assert_eq!(
        index.digest,
        format!("sha256:{:x}", Sha256::digest(&index.bytes))
    );
    // Another arm64 manifest: another index tag.
    registry.put_raw("c", raw("x", b"{\"arm\":2}".to_vec()));
    let other = registry.stored("c").unwrap().digest;
    let (tag2, _) = index_of(
        &registry,
        &platforms,
        &[report(&amd.digest), report(&other)],
    )
    .await
    .unwrap();
    assert_ne!(tag, tag2);
}

#[tokio::test]
async fn a_layer_recorded_for_another_architecture_is_refused() {
    let engine = FakeEngine::new();
    let id = engine.add_base("beam:arm");
    let mut report = crate::report::Report {
        image: String::new(),
        image_id: None,
        digest: None,
        sdk_container_image: String::new(),
        cached: false,
        layers: vec![LayerReport {
            name: "dependencies".into(),
            cache: CacheOutcome::Miss,
            seconds: 1.0,
            image_id: id,
            parts: Vec::new(),
            committed: false,
        }],
        base: crate::report::BaseReport {
            reference: String::new(),
            id: String::new(),
        },
        tags: Vec::new(),
        seconds: 0.0,
        builder: String::new(),
        flink: None,
        platforms: Vec::new(),
        sdk: None,
    };
    // The fake's images are amd64.
    check_architecture(&engine, &amd64(), &report)
        .await
        .unwrap();
    let e = check_architecture(&engine, &arm64(), &report)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("recorded it as linux/amd64"), "{e}");
    report.layers[0].image_id = String::new();
    check_architecture(&engine, &arm64(), &report)
        .await
        .unwrap();
}
