//! One module per subcommand.

pub mod build;
pub mod digest;
pub mod gc;
