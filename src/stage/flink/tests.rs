//! Staging PyFlink inputs: names, roles, layers, resolution and refusals.
//! No engine needed.

use super::archive::tests::zip_file;
use super::*;
use crate::plan;

struct Job {
    dir: tempfile::TempDir,
}

impl Job {
    fn new() -> Job {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("requirements.txt"), "tabulate==0.9.0\n").unwrap();
        std::fs::create_dir(d.join("wheels")).unwrap();
        std::fs::write(d.join("wheels/tabulate-0.9.0-py3-none-any.whl"), "w").unwrap();
        std::fs::write(d.join("udfs.py"), "def f(x): return x\n").unwrap();
        std::fs::create_dir_all(d.join("pkg/sub")).unwrap();
        std::fs::write(d.join("pkg/__init__.py"), "").unwrap();
        std::fs::write(d.join("pkg/sub/m.py"), "X = 1\n").unwrap();
        zip_file(&d.join("lib.zip"), &[("libmod.py", "Y = 2\n", false)]);
        zip_file(
            &d.join("venv.zip"),
            &[
                ("bin/python", "/usr/bin/python3", true),
                ("pyvenv.cfg", "home = /usr/bin\n", false),
            ],
        );
        zip_file(&d.join("data.zip"), &[("words.txt", "hello", false)]);
        Job { dir }
    }

    fn p(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    fn flags(&self) -> PythonOptions {
        PythonOptions {
            files: vec![self.p("udfs.py"), self.p("pkg"), self.p("lib.zip")],
            requirements: Some(format!(
                "{}#{}",
                self.p("requirements.txt"),
                self.p("wheels")
            )),
            archives: vec![
                format!("{}#venv", self.p("venv.zip")),
                format!("{}#data", self.p("data.zip")),
            ],
            executable: Some("venv/bin/python".into()),
            ..Default::default()
        }
    }
}

fn names(set: &StagedSet) -> Vec<(&str, Role)> {
    set.artifacts
        .iter()
        .map(|a| (a.name.as_str(), a.role))
        .collect()
}

#[test]
fn stages_every_input_under_its_layout_name() {
    let job = Job::new();
    let set = stage(job.flags(), None).unwrap();
    assert_eq!(
        names(&set),
        [
            ("requirements.txt", Role::Requirements),
            (
                "cache/tabulate-0.9.0-py3-none-any.whl",
                Role::RequirementsCache
            ),
            ("archives/venv/venv.zip", Role::PyArchive),
            ("archives/data/data.zip", Role::PyArchive),
            ("files/0/udfs.py", Role::PyFile),
            ("files/1/pkg/__init__.py", Role::PyFile),
            ("files/1/pkg/sub/m.py", Role::PyFile),
            ("files/2/lib.zip", Role::PyFile),
        ]
    );
    let f = set.mode.flink().unwrap();
    assert_eq!(
        f.executable.as_deref(),
        Some("/opt/flink/python-archives/venv/bin/python")
    );
    assert_eq!(
        f.pythonpath(),
        [
            "/opt/flink/python-files/0",
            "/opt/flink/python-files/1",
            "/opt/flink/python-files/2/lib.zip"
        ]
    );
    assert_eq!(f.archives["data"], "/opt/flink/python-archives/data");
    assert!(f.requirements_cache);
    assert_eq!(
        f.installer_python(),
        "/opt/flink/python-archives/venv/bin/python"
    );
}

#[test]
fn a_directory_link_loop_is_not_followed() {
    let job = Job::new();
    std::os::unix::fs::symlink(
        job.dir.path().join("pkg"),
        job.dir.path().join("pkg/sub/loop"),
    )
    .unwrap();
    let mut flags = job.flags();
    flags.files = vec![job.p("pkg")];
    let set = stage(flags, None).unwrap();
    let files: Vec<&str> = set
        .artifacts
        .iter()
        .filter(|a| a.role == Role::PyFile)
        .map(|a| a.name.as_str())
        .collect();
    assert_eq!(files, ["files/0/pkg/__init__.py", "files/0/pkg/sub/m.py"]);
}

