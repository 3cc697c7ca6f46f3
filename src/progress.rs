//! Progress from the library to whoever runs it. The library only calls this
//! trait; the binary decides what reaches the terminal (and only stderr).

use crate::plan::LayerName;

pub trait Reporter: Send + Sync {
    /// A step of the build ("creating the setup container", "layer hit", …).
    fn step(&self, message: &str);
    /// One line the setup program printed inside the container.
    fn output(&self, layer: LayerName, line: &str);
}
