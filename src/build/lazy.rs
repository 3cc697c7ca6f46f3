//! The registry, asked for only when a build needs it: making a [`Remote`]
//! may run a credential helper process, which a relaunch that finds every
//! layer on the engine and pushes nothing must never do.

use super::Remote;
use crate::error::Result;
use crate::registry::Manifests;

/// A [`Remote`] made on first use (at most once), or none.
pub struct LazyRemote<R, F> {
    make: Option<F>,
    made: Option<Remote<R>>,
}

impl<R: Manifests, F: FnOnce() -> Result<Option<Remote<R>>>> LazyRemote<R, F> {
    pub fn new(make: F) -> LazyRemote<R, F> {
        LazyRemote {
            make: Some(make),
            made: None,
        }
    }

    /// The remote, made now if it was not; `None` when the build has no
    /// registry (no `--push`, and `--repository` names none).
    pub fn get(&mut self) -> Result<Option<&Remote<R>>> {
        if let Some(make) = self.make.take() {
            self.made = make()?;
        }
        Ok(self.made.as_ref())
    }

    /// The remote if it was made already; never makes it.
    pub fn made(&self) -> Option<&Remote<R>> {
        self.made.as_ref()
    }
}
