//! Registries: push with the user's credentials, the registry's own digest,
//! the registry as a cache shared by machines, and each failure's message.
//! Every registry is a real `docker-registry` started here and stopped after.

use std::path::Path;
use std::process::Output;

use crate::support::*;

const USER: (&str, &str) = ("alice", "pw-3f9c1e-not-a-real-secret");

fn docker_config(dir: &Path, json: &str) -> std::path::PathBuf {
    let d = dir.join("docker-config");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("config.json"), json).unwrap();
    d
}

fn build(
    fx: &Fixtures,
    repository: &str,
    requirements: &Path,
    extra: &[&str],
    config: &Path,
) -> Output {
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
        ])
        .args(["--repository", repository, "--requirements-file"])
        .arg(requirements)
        .arg("--requirements-cache")
        .arg(&fx.demo_wheels)
        .args(extra))
}

#[test]
fn push_reports_the_registrys_digest_and_a_clean_engine_hits_the_registry() {
    let fx = Fixtures::load();
    let registry = TestRegistry::start(None);
    let dir = tempfile::tempdir().unwrap();
    let config = docker_config(dir.path(), "{}");
    let repository = format!("{}/team/sdk", registry.addr);
    let _cleanup = TestRepo {
        name: repository.clone(),
    };
    let req = unique_requirements(dir.path(), "tabulate==0.9.0\n");

    let o = build(&fx, &repository, &req, &["--push"], &config);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let report = json(&o);
    let tag = report["image"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let digest = report["digest"].as_str().unwrap().to_string();
    assert_eq!(
        registry.digest("team/sdk", &tag, None).as_deref(),
        Some(digest.as_str()),
        "the registry's own digest"
    );
    let pinned = format!("{repository}@{digest}");
    assert_eq!(report["sdk_container_image"], pinned.as_str());

    // The pinned reference pulls and runs on an engine that forgot the build.
    forget_local(&repository);
    docker_ok(&["pull", &pinned]);
    let o = python_in(&pinned, "import tabulate; print(tabulate.__version__)");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "0.9.0",
        "{}",
        stderr(&o)
    );
    let _ = docker(&["rmi", &pinned]);
    forget_local(&repository);

    // Every local image but the base is gone: the registry is the cache.
    let o = build(&fx, &repository, &req, &["--push"], &config);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let again = json(&o);
    assert_eq!(again["cached"], true);
    assert_eq!(again["digest"], digest.as_str(), "same digest");
    assert!(again["image_id"].is_null(), "nothing was pulled");
    assert!(
        again["layers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["cache"] == "registry"),
        "{again}"
    );
    assert!(
        !stderr(&o).contains("creating setup container"),
        "no container was created"
    );
    assert!(
        docker_ok(&["images", &repository, "-q"]).is_empty(),
        "no layer was downloaded"
    );
}

#[test]
fn credentials_from_docker_config_and_helpers_never_leak() {
    let fx = Fixtures::load();
    let registry = TestRegistry::start(Some(USER));
    let dir = tempfile::tempdir().unwrap();
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", USER.0, USER.1));
    let config = docker_config(
        dir.path(),
        &format!(
            r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#,
            registry.addr
        ),
    );
    let repository = format!("{}/team/secure", registry.addr);
    let _cleanup = TestRepo {
        name: repository.clone(),
    };
    let req = unique_requirements(dir.path(), "tabulate==0.9.0\n");
    let report_file = dir.path().join("report.json");

    let o = build(
        &fx,
        &repository,
        &req,
        &["--push", "-vv", "--report", report_file.to_str().unwrap()],
        &config,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let report = json(&o);
    let image = report["image"].as_str().unwrap();
    let tag = image.rsplit(':').next().unwrap();
    assert_eq!(
        registry.digest("team/secure", tag, Some(USER)),
        report["digest"].as_str().map(str::to_string)
    );

    // A credential helper (credHelpers) works the same way.
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-prebuildertest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"{}\",\"Secret\":\"{}\"}}' \"$server\"\n",
            USER.0, USER.1
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("755")
        .arg(&helper)
        .status()
        .unwrap();
    let helper_config = dir.path().join("helper-config");
    std::fs::create_dir_all(&helper_config).unwrap();
    std::fs::write(
        helper_config.join("config.json"),
        format!(
            r#"{{"credHelpers": {{"{}": "prebuildertest"}}}}"#,
            registry.addr
        ),
    )
    .unwrap();
    let helper_repository = format!("{}/team/helper", registry.addr);
    let _cleanup2 = TestRepo {
        name: helper_repository.clone(),
    };
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let o2 = run(prebuilder()
        .env("DOCKER_CONFIG", &helper_config)
        .env("PATH", path)
        .args([
            "build",
            "--base",
            &fx.beam_image,
            "--network",
            "none",
            "--format",
            "json",
            "-vv",
        ])
        .args([
            "--repository",
            &helper_repository,
            "--push",
            "--requirements-file",
        ])
        .arg(&req)
        .arg("--requirements-cache")
        .arg(&fx.demo_wheels));
    assert_eq!(o2.status.code(), Some(0), "{}", stderr(&o2));
    let r2 = json(&o2);
    let tag2 = r2["image"].as_str().unwrap().rsplit(':').next().unwrap();
    assert_eq!(
        registry.digest("team/helper", tag2, Some(USER)),
        r2["digest"].as_str().map(str::to_string)
    );

    // No secret in output, report, image config, labels or history, in any encoding.
    let mut haystack = String::new();
    for o in [&o, &o2] {
        haystack.push_str(&String::from_utf8_lossy(&o.stdout));
        haystack.push_str(&String::from_utf8_lossy(&o.stderr));
    }
    haystack.push_str(&std::fs::read_to_string(&report_file).unwrap());
    for img in [image, r2["image"].as_str().unwrap()] {
        haystack.push_str(&docker_ok(&["image", "inspect", img]));
        haystack.push_str(&docker_ok(&["history", "--no-trunc", img]));
    }
    let json_auth = base64::engine::general_purpose::STANDARD.encode(format!(
        r#"{{"username":"{}","password":"{}""#,
        USER.0, USER.1
    ));
    for secret in [USER.1, auth.as_str(), &json_auth[..20]] {
        assert!(!haystack.contains(secret), "a secret ({secret}) leaked");
    }
}

#[test]
fn registry_failures_say_what_to_do_and_leave_nothing_pushed() {
    let fx = Fixtures::load();
    let dir = tempfile::tempdir().unwrap();
    let empty = docker_config(dir.path(), "{}");
    let req = unique_requirements(dir.path(), "text-unidecode==1.3\n");

    // 401 without credentials.
    let secure = TestRegistry::start(Some(USER));
    let repository = format!("{}/team/x", secure.addr);
    let _c1 = TestRepo {
        name: repository.clone(),
    };
    let o = build(&fx, &repository, &req, &["--push"], &empty);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "registry {} refused the request: authentication required",
            secure.addr
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("docker login {}", secure.addr)),
        "{err}"
    );
    // No report: the error object, which names the registry too.
    let failure = error_object(&o);
    assert!(
        failure["error"].as_str().unwrap().contains(&secure.addr),
        "{failure}"
    );

    // Connection refused: a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let refused = format!("127.0.0.1:{port}/team/x");
    let _c2 = TestRepo {
        name: refused.clone(),
    };
    let o = build(&fx, &refused, &req, &["--push"], &empty);
    assert_eq!(o.status.code(), Some(3), "unavailable: worth a retry");
    let err = stderr(&o);
    assert!(
        err.contains(&format!("cannot reach registry 127.0.0.1:{port}")) && err.contains("refused"),
        "{err}"
    );
    // Without --push the registry is only a cache: a warning and a local build.
    let o = build(&fx, &refused, &req, &[], &empty);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("building locally"), "{}", stderr(&o));
    assert!(json(&o)["digest"].is_null());
    // A relaunch that finds every layer here never contacts the registry, nor
    // asks for credentials: this config names a helper that does not exist.
    let absent_helper = dir.path().join("absent-helper");
    std::fs::create_dir_all(&absent_helper).unwrap();
    std::fs::write(
        absent_helper.join("config.json"),
        format!(r#"{{"credHelpers": {{"127.0.0.1:{port}": "prebuilder-absent"}}}}"#),
    )
    .unwrap();
    let o = build(&fx, &refused, &req, &[], &absent_helper);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(json(&o)["cached"], true);
    assert!(
        !stderr(&o).contains("registry"),
        "the registry was consulted: {}",
        stderr(&o)
    );

    // Unknown registry host.
    let unknown = "nosuchhost.invalid:5000/team/x";
    let _c3 = TestRepo {
        name: unknown.to_string(),
    };
    let o = build(&fx, unknown, &req, &["--push"], &empty);
    assert_eq!(o.status.code(), Some(3), "cannot reach: worth a retry");
    let err = stderr(&o);
    assert!(
        err.contains("cannot reach registry nosuchhost.invalid:5000"),
        "{err}"
    );

    // 403: Debian's registry has no access control, so a minimal HTTP server
    // on loopback answers every request with 403, as a registry denying this
    // account would.
    let forbidden = forbidding_server();
    let repository = format!("127.0.0.1:{}/team/x", forbidden.port);
    let _c4 = TestRepo {
        name: repository.clone(),
    };
    let o = build(&fx, &repository, &req, &["--push"], &empty);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("denied access to team/x") && err.contains("ask for access"),
        "{err}"
    );

    // 503: the registry is there but unavailable; exit 3 (retry), not 2.
    let unavailable = answering_server("503 Service Unavailable");
    let repository = format!("127.0.0.1:{}/team/x", unavailable.port);
    let _c5 = TestRepo {
        name: repository.clone(),
    };
    let o = build(&fx, &repository, &req, &["--push"], &empty);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "cannot reach registry 127.0.0.1:{}",
            unavailable.port
        )) && err.contains("503"),
        "{err}"
    );
}

