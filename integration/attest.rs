//! Supply chain: a pushed result carries an SPDX and a CycloneDX SBOM and a
//! SLSA provenance statement as OCI referrers, read back through the
//! registry API as skopeo or oras would. The registry is Debian's
//! docker-registry (distribution 2.8), which has no referrers API: the
//! referrers tag schema is what is exercised. The documents are checked by
//! the SPDX project's and CycloneDX's own validators, and against the image
//! itself (pip's freeze in it, the staged files' digests).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

use crate::support::*;

/// The validators' venv (`integration/fixtures/attest-tools.sh`, cached).
fn validators() -> PathBuf {
    let o = Command::new("bash")
        .arg(repo().join("integration/fixtures/attest-tools.sh"))
        .output()
        .expect("attest-tools.sh");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
}

fn valid_spdx(venv: &Path, file: &Path) {
    let o = Command::new(venv.join("bin/pyspdxtools"))
        .arg("-i")
        .arg(file)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "pyspdxtools -i {}:\n{}{}",
        file.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn valid_cyclonedx(venv: &Path, file: &Path) {
    let o = Command::new(venv.join("bin/python"))
        .arg(repo().join("integration/fixtures/validate_cyclonedx.py"))
        .arg(file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `GET` through the registry API: the status and the body.
fn get(addr: &str, path: &str, accept: &str) -> (u16, Vec<u8>) {
    let o = Command::new("curl")
        .args([
            "-s",
            "-H",
            &format!("Accept: {accept}"),
            "-w",
            "\n%{http_code}",
        ])
        .arg(format!("http://{addr}/v2/{path}"))
        .output()
        .expect("curl");
    let mut body = o.stdout;
    let at = body.iter().rposition(|b| *b == b'\n').unwrap();
    let status = String::from_utf8_lossy(&body[at + 1..]).parse().unwrap();
    body.truncate(at);
    (status, body)
}

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn file_of(artifact_type: &str) -> &'static str {
    match artifact_type {
        "application/spdx+json" => "sbom.spdx.json",
        "application/vnd.cyclonedx+json" => "sbom.cdx.json",
        "application/vnd.in-toto+json" => "provenance.intoto.json",
        other => panic!("unexpected artifactType {other}"),
    }
}

fn build(fx: &Fixtures, context: &Path, repository: &str, config: &Path, extra: &[&str]) -> Output {
    run(prebuilder()
        .env("DOCKER_CONFIG", config)
        .args([
            "build",
            "--base",
            &fx.beam_image,
            "--network",
            "none",
            "--format",
            "json",
            "--repository",
            repository,
            "--context",
        ])
        .arg(context)
        .args(extra))
}

fn normalize(name: &str) -> String {
    prebuilder::record::normalize(name)
}

#[test]
fn pushed_results_carry_valid_sboms_and_provenance_as_referrers() {
    let fx = Fixtures::load();
    let venv = validators();
    let registry = TestRegistry::start(None);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("docker-config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("config.json"), "{}").unwrap();
    let path = "team/attested";
    let repository = format!("{}/{path}", registry.addr);
    let _cleanup = TestRepo {
        name: repository.clone(),
    };
    // A context staged by real apache-beam: the demo's wheels and its sdist.
    let requirements = unique_requirements(dir.path(), &demo_requirements_text());
    let stage = |out: &Path| {
        fx.beam_context(
            out,
            &[
                "--requirements_file",
                requirements.to_str().unwrap(),
                "--requirements_cache",
                fx.demo_wheels.to_str().unwrap(),
                "--setup_file",
                demo_setup().to_str().unwrap(),
            ],
        )
    };
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    stage(&ctx);

    // 1. Pushed without attestations: no referrers.
    let o = build(
        &fx,
        &ctx,
        &repository,
        &config,
        &["--push", "--no-attestations"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let plain = json(&o);
    let digest = plain["digest"].as_str().unwrap().to_string();
    let tag = plain["image"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let referrers_tag = digest.replacen(':', "-", 1);
    assert_eq!(
        get(
            &registry.addr,
            &format!("{path}/manifests/{referrers_tag}"),
            OCI_INDEX
        )
        .0,
        404,
        "--no-attestations attached nothing"
    );

    // 2. The same inputs with attestations: the same image, now with its documents.
    let docs = dir.path().join("docs");
    let o = build(
        &fx,
        &ctx,
        &repository,
        &config,
        &["--push", "--attestations-dir", docs.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let report = json(&o);
    assert_eq!(
        report["digest"],
        digest.as_str(),
        "the image's digest is unchanged"
    );
    assert_eq!(
        registry.digest(path, &tag, None).as_deref(),
        Some(digest.as_str()),
        "the content tag still names it"
    );
    assert!(
        stderr(&o).contains("attached the spdx document"),
        "{}",
        stderr(&o)
    );

    // The validators of the formats' own projects accept them.
    valid_spdx(&venv, &docs.join("sbom.spdx.json"));
    valid_cyclonedx(&venv, &docs.join("sbom.cdx.json"));

    // Read back as skopeo/oras would: no referrers API on this registry,
    // so the referrers tag lists them; each blob is the file, byte for byte.
    let (status, _) = get(
        &registry.addr,
        &format!("{path}/referrers/{digest}"),
        OCI_INDEX,
    );
    assert_eq!(status, 404, "distribution 2.8 has no referrers API");
    let (status, index) = get(
        &registry.addr,
        &format!("{path}/manifests/{referrers_tag}"),
        OCI_INDEX,
    );
    assert_eq!(status, 200);
    let index: serde_json::Value = serde_json::from_slice(&index).unwrap();
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "{index}");
    let mut seen = Vec::new();
    for e in entries {
        let kind = e["artifactType"].as_str().unwrap();
        let (status, manifest) = get(
            &registry.addr,
            &format!("{path}/manifests/{}", e["digest"].as_str().unwrap()),
            OCI_MANIFEST,
        );
        assert_eq!(status, 200);
        let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        assert_eq!(m["subject"]["digest"], digest.as_str());
        assert_eq!(m["artifactType"], kind);
        assert_eq!(
            m["config"]["mediaType"],
            "application/vnd.oci.empty.v1+json"
        );
        let blob = m["layers"][0]["digest"].as_str().unwrap();
        let (status, bytes) = get(&registry.addr, &format!("{path}/blobs/{blob}"), "*/*");
        assert_eq!(status, 200);
        assert_eq!(
            bytes,
            std::fs::read(docs.join(file_of(kind))).unwrap(),
            "{kind}: the attached document is the file"
        );
        seen.push(file_of(kind));
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        ["provenance.intoto.json", "sbom.cdx.json", "sbom.spdx.json"]
    );

    // The SBOM's packages are pip's freeze in the image, and every wheel's
    // digest is the staged file's sha256.
    let spdx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(docs.join("sbom.spdx.json")).unwrap()).unwrap();
    let pypi: Vec<&serde_json::Value> = spdx["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["SPDXID"].as_str().unwrap().starts_with("SPDXRef-pypi-"))
        .collect();
    let listed: BTreeMap<String, String> = pypi
        .iter()
        .map(|p| {
            (
                normalize(p["name"].as_str().unwrap()),
                p["versionInfo"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let image = report["image"].as_str().unwrap();
    let o = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--label",
        "prebuilder.test=1",
        "--entrypoint",
        "python",
        image,
        "-m",
        "pip",
        "freeze",
        "--all",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut freeze = BTreeMap::new();
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        if let Some((name, version)) = line.split_once("==") {
            freeze.insert(normalize(name), Some(version.trim().to_string()));
        } else if let Some((name, _)) = line.split_once(" @ ") {
            freeze.insert(normalize(name), None);
        }
    }
    assert!(freeze.len() > 30, "apache-beam's closure: {freeze:?}");
    assert_eq!(
        listed.keys().collect::<Vec<_>>(),
        freeze.keys().collect::<Vec<_>>(),
        "the SBOM lists what pip freeze --all lists in the image"
    );
    for (name, version) in &freeze {
        if let Some(v) = version {
            assert_eq!(&listed[name], v, "{name}");
        }
    }
    let mut wheels = 0;
    for p in &pypi {
        let Some(file) = p["packageFileName"].as_str() else {
            continue;
        };
        if file.ends_with(".whl") {
            let staged = std::fs::read(ctx.join(file)).unwrap();
            assert_eq!(
                p["checksums"][0]["checksumValue"],
                hex::encode(Sha256::digest(&staged)).as_str(),
                "{file}"
            );
            wheels += 1;
        }
    }
    assert_eq!(wheels, 3, "the demo's three wheels: {pypi:?}");
    // The pipeline's own package, from Beam's regenerated sdist: named by
    // the content digest its key uses.
    let workflow = prebuilder::stage::digest::digest_file(&ctx.join("workflow.tar.gz")).unwrap();
    let demo = pypi
        .iter()
        .find(|p| p["packageFileName"] == "workflow.tar.gz")
        .expect("the workflow's package");
    assert!(
        demo["sourceInfo"]
            .as_str()
            .unwrap()
            .contains(&format!("sha256:{}", workflow.content_digest)),
        "{demo}"
    );
    let base_pkgs = pypi
        .iter()
        .filter(|p| p["sourceInfo"] == "in the base image")
        .count();
    assert!(base_pkgs > 20, "apache-beam and its closure are the base's");

    // prebuilder's own readers.
    let pinned = format!("{repository}@{digest}");
    let o = run(prebuilder()
        .env("DOCKER_CONFIG", &config)
        .args(["verify", &pinned]));
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("agree"));
    for (format, file) in [("spdx", "sbom.spdx.json"), ("cyclonedx", "sbom.cdx.json")] {
        let o = run(prebuilder()
            .env("DOCKER_CONFIG", &config)
            .args(["sbom", &pinned, "--format", format]));
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(
            o.stdout,
            std::fs::read(docs.join(file)).unwrap(),
            "{format}"
        );
    }

    // 3. Beam regenerates the context (new sdist bytes, same content): the
    // same documents, and nothing attached again.
    let index_digest = || {
        let (status, body) = get(
            &registry.addr,
            &format!("{path}/manifests/{referrers_tag}"),
            OCI_INDEX,
        );
        assert_eq!(status, 200);
        hex::encode(Sha256::digest(&body))
    };
    let before = index_digest();
    let ctx2 = dir.path().join("ctx2");
    std::fs::create_dir(&ctx2).unwrap();
    stage(&ctx2);
    let docs2 = dir.path().join("docs2");
    let o = build(
        &fx,
        &ctx2,
        &repository,
        &config,
        &["--push", "--attestations-dir", docs2.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(json(&o)["digest"], digest.as_str());
    assert!(
        stderr(&o).contains("has its spdx document already"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("attached the"), "{}", stderr(&o));
    assert_eq!(index_digest(), before, "the referrers tag is as it was");
    for file in ["sbom.spdx.json", "sbom.cdx.json", "provenance.intoto.json"] {
        assert_eq!(
            std::fs::read_to_string(docs2.join(file)).unwrap(),
            std::fs::read_to_string(docs.join(file)).unwrap(),
            "{file}: the same inputs, the same bytes"
        );
    }
}
