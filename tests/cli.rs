//! CLI tests that need no container engine: usage, help, and every input
//! error, which must be reported before the engine is contacted.
//! DOCKER_HOST points at a socket that does not exist, so a test that reached
//! the engine would fail with the wrong message.

use std::path::Path;

use assert_cmd::Command;
use prebuilder::stage::manifest::{encode, ManifestEntry};
use predicates::prelude::*;

const NO_ENGINE: &str = "unix:///nonexistent/prebuilder-test.sock";

fn prebuilder() -> Command {
    let mut c = Command::cargo_bin("prebuilder").unwrap();
    c.env("DOCKER_HOST", NO_ENGINE).env_remove("PREBUILDER_LOG");
    c
}

fn build_with_context(dir: &Path) -> Command {
    let mut c = prebuilder();
    c.args([
        "build",
        "--base",
        "apache/beam_python3.11_sdk:2.77.0",
        "--context",
    ])
    .arg(dir);
    c
}

fn write_context(dir: &Path, files: &[(&str, &str)], manifest: &str) {
    for (name, content) in files {
        std::fs::write(dir.join(name), content).unwrap();
    }
    std::fs::write(dir.join("artifacts_info.json"), manifest).unwrap();
}

fn entries(names: &[&str]) -> String {
    encode(
        &names
            .iter()
            .map(|n| ManifestEntry {
                path: n.to_string(),
                sha256: String::new(),
            })
            .collect::<Vec<_>>(),
    )
}

#[test]
fn help_teaches_both_input_styles_and_exit_codes() {
    let out = prebuilder().args(["build", "--help"]).assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    for flag in [
        "--base",
        "--context",
        "--requirements-file",
        "--requirements-cache",
        "--extra-package",
        "--setup-file",
        "--sdk-location",
        "--files-to-stage",
        "--repository",
        "--tag",
        "--push",
        "--no-cache",
        "--network",
        "--format",
        "--report",
        "--quiet",
        "--verbose",
        "Exit status",
        "Examples",
    ] {
        assert!(text.contains(flag), "build --help lacks {flag}:\n{text}");
    }
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for status in [
        "0 success",
        "1 the setup inside the container failed",
        "2 bad input",
        "3 the engine or a registry is unavailable",
        "130 interrupted",
    ] {
        assert!(
            flat.contains(status),
            "build --help lacks {status:?}:\n{text}"
        );
    }
    prebuilder()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("build"));
    prebuilder()
        .arg("--version")
        .assert()
        .success()
        .stdout(predicate::str::contains("prebuilder"));
}

#[test]
fn no_inputs_is_a_usage_error() {
    prebuilder()
        .args(["build", "--base", "x"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--context"));
}

#[test]
fn a_platform_not_in_docker_spelling_is_a_usage_error_before_anything_is_read() {
    for (flag, value, said) in [
        ("--platform", "linux/amd64,windows/arm64", "windows/arm64"),
        ("--platform", "linux/sparc", "unknown architecture"),
        (
            "--requirements-cache",
            "linux/mips=/nonexistent",
            "linux/mips",
        ),
    ] {
        prebuilder()
            .args([
                "build",
                "--base",
                "x",
                "--requirements-file",
                "/nonexistent/r.txt",
                flag,
                value,
            ])
            .assert()
            .code(2)
            .stderr(predicate::str::contains(said).and(predicate::str::contains("hint:")));
    }
}

#[test]
fn context_and_flags_conflict() {
    let dir = tempfile::tempdir().unwrap();
    prebuilder()
        .args(["build", "--base", "x", "--context"])
        .arg(dir.path())
        .args(["--requirements-file", "r.txt"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot be used with"));
}

#[test]
fn missing_context_names_it() {
    build_with_context(Path::new("/nonexistent/staging"))
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("/nonexistent/staging").and(predicate::str::contains("hint:")),
        );
}

#[test]
fn context_without_manifest() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("requirements.txt"), "six\n").unwrap();
    build_with_context(dir.path()).assert().code(2).stderr(
        predicate::str::contains("artifacts_info.json").and(predicate::str::contains("hint:")),
    );
}

#[test]
fn unreadable_manifest() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the manifest should be: unreadable as a file, even for root.
    std::fs::create_dir(dir.path().join("artifacts_info.json")).unwrap();
    build_with_context(dir.path())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("artifacts_info.json"));
}