#[test]
fn a_push_that_breaks_midway_reports_nothing_and_a_retry_succeeds() {
    let fx = Fixtures::load();
    let dir = tempfile::tempdir().unwrap();
    let empty = docker_config(dir.path(), "{}");
    // Reads work (the lookup), writes fail (the push) until the restart.
    let mut registry = TestRegistry::start_with(None, true);
    let repository = format!("{}/team/midway", registry.addr);
    let _cleanup = TestRepo {
        name: repository.clone(),
    };
    let req = unique_requirements(dir.path(), "tabulate==0.9.0\n");
    let o = build(&fx, &repository, &req, &["--push"], &empty);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        error_object(&o)["error"].is_string(),
        "nothing is reported as pushed: only the error object"
    );
    let err = stderr(&o);
    assert!(
        err.contains(&format!("registry {}", registry.addr)) && err.contains("pushing"),
        "{err}"
    );
    assert!(err.contains("pushing again is safe"), "{err}");

    registry.restart(false);
    let o = build(&fx, &repository, &req, &["--push"], &empty);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let report = json(&o);
    assert_eq!(
        report["cached"], true,
        "the retry builds nothing: the local layers are reused"
    );
    let tag = report["image"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap();
    assert_eq!(
        registry.digest("team/midway", tag, None),
        report["digest"].as_str().map(str::to_string)
    );
}

