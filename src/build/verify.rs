//! Never report an image that is not what it claims. After every layer
//! build, before anything is tagged or pushed, the result is compared with
//! what was asked for: the config the base gave (Entrypoint, Cmd, Env,
//! WorkingDir, User; with `--boot-from`, the boot layer's), the labels that
//! make it findable by its key, and no setup leftovers (the snapshot, a
//! staged file or the manifest). Engines that accept the Docker API but
//! ignore part of a request (Podman's `/commit` ignores its config body)
//! would otherwise produce an image that re-runs the setup on every worker,
//! is never found again by its key, and poisons a shared registry cache.
//!
//! Leftovers are looked for in the setup container before a commit (the
//! commit takes the container as it is). A loaded layer is made from the
//! setup's snapshot, which never walks the snapshot or artifacts directories
//! (`setup.sh` prunes them), so it cannot carry either.
//!
//! [`verify`] is pure; [`leftovers`] and [`check`] gather what it compares.

use std::collections::BTreeMap;

use super::setup::SNAPSHOT_DIR;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::stage::MANIFEST_FILE;

/// An image's config and what the setup may have left in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub labels: BTreeMap<String, String>,
    /// Paths of setup leftovers found in the image.
    pub leftovers: Vec<String>,
}

impl Observed {
    /// From an Engine API container config (`Entrypoint`, `Env`, `Labels`, …).
    pub fn from_config(config: &serde_json::Value, leftovers: Vec<String>) -> Observed {
        let list = |f: &str| -> Vec<String> {
            config
                .get(f)
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default()
        };
        let text = |f: &str| {
            config
                .get(f)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        Observed {
            entrypoint: list("Entrypoint"),
            cmd: list("Cmd"),
            env: list("Env"),
            working_dir: text("WorkingDir"),
            user: text("User"),
            labels: config
                .get("Labels")
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default(),
            leftovers,
        }
    }
}

/// `Ok` when `got` is what `want` asks for; else an error naming the engine,
/// the image and every difference. Labels of `want` must be in `got` with
/// the same value (the engine may keep more); "" and "/" are the same
/// working directory.
pub fn verify(engine: &str, image: &str, want: &Observed, got: &Observed) -> Result<()> {
    let mut diffs = Vec::new();
    let mut field = |name: &str, w: &[String], g: &[String]| {
        if w != g {
            diffs.push(format!("{name} is {g:?}, expected {w:?}"));
        }
    };
    field("Entrypoint", &want.entrypoint, &got.entrypoint);
    field("Cmd", &want.cmd, &got.cmd);
    field("Env", &want.env, &got.env);
    let dir = |d: &str| {
        if d.is_empty() {
            "/".to_string()
        } else {
            d.to_string()
        }
    };
    if dir(&want.working_dir) != dir(&got.working_dir) {
        diffs.push(format!(
            "WorkingDir is {:?}, expected {:?}",
            got.working_dir, want.working_dir
        ));
    }
    if want.user != got.user {
        diffs.push(format!("User is {:?}, expected {:?}", got.user, want.user));
    }
    for (k, v) in &want.labels {
        match got.labels.get(k) {
            None => diffs.push(format!("label {k} is missing")),
            Some(g) if g != v => diffs.push(format!("label {k} is {g:?}, expected {v:?}")),
            Some(_) => {}
        }
    }
    if !got.leftovers.is_empty() {
        diffs.push(format!(
            "setup leftovers in the image: {}",
            got.leftovers.join(", ")
        ));
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(Error::ResultMismatch {
            engine: engine.to_string(),
            image: image.to_string(),
            cause: likely_cause(engine, &diffs),
            differences: diffs,
        })
    }
}

/// The hint of a [`Error::ResultMismatch`]: the likely cause on this
/// engine (named as `Error::named` names it), from what was found.
pub fn likely_cause(engine: &str, differences: &[String]) -> String {
    let found = |what: &str| differences.iter().any(|d| d.contains(what));
    let cause = if found(SNAPSHOT_DIR) {
        format!(
            "the image holds the setup's snapshot ({SNAPSHOT_DIR}): a commit took the container \
             with it. prebuilder commits only a setup that made no snapshot; this is a bug, \
             report it with the output above and `docker version`"
        )
    } else if engine.contains("Podman") {
        "Podman's /commit ignores the config and adds TERM and container to Env: leave \
         PREBUILDER_COMMIT unset and use a base with GNU find and tar, so layers are loaded \
         instead of committed; report it with `podman version`"
            .to_string()
    } else if found("setup leftovers") {
        "the setup left staged files in a committed image (a base without GNU find and tar, \
         or PREBUILDER_COMMIT=1): check that the base's /opt/apache/beam/artifacts is \
         writable; report it with `docker version` and `docker info`"
            .to_string()
    } else {
        format!(
            "{engine} did not keep the config or labels of the image prebuilder loaded or \
             committed; report it with `docker version` and `docker info` (its image store)"
        )
    };
    format!("nothing was tagged or pushed. {cause}")
}

/// Where a setup leftover would be: the snapshot directory, the manifest and
/// the top-level staged names in the artifacts directory (Beam's, or the
/// PyFlink one).
pub fn leftover_paths(artifacts_dir: &str, staged: &[&str]) -> Vec<String> {
    let mut tops: Vec<&str> = staged
        .iter()
        .map(|n| n.split('/').next().unwrap_or(n))
        .chain([MANIFEST_FILE])
        .collect();
    tops.sort_unstable();
    tops.dedup();
    let mut paths = vec![SNAPSHOT_DIR.to_string()];
    paths.extend(tops.into_iter().map(|t| format!("{artifacts_dir}/{t}")));
    paths
}

/// Which of the leftover paths of `staged` exist in `container`.
pub async fn leftovers<E: Engine>(
    engine: &E,
    container: &str,
    artifacts_dir: &str,
    staged: &[&str],
) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for path in leftover_paths(artifacts_dir, staged) {
        if engine.exists(container, &path).await? {
            found.push(path);
        }
    }
    Ok(found)
}

