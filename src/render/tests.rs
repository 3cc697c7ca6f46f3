//! The machine channel's contract: each event's JSON name and fields, the
//! error object, redaction inside JSON, and the README's list of events.

use serde_json::{json, Value};

use super::*;
use crate::plan::LayerName;
use crate::progress::Layer;

const D: LayerName = LayerName::Dependencies;
const A: LayerName = LayerName::Application;

/// One of each event, with the JSON it must give (without `v` and `text`).
fn samples() -> Vec<(Event<'static>, Value)> {
    vec![
        (
            Event::LayerHit {
                layer: Layer::Boot,
                tag: "layer-abc",
            },
            json!({"event": "layer_hit", "layer": "boot", "tag": "layer-abc"}),
        ),
        (
            Event::LayerBuilding {
                layer: D,
                artifacts: 3,
            },
            json!({"event": "layer_building", "layer": "dependencies", "artifacts": 3}),
        ),
        (
            Event::BootBuilding {
                boot_ref: "apache/beam_python3.11_sdk:2.77.0",
                base: "python:3.11",
            },
            json!({"event": "boot_building", "boot_ref": "apache/beam_python3.11_sdk:2.77.0", "base": "python:3.11"}),
        ),
        (Event::WaitingForLock, json!({"event": "waiting_for_lock"})),
        (
            Event::CheckingBase {
                name: "python:3.11",
            },
            json!({"event": "checking_base", "name": "python:3.11"}),
        ),
        (
            Event::CreatingContainer {
                layer: A,
                name: "prebuilder-setup-application-0123456789ab-42",
            },
            json!({"event": "creating_container", "layer": "application", "name": "prebuilder-setup-application-0123456789ab-42"}),
        ),
        (
            Event::Uploading {
                layer: A,
                files: 2,
                bytes: 1_500_000,
            },
            json!({"event": "uploading", "layer": "application", "files": 2, "bytes": 1_500_000}),
        ),
        (
            Event::RunningSetup {
                layer: D,
                step: "/opt/apache/beam/boot --setup_only",
            },
            json!({"event": "running_setup", "layer": "dependencies", "step": "/opt/apache/beam/boot --setup_only"}),
        ),
        (
            Event::SetupOutput {
                layer: D,
                line: "Collecting six",
            },
            json!({"event": "setup_output", "layer": "dependencies", "line": "Collecting six"}),
        ),
        (
            Event::Recording {
                layer: D,
                packages: 80,
            },
            json!({"event": "recording", "layer": "dependencies", "packages": 80}),
        ),
        (
            Event::WritingLayer { layer: D },
            json!({"event": "writing_layer", "layer": "dependencies"}),
        ),
        (
            Event::LoadingLayer { layer: D },
            json!({"event": "loading_layer", "layer": "dependencies"}),
        ),
        (
            Event::EarlyLayer {
                layer: D,
                part: "torch-2.5.1",
                index: 1,
                of: 13,
            },
            json!({"event": "early_layer", "layer": "dependencies", "part": "torch-2.5.1", "index": 1, "of": 13}),
        ),
        (
            Event::EarlyLayersDropped {
                layer: D,
                count: 2,
                reason: "the split of what pip installed begins otherwise",
            },
            json!({"event": "early_layers_dropped", "layer": "dependencies", "count": 2, "reason": "the split of what pip installed begins otherwise"}),
        ),
        (
            Event::NoSnapshot { layer: A },
            json!({"event": "no_snapshot", "layer": "application"}),
        ),
        (
            Event::Committing { layer: A },
            json!({"event": "committing", "layer": "application"}),
        ),
        (
            Event::BootCopying { boot_ref: "beam:1" },
            json!({"event": "boot_copying", "boot_ref": "beam:1"}),
        ),
        (
            Event::BootCopied { bytes: 4096 },
            json!({"event": "boot_copied", "bytes": 4096}),
        ),
        (
            Event::RegistryHit {
                image: "r.example/p:k",
                registry: "r.example",
                digest: "sha256:ab",
            },
            json!({"event": "registry_hit", "image": "r.example/p:k", "registry": "r.example", "digest": "sha256:ab"}),
        ),
        (
            Event::RegistrySkipped {
                reason: "cannot reach r.example",
            },
            json!({"event": "registry_skipped", "reason": "cannot reach r.example"}),
        ),
        (
            Event::Pushing {
                reference: "r.example/p:k",
            },
            json!({"event": "pushing", "reference": "r.example/p:k"}),
        ),
        (
            Event::PushStatus {
                reference: "r.example/p:k",
                status: "Pushed",
            },
            json!({"event": "push_status", "reference": "r.example/p:k", "status": "Pushed"}),
        ),
        (
            Event::AlreadyPushed {
                reference: "r.example/p:k",
                digest: "sha256:ab",
            },
            json!({"event": "already_pushed", "reference": "r.example/p:k", "digest": "sha256:ab"}),
        ),
        (
            Event::MovingTag {
                reference: "r.example/p:prod",
                from: "sha256:aa",
                to: "sha256:bb",
            },
            json!({"event": "moving_tag", "reference": "r.example/p:prod", "from": "sha256:aa", "to": "sha256:bb"}),
        ),
        (
            Event::BaseResolved {
                base: "python:3.11",
                id: "sha256:cc",
                registry: "docker.io",
            },
            json!({"event": "base_resolved", "base": "python:3.11", "id": "sha256:cc", "registry": "docker.io"}),
        ),
        (
            Event::BootResolved {
                boot: "beam:1",
                id: "sha256:dd",
                registry: "docker.io",
            },
            json!({"event": "boot_resolved", "boot": "beam:1", "id": "sha256:dd", "registry": "docker.io"}),
        ),
        (Event::NothingPulled, json!({"event": "nothing_pulled"})),
        (
            Event::Pulling {
                reference: "python:3.11",
            },
            json!({"event": "pulling", "reference": "python:3.11"}),
        ),
        (
            Event::PullStatus {
                reference: "python:3.11",
                status: "ab12: Pull complete",
            },
            json!({"event": "pull_status", "reference": "python:3.11", "status": "ab12: Pull complete"}),
        ),
        (
            Event::Pulled {
                reference: "python:3.11",
            },
            json!({"event": "pulled", "reference": "python:3.11"}),
        ),
        (
            Event::LayerFromRegistry {
                layer: D,
                reference: "r.example/p:layer-k",
            },
            json!({"event": "layer_from_registry", "layer": "dependencies", "reference": "r.example/p:layer-k"}),
        ),
        (
            Event::TaggedInRegistry {
                reference: "r.example/p:prod",
                digest: "sha256:ab",
            },
            json!({"event": "tagged_in_registry", "reference": "r.example/p:prod", "digest": "sha256:ab"}),
        ),
        (
            Event::TagsNotApplied {
                image: "r.example/p:k",
            },
            json!({"event": "tags_not_applied", "image": "r.example/p:k"}),
        ),
        (
            Event::Attestation {
                kind: "spdx",
                subject: "r.example/p@sha256:ab",
                referrer: "sha256:cd",
                existing: false,
            },
            json!({"event": "attestation", "kind": "spdx", "subject": "r.example/p@sha256:ab", "referrer": "sha256:cd", "existing": false}),
        ),
        (
            Event::AttestationWritten {
                path: "docs/sbom.spdx.json",
            },
            json!({"event": "attestation_written", "path": "docs/sbom.spdx.json"}),
        ),
        (
            Event::AttestationsSkipped {
                reason: "no record",
            },
            json!({"event": "attestations_skipped", "reason": "no record"}),
        ),
    ]
}

