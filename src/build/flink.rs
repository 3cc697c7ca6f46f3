//! What differs between a Beam build and a PyFlink build, asked of the
//! [`SetupMode`] in one place: where the artifacts go, what the setup runs
//! (the boot, or `flink-setup.sh` as the `run_setup` step), the paths the
//! setup container must have, the layer image's environment and default
//! entrypoint, how a failure is named, and the report's `flink` object.

use crate::plan::{keys::FLINK_SETUP_SCRIPT, LayerName, ARTIFACTS_DIR, BEAM_DIR, BOOT};
use crate::report::FlinkReport;
use crate::stage::flink::{self, FlinkSetup, ARCHIVES_DIR, FILES_DIR};
use crate::stage::SetupMode;

/// The directory the upload's `artifacts/` goes into (it must exist).
pub fn upload_dir(mode: &SetupMode) -> &'static str {
    match mode {
        SetupMode::Beam => BEAM_DIR,
        SetupMode::Flink(_) => flink::UPLOAD_DIR,
    }
}

/// Where the staged files are in the setup container.
pub fn artifacts_dir(mode: &SetupMode) -> &'static str {
    match mode {
        SetupMode::Beam => ARTIFACTS_DIR,
        SetupMode::Flink(_) => flink::ARTIFACTS_DIR,
    }
}

/// Paths the setup container must have before anything is uploaded.
pub fn required_paths(mode: &SetupMode) -> &'static [&'static str] {
    match mode {
        SetupMode::Beam => &[BOOT, "/bin/sh"],
        SetupMode::Flink(_) => &["/bin/sh"],
    }
}

/// The setup step as a `run_setup` shell function (none for Beam: the
/// script's own default runs the boot), and how messages name it.
pub fn setup_step(mode: &SetupMode) -> (String, String) {
    match mode {
        SetupMode::Beam => (String::new(), format!("{BOOT} --setup_only")),
        SetupMode::Flink(f) => (setup_function(f), "the PyFlink setup".to_string()),
    }
}

/// The Python whose `pip freeze` the image's record holds: the workers'.
pub fn record_python(mode: &SetupMode) -> &str {
    match mode {
        SetupMode::Beam => "python",
        SetupMode::Flink(f) => f.installer_python(),
    }
}

/// `flink-setup.sh` as a subshell function, its variables set first.
pub fn setup_function(f: &FlinkSetup) -> String {
    format!(
        "run_setup() (\nFLINK_ARCHIVES={}; FLINK_FILES={}; FLINK_PYTHON={}; FLINK_CACHE={}\n{FLINK_SETUP_SCRIPT}\n)",
        sh_quote(ARCHIVES_DIR),
        sh_quote(FILES_DIR),
        sh_quote(f.installer_python()),
        u8::from(f.requirements_cache),
    )
}

