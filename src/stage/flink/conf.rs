//! The `python.*` options of a PyFlink job, from the command line and from a
//! Flink configuration file, merged with Flink's precedence: a flag replaces
//! the file's value of the same option.
//!
//! Two file formats: `config.yaml` (Flink 1.19+: standard YAML, keys nested
//! — `python: {files: …}` — or flat — `python.files: a,b` — list values as
//! YAML sequences or comma-separated strings) and the legacy flat
//! `flink-conf.yaml` (one `key: value` per line, `#` comments, no YAML
//! quoting rules), chosen by the file name as Flink chooses it.

use std::collections::BTreeMap;
use std::path::Path;

use yaml_rust2::{Yaml, YamlLoader};

use crate::error::{Error, Result};

pub const FILES_KEY: &str = "python.files";
pub const REQUIREMENTS_KEY: &str = "python.requirements";
pub const ARCHIVES_KEY: &str = "python.archives";
pub const EXECUTABLE_KEY: &str = "python.executable";
pub const CLIENT_EXECUTABLE_KEY: &str = "python.client.executable";
pub const PYTHONPATH_KEY: &str = "python.pythonpath";

/// The legacy file's name: anything else is read as `config.yaml`.
const LEGACY_NAME: &str = "flink-conf.yaml";

/// The `python.*` options of one job. Paths are as written (relative paths
/// are taken from the current directory, as `flink run` takes them).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PythonOptions {
    /// `python.files` / `--py-files`.
    pub files: Vec<String>,
    /// `python.requirements` / `--py-requirements`: `FILE[#CACHE_DIR]`.
    pub requirements: Option<String>,
    /// `python.archives` / `--py-archives`: `FILE#NAME` each.
    pub archives: Vec<String>,
    /// `python.executable` / `--py-executable`.
    pub executable: Option<String>,
    /// `python.client.executable`: the Python that launches the job.
    pub client_executable: Option<String>,
    /// `python.pythonpath`: `:`-separated entries for the workers' PYTHONPATH.
    pub pythonpath: Vec<String>,
}

impl PythonOptions {
    /// Whether any option is set.
    pub fn is_empty(&self) -> bool {
        *self == PythonOptions::default()
    }

    /// `self` (the flags) over `file`: each option set here replaces the file's.
    pub fn over(self, file: PythonOptions) -> PythonOptions {
        fn list(flag: Vec<String>, file: Vec<String>) -> Vec<String> {
            if flag.is_empty() {
                file
            } else {
                flag
            }
        }
        PythonOptions {
            files: list(self.files, file.files),
            requirements: self.requirements.or(file.requirements),
            archives: list(self.archives, file.archives),
            executable: self.executable.or(file.executable),
            client_executable: self.client_executable.or(file.client_executable),
            pythonpath: list(self.pythonpath, file.pythonpath),
        }
    }
}

/// A value as the file gives it: one string, or a YAML sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Scalar(String),
    List(Vec<String>),
}

impl Value {
    /// A list option: sequence items, or a scalar split at `sep`.
    fn list(self, sep: char) -> Vec<String> {
        let items = match self {
            Value::Scalar(s) => s.split(sep).map(str::to_string).collect(),
            Value::List(v) => v,
        };
        items
            .into_iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }

    fn scalar(self) -> Option<String> {
        let s = match self {
            Value::Scalar(s) => s,
            Value::List(v) => v.join(","),
        };
        let s = s.trim().to_string();
        (!s.is_empty()).then_some(s)
    }
}

/// Read the `python.*` options of a Flink configuration file.
pub fn read(path: &Path) -> Result<PythonOptions> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::InputMissing {
                flag: "--flink-conf",
                path: path.to_path_buf(),
            }
        } else {
            Error::io(path, e)
        }
    })?;
    let legacy = path.file_name().and_then(|n| n.to_str()) == Some(LEGACY_NAME);
    let flat = if legacy {
        parse_legacy(&text)
    } else {
        parse_yaml(&text).map_err(|reason| Error::InputInvalid {
            flag: "--flink-conf",
            path: path.to_path_buf(),
            reason,
        })?
    };
    Ok(options(flat))
}

fn options(mut flat: BTreeMap<String, Value>) -> PythonOptions {
    let mut take = |key: &str| flat.remove(key);
    PythonOptions {
        files: take(FILES_KEY).map(|v| v.list(',')).unwrap_or_default(),
        requirements: take(REQUIREMENTS_KEY).and_then(Value::scalar),
        archives: take(ARCHIVES_KEY).map(|v| v.list(',')).unwrap_or_default(),
        executable: take(EXECUTABLE_KEY).and_then(Value::scalar),
        client_executable: take(CLIENT_EXECUTABLE_KEY).and_then(Value::scalar),
        pythonpath: take(PYTHONPATH_KEY)
            .map(|v| v.list(':'))
            .unwrap_or_default(),
    }
}

/// The legacy format, as Flink's `GlobalConfiguration` reads it: per line,
/// drop a `#` comment, split at the first `": "`, trim both sides.
fn parse_legacy(text: &str) -> BTreeMap<String, Value> {
    let mut flat = BTreeMap::new();
    for line in text.lines() {
        // `a.zip#venv` is a value, not a comment: a `#` starts a comment at
        // the start of a line or after whitespace.
        let comment = line
            .char_indices()
            .find(|&(i, c)| c == '#' && (i == 0 || line[..i].ends_with([' ', '\t'])))
            .map_or(line.len(), |(i, _)| i);
        let line = &line[..comment];
        if let Some((k, v)) = line.split_once(": ") {
            let (k, v) = (k.trim(), v.trim());
            if !k.is_empty() && !v.is_empty() {
                flat.insert(k.to_string(), Value::Scalar(v.to_string()));
            }
        }
    }
    flat
}