/// Which variant an event is. No wildcard arm: a new variant does not
/// compile here until it has a sample above (and a README line, below).
fn variant(event: &Event<'_>) -> usize {
    match event {
        Event::LayerHit { .. } => 0,
        Event::LayerBuilding { .. } => 1,
        Event::BootBuilding { .. } => 2,
        Event::WaitingForLock => 3,
        Event::CheckingBase { .. } => 4,
        Event::CreatingContainer { .. } => 5,
        Event::Uploading { .. } => 6,
        Event::RunningSetup { .. } => 7,
        Event::SetupOutput { .. } => 8,
        Event::Recording { .. } => 9,
        Event::WritingLayer { .. } => 10,
        Event::LoadingLayer { .. } => 11,
        Event::NoSnapshot { .. } => 12,
        Event::Committing { .. } => 13,
        Event::BootCopying { .. } => 14,
        Event::BootCopied { .. } => 15,
        Event::RegistryHit { .. } => 16,
        Event::RegistrySkipped { .. } => 17,
        Event::Pushing { .. } => 18,
        Event::PushStatus { .. } => 19,
        Event::AlreadyPushed { .. } => 20,
        Event::MovingTag { .. } => 21,
        Event::BaseResolved { .. } => 22,
        Event::BootResolved { .. } => 23,
        Event::NothingPulled => 24,
        Event::Pulling { .. } => 25,
        Event::PullStatus { .. } => 26,
        Event::Pulled { .. } => 27,
        Event::LayerFromRegistry { .. } => 28,
        Event::TaggedInRegistry { .. } => 29,
        Event::TagsNotApplied { .. } => 30,
        Event::Attestation { .. } => 31,
        Event::AttestationWritten { .. } => 32,
        Event::AttestationsSkipped { .. } => 33,
        Event::EarlyLayer { .. } => 34,
        Event::EarlyLayersDropped { .. } => 35,
    }
}