#[test]
fn invalid_json_manifest() {
    let dir = tempfile::tempdir().unwrap();
    write_context(dir.path(), &[], "[\"not closed");
    build_with_context(dir.path()).assert().code(2).stderr(
        predicate::str::contains("artifacts_info.json").and(predicate::str::contains("not valid")),
    );
}

#[test]
fn manifest_naming_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    write_context(dir.path(), &[], &entries(&["requirements.txt"]));
    build_with_context(dir.path()).assert().code(2).stderr(
        predicate::str::contains("requirements.txt")
            .and(predicate::str::contains("does not exist")),
    );
}

#[test]
fn manifest_entries_escaping_the_directory() {
    for name in ["../x.whl", "/etc/passwd", "a/../../x"] {
        let dir = tempfile::tempdir().unwrap();
        write_context(dir.path(), &[], &entries(&[name]));
        build_with_context(dir.path()).assert().code(2).stderr(
            predicate::str::contains("escapes the staging directory")
                .and(predicate::str::contains(name)),
        );
    }
}

#[test]
fn wrong_type_urn() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = entries(&["requirements.txt"])
        .replace("beam:artifact:type:file:v1", "beam:artifact:type:url:v1");
    write_context(dir.path(), &[("requirements.txt", "six\n")], &manifest);
    build_with_context(dir.path()).assert().code(2).stderr(
        predicate::str::contains("beam:artifact:type:url:v1")
            .and(predicate::str::contains("type URN")),
    );
}

#[test]
fn engine_unreachable_says_docker_host() {
    let dir = tempfile::tempdir().unwrap();
    write_context(
        dir.path(),
        &[("requirements.txt", "six\n")],
        &entries(&["requirements.txt"]),
    );
    build_with_context(dir.path()).assert().code(3).stderr(
        predicate::str::contains("cannot reach the container engine")
            .and(predicate::str::contains(NO_ENGINE))
            .and(predicate::str::contains("DOCKER_HOST")),
    );
}

/// Exit status 3 (unavailable, worth a retry) from a socket that exists but
/// that nobody listens on: connection refused, as when the engine stopped.
#[test]
fn engine_socket_nobody_listens_on_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    write_context(
        dir.path(),
        &[("requirements.txt", "six\n")],
        &entries(&["requirements.txt"]),
    );
    let socket = dir.path().join("engine.sock");
    // Bound, then closed: the file stays, connections are refused.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    build_with_context(dir.path())
        .env("DOCKER_HOST", format!("unix://{}", socket.display()))
        .assert()
        .code(3)
        .stdout(predicate::str::is_empty())
        .stderr(
            predicate::str::contains("cannot reach the container engine")
                .and(predicate::str::contains(socket.display().to_string()))
                .and(predicate::str::contains("hint:")),
        );
}

