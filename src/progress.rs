//! Progress from the library to whoever runs it. The library only calls this
//! trait; the binary decides what reaches the terminal (and only stderr).

use crate::plan::LayerName;

pub trait Reporter: Send + Sync {
    /// A step of the build ("creating the setup container", "layer hit", …).
    fn step(&self, message: &str);
    /// One line the setup program printed inside the container.
    fn output(&self, layer: LayerName, line: &str);
}

/// Says nothing: for library callers and tests that only want the result.
pub struct Silent;

impl Reporter for Silent {
    fn step(&self, _message: &str) {}
    fn output(&self, _layer: LayerName, _line: &str) {}
}
