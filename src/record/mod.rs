//! An image's record: what a prebuilt environment holds and what went into it, so
//! environments can be seen (`prebuilder inspect`) and compared (`prebuilder diff`).
//!
//! After a layer's setup succeeds, the setup script leaves Python's version and
//! `pip freeze --all` at [`RECORD_FILE`]; the engine turns that into a [`Record`]
//! (adding every layer's input digests, carried over from the parent layer's
//! record), writes it back to the same file as JSON and puts it in the
//! [`LABEL_RECORD`] label of the committed image. Pure: parsing, diffing, rendering.
//!
//! Since [`FORMAT`] 2 the record also describes each installed distribution
//! (`distributions`): its licence metadata, the layer that installed it (or
//! the base), and the staged artifact it came from (see [`sources`]), which
//! is what an SBOM (`crate::attest`) is made of.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::report::short_id;

mod load;
pub mod sources;
pub use load::{load, load_complete};
pub use sources::{DigestOf, Distribution, Listed, Source, IN_BASE};

/// Inside the image: the record (JSON). During the setup it holds pip's freeze.
pub const RECORD_FILE: &str = "/opt/apache/beam/prebuilder-record.json";
pub const RECORD_NAME: &str = "prebuilder-record.json";
/// The image label holding the record (compact JSON).
pub const LABEL_RECORD: &str = "prebuilder.record";
/// Labels travel with every image inspect; past this size the label leaves the
/// distributions out, then the package list (`packages: null`), then the
/// inputs, and readers go to the file.
pub const LABEL_LIMIT: usize = 32 * 1024;
/// 1: packages and inputs; 2: and `distributions`. Older records still parse.
pub const FORMAT: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub format: u32,
    /// The layer whose setup wrote it (the last one: the image's own).
    pub layer: String,
    pub key: String,
    /// The base image's id.
    pub base: String,
    /// The image `--boot-from` took the boot from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_from: Option<String>,
    /// The version of the `python` the boot installs with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<String>,
    /// Per layer, the staged name and content digest of each input.
    #[serde(default)]
    pub inputs: BTreeMap<String, BTreeMap<String, String>>,
    /// Normalized distribution name → version (or `@ URL` for direct references), from
    /// `pip freeze --all`. `None` in a label too large to carry it.
    pub packages: Option<BTreeMap<String, String>>,
    /// Normalized distribution name → what the setup learnt of it (format 2).
    /// `None` in a format 1 record, and in a label too large to carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distributions: Option<BTreeMap<String, Distribution>>,
}

impl Record {
    /// The label value: compact JSON, without the distributions, then the
    /// packages, when too large.
    pub fn label(&self) -> String {
        let full = serde_json::to_string(self).unwrap_or_default();
        if full.len() <= LABEL_LIMIT {
            return full;
        }
        let mut small = self.clone();
        small.distributions = None;
        let without_distributions = serde_json::to_string(&small).unwrap_or_default();
        if without_distributions.len() <= LABEL_LIMIT {
            return without_distributions;
        }
        small.packages = None;
        let without_packages = serde_json::to_string(&small).unwrap_or_default();
        if without_packages.len() <= LABEL_LIMIT {
            return without_packages;
        }
        // Issue 12: 50,000 inputs made two 4 MB labels. The inputs go too;
        // readers see `packages: null` and read the file, which has both.
        small.inputs = BTreeMap::new();
        serde_json::to_string(&small).unwrap_or_default()
    }

    /// The file's content.
    pub fn to_file(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    pub fn parse(text: &str) -> Result<Record, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    /// Whether nothing was left out of it (a label may leave parts out; the
    /// file never does): the packages, and from format 2 the distributions.
    pub fn is_complete(&self) -> bool {
        self.packages.is_some() && (self.format < 2 || self.distributions.is_some())
    }

    /// Every input, whatever its layer (staged names are unique within a build).
    pub fn all_inputs(&self) -> BTreeMap<String, String> {
        self.inputs
            .values()
            .flat_map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())))
            .collect()
    }

    pub fn to_text(&self, image: &str, id: &str) -> String {
        let mut out = format!("image        {image} ({})\n", short_id(id));
        out.push_str(&format!(
            "layer        {} (key {})\n",
            self.layer,
            &self.key[..self.key.len().min(32)]
        ));
        out.push_str(&format!("base         {}\n", self.base));
        if let Some(b) = &self.boot_from {
            out.push_str(&format!("boot from    {b}\n"));
        }
        if let Some(p) = &self.python {
            out.push_str(&format!("python       {p}\n"));
        }
        out.push_str("inputs\n");
        for (layer, inputs) in &self.inputs {
            for (name, digest) in inputs {
                out.push_str(&format!("  {layer:<13} {name}  {}\n", short_digest(digest)));
            }
        }
        match &self.packages {
            Some(p) => {
                out.push_str(&format!("packages ({})\n", p.len()));
                for (name, version) in p {
                    out.push_str(&format!("  {}\n", requirement(name, version)));
                }
            }
            None => out.push_str("packages     (not recorded)\n"),
        }
        out
    }
}

