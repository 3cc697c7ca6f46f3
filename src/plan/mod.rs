//! Cache keys and layers: which artifacts go into which layer, and the
//! content-addressed key of each layer. Pure: no I/O, so every rule is unit-tested.
//!
//! The key rule itself, whole, is in `keys.rs`. Keys chain, so a change to
//! the application layer leaves the dependency layer's key (and image) untouched.

use crate::error::{Error, Result};
use crate::stage::manifest::{self, ManifestEntry};
use crate::stage::{Artifact, Role, StagedSet};

pub mod keys;
pub use keys::{boot_key, layer_key, setup_command, setup_command_for, LAYOUT_VERSION};

/// Where Beam's images keep the boot and where its Dockerfile stages artifacts.
pub const BEAM_DIR: &str = "/opt/apache/beam";
pub const BOOT: &str = "/opt/apache/beam/boot";
pub const ARTIFACTS_DIR: &str = "/opt/apache/beam/artifacts";
/// Image tags carry this many hex digits of the key (128 bits).
pub const TAG_HEX_LEN: usize = 32;
/// Tag prefix of layers below a result: `REPO:layer-<key>`. A result is
/// tagged `REPO:<key>` (and with every `--tag`).
pub const LAYER_TAG_PREFIX: &str = "layer-";
/// Name of the layer `build --boot-from` adds below the others.
pub const BOOT_LAYER: &str = "boot";

/// Layers, least-often-changed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LayerName {
    /// The SDK, requirements.txt and its cache.
    Dependencies,
    /// Extra packages, the pipeline's own package, files to stage.
    Application,
}

impl LayerName {
    pub fn as_str(self) -> &'static str {
        match self {
            LayerName::Dependencies => "dependencies",
            LayerName::Application => "application",
        }
    }
}

impl std::fmt::Display for LayerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// As [`LayerName::as_str`] names it (progress events carry it).
impl serde::Serialize for LayerName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One layer to build (or to find already built).
#[derive(Debug)]
pub struct LayerPlan<'a> {
    pub name: LayerName,
    /// Lowercase hex sha256.
    pub key: String,
    /// The key of the layer below, or the base image id for the first layer.
    pub parent: String,
    /// The artifacts this layer uploads, in manifest order.
    pub artifacts: Vec<&'a Artifact>,
    /// This layer's own `artifacts_info.json`, in Beam's format.
    pub manifest: String,
    /// Labels of the result only (`--label`, OCI), already folded into
    /// `key` by [`crate::labels::apply`]; empty on every other layer.
    pub labels: std::collections::BTreeMap<String, String>,
}

impl LayerPlan<'_> {
    /// The tag this layer's image gets in a repository.
    pub fn tag(&self) -> &str {
        &self.key[..TAG_HEX_LEN]
    }
}

/// All layers of one build, bottom first. The last layer is the result.
#[derive(Debug)]
pub struct Plan<'a> {
    pub base_id: String,
    pub layers: Vec<LayerPlan<'a>>,
}

impl Plan<'_> {
    /// The key of the result: the last layer's key.
    pub fn key(&self) -> &str {
        self.layers.last().map_or("", |l| l.key.as_str())
    }

    pub fn tag(&self) -> &str {
        self.layers.last().map_or("", |l| l.tag())
    }
}

/// Which layer an artifact belongs to, or `None` when the boot ignores it.
///
/// Cache files sit with requirements.txt, which is what reads them; without a
/// requirements file they can only serve the extra packages, so they move up.
fn layer_of(role: Role, has_requirements: bool) -> Option<LayerName> {
    match role {
        Role::Sdk | Role::Requirements | Role::PyArchive => Some(LayerName::Dependencies),
        Role::RequirementsCache if has_requirements => Some(LayerName::Dependencies),
        Role::RequirementsCache
        | Role::ExtraPackagesList
        | Role::ExtraPackage
        | Role::Workflow
        | Role::FileToStage
        | Role::PyFile => Some(LayerName::Application),
        Role::Ignored => None,
    }
}

/// Split a staged set into layers on top of `base_id` and key each layer.
pub fn plan<'a>(set: &'a StagedSet, base_id: &str) -> Result<Plan<'a>> {
    plan_with(set, base_id, keys::setup_command_for(&set.mode))
}

