//! `run --executor slurm`: the options of the Slurm executor and the pool built from them
//! (`peftspace_core::scale_out::slurm`). The trials themselves run as `peftspace trial TASK_FILE`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::anyhow;
use peftspace_core::plugin_loader;
use peftspace_core::scale_out::slurm::{SlurmOptions, TaskContext};
use peftspace_core::scale_out::TaskPlugin;
use peftspace_core::store::sha256_file;

use crate::cmd::{Exit, Global};

/// Where trials run.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutorKind {
    /// On this machine: in this process, or in `--jobs` worker processes.
    Local,
    /// As Slurm array jobs submitted from this machine (a login node; the results directory, the experiment, the
    /// model, the data and this program must be on a file system the compute nodes share). See docs/SCALE_OUT.md.
    Slurm,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ExecutorArgs {
    /// Where trials run: `local` or `slurm`.
    #[arg(long, value_enum, default_value_t = ExecutorKind::Local)]
    pub executor: ExecutorKind,
    /// Slurm partition of the array jobs (default: the cluster's default partition).
    #[arg(long)]
    pub partition: Option<String>,
    /// GPUs per array task (`--gres=gpu:G`).
    #[arg(long, default_value_t = 0)]
    pub gpus_per_trial: u32,
    /// Time limit per array task, in Slurm's format (e.g. `0:30:00`).
    #[arg(long)]
    pub time: Option<String>,
    /// At most this many array tasks at once (`--array=…%K`).
    #[arg(long)]
    pub max_parallel: Option<usize>,
    /// A further sbatch argument, passed as it is (repeatable), e.g. `--sbatch-arg=--account=lab`.
    #[arg(long = "sbatch-arg", allow_hyphen_values = true)]
    pub sbatch_args: Vec<String>,
    /// Resubmissions of a trial whose task ended without a result (FAILED, TIMEOUT, CANCELLED, OUT_OF_MEMORY, …)
    /// before it is stored as failed.
    #[arg(long, default_value_t = 2)]
    pub retries: u32,
    /// Trials per array task, run one after another (fewer, longer tasks on busy clusters).
    #[arg(long, default_value_t = 1)]
    pub trials_per_task: usize,
    /// Milliseconds between two looks at the array (`scontrol show job`).
    #[arg(long, default_value_t = 2000)]
    pub poll_ms: u64,
}

impl ExecutorArgs {
    /// Refuses Slurm options without `--executor slurm`, and `--jobs`/`--devices` with it.
    pub fn check(&self, jobs: usize, devices: &[String]) -> Result<(), Exit> {
        let slurm_only = self.partition.is_some()
            || self.gpus_per_trial > 0
            || self.time.is_some()
            || self.max_parallel.is_some()
            || !self.sbatch_args.is_empty();
        match self.executor {
            ExecutorKind::Local if slurm_only => Err(Exit::usage(anyhow!(
                "--partition, --gpus-per-trial, --time, --max-parallel and --sbatch-arg apply to --executor slurm"
            ))),
            ExecutorKind::Slurm if jobs > 1 || !devices.is_empty() => Err(Exit::usage(anyhow!(
                "--jobs and --devices choose local workers; with --executor slurm use --max-parallel and \
                 --gpus-per-trial"
            ))),
            ExecutorKind::Slurm if self.trials_per_task == 0 || self.max_parallel == Some(0) => Err(Exit::usage(
                anyhow!("--trials-per-task and --max-parallel must be at least 1"),
            )),
            _ => Ok(()),
        }
    }

    pub fn options(&self) -> SlurmOptions {
        SlurmOptions {
            partition: self.partition.clone(),
            gpus_per_trial: self.gpus_per_trial,
            time: self.time.clone(),
            max_parallel: self.max_parallel,
            sbatch_args: self.sbatch_args.clone(),
            retries: self.retries,
            trials_per_task: self.trials_per_task,
            poll: Duration::from_millis(self.poll_ms.max(50)),
        }
    }
}

/// What every task needs, from this run's resolved inputs: absolute paths, and the plugins this process loaded
/// with their hashes.
pub fn task_context(
    experiment: &Path,
    model: Option<&Path>,
    data_dir: Option<&Path>,
    global: &Global,
) -> Result<TaskContext, Exit> {
    let absolute = |p: &Path| {
        p.canonicalize()
            .map_err(|e| anyhow!("{}: {e}", p.display()))
    };
    let plugins = plugin_loader::loaded_libraries()
        .into_iter()
        .map(|path| {
            Ok(TaskPlugin {
                sha256: sha256_file(&path)?,
                path,
            })
        })
        .collect::<Result<Vec<_>, peftspace_core::Error>>()?;
    Ok(TaskContext {
        experiment: absolute(experiment)?,
        model: model.map(absolute).transpose()?,
        data_dir: data_dir.map(absolute).transpose()?,
        plugins,
        offline: global.offline,
        device: global.device.clone(),
    })
}

/// Asks on the terminal; without one (a batch job, a pipe) the answer is no: the array keeps running.
pub fn confirm_on_terminal(question: &str) -> bool {
    if !std::io::stdin().is_terminal() {
        return false;
    }
    eprint!("\n{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).is_ok()
        && matches!(answer.trim(), "y" | "Y" | "yes")
}