/// The image `id` shows `want` (a config in the Engine API's JSON form) and
/// no `leftovers`; else it is removed (untagged, nothing else holds it) and
/// the build fails naming the engine and every difference.
pub async fn check<E: Engine>(
    engine: &E,
    id: &str,
    want: &serde_json::Value,
    leftovers: Vec<String>,
) -> Result<()> {
    let got = match engine.inspect(id).await? {
        Some(info) => Observed::from_config(&info.config, leftovers),
        None => {
            return Err(Error::Engine {
                engine: String::new(),
                action: "checking the built layer".into(),
                source: format!("the engine did not keep {id}").into(),
            })
        }
    };
    let want = Observed::from_config(want, Vec::new());
    if let Err(e) = verify(&engine.name().description, id, &want, &got) {
        if let Err(r) = engine.remove_image(id).await {
            tracing::warn!("could not remove the wrong image {id}: {r}");
        }
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ARTIFACTS_DIR;

    #[test]
    fn the_hint_names_this_engines_likely_cause_not_podmans_everywhere() {
        let docker = "the engine at unix:///x.sock, Docker 26.1.5";
        let snapshot = [format!("setup leftovers in the image: {SNAPSHOT_DIR}")];
        let hint = likely_cause(docker, &snapshot);
        assert!(
            hint.contains("snapshot") && !hint.contains("Podman"),
            "{hint}"
        );
        let env = ["Env is [], expected [\"A=b\"]".to_string()];
        let hint = likely_cause(docker, &env);
        assert!(hint.contains(docker) && !hint.contains("Podman"), "{hint}");
        let hint = likely_cause("the engine at unix:///p.sock, Podman 4.3.1", &env);
        assert!(hint.contains("Podman's /commit"), "{hint}");
    }

    fn want() -> Observed {
        Observed {
            entrypoint: vec!["/opt/apache/beam/boot".into()],
            cmd: vec![],
            env: vec!["PATH=/usr/bin".into(), "LANG=C.UTF-8".into()],
            working_dir: "".into(),
            user: "".into(),
            labels: [
                ("prebuilder".to_string(), "image".to_string()),
                ("prebuilder.key".to_string(), "k1".to_string()),
            ]
            .into(),
            leftovers: vec![],
        }
    }

    #[test]
    fn the_same_config_passes() {
        let mut got = want();
        got.working_dir = "/".into();
        got.labels.insert("from.base".into(), "x".into());
        assert!(verify("the engine", "r:t", &want(), &got).is_ok());
    }

    #[test]
    fn every_difference_is_named() {
        // What Podman 4's /commit made before the fix: the setup script as
        // entrypoint, its environment, no key labels, the snapshot inside.
        let got = Observed {
            entrypoint: vec!["/bin/sh".into(), "-c".into()],
            cmd: vec![],
            env: vec![
                "TERM=xterm".into(),
                "container=podman".into(),
                "PATH=/usr/bin".into(),
                "LANG=C.UTF-8".into(),
            ],
            working_dir: "/".into(),
            user: "".into(),
            labels: [("prebuilder".to_string(), "setup".to_string())].into(),
            leftovers: vec!["/.prebuilder-snapshot".into()],
        };
        let err = verify(
            "the engine at unix:///p.sock (from DOCKER_HOST)",
            "r:t",
            &want(),
            &got,
        )
        .unwrap_err();
        let Error::ResultMismatch {
            engine,
            image,
            differences,
            ..
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!(engine, "the engine at unix:///p.sock (from DOCKER_HOST)");
        assert_eq!(image, "r:t");
        assert_eq!(differences.len(), 5, "{differences:#?}");
        assert!(differences[0].starts_with("Entrypoint is [\"/bin/sh\", \"-c\"]"));
        assert!(differences[1].contains("TERM=xterm"));
        assert!(differences[2].contains("label prebuilder is \"setup\""));
        assert_eq!(differences[3], "label prebuilder.key is missing");
        assert!(differences[4].contains("/.prebuilder-snapshot"));
        let text = err.to_string();
        assert!(
            text.contains("r:t") && text.contains("unix:///p.sock"),
            "{text}"
        );
        assert!(
            err.hint().unwrap().contains("nothing was tagged"),
            "{:?}",
            err.hint()
        );
    }

    #[test]
    fn user_and_cmd_count() {
        let mut got = want();
        got.user = "1000".into();
        got.cmd = vec!["--help".into()];
        let Err(Error::ResultMismatch { differences, .. }) = verify("e", "i", &want(), &got) else {
            panic!()
        };
        assert_eq!(differences.len(), 2);
    }

    #[test]
    fn observed_from_an_engine_config() {
        let config = serde_json::json!({
            "Entrypoint": ["/opt/apache/beam/boot"],
            "Cmd": null,
            "Env": ["PATH=/usr/bin"],
            "WorkingDir": "/w",
            "Labels": {"prebuilder.key": "k"},
        });
        let o = Observed::from_config(&config, vec!["/x".into()]);
        assert_eq!(o.entrypoint, ["/opt/apache/beam/boot"]);
        assert!(o.cmd.is_empty());
        assert_eq!(o.env, ["PATH=/usr/bin"]);
        assert_eq!(o.working_dir, "/w");
        assert_eq!(o.user, "");
        assert_eq!(o.labels["prebuilder.key"], "k");
        assert_eq!(o.leftovers, ["/x"]);
    }

    #[test]
    fn leftover_paths_are_the_snapshot_the_manifest_and_staged_tops() {
        assert_eq!(
            leftover_paths(
                ARTIFACTS_DIR,
                &["requirements.txt", "sub/a.whl", "sub/b.whl"]
            ),
            [
                "/.prebuilder-snapshot",
                "/opt/apache/beam/artifacts/artifacts_info.json",
                "/opt/apache/beam/artifacts/requirements.txt",
                "/opt/apache/beam/artifacts/sub",
            ]
        );
    }
}
