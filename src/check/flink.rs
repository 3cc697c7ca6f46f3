//! Checks on a PyFlink base before anything is installed: apache-flink
//! importable, Java present, and the base's Python minor version equal to
//! the launching Python's (PyFlink pickles UDFs on the client and unpickles
//! them in the workers). One probe container with no network.

use super::Finding;
use crate::engine::{ops, Engine};
use crate::error::{Error, Result};
use crate::progress::{Event, Reporter};
use crate::stage::flink::{FlinkSetup, ARCHIVES_DIR};

/// `$1` = the Python to ask. Prints `java=`, `python=` and `flink=` lines.
const PROBE: &str = r#"py=$1
if command -v java >/dev/null 2>&1 || [ -x "${JAVA_HOME:-/nonexistent}/bin/java" ]; then
  echo java=yes
else
  echo java=no
fi
"$py" -c 'import sys; print("python=%d.%d.%d" % sys.version_info[:3])' 2>/dev/null || echo python=none
"$py" -c 'import importlib.metadata as m, pyflink; print("flink=" + m.version("apache-flink"))' 2>/dev/null || echo flink=none
"#;

/// What the probe found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub java: bool,
    /// `3.11.2`
    pub python: Option<String>,
    pub flink: Option<String>,
}

pub fn parse(stdout: &str) -> Facts {
    let mut f = Facts::default();
    for line in stdout.lines() {
        match line.split_once('=') {
            Some(("java", v)) => f.java = v == "yes",
            Some(("python", v)) if v != "none" => f.python = Some(v.to_string()),
            Some(("flink", v)) if v != "none" => f.flink = Some(v.to_string()),
            _ => {}
        }
    }
    f
}

/// The Python the base is probed with: the workers' one unless it sits in an
/// archive not extracted yet (then the base's python3, which a venv archive
/// normally points at).
pub fn probe_python(setup: &FlinkSetup) -> String {
    match &setup.executable {
        Some(exe) if !exe.starts_with(ARCHIVES_DIR) => exe.clone(),
        _ => "python3".to_string(),
    }
}

/// `3.11.7` → `3.11`.
fn minor(version: &str) -> &str {
    match version.match_indices('.').nth(1) {
        Some((i, _)) => &version[..i],
        None => version,
    }
}

/// Findings from the probe's facts and the launching Python's version
/// (`None` when it could not be asked).
pub fn findings(
    facts: &Facts,
    python: &str,
    image: &str,
    launch: Option<(&str, &str)>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    if !facts.java {
        out.push(Finding {
            check: "java".into(),
            message: format!("no `java` on PATH or in $JAVA_HOME/bin of {image}: PyFlink's Java side cannot start"),
            fix: "use a Flink image (it has a JRE 11 or 17) or install one in the base, e.g. Debian's openjdk-17-jre-headless".into(),
        });
    }
    match &facts.python {
        None => out.push(Finding {
            check: "python".into(),
            message: format!("{python} does not run in {image}"),
            fix: "use a base with Python, or point --py-executable at the image's Python".into(),
        }),
        Some(v) => {
            if facts.flink.is_none() {
                out.push(Finding {
                    check: "apache-flink".into(),
                    message: format!(
                        "{python} (Python {v}) in {image} cannot import pyflink (apache-flink)"
                    ),
                    fix: "install apache-flink, the version of your cluster, in the base".into(),
                });
            }
            if let Some((launch_python, launch_version)) = launch {
                if minor(v) != minor(launch_version) {
                    out.push(Finding {
                        check: "python-version".into(),
                        message: format!(
                            "{image} has Python {} ({python}) but the job is launched with Python {} ({launch_python})",
                            minor(v),
                            minor(launch_version)
                        ),
                        fix: format!(
                            "launch with a Python {} (python.client.executable) or use a base with Python {}",
                            minor(v),
                            minor(launch_version)
                        ),
                    });
                }
            }
        }
    }
    out
}

/// The launching Python: `python.client.executable` (or, when that is not
/// set, `PYFLINK_CLIENT_EXECUTABLE`: the caller puts it there), else
/// `python3` on PATH; with its version.
/// `None` (and a note) when it cannot be run here.
fn launch_python(setup: &FlinkSetup) -> Option<(String, String)> {
    let python = setup
        .client_executable
        .clone()
        .unwrap_or_else(|| "python3".to_string());
    let out = std::process::Command::new(&python)
        .args(["-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"])
        .output();
    match out {
        Ok(o) if o.status.success() => Some((
            python,
            String::from_utf8_lossy(&o.stdout).trim().to_string(),
        )),
        _ => {
            tracing::warn!(
                "cannot run the launching Python {python} here; its version is not compared with the base's"
            );
            None
        }
    }
}

/// Probe `image` (an id; `name` is how messages call it) and refuse it with
/// every finding.
pub async fn check_base<E: Engine>(
    engine: &E,
    image: &str,
    name: &str,
    setup: &FlinkSetup,
    reporter: &dyn Reporter,
) -> Result<()> {
    reporter.event(Event::CheckingBase { name });
    let python = probe_python(setup);
    let out = ops::probe(
        engine,
        image,
        vec![
            "/bin/sh".into(),
            "-c".into(),
            PROBE.into(),
            "probe".into(),
            python.clone(),
        ],
    )
    .await?;
    if !out.shell {
        return Err(Error::ProbeFailed {
            image: name.to_string(),
            reason: "it has no /bin/sh".into(),
        });
    }
    let facts = parse(&out.stdout);
    let launch = launch_python(setup);
    let findings = findings(
        &facts,
        &python,
        name,
        launch.as_ref().map(|(p, v)| (p.as_str(), v.as_str())),
    );
    if findings.is_empty() {
        Ok(())
    } else {
        Err(Error::PyFlinkBaseRefused {
            image: name.to_string(),
            findings: super::list(&findings),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_find() {
        let ok = parse("java=yes\npython=3.11.2\nflink=2.3.0\n");
        assert_eq!(
            ok,
            Facts {
                java: true,
                python: Some("3.11.2".into()),
                flink: Some("2.3.0".into())
            }
        );
        assert!(findings(&ok, "python3", "img", Some(("python3", "3.11.7"))).is_empty());

        let differ = findings(
            &ok,
            "python3",
            "img",
            Some(("/usr/bin/python3.12", "3.12.1")),
        );
        assert_eq!(differ.len(), 1);
        let m = &differ[0].message;
        assert!(
            m.contains("3.11") && m.contains("3.12") && m.contains("/usr/bin/python3.12"),
            "{m}"
        );

        let bare = parse("java=no\npython=3.11.2\nflink=none\n");
        let checks: Vec<String> = findings(&bare, "python3", "img", None)
            .into_iter()
            .map(|f| f.check)
            .collect();
        assert_eq!(checks, ["java", "apache-flink"]);

        let none = parse("java=yes\npython=none\nflink=none\n");
        let f = findings(&none, "python3", "img", Some(("python3", "3.11.7")));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].check, "python");
    }

    #[test]
    fn minor_versions() {
        assert_eq!(minor("3.11.7"), "3.11");
        assert_eq!(minor("3.11"), "3.11");
    }
}
