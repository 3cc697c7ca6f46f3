//! `--progress json` on the real engine: every line a build, its relaunch and
//! a failing build write on stderr is one JSON object of version 1, with the
//! events a build must have, the log records with their level, and the error
//! object as the last line (and on stdout, with `--format json`).

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::support::*;

/// Every stderr line, parsed; each must be an object with `"v": 1`, an
/// `event` name and a `text`.
fn json_lines(o: &Output) -> Vec<Value> {
    let err = stderr(o);
    assert!(!err.is_empty(), "nothing on stderr");
    err.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {line}"));
            assert_eq!(v["v"], 1, "{line}");
            assert!(v["event"].is_string(), "{line}");
            assert!(v["text"].is_string(), "{line}");
            v
        })
        .collect()
}

fn named<'a>(lines: &'a [Value], event: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["event"] == event).collect()
}

fn build(fx: &Fixtures, repo: &TestRepo, requirements: &Path) -> Output {
    run(prebuilder()
        .args(["build", "-v", "--progress", "json", "--format", "json"])
        .args(["--base", &fx.beam_image, "--network", "none"])
        .args(["--repository", &repo.name])
        .arg("--requirements-file")
        .arg(requirements)
        .arg("--requirements-cache")
        .arg(&fx.demo_wheels)
        // Not a number: a warning, so the stream holds a log record.
        .env("SOURCE_DATE_EPOCH", "not-a-number"))
}

#[test]
fn every_stderr_line_of_a_build_its_relaunch_and_a_failure_is_json() {
    let fx = Fixtures::load();
    let repo = TestRepo::new("progress-json");
    let dir = tempfile::tempdir().unwrap();
    let requirements = unique_requirements(dir.path(), "tabulate==0.9.0\n");

    let first = build(&fx, &repo, &requirements);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let report = json(&first);
    assert_eq!(report["cached"], false);
    let lines = json_lines(&first);
    let building = named(&lines, "layer_building");
    assert_eq!(building.len(), 1, "{lines:?}");
    assert_eq!(building[0]["layer"], "dependencies");
    assert!(building[0]["artifacts"].as_u64().unwrap() >= 1);
    let container = named(&lines, "creating_container");
    assert_eq!(container.len(), 1, "{lines:?}");
    assert!(container[0]["name"]
        .as_str()
        .unwrap()
        .starts_with("prebuilder-setup-dependencies-"));
    assert_eq!(named(&lines, "running_setup").len(), 1, "{lines:?}");
    assert!(
        named(&lines, "setup_output")
            .iter()
            .any(|l| l["layer"] == "dependencies"
                && l["line"].as_str().unwrap().contains("tabulate")),
        "pip's lines are setup_output events: {lines:?}"
    );
    assert!(
        !named(&lines, "loading_layer").is_empty() || !named(&lines, "committing").is_empty(),
        "the layer was loaded or committed: {lines:?}"
    );
    let logs = named(&lines, "log");
    assert!(
        logs.iter()
            .any(|l| l["level"] == "warn"
                && l["text"].as_str().unwrap().contains("SOURCE_DATE_EPOCH")),
        "the warning is a log record with its level: {lines:?}"
    );
    assert!(named(&lines, "error").is_empty());

    let again = build(&fx, &repo, &requirements);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(json(&again)["cached"], true);
    let lines = json_lines(&again);
    let hits = named(&lines, "layer_hit");
    assert_eq!(hits.len(), 1, "{lines:?}");
    assert_eq!(hits[0]["layer"], "dependencies");
    assert!(named(&lines, "layer_building").is_empty(), "{lines:?}");
    assert!(named(&lines, "creating_container").is_empty(), "{lines:?}");

    let missing = unique_requirements(dir.path(), "prebuilder-test-no-such-package==1.0\n");
    let failed = build(&fx, &repo, &missing);
    assert_eq!(failed.status.code(), Some(1), "{}", stderr(&failed));
    let lines = json_lines(&failed);
    assert!(
        named(&lines, "setup_output").iter().any(|l| l["line"]
            .as_str()
            .unwrap()
            .contains("No matching distribution")),
        "{lines:?}"
    );
    let last = lines.last().unwrap();
    assert_eq!(last["event"], "error", "the error is the last line");
    assert_eq!(last["exit_code"], 1);
    assert!(
        last["error"]
            .as_str()
            .unwrap()
            .contains("setup of layer \"dependencies\" failed"),
        "{last}"
    );
    assert!(
        last["hint"].is_string() && last["causes"].is_array(),
        "{last}"
    );
    // --format json: the same object on stdout, its only content.
    let object = json(&failed);
    for key in ["error", "hint", "exit_code", "causes"] {
        assert_eq!(object[key], last[key], "{key}");
    }
    assert_eq!(object.as_object().unwrap().len(), 4, "{object}");
    assert!(setup_containers().is_empty(), "a setup container was left");
}
