//! Every engine a CI runner really has, chosen as the docker CLI chooses it:
//! a second dockerd reached over TLS (`DOCKER_HOST` + `DOCKER_TLS_VERIFY`),
//! over ssh and through a docker context, and the refusals when the
//! configuration cannot work.

use std::path::Path;
use std::process::{Command, Output};

use crate::daemons::{SecondDockerd, SshServer};
use crate::support::*;

const ENGINE_VARS: [&str; 5] = [
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_TLS_VERIFY",
    "DOCKER_CERT_PATH",
    "DOCKER_CONFIG",
];

/// prebuilder with none of the engine variables of the test's environment.
fn bare() -> Command {
    let mut c = prebuilder();
    for v in ENGINE_VARS {
        c.env_remove(v);
    }
    c
}

fn build_args(
    fx: &Fixtures,
    repo: &str,
    requirements: &Path,
    project: Option<&Path>,
) -> Vec<String> {
    let mut a: Vec<String> = [
        "build",
        "--base",
        &fx.beam_image,
        "--network",
        "none",
        "--format",
        "json",
        "--repository",
        repo,
        "--requirements-file",
        requirements.to_str().unwrap(),
        "--requirements-cache",
        fx.demo_wheels.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(p) = project {
        a.extend(["--setup-file".to_string(), p.display().to_string()]);
    }
    a
}

fn ok(o: &Output) -> serde_json::Value {
    assert_eq!(o.status.code(), Some(0), "{}", stderr(o));
    json(o)
}

/// The image is on the second daemon, keeps the base's entrypoint and carries
/// the key labels; the main engine does not have it.
fn check_on(daemon: &SecondDockerd, fx: &Fixtures, report: &serde_json::Value) {
    let image = report["image"].as_str().unwrap();
    let inspect = |img: &str, f: &str| daemon.docker_ok(&["image", "inspect", img, "--format", f]);
    assert_eq!(
        inspect(image, "{{.Id}}"),
        report["image_id"].as_str().unwrap()
    );
    assert_eq!(
        inspect(image, "{{json .Config.Entrypoint}}"),
        inspect(&fx.beam_image, "{{json .Config.Entrypoint}}")
    );
    let tag = image.rsplit_once(':').unwrap().1;
    let key = inspect(image, "{{index .Config.Labels \"prebuilder.key\"}}");
    assert!(key.starts_with(tag), "key label {key:?} on {image}");
    assert!(
        !docker(&["image", "inspect", image]).status.success(),
        "{image} must not be on the main engine"
    );
    let left = daemon.docker_ok(&["ps", "-aq", "--filter", "label=prebuilder"]);
    assert!(left.is_empty(), "setup containers left: {left}");
}

/// One second dockerd for all four ways of reaching it (starting it and
/// loading the base takes ~30 s; the scenarios run in order on it).
#[test]
fn a_second_dockerd_over_tls_ssh_and_contexts() {
    let fx = Fixtures::load();
    let daemon = SecondDockerd::start();
    daemon.load_from_main(&fx.beam_image);
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("pipeline");
    copy_tree(&repo().join("demo/pipeline"), &project);
    let requirements = unique_requirements(dir.path(), &demo_requirements_text());
    let repo = format!("prebuilder-test/engines-{}", std::process::id());
    let tcp = format!("tcp://{}", daemon.tcp);

    // 1. TLS asked for, certificates missing: refused before any request, like the CLI.
    let o = run(bare()
        .args(build_args(&fx, &repo, &requirements, None))
        .env("DOCKER_HOST", &tcp)
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", dir.path().join("no-certs")));
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains(&format!("{tcp} (from DOCKER_HOST)")), "{err}");
    assert!(err.contains("no-certs/ca.pem"), "{err}");
    assert!(err.contains("hint: point DOCKER_CERT_PATH"), "{err}");
    assert!(!err.contains("start the Docker"), "{err}");

    // Plain HTTP to the TLS port: named, with a hint about TLS.
    let o = run(bare()
        .args(build_args(&fx, &repo, &requirements, None))
        .env("DOCKER_HOST", &tcp));
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("cannot reach the container engine at"),
        "{err}"
    );
    assert!(err.contains("DOCKER_TLS_VERIFY=1"), "{err}");
    assert!(!err.contains("start the Docker"), "{err}");

    // 2. A build over TLS, certificates from DOCKER_CERT_PATH.
    let o = run(bare()
        .args(build_args(&fx, &repo, &requirements, None))
        .env("DOCKER_HOST", &tcp)
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", &daemon.certs.client));
    let tls = ok(&o);
    assert_eq!(tls["cached"], false, "{tls}");
    check_on(&daemon, &fx, &tls);

    // 3. A context the real docker CLI created, named by DOCKER_CONTEXT: the
    //    same inputs hit what the TLS build left on that daemon.
    let config = dir.path().join("docker-config");
    std::fs::create_dir_all(&config).unwrap();
    let cli = |args: &[&str]| {
        let o = Command::new("docker")
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env("DOCKER_CONFIG", &config)
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "docker {args:?}: {}", stderr(&o));
    };
    let ctx = "en-second";
    cli(&[
        "context",
        "create",
        ctx,
        "--docker",
        &format!("host={}", daemon.host()),
    ]);
    let o = run(bare()
        .args(build_args(&fx, &repo, &requirements, None))
        .env("DOCKER_CONFIG", &config)
        .env("DOCKER_CONTEXT", ctx));
    let hit = ok(&o);
    assert_eq!(hit["cached"], true, "{hit}");
    assert_eq!(hit["image_id"], tls["image_id"]);
    assert!(
        !stderr(&o).contains("creating setup container"),
        "a hit creates no container"
    );

    // 4. The current context of config.json (`docker context use`): a code
    //    change reuses the dependency layer on that daemon.
    cli(&["context", "use", ctx]);
    let o = run(bare()
        .args(build_args(&fx, &repo, &requirements, Some(&project)))
        .env("DOCKER_CONFIG", &config));
    let app = ok(&o);
    let got: Vec<(String, String)> = layers(&app).into_iter().map(|(n, c, _)| (n, c)).collect();
    assert_eq!(
        got,
        [
            ("dependencies".to_string(), "hit".to_string()),
            ("application".to_string(), "miss".to_string())
        ]
    );
    check_on(&daemon, &fx, &app);
    // A context that does not exist: refused, named with where its name came from.
    let o = run(bare()
        .args(build_args(&fx, &repo, &requirements, None))
        .env("DOCKER_CONFIG", &config)
        .env("DOCKER_CONTEXT", "en-no-such-context"));
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("context en-no-such-context from DOCKER_CONTEXT")
            && err.contains("context not found"),
        "{err}"
    );

    // 5. Over ssh: the remote's `docker system dial-stdio` talks to the
    //    second daemon; a real build (upload, attach, load) goes through it.
    let ssh = SshServer::start(&daemon.host());
    let transforms = project.join("demo_pipeline/transforms.py");
    let code = std::fs::read_to_string(&transforms).unwrap();
    std::fs::write(
        &transforms,
        format!("{code}\n# changed for the ssh build\n"),
    )
    .unwrap();
    let o = run(bare()
        .args(build_args(&fx, &repo, &requirements, Some(&project)))
        .env("PATH", ssh.path_env())
        .env("DOCKER_HOST", format!("ssh://root@{}", ssh.alias)));
    let over_ssh = ok(&o);
    let got: Vec<(String, String)> = layers(&over_ssh)
        .into_iter()
        .map(|(n, c, _)| (n, c))
        .collect();
    assert_eq!(
        got,
        [
            ("dependencies".to_string(), "hit".to_string()),
            ("application".to_string(), "miss".to_string())
        ]
    );
    assert_ne!(over_ssh["image_id"], app["image_id"]);
    check_on(&daemon, &fx, &over_ssh);
    let o = daemon.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "python",
        over_ssh["image"].as_str().unwrap(),
        "-c",
        "import demo_pipeline, slugify; print('ok')",
    ]);
    assert_eq!(o, "ok");

    // A port in the ssh URL: refused with the way around it.
    let o = run(bare()
        .args(build_args(&fx, &repo, &requirements, None))
        .env("DOCKER_HOST", "ssh://root@127.0.0.1:2222"));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("Port 2222"), "{}", stderr(&o));
}
