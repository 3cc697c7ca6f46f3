//! The build report: what the next launch needs (`sdk_container_image`) and how
//! the build went, as JSON (the contract in SPEC.md) or as text for people.

use serde::{Deserialize, Serialize};

/// Where a layer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheOutcome {
    /// Found on the engine: no container was created.
    Hit,
    /// Built now.
    Miss,
    /// Found in the registry.
    Registry,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerReport {
    pub name: String,
    pub cache: CacheOutcome,
    pub seconds: f64,
    /// The layer's image (`sha256:…`): the dependency layer keeps its id
    /// across code changes.
    #[serde(default)]
    pub image_id: String,
    /// The layers the dependency layer's image was split into
    /// (`crate::image::split`), bottom up; empty when it is one layer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<PartReport>,
    /// The engine committed the setup container (a base without the tools
    /// a snapshot needs, or `PREBUILDER_COMMIT=1`): the layer holds the
    /// engine's bytes, so its digest may differ between engines.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub committed: bool,
}

/// One layer of a split dependency layer: the distribution it holds (or
/// `N distributions` for the group, `the rest` for the top) and its diff id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartReport {
    pub name: String,
    pub diff_id: String,
}

/// A PyFlink build's baked paths: what to launch the job with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlinkReport {
    /// The workers' Python in the image (`-pyexec`), `None` when not given.
    pub python_executable: Option<String>,
    /// The image's PYTHONPATH entries from --py-files and python.pythonpath.
    pub pythonpath: Vec<String>,
    /// Archive name → the directory it is extracted in.
    pub archives: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseReport {
    #[serde(rename = "ref")]
    pub reference: String,
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The content-addressed `repo:tag`.
    pub image: String,
    /// `None` only on a registry hit: nothing was built or pulled.
    pub image_id: Option<String>,
    /// Registry manifest digest, `None` when not pushed.
    pub digest: Option<String>,
    /// What to pass as `--sdk_container_image`: `repo@digest` when pushed, else `image`.
    pub sdk_container_image: String,
    /// True when nothing was built.
    pub cached: bool,
    pub layers: Vec<LayerReport>,
    pub base: BaseReport,
    /// Extra tags applied (`--tag`), as full `repo:tag` references.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    pub seconds: f64,
    /// Which builder made the layers this build produced: `engine` (a setup
    /// container) or `direct` (no container).
    #[serde(default)]
    pub builder: String,
    /// PyFlink builds: the baked Python, PYTHONPATH and archive directories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flink: Option<FlinkReport>,
    /// A multi-platform build (`--platform` with two or more): each
    /// platform's image; `image`, `digest` and `sdk_container_image` then
    /// name the OCI image index over them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<PlatformReport>,
    /// `--platform` on an engine, when the staged SDK wheel was left out
    /// (Beam's boot would not install it there): the base's own apache-beam
    /// was used (`build::platform::sdk`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdk: Option<SdkReport>,
}

/// Where a platform's apache-beam came from when the staged SDK wheel was
/// left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SdkReport {
    /// `base`: the base's own apache-beam.
    pub source: String,
    /// Its version (the staged wheel's).
    pub version: String,
    /// The staged wheel left out.
    pub left_out: String,
}

/// One platform of a multi-platform result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlatformReport {
    /// `linux/arm64`.
    pub platform: String,
    /// The platform's own content-addressed `repo:tag`.
    pub image: String,
    /// `None` on a registry hit (nothing on the engine).
    pub image_id: Option<String>,
    /// The platform's image manifest digest (in the index).
    pub digest: Option<String>,
    pub layers: Vec<LayerReport>,
    /// As [`Report::sdk`], for this platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdk: Option<SdkReport>,
}

impl Report {
    pub fn to_json(&self) -> String {
        // A struct of strings, numbers and bools always serialises.
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let verdict = if self.cached {
            "cached, nothing built"
        } else {
            "built"
        };
        out.push_str(&format!(
            "{} ({verdict}, {:.1}s)\n",
            self.image, self.seconds
        ));
        if let Some(id) = &self.image_id {
            out.push_str(&format!("  image id  {id}\n"));
        }
        if let Some(d) = &self.digest {
            out.push_str(&format!("  digest    {d}\n"));
        }
        out.push_str(&format!(
            "  base      {} ({})\n",
            self.base.reference,
            short_id(&self.base.id)
        ));
        for l in &self.layers {
            let cache = match l.cache {
                CacheOutcome::Hit => "hit",
                CacheOutcome::Miss => "built",
                CacheOutcome::Registry => "registry",
            };
            out.push_str(&format!(
                "  layer     {:<13} {:<8} {:.1}s\n",
                l.name, cache, l.seconds
            ));
        }
        for t in &self.tags {
            out.push_str(&format!("  tag       {t}\n"));
        }
        match &self.flink {
            None => out.push_str(&format!(
                "launch with:\n  --sdk_container_image={}\n",
                self.sdk_container_image
            )),
            Some(f) => out.push_str(&flink_launch(&self.sdk_container_image, f)),
        }
        out
    }
}

