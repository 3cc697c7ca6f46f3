//! What CI systems read after a build, without `jq`: the image id file
//! (`--iidfile`, as `docker build` writes it), buildx's metadata file
//! (`--metadata-file`), GitHub Actions step outputs (`$GITHUB_OUTPUT`), and
//! the bare reference `-q` prints. All of it derives from the [`Report`];
//! the build command calls [`write`] once, after the report is complete.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::report::Report;

/// buildx's metadata keys, so scripts written for `docker buildx build
/// --metadata-file` read ours unchanged.
pub const KEY_DIGEST: &str = "containerimage.digest";
pub const KEY_CONFIG_DIGEST: &str = "containerimage.config.digest";
pub const KEY_IMAGE_NAME: &str = "image.name";

/// Where to write the outputs; `None` = not asked for.
#[derive(Debug, Default, Clone)]
pub struct Outputs {
    pub iidfile: Option<PathBuf>,
    pub metadata_file: Option<PathBuf>,
    /// `$GITHUB_OUTPUT`, when running under GitHub Actions.
    pub github_output: Option<PathBuf>,
}

impl Outputs {
    /// `$GITHUB_OUTPUT` counts only under GitHub Actions (`GITHUB_ACTIONS=true`),
    /// as GitHub's own actions decide.
    pub fn new(
        iidfile: Option<PathBuf>,
        metadata_file: Option<PathBuf>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Outputs {
        let github_output = match (env("GITHUB_ACTIONS").as_deref(), env("GITHUB_OUTPUT")) {
            (Some("true"), Some(path)) if !path.is_empty() => Some(PathBuf::from(path)),
            _ => None,
        };
        Outputs {
            iidfile,
            metadata_file,
            github_output,
        }
    }
}

/// Write every output asked for.
pub fn write(outputs: &Outputs, report: &Report) -> Result<()> {
    if let Some(path) = &outputs.iidfile {
        write_file("--iidfile", path, iid(report).as_bytes())?;
    }
    if let Some(path) = &outputs.metadata_file {
        write_file(
            "--metadata-file",
            path,
            (metadata(report) + "\n").as_bytes(),
        )?;
    }
    if let Some(path) = &outputs.github_output {
        append_file("GITHUB_OUTPUT", path, github_output(report).as_bytes())?;
    }
    Ok(())
}

/// What `docker build --iidfile` writes: the image id, no newline. A
/// registry hit pulled nothing, so there is no local image id: the
/// registry's manifest digest identifies the image instead.
pub fn iid(report: &Report) -> String {
    report
        .image_id
        .clone()
        .or_else(|| report.digest.clone())
        .unwrap_or_default()
}

/// buildx's metadata JSON. `containerimage.digest` is the registry's
/// manifest digest, present only when the image is in a registry (a local
/// image has no manifest digest); `containerimage.config.digest` is the
/// image id, present when the image is on the engine; `image.name` lists the
/// content-addressed reference and every `--tag`, comma-separated.
pub fn metadata(report: &Report) -> String {
    let mut doc = serde_json::Map::new();
    if let Some(d) = &report.digest {
        doc.insert(KEY_DIGEST.into(), d.clone().into());
    }
    if let Some(id) = &report.image_id {
        doc.insert(KEY_CONFIG_DIGEST.into(), id.clone().into());
    }
    doc.insert(KEY_IMAGE_NAME.into(), names(report).join(",").into());
    serde_json::to_string_pretty(&serde_json::Value::Object(doc)).unwrap_or_default()
}

/// `$GITHUB_OUTPUT` lines: `image`, `digest` (empty when not pushed) and
/// `sdk-container-image`. Values are single-line references, so the plain
/// `name=value` form is safe.
pub fn github_output(report: &Report) -> String {
    format!(
        "image={}\ndigest={}\nsdk-container-image={}\n",
        report.image,
        report.digest.as_deref().unwrap_or(""),
        report.sdk_container_image
    )
}

/// What `-q` prints on stdout: the reference to launch with, nothing else.
pub fn quiet(report: &Report) -> String {
    format!("{}\n", report.sdk_container_image)
}

fn names(report: &Report) -> Vec<String> {
    std::iter::once(report.image.clone())
        .chain(report.tags.iter().cloned())
        .collect()
}

fn write_file(flag: &'static str, path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|source| Error::Output {
        what: flag,
        path: path.to_path_buf(),
        source,
    })
}

