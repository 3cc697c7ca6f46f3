//! Wheel compatibility tags: the list of tags a base's pip accepts, in
//! pip's order of preference (the order of `pip debug --verbose`), and the
//! tags a wheel's file name carries.
//!
//! The order is packaging's `cpython_tags` then `compatible_tags`, with the
//! platforms of `_linux_platforms` (manylinux from the base's glibc down,
//! each legacy alias right after the version it stands for, then the plain
//! `linux_<arch>`). Written here rather than taken from a crate: the one
//! crate that has it (uv's `uv-platform-tags`) is an internal component of uv
//! with no stable API, and its rules are uv's, not pip's; this list is
//! checked against the real `pip debug` of the fixture base in the
//! integration tests.

use std::collections::HashMap;

/// The platform tags of a glibc Linux base, best first.
pub fn linux_platforms(arch: &str, glibc: (u32, u32)) -> Vec<String> {
    let mut out = Vec::new();
    // Oldest manylinux glibc: 2.5 on x86 (manylinux1), 2.17 elsewhere.
    let oldest = if matches!(arch, "x86_64" | "i686") {
        5
    } else {
        17
    };
    if glibc.0 == 2 {
        let mut minor = glibc.1 as i64;
        while minor >= oldest {
            out.push(format!("manylinux_2_{minor}_{arch}"));
            let legacy = match minor {
                17 => Some("manylinux2014"),
                12 => Some("manylinux2010"),
                5 => Some("manylinux1"),
                _ => None,
            };
            if let Some(l) = legacy {
                out.push(format!("{l}_{arch}"));
            }
            minor -= 1;
        }
    }
    out.push(format!("linux_{arch}"));
    out
}

/// Every tag a CPython `major.minor` with `abi` (`cp311`, `cp313t`) on
/// `platforms` accepts, best first.
pub fn cpython_tags(major: u32, minor: u32, abi: &str, platforms: &[String]) -> Vec<String> {
    let interp = format!("cp{major}{minor}");
    let mut out = Vec::new();
    for p in platforms {
        out.push(format!("{interp}-{abi}-{p}"));
    }
    // abi3 is not for free-threaded builds (their ABI tag ends in `t`).
    let abi3 = major == 3 && minor >= 2 && !abi.ends_with('t');
    if abi3 {
        for p in platforms {
            out.push(format!("{interp}-abi3-{p}"));
        }
    }
    for p in platforms {
        out.push(format!("{interp}-none-{p}"));
    }
    if abi3 {
        for m in (2..minor).rev() {
            for p in platforms {
                out.push(format!("cp{major}{m}-abi3-{p}"));
            }
        }
    }
    // compatible_tags
    let mut py_range = vec![format!("py{major}{minor}"), format!("py{major}")];
    for m in (0..minor).rev() {
        py_range.push(format!("py{major}{m}"));
    }
    for v in &py_range {
        for p in platforms {
            out.push(format!("{v}-none-{p}"));
        }
    }
    out.push(format!("{interp}-none-any"));
    for v in &py_range {
        out.push(format!("{v}-none-any"));
    }
    out
}

/// A wheel's file name: `{name}-{version}(-{build})?-{python}-{abi}-{platform}.whl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelName {
    pub name: String,
    pub version: String,
    pub build: Option<String>,
    /// Every `python-abi-platform` combination the compressed tag sets name.
    pub tags: Vec<String>,
}

impl WheelName {
    pub fn parse(file: &str) -> Option<WheelName> {
        let stem = file.strip_suffix(".whl")?;
        let parts: Vec<&str> = stem.split('-').collect();
        let (name, version, build, py, abi, plat) = match parts.as_slice() {
            [n, v, py, abi, plat] => (*n, *v, None, *py, *abi, *plat),
            [n, v, b, py, abi, plat] => (*n, *v, Some(b.to_string()), *py, *abi, *plat),
            _ => return None,
        };
        if name.is_empty() || version.is_empty() {
            return None;
        }
        let mut tags = Vec::new();
        for x in py.split('.') {
            for y in abi.split('.') {
                for z in plat.split('.') {
                    tags.push(format!("{x}-{y}-{z}"));
                }
            }
        }
        Some(WheelName {
            name: name.to_string(),
            version: version.to_string(),
            build,
            tags,
        })
    }
}

/// The supported tags with their rank (0 = best), for lookups.
#[derive(Debug, Clone)]
pub struct Supported {
    rank: HashMap<String, usize>,
    best: Option<String>,
}