#[test]
fn requirements_and_archives_below_python_files_above() {
    let job = Job::new();
    let set = stage(job.flags(), None).unwrap();
    let p = plan::plan(&set, "sha256:base").unwrap();
    let layers: Vec<(plan::LayerName, usize)> = p
        .layers
        .iter()
        .map(|l| (l.name, l.artifacts.len()))
        .collect();
    assert_eq!(
        layers,
        [
            (plan::LayerName::Dependencies, 4),
            (plan::LayerName::Application, 4)
        ]
    );

    // A change to a python file changes only the top key.
    std::fs::write(job.dir.path().join("udfs.py"), "def f(x): return x + 1\n").unwrap();
    let set2 = stage(job.flags(), None).unwrap();
    let p2 = plan::plan(&set2, "sha256:base").unwrap();
    assert_eq!(p.layers[0].key, p2.layers[0].key);
    assert_ne!(p.layers[1].key, p2.layers[1].key);

    // Another executable changes both (it is in the image's config).
    let mut flags = job.flags();
    flags.executable = Some("/usr/bin/python3".into());
    let set3 = stage(flags, None).unwrap();
    let p3 = plan::plan(&set3, "sha256:base").unwrap();
    assert_ne!(p2.layers[0].key, p3.layers[0].key);

    // The same staged names in Beam mode key differently.
    let beam = StagedSet::new(set2.artifacts.clone(), set2.dir.clone(), None);
    let pb = plan::plan(&beam, "sha256:base").unwrap();
    assert_ne!(pb.layers[0].key, p2.layers[0].key);
}

#[test]
fn env_puts_python_files_only_on_the_top_layer() {
    let job = Job::new();
    let set = stage(job.flags(), None).unwrap();
    let f = set.mode.flink().unwrap();
    let base = vec!["PATH=/usr/bin".to_string(), "PYTHONPATH=/base".to_string()];
    let top = f.env(true, &base);
    let exe = "/opt/flink/python-archives/venv/bin/python";
    assert!(
        top.contains(&("PYFLINK_PYTHON".into(), exe.into())),
        "{top:?}"
    );
    assert!(top.contains(&("PYFLINK_CLIENT_EXECUTABLE".into(), exe.into())));
    assert!(top.contains(&(
        "PYTHONPATH".into(),
        "/opt/flink/python-files/0:/opt/flink/python-files/1:/opt/flink/python-files/2/lib.zip:/base"
            .into()
    )));
    let below = f.env(false, &base);
    assert!(!below.iter().any(|(k, _)| k == "PYTHONPATH"), "{below:?}");
}

#[test]
fn conf_file_supplies_what_flags_do_not() {
    let job = Job::new();
    let conf = job.dir.path().join("config.yaml");
    std::fs::write(
        &conf,
        format!(
            "python:\n  files: {}\n  archives: {}#venv\n  executable: venv/bin/python\n",
            job.p("udfs.py"),
            job.p("venv.zip")
        ),
    )
    .unwrap();
    let flags = PythonOptions {
        files: vec![job.p("lib.zip")],
        ..Default::default()
    };
    let set = stage(flags, Some(&conf)).unwrap();
    assert_eq!(
        names(&set),
        [
            ("archives/venv/venv.zip", Role::PyArchive),
            ("files/0/lib.zip", Role::PyFile)
        ]
    );
    assert_eq!(
        set.mode.flink().unwrap().executable.as_deref(),
        Some("/opt/flink/python-archives/venv/bin/python")
    );
}

