//! Every engine a CI runner really has, chosen as the docker CLI chooses it:
//! a second dockerd reached over TLS (`DOCKER_HOST` + `DOCKER_TLS_VERIFY`),
//! over ssh and through a docker context, and the refusals when the
//! configuration cannot work.

use std::path::Path;
use std::process::{Command, Output};

use crate::daemons::{processes_mentioning, Engine, SshServer};
use crate::support::*;

const ENGINE_VARS: [&str; 6] = [
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_TLS",
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

/// `build` of `base` with none of the engine variables of the test's environment.
fn bare_build(base: &str) -> Build {
    ENGINE_VARS
        .into_iter()
        .fold(Build::new(base), Build::env_remove)
}

/// A bare build of `requirements` (cache: the demo wheels) and `project`
/// into `repo`.
fn build(fx: &Fixtures, repo: &str, requirements: &Path, project: Option<&Path>) -> Build {
    let build = bare_build(&fx.beam_image)
        .repository(repo)
        .requirements(requirements)
        .cache(&fx.demo_wheels);
    match project {
        Some(p) => build.setup_file(p),
        None => build,
    }
}

fn ok(o: &Output) -> serde_json::Value {
    assert_eq!(o.status.code(), Some(0), "{}", stderr(o));
    json(o)
}

/// The image is on the second daemon, keeps the base's entrypoint and carries
/// the key labels; the main engine does not have it.
fn check_on(daemon: &Engine, fx: &Fixtures, report: &serde_json::Value) {
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
/// loading the base takes ~30 s; the scenarios run in order on it). Its
/// storage is overlay2: the driver does not matter to how it is reached, and
/// fuse-overlayfs (the main engine's, tested by every other test) is slower
/// at loading the 640 MB base and every layer.
#[test]
fn a_second_dockerd_over_tls_ssh_and_contexts() {
    let fx = Fixtures::load();
    let daemon = Engine::dockerd().storage("overlay2").tls().start();
    daemon.load_from_main(&fx.beam_image);
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("pipeline");
    copy_tree(&repo().join("demo/pipeline"), &project);
    let requirements = unique_requirements(dir.path(), &demo_requirements_text());
    let repo = format!("prebuilder-test/engines-{}", std::process::id());
    let tcp = format!("tcp://{}", daemon.tcp());

    // 1. TLS asked for, certificates missing: refused before any request, like the CLI.
    let o = build(&fx, &repo, &requirements, None)
        .env("DOCKER_HOST", &tcp)
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", dir.path().join("no-certs"))
        .run();
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains(&format!("{tcp} (from DOCKER_HOST)")), "{err}");
    assert!(err.contains("no-certs/ca.pem"), "{err}");
    assert!(err.contains("hint: point DOCKER_CERT_PATH"), "{err}");
    assert!(!err.contains("start the Docker"), "{err}");

    // Plain HTTP to the TLS port: named, with a hint about TLS.
    let o = build(&fx, &repo, &requirements, None)
        .env("DOCKER_HOST", &tcp)
        .run();
    assert_eq!(
        o.status.code(),
        Some(3),
        "an engine that does not answer is unavailable (3)"
    );
    let err = stderr(&o);
    assert!(
        err.contains("cannot reach the container engine at"),
        "{err}"
    );
    assert!(err.contains("DOCKER_TLS_VERIFY=1"), "{err}");
    assert!(!err.contains("start the Docker"), "{err}");

    // 2. A build over TLS, certificates from DOCKER_CERT_PATH.
    let tls = build(&fx, &repo, &requirements, Some(&project))
        .env("DOCKER_HOST", &tcp)
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", daemon.client_certs())
        .ok();
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
    let o = build(&fx, &repo, &requirements, Some(&project))
        .docker_config(&config)
        .env("DOCKER_CONTEXT", ctx)
        .run();
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
    let transforms = project.join("demo_pipeline/transforms.py");
    let code = std::fs::read_to_string(&transforms).unwrap();
    std::fs::write(
        &transforms,
        format!("{code}\n# changed for the context build\n"),
    )
    .unwrap();
    let app = build(&fx, &repo, &requirements, Some(&project))
        .docker_config(&config)
        .ok();
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
    let o = build(&fx, &repo, &requirements, None)
        .docker_config(&config)
        .env("DOCKER_CONTEXT", "en-no-such-context")
        .run();
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
    let code = std::fs::read_to_string(&transforms).unwrap();
    std::fs::write(
        &transforms,
        format!("{code}\n# changed for the ssh build\n"),
    )
    .unwrap();
    // bollard's ssh transport keeps its `ssh -M` masters' control sockets
    // under openssh's state directory ($XDG_STATE_HOME): one of our own, so
    // that its processes are told apart from any other ssh on the machine.
    let ssh_state = tempfile::Builder::new()
        .prefix("bootfrom-ssh-state-")
        .tempdir()
        .unwrap();
    let since = ssh.invocations().len();
    let over_ssh = build(&fx, &repo, &requirements, Some(&project))
        .env("PATH", ssh.path_env())
        .env("XDG_STATE_HOME", ssh_state.path())
        .env("DOCKER_HOST", format!("ssh://root@{}", ssh.alias))
        .ok();
    assert_no_ssh_left(&ssh, since, ssh_state.path(), "a build that succeeded");
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

    // An error exit over ssh (the base is not on that engine, --pull never):
    // its masters are closed too.
    let since = ssh.invocations().len();
    let o = bare_build("prebuilder-test/bootfrom-absent:1")
        .repository(&repo)
        .requirements(&requirements)
        .cache(&fx.demo_wheels)
        .args(["--pull", "never"])
        .env("PATH", ssh.path_env())
        .env("XDG_STATE_HOME", ssh_state.path())
        .env("DOCKER_HOST", format!("ssh://root@{}", ssh.alias))
        .run();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("prebuilder-test/bootfrom-absent:1"),
        "{}",
        stderr(&o)
    );
    assert_no_ssh_left(&ssh, since, ssh_state.path(), "a build that failed");

    // A port in the ssh URL: refused with the way around it.
    let o = build(&fx, &repo, &requirements, None)
        .env("DOCKER_HOST", "ssh://root@127.0.0.1:2222")
        .run();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("Port 2222"), "{}", stderr(&o));
}

