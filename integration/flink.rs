//! PyFlink (issue 14): a job's Python dependencies baked into a Flink image,
//! then a real PyFlink Table API job run in that image with no network and no
//! python.requirements/python.archives/python.files at run time. Fixture:
//! integration/fixtures/flink.sh (apache-flink 2.3.0 + JRE 17).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::support::*;

struct FlinkFixtures {
    image: String,
    job_wheels: PathBuf,
}

impl FlinkFixtures {
    fn load() -> FlinkFixtures {
        let cache = std::env::var("PREBUILDER_FIXTURE_CACHE")
            .unwrap_or_else(|_| "/var/cache/prebuilder-fixtures".into());
        let path = Path::new(&cache).join("flink.env");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run `make fixtures` (integration/fixtures/flink.sh) first",
                path.display()
            )
        });
        let vars: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
        FlinkFixtures {
            image: vars["FIXTURE_FLINK_IMAGE"].to_string(),
            job_wheels: vars["FIXTURE_FLINK_JOB_WHEELS"].into(),
        }
    }
}

/// The job: a Python UDF that imports the requirement (tabulate), a module
/// from a --py-files file, reads a data file from an archive, and says which
/// Python runs it. `_python_worker_execution_mode=process` makes the mini
/// cluster start its Python workers as a task manager does (python.executable,
/// the image's environment) instead of running UDFs in the client process.
const JOB: &str = r#"import os, sys
from pyflink.table import DataTypes, EnvironmentSettings, TableEnvironment
from pyflink.table.udf import udf

data_dir = sys.argv[1]
t_env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
t_env.get_config().set("python.executable", os.environ["PYFLINK_PYTHON"])
t_env.get_config().set("parallelism.default", "1")

@udf(result_type=DataTypes.STRING())
def describe(i):
    import sys, tabulate, fl_helpers
    words = open(os.path.join(data_dir, "words.txt")).read().split()
    return "|".join([fl_helpers.shout(words[i]), tabulate.__version__, sys.executable])

t = t_env.from_elements([(0,), (1,)], ["i"])
with t.select(describe(t.i)).execute().collect() as rows:
    for r in rows:
        print("ROW", r[0], flush=True)
"#;

struct Job {
    dir: tempfile::TempDir,
    mark: String,
}

impl Job {
    /// Inputs unique to this run (the archive's words carry the pid), so the
    /// first build misses whatever else is on the engine.
    fn new() -> Job {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mark = format!("fl{}", std::process::id());
        std::fs::write(d.join("requirements.txt"), "tabulate==0.9.0\n").unwrap();
        std::fs::write(
            d.join("fl_helpers.py"),
            "def shout(word):\n    return word.upper() + '!'\n",
        )
        .unwrap();
        // A virtualenv as PyFlink users ship one: bin/python links to the
        // image's interpreter and sees its site-packages (apache-flink).
        zip(
            &d.join("venv.zip"),
            &[
                (
                    "pyvenv.cfg",
                    "home = /usr/bin\ninclude-system-site-packages = true\nversion = 3.11.2\n",
                    false,
                ),
                ("bin/python", "/usr/bin/python3", true),
            ],
        );
        zip(
            &d.join("data.zip"),
            &[("words.txt", &format!("alpha beta {mark}\n"), false)],
        );
        std::fs::write(d.join("job.py"), JOB).unwrap();
        Job { dir, mark }
    }

