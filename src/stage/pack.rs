//! Deterministic packing of a project directory. (stub: implemented on branch `stage`)
use std::path::Path;

use crate::error::Result;

pub fn pack_project(_project_dir: &Path, _out: &Path) -> Result<()> {
    todo!("stage::pack::pack_project")
}
