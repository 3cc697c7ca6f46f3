//! What prebuilder takes from its environment, read once at the edge (the
//! binary, `commands/`) and passed in: no library code reads an environment
//! variable itself, so every rule that depends on one is tested with a value
//! made in the test, and one variable has one meaning everywhere.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

/// The reproducible-builds convention: the date of everything built.
pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";
/// Commit the setup container instead of loading its snapshot (a fallback
/// kept for engines that cannot load archives).
pub const PREBUILDER_COMMIT: &str = "PREBUILDER_COMMIT";

/// The installed size from which a distribution of the dependency layer
/// gets a layer of its own (`crate::image::split::Rule::parse`: bytes with
/// an optional k/m/g suffix, or `off`); default 64 MiB.
pub const PREBUILDER_SPLIT_THRESHOLD: &str = "PREBUILDER_SPLIT_THRESHOLD";

/// `off`: the split's heavy layers are made after the setup, not while
/// its pip runs (`crate::build::early`); any other value, or unset: while.
pub const PREBUILDER_EARLY_LAYERS: &str = "PREBUILDER_EARLY_LAYERS";

/// A snapshot of the environment variables prebuilder reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    vars: BTreeMap<String, String>,
    /// `PATH` as the OS gave it (it may not be UTF-8).
    path: Option<OsString>,
}

impl Settings {
    /// This process's environment, read now (variables that are not UTF-8
    /// are skipped, except `PATH`, which is kept as it is).
    pub fn from_process() -> Settings {
        Settings {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
            path: std::env::var_os("PATH"),
        }
    }

    /// Settings made of `vars` (tests, and callers that build an environment).
    pub fn from_vars<'a>(vars: impl IntoIterator<Item = (&'a str, &'a str)>) -> Settings {
        let vars: BTreeMap<String, String> = vars
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let path = vars.get("PATH").map(OsString::from);
        Settings { vars, path }
    }

    /// A variable's value; an empty value counts as unset, as in the docker CLI.
    pub fn var(&self, key: &str) -> Option<&str> {
        self.vars
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// `SOURCE_DATE_EPOCH` as set (parsed, with a warning when it is not a
    /// number, where the epoch is chosen: `image::reproducible`).
    pub fn source_date_epoch(&self) -> Option<&str> {
        self.var(SOURCE_DATE_EPOCH)
    }

    /// `SOURCE_DATE_EPOCH` when it is a number of seconds.
    pub fn source_date_epoch_seconds(&self) -> Option<u64> {
        self.source_date_epoch().and_then(|s| s.trim().parse().ok())
    }

    /// The docker CLI's configuration directory: `$DOCKER_CONFIG`, else
    /// `$HOME/.docker` (the one rule for credentials and contexts alike).
    pub fn docker_config_dir(&self) -> PathBuf {
        match self.var("DOCKER_CONFIG") {
            Some(dir) => PathBuf::from(dir),
            None => PathBuf::from(self.var("HOME").unwrap_or_default()).join(".docker"),
        }
    }

    /// Whether `PREBUILDER_COMMIT` asks for commits instead of loads.
    pub fn commit(&self) -> bool {
        self.vars.contains_key(PREBUILDER_COMMIT)
    }

    /// `PREBUILDER_SPLIT_THRESHOLD` as set (parsed where the build's
    /// options are made: `crate::image::split::Rule::parse`).
    pub fn split_threshold(&self) -> Option<&str> {
        self.var(PREBUILDER_SPLIT_THRESHOLD)
    }

    /// Whether the split's heavy layers are made while the setup runs
    /// (unless `PREBUILDER_EARLY_LAYERS=off`).
    pub fn early_layers(&self) -> bool {
        self.var(PREBUILDER_EARLY_LAYERS) != Some("off")
    }

    /// `PATH`, to find the launching Python.
    pub fn path(&self) -> Option<&std::ffi::OsStr> {
        self.path.as_deref().filter(|p| !p.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_values_count_as_unset() {
        let s = Settings::from_vars([("DOCKER_CONFIG", ""), ("HOME", "/home/u")]);
        assert_eq!(s.var("DOCKER_CONFIG"), None);
        assert_eq!(s.docker_config_dir(), PathBuf::from("/home/u/.docker"));
    }

    #[test]
    fn early_layers_are_on_unless_off() {
        assert!(Settings::default().early_layers());
        assert!(Settings::from_vars([(PREBUILDER_EARLY_LAYERS, "")]).early_layers());
        assert!(Settings::from_vars([(PREBUILDER_EARLY_LAYERS, "on")]).early_layers());
        assert!(!Settings::from_vars([(PREBUILDER_EARLY_LAYERS, "off")]).early_layers());
    }

    #[test]
    fn docker_config_wins_over_home() {
        let s = Settings::from_vars([("DOCKER_CONFIG", "/etc/dc"), ("HOME", "/home/u")]);
        assert_eq!(s.docker_config_dir(), PathBuf::from("/etc/dc"));
    }

    #[test]
    fn source_date_epoch_is_kept_as_set_and_parsed_when_a_number() {
        let s = Settings::from_vars([(SOURCE_DATE_EPOCH, " 1700000000 ")]);
        assert_eq!(s.source_date_epoch(), Some(" 1700000000 "));
        assert_eq!(s.source_date_epoch_seconds(), Some(1_700_000_000));
        let bad = Settings::from_vars([(SOURCE_DATE_EPOCH, "yesterday")]);
        assert_eq!(bad.source_date_epoch_seconds(), None);
        assert_eq!(Settings::default().source_date_epoch(), None);
    }

    #[test]
    fn prebuilder_commit_counts_when_set_even_empty() {
        assert!(Settings::from_vars([(PREBUILDER_COMMIT, "")]).commit());
        assert!(!Settings::default().commit());
    }

    #[test]
    fn path_is_read() {
        let s = Settings::from_vars([("PATH", "/usr/bin:/bin")]);
        assert_eq!(s.path(), Some(std::ffi::OsStr::new("/usr/bin:/bin")));
        assert_eq!(Settings::default().path(), None);
    }
}
