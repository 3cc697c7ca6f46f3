//! The whole cache-key rule, in one file. A key is a sha256 over
//! length-prefixed fields, so no two inputs encode alike:
//!
//! - installing layer: [`LAYOUT_VERSION`], the parent (the base image id, or
//!   the boot layer's key, for the first layer; the previous layer's key
//!   after that), the layer's name, the setup command ([`setup_command`]),
//!   the text of the setup script the container runs ([`SETUP_SCRIPT`]), and
//!   the name and *content digest* of every artifact it installs, sorted by name;
//! - boot layer (`--boot-from`): [`LAYOUT_VERSION`], the base image id, the
//!   layer name, the boot image's id and the directory copied.
//!
//! Because the script's text is hashed, a change to it can never reuse cache
//! entries built by the old one, with or without a version bump.

use sha2::{Digest, Sha256};

use super::{LayerName, ARTIFACTS_DIR, BEAM_DIR, BOOT, BOOT_LAYER};
use crate::stage::flink::{self, ARCHIVES_DIR, FILES_DIR};
use crate::stage::{Artifact, SetupMode, MANIFEST_FILE};

/// Bumped whenever what a key stands for changes (the setup script, the
/// upload layout, the layer split): old cache entries then simply miss.
/// v2: every layer's setup also writes the image's record (`crate::record`).
pub const LAYOUT_VERSION: &str = "prebuilder-layout-v2";
/// The `sh` script every setup container runs around the boot (see
/// `crate::build::setup`): part of every installing layer's key.
pub const SETUP_SCRIPT: &str = include_str!("../build/setup.sh");

/// PyFlink's setup step (see `crate::build::flink`): in the key of every
/// PyFlink layer, through [`setup_command_for`].
pub const FLINK_SETUP_SCRIPT: &str = include_str!("../build/flink-setup.sh");

/// The setup command of a mode, as it enters the key. For PyFlink: the mode,
/// its script, the fixed paths and every value the image's config gets that
/// the staged names do not already say (python files' PYTHONPATH entries
/// follow from their names).
pub fn setup_command_for(mode: &SetupMode) -> Vec<String> {
    let Some(f) = mode.flink() else {
        return setup_command();
    };
    vec![
        "pyflink-setup".to_string(),
        FLINK_SETUP_SCRIPT.to_string(),
        format!("archives={ARCHIVES_DIR}"),
        format!("files={FILES_DIR}"),
        format!("artifacts={}", flink::ARTIFACTS_DIR),
        format!("executable={}", f.executable.as_deref().unwrap_or("")),
        format!("pythonpath={}", f.extra_pythonpath.join(":")),
        format!("cache={}", f.requirements_cache),
    ]
}

/// Direct mode's place of the setup command in its layers' keys: no
/// container runs; `crate::direct` replays the boot and pip. Bumped when
/// what it installs for the same inputs changes. Never equal to the engine's
/// command, so a direct and an engine build of the same inputs are two
/// images.
pub const DIRECT_VERSION: &str = "prebuilder-direct-v1";

pub fn direct_command() -> Vec<String> {
    let mut c = vec![DIRECT_VERSION.to_string()];
    c.extend(setup_command());
    c
}

/// The boot invocation the setup runs, as it enters the key.
pub fn setup_command() -> Vec<String> {
    vec![
        BOOT.to_string(),
        "--setup_only".to_string(),
        "--artifacts".to_string(),
        format!("{ARTIFACTS_DIR}/{MANIFEST_FILE}"),
    ]
}

/// The key of one layer. Artifacts are sorted by staged name so the key does
/// not depend on manifest order (the boot orders installs by role, and the
/// order of extra packages is itself content of `extra_packages.txt`).
pub fn layer_key(
    parent: &str,
    name: LayerName,
    command: &[String],
    artifacts: &[&Artifact],
) -> String {
    let mut sorted: Vec<&&Artifact> = artifacts.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut h = Sha256::new();
    // Every field is length-prefixed so that no two inputs encode alike.
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(LAYOUT_VERSION.as_bytes());
    field(parent.as_bytes());
    field(name.as_str().as_bytes());
    field(&(command.len() as u64).to_le_bytes());
    for arg in command {
        field(arg.as_bytes());
    }
    field(SETUP_SCRIPT.as_bytes());
    field(&(sorted.len() as u64).to_le_bytes());
    for a in sorted {
        field(a.name.as_bytes());
        field(a.content_digest.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The key of the `boot` layer: the base image plus the `/opt/apache/beam` of
/// the boot image. It is the parent of the first installing layer, so a
/// different boot (or none) never shares a dependency layer.
pub fn boot_key(base_id: &str, boot_image_id: &str) -> String {
    let mut h = Sha256::new();
    for field in [LAYOUT_VERSION, base_id, BOOT_LAYER, boot_image_id, BEAM_DIR] {
        h.update((field.len() as u64).to_le_bytes());
        h.update(field.as_bytes());
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod builder_tests {
    use super::*;

    #[test]
    fn direct_keys_name_their_builder() {
        let c = direct_command();
        assert_ne!(c, setup_command());
        assert_eq!(&c[1..], setup_command().as_slice());
        assert_ne!(
            layer_key("sha256:b", LayerName::Dependencies, &c, &[]),
            layer_key("sha256:b", LayerName::Dependencies, &setup_command(), &[])
        );
    }
}

#[cfg(test)]
mod boot_key_tests {
    use super::*;

    #[test]
    fn boot_key_depends_on_base_and_boot_image_only() {
        let k = boot_key("sha256:base", "sha256:sdk");
        assert_eq!(k, boot_key("sha256:base", "sha256:sdk"));
        assert_eq!(k.len(), 64);
        assert_ne!(k, boot_key("sha256:other", "sha256:sdk"));
        assert_ne!(k, boot_key("sha256:base", "sha256:other"));
        assert_ne!(boot_key("ab", "c"), boot_key("a", "bc"));
        // Not the key of any base: layers built on it never collide with layers
        // built on the bare base.
        assert_ne!(k, "sha256:base");
    }
}

#[cfg(test)]
mod script_tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn the_setup_script_text_is_part_of_the_key() {
        let a = Artifact {
            name: "requirements.txt".into(),
            path: PathBuf::from("/x"),
            size: 1,
            sha256: "s".into(),
            content_digest: "c".into(),
            role: crate::stage::Role::Requirements,
            origin: None,
        };
        let key = layer_key("sha256:b", LayerName::Dependencies, &setup_command(), &[&a]);
        // Recompute by hand without the script: the keys differ, so the script counts.
        let mut h = Sha256::new();
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        field(LAYOUT_VERSION.as_bytes());
        field(b"sha256:b");
        field(b"dependencies");
        let command = setup_command();
        field(&(command.len() as u64).to_le_bytes());
        for arg in &command {
            field(arg.as_bytes());
        }
        field(&1u64.to_le_bytes());
        field(b"requirements.txt");
        field(b"c");
        assert_ne!(key, hex::encode(h.finalize()));
        assert!(SETUP_SCRIPT.contains("--setup_only"));
    }
}