/// `'…'` for sh, with embedded quotes closed and escaped.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The layer image's config for `mode`: `config` (from `image::layer_config`,
/// whose fallback entrypoint is Beam's boot) with the PyFlink variables set
/// and, when `base` (the config the layer keeps) has neither entrypoint nor
/// cmd, `/bin/sh` instead of the boot.
pub fn adjust_config(
    mode: &SetupMode,
    layer: LayerName,
    base: &serde_json::Value,
    config: &mut serde_json::Value,
) {
    let Some(f) = mode.flink() else {
        return;
    };
    let Some(obj) = config.as_object_mut() else {
        return;
    };
    let base_env: Vec<String> = obj
        .get("Env")
        .and_then(serde_json::Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let ours = f.env(layer == LayerName::Application, &base_env);
    let mut env: Vec<String> = base_env
        .into_iter()
        .filter(|e| {
            let name = e.split('=').next().unwrap_or(e);
            !ours.iter().any(|(k, _)| k == name)
        })
        .collect();
    env.extend(ours.iter().map(|(k, v)| format!("{k}={v}")));
    obj.insert("Env".into(), serde_json::json!(env));
    let empty = |field: &str| {
        base.get(field)
            .and_then(serde_json::Value::as_array)
            .is_none_or(|a| a.is_empty())
    };
    if empty("Entrypoint") && empty("Cmd") {
        obj.insert("Entrypoint".into(), serde_json::json!(["/bin/sh"]));
    }
}

/// Names the step that failed from the setup's last lines.
pub fn failing_step(mode: &SetupMode, tail: &[String]) -> String {
    let Some(f) = mode.flink() else {
        return beam_failing_step(tail);
    };
    let line = tail
        .iter()
        .rev()
        .find(|l| l.starts_with("prebuilder-flink:") && l.contains("failed"));
    match line {
        Some(l) if l.contains("requirements") => format!(
            "installing --py-requirements {} failed",
            f.requirements_input
                .as_deref()
                .unwrap_or("requirements.txt")
        ),
        Some(l) => l.trim_start_matches("prebuilder-flink: ").to_string(),
        None => "the PyFlink setup failed".to_string(),
    }
}

/// Names the step that failed from the last lines of the setup's output: the
/// boot's own "failed to install …" line when there is one.
fn beam_failing_step(tail: &[String]) -> String {
    // The setup script's own refusal (setup.sh), else the boot's pip failure.
    let refused = tail
        .iter()
        .rev()
        .find_map(|l| l.trim().strip_prefix("prebuilder: refused: "));
    if let Some(l) = refused {
        return l.to_string();
    }
    tail.iter()
        .rev()
        .find(|l| l.to_ascii_lowercase().contains("failed to install"))
        .map(|l| l.trim().to_string())
        .unwrap_or_else(|| format!("{BOOT} --setup_only failed"))
}

/// The report's `flink` object: the baked paths.
pub fn report(f: &FlinkSetup) -> FlinkReport {
    FlinkReport {
        python_executable: f.executable.clone(),
        pythonpath: f.pythonpath(),
        archives: f.archives.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn setup(exe: &str) -> FlinkSetup {
        FlinkSetup {
            executable: Some(exe.into()),
            client_executable: None,
            files_pythonpath: vec!["/opt/flink/python-files/0".into()],
            extra_pythonpath: vec![],
            archives: BTreeMap::new(),
            requirements_cache: true,
            requirements_input: Some("req.txt#wheels".into()),
        }
    }

    #[test]
    fn setup_function_quotes_the_python() {
        let f = setup_function(&setup("/x/it's/python"));
        assert!(f.contains("FLINK_PYTHON='/x/it'\\''s/python'"), "{f}");
        assert!(f.contains("FLINK_CACHE=1"), "{f}");
        assert!(f.starts_with("run_setup() ("));
        assert!(f.contains(FLINK_SETUP_SCRIPT));
    }

    #[test]
    fn config_gets_the_variables_and_no_boot_entrypoint() {
        let mode = SetupMode::Flink(setup("/opt/flink/python-archives/venv/bin/python"));
        let base = serde_json::json!({"Env": ["PATH=/usr/bin"]});
        let mut c = serde_json::json!({
            "Env": ["PATH=/usr/bin", "PYTHONPATH=/base", "PYFLINK_PYTHON=old"],
            "Entrypoint": [BOOT],
        });
        adjust_config(&mode, LayerName::Application, &base, &mut c);
        let env: Vec<&str> = c["Env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            env,
            [
                "PATH=/usr/bin",
                "PYFLINK_PYTHON=/opt/flink/python-archives/venv/bin/python",
                "PYFLINK_CLIENT_EXECUTABLE=/opt/flink/python-archives/venv/bin/python",
                "PYTHONPATH=/opt/flink/python-files/0:/base",
            ]
        );
        assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/sh"]));
        // A base's own entrypoint stays; the dependencies layer gets no files' path.
        let base = serde_json::json!({"Cmd": ["python3"]});
        let mut d = serde_json::json!({"Cmd": ["python3"], "Entrypoint": []});
        adjust_config(&mode, LayerName::Dependencies, &base, &mut d);
        assert_eq!(d["Entrypoint"], serde_json::json!([]));
        assert!(!d["Env"].to_string().contains("PYTHONPATH"), "{d}");
        // Beam: untouched.
        let mut b = serde_json::json!({"Env": ["A=1"], "Entrypoint": [BOOT]});
        let before = b.clone();
        adjust_config(&SetupMode::Beam, LayerName::Application, &base, &mut b);
        assert_eq!(b, before);
    }

    #[test]
    fn failing_step_names_the_requirements_input() {
        let mode = SetupMode::Flink(setup("python3"));
        let tail = vec![
            "ERROR: No matching distribution found for nope==1".to_string(),
            "prebuilder-flink: installing the requirements failed".to_string(),
            "prebuilder: the PyFlink setup exited with status 1".to_string(),
        ];
        assert_eq!(
            failing_step(&mode, &tail),
            "installing --py-requirements req.txt#wheels failed"
        );
        assert_eq!(failing_step(&mode, &[]), "the PyFlink setup failed");
    }

    #[test]
    fn beam_keeps_its_boot() {
        assert_eq!(upload_dir(&SetupMode::Beam), BEAM_DIR);
        assert_eq!(required_paths(&SetupMode::Beam), [BOOT, "/bin/sh"]);
        // No function: setup.sh's own default runs the boot.
        assert_eq!(
            setup_step(&SetupMode::Beam),
            (String::new(), format!("{BOOT} --setup_only"))
        );
        let flink = SetupMode::Flink(setup("python3"));
        assert_eq!(upload_dir(&flink), "/tmp");
        assert_eq!(required_paths(&flink), ["/bin/sh"]);
    }

    #[test]
    fn failing_step_prefers_the_boots_line() {
        let tail = vec![
            "ERROR: No matching distribution found for tabulate==9.9".to_string(),
            "boot: failed to install requirements.txt: pip exited with status 1".to_string(),
            "prebuilder: /opt/apache/beam/boot --setup_only exited with status 1".to_string(),
        ];
        assert_eq!(
            beam_failing_step(&tail),
            "boot: failed to install requirements.txt: pip exited with status 1"
        );
        assert_eq!(
            beam_failing_step(&[]),
            "/opt/apache/beam/boot --setup_only failed"
        );
    }
}
