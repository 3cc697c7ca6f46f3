//! Which package indexes pip would read, from the same places pip takes
//! them (`pip config list` semantics): the configuration files (global,
//! user, site; `PIP_CONFIG_FILE` after them, or none at all when it is
//! `/dev/null`), the `PIP_*` environment variables over every file, and the
//! requirements file's own `--index-url`/`--extra-index-url`/`--no-index`
//! lines over both. Within a file, `[install]` overrides `[global]`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::settings::Settings;

/// pip's default index, used when nothing names another.
pub const PYPI: &str = "https://pypi.org/simple";

/// The indexes to read, in pip's order (the index URL, then the extra ones).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Indexes {
    pub urls: Vec<String>,
    /// `--no-index` / `no-index = true` / `PIP_NO_INDEX`: no index at all.
    pub no_index: bool,
    /// pip's `cert` (`PIP_CERT`): a PEM bundle of certificate authorities.
    pub cert: Option<String>,
}

/// A pip configuration file's options that decide the indexes: `section.key`
/// (normalised as pip does: `_` → `-`) → value.
type Options = BTreeMap<String, String>;

/// The configuration files pip reads, in its override order (later wins);
/// none when PIP_CONFIG_FILE is `/dev/null`.
pub fn config_files(settings: &Settings) -> Vec<PathBuf> {
    let env_file = settings.var("PIP_CONFIG_FILE").map(PathBuf::from);
    if env_file.as_deref() == Some(Path::new("/dev/null")) {
        return Vec::new();
    }
    let mut files = Vec::new();
    // global: each XDG config dir's pip/pip.conf, then /etc/pip.conf
    let dirs = settings.var("XDG_CONFIG_DIRS").unwrap_or("/etc/xdg");
    files.extend(
        dirs.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join("pip/pip.conf")),
    );
    files.push(PathBuf::from("/etc/pip.conf"));
    // user, unless PIP_CONFIG_FILE names a file that exists
    if !env_file.as_deref().is_some_and(Path::exists) {
        let home = PathBuf::from(settings.var("HOME").unwrap_or_default());
        files.push(home.join(".pip/pip.conf"));
        let config = settings
            .var("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".config"));
        files.push(config.join("pip/pip.conf"));
    }
    // site: the virtual environment's
    if let Some(venv) = settings.var("VIRTUAL_ENV") {
        files.push(Path::new(venv).join("pip.conf"));
    }
    files.extend(env_file);
    files
}

/// The `[global]` and `[install]` options of an INI text as Python's
/// configparser reads pip.conf (`key = value` or `key: value`, indented
/// continuation lines, `#`/`;` comment lines).
pub fn parse_ini(text: &str) -> Options {
    let mut out = Options::new();
    let mut section = String::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with(['#', ';']) {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(v) = last.as_ref().and_then(|k| out.get_mut(k)) {
                v.push('\n');
                v.push_str(trimmed);
            }
            continue;
        }
        if let Some(name) = trimmed.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = name.trim().to_string();
            last = None;
            continue;
        }
        let Some(at) = trimmed.find(['=', ':']) else {
            continue;
        };
        let key = trimmed[..at]
            .trim()
            .trim_start_matches("--")
            .replace('_', "-");
        let key = format!("{section}.{key}");
        out.insert(key.clone(), trimmed[at + 1..].trim().to_string());
        last = Some(key);
    }
    out
}

/// pip's boolean strings.
fn truthy(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "1" | "yes" | "true" | "on"
    )
}

fn words(value: &str) -> Vec<String> {
    value.split_whitespace().map(str::to_string).collect()
}

/// The index options of the configuration files and the environment.
pub fn from_config(settings: &Settings) -> Indexes {
    let mut index: Option<String> = None;
    let mut extra: Vec<String> = Vec::new();
    let mut no_index = false;
    let mut cert = None;
    for file in config_files(settings) {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let options = parse_ini(&text);
        for section in ["global", "install"] {
            let get = |k: &str| options.get(&format!("{section}.{k}"));
            if let Some(v) = get("index-url") {
                index = Some(v.trim().to_string());
            }
            if let Some(v) = get("extra-index-url") {
                extra = words(v);
            }
            if let Some(v) = get("no-index") {
                no_index = truthy(v);
            }
            if let Some(v) = get("cert") {
                cert = Some(v.trim().to_string());
            }
        }
    }
    if let Some(v) = settings.var("PIP_CERT") {
        cert = Some(v.trim().to_string());
    }
    if let Some(v) = settings.var("PIP_INDEX_URL") {
        index = Some(v.trim().to_string());
    }
    if let Some(v) = settings.var("PIP_EXTRA_INDEX_URL") {
        extra = words(v);
    }
    if let Some(v) = settings.var("PIP_NO_INDEX") {
        no_index = truthy(v);
    }
    let mut urls = vec![index.unwrap_or_else(|| PYPI.to_string())];
    urls.extend(extra);
    if no_index {
        urls.clear();
    }
    Indexes {
        urls,
        no_index,
        cert,
    }
}

