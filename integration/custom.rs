//! Custom bases, checks and records (issue 6): `build --boot-from` on a base with
//! Python and apache-beam but no boot, `check` on each broken variant, a build
//! that refuses a broken base before installing anything, and `inspect`/`diff`
//! of the records two builds leave. Fixtures: integration/fixtures/custom-bases.sh.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use crate::support::*;

/// The images custom-bases.sh made (`$CACHE/custom-bases.env`).
struct Custom {
    /// Debian Python + apache-beam 2.77.0, no boot, no entrypoint.
    base: String,
    no_python: String,
    no_venv: String,
    other_beam: String,
    other_beam_version: String,
}

impl Custom {
    fn load() -> Custom {
        let cache = std::env::var("PREBUILDER_FIXTURE_CACHE")
            .unwrap_or_else(|_| "/var/cache/prebuilder-fixtures".into());
        let path = Path::new(&cache).join("custom-bases.env");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run `make fixtures` (integration/fixtures/custom-bases.sh) first",
                path.display()
            )
        });
        let vars: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
        let get = |k: &str| {
            vars.get(k)
                .unwrap_or_else(|| panic!("{} lacks {k}", path.display()))
                .to_string()
        };
        Custom {
            base: get("FIXTURE_CUSTOM_BASE"),
            no_python: get("FIXTURE_NO_PYTHON"),
            no_venv: get("FIXTURE_NO_VENV"),
            other_beam: get("FIXTURE_OTHER_BEAM"),
            other_beam_version: get("FIXTURE_OTHER_BEAM_VERSION"),
        }
    }
}

fn image_id(image: &str) -> String {
    docker_ok(&["image", "inspect", image, "--format", "{{.Id}}"])
}

fn check(image: &str, launch: Option<&Path>) -> Output {
    let mut c = prebuilder();
    c.args(["check", image, "--format", "json"]);
    match launch {
        Some(python) => c.arg("--launch-python").arg(python),
        None => c.arg("--no-launch"),
    };
    run(&mut c)
}

/// `(check, message, fix)` of each finding in a `check --format json` report.
fn findings(o: &Output) -> Vec<(String, String, String)> {
    json(o)["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap().to_string();
            (s("check"), s("message"), s("fix"))
        })
        .collect()
}

#[test]
fn check_passes_the_sdk_image_and_finds_each_broken_variant() {
    let fx = Fixtures::load();
    let custom = Custom::load();
    let launch = fx.venv_python.as_path();

    let good = check(&fx.beam_image, Some(launch));
    assert_eq!(good.status.code(), Some(0), "{}", stderr(&good));
    let report = json(&good);
    assert_eq!(report["compatible"], true);
    assert_eq!(report["findings"], serde_json::json!([]));
    assert_eq!(report["image"]["os"], "linux");
    assert_eq!(report["image"]["probe"]["apache_beam"], "2.77.0");
    assert_eq!(report["image"]["probe"]["python"], "/usr/local/bin/python");
    assert_eq!(report["launch"]["probe"]["apache_beam"], "2.77.0");

    // (image, launch Python, the one finding, words of its message, words of its fix)
    let cases: [(&str, Option<&Path>, &str, &str, &str); 4] = [
        (
            &custom.no_python,
            Some(launch),
            "python",
            "no `python` on PATH (python3 is /usr/bin/python3)",
            "install python-is-python3",
        ),
        (
            &custom.no_venv,
            Some(launch),
            "venv",
            "cannot create a venv",
            "install python3-venv",
        ),
        (
            &custom.other_beam,
            Some(launch),
            "beam-version",
            &format!(
                "apache-beam {} in the image, 2.77.0 at launch",
                custom.other_beam_version
            ),
            &format!("use Beam {} at launch", custom.other_beam_version),
        ),
        (
            &custom.base,
            None,
            "boot",
            "has no /opt/apache/beam/boot",
            "--boot-from apache/beam_python3.11_sdk:2.77.0",
        ),
    ];
    for (image, launch, id, message, fix) in cases {
        let o = check(image, launch);
        assert_eq!(o.status.code(), Some(1), "{image}: {}", stderr(&o));
        let f = findings(&o);
        assert_eq!(f.len(), 1, "{image}: exactly its own finding: {f:?}");
        assert_eq!(f[0].0, id, "{image}: {f:?}");
        assert!(f[0].1.contains(message), "{image}: {f:?}");
        assert!(f[0].2.contains(fix), "{image}: {f:?}");
        assert!(
            stderr(&o).contains("is not compatible: 1 finding(s)"),
            "{}",
            stderr(&o)
        );
    }
    // Another Beam version is a launch-side finding only.
    let alone = check(&custom.other_beam, None);
    assert_eq!(alone.status.code(), Some(0), "{}", stderr(&alone));

    // The text table says the same.
    let text = run(prebuilder().args(["check", &custom.no_venv, "--no-launch"]));
    assert_eq!(text.status.code(), Some(1));
    let table = String::from_utf8_lossy(&text.stdout);
    assert!(
        table.contains("missing (no venv/ensurepip module)"),
        "{table}"
    );
    assert!(table.contains("fix: install python3-venv"), "{table}");

    let absent = check("prebuilder-test/no-such-image:1", None);
    assert_eq!(absent.status.code(), Some(2));
    assert!(
        stderr(&absent).contains("is not on the engine"),
        "{}",
        stderr(&absent)
    );
    assert!(
        setup_containers().is_empty(),
        "no probe container may remain"
    );
}

