//! What CI reads after a real build: `--iidfile`, `--metadata-file`,
//! `$GITHUB_OUTPUT` and `-q`, compared with what the engine says.

use crate::support::*;

#[test]
fn iidfile_metadata_github_output_and_quiet_match_the_engine() {
    let fx = Fixtures::load();
    let repo = TestRepo::new("outputs");
    let dir = tempfile::tempdir().unwrap();
    let req = unique_requirements(dir.path(), "tabulate==0.9.0\n");
    let (iid, meta, gh) = (
        dir.path().join("iid"),
        dir.path().join("metadata.json"),
        dir.path().join("github_output"),
    );
    std::fs::write(&gh, "earlier=kept\n").unwrap();
    let o = run(prebuilder()
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_OUTPUT", &gh)
        .args(["-q", "build", "--base", &fx.beam_image, "--network", "none"])
        .args(["--repository", &repo.name, "--tag", "ci"])
        .arg("--requirements-file")
        .arg(&req)
        .arg("--requirements-cache")
        .arg(&fx.demo_wheels)
        .arg("--iidfile")
        .arg(&iid)
        .arg("--metadata-file")
        .arg(&meta));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // -q: stdout is the reference and nothing else; stderr is silent.
    let stdout = String::from_utf8(o.stdout.clone()).unwrap();
    let image = stdout.strip_suffix('\n').expect("one line");
    assert!(!image.contains('\n'), "{stdout:?}");
    assert!(image.starts_with(&format!("{}:", repo.name)), "{image}");
    assert!(o.stderr.is_empty(), "{}", stderr(&o));

    let id = docker_ok(&["image", "inspect", image, "--format", "{{.Id}}"]);
    assert_eq!(
        std::fs::read_to_string(&iid).unwrap(),
        id,
        "no newline, as docker writes it"
    );

    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();
    assert_eq!(m["containerimage.config.digest"], id.as_str());
    assert_eq!(
        m["image.name"],
        format!("{image},{}:ci", repo.name).as_str()
    );
    assert!(
        m.get("containerimage.digest").is_none(),
        "not pushed: no manifest digest: {m}"
    );

    assert_eq!(
        std::fs::read_to_string(&gh).unwrap(),
        format!("earlier=kept\nimage={image}\ndigest=\nsdk-container-image={image}\n")
    );

    // Outside GitHub Actions $GITHUB_OUTPUT is left alone; --format json wins over -q.
    let o = run(prebuilder()
        .env_remove("GITHUB_ACTIONS")
        .env("GITHUB_OUTPUT", &gh)
        .args(["-q", "build", "--base", &fx.beam_image, "--network", "none"])
        .args(["--repository", &repo.name, "--format", "json"])
        .arg("--requirements-file")
        .arg(&req)
        .arg("--requirements-cache")
        .arg(&fx.demo_wheels));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(json(&o)["image"], image);
    assert_eq!(json(&o)["cached"], true);
    assert_eq!(
        std::fs::read_to_string(&gh).unwrap().lines().count(),
        4,
        "not appended outside GitHub Actions"
    );
}
