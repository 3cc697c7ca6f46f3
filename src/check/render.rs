//! `prebuilder check` as a table for people.

use super::{CheckReport, Probe, DEFAULT_ENV_VAR};
use crate::plan::BOOT;
use crate::report::short_id;

fn row(out: &mut String, name: &str, value: impl AsRef<str>) {
    out.push_str(&format!("  {name:<12} {}\n", value.as_ref()));
}

fn or_none(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("not installed")
}

fn environment(out: &mut String, p: &Probe) {
    if let Some(v) = &p.version {
        row(
            out,
            "version",
            format!("{v} ({})", p.executable.as_deref().unwrap_or("?")),
        );
    }
    row(out, "apache-beam", or_none(&p.apache_beam));
    let lib = p.pickle_library.as_deref().unwrap_or("unknown");
    let pickler = match lib {
        "cloudpickle" => format!(
            "cloudpickle {}",
            p.cloudpickle_in_use().as_deref().unwrap_or("not installed")
        ),
        l if l.starts_with("dill") => format!("dill {}", or_none(&p.dill)),
        other => other.to_string(),
    };
    row(out, "pickler", format!("{pickler}, Beam's default"));
    if p.dill.is_some() && !lib.starts_with("dill") {
        row(out, "dill", or_none(&p.dill));
    }
    row(out, "protobuf", or_none(&p.protobuf));
}

pub(super) fn text(r: &CheckReport) -> String {
    let mut out = String::new();
    let img = &r.image;
    let p = &img.probe;
    out.push_str(&format!(
        "image        {} ({})\n",
        img.image,
        short_id(&img.id)
    ));
    let mut platform = format!("{}/{}", img.os, img.architecture);
    if let Some(os) = &p.os {
        platform.push_str(&format!(", {os}"));
    }
    row(&mut out, "platform", platform);
    if !img.shell {
        row(&mut out, "shell", "no /bin/sh");
    } else {
        let python = match (&p.python, &p.python3) {
            (Some(py), _) => py.clone(),
            (None, Some(py3)) => format!("not on PATH (python3 is {py3})"),
            (None, None) => "not on PATH (nor python3)".into(),
        };
        row(&mut out, "python", python);
        if p.executable.is_some() {
            environment(&mut out, p);
            row(&mut out, "pip", p.pip.as_deref().unwrap_or("not available"));
            row(
                &mut out,
                "venv",
                if p.venv == Some(true) {
                    "available"
                } else {
                    "missing (no venv/ensurepip module)"
                },
            );
        }
        let boot = match p.boot.as_deref() {
            Some("executable") => BOOT.to_string(),
            Some("not-executable") => format!("{BOOT} (not executable)"),
            _ => "missing".into(),
        };
        row(&mut out, "boot", boot);
    }
    row(
        &mut out,
        "entrypoint",
        serde_json::to_string(&img.entrypoint).unwrap_or_default(),
    );
    out.push_str(&format!(
        "  {DEFAULT_ENV_VAR}={}\n",
        match img.default_environment.as_deref() {
            Some(v) if !v.is_empty() => v.to_string(),
            _ => "(unset: the boot creates a venv for each worker)".into(),
        }
    ));
    if let Some(l) = &r.launch {
        out.push_str(&format!("launch       {}\n", l.python.display()));
        environment(&mut out, &l.probe);
    }
    for n in &r.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    if r.findings.is_empty() {
        out.push_str("compatible: no findings\n");
    } else {
        out.push_str(&format!("findings ({})\n", r.findings.len()));
        for f in &r.findings {
            out.push_str(&format!(
                "  {}: {}\n    fix: {}\n",
                f.check, f.message, f.fix
            ));
        }
        out.push_str(&format!(
            "not compatible: {} finding(s)\n",
            r.findings.len()
        ));
    }
    out
}
