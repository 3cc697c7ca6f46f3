//! Failures that need the engine: each one names what is at fault, exits with
//! its status, and leaves no container and no tagged image behind.

use crate::support::*;

fn assert_nothing_left(repo: &TestRepo) {
    assert!(
        setup_containers().is_empty(),
        "a setup container was left behind"
    );
    assert!(
        repo.tags().is_empty(),
        "images were tagged: {:?}",
        repo.tags()
    );
}

fn requirements_only(dir: &std::path::Path, requirements: &str) -> std::path::PathBuf {
    let f = dir.join("requirements.txt");
    std::fs::write(&f, requirements).unwrap();
    f
}

#[test]
fn base_image_absent() {
    let repo = TestRepo::new("nobase");
    let dir = tempfile::tempdir().unwrap();
    let req = requirements_only(dir.path(), "tabulate==0.9.0\n");
    let o = run(prebuilder()
        .args([
            "build",
            "--base",
            "prebuilder-test/no-such-image:1",
            "--repository",
            &repo.name,
            "--pull",
            "never",
        ])
        .arg("--requirements-file")
        .arg(req));
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("base image prebuilder-test/no-such-image:1 is not on the engine"),
        "{err}"
    );
    assert!(
        err.contains("never pulls") && err.contains("docker pull prebuilder-test/no-such-image:1"),
        "{err}"
    );
    assert_nothing_left(&repo);
}

#[test]
fn base_without_boot() {
    let fx = Fixtures::load();
    let repo = TestRepo::new("noboot");
    let dir = tempfile::tempdir().unwrap();
    let req = requirements_only(dir.path(), "tabulate==0.9.0\n");
    let o = run(prebuilder()
        .args([
            "build",
            "--base",
            &fx.python_image,
            "--network",
            "none",
            "--repository",
            &repo.name,
        ])
        .arg("--requirements-file")
        .arg(req)
        .arg("--requirements-cache")
        .arg(&fx.demo_wheels));
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("has no /opt/apache/beam/boot"), "{err}");
    assert!(err.contains("hint: use a Beam SDK image"), "{err}");
    assert_nothing_left(&repo);
}

#[test]
fn setup_failure_exits_1_with_pips_message_and_the_failing_step() {
    let fx = Fixtures::load();
    let repo = TestRepo::new("setupfail");
    let dir = tempfile::tempdir().unwrap();
    // tabulate is in the cache; this version of it is not.
    let req = requirements_only(dir.path(), "tabulate==0.0.1\n");
    let started = std::time::Instant::now();
    let o = run(prebuilder()
        .args([
            "build",
            "--base",
            &fx.beam_image,
            "--network",
            "none",
            "--repository",
            &repo.name,
        ])
        .arg("--requirements-file")
        .arg(req)
        .arg("--requirements-cache")
        .arg(&fx.demo_wheels));
    assert_eq!(o.status.code(), Some(1), "setup failures exit 1");
    let err = stderr(&o);
    assert!(
        err.contains("setup of layer \"dependencies\" failed"),
        "{err}"
    );
    assert!(
        err.contains("failed to install requirements.txt"),
        "the failing step is named: {err}"
    );
    assert!(err.contains("last lines of the setup's output"), "{err}");
    assert!(
        err.contains("tabulate==0.0.1"),
        "pip's own message is shown: {err}"
    );
    assert!(err.contains("hint:"), "{err}");
    assert!(
        started.elapsed().as_secs() < 60,
        "with --network none pip must not retry an index (took {:?})",
        started.elapsed()
    );
    assert!(o.stdout.is_empty(), "no report on failure");
    assert_nothing_left(&repo);
}

#[test]
fn interrupt_removes_the_setup_container() {
    // 128 + SIGINT, as shells report it (issue 13; it was 2, the status of bad input).
    signal_removes_the_setup_container("INT", 130);
}

/// `timeout`, CI cancellation and `docker stop` send SIGTERM: cleaned up like
/// Ctrl-C, exit status 128 + 15 (issue 12).
#[test]
fn sigterm_removes_the_setup_container_and_exits_143() {
    signal_removes_the_setup_container("TERM", 143);
}