#[test]
fn missing_flag_inputs_name_the_flag() {
    prebuilder()
        .args([
            "build",
            "--base",
            "x",
            "--requirements-file",
            "/nonexistent/requirements.txt",
        ])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("--requirements-file")
                .and(predicate::str::contains("/nonexistent/requirements.txt")),
        );
    prebuilder()
        .args([
            "build",
            "--base",
            "x",
            "--setup-file",
            "/nonexistent/setup.py",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--setup-file"));
}

#[test]
fn invalid_repository_and_tag() {
    let dir = tempfile::tempdir().unwrap();
    build_with_context(dir.path())
        .args(["--repository", "Not/Valid"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--repository").and(predicate::str::contains("hint:")));
    build_with_context(dir.path())
        .arg("--tag=.bad")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--tag"));
}

#[test]
fn bad_format_is_a_usage_error() {
    prebuilder()
        .args([
            "build",
            "--base",
            "x",
            "--requirements-file",
            "r",
            "--format",
            "yaml",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("yaml"));
}

#[test]
fn errors_leave_stdout_empty_in_text() {
    build_with_context(Path::new("/nonexistent"))
        .assert()
        .code(2)
        .stdout(predicate::str::is_empty());
}

/// stdout of a command run with `--format json`, as the one JSON object it holds.
fn stdout_object(out: &std::process::Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1, "one line on stdout: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// `{"error", "hint", "exit_code", "causes"}`, nothing else.
fn assert_error_object(v: &serde_json::Value, exit_code: i32) {
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    keys.sort();
    assert_eq!(keys, ["causes", "error", "exit_code", "hint"], "{v}");
    assert_eq!(v["exit_code"], exit_code, "{v}");
    assert!(v["error"].is_string() && v["causes"].is_array(), "{v}");
}

/// Every stderr line as JSON (`--progress json`), each with `"v": 1`.
fn stderr_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!text.is_empty(), "nothing on stderr");
    text.lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            assert_eq!(v["v"], 1, "{l}");
            v
        })
        .collect()
}

#[test]
fn an_unreachable_engine_with_format_json_is_an_error_object_on_stdout() {
    let dir = tempfile::tempdir().unwrap();
    write_context(
        dir.path(),
        &[("requirements.txt", "six\n")],
        &entries(&["requirements.txt"]),
    );
    let out = build_with_context(dir.path())
        .args(["--format", "json"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .assert()
        .code(3)
        .get_output()
        .clone();
    let v = stdout_object(&out);
    assert_error_object(&v, 3);
    let error = v["error"].as_str().unwrap();
    assert!(error.contains("cannot reach the container engine"), "{v}");
    assert!(error.contains("unix:///nonexistent/docker.sock"), "{v}");
    assert!(v["hint"].as_str().unwrap().contains("DOCKER_HOST"), "{v}");
    // People still read words on stderr.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: cannot reach the container engine"),
        "{err}"
    );
    assert!(err.contains("\nhint: "), "{err}");
}

#[test]
fn progress_json_makes_every_stderr_line_json_and_ends_with_the_error() {
    let dir = tempfile::tempdir().unwrap();
    write_context(
        dir.path(),
        &[("requirements.txt", "six\n")],
        &entries(&["requirements.txt"]),
    );
    for verbose in [&[][..], &["-v"][..], &["-vv"][..], &["-q"][..]] {
        let out = build_with_context(dir.path())
            .args(["--progress", "json"])
            .args(verbose)
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .assert()
            .code(3)
            .stdout(predicate::str::is_empty())
            .get_output()
            .clone();
        let lines = stderr_lines(&out);
        let last = lines.last().unwrap();
        assert_eq!(last["event"], "error", "{last}");
        assert_eq!(last["exit_code"], 3, "{last}");
        assert!(
            last["hint"].is_string() && last["causes"].is_array(),
            "{last}"
        );
        assert!(
            last["text"].as_str().unwrap().starts_with("error: "),
            "{last}"
        );
        if verbose == ["-q"] {
            assert_eq!(lines.len(), 1, "-q: the error only: {lines:?}");
        }
    }
}

#[test]
fn a_usage_error_is_an_error_object() {
    // Refused by clap: nothing could be parsed, the flags are read as given.
    let out = prebuilder()
        .args(["build", "--base", "x", "--no-such-flag", "--format", "json"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    let v = stdout_object(&out);
    assert_error_object(&v, 2);
    assert!(
        v["error"].as_str().unwrap().contains("--no-such-flag"),
        "{v}"
    );
    let out = prebuilder()
        .args(["build", "--progress=json", "--base", "x", "--no-such-flag"])
        .assert()
        .code(2)
        .stdout(predicate::str::is_empty())
        .get_output()
        .clone();
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["event"], "error");
    assert_eq!(lines[0]["exit_code"], 2);

    // Refused by prebuilder itself, before the engine.
    let dir = tempfile::tempdir().unwrap();
    let out = build_with_context(dir.path())
        .args(["--repository", "Not/Valid", "--format", "json"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    let v = stdout_object(&out);
    assert_error_object(&v, 2);
    assert!(v["error"].as_str().unwrap().contains("--repository"), "{v}");
    assert!(v["hint"].is_string(), "{v}");
}

#[test]
fn help_explains_progress() {
    let out = prebuilder().args(["build", "--help"]).assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(text.contains("--progress <MODE>"), "{text}");
    for word in ["auto", "plain", "json", "\"v\": 1", "exit_code"] {
        assert!(text.contains(word), "--help lacks {word}: {text}");
    }
    prebuilder()
        .args(["build", "--progress", "yaml"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("yaml"));
}

#[test]
fn digest_ignores_archive_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let make = |name: &str, mtime: u64| {
        let path = dir.path().join(name);
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&path).unwrap(),
            flate2::Compression::default(),
        );
        let mut tar = tar::Builder::new(gz);
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_mtime(mtime);
        h.set_cksum();
        tar.append_data(&mut h, "pkg-1.0/setup.py", &b"hello"[..])
            .unwrap();
        tar.into_inner().unwrap().finish().unwrap();
        path
    };
    let a = make("a.tar.gz", 1_000_000_000);
    let b = make("b.tar.gz", 1_700_000_000);
    let out = prebuilder()
        .arg("digest")
        .arg(&a)
        .arg(&b)
        .args(["--format", "json"])
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_ne!(v[0]["sha256"], v[1]["sha256"], "the bytes differ");
    assert_eq!(
        v[0]["content_digest"], v[1]["content_digest"],
        "the content does not"
    );
    prebuilder()
        .args(["digest", "/nonexistent/x.whl"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("/nonexistent/x.whl"));
}

// ---- custom bases, check, inspect, diff, template (issue 6) ----

#[test]
fn build_help_names_boot_from_and_no_check() {
    let out = prebuilder().args(["build", "--help"]).assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(text.contains("--boot-from"), "{text}");
    assert!(text.contains("--no-check"), "{text}");
    let out = prebuilder().args(["check", "--help"]).assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    for word in [
        "--launch-python",
        "--pickle-library",
        "--format",
        "Exit status: 0 compatible; 1 findings",
    ] {
        assert!(text.contains(word), "check --help lacks {word}:\n{text}");
    }
}

#[test]
fn check_inspect_diff_usage_errors() {
    for args in [
        &["check"][..],
        &["check", "img", "--launch-python", "/x", "--no-launch"],
        &["check", "img", "--pickle-library", "pickle"],
        &["check", "img", "--format", "yaml"],
        &["inspect"],
        &["diff", "only-one"],
        &["template"],
        &["template", "custom-base", "--base", "x"],
    ] {
        prebuilder()
            .args(args)
            .assert()
            .code(2)
            .stdout(predicate::str::is_empty());
    }
}

#[test]
fn check_inspect_diff_need_the_engine() {
    for args in [
        &["check", "img", "--no-launch"][..],
        &["inspect", "img"],
        &["diff", "a", "b", "--format", "json"],
    ] {
        let out = prebuilder()
            .args(args)
            .assert()
            .code(3)
            .stderr(predicate::str::contains(
                "cannot reach the container engine",
            ))
            .get_output()
            .clone();
        if args.contains(&"json") {
            assert_error_object(&stdout_object(&out), 3);
        } else {
            assert!(out.stdout.is_empty(), "{args:?}");
        }
    }
}

#[test]
fn template_custom_base_prints_a_dockerfile_without_an_engine() {
    prebuilder()
        .args([
            "template",
            "custom-base",
            "--base",
            "nvcr.io/nvidia/pytorch:24.01-py3",
            "--boot-from",
            "apache/beam_python3.11_sdk:2.77.0",
        ])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("FROM apache/beam_python3.11_sdk:2.77.0 AS beam_sdk")
                .and(predicate::str::contains(
                    "FROM nvcr.io/nvidia/pytorch:24.01-py3",
                ))
                .and(predicate::str::contains(
                    "COPY --from=beam_sdk /opt/apache/beam /opt/apache/beam",
                ))
                .and(predicate::str::contains(
                    "ENTRYPOINT [\"/opt/apache/beam/boot\"]",
                )),
        );
    prebuilder()
        .args([
            "template",
            "custom-base",
            "--base",
            "x\nRUN evil",
            "--boot-from",
            "apache/beam_python3.11_sdk:2.77.0",
        ])
        .assert()
        .code(2)
        .stdout(predicate::str::is_empty())
        .stderr(predicate::str::contains("--base").and(predicate::str::contains("hint:")));
}

#[test]
fn bad_labels_are_usage_errors_before_the_engine() {
    for label in ["no-equals", "=v", "prebuilder.key=x", "a b=c"] {
        prebuilder()
            .args([
                "build",
                "--base",
                "b:1",
                "--requirements-file",
                "r.txt",
                "--label",
                label,
            ])
            .assert()
            .code(2)
            .stdout(predicate::str::is_empty())
            .stderr(
                predicate::str::contains("--label")
                    .and(predicate::str::contains("hint:"))
                    .and(predicate::str::contains("cannot reach").not()),
            );
    }
}

/// PyFlink inputs (issue 14): mixing them with Beam inputs is a usage error
/// naming both; a bad input is refused before the engine is contacted.
#[test]
fn pyflink_inputs_do_not_mix_with_beam_inputs() {
    for beam in [
        &["--requirements-file", "r.txt"][..],
        &["--context", "."],
        &["--boot-from", "img"],
    ] {
        let out = prebuilder()
            .args(["build", "--base", "img", "--py-files", "a.py"])
            .args(beam)
            .assert()
            .code(2);
        let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
        assert!(
            err.contains("--py-files") && err.contains(beam[0]),
            "{beam:?}: {err}"
        );
    }
}

#[test]
fn pyflink_bad_inputs_are_refused_before_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.zip");
    std::fs::write(&data, "x").unwrap();
    prebuilder()
        .args(["build", "--base", "img", "--py-archives"])
        .arg(&data)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--py-archives").and(predicate::str::contains("#NAME")))
        .stderr(predicate::str::contains("cannot reach").not());
    let conf = dir.path().join("config.yaml");
    std::fs::write(&conf, "python:\n  requirements: /nonexistent/req.txt\n").unwrap();
    prebuilder()
        .args(["build", "--base", "img", "--flink-conf"])
        .arg(&conf)
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("python.requirements /nonexistent/req.txt")
                .and(predicate::str::contains("config.yaml")),
        );
}

#[test]
fn supply_chain_flags_and_subcommands_are_documented() {
    let out = prebuilder().args(["build", "--help"]).assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    for flag in ["--no-attestations", "--attestations-dir", "--sbom-format"] {
        assert!(text.contains(flag), "build --help lacks {flag}");
    }
    let out = prebuilder().args(["verify", "--help"]).assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(
        text.contains("Exit status: 0 they agree; 1 they do not"),
        "{text}"
    );
    let out = prebuilder().args(["sbom", "--help"]).assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(text.contains("cyclonedx"), "{text}");
}

/// verify reads a registry: an image named without one is a usage error,
/// said before anything is asked of a registry or engine.
#[test]
fn verify_needs_a_registry_image() {
    prebuilder()
        .args(["verify", "beam_python_prebuilt_sdk:0123"])
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains("names no registry"))
        .stderr(predicate::str::contains("hint:"));
}