#[test]
fn build_refuses_a_broken_base_in_seconds_before_installing() {
    let fx = Fixtures::load();
    let custom = Custom::load();
    let repo = TestRepo::new("refuse");
    let cases = [
        (custom.no_venv.clone(), None, "install python3-venv"),
        // The boot must come from the base's Beam version.
        (
            custom.other_beam.clone(),
            Some(fx.beam_image.clone()),
            "use --boot-from apache/beam_python3.11_sdk:2.76.0",
        ),
    ];
    for (base, boot_from, fix) in cases {
        let started = Instant::now();
        let mut build = Build::new(&base)
            .text()
            .repository(&repo.name)
            .requirements(demo_requirements())
            .cache(&fx.demo_wheels);
        if let Some(b) = &boot_from {
            build = build.args(["--boot-from", b]);
        }
        let o = build.run();
        let took = started.elapsed();
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains(&format!(
                "base image {base} is not ready for Beam's boot; nothing was installed"
            )),
            "{err}"
        );
        assert!(err.contains(fix), "{err}");
        assert!(
            err.contains("--no-check"),
            "the hint names the way out: {err}"
        );
        assert!(
            !err.contains("creating setup container") && !err.contains(" | "),
            "no setup ran: {err}"
        );
        assert!(took < Duration::from_secs(20), "refused in {took:?}");
        assert!(o.stdout.is_empty());
        assert!(repo.tags().is_empty(), "nothing tagged: {:?}", repo.tags());
        assert!(setup_containers().is_empty());
    }
}

/// A pure-Python wheel made on the spot: `prebuilder_diff_probe` at `version`.
fn probe_wheel(dir: &Path, version: &str) -> PathBuf {
    use base64::Engine as _;
    use sha2::Digest as _;
    let dist = format!("prebuilder_diff_probe-{version}.dist-info");
    let files = [
        (
            "prebuilder_diff_probe/__init__.py".to_string(),
            format!("__version__ = {version:?}\n"),
        ),
        (
            format!("{dist}/METADATA"),
            format!("Metadata-Version: 2.1\nName: prebuilder-diff-probe\nVersion: {version}\n"),
        ),
        (
            format!("{dist}/WHEEL"),
            "Wheel-Version: 1.0\nGenerator: prebuilder-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
                .to_string(),
        ),
    ];
    let path = dir.join(format!("prebuilder_diff_probe-{version}-py3-none-any.whl"));
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let mut record = String::new();
    for (name, content) in &files {
        zip.start_file(name.as_str(), zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(content.as_bytes()).unwrap();
        let hash = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(content.as_bytes()));
        record.push_str(&format!("{name},sha256={hash},{}\n", content.len()));
    }
    record.push_str(&format!("{dist}/RECORD,,\n"));
    zip.start_file(
        format!("{dist}/RECORD"),
        zip::write::SimpleFileOptions::default(),
    )
    .unwrap();
    zip.write_all(record.as_bytes()).unwrap();
    zip.finish().unwrap();
    path
}