fn append_file(what: &'static str, path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|source| Error::Output {
            what,
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{BaseReport, CacheOutcome, LayerReport};

    fn report(digest: Option<&str>, image_id: Option<&str>) -> Report {
        Report {
            image: "localhost:5000/sdk:0123abcd".into(),
            image_id: image_id.map(str::to_string),
            digest: digest.map(str::to_string),
            sdk_container_image: match digest {
                Some(d) => format!("localhost:5000/sdk@{d}"),
                None => "localhost:5000/sdk:0123abcd".into(),
            },
            cached: false,
            layers: vec![LayerReport {
                name: "dependencies".into(),
                cache: CacheOutcome::Miss,
                seconds: 1.0,
                image_id: "sha256:dep".into(),
                parts: Vec::new(),
                committed: false,
            }],
            base: BaseReport {
                reference: "base:1".into(),
                id: "sha256:base".into(),
            },
            tags: vec!["localhost:5000/sdk:latest".into()],
            seconds: 1.0,
            builder: "engine".into(),
            flink: None,
            platforms: Vec::new(),
            sdk: None,
        }
    }

    #[test]
    fn metadata_has_buildx_keys() {
        let v: serde_json::Value = serde_json::from_str(&metadata(&report(
            Some("sha256:manifest"),
            Some("sha256:config"),
        )))
        .unwrap();
        assert_eq!(v[KEY_DIGEST], "sha256:manifest");
        assert_eq!(v[KEY_CONFIG_DIGEST], "sha256:config");
        assert_eq!(
            v[KEY_IMAGE_NAME],
            "localhost:5000/sdk:0123abcd,localhost:5000/sdk:latest"
        );
        let local: serde_json::Value =
            serde_json::from_str(&metadata(&report(None, Some("sha256:config")))).unwrap();
        assert!(
            local.get(KEY_DIGEST).is_none(),
            "no manifest digest: {local}"
        );
        assert_eq!(local[KEY_CONFIG_DIGEST], "sha256:config");
    }

    #[test]
    fn iid_is_the_image_id_else_the_digest() {
        assert_eq!(iid(&report(Some("sha256:m"), Some("sha256:c"))), "sha256:c");
        assert_eq!(iid(&report(Some("sha256:m"), None)), "sha256:m");
    }

    #[test]
    fn github_output_only_under_github_actions() {
        let env = |actions: Option<&'static str>| {
            move |k: &str| match k {
                "GITHUB_ACTIONS" => actions.map(str::to_string),
                "GITHUB_OUTPUT" => Some("/tmp/out".to_string()),
                _ => None,
            }
        };
        assert_eq!(
            Outputs::new(None, None, env(Some("true"))).github_output,
            Some(PathBuf::from("/tmp/out"))
        );
        assert_eq!(Outputs::new(None, None, env(None)).github_output, None);
        assert_eq!(
            Outputs::new(None, None, env(Some("false"))).github_output,
            None
        );
        assert_eq!(
            github_output(&report(None, Some("sha256:c"))),
            "image=localhost:5000/sdk:0123abcd\ndigest=\nsdk-container-image=localhost:5000/sdk:0123abcd\n"
        );
    }

    #[test]
    fn write_appends_to_github_output_and_replaces_files() {
        let dir = tempfile::tempdir().unwrap();
        let gh = dir.path().join("gh");
        std::fs::write(&gh, "earlier=1\n").unwrap();
        let outputs = Outputs {
            iidfile: Some(dir.path().join("iid")),
            metadata_file: Some(dir.path().join("meta.json")),
            github_output: Some(gh.clone()),
        };
        let r = report(Some("sha256:m"), Some("sha256:c"));
        write(&outputs, &r).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("iid")).unwrap(),
            "sha256:c"
        );
        let gh_text = std::fs::read_to_string(&gh).unwrap();
        assert!(gh_text.starts_with("earlier=1\nimage="), "{gh_text}");
        assert!(gh_text.contains("\ndigest=sha256:m\n"), "{gh_text}");
        let bad = Outputs {
            iidfile: Some(dir.path().join("missing-dir/iid")),
            ..Default::default()
        };
        let e = write(&bad, &r).unwrap_err();
        assert!(e.to_string().contains("--iidfile"), "{e}");
        assert!(e.to_string().contains("missing-dir"), "{e}");
    }
}