/// prebuilder has exited: it started `ssh -M` masters with their control
/// sockets under `state` (counted from the ssh wrapper's log past its first
/// `since` lines, so the check cannot pass vacuously), and none of them, nor
/// any other process naming `state`, is left; nor are their control
/// directories. (The masters are daemonised, `ssh -f`: no child of
/// prebuilder's, so they are found by their control path.)
fn assert_no_ssh_left(ssh: &SshServer, since: usize, state: &Path, when: &str) {
    let state = state.display().to_string();
    let masters = ssh.invocations()[since..]
        .iter()
        .filter(|l| l.split(' ').any(|a| a == "-M") && l.contains(&state))
        .count();
    assert!(
        masters >= 1,
        "{when}: no ssh master was started under {state}: {:?}",
        ssh.invocations()
    );
    // `ssh -O exit` has returned before prebuilder exits; the master may
    // take a moment to go. Left alone, it would stay forever (ControlPersist=yes).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let mut left = processes_mentioning(&state);
    while !left.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        left = processes_mentioning(&state);
    }
    // Not to leak into the next run or the machine if the check fails.
    for p in &left {
        if let Some((pid, _)) = p.split_once(':') {
            let _ = Command::new("kill").arg(pid).status();
        }
    }
    assert!(
        left.is_empty(),
        "{when}: {} ssh process(es) of ours left after prebuilder exited ({masters} master(s) started): {left:?}",
        left.len()
    );
    let dirs: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".ssh-connection"))
        .collect();
    assert!(
        dirs.is_empty(),
        "{when}: control directories left: {dirs:?}"
    );
}

/// The Podman service's view of one image's config, as JSON strings.
fn podman_config(podman: &Engine, image: &str) -> Vec<String> {
    [
        "{{json .Config.Entrypoint}}",
        "{{json .Config.Cmd}}",
        "{{json .Config.Env}}",
        "{{json .Config.WorkingDir}}",
        "{{json .Config.User}}",
    ]
    .iter()
    .map(|f| podman.docker_ok(&["image", "inspect", image, "--format", f]))
    .collect()
}