fn build_custom(
    custom: &Custom,
    fx: &Fixtures,
    repo: &TestRepo,
    requirements: &Path,
    cache: &Path,
) -> serde_json::Value {
    Build::new(&custom.base)
        .args(["--boot-from", &fx.beam_image])
        .repository(&repo.name)
        .requirements(requirements)
        .cache(cache)
        .setup_file(demo_setup())
        .ok()
}

fn layers(report: &serde_json::Value) -> Vec<(String, String)> {
    report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap().to_string(),
                l["cache"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn boot_from_builds_on_a_bootless_base_and_diff_shows_a_requirements_change() {
    let fx = Fixtures::load();
    let custom = Custom::load();
    let repo = TestRepo::new("bootfrom");
    let dir = tempfile::tempdir().unwrap();
    // One cache for both builds (demo wheels + two versions of a probe package),
    // so the only input that changes is requirements.txt.
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    for e in std::fs::read_dir(&fx.demo_wheels).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "whl") {
            std::fs::copy(&p, cache.join(p.file_name().unwrap())).unwrap();
        }
    }
    probe_wheel(&cache, "1.0");
    probe_wheel(&cache, "1.1");
    let demo = std::fs::read_to_string(demo_requirements()).unwrap();
    let req_a = dir.path().join("a/requirements.txt");
    let req_b = dir.path().join("b/requirements.txt");
    for (path, version) in [(&req_a, "1.0"), (&req_b, "1.1")] {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, format!("{demo}prebuilder-diff-probe=={version}\n")).unwrap();
    }

    // A: the boot-less base gets the SDK image's boot, then installs the pipeline.
    let a = build_custom(&custom, &fx, &repo, &req_a, &cache);
    assert_eq!(
        layers(&a),
        pairs(&[
            ("boot", "miss"),
            ("dependencies", "miss"),
            ("application", "miss")
        ])
    );
    let image_a = a["image"].as_str().unwrap().to_string();
    assert_eq!(a["base"]["id"], image_id(&custom.base).as_str());
    let inspect = |what: &str| docker_ok(&["image", "inspect", &image_a, "--format", what]);
    assert_eq!(
        inspect("{{json .Config.Entrypoint}}"),
        r#"["/opt/apache/beam/boot"]"#
    );
    assert!(
        ["null", "[]"].contains(&inspect("{{json .Config.Cmd}}").as_str()),
        "the base's CMD python3 is dropped, as a Dockerfile ENTRYPOINT does"
    );
    assert_eq!(
        inspect("{{json .Config.Env}}"),
        docker_ok(&[
            "image",
            "inspect",
            &custom.base,
            "--format",
            "{{json .Config.Env}}"
        ]),
        "the base's environment is kept"
    );
    let o = python_in(
        &image_a,
        "import os, demo_pipeline, slugify, tabulate, prebuilder_diff_probe as p; \
         assert os.access('/opt/apache/beam/boot', os.X_OK); print(p.__version__)",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "1.0");
    assert!(setup_containers().is_empty(), "no container may remain");

    // The result passes the checks, launch side included.
    let ok = check(&image_a, Some(&fx.venv_python));
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );

    // Its record: label and file agree; packages, inputs, base and boot.
    let o = run(prebuilder().args(["inspect", &image_a, "--format", "json"]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let record = json(&o)["record"].clone();
    assert_eq!(record["packages"]["prebuilder-diff-probe"], "1.0");
    assert_eq!(record["packages"]["apache-beam"], "2.77.0");
    assert_eq!(record["packages"]["tabulate"], "0.9.0");
    assert!(
        record["packages"]["prebuilder-demo"].is_string(),
        "{record}"
    );
    assert_eq!(record["base"], image_id(&custom.base).as_str());
    assert_eq!(record["boot_from"], image_id(&fx.beam_image).as_str());
    assert!(record["inputs"]["dependencies"]["requirements.txt"].is_string());
    assert!(record["inputs"]["application"]["workflow.tar.gz"].is_string());
    let label: serde_json::Value =
        serde_json::from_str(&inspect("{{index .Config.Labels \"prebuilder.record\"}}")).unwrap();
    assert_eq!(label, record);
    let file = docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--label",
        "prebuilder.test=1",
        "--entrypoint",
        "cat",
        &image_a,
        "/opt/apache/beam/prebuilder-record.json",
    ]);
    // The file has everything; the label leaves out the distributions
    // (their licence texts pass the label's size limit), which inspect
    // does not show.
    let mut file: serde_json::Value = serde_json::from_str(&file).unwrap();
    let distributions = file
        .as_object_mut()
        .unwrap()
        .remove("distributions")
        .expect("the file has the distributions");
    assert_eq!(
        distributions["tabulate"]["layer"], "dependencies",
        "{distributions}"
    );
    assert_eq!(file, record);
    let text = run(prebuilder().args(["inspect", &image_a]));
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("prebuilder-diff-probe==1.0"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );

    // Unchanged inputs: everything is found, the boot layer included.
    let again = build_custom(&custom, &fx, &repo, &req_a, &cache);
    assert_eq!(again["cached"], true);
    assert_eq!(again["image"], a["image"]);
    assert_eq!(layers(&again)[0], ("boot".to_string(), "hit".to_string()));

    // B: a requirements change rebuilds from the dependencies up, on the same boot layer.
    let b = build_custom(&custom, &fx, &repo, &req_b, &cache);
    assert_eq!(
        layers(&b),
        pairs(&[
            ("boot", "hit"),
            ("dependencies", "miss"),
            ("application", "miss")
        ])
    );
    let image_b = b["image"].as_str().unwrap();
    let o = run(prebuilder().args(["diff", &image_a, image_b, "--format", "json"]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let d = json(&o);
    assert_eq!(d["same"], false);
    assert_eq!(
        d["packages"],
        serde_json::json!({
            "added": {}, "removed": {},
            "changed": {"prebuilder-diff-probe": {"from": "1.0", "to": "1.1"}}
        }),
        "exactly the requirement that changed"
    );
    assert_eq!(d["inputs"]["added"], serde_json::json!({}));
    assert_eq!(d["inputs"]["removed"], serde_json::json!({}));
    let changed: Vec<&String> = d["inputs"]["changed"].as_object().unwrap().keys().collect();
    assert_eq!(changed, ["requirements.txt"]);
    assert!(
        d["base"].is_null() && d["boot_from"].is_null() && d["python"].is_null(),
        "{d}"
    );
    let text = run(prebuilder().args(["diff", &image_a, image_b]));
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("packages     0 added, 0 removed, 1 changed"),
        "{text}"
    );
    assert!(
        text.contains("  ~ prebuilder-diff-probe 1.0 -> 1.1"),
        "{text}"
    );
    assert!(setup_containers().is_empty(), "no container may remain");
}