/// The requirements file's index lines, applied over `config` as pip's
/// `handle_option_line` does (`--no-index` empties the list, `--index-url`
/// replaces it, `--extra-index-url` extends it); and the file's text with
/// those lines blanked (line numbers kept) for the requirements parser.
pub fn from_requirements(config: Indexes, text: &str) -> (Indexes, String) {
    let mut out = config;
    let mut rest = Vec::new();
    for line in text.lines() {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let (name, value) = match tokens.as_slice() {
            [opt] => match opt.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (*opt, None),
            },
            [opt, v] => (*opt, Some(v.to_string())),
            _ => ("", None),
        };
        match (name, value) {
            ("--no-index", None) => {
                out.no_index = true;
                out.urls.clear();
            }
            ("-i" | "--index-url", Some(url)) => {
                if !out.no_index {
                    out.urls = vec![url];
                }
            }
            ("--extra-index-url", Some(url)) => {
                if !out.no_index {
                    out.urls.push(url);
                }
            }
            _ => {
                rest.push(line);
                continue;
            }
        }
        rest.push("");
    }
    (out, rest.join("\n") + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_come_in_pips_order_and_dev_null_turns_them_off() {
        let s = Settings::from_vars([("HOME", "/home/u"), ("VIRTUAL_ENV", "/venv")]);
        assert_eq!(
            config_files(&s),
            [
                "/etc/xdg/pip/pip.conf",
                "/etc/pip.conf",
                "/home/u/.pip/pip.conf",
                "/home/u/.config/pip/pip.conf",
                "/venv/pip.conf",
            ]
            .map(PathBuf::from)
        );
        let s = Settings::from_vars([("HOME", "/h"), ("PIP_CONFIG_FILE", "/dev/null")]);
        assert!(config_files(&s).is_empty());
        // A PIP_CONFIG_FILE that exists replaces the user's files and comes last.
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pip.conf");
        std::fs::write(&f, "").unwrap();
        let s = Settings::from_vars([
            ("HOME", "/h"),
            ("XDG_CONFIG_DIRS", "/a:/b"),
            ("PIP_CONFIG_FILE", f.to_str().unwrap()),
        ]);
        let files = config_files(&s);
        assert_eq!(files[0], Path::new("/a/pip/pip.conf"));
        assert!(!files.iter().any(|p| p.starts_with("/h")));
        assert_eq!(files.last().unwrap(), &f);
    }

    #[test]
    fn config_env_and_requirements_override_in_pips_order() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("pip.conf");
        std::fs::write(
            &conf,
            "# c\n[global]\ncert = /etc/ssl/ca.pem\nindex_url = https://a.example/simple\nextra-index-url =\n    https://b.example/simple\n    https://c.example/simple\n[install]\nindex-url: https://i.example/simple\n[download]\nindex-url = https://d.example/simple\n",
        )
        .unwrap();
        let conf = conf.to_str().unwrap();
        let base = [("HOME", "/nowhere"), ("PIP_CONFIG_FILE", conf)];
        let got = from_config(&Settings::from_vars(base));
        assert_eq!(got.cert.as_deref(), Some("/etc/ssl/ca.pem"));
        assert_eq!(
            got.urls,
            [
                "https://i.example/simple",
                "https://b.example/simple",
                "https://c.example/simple"
            ]
        );
        let mut vars = base.to_vec();
        vars.push(("PIP_INDEX_URL", "http://e.example/simple"));
        vars.push((
            "PIP_EXTRA_INDEX_URL",
            "http://x.example/s http://y.example/s",
        ));
        vars.push(("PIP_CERT", "/other.pem"));
        let got = from_config(&Settings::from_vars(vars.clone()));
        assert_eq!(got.cert.as_deref(), Some("/other.pem"));
        assert_eq!(
            got.urls,
            [
                "http://e.example/simple",
                "http://x.example/s",
                "http://y.example/s"
            ]
        );
        let (req, rest) = from_requirements(
            got.clone(),
            "six==1.16.0\n--index-url=http://r.example/simple\n--extra-index-url http://s.example/simple\ntabulate==0.9.0\n",
        );
        assert_eq!(
            req.urls,
            ["http://r.example/simple", "http://s.example/simple"]
        );
        assert_eq!(rest, "six==1.16.0\n\n\ntabulate==0.9.0\n");
        let (none, _) = from_requirements(got, "--no-index\n-i http://r/simple\n");
        assert!(none.no_index && none.urls.is_empty());
        vars.push(("PIP_NO_INDEX", "yes"));
        assert!(from_config(&Settings::from_vars(vars)).no_index);
        // Nothing configured: pip's default, PyPI.
        let got = from_config(&Settings::from_vars([("PIP_CONFIG_FILE", "/dev/null")]));
        assert_eq!(got.urls, [PYPI]);
    }
}
