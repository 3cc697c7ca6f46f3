//! Unit tests of the check rules, the probe parser and the report.

use super::*;

/// A good Beam SDK image, as the probe reports it.
fn good() -> ImageFacts {
    ImageFacts {
        image: "apache/beam_python3.11_sdk:2.77.0".into(),
        id: "sha256:0123456789abcdef".into(),
        os: "linux".into(),
        architecture: "amd64".into(),
        shell: true,
        entrypoint: vec![BOOT.into()],
        cmd: vec![],
        default_environment: None,
        probe: Probe {
            executable: Some("/usr/local/bin/python".into()),
            version: Some("3.11.2".into()),
            apache_beam: Some("2.77.0".into()),
            pip: Some("23.0.1".into()),
            venv: Some(true),
            protobuf: Some("6.33.6".into()),
            dill: None,
            cloudpickle: None,
            cloudpickle_vendored: Some("3.1.1".into()),
            pickle_library: Some("cloudpickle".into()),
            machine: Some("x86_64".into()),
            boot: Some("executable".into()),
            python: Some("/usr/local/bin/python".into()),
            python3: Some("/usr/bin/python3".into()),
            os: Some("Debian GNU/Linux 12 (bookworm)".into()),
        },
    }
}

fn launch() -> LaunchFacts {
    let mut p = good().probe;
    p.boot = None;
    p.python = None;
    p.python3 = None;
    p.os = None;
    p.version = Some("3.11.7".into());
    LaunchFacts {
        python: "/venv/bin/python".into(),
        probe: p,
    }
}

fn checks(f: &[Finding]) -> Vec<&str> {
    f.iter().map(|f| f.check.as_str()).collect()
}

#[test]
fn a_beam_sdk_image_has_no_findings() {
    assert!(image_findings(&good(), ImageRules::default()).is_empty());
    assert!(launch_findings(&good(), &launch(), None).is_empty());
    let r = CheckReport::new(good(), Some(launch()), vec![], None);
    assert!(r.compatible);
    assert!(
        r.to_text().contains("compatible: no findings"),
        "{}",
        r.to_text()
    );
}

#[test]
fn no_python_on_path_says_install_python_is_python3() {
    let mut img = good();
    img.probe.python = None;
    let f = image_findings(&img, ImageRules::default());
    assert_eq!(checks(&f), ["python"]);
    assert!(f[0]
        .message
        .contains("no `python` on PATH (python3 is /usr/bin/python3)"));
    assert!(
        f[0].fix.contains("install python-is-python3"),
        "{}",
        f[0].fix
    );
}

#[test]
fn no_python_at_all() {
    let mut img = good();
    img.probe = Probe {
        boot: Some("executable".into()),
        ..Probe::default()
    };
    let f = image_findings(&img, ImageRules::default());
    assert_eq!(checks(&f), ["python"]);
    assert!(f[0].message.contains("nor `python3`"));
}

#[test]
fn python_2_stops_the_other_python_rules() {
    let mut img = good();
    img.probe.version = Some("2.7.18".into());
    img.probe.apache_beam = None;
    let f = image_findings(&img, ImageRules::default());
    assert_eq!(checks(&f), ["python-version"]);
}

#[test]
fn missing_beam_pip_and_venv() {
    let mut img = good();
    img.probe.apache_beam = None;
    img.probe.pip = None;
    img.probe.venv = Some(false);
    let f = image_findings(&img, ImageRules::default());
    assert_eq!(checks(&f), ["apache-beam", "pip", "venv"]);
    assert!(f[1].fix.contains("python3-pip"));
    assert!(f[2].fix.contains("install python3-venv"));
    assert!(f[2].fix.contains("RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT=1"));
    // A staged SDK installs apache-beam; the default environment needs no venv.
    img.default_environment = Some("1".into());
    let f = image_findings(
        &img,
        ImageRules {
            sdk_staged: true,
            ..Default::default()
        },
    );
    assert_eq!(checks(&f), ["pip"]);
}

#[test]
fn boot_missing_suggests_boot_from_the_matching_sdk_image() {
    let mut img = good();
    img.probe.boot = Some("missing".into());
    img.entrypoint = vec![];
    let f = image_findings(&img, ImageRules::default());
    assert_eq!(checks(&f), ["boot"]);
    assert!(f[0].message.contains("has no /opt/apache/beam/boot"));
    assert!(
        f[0].fix
            .contains("--boot-from apache/beam_python3.11_sdk:2.77.0"),
        "{}",
        f[0].fix
    );
    // With --boot-from the boot and the entrypoint are not the base's business.
    assert!(image_findings(
        &img,
        ImageRules {
            boot_added: true,
            ..Default::default()
        }
    )
    .is_empty());
}

