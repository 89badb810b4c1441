//! `peftspace validate FILE`: parse and check an experiment file and its custom task files; errors are one line
//! `file:line:col: message` (`file:line: message` in a data file), exit code 2.

use std::path::{Path, PathBuf};

use peftspace_core::experiment::{self, Experiment};
use peftspace_core::registry::registries;

use super::{Exit, Global};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The experiment file (RON).
    pub file: PathBuf,
}

/// Reads and checks an experiment file, loading the plugins it lists first. Any problem is a usage error (exit 2).
pub fn load_experiment(file: &Path, global: &Global) -> Result<Experiment, Exit> {
    let parsed = experiment::parse(file).map_err(Exit::usage)?;
    // Plugins named in the file load like `--plugin` ones; those already given on the command line are skipped.
    let already: Vec<PathBuf> = global
        .plugins
        .iter()
        .filter_map(|p| p.canonicalize().ok())
        .collect();
    let from_file: Vec<PathBuf> = parsed
        .plugin_paths()
        .into_iter()
        .filter(|p| p.canonicalize().map_or(true, |c| !already.contains(&c)))
        .collect();
    if !from_file.is_empty() {
        let file_global = Global {
            plugins: from_file,
            ..global.clone()
        };
        super::load_plugins(&file_global)
            .map_err(|e| Exit::usage(parsed.error_at("plugins", format!("{:#}", e.error))))?;
    }
    let registries = registries().map_err(Exit::from)?;
    parsed.validate(&registries).map_err(Exit::usage)
}

pub fn run(args: Args, global: &Global) -> Result<(), Exit> {
    let exp = load_experiment(&args.file, global)?;
    // Everything that needs no model: custom task files are read and checked as training would read them.
    exp.check_data().map_err(Exit::usage)?;
    let s = &exp.spec;
    println!(
        "{}: ok ({} task(s), {} strateg{}, {} group(s), {} stage(s), budget {} %)",
        args.file.display(),
        s.tasks.len(),
        s.strategies.len(),
        if s.strategies.len() == 1 { "y" } else { "ies" },
        s.groups,
        s.stages.len(),
        s.budget * 100.0
    );
    Ok(())
}