fn short_digest(d: &str) -> &str {
    &d[..d.len().min(16)]
}

/// `name==version`, or `name @ url` for a direct reference.
fn requirement(name: &str, version: &str) -> String {
    if version.starts_with('@') {
        format!("{name} {version}")
    } else {
        format!("{name}=={version}")
    }
}

/// PEP 503 normalization: lowercase, runs of `-_.` become `-`.
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.trim().chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// What the setup script left: `# python X.Y.Z`, then `pip freeze --all`
/// (then the distributions, see [`parse_listing`]).
/// Returns Python's version and the packages.
pub fn parse_freeze(text: &str) -> (Option<String>, BTreeMap<String, String>) {
    let mut python = None;
    let mut packages = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("# python ") {
            python = Some(v.trim().to_string());
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((name, version)) = line.split_once("==") {
            packages.insert(normalize(name), version.trim().to_string());
        } else if let Some((name, url)) = line.split_once(" @ ") {
            packages.insert(
                normalize(name),
                format!("@ {}", crate::redact::redact(url.trim())),
            );
        } else if let Some(rest) = line.strip_prefix("-e ") {
            // `-e git+https://…#egg=name` or `-e /path`: key by egg name when there is one.
            let name = rest
                .rsplit_once("#egg=")
                .map_or(rest.to_string(), |(_, n)| normalize(n));
            packages.insert(name, format!("@ {}", crate::redact::redact(rest.trim())));
        }
    }
    (python, packages)
}

/// The distributions the setup script listed: before the setup (`# before
/// [name, version]`, normalized name → version) and after it (`# dist {…}`).
/// Lines that do not parse are skipped: a record never fails a build.
pub fn parse_listing(text: &str) -> (BTreeMap<String, String>, Vec<Listed>) {
    let mut before = BTreeMap::new();
    let mut after = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(json) = line.strip_prefix("# before ") {
            if let Ok((name, Some(version))) =
                serde_json::from_str::<(String, Option<String>)>(json)
            {
                before.insert(normalize(&name), version);
            }
        } else if let Some(json) = line.strip_prefix("# dist ") {
            if let Ok(listed) = serde_json::from_str::<Listed>(json) {
                after.push(listed);
            }
        }
    }
    (before, after)
}

/// One value before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change<T> {
    pub from: T,
    pub to: T,
}

/// Differences between two name → value maps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    pub added: BTreeMap<String, String>,
    pub removed: BTreeMap<String, String>,
    pub changed: BTreeMap<String, Change<String>>,
}

