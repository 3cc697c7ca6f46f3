//! One module per subcommand.

pub mod base;
pub mod build;
pub mod build_base;
pub mod check;
pub mod diff;
pub mod digest;
pub mod fresh;
pub mod gc;
pub mod inspect;
pub mod template;