    fn p(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    fn flags(&self, fx: &FlinkFixtures) -> Vec<String> {
        vec![
            "--py-requirements".into(),
            format!("{}#{}", self.p("requirements.txt"), fx.job_wheels.display()),
            "--py-files".into(),
            self.p("fl_helpers.py"),
            "--py-archives".into(),
            format!("{}#venv,{}#data", self.p("venv.zip"), self.p("data.zip")),
            "--py-executable".into(),
            "venv/bin/python".into(),
        ]
    }

    /// The same options as a nested config.yaml.
    fn conf(&self, fx: &FlinkFixtures) -> PathBuf {
        let path = self.dir.path().join("config.yaml");
        std::fs::write(
            &path,
            format!(
                "python:\n  requirements: {}#{}\n  files: {}\n  archives:\n    - {}#venv\n    - {}#data\n  executable: venv/bin/python\n",
                self.p("requirements.txt"),
                fx.job_wheels.display(),
                self.p("fl_helpers.py"),
                self.p("venv.zip"),
                self.p("data.zip"),
            ),
        )
        .unwrap();
        path
    }
}

fn zip(path: &Path, entries: &[(&str, &str, bool)]) {
    let mut w = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts = zip::write::SimpleFileOptions::default();
    for (name, content, link) in entries {
        if *link {
            w.add_symlink(*name, *content, opts).unwrap();
        } else {
            w.start_file(*name, opts).unwrap();
            w.write_all(content.as_bytes()).unwrap();
        }
    }
    w.finish().unwrap();
}

fn build(fx: &FlinkFixtures, repo: &TestRepo, args: &[String]) -> Build {
    Build::new(&fx.image).repository(&repo.name).args(args)
}

#[test]
fn pyflink_job_runs_in_the_prebuilt_image_offline_and_relaunches_hit() {
    let fx = FlinkFixtures::load();
    let repo = TestRepo::new("fl-job");
    let job = Job::new();

    let first = build(&fx, &repo, &job.flags(&fx)).ok();
    let l = layers(&first);
    assert_eq!(
        l.iter()
            .map(|(n, c, _)| (n.as_str(), c.as_str()))
            .collect::<Vec<_>>(),
        [("dependencies", "miss"), ("application", "miss")],
        "{first}"
    );
    let exe = "/opt/flink/python-archives/venv/bin/python";
    assert_eq!(first["flink"]["python_executable"], exe, "{first}");
    assert_eq!(
        first["flink"]["pythonpath"],
        serde_json::json!(["/opt/flink/python-files/0"])
    );
    assert_eq!(
        first["flink"]["archives"]["data"],
        "/opt/flink/python-archives/data"
    );
    let image = first["image"].as_str().unwrap().to_string();
    let env = docker_ok(&["image", "inspect", "-f", "{{json .Config.Env}}", &image]);
    assert!(env.contains(&format!("PYFLINK_PYTHON={exe}")), "{env}");
    assert!(
        env.contains("PYTHONPATH=/opt/flink/python-files/0"),
        "{env}"
    );

    // The image's record lists what the workers' Python has: the requirement.
    let o = run(prebuilder().args(["inspect", &image]));
    assert!(o.status.success(), "{}", stderr(&o));
    let record = String::from_utf8_lossy(&o.stdout);
    assert!(record.contains("tabulate==0.9.0"), "{record}");
    assert!(record.contains("apache-flink==2.3.0"), "{record}");

    // The job, with no network, no install options, the job file mounted.
    let name = format!("fl-job-{}", std::process::id());
    let mount = format!("{}:/job/job.py:ro", job.p("job.py"));
    let o = docker(&[
        "run",
        "--rm",
        "--name",
        &name,
        "--network",
        "none",
        "-h",
        "localhost",
        "--label",
        "prebuilder.test=1",
        "-e",
        "_python_worker_execution_mode=process",
        "-v",
        &mount,
        &image,
        "python3",
        "/job/job.py",
        "/opt/flink/python-archives/data",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "the job failed:\n{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut rows: Vec<&str> = out.lines().filter(|l| l.starts_with("ROW ")).collect();
    rows.sort_unstable();
    assert_eq!(
        rows,
        [
            format!("ROW ALPHA!|0.9.0|{exe}"),
            format!("ROW BETA!|0.9.0|{exe}")
        ],
        "{out}"
    );

    // Unchanged relaunch, the same options from a config.yaml: a hit.
    let conf = job.conf(&fx);
    let again = build(&fx, &repo, &[]).arg("--flink-conf").arg(&conf).ok();
    assert_eq!(again["cached"], true, "{again}");
    assert_eq!(again["image"], first["image"]);

    // A change to a --py-files file rebuilds only the top layer.
    std::fs::write(
        job.dir.path().join("fl_helpers.py"),
        "def shout(word):\n    return word.upper() + '!!'\n",
    )
    .unwrap();
    let changed = build(&fx, &repo, &job.flags(&fx)).ok();
    let c = layers(&changed);
    assert_eq!(
        (c[0].1.as_str(), c[1].1.as_str()),
        ("hit", "miss"),
        "{changed}"
    );
    assert_eq!(c[0].2, l[0].2, "the dependencies layer's image is reused");
    assert_ne!(changed["image"], first["image"]);
    assert!(setup_containers().is_empty(), "{:?}", setup_containers());
}

#[test]
fn pyflink_bad_inputs_fail_naming_the_input_and_leave_nothing() {
    let fx = FlinkFixtures::load();
    let repo = TestRepo::new("fl-bad");
    let job = Job::new();

    // A `#` missing.
    let mut args = job.flags(&fx);
    args[5] = job.p("data.zip");
    let o = build(&fx, &repo, &args).run();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("--py-archives") && e.contains("#NAME"), "{e}");

    // An archive escaping its directory.
    let evil = job.dir.path().join("evil.zip");
    zip(
        &evil,
        &[("../../../etc/profile.d/evil.sh", "echo pwned", false)],
    );
    let mut args = job.flags(&fx);
    args[5] = format!("{}#evil", evil.display());
    let o = build(&fx, &repo, &args).run();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("evil.zip#evil") && e.contains("escapes"), "{e}");

    // A requirement missing from the cache, offline: pip's own message and
    // the input named; exit 1 (the setup failed).
    let missing = job.dir.path().join("missing.txt");
    std::fs::write(&missing, format!("prebuilder-{}-absent==1.0\n", job.mark)).unwrap();
    let mut args = job.flags(&fx);
    args[1] = format!("{}#{}", missing.display(), fx.job_wheels.display());
    let o = build(&fx, &repo, &args).run();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains(&format!("--py-requirements {}", missing.display())),
        "{e}"
    );
    assert!(e.contains("No matching distribution"), "{e}");

    // A base without apache-flink and Java: refused before anything is installed.
    let python_image = Fixtures::load().python_image;
    let o = Build::new(&python_image)
        .text()
        .repository(&repo.name)
        .args(job.flags(&fx))
        .run();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains(&format!(
            "base image {python_image} is not ready for PyFlink"
        )) && e.contains("java")
            && e.contains("apache-flink"),
        "{e}"
    );

    assert!(repo.tags().is_empty(), "nothing tagged: {:?}", repo.tags());
    assert!(setup_containers().is_empty(), "{:?}", setup_containers());
}