fn parse(line: &str) -> Value {
    assert!(!line.contains('\n'), "one line: {line}");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[test]
fn every_event_serializes_to_its_name_and_fields() {
    let samples = samples();
    let mut seen: Vec<usize> = samples.iter().map(|(e, _)| variant(e)).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, (0..=35).collect::<Vec<_>>(), "one sample per variant");
    for (event, want) in &samples {
        let line = json_line(event);
        let mut got = parse(&line);
        assert!(
            line.starts_with("{\"v\":1,\"event\":"),
            "v, then event: {line}"
        );
        let map = got.as_object_mut().unwrap();
        assert_eq!(map.remove("v"), Some(json!(VERSION)), "{line}");
        assert_eq!(map.remove("text"), Some(json!(words(event))), "{line}");
        assert!(!words(event).is_empty(), "{event:?} has no words");
        assert_eq!(&got, want, "{event:?}");
    }
}

#[test]
fn no_event_field_takes_a_reserved_name() {
    for (_, want) in samples() {
        for key in want.as_object().unwrap().keys() {
            assert!(!["v", "text"].contains(&key.as_str()), "{want}");
        }
    }
}

#[test]
fn secrets_are_masked_inside_json_without_breaking_it() {
    // A quote right after a secret query value: redacting the serialized
    // line would eat the escape's backslash and end the string early.
    let event = Event::SetupOutput {
        layer: D,
        line: "Collecting pkg@ https://u:s3cr3t@h.example/p.whl?token=s3cr3t\"x",
    };
    let line = json_line(&event);
    let v = parse(&line);
    assert!(!line.contains("s3cr3t"), "{line}");
    assert_eq!(
        v["line"],
        "Collecting pkg@ https://***@h.example/p.whl?token=***\"x"
    );
    assert!(!v["text"].as_str().unwrap().contains("s3cr3t"));
}

#[test]
fn log_records_carry_their_level() {
    let v = parse(&log_line("warn", "cannot lock x", Map::new()));
    assert_eq!(
        v,
        json!({"v": 1, "event": "log", "level": "warn", "text": "cannot lock x"})
    );
    let mut fields = Map::new();
    fields.insert("url".into(), json!("https://u:p@r.example/v2/"));
    let v = parse(&log_line("debug", "GET", fields));
    assert_eq!(v["fields"]["url"], "https://***@r.example/v2/");
}

