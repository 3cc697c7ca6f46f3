//! Beam's artifacts_info.json. (stub: implemented on branch `stage`)
use std::path::Path;

use crate::error::Result;

pub const FILE_TYPE_URN: &str = "beam:artifact:type:file:v1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    pub path: String,
    pub sha256: String,
}

pub fn encode(_entries: &[ManifestEntry]) -> String {
    todo!("stage::manifest::encode")
}

pub fn decode(_text: &str, _manifest: &Path) -> Result<Vec<ManifestEntry>> {
    todo!("stage::manifest::decode")
}