#[test]
fn bad_inputs_name_the_input() {
    let job = Job::new();
    let err = |flags: PythonOptions| stage(flags, None).unwrap_err().to_string();

    let mut f = job.flags();
    f.archives = vec![job.p("data.zip")];
    let e = err(f);
    assert!(
        e.starts_with("--py-archives ") && e.contains("data.zip") && e.contains("#NAME"),
        "{e}"
    );

    let evil = job.dir.path().join("evil.zip");
    zip_file(&evil, &[("../../etc/cron.d/x", "boom", false)]);
    let mut f = job.flags();
    f.archives = vec![format!("{}#evil", evil.display())];
    let e = err(f);
    assert!(e.contains("evil.zip#evil") && e.contains("escapes"), "{e}");

    let mut f = job.flags();
    f.executable = Some("venv/bin/python3.99".into());
    let e = err(f);
    assert!(
        e.starts_with("--py-executable venv/bin/python3.99") && e.contains("holds no"),
        "{e}"
    );

    let mut f = job.flags();
    f.executable = Some("nothere/bin/python".into());
    assert!(err(f).contains("no archive is named nothere"));

    let mut f = job.flags();
    f.requirements = Some(format!(
        "{}#{}",
        job.p("requirements.txt"),
        job.p("nocache")
    ));
    let e = err(f);
    assert!(
        e.starts_with("--py-requirements ")
            && e.contains("nocache")
            && e.contains("does not exist"),
        "{e}"
    );

    let mut f = job.flags();
    f.files.push(job.p("missing.py"));
    assert!(err(f).contains("--py-files"));

    let mut f = job.flags();
    f.archives.push(format!("{}#venv", job.p("data.zip")));
    assert!(err(f).contains("two archives"));

    let mut f = job.flags();
    f.archives = vec![format!("{}#../up", job.p("data.zip"))];
    assert!(err(f).contains("not a directory name"));
}

#[test]
fn an_executable_alone_installs_nothing() {
    let e = stage(
        PythonOptions {
            executable: Some("/usr/bin/python3".into()),
            ..Default::default()
        },
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("nothing to install") && e.contains("--py-files"),
        "{e}"
    );
}

#[test]
fn bad_conf_values_name_the_key_and_file() {
    let job = Job::new();
    let conf = job.dir.path().join("flink-conf.yaml");
    std::fs::write(&conf, format!("python.archives: {}\n", job.p("data.zip"))).unwrap();
    let e = stage(PythonOptions::default(), Some(&conf))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("python.archives ") && e.contains("flink-conf.yaml"),
        "{e}"
    );
}

/// The setup step really runs under sh, on this machine: an archive is
/// extracted (symlink kept), python files copied, and nothing needs pip.
#[test]
fn setup_script_extracts_archives_and_copies_files() {
    use std::process::Command;
    if Command::new("python3").arg("-V").output().is_err() {
        eprintln!("no python3 on this machine; skipped");
        return;
    }
    let job = Job::new();
    let root = tempfile::tempdir().unwrap();
    let art = root.path().join("artifacts");
    std::fs::create_dir_all(art.join("archives/venv")).unwrap();
    std::fs::copy(
        job.dir.path().join("venv.zip"),
        art.join("archives/venv/venv.zip"),
    )
    .unwrap();
    std::fs::create_dir_all(art.join("files/0")).unwrap();
    std::fs::write(art.join("files/0/udfs.py"), "X = 1\n").unwrap();
    let setup = FlinkSetup {
        executable: None,
        client_executable: None,
        files_pythonpath: vec![],
        extra_pythonpath: vec![],
        archives: BTreeMap::new(),
        requirements_cache: false,
        requirements_input: None,
    };
    let archives = root.path().join("archives");
    let files = root.path().join("files");
    let function = crate::build::flink::setup_function(&setup)
        .replace(ARCHIVES_DIR, archives.to_str().unwrap())
        .replace(FILES_DIR, files.to_str().unwrap());
    let script = format!(
        "PREBUILDER_ARTIFACTS='{}'; PREBUILDER_RECORD='{}/rec/r.json'\n{function}\nrun_setup",
        art.display(),
        root.path().display()
    );
    let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link = std::fs::read_link(archives.join("venv/bin/python")).unwrap();
    assert_eq!(link, std::path::Path::new("/usr/bin/python3"));
    assert_eq!(
        std::fs::read_to_string(archives.join("venv/pyvenv.cfg")).unwrap(),
        "home = /usr/bin\n"
    );
    assert_eq!(
        std::fs::read_to_string(files.join("0/udfs.py")).unwrap(),
        "X = 1\n"
    );
}