/// How to launch a PyFlink job on the image: no python.requirements,
/// python.archives or python.files any more, the baked Python as -pyexec.
fn flink_launch(image: &str, f: &FlinkReport) -> String {
    let mut out = format!(
        "launch with (PyFlink; no -pyreq/-pyarch/-pyfs, no python.requirements/archives/files):\n  \
         image: {image}  (e.g. -Dkubernetes.container.image.ref={image})\n"
    );
    if let Some(exe) = &f.python_executable {
        out.push_str(&format!(
            "  -pyexec {exe}  (or -Dpython.executable={exe}; also -pyclientexec {exe})\n"
        ));
    }
    if !f.pythonpath.is_empty() {
        out.push_str(&format!(
            "  PYTHONPATH in the image: {}\n",
            f.pythonpath.join(":")
        ));
    }
    for (name, dir) in &f.archives {
        out.push_str(&format!("  archive {name}: {dir}\n"));
    }
    out
}

/// `sha256:0123456789ab…` → `0123456789ab` (what `docker images` shows).
pub fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(cached: bool, digest: Option<&str>) -> Report {
        let image = "beam_python_prebuilt_sdk:0123456789abcdef0123456789abcdef".to_string();
        Report {
            builder: "engine".into(),
            sdk_container_image: digest
                .map(|d| format!("localhost:5000/beam_python_prebuilt_sdk@{d}"))
                .unwrap_or_else(|| image.clone()),
            image,
            image_id: Some(
                "sha256:aaaabbbbccccddddeeeeffff0000111122223333444455556666777788889999".into(),
            ),
            digest: digest.map(str::to_string),
            cached,
            layers: vec![
                LayerReport {
                    name: "dependencies".into(),
                    cache: CacheOutcome::Hit,
                    seconds: 0.01,
                    image_id: "sha256:dep".into(),
                    parts: Vec::new(),
                    committed: false,
                },
                LayerReport {
                    name: "application".into(),
                    cache: CacheOutcome::Miss,
                    seconds: 4.2,
                    image_id: "sha256:app".into(),
                    parts: Vec::new(),
                    committed: false,
                },
            ],
            base: BaseReport {
                reference: "apache/beam_python3.11_sdk:2.77.0".into(),
                id: "sha256:1234567890abcdef".into(),
            },
            tags: vec![],
            seconds: 4.3,
            flink: None,
            platforms: Vec::new(),
            sdk: None,
        }
    }

    #[test]
    fn json_has_the_spec_fields_and_names() {
        let v: serde_json::Value = serde_json::from_str(&sample(false, None).to_json()).unwrap();
        for key in [
            "image",
            "image_id",
            "digest",
            "sdk_container_image",
            "cached",
            "layers",
            "base",
            "seconds",
        ] {
            assert!(v.get(key).is_some(), "missing {key} in {v}");
        }
        assert!(v["digest"].is_null());
        assert_eq!(v["base"]["ref"], "apache/beam_python3.11_sdk:2.77.0");
        assert_eq!(v["layers"][0]["cache"], "hit");
        assert_eq!(v["layers"][1]["cache"], "miss");
        assert_eq!(v["layers"][1]["name"], "application");
        assert!(v.get("tags").is_none(), "empty tags are left out");
    }

    #[test]
    fn json_round_trips() {
        let r = sample(true, Some("sha256:feed"));
        let back: Report = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn a_registry_hit_has_no_local_image_id() {
        let mut r = sample(true, Some("sha256:feed"));
        r.image_id = None;
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert!(v["image_id"].is_null());
        assert!(!r.to_text().contains("image id"));
    }

    #[test]
    fn registry_outcome_serialises_lowercase() {
        assert_eq!(
            serde_json::to_string(&CacheOutcome::Registry).unwrap(),
            "\"registry\""
        );
    }

    #[test]
    fn text_tells_what_to_launch_with() {
        let t = sample(false, None).to_text();
        assert!(
            t.contains("--sdk_container_image=beam_python_prebuilt_sdk:0123456789abcdef"),
            "{t}"
        );
        assert!(t.contains("built, 4.3s"), "{t}");
        assert!(t.contains("application   built"), "{t}");
        assert!(t.contains("(1234567890ab)"), "{t}");
        let pushed = sample(true, Some("sha256:feed")).to_text();
        assert!(pushed.contains("cached, nothing built"), "{pushed}");
        assert!(pushed.contains("digest    sha256:feed"), "{pushed}");
        assert!(pushed.contains("@sha256:feed"), "{pushed}");
    }

    #[test]
    fn flink_report_json_and_launch_text() {
        let mut r = sample(false, None);
        r.flink = Some(FlinkReport {
            python_executable: Some("/opt/flink/python-archives/venv/bin/python".into()),
            pythonpath: vec!["/opt/flink/python-files/0".into()],
            archives: [(
                "venv".to_string(),
                "/opt/flink/python-archives/venv".to_string(),
            )]
            .into(),
        });
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(
            v["flink"]["python_executable"],
            "/opt/flink/python-archives/venv/bin/python"
        );
        assert_eq!(v["flink"]["pythonpath"][0], "/opt/flink/python-files/0");
        assert_eq!(
            v["flink"]["archives"]["venv"],
            "/opt/flink/python-archives/venv"
        );
        let t = r.to_text();
        assert!(
            t.contains("-pyexec /opt/flink/python-archives/venv/bin/python"),
            "{t}"
        );
        assert!(
            t.contains("-Dpython.executable=/opt/flink/python-archives/venv/bin/python"),
            "{t}"
        );
        assert!(!t.contains("--sdk_container_image"), "{t}");
        let back: Report = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(back, r);
        // Beam reports have no flink object.
        let beam: serde_json::Value = serde_json::from_str(&sample(false, None).to_json()).unwrap();
        assert!(beam.get("flink").is_none());
    }

    #[test]
    fn short_id_strips_algorithm_and_truncates() {
        assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(short_id("abc"), "abc");
    }
}