/// [`plan`] with the command that enters every key (the setup's, or direct
/// mode's [`keys::direct_command`]).
pub fn plan_with<'a>(set: &'a StagedSet, base_id: &str, command: Vec<String>) -> Result<Plan<'a>> {
    // Files to stage and cache files alone install nothing: an image built
    // from them would equal its base.
    let installs = set.artifacts.iter().any(|a| {
        matches!(
            a.role,
            Role::Sdk
                | Role::Requirements
                | Role::ExtraPackage
                | Role::Workflow
                | Role::PyArchive
                | Role::PyFile
        )
    });
    if !installs {
        return Err(Error::NothingToInstall {
            what: format!(
                "{} holds no requirements, packages or SDK for the boot to install",
                set.dir.display()
            ),
        });
    }
    let has_requirements = set.with_role(Role::Requirements).next().is_some();
    let mut layers: Vec<LayerPlan<'a>> = Vec::new();
    let mut parent = base_id.to_string();
    for name in [LayerName::Dependencies, LayerName::Application] {
        let artifacts: Vec<&Artifact> = set
            .artifacts
            .iter()
            .filter(|a| layer_of(a.role, has_requirements) == Some(name))
            .collect();
        if artifacts.is_empty() {
            continue;
        }
        let key = layer_key(&parent, name, &command, &artifacts);
        let manifest = manifest::encode(
            &artifacts
                .iter()
                .map(|a| ManifestEntry {
                    path: a.name.clone(),
                    sha256: a.sha256.clone(),
                })
                .collect::<Vec<_>>(),
        );
        layers.push(LayerPlan {
            name,
            key: key.clone(),
            parent: std::mem::replace(&mut parent, key),
            artifacts,
            manifest,
            labels: Default::default(),
        });
    }
    // Not empty: an installing artifact (checked above) always has a layer.
    Ok(Plan {
        base_id: base_id.to_string(),
        layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn art(name: &str, digest: &str, role: Role) -> Artifact {
        Artifact {
            name: name.to_string(),
            path: PathBuf::from("/nonexistent").join(name),
            size: 1,
            sha256: format!("bytes-{digest}"),
            content_digest: digest.to_string(),
            role,
            origin: None,
        }
    }

    fn set(artifacts: Vec<Artifact>) -> StagedSet {
        StagedSet::new(artifacts, PathBuf::from("/ctx"), None)
    }

    fn full() -> Vec<Artifact> {
        vec![
            art("requirements.txt", "r1", Role::Requirements),
            art(
                "six-1.16.0-py2.py3-none-any.whl",
                "w1",
                Role::RequirementsCache,
            ),
            art("extra_packages.txt", "e1", Role::ExtraPackagesList),
            art("mypkg-1.0.tar.gz", "p1", Role::ExtraPackage),
            art("workflow.tar.gz", "wf1", Role::Workflow),
            art("pickled_main_session", "", Role::Ignored),
        ]
    }

    fn keys(artifacts: Vec<Artifact>, base: &str) -> Vec<(LayerName, String)> {
        let s = set(artifacts);
        let p = plan(&s, base).unwrap();
        p.layers.iter().map(|l| (l.name, l.key.clone())).collect()
    }

    #[test]
    fn splits_dependencies_below_application() {
        let s = set(full());
        let p = plan(&s, "sha256:base").unwrap();
        let names: Vec<_> = p.layers.iter().map(|l| l.name).collect();
        assert_eq!(names, [LayerName::Dependencies, LayerName::Application]);
        let deps: Vec<_> = p.layers[0]
            .artifacts
            .iter()
            .map(|a| a.name.as_str())
            .collect();
        assert_eq!(
            deps,
            ["requirements.txt", "six-1.16.0-py2.py3-none-any.whl"]
        );
        let app: Vec<_> = p.layers[1]
            .artifacts
            .iter()
            .map(|a| a.name.as_str())
            .collect();
        assert_eq!(
            app,
            ["extra_packages.txt", "mypkg-1.0.tar.gz", "workflow.tar.gz"]
        );
        assert_eq!(p.layers[0].parent, "sha256:base");
        assert_eq!(p.layers[1].parent, p.layers[0].key);
        assert_eq!(p.key(), p.layers[1].key);
        assert_eq!(p.tag(), &p.layers[1].key[..TAG_HEX_LEN]);
    }

    #[test]
    fn same_content_same_keys() {
        assert_eq!(keys(full(), "sha256:base"), keys(full(), "sha256:base"));
    }

    #[test]
    fn byte_paths_do_not_matter_only_content() {
        let mut moved = full();
        for a in &mut moved {
            a.path = PathBuf::from("/elsewhere").join(&a.name);
            a.sha256 = "other-bytes".into();
        }
        assert_eq!(keys(full(), "b"), keys(moved, "b"));
    }

    #[test]
    fn code_change_keeps_dependency_key() {
        let mut changed = full();
        changed[4].content_digest = "wf2".into();
        let a = keys(full(), "b");
        let b = keys(changed, "b");
        assert_eq!(a[0], b[0]);
        assert_ne!(a[1], b[1]);
    }

    #[test]
    fn requirement_change_changes_every_key() {
        let mut changed = full();
        changed[1].content_digest = "w2".into();
        let a = keys(full(), "b");
        let b = keys(changed, "b");
        assert_ne!(a[0].1, b[0].1);
        assert_ne!(a[1].1, b[1].1, "the application layer chains on its parent");
    }

    #[test]
    fn base_change_changes_every_key() {
        let a = keys(full(), "sha256:one");
        let b = keys(full(), "sha256:two");
        assert_ne!(a[0].1, b[0].1);
        assert_ne!(a[1].1, b[1].1);
    }

    #[test]
    fn ignored_artifacts_do_not_enter_keys() {
        let mut changed = full();
        changed[5].content_digest = "another-session".into();
        changed.push(art(
            "submission_environment_dependencies.txt",
            "x",
            Role::Ignored,
        ));
        assert_eq!(keys(full(), "b"), keys(changed, "b"));
    }

    #[test]
    fn manifest_order_does_not_matter() {
        let mut reordered = full();
        reordered.swap(2, 3);
        reordered.swap(0, 1);
        assert_eq!(keys(full(), "b"), keys(reordered, "b"));
    }

    #[test]
    fn renaming_an_artifact_changes_the_key() {
        let mut renamed = full();
        renamed[1].name = "six-1.16.1-py2.py3-none-any.whl".into();
        assert_ne!(keys(full(), "b")[0], keys(renamed, "b")[0]);
    }

    #[test]
    fn field_boundaries_cannot_collide() {
        let a = vec![art("ab", "c", Role::Requirements)];
        let b = vec![art("a", "bc", Role::Requirements)];
        assert_ne!(keys(a, "x"), keys(b, "x"));
    }

    #[test]
    fn cache_without_requirements_serves_the_application_layer() {
        let s = set(vec![
            art("dep-1.0-py3-none-any.whl", "d", Role::RequirementsCache),
            art("extra_packages.txt", "e", Role::ExtraPackagesList),
            art("mypkg-1.0-py3-none-any.whl", "m", Role::ExtraPackage),
        ]);
        let p = plan(&s, "b").unwrap();
        assert_eq!(p.layers.len(), 1);
        assert_eq!(p.layers[0].name, LayerName::Application);
        assert_eq!(p.layers[0].artifacts.len(), 3);
    }

    #[test]
    fn only_workflow_gives_one_application_layer_on_the_base() {
        let s = set(vec![art("workflow.tar.gz", "w", Role::Workflow)]);
        let p = plan(&s, "sha256:base").unwrap();
        assert_eq!(p.layers.len(), 1);
        assert_eq!(p.layers[0].parent, "sha256:base");
    }

    #[test]
    fn nothing_installable_is_an_error() {
        let s = set(vec![art("pickled_main_session", "", Role::Ignored)]);
        let err = plan(&s, "b").unwrap_err();
        assert!(matches!(err, Error::NothingToInstall { .. }), "{err}");
        assert!(err.to_string().contains("/ctx"));
    }

    #[test]
    fn files_to_stage_alone_install_nothing() {
        let s = set(vec![
            art("data.csv", "d", Role::FileToStage),
            art("dep-1.0-py3-none-any.whl", "w", Role::RequirementsCache),
        ]);
        assert!(matches!(
            plan(&s, "b").unwrap_err(),
            Error::NothingToInstall { .. }
        ));
    }

    #[test]
    fn keys_are_hex_sha256() {
        for (_, k) in keys(full(), "b") {
            assert_eq!(k.len(), 64);
            assert!(k
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        }
    }

    #[test]
    fn setup_command_is_the_boot_in_setup_only_mode() {
        assert_eq!(
            setup_command(),
            [
                "/opt/apache/beam/boot",
                "--setup_only",
                "--artifacts",
                "/opt/apache/beam/artifacts/artifacts_info.json"
            ]
        );
    }
}