impl Supported {
    pub fn new(tags: &[String]) -> Supported {
        let mut rank = HashMap::new();
        for (i, t) in tags.iter().enumerate() {
            rank.entry(t.clone()).or_insert(i);
        }
        Supported {
            rank,
            best: tags.first().cloned(),
        }
    }

    /// The most preferred tag.
    pub fn best(&self) -> Option<&str> {
        self.best.as_deref()
    }

    /// The best rank among a wheel's tags; `None` when none is supported.
    pub fn rank(&self, wheel: &WheelName) -> Option<usize> {
        wheel
            .tags
            .iter()
            .filter_map(|t| self.rank.get(t))
            .min()
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_236_on_x86_64_lists_manylinux_down_to_1_with_aliases_in_place() {
        let p = linux_platforms("x86_64", (2, 36));
        assert_eq!(p[0], "manylinux_2_36_x86_64");
        let i17 = p.iter().position(|t| t == "manylinux_2_17_x86_64").unwrap();
        assert_eq!(p[i17 + 1], "manylinux2014_x86_64");
        let i12 = p.iter().position(|t| t == "manylinux_2_12_x86_64").unwrap();
        assert_eq!(p[i12 + 1], "manylinux2010_x86_64");
        assert_eq!(p[p.len() - 3], "manylinux_2_5_x86_64");
        assert_eq!(p[p.len() - 2], "manylinux1_x86_64");
        assert_eq!(p.last().unwrap(), "linux_x86_64");
        // 32 manylinux_2_N (36..=5) + 3 aliases + linux
        assert_eq!(p.len(), 32 + 3 + 1);
        let arm = linux_platforms("aarch64", (2, 36));
        assert_eq!(arm[arm.len() - 2], "manylinux2014_aarch64");
        assert!(!arm.iter().any(|t| t.starts_with("manylinux1")));
    }

    #[test]
    fn cpython_order_is_pips() {
        let plats = vec![
            "manylinux_2_17_x86_64".to_string(),
            "linux_x86_64".to_string(),
        ];
        let t = cpython_tags(3, 11, "cp311", &plats);
        let head: Vec<&str> = t.iter().take(6).map(String::as_str).collect();
        assert_eq!(
            head,
            [
                "cp311-cp311-manylinux_2_17_x86_64",
                "cp311-cp311-linux_x86_64",
                "cp311-abi3-manylinux_2_17_x86_64",
                "cp311-abi3-linux_x86_64",
                "cp311-none-manylinux_2_17_x86_64",
                "cp311-none-linux_x86_64",
            ]
        );
        assert_eq!(t[6], "cp310-abi3-manylinux_2_17_x86_64");
        let i = t
            .iter()
            .position(|x| x == "cp32-abi3-linux_x86_64")
            .unwrap();
        assert_eq!(t[i + 1], "py311-none-manylinux_2_17_x86_64");
        let any = t.iter().position(|x| x == "cp311-none-any").unwrap();
        assert_eq!(t[any - 1], "py30-none-linux_x86_64");
        assert_eq!(t[any + 1], "py311-none-any");
        assert_eq!(t[any + 2], "py3-none-any");
        assert_eq!(t.last().unwrap(), "py30-none-any");
    }

    #[test]
    fn wheel_names_expand_compressed_tags_and_rank_by_the_best() {
        let w = WheelName::parse("python_slugify-8.0.4-py2.py3-none-any.whl").unwrap();
        assert_eq!(w.name, "python_slugify");
        assert_eq!(w.tags, ["py2-none-any", "py3-none-any"]);
        let n = WheelName::parse(
            "numpy-2.2.6-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        )
        .unwrap();
        assert_eq!(n.tags.len(), 2);
        let b = WheelName::parse("x-1.0-1build-py3-none-any.whl").unwrap();
        assert_eq!(b.build.as_deref(), Some("1build"));
        assert!(WheelName::parse("x-1.0.tar.gz").is_none());
        let sup = Supported::new(&cpython_tags(
            3,
            11,
            "cp311",
            &linux_platforms("x86_64", (2, 36)),
        ));
        assert!(sup.rank(&n).unwrap() < sup.rank(&w).unwrap());
        let other = WheelName::parse("numpy-2.2.6-cp312-cp312-manylinux_2_17_x86_64.whl").unwrap();
        assert_eq!(sup.rank(&other), None);
        let newer_glibc = WheelName::parse("x-1-cp311-cp311-manylinux_2_38_x86_64.whl").unwrap();
        assert_eq!(sup.rank(&newer_glibc), None);
    }
}