#[test]
fn wrong_entrypoint_and_unexecutable_boot() {
    let mut img = good();
    img.entrypoint = vec!["/bin/bash".into()];
    let f = image_findings(&img, ImageRules::default());
    assert_eq!(checks(&f), ["entrypoint"]);
    assert!(f[0].fix.contains(r#"ENTRYPOINT ["/opt/apache/beam/boot"]"#));
    img.probe.boot = Some("not-executable".into());
    assert_eq!(
        checks(&image_findings(&img, ImageRules::default())),
        ["boot"]
    );
}

#[test]
fn no_shell_is_the_only_finding() {
    let mut img = good();
    img.shell = false;
    img.probe = Probe::default();
    assert_eq!(
        checks(&image_findings(&img, ImageRules::default())),
        ["shell"]
    );
}

#[test]
fn launch_mismatches_say_what_to_use() {
    let mut img = good();
    img.probe.version = Some("3.10.12".into());
    img.probe.apache_beam = Some("2.76.0".into());
    img.probe.protobuf = Some("5.29.0".into());
    img.probe.cloudpickle_vendored = Some("3.0.0".into());
    let f = launch_findings(&img, &launch(), None);
    assert_eq!(
        checks(&f),
        ["python-minor", "beam-version", "pickler", "protobuf-major"]
    );
    assert!(f[0].fix.contains("launch with Python 3.10"), "{}", f[0].fix);
    assert!(
        f[1].fix.contains("use Beam 2.76.0 at launch"),
        "{}",
        f[1].fix
    );
    assert!(
        f[2].message.contains("cloudpickle 3.1.1"),
        "{}",
        f[2].message
    );
    assert!(f[3].fix.contains("protobuf>=6,<7"), "{}", f[3].fix);
}

#[test]
fn dill_must_be_in_the_image_when_the_pipeline_uses_it() {
    let mut l = launch();
    l.probe.dill = Some("0.3.9".into());
    let f = launch_findings(&good(), &l, Some("dill"));
    assert_eq!(checks(&f), ["pickler"]);
    assert!(f[0].fix.contains("dill==0.3.9"));
    // The default (cloudpickle) does not care about dill.
    assert!(launch_findings(&good(), &l, None).is_empty());
    let mut img = good();
    img.probe.dill = Some("0.3.9".into());
    assert!(launch_findings(&img, &l, Some("dill")).is_empty());
}

#[test]
fn boot_version_must_match_the_base() {
    let base = good();
    let mut boot = good();
    boot.image = "apache/beam_python3.11_sdk:2.76.0".into();
    boot.probe.apache_beam = Some("2.76.0".into());
    let f = boot_findings(&base, &boot);
    assert_eq!(checks(&f), ["boot-version"]);
    assert!(f[0]
        .fix
        .contains("--boot-from apache/beam_python3.11_sdk:2.77.0"));
    assert!(boot_findings(&base, &good()).is_empty());
}

#[test]
fn probe_output_is_the_last_marker_line() {
    let out = "noise\nprebuilder-probe: {\"version\": \"3.9.1\"}\nprebuilder-probe: {\"version\": \"3.11.2\", \"venv\": true, \"future\": 1}\n";
    let p = Probe::parse(out).unwrap();
    assert_eq!(p.version.as_deref(), Some("3.11.2"));
    assert_eq!(p.minor().as_deref(), Some("3.11"));
    assert_eq!(p.venv, Some(true));
    assert!(Probe::parse("no marker").is_none());
    assert!(Probe::parse("prebuilder-probe: {not json").is_none());
}

#[test]
fn env_values() {
    let env = vec![
        "PATH=/bin".to_string(),
        "RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT=1".to_string(),
        "RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENTX=2".to_string(),
    ];
    assert_eq!(env_value(&env, DEFAULT_ENV_VAR).as_deref(), Some("1"));
    assert_eq!(env_value(&env, "HOME"), None);
}

#[test]
fn report_json_and_text() {
    let mut img = good();
    img.probe.python = None;
    let r = CheckReport::new(img, None, vec!["no launch Python".into()], None);
    assert!(!r.compatible);
    let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(v["compatible"], false);
    assert_eq!(v["findings"][0]["check"], "python");
    assert!(v["findings"][0]["fix"].is_string());
    assert!(v["launch"].is_null());
    assert_eq!(v["image"]["probe"]["apache_beam"], "2.77.0");
    let t = r.to_text();
    assert!(
        t.contains("not on PATH (python3 is /usr/bin/python3)"),
        "{t}"
    );
    assert!(t.contains("fix: install python-is-python3"), "{t}");
    assert!(t.contains("note: no launch Python"), "{t}");
    assert!(t.contains("not compatible: 1 finding(s)"), "{t}");
}

/// The probe really runs: under this host's python3, in launch mode.
#[test]
fn probe_py_runs_in_launch_mode() {
    let Some(py) = python3_on_path(std::env::var_os("PATH").as_deref()) else {
        return;
    };
    let p = probe_launch(&py).unwrap();
    assert!(
        p.version.as_deref().is_some_and(|v| v.starts_with('3')),
        "{p:?}"
    );
    assert!(p.boot.is_none());
    let err = probe_launch(Path::new("/nonexistent/python")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/python"), "{err}");
}