/// `config.yaml`: nested mappings are flattened to dotted keys.
fn parse_yaml(text: &str) -> std::result::Result<BTreeMap<String, Value>, String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
    let mut flat = BTreeMap::new();
    match docs.into_iter().next() {
        None | Some(Yaml::Null) => {}
        Some(Yaml::Hash(h)) => flatten("", &h, &mut flat)?,
        Some(_) => return Err("the top level is not a mapping of options".into()),
    }
    Ok(flat)
}

fn flatten(
    prefix: &str,
    hash: &yaml_rust2::yaml::Hash,
    flat: &mut BTreeMap<String, Value>,
) -> std::result::Result<(), String> {
    for (k, v) in hash {
        let Some(k) = scalar(k) else {
            return Err(format!("a key under {prefix:?} is not a string"));
        };
        let key = if prefix.is_empty() {
            k
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Yaml::Hash(inner) => flatten(&key, inner, flat)?,
            Yaml::Array(items) => {
                let items = items
                    .iter()
                    .map(|i| scalar(i).ok_or_else(|| format!("{key}: a list item is not a string")))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                flat.insert(key, Value::List(items));
            }
            Yaml::Null => {}
            other => {
                if let Some(s) = scalar(other) {
                    flat.insert(key, Value::Scalar(s));
                }
            }
        }
    }
    Ok(())
}

fn scalar(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `FILE#REST` → (`FILE`, `REST`); `None` without a `#`. The last `#`
/// separates, as in Flink, so a file name may hold one.
pub fn split_hash(spec: &str) -> Option<(&str, &str)> {
    spec.rsplit_once('#')
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::path::PathBuf;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn nested_config_yaml() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "config.yaml",
            "jobmanager:\n  rpc:\n    address: localhost\npython:\n  files: a.py,lib.zip\n  requirements: req.txt#cache\n  archives:\n    - venv.zip#venv\n    - data.zip#data\n  executable: venv/bin/python\n  client:\n    executable: /usr/bin/python3\n  pythonpath: venv/lib:extra\n",
        );
        let o = read(&p).unwrap();
        assert_eq!(o.files, ["a.py", "lib.zip"]);
        assert_eq!(o.requirements.as_deref(), Some("req.txt#cache"));
        assert_eq!(o.archives, ["venv.zip#venv", "data.zip#data"]);
        assert_eq!(o.executable.as_deref(), Some("venv/bin/python"));
        assert_eq!(o.client_executable.as_deref(), Some("/usr/bin/python3"));
        assert_eq!(o.pythonpath, ["venv/lib", "extra"]);
    }

    #[test]
    fn flat_keys_in_config_yaml() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "config.yaml",
            "python.files: a.py, b.py\npython.archives: [\"x.zip#x\"]\npython.executable: python3\n# a comment\n",
        );
        let o = read(&p).unwrap();
        assert_eq!(o.files, ["a.py", "b.py"]);
        assert_eq!(o.archives, ["x.zip#x"]);
        assert_eq!(o.executable.as_deref(), Some("python3"));
        assert_eq!(o.requirements, None);
    }

    #[test]
    fn legacy_flink_conf_yaml() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "flink-conf.yaml",
            "# legacy\ntaskmanager.numberOfTaskSlots: 2\npython.files: a.py,b.zip\npython.archives: venv.zip#venv,data.tgz#data # trailing\npython.requirements: r.txt#wheels\n  python.executable:   venv/bin/python  \nnot an option line\n",
        );
        let o = read(&p).unwrap();
        assert_eq!(o.files, ["a.py", "b.zip"]);
        assert_eq!(o.archives, ["venv.zip#venv", "data.tgz#data"]);
        assert_eq!(o.requirements.as_deref(), Some("r.txt#wheels"));
        assert_eq!(o.executable.as_deref(), Some("venv/bin/python"));
    }

    #[test]
    fn flags_override_the_file_option_by_option() {
        let file = PythonOptions {
            files: vec!["conf.py".into()],
            requirements: Some("conf.txt".into()),
            archives: vec!["conf.zip#c".into()],
            executable: Some("conf-python".into()),
            client_executable: Some("client".into()),
            pythonpath: vec!["p".into()],
        };
        let flags = PythonOptions {
            files: vec!["flag.py".into()],
            executable: Some("flag-python".into()),
            ..Default::default()
        };
        let o = flags.over(file);
        assert_eq!(o.files, ["flag.py"]);
        assert_eq!(o.executable.as_deref(), Some("flag-python"));
        // Not given as flags: the file's.
        assert_eq!(o.requirements.as_deref(), Some("conf.txt"));
        assert_eq!(o.archives, ["conf.zip#c"]);
        assert_eq!(o.client_executable.as_deref(), Some("client"));
        assert_eq!(o.pythonpath, ["p"]);
        assert!(PythonOptions::default().is_empty());
    }

    #[test]
    fn bad_yaml_and_missing_file_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "config.yaml", "python: [unclosed\n");
        let e = read(&p).unwrap_err().to_string();
        assert!(
            e.contains("--flink-conf") && e.contains("config.yaml"),
            "{e}"
        );
        let e = read(&dir.path().join("nope.yaml")).unwrap_err().to_string();
        assert!(e.contains("nope.yaml"), "{e}");
        let p = write(dir.path(), "empty.yaml", "");
        assert!(read(&p).unwrap().is_empty());
    }

    #[test]
    fn split_hash_uses_the_last_hash() {
        assert_eq!(split_hash("a.zip#venv"), Some(("a.zip", "venv")));
        assert_eq!(split_hash("we#ird.zip#n"), Some(("we#ird.zip", "n")));
        assert_eq!(split_hash("a.zip"), None);
    }
}