#[test]
fn the_error_object_has_error_hint_exit_code_and_causes() {
    let e = Error::EngineWentAway {
        endpoint: "unix:///x.sock".into(),
        during: "the setup of the dependencies layer".into(),
        source: Box::new(std::io::Error::other("connection reset")),
    };
    let f = Failure::of(&e);
    let v = parse(&f.to_json());
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["causes", "error", "exit_code", "hint"]);
    assert_eq!(v["error"], e.to_string());
    assert_eq!(v["hint"], e.hint().unwrap());
    assert_eq!(v["exit_code"], 3);
    assert_eq!(v["causes"], json!(["connection reset"]));

    // On stderr with --progress json: the same fields, as an `error` line.
    let line = parse(&f.json_line());
    assert_eq!(line["v"], 1);
    assert_eq!(line["event"], "error");
    for key in ["error", "hint", "exit_code", "causes"] {
        assert_eq!(line[key], v[key], "{key}");
    }
    assert_eq!(line["text"], f.text());
}

#[test]
fn the_error_object_is_redacted_and_hint_may_be_null() {
    let e = Error::Registry {
        registry: "r.example".into(),
        action: "GET https://u:s3cr3t@r.example/v2/?token=s3cr3t".into(),
        source: "500".into(),
    };
    let json = Failure::of(&e).to_json();
    assert!(!json.contains("s3cr3t"), "{json}");
    let interrupted = Failure::of(&Error::Interrupted {
        signal: crate::cancel::Signal::Interrupt,
    });
    let v = parse(&interrupted.to_json());
    assert_eq!(v["hint"], Value::Null);
    assert_eq!(v["exit_code"], 130);
    assert_eq!(v["causes"], json!([]));
}

#[test]
fn causes_are_printed_once_in_text() {
    let e = Error::Local {
        action: "writing the layer".into(),
        source: std::io::Error::other("disk full"),
    };
    let f = Failure::of(&e);
    assert_eq!(f.causes, ["disk full"]);
    assert_eq!(
        f.message(),
        "local I/O error while writing the layer: disk full"
    );
    let inner = std::io::Error::other(std::io::Error::other("connection reset"));
    let e = Error::Engine {
        action: "pushing".into(),
        engine: String::new(),
        source: Box::new(inner),
    };
    let text = Failure::of(&e).message();
    assert!(text.ends_with(": connection reset"), "{text}");
    assert_eq!(text.matches("connection reset").count(), 1);
    assert!(Failure::of(&e).text().contains("\nhint: "));
}

#[test]
fn a_usage_error_from_clap_is_an_error_object() {
    use clap::Parser;
    let e = crate::cli::Cli::try_parse_from(["prebuilder", "build", "--no-such-flag"]).unwrap_err();
    let f = Failure::usage(&e);
    assert_eq!(f.exit_code, 2);
    assert!(f.error.contains("--no-such-flag"), "{f:?}");
    assert!(!f.error.starts_with("error:"), "{f:?}");
    assert!(f.hint.as_deref().unwrap().contains("--help"), "{f:?}");
}

/// People read these; scripts read the JSON. Kept so a wording change is a
/// decision, not an accident.
#[test]
fn events_read_well_in_english() {
    assert_eq!(
        words(&Event::LayerBuilding {
            layer: D,
            artifacts: 3
        }),
        "dependencies: building (3 artifact(s))"
    );
    assert_eq!(
        words(&Event::LoadingLayer { layer: D }),
        "dependencies: loading the layer"
    );
    assert_eq!(
        words(&Event::LayerHit {
            layer: Layer::Boot,
            tag: "abc"
        }),
        "boot: cache hit (abc)"
    );
    assert_eq!(
        words(&Event::Uploading {
            layer: A,
            files: 2,
            bytes: 1_500_000
        }),
        "application: uploading 2 artifact(s), 1.5 MB"
    );
}

/// The README's table names every event and each of its fields.
#[test]
fn the_readme_lists_every_event_and_its_fields() {
    let readme = include_str!("../../README.md");
    for (_, want) in samples() {
        let map = want.as_object().unwrap();
        let name = map["event"].as_str().unwrap();
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `{name}` |")))
            .unwrap_or_else(|| panic!("README.md has no row for `{name}`"));
        for key in map.keys().filter(|k| *k != "event") {
            assert!(
                row.contains(&format!("`{key}`")),
                "README.md's row for `{name}` lacks `{key}`: {row}"
            );
        }
    }
    for name in ["log", "error"] {
        assert!(
            readme.contains(&format!("| `{name}` |")),
            "README.md has no row for `{name}`"
        );
    }
}
