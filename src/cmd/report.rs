//! `peftspace report DIR`: re-render trials.csv, stages.csv, final.csv and the EDF plots from a results directory.

use std::path::PathBuf;

use super::{Exit, Global};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A results directory written by `peftspace run`.
    pub dir: PathBuf,
}

pub fn run(args: Args, _global: &Global) -> Result<(), Exit> {
    if !args.dir.is_dir() {
        return Err(Exit::usage(anyhow::anyhow!(
            "{}: no such results directory",
            args.dir.display()
        )));
    }
    // While a run holds the directory this is refused (exit 2): the run rewrites the reports when it ends.
    let report = peftspace_core::report::write_reports(&args.dir).map_err(Exit::library)?;
    print!("{}", report.to_terminal());
    Ok(())
}