/// `image` pushed to a registry as `reference` (with the docker CLI config
/// `config`; the files of a registry seed, see [`crate::support::publish`]),
/// then untagged here: the engine keeps the id, not the name.
fn publish(image: &str, config: &Path, reference: &str) {
    crate::support::publish(image, reference, Some(config));
}

/// `build --boot-from --push` with both images named by their registry
/// references (on the engine the tests run against; `.host()` for another).
fn build_boot_from_registry(
    (base, boot): (&str, &str),
    repository: &str,
    requirements: &Path,
    config: &Path,
) -> Build {
    let fx = Fixtures::load();
    Build::new(base)
        .args(["--boot-from", boot])
        .push()
        .repository(repository)
        .requirements(requirements)
        .cache(&fx.demo_wheels)
        .docker_config(config)
}

/// A fresh runner with `--boot-from` (issue 11): the base and the Beam image
/// live only in a loopback htpasswd registry. The first runner pulls both
/// (the result is not there yet), builds and pushes; an empty second engine
/// then reads both images' ids from the registry, computes the same keys, and
/// finishes on the registry hit with nothing pulled at all.
#[test]
fn boot_from_on_an_empty_engine_hits_the_registry_with_nothing_pulled() {
    use crate::daemons::Engine;
    use crate::fresh::{logged_in, USER};
    let fx = Fixtures::load();
    let custom = Custom::load();
    let registry = TestRegistry::start(Some(USER));
    let dir = tempfile::tempdir().unwrap();
    let config = logged_in(dir.path(), &registry.addr);
    let pid = std::process::id();
    let base = format!("{}/bf/gpu:{pid}", registry.addr);
    let boot = format!("{}/bf/beam:{pid}", registry.addr);
    publish(&custom.base, &config, &base);
    publish(&fx.beam_image, &config, &boot);
    let repository = format!("{}/bf/sdk", registry.addr);
    let _cleanup: Vec<TestRepo> = ["bf/sdk", "bf/gpu", "bf/beam"]
        .iter()
        .map(|p| TestRepo {
            name: format!("{}/{p}", registry.addr),
        })
        .collect();
    let on_main = |r: &str| docker(&["image", "inspect", r]).status.success();
    assert!(!on_main(&base) && !on_main(&boot), "only in the registry");
    let req = unique_requirements(dir.path(), "tabulate==0.9.0\n");

    // The first runner: the result is not in the registry, so both images
    // are pulled, the boot layer built, and the result pushed.
    let launch = build_boot_from_registry((&base, &boot), &repository, &req, &config);
    let o = launch.run();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let first = json(&o);
    let err = stderr(&o);
    assert_eq!(
        layers(&first),
        pairs(&[("boot", "miss"), ("dependencies", "miss")])
    );
    for r in [&base, &boot] {
        assert!(err.contains(&format!("pulling {r}")), "{err}");
        assert!(on_main(r), "{r} pulled");
    }
    assert!(
        err.contains(&format!("--boot-from {boot}: image id")),
        "the boot image's id read from its registry first: {err}"
    );
    assert_eq!(first["base"]["id"], image_id(&custom.base).as_str());
    let digest = first["digest"].as_str().unwrap().to_string();

    // An empty runner: same inputs, the same key from the registries' ids.
    let engine = Engine::dockerd().storage("vfs").start();
    assert_eq!(engine.docker_ok(&["images", "-aq"]), "", "starts empty");
    let t = Instant::now();
    let o = launch.host(&engine.host()).run();
    let seconds = t.elapsed().as_secs_f64();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let hit = json(&o);
    let err = stderr(&o);
    assert_eq!(hit["image"], first["image"], "the keys of the local build");
    assert_eq!(hit["cached"], true, "{hit}");
    assert_eq!(hit["digest"], digest.as_str());
    assert_eq!(hit["base"]["id"], first["base"]["id"]);
    assert_eq!(
        layers(&hit),
        pairs(&[("boot", "registry"), ("dependencies", "registry")])
    );
    assert!(err.contains("not pulled"), "{err}");
    assert!(!err.contains("pulling"), "{err}");
    assert_eq!(
        engine.docker_ok(&["images", "-aq"]),
        "",
        "nothing was pulled: not the base, not the boot image, not a layer"
    );
    eprintln!(
        "--boot-from registry hit on an empty engine: {seconds:.2} s (process), 0 images pulled"
    );
}
