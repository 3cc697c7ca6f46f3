//! One module per subcommand.

pub mod build;
pub mod check;
pub mod diff;
pub mod digest;
pub mod gc;
pub mod inspect;
pub mod sbom;
pub mod template;
pub mod verify;