/// Podman 4 through its Docker-compatible API, as a CI runner has it: a
/// correct image (the base's config, key labels, no snapshot or staged file),
/// ids and tags in Docker's form, an unchanged relaunch that creates no
/// container, a code change that reuses the dependency layer, `gc` that sees
/// the images, a failed setup that leaves nothing, push and digest to a
/// loopback registry, and the verification refusing what Podman's `/commit`
/// makes. One service for all (loading the base into it takes ~30 s).
#[test]
fn podman_builds_correct_images_reuses_them_and_pushes() {
    let fx = Fixtures::load();
    let registry = TestRegistry::start(None);
    let podman = Engine::podman().insecure_registry(&registry.addr).start();
    podman.load_from_main(&fx.beam_image);
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("pipeline");
    copy_tree(&repo().join("demo/pipeline"), &project);
    let requirements = unique_requirements(dir.path(), &demo_requirements_text());
    let repo = format!("prebuilder-test/podman-{}", std::process::id());
    let on_podman = |build: Build| build.host(&podman.host());
    let no_containers = || {
        let left = podman.docker_ok(&["ps", "-aq"]);
        assert!(left.is_empty(), "containers left on podman: {left}");
    };

    // A build: the image is what Docker would make.
    let launch = on_podman(build(&fx, &repo, &requirements, Some(&project)));
    let o = launch.run();
    let first = ok(&o);
    assert_eq!(first["cached"], false);
    let image = first["image"].as_str().unwrap();
    assert!(image.starts_with(&format!("{repo}:")), "{image}");
    let id = first["image_id"].as_str().unwrap();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
    for (_, _, layer_id) in layers(&first) {
        assert!(layer_id.starts_with("sha256:"), "{layer_id}");
    }
    assert_eq!(
        podman_config(&podman, image),
        podman_config(&podman, &fx.beam_image),
        "Entrypoint, Cmd, Env, WorkingDir, User are the base's"
    );
    let label = |f: &str| {
        podman.docker_ok(&[
            "image",
            "inspect",
            image,
            "--format",
            &format!("{{{{index .Config.Labels \"{f}\"}}}}"),
        ])
    };
    assert_eq!(label("prebuilder"), "image");
    assert_eq!(label("prebuilder.layer"), "application");
    assert!(label("prebuilder.key").starts_with(image.rsplit_once(':').unwrap().1));
    let err = stderr(&o);
    assert!(
        err.contains("dependencies: loading the layer") && !err.contains("committing"),
        "layers are loaded, not committed: {err}"
    );
    let check = podman.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "sh",
        image,
        "-c",
        "test ! -e /.prebuilder-snapshot && test -z \"$(ls -A /opt/apache/beam/artifacts)\" && \
         python -c 'import demo_pipeline, slugify; print(slugify.slugify(\"Hello World\"))'",
    ]);
    assert_eq!(check, "hello-world");
    no_containers();

    // An unchanged relaunch: a hit, no container.
    let o = launch.run();
    let again = ok(&o);
    assert_eq!(again["cached"], true, "{again}");
    assert_eq!(again["image_id"], first["image_id"]);
    assert!(
        !stderr(&o).contains("container"),
        "a hit creates no container: {}",
        stderr(&o)
    );

    // gc sees Podman's images under Docker's names.
    let o = run(bare()
        .args(["gc", "--dry-run", "--format", "json", "--repository", &repo])
        .env("DOCKER_HOST", podman.host()));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let gc = json(&o);
    assert_eq!(
        gc["kept"], 2,
        "gc sees the result and its dependency layer: {gc}"
    );

    // A code change rebuilds only the application layer.
    let transforms = project.join("demo_pipeline/transforms.py");
    let code = std::fs::read_to_string(&transforms).unwrap();
    std::fs::write(&transforms, format!("{code}\n# changed on podman\n")).unwrap();
    let changed = launch.ok();
    let got: Vec<(String, String)> = layers(&changed)
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
    assert_eq!(
        layers(&changed)[0].2,
        layers(&first)[0].2,
        "the dependency layer is reused"
    );
    no_containers();

    // A failed setup: exit 1, no container, nothing tagged.
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, "tabulate==0.0.1\n").unwrap();
    let bad_repo = format!("{repo}-bad");
    let o = on_podman(build(&fx, &bad_repo, &bad, None)).run();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("tabulate==0.0.1"), "{}", stderr(&o));
    no_containers();
    assert!(
        podman.docker_ok(&["images", "-q", &bad_repo]).is_empty(),
        "nothing tagged"
    );

    // Push and digest to a loopback registry (marked insecure for Podman).
    let pushed_repo = format!("{}/prebuilder-test/podman", registry.addr);
    let pushed = on_podman(build(&fx, &pushed_repo, &requirements, Some(&project)))
        .push()
        .ok();
    let tag = pushed["image"]
        .as_str()
        .unwrap()
        .rsplit_once(':')
        .unwrap()
        .1
        .to_string();
    let digest = manifest_digest(&registry.addr, "prebuilder-test/podman", &tag, None)
        .expect("the registry has the tag");
    assert_eq!(pushed["digest"], digest.as_str());
    assert_eq!(
        pushed["sdk_container_image"],
        format!("{pushed_repo}@{digest}").as_str()
    );

    // Pushing to a loopback registry Podman was not told is insecure works:
    // prebuilder pushes through the registry API itself (plain HTTP to
    // loopback, as the engines do), and the digest is the one pushed above,
    // since the manifest is prebuilder's own bytes.
    let other = TestRegistry::start(None);
    let other_repo = format!("{}/prebuilder-test/podman", other.addr);
    let again = on_podman(build(&fx, &other_repo, &requirements, Some(&project)))
        .push()
        .ok();
    assert_eq!(again["digest"], digest.as_str(), "same image, same digest");
    // The same inputs built on Docker (the main engine, overlay storage, its
    // own gzip never used): the same image id and the same pushed digest.
    let twin_repo = format!("{}/prebuilder-test/podman-twin", other.addr);
    let _twin_cleanup = TestRepo {
        name: twin_repo.clone(),
    };
    let on_docker = build(&fx, &twin_repo, &requirements, Some(&project))
        .host(&main_host())
        .push()
        .ok();
    eprintln!(
        "Podman / Docker: image id {} / {}, digest {} / {}",
        pushed["image_id"], on_docker["image_id"], pushed["digest"], on_docker["digest"]
    );
    assert_eq!(on_docker["image_id"], pushed["image_id"], "same image id");
    assert_eq!(on_docker["digest"], pushed["digest"], "same pushed digest");
    assert_eq!(
        other
            .digest("prebuilder-test/podman", &tag, None)
            .as_deref(),
        Some(digest.as_str())
    );

    // Ctrl-C during the setup: exit 2, the setup container is removed.
    let slow = dir.path().join("slow");
    std::fs::create_dir(&slow).unwrap();
    std::fs::write(
        slow.join("setup.py"),
        "import time\ntime.sleep(120)\nfrom setuptools import setup\nsetup(name='slow', version='1')\n",
    )
    .unwrap();
    let slow_repo = format!("{repo}-interrupted");
    let mut child = on_podman(bare_build(&fx.beam_image))
        .text()
        .repository(&slow_repo)
        .setup_file(&slow)
        .command()
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stderr.take().unwrap()));
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.contains("workflow.tar.gz") && line.contains('|') {
            break;
        }
    }
    assert_eq!(
        podman.docker_ok(&["ps", "-q"]).lines().count(),
        1,
        "the setup container is running: {seen:?}"
    );
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert_eq!(
        child.wait().unwrap().code(),
        Some(130),
        "interrupted: {rest:?}"
    );
    assert!(rest.iter().any(|l| l.contains("interrupted")), "{rest:?}");
    no_containers();
    assert!(podman.docker_ok(&["images", "-q", &slow_repo]).is_empty());

    // The verification refuses what Podman's /commit makes (its Env gains
    // TERM and container=podman): removed, nothing tagged.
    let commit_repo = format!("{repo}-commit");
    let o = on_podman(build(&fx, &commit_repo, &requirements, None))
        .arg("--no-cache")
        .env("PREBUILDER_COMMIT", "1")
        .run();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("Podman 4.") && err.contains(&podman.host()),
        "the engine is named: {err}"
    );
    assert!(
        err.contains("Env is") && err.contains("container=podman"),
        "{err}"
    );
    assert!(err.contains("nothing was tagged or pushed"), "{err}");
    assert!(
        podman.docker_ok(&["images", "-q", &commit_repo]).is_empty(),
        "nothing tagged"
    );
    no_containers();
}
