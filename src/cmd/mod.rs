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
    // Filled in by the dynamic plugin loader.
    let _ = &global.plugins;
    Ok(())
}