#[test]
fn a_tag_holding_other_content_is_not_overwritten_silently() {
    let fx = Fixtures::load();
    let registry = TestRegistry::start(None);
    let dir = tempfile::tempdir().unwrap();
    let empty = docker_config(dir.path(), "{}");
    let repository = format!("{}/team/tags", registry.addr);
    let _cleanup = TestRepo {
        name: repository.clone(),
    };
    let first = unique_requirements(dir.path(), "tabulate==0.9.0\n");
    let second = unique_requirements(dir.path(), "text-unidecode==1.3\n");

    let o = build(
        &fx,
        &repository,
        &first,
        &["--push", "--tag", "stable"],
        &empty,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let d1 = json(&o)["digest"].as_str().unwrap().to_string();
    assert_eq!(
        registry.digest("team/tags", "stable", None).as_deref(),
        Some(d1.as_str())
    );

    let o = build(
        &fx,
        &repository,
        &second,
        &["--push", "--tag", "stable"],
        &empty,
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "{repository}:stable already exists in the registry with other content ({d1})"
        )),
        "{err}"
    );
    assert!(err.contains("--replace-tags"), "{err}");
    assert_eq!(
        registry.digest("team/tags", "stable", None).as_deref(),
        Some(d1.as_str()),
        "not overwritten"
    );

    let o = build(
        &fx,
        &repository,
        &second,
        &["--push", "--tag", "stable", "--replace-tags"],
        &empty,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let d2 = json(&o)["digest"].as_str().unwrap().to_string();
    assert_ne!(d1, d2);
    assert_eq!(
        registry.digest("team/tags", "stable", None).as_deref(),
        Some(d2.as_str())
    );
    assert!(
        stderr(&o).contains(&format!("moving {repository}:stable from {d1} to {d2}")),
        "said so"
    );
}

