//! Attestations (see `attest`): the SBOMs and provenance attached to the
//! pushed result as referrers, never twice, from the engine's image or the
//! registry's copy; `--attestations-dir`; what `verify` reads back.

use super::*;

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
    let v = crate::attest::verify::judge(&*w.engine.registry, REPO, tag, dir.path())
        .await
        .unwrap();
    assert!(v.agree, "{}", v.to_text());
    assert_eq!(v.digest, digest);
    assert!(crate::attest::verify::verdict(&v).is_ok());

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
    let v = crate::attest::verify::judge(&*other.engine.registry, REPO, &digest, dir.path())
        .await
        .unwrap();
    assert!(!v.agree, "{}", v.to_text());
    let failed: Vec<&str> = v.checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
    assert_eq!(failed, ["provenance inputs"], "{}", v.to_text());
    let e = crate::attest::verify::verdict(&v).unwrap_err();
    assert_eq!(e.exit_code(), 1);
}