fn signal_removes_the_setup_container(signal: &str, code: i32) {
    use std::io::{BufRead, BufReader};
    let fx = Fixtures::load();
    let repo = TestRepo::new(&format!("signal-{}", signal.to_ascii_lowercase()));
    let dir = tempfile::tempdir().unwrap();
    // An sdist that sleeps in its build: the setup is certainly running when interrupted.
    let pkg = dir.path().join("slow");
    std::fs::create_dir(&pkg).unwrap();
    std::fs::write(
        pkg.join("setup.py"),
        format!(
            "# {signal} {}\nimport time\ntime.sleep(120)\nfrom setuptools import setup\nsetup(name='slow', version='1')\n",
            std::process::id()
        ),
    )
    .unwrap();
    let mut child = prebuilder()
        .args([
            "build",
            "--base",
            &fx.beam_image,
            "--network",
            "none",
            "--repository",
            &repo.name,
        ])
        .arg("--setup-file")
        .arg(&pkg)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    track(child.id());
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.contains("installing workflow.tar.gz")
            || line.contains("workflow.tar.gz") && line.contains('|')
        {
            break;
        }
    }
    assert_eq!(
        setup_containers().len(),
        1,
        "the setup container is running: {seen:?}"
    );
    std::thread::sleep(std::time::Duration::from_secs(1));
    let kill = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(code), "interrupted: {rest:?}");
    assert!(rest.iter().any(|l| l.contains("interrupted")), "{rest:?}");
    assert_nothing_left(&repo);
}

/// Issue 12: a token in a direct-URL requirement is echoed by pip; none of
/// the lines prebuilder relays or summarises may carry it.
#[test]
fn a_token_in_a_requirement_url_never_reaches_the_output() {
    let fx = Fixtures::load();
    let repo = TestRepo::new("urltoken");
    let dir = tempfile::tempdir().unwrap();
    let secret = "tok-7d1e0c-not-a-real-secret";
    // Port 9 on the container's own loopback refuses at once (--network none).
    let req = requirements_only(
        dir.path(),
        &format!(
            "private-pkg @ https://ci-bot:{secret}@127.0.0.1:9/private_pkg-1.0-py3-none-any.whl?token={secret}\n"
        ),
    );
    let report = dir.path().join("report.json");
    // In words, and in the machine channel (JSON lines, the error object).
    for machine in [&[][..], &["--progress", "json", "--format", "json"]] {
        let o = run(prebuilder()
            .args([
                "build",
                "--base",
                &fx.beam_image,
                "--network",
                "none",
                "--repository",
                &repo.name,
            ])
            .args(machine)
            .arg("--requirements-file")
            .arg(&req)
            .arg("--report")
            .arg(&report));
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains("https://***@127.0.0.1:9/private_pkg"),
            "the URL is still shown, without its userinfo: {err}"
        );
        assert!(!err.contains(secret), "the token leaked on stderr: {err}");
        assert!(!String::from_utf8_lossy(&o.stdout).contains(secret));
        if !machine.is_empty() {
            assert!(
                err.lines()
                    .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
                "{err}"
            );
            assert_eq!(error_object(&o)["exit_code"], 1);
        }
        assert!(!report.exists(), "no report is written for a failed build");
        assert_nothing_left(&repo);
    }
}

/// Issue 12: the same token, in a requirement that installs, reaches neither
/// the output nor the built image (config, labels, history, files). The wheel
/// is served over loopback HTTP; the setup container shares the host's network.
#[test]
fn a_token_in_a_requirement_url_never_reaches_a_built_image() {
    let fx = Fixtures::load();
    let repo = TestRepo::new("urltokenok");
    let dir = tempfile::tempdir().unwrap();
    let secret = "tok-5b2a9e-not-a-real-secret";
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = std::process::Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .arg("--directory")
        .arg(&fx.demo_wheels)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Stop<'a>(&'a mut std::process::Child);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _stop = Stop(&mut server);
    for _ in 0..50 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let req = requirements_only(
        dir.path(),
        &format!(
            "tabulate @ http://ci-bot:{secret}@127.0.0.1:{port}/tabulate-0.9.0-py3-none-any.whl?token={secret}\n"
        ),
    );
    let report = dir.path().join("report.json");
    let o = run(prebuilder()
        .args([
            "build",
            "--base",
            &fx.beam_image,
            "--network",
            "host",
            "--format",
            "json",
            "--repository",
            &repo.name,
        ])
        .arg("--requirements-file")
        .arg(&req)
        .arg("--report")
        .arg(&report));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let image = json(&o)["image"].as_str().unwrap().to_string();
    let inspect = docker(&["image", "inspect", &image]);
    let history = docker(&["history", "--no-trunc", &image]);
    // Every file the setup could have written, searched inside the image.
    let files = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "sh",
        &image,
        "-c",
        &format!("grep -rl -e {secret} /usr /opt /etc /root /tmp /var 2>/dev/null; true"),
    ]);
    let record = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "sh",
        &image,
        "-c",
        "python -c 'import tabulate; print(tabulate.__version__)'",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&record.stdout).trim(),
        "0.9.0",
        "the requirement was installed from the URL"
    );
    for (what, bytes) in [
        ("stdout", o.stdout.clone()),
        ("stderr", o.stderr.clone()),
        ("report", std::fs::read(&report).unwrap()),
        ("image config", inspect.stdout),
        ("history", history.stdout),
        ("files in the image", files.stdout),
    ] {
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(secret),
            "the token reached the {what}: {text}"
        );
    }
}
