//! Reading a Beam staging context. (stub: implemented on branch `stage`)
use std::path::Path;

use super::StagedSet;
use crate::error::Result;

pub fn read(_dir: &Path) -> Result<StagedSet> {
    todo!("stage::context::read")
}