/// An SBOM of a local image needs the engine: unreachable is exit 3.
#[test]
fn sbom_of_a_local_image_without_an_engine_exits_3() {
    prebuilder()
        .args(["sbom", "beam_python_prebuilt_sdk:0123"])
        .assert()
        .code(3)
        .stdout("");
}

#[test]
fn direct_mode_with_platform_asks_no_engine_and_needs_a_destination() {
    let dir = tempfile::tempdir().unwrap();
    let req = dir.path().join("requirements.txt");
    std::fs::write(&req, "six==1.16.0\n").unwrap();
    // A DOCKER_HOST no engine client accepts: asking it would fail otherwise.
    prebuilder()
        .env("DOCKER_HOST", "bogus://nowhere")
        .args([
            "build",
            "--base",
            "localhost:5000/beam:2.77.0",
            "--builder",
            "direct",
            "--platform",
            "linux/amd64,linux/arm64",
            "--requirements-file",
        ])
        .arg(&req)
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("--builder direct with --platform builds with no engine")
                .and(predicate::str::contains("--push")),
        );
}

#[test]
fn two_platforms_without_push_are_refused_before_any_base_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let req = dir.path().join("requirements.txt");
    std::fs::write(&req, "six==1.16.0\n").unwrap();
    // No engine and no registry at localhost:5000: reading either would fail otherwise.
    prebuilder()
        .env("DOCKER_HOST", "bogus://nowhere")
        .args([
            "build",
            "--base",
            "localhost:5000/beam:2.77.0",
            "--builder",
            "direct",
            "--platform",
            "linux/amd64,linux/arm64",
            "--requirements-file",
        ])
        .arg(&req)
        .arg("--output")
        .arg(format!("oci:{}", dir.path().join("out").display()))
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("builds an image index, which lives in a registry")
                .and(predicate::str::contains("add --push"))
                .and(predicate::str::contains("--output writes one image")),
        );
    assert!(!dir.path().join("out").exists(), "nothing written");
}
