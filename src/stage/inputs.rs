//! Staging Beam-style flags. (stub: implemented on branch `stage`)
use super::{Inputs, StagedSet};
use crate::error::Result;

pub fn stage(_inputs: &Inputs) -> Result<StagedSet> {
    todo!("stage::inputs::stage")
}
