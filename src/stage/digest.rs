//! Digests of staged files. (stub: implemented on branch `stage`)
use std::path::Path;

use crate::error::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    pub size: u64,
    pub sha256: String,
    pub content_digest: String,
}

pub fn digest_file(_path: &Path) -> Result<FileDigest> {
    todo!("stage::digest::digest_file")
}
