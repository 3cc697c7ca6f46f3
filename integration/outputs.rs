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
    let build = Build::new(&fx.beam_image)
        .arg("-q")
        .repository(&repo.name)
        .requirements(&req)
        .cache(&fx.demo_wheels)
        .env("GITHUB_OUTPUT", &gh);
    let o = build
        .clone()
        .text()
        .tag("ci")
        .arg("--iidfile")
        .arg(&iid)
        .arg("--metadata-file")
        .arg(&meta)
        .env("GITHUB_ACTIONS", "true")
        .run();
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
    let o = build.env_remove("GITHUB_ACTIONS").run();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(json(&o)["image"], image);
    assert_eq!(json(&o)["cached"], true);
    assert_eq!(
        std::fs::read_to_string(&gh).unwrap().lines().count(),
        4,
        "not appended outside GitHub Actions"
    );
}

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let o = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .output()
        .expect("git");
    assert!(
        o.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn labels_and_history_are_visible_to_docker() {
    let fx = Fixtures::load();
    let repo = TestRepo::new("labels");
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("pipeline");
    copy_tree(demo_setup().parent().unwrap(), &project);
    // Unique content: this test's application layer is a miss.
    std::fs::write(
        project.join("demo_pipeline/unique_labels.py"),
        format!("N = {:?}\n", dir.path()),
    )
    .unwrap();
    git(&project, &["init", "-q"]);
    git(&project, &["add", "-A"]);
    git(&project, &["commit", "-q", "-m", "x"]);
    // A token in the remote URL must not reach the image.
    git(
        &project,
        &[
            "remote",
            "add",
            "origin",
            "https://bob:tok-91c2-secret@example.com/team/pipe.git",
        ],
    );
    let head = git(&project, &["rev-parse", "HEAD"]);
    let build = |label: &str| {
        [
            "GITHUB_SERVER_URL",
            "GITHUB_REPOSITORY",
            "GITHUB_SHA",
            "CI_PROJECT_URL",
        ]
        .into_iter()
        .fold(Build::new(&fx.beam_image), Build::env_remove)
        .env("SOURCE_DATE_EPOCH", "951782400")
        .repository(&repo.name)
        .args(["--label", label])
        .requirements(demo_requirements())
        .cache(&fx.demo_wheels)
        .setup_file(project.join("setup.py"))
        .ok()
    };
    let report = build("org.example.team=data");
    let image = report["image"].as_str().unwrap();
    let label = |name: &str| {
        docker_ok(&[
            "image",
            "inspect",
            image,
            "--format",
            &format!("{{{{index .Config.Labels {name:?}}}}}"),
        ])
    };
    assert_eq!(label("org.example.team"), "data");
    assert_eq!(
        label("org.opencontainers.image.created"),
        "2000-02-29T00:00:00Z"
    );
    assert_eq!(label("org.opencontainers.image.base.name"), fx.beam_image);
    assert_eq!(
        label("org.opencontainers.image.source"),
        "https://example.com/team/pipe"
    );
    assert_eq!(label("org.opencontainers.image.revision"), head);
    let all = docker_ok(&[
        "image",
        "inspect",
        image,
        "--format",
        "{{json .Config.Labels}}",
    ]);
    assert!(!all.contains("tok-91c2-secret"), "{all}");

    // docker history: the base's entries, then one per prebuilder layer.
    let history = |img: &str| -> Vec<String> {
        docker_ok(&["history", "--no-trunc", "--format", "{{.CreatedBy}}", img])
            .lines()
            .map(str::to_string)
            .collect()
    };
    let ours = history(image);
    let base = history(&fx.beam_image);
    assert_eq!(ours.len(), base.len() + 2, "{ours:#?}");
    assert_eq!(&ours[2..], &base[..], "the base's entries are kept");
    assert!(
        ours[0].contains("application layer: installed workflow.tar.gz"),
        "{ours:#?}"
    );
    assert!(
        ours[1].contains("dependencies layer: installed requirements.txt (from"),
        "{ours:#?}"
    );

    // Labels are part of the result's key: the same labels hit, others miss
    // only the layer that carries them.
    let again = build("org.example.team=data");
    assert_eq!(
        again["image"],
        report["image"],
        "{:?}\n{}",
        layers(&again),
        docker_ok(&[
            "image",
            "inspect",
            again["image"].as_str().unwrap(),
            "--format",
            "{{json .Config.Labels}}"
        ])
    );
    assert_eq!(again["cached"], true);
    let other = build("org.example.team=ml");
    assert_ne!(other["image"], report["image"]);
    let outcomes: Vec<String> = layers(&other).into_iter().map(|l| l.1).collect();
    assert_eq!(outcomes, ["hit", "miss"]);
}