impl Changes {
    pub fn between(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Changes {
        let mut c = Changes::default();
        for (k, va) in a {
            match b.get(k) {
                None => {
                    c.removed.insert(k.clone(), va.clone());
                }
                Some(vb) if vb != va => {
                    c.changed.insert(
                        k.clone(),
                        Change {
                            from: va.clone(),
                            to: vb.clone(),
                        },
                    );
                }
                Some(_) => {}
            }
        }
        for (k, vb) in b {
            if !a.contains_key(k) {
                c.added.insert(k.clone(), vb.clone());
            }
        }
        c
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// One side of a diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Side {
    pub image: String,
    pub id: String,
}

/// `prebuilder diff A B`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordDiff {
    pub a: Side,
    pub b: Side,
    /// `null` when both images share the base.
    pub base: Option<Change<String>>,
    pub boot_from: Option<Change<Option<String>>>,
    pub python: Option<Change<Option<String>>>,
    pub packages: Changes,
    pub inputs: Changes,
    /// Nothing above differs.
    pub same: bool,
}

fn change<T: PartialEq + Clone>(a: &T, b: &T) -> Option<Change<T>> {
    (a != b).then(|| Change {
        from: a.clone(),
        to: b.clone(),
    })
}

pub fn diff(a: Side, ra: &Record, b: Side, rb: &Record) -> RecordDiff {
    let empty = BTreeMap::new();
    let packages = Changes::between(
        ra.packages.as_ref().unwrap_or(&empty),
        rb.packages.as_ref().unwrap_or(&empty),
    );
    let inputs = Changes::between(&ra.all_inputs(), &rb.all_inputs());
    let base = change(&ra.base, &rb.base);
    let boot_from = change(&ra.boot_from, &rb.boot_from);
    let python = change(&ra.python, &rb.python);
    let same = base.is_none()
        && boot_from.is_none()
        && python.is_none()
        && packages.is_empty()
        && inputs.is_empty();
    RecordDiff {
        a,
        b,
        base,
        boot_from,
        python,
        packages,
        inputs,
        same,
    }
}

impl RecordDiff {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    pub fn to_text(&self) -> String {
        let mut out = format!(
            "--- {} ({})\n+++ {} ({})\n",
            self.a.image,
            short_id(&self.a.id),
            self.b.image,
            short_id(&self.b.id)
        );
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".into());
        if let Some(c) = &self.base {
            out.push_str(&format!("base         {} -> {}\n", c.from, c.to));
        }
        if let Some(c) = &self.boot_from {
            out.push_str(&format!(
                "boot from    {} -> {}\n",
                opt(&c.from),
                opt(&c.to)
            ));
        }
        if let Some(c) = &self.python {
            out.push_str(&format!(
                "python       {} -> {}\n",
                opt(&c.from),
                opt(&c.to)
            ));
        }
        let p = &self.packages;
        if !p.is_empty() {
            out.push_str(&format!(
                "packages     {} added, {} removed, {} changed\n",
                p.added.len(),
                p.removed.len(),
                p.changed.len()
            ));
            for (n, v) in &p.added {
                out.push_str(&format!("  + {}\n", requirement(n, v)));
            }
            for (n, v) in &p.removed {
                out.push_str(&format!("  - {}\n", requirement(n, v)));
            }
            for (n, c) in &p.changed {
                out.push_str(&format!("  ~ {n} {} -> {}\n", c.from, c.to));
            }
        }
        let i = &self.inputs;
        if !i.is_empty() {
            out.push_str(&format!(
                "inputs       {} added, {} removed, {} changed\n",
                i.added.len(),
                i.removed.len(),
                i.changed.len()
            ));
            for (n, d) in &i.added {
                out.push_str(&format!("  + {n}  {}\n", short_digest(d)));
            }
            for (n, d) in &i.removed {
                out.push_str(&format!("  - {n}  {}\n", short_digest(d)));
            }
            for (n, c) in &i.changed {
                out.push_str(&format!(
                    "  ~ {n}  {} -> {}\n",
                    short_digest(&c.from),
                    short_digest(&c.to)
                ));
            }
        }
        if self.same {
            out.push_str("no differences\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(packages: &[(&str, &str)], inputs: &[(&str, &str)]) -> Record {
        Record {
            format: FORMAT,
            layer: "application".into(),
            key: "k".repeat(64),
            base: "sha256:base".into(),
            boot_from: None,
            python: Some("3.11.2".into()),
            inputs: BTreeMap::from([(
                "dependencies".to_string(),
                inputs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )]),
            packages: Some(
                packages
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            distributions: None,
        }
    }

    fn side(n: &str) -> Side {
        Side {
            image: n.into(),
            id: format!("sha256:{n}"),
        }
    }

    #[test]
    fn names_are_normalized() {
        assert_eq!(normalize("Python_Slugify"), "python-slugify");
        assert_eq!(normalize("zope.interface"), "zope-interface");
        assert_eq!(normalize("a__-b"), "a-b");
        assert_eq!(normalize("apache-beam"), "apache-beam");
    }

    #[test]
    fn credentials_in_urls_never_reach_the_record() {
        let (_, p) = parse_freeze(
            "private @ https://bot:ghp_s3cret@git.example.com/x.tar.gz\n\
             -e git+https://oauth2:tok3n@example.com/r.git@abc#egg=r\n\
             plain @ file:///opt/x.tar.gz\n",
        );
        assert_eq!(p["private"], "@ https://***@git.example.com/x.tar.gz");
        assert_eq!(p["r"], "@ git+https://***@example.com/r.git@abc#egg=r");
        assert_eq!(p["plain"], "@ file:///opt/x.tar.gz");
        let all = format!("{p:?}");
        assert!(!all.contains("s3cret") && !all.contains("tok3n"));
    }

    #[test]
    fn freeze_lines() {
        let text = "# python 3.11.2\n\
                    apache-beam==2.77.0\n\
                    Python_Slugify==8.0.4\n\
                    prebuilder-demo @ file:///opt/apache/beam/artifacts/workflow.tar.gz\n\
                    -e git+https://example.com/x.git@abc#egg=My_Pkg\n\
                    \n# a comment\n";
        let (python, p) = parse_freeze(text);
        assert_eq!(python.as_deref(), Some("3.11.2"));
        assert_eq!(p["apache-beam"], "2.77.0");
        assert_eq!(p["python-slugify"], "8.0.4");
        assert_eq!(
            p["prebuilder-demo"],
            "@ file:///opt/apache/beam/artifacts/workflow.tar.gz"
        );
        assert!(p["my-pkg"].starts_with("@ git+https"));
        assert_eq!(p.len(), 4);
    }

    #[test]
    fn diff_shows_added_removed_changed() {
        let a = rec(
            &[("tabulate", "0.9.0"), ("six", "1.16.0"), ("old", "1")],
            &[("requirements.txt", "r1"), ("six.whl", "w")],
        );
        let b = rec(
            &[("tabulate", "0.9.0"), ("six", "1.17.0"), ("new", "2")],
            &[("requirements.txt", "r2"), ("six.whl", "w")],
        );
        let d = diff(side("a"), &a, side("b"), &b);
        assert!(!d.same);
        assert!(d.base.is_none() && d.python.is_none() && d.boot_from.is_none());
        assert_eq!(
            d.packages.added,
            BTreeMap::from([("new".into(), "2".into())])
        );
        assert_eq!(
            d.packages.removed,
            BTreeMap::from([("old".into(), "1".into())])
        );
        assert_eq!(
            d.packages.changed["six"],
            Change {
                from: "1.16.0".into(),
                to: "1.17.0".into()
            }
        );
        assert_eq!(d.inputs.changed.len(), 1);
        assert!(d.inputs.changed.contains_key("requirements.txt"));
        let t = d.to_text();
        assert!(
            t.contains("packages     1 added, 1 removed, 1 changed"),
            "{t}"
        );
        assert!(t.contains("  + new==2"), "{t}");
        assert!(t.contains("  - old==1"), "{t}");
        assert!(t.contains("  ~ six 1.16.0 -> 1.17.0"), "{t}");
        assert!(t.contains("  ~ requirements.txt  r1 -> r2"), "{t}");
        let v: serde_json::Value = serde_json::from_str(&d.to_json()).unwrap();
        assert_eq!(v["packages"]["changed"]["six"]["to"], "1.17.0");
        assert!(v["base"].is_null());
    }

    #[test]
    fn identical_records_and_base_changes() {
        let a = rec(&[("x", "1")], &[]);
        let d = diff(side("a"), &a, side("b"), &a.clone());
        assert!(d.same);
        assert!(d.to_text().contains("no differences"));
        let mut b = a.clone();
        b.base = "sha256:other".into();
        b.boot_from = Some("sha256:boot".into());
        let d = diff(side("a"), &a, side("b"), &b);
        assert!(!d.same);
        assert_eq!(d.base.as_ref().unwrap().to, "sha256:other");
        assert!(d.to_text().contains("boot from    none -> sha256:boot"));
    }

    #[test]
    fn label_drops_packages_past_the_limit_and_round_trips() {
        let small = rec(&[("x", "1")], &[("requirements.txt", "r")]);
        assert_eq!(Record::parse(&small.label()).unwrap(), small);
        assert_eq!(Record::parse(&small.to_file()).unwrap(), small);
        let many: Vec<(String, String)> = (0..2000)
            .map(|i| (format!("package-number-{i}"), "1.0.0".to_string()))
            .collect();
        let mut big = small.clone();
        big.packages = Some(many.into_iter().collect());
        let label = big.label();
        assert!(label.len() <= LABEL_LIMIT);
        let back = Record::parse(&label).unwrap();
        assert!(back.packages.is_none());
        assert_eq!(back.inputs, big.inputs);
    }

    #[test]
    fn text_lists_inputs_and_packages() {
        let mut r = rec(
            &[("apache-beam", "2.77.0"), ("demo", "@ file:///x")],
            &[("requirements.txt", "0123456789abcdef0123")],
        );
        r.boot_from = Some("sha256:boot".into());
        let t = r.to_text("repo:tag", "sha256:0123456789abcdef");
        assert!(t.contains("image        repo:tag (0123456789ab)"), "{t}");
        assert!(t.contains("boot from    sha256:boot"), "{t}");
        assert!(
            t.contains("dependencies  requirements.txt  0123456789abcdef\n"),
            "{t}"
        );
        assert!(t.contains("  apache-beam==2.77.0"), "{t}");
        assert!(t.contains("  demo @ file:///x"), "{t}");
    }

    fn dist(name: &str, license: &str) -> Distribution {
        Distribution {
            name: name.into(),
            version: "1.0".into(),
            license_expression: None,
            license: Some(license.into()),
            classifiers: Vec::new(),
            layer: "dependencies".into(),
            artifact: None,
        }
    }

    #[test]
    fn the_label_drops_the_distributions_before_the_packages() {
        let mut r = rec(&[("numpy", "2.2.6")], &[("requirements.txt", "r")]);
        // numpy's License field is its whole licence text (48 kB).
        r.distributions = Some(BTreeMap::from([(
            "numpy".to_string(),
            dist("numpy", &"BSD text ".repeat(5000)),
        )]));
        assert!(r.is_complete());
        let back = Record::parse(&r.label()).unwrap();
        assert!(back.distributions.is_none(), "too large for a label");
        assert_eq!(back.packages, r.packages, "the packages stay");
        assert!(!back.is_complete(), "readers go to the file");
        assert_eq!(Record::parse(&r.to_file()).unwrap(), r);
        // A small one keeps everything.
        r.distributions = Some(BTreeMap::from([("six".to_string(), dist("six", "MIT"))]));
        assert_eq!(Record::parse(&r.label()).unwrap(), r);
    }

    #[test]
    fn format_1_records_still_parse_and_are_complete() {
        let v1 = r#"{"format":1,"layer":"application","key":"k","base":"sha256:b",
            "python":"3.11.2","inputs":{"dependencies":{"requirements.txt":"r"}},
            "packages":{"six":"1.16.0"}}"#;
        let r = Record::parse(v1).unwrap();
        assert_eq!(r.format, 1);
        assert!(r.distributions.is_none());
        assert!(r.is_complete(), "a format 1 record never had distributions");
        let mut r2 = r.clone();
        r2.format = FORMAT;
        assert!(
            !r2.is_complete(),
            "a format 2 record without them lost them"
        );
    }

    #[test]
    fn the_listing_before_and_after_the_setup() {
        let text = "# python 3.11.2\nsix==1.17.0\n\
            # before [\"six\", \"1.16.0\"]\n\
            # before [\"Broken\", null]\n\
            # before not json\n\
            # dist {\"name\": \"six\", \"version\": \"1.17.0\", \"license\": \"MIT\", \"classifiers\": [\"License :: OSI Approved :: MIT License\"], \"direct_url\": null, \"tags\": [\"py3-none-any\"], \"license_expression\": null}\n\
            # dist {broken\n";
        let (before, after) = parse_listing(text);
        assert_eq!(
            before,
            BTreeMap::from([("six".to_string(), "1.16.0".to_string())])
        );
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].license.as_deref(), Some("MIT"));
        assert_eq!(after[0].tags, ["py3-none-any"]);
        // The freeze parser ignores the listing.
        let (_, packages) = parse_freeze(text);
        assert_eq!(packages.len(), 1);
    }

    /// Issue 12: the label stays bounded whatever the number of inputs.
    #[test]
    fn a_record_with_50000_inputs_has_a_bounded_label() {
        let inputs: BTreeMap<String, String> = (0..50_000)
            .map(|i| (format!("file{i:05}.txt"), "0".repeat(64)))
            .collect();
        let r = Record {
            format: FORMAT,
            layer: "application".into(),
            key: "k".repeat(64),
            base: "sha256:base".into(),
            boot_from: None,
            python: Some("3.11.2".into()),
            inputs: BTreeMap::from([("application".to_string(), inputs)]),
            packages: Some(BTreeMap::from([("six".to_string(), "1.16.0".to_string())])),
            distributions: None,
        };
        let label = r.label();
        assert!(label.len() <= LABEL_LIMIT, "{}", label.len());
        let back = Record::parse(&label).unwrap();
        assert!(back.packages.is_none(), "readers go to the file");
        assert_eq!(
            Record::parse(&r.to_file()).unwrap(),
            r,
            "the file has it all"
        );
    }
}
