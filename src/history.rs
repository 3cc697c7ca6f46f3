//! The `history` of the images prebuilder writes, so `docker history` says
//! what each layer is: the parent's entries as they were, then one entry per
//! prebuilder layer naming what it installed.

use serde_json::{json, Value};

use crate::image::rfc3339;
use crate::plan::LayerPlan;
use crate::stage::Role;

/// One entry of the engine's history API (`docker history`), newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineEntry {
    /// Seconds since the epoch.
    pub created: i64,
    pub created_by: String,
    pub comment: String,
    pub size: i64,
}

/// The parent's history as image-config entries, oldest first. The API does
/// not say which entries made no layer; an entry of size 0 is taken as one
/// (ENV, LABEL, …): docker only refuses more layer-making entries than
/// layers, never fewer.
pub fn from_engine(newest_first: &[EngineEntry]) -> Vec<Value> {
    newest_first
        .iter()
        .rev()
        .map(|e| {
            let mut v = json!({
                "created": rfc3339(e.created.max(0) as u64),
                "created_by": e.created_by,
            });
            if !e.comment.is_empty() {
                v["comment"] = json!(e.comment);
            }
            if e.size == 0 {
                v["empty_layer"] = json!(true);
            }
            v
        })
        .collect()
}

/// The entry of one prebuilder layer: what it installed, by staged name
/// (cache files only counted: a requirements cache holds hundreds).
pub fn entry(layer: &LayerPlan<'_>, created: &str) -> Value {
    let mut installed: Vec<&str> = Vec::new();
    let mut cached = 0usize;
    let mut staged = 0usize;
    for a in &layer.artifacts {
        match a.role {
            Role::RequirementsCache => cached += 1,
            Role::FileToStage => staged += 1,
            Role::Ignored => {}
            _ => installed.push(a.name.as_str()),
        }
    }
    let mut what = if installed.is_empty() {
        "nothing".to_string()
    } else {
        installed.join(", ")
    };
    if cached > 0 {
        what.push_str(&format!(" (from {cached} cached file(s))"));
    }
    if staged > 0 {
        what.push_str(&format!("; {staged} file(s) staged"));
    }
    json!({
        "created": created,
        "created_by": format!("prebuilder {} {} layer: installed {what}", env!("CARGO_PKG_VERSION"), layer.name),
        "comment": format!("prebuilder.key={}", layer.key),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(name: &str, role: Role) -> crate::stage::Artifact {
        crate::stage::Artifact::named(name, role)
    }

    #[test]
    fn a_layers_entry_names_what_it_installed() {
        let (req, w1, w2, notes) = (
            artifact("requirements.txt", Role::Requirements),
            artifact("a.whl", Role::RequirementsCache),
            artifact("b.whl", Role::RequirementsCache),
            artifact("notes.txt", Role::FileToStage),
        );
        let layer = LayerPlan {
            name: crate::plan::LayerName::Dependencies,
            key: "k".repeat(64),
            parent: "p".into(),
            artifacts: vec![&req, &w1, &w2, &notes],
            manifest: String::new(),
            labels: Default::default(),
        };
        let e = entry(&layer, "2000-01-01T00:00:00Z");
        assert_eq!(
            e["created_by"],
            format!(
                "prebuilder {} dependencies layer: installed requirements.txt (from 2 cached file(s)); 1 file(s) staged",
                env!("CARGO_PKG_VERSION")
            )
        );
        assert_eq!(e["created"], "2000-01-01T00:00:00Z");
        assert_eq!(e["comment"], format!("prebuilder.key={}", "k".repeat(64)));
    }

    #[test]
    fn parent_history_oldest_first_with_empty_layers_marked() {
        let h = from_engine(&[
            EngineEntry {
                created: 86_400,
                created_by: "ENV A=1".into(),
                comment: String::new(),
                size: 0,
            },
            EngineEntry {
                created: 0,
                created_by: String::new(),
                comment: "Imported from -".into(),
                size: 123,
            },
        ]);
        assert_eq!(h[0]["comment"], "Imported from -");
        assert_eq!(h[0]["created"], "1970-01-01T00:00:00Z");
        assert!(h[0].get("empty_layer").is_none());
        assert_eq!(h[1]["created_by"], "ENV A=1");
        assert_eq!(h[1]["empty_layer"], true);
    }
}
