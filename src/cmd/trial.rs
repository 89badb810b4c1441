//! `peftspace trial TASK_FILE`: runs the trials of one task file (written by `run --executor slurm`, or by any
//! scheduler's own script; see docs/SCALE_OUT.md) and writes each outcome to its result file. Exit code 0 when
//! every result was written, 1 when a trial could not run at all, 2 for an unusable task file.

use std::path::PathBuf;

use peftspace_core::scale_out::TaskFile;

use super::{Exit, Global};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The task file (JSON).
    pub task: PathBuf,
}

pub fn run(args: Args, global: &Global) -> Result<(), Exit> {
    let task = TaskFile::read(&args.task).map_err(Exit::usage)?;
    // The plugins the coordinator loaded, byte for byte: given explicitly, so they count as trusted here.
    task.check_plugins().map_err(Exit::usage)?;
    let task_global = Global {
        model: task.model.clone(),
        data_dir: task.data_dir.clone(),
        plugins: task.plugins.iter().map(|p| p.path.clone()).collect(),
        offline: task.offline || global.offline,
        device: global.device.clone().or_else(|| task.device.clone()),
        ..global.clone()
    };
    super::load_plugins(&task_global)?;
    let experiment = super::validate::load_experiment(&task.experiment, &task_global)?;
    let executor = super::run::executor_for(&experiment, &task_global)?;
    let count = task.run(executor.as_ref()).map_err(Exit::library)?;
    eprintln!(
        "{count} trial(s) run; results in {}",
        task.results.display()
    );
    Ok(())
}
