//! One module per subcommand; each has `Args` (clap) and `run(args, global)`.

pub mod encode;
pub mod list;
pub mod report;
pub mod run;
pub mod sample;
pub mod train;
pub mod validate;

use crate::{Exit, Global};

/// Loads the `--plugin` libraries before any command looks at the registries.
pub fn load_plugins(global: &Global) -> Result<(), Exit> {
    // A plugin the user named that cannot be loaded is a usage error: the message names the file and the reason.
    peftspace_core::plugin_loader::load_plugins(&global.plugins).map_err(Exit::usage)?;
    Ok(())
}