/// An HTTP server on loopback that answers 403 to everything, until dropped.
struct Forbidding {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

fn forbidding_server() -> Forbidding {
    answering_server("403 Forbidden")
}

/// A loopback HTTP server answering every request with `status`.
fn answering_server(status: &'static str) -> Forbidding {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        while !flag.load(std::sync::atomic::Ordering::SeqCst) {
            match listener.accept() {
                Ok((mut s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf);
                    let _ = s.write_all(
                        format!(
                            "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    );
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
    });
    Forbidding { port, stop }
}

impl Drop for Forbidding {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A credential helper script named `docker-credential-<name>` in `dir`.
fn credential_helper(dir: &Path, name: &str, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("docker-credential-{name}"));
    std::fs::write(&path, format!("#!/bin/sh\n{script}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_credential_helper_without_an_entry_means_anonymous_as_docker_does() {
    let fx = Fixtures::load();
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    // What docker-credential-helpers print for a server they hold nothing for.
    credential_helper(
        &bin,
        "prebuilder-none",
        "cat >/dev/null\necho 'credentials not found in native keychain'\nexit 1\n",
    );
    credential_helper(
        &bin,
        "prebuilder-broken",
        "cat >/dev/null\necho 'tok-7d1e-secret-in-helper-output'\necho 'keychain locked' >&2\nexit 1\n",
    );
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let none = docker_config(dir.path(), r#"{"credsStore": "prebuilder-none"}"#);
    let broken_dir = dir.path().join("broken");
    std::fs::create_dir_all(&broken_dir).unwrap();
    let broken = docker_config(&broken_dir, r#"{"credsStore": "prebuilder-broken"}"#);

    // An anonymous registry as a cache: "not found" is anonymous, the build goes on.
    let open = TestRegistry::start(None);
    let repository = format!("{}/team/helper", open.addr);
    let _c1 = TestRepo {
        name: repository.clone(),
    };
    let req = unique_requirements(dir.path(), "tabulate==0.9.0\n");
    let o = run(prebuilder()
        .env("PATH", &path)
        .env("DOCKER_CONFIG", &none)
        .args(["build", "--base", &fx.beam_image, "--network", "none"])
        .args(["--format", "json", "--repository", &repository])
        .arg("--requirements-file")
        .arg(&req)
        .arg("--requirements-cache")
        .arg(&fx.demo_wheels));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(json(&o)["cached"], false);

    // With --push to a registry that needs a login, the registry's 401 says what to do.
    let secure = TestRegistry::start(Some(USER));
    let repository = format!("{}/team/helper", secure.addr);
    let _c2 = TestRepo {
        name: repository.clone(),
    };
    let req = unique_requirements(dir.path(), "tabulate==0.9.0\n");
    let o = run(prebuilder()
        .env("PATH", &path)
        .env("DOCKER_CONFIG", &none)
        .args([
            "build",
            "--base",
            &fx.beam_image,
            "--network",
            "none",
            "--push",
        ])
        .args(["--repository", &repository])
        .arg("--requirements-file")
        .arg(&req)
        .arg("--requirements-cache")
        .arg(&fx.demo_wheels));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("authentication required (no credentials are configured for it)")
            && err.contains(&format!("docker login {}", secure.addr)),
        "{err}"
    );

    // Any other helper failure is an error naming the helper once, and
    // nothing it printed.
    let o = run(prebuilder()
        .env("PATH", &path)
        .env("DOCKER_CONFIG", &broken)
        .args([
            "build",
            "--base",
            &fx.beam_image,
            "--network",
            "none",
            "--push",
        ])
        .args(["--repository", &repository])
        .arg("--requirements-file")
        .arg(&req)
        .arg("--requirements-cache")
        .arg(&fx.demo_wheels));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("credential helper docker-credential-prebuilder-broken failed"),
        "{err}"
    );
    assert!(
        !err.contains("docker-credential-docker-credential"),
        "{err}"
    );
    assert!(
        !err.contains("tok-7d1e-secret"),
        "helper output leaked: {err}"
    );
}
