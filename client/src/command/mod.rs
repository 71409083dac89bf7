//! One module per subcommand.

pub mod bundles;
pub mod stage;
pub mod submit;
