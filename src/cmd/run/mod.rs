//! `peftspace run EXP.ron [--out DIR] [--jobs N]`: the whole experiment, resumable, with progress bars.
//!
//! With `--jobs 1` trials run in this process; with more, the command starts N copies of itself in a hidden
//! worker mode (`peftspace run EXP.ron --worker`), each with its own thread count, sends them one population at a
//! time as a JSON line and reads each trial's outcome back. Only this process appends to the store, so it stays
//! consistent. `--population K` (`PEFTSPACE_POPULATION`) trains up to K trials that may share a training loop
//! together (`refine::populations`); the Slurm executor trains every trial alone.
//!
//! Ctrl-C once: no new trial starts, the trials in flight stop after their current training step and are not
//! stored; exit code 130. Ctrl-C twice: the workers' process group is killed at once. Either way rerunning the same
//! command resumes, and no worker outlives the run (see `signals`).
//!
//! Development mode: with `PEFTSPACE_EXECUTOR=synthetic` the run uses the synthetic design space and executor
//! (fake scores from the design text, no model); `PEFTSPACE_SYNTHETIC_SLEEP_MS` makes each trial take that long
//! and `PEFTSPACE_SYNTHETIC_DIVERGE=TEXT` (`PEFTSPACE_SYNTHETIC_FAIL=TEXT`) makes every design whose text contains
//! TEXT diverge (fail). The integration
//! tests use it.

mod pool;
mod progress;
mod scale_out;
mod signals;

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use anyhow::Context;
use peftspace_core::experiment::Experiment;
use peftspace_core::model::ModelFolder;
use peftspace_core::plugin_loader;
use peftspace_core::refine::{
    self, ExperimentSpace, SearchSpace, SerialPool, SyntheticExecutor, SyntheticSpace, TrialPool,
};
use peftspace_core::registry::registries;
use peftspace_core::resolve::ModelNeeds;
use peftspace_core::saved::SavingExecutor;
use peftspace_core::scale_out::slurm::SlurmPool;
use peftspace_core::scale_out::{results_folder, CollectResults};
use peftspace_core::store::{self, CodeProvenance, ManifestCheck, ResultStore};
use peftspace_core::train::executor::TrainingExecutor;
use peftspace_core::trial::TrialExecutor;

use crate::cmd::{Exit, Global};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The experiment file (RON).
    pub experiment: PathBuf,
    /// Results directory. Default: `results/<experiment name>`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// No progress bars (stage tables and notes are still printed).
    #[arg(long)]
    pub quiet: bool,
    /// Worker processes running trials in parallel. Default: 1 (trials run in this process).
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Compute threads per worker. Default: the available cores divided by --jobs (at least 1).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Continue a results directory although the code that wrote it differs (peftspace version or plugin hashes);
    /// the change is recorded in the manifest's history.
    #[arg(long)]
    pub allow_code_change: bool,
    /// Run again the trials stored as `failed` (diverged trials are results and stay).
    #[arg(long)]
    pub retry_failed: bool,
    /// Devices the workers use, round-robin (`0,1` = cuda:0 and cuda:1; `cpu`, `cuda:N` also accepted; a device
    /// may repeat, e.g. `--jobs 4 --devices 0,0,1,1`); overrides --device. Default: every worker uses --device.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub devices: Vec<String>,
    /// Train up to K designs of a stage together in one population (same task, settings, seed and prefix lengths;
    /// each trial's result is exactly its result alone, the frozen backbone runs once for all K). Default: 1.
    #[arg(long, env = "PEFTSPACE_POPULATION", default_value_t = 1)]
    pub population: usize,
    /// Internal: run trials sent as JSON lines on stdin and answer on stdout.
    #[arg(long, hide = true)]
    pub worker: bool,
    #[command(flatten)]
    pub scale_out: scale_out::ExecutorArgs,
}

/// The trial executor for `experiment` with `global`'s model, data and device (the synthetic one in development
/// mode): what worker processes and `peftspace trial` run trials with.
pub fn executor_for(
    experiment: &Experiment,
    global: &Global,
) -> Result<Box<dyn TrialExecutor>, Exit> {
    let inputs = resolve_inputs(experiment, global, false)?;
    make_executor(experiment, &inputs, global)
}

pub fn run(args: Args, global: &Global) -> Result<(), Exit> {
    let experiment = super::validate::load_experiment(&args.experiment, global)?;
    let spec = experiment.spec.clone();
    if args.jobs == 0 {
        return Err(Exit::usage(anyhow::anyhow!("--jobs must be at least 1")));
    }
    if args.population == 0 {
        return Err(Exit::usage(anyhow::anyhow!(
            "--population (or PEFTSPACE_POPULATION) must be at least 1"
        )));
    }
    if !args.worker && !synthetic_mode() {
        // Bad task files are the user's to fix (exit 2), found before anything is loaded or trained.
        experiment.check_data().map_err(Exit::usage)?;
    }
    args.scale_out.check(args.jobs, &args.devices)?;
    let worker_devices = worker_devices(args.jobs, &args.devices).map_err(Exit::usage)?;
    // With one process and --devices, that process trains on the first device; with workers, the parent trains
    // nothing and stays on the CPU.
    let own_global = match worker_devices.first() {
        Some(device) if args.jobs == 1 => Global {
            device: Some(device.to_string()),
            ..global.clone()
        },
        Some(_) => Global {
            device: Some("cpu".into()),
            ..global.clone()
        },
        None => global.clone(),
    };
    // Resolved once here; workers get the resolved folders, so they never download or resolve differently.
    let inputs = resolve_inputs(&experiment, &own_global, !args.worker)?;
    let executor = make_executor(&experiment, &inputs, &own_global)?;
    if args.worker {
        return pool::serve_trials(executor.as_ref()).map_err(Exit::from);
    }
    let space = make_space(&experiment, &inputs)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("results").join(&spec.name));
    let manifest = refine::manifest(&spec, executor.as_ref())?;
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    // Opening the store takes the directory's lock: a second run on it stops here (exit 2) naming the holder.
    let mut results = ResultStore::open(&out).map_err(Exit::library)?;
    let code = CodeProvenance::new(code_version(), &plugin_loader::loaded_libraries())?;
    if let ManifestCheck::CodeChanged(changes) = results
        .check_manifest(&manifest, &code, args.allow_code_change)
        .map_err(Exit::library)?
    {
        eprintln!(
            "note: continuing with different code (--allow-code-change), recorded in the manifest:\n  {}",
            changes.join("\n  ")
        );
    }
    if args.scale_out.executor != scale_out::ExecutorKind::Slurm {
        if let Some(job) = peftspace_core::scale_out::slurm::array_in_flight(&out)? {
            return Err(Exit::usage(anyhow::anyhow!(
                "a Slurm array ({job}) started by an earlier run of {} may still be training its trials; continue \
                 with --executor slurm to adopt it, or cancel it (scancel {job}) and delete {}",
                out.display(),
                out.join("slurm").join("active.json").display()
            )));
        }
    }
    results.save_provenance(&experiment.source, &code.version)?;
    results.set_retry_failed(args.retry_failed);
    if results.repaired_bytes > 0 {
        eprintln!(
            "note: cut off a torn last line ({} bytes) of {}; that trial runs again",
            results.repaired_bytes,
            out.join(store::TRIALS_FILE).display()
        );
    }
    if !results.is_empty() {
        eprintln!(
            "resuming: {} trials already stored in {}",
            results.len(),
            out.display()
        );
    }
    let stop = signals::install_interrupt_handler();
    // GPU memory per worker, refreshed by the pool after each trial when workers run on CUDA.
    let gpu_memory = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let threads = args.threads.unwrap_or_else(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / args.jobs).max(1)
    });
    let notify = |text: &str| eprintln!("{text}");
    let pool: Box<dyn TrialPool + '_> = if args.scale_out.executor == scale_out::ExecutorKind::Slurm
    {
        let context = scale_out::task_context(
            &args.experiment,
            inputs.model.as_ref().map(|m| m.dir()),
            inputs.data_dir.as_deref(),
            global,
        )?;
        let program = std::env::current_exe()
            .context("finding the peftspace executable the Slurm tasks run")?;
        Box::new(SlurmPool::new(
            args.scale_out.options(),
            context,
            program,
            &out,
            &scale_out::confirm_on_terminal,
            &notify,
        ))
    } else if args.jobs == 1 {
        Box::new(SerialPool {
            executor: executor.as_ref(),
            population: args.population,
        })
    } else {
        let worker_global = super::Global {
            // Workers load exactly the libraries this process loaded (those the experiment file names included,
            // which passed the trust check here).
            plugins: plugin_loader::loaded_libraries(),
            model: inputs.model.as_ref().map(|m| m.dir().to_path_buf()),
            data_dir: inputs.data_dir.clone(),
            device: global.device.clone(),
            ..global.clone()
        };
        let devices: Vec<Option<String>> = (0..args.jobs)
            .map(|i| {
                worker_devices
                    .get(i)
                    .map(|d| d.to_string())
                    .or_else(|| inputs.device.map(|d| d.to_string()))
            })
            .collect();
        Box::new(pool::ProcessPool::start(
            executor.as_ref(),
            args.population,
            &args.experiment,
            &worker_global,
            &devices,
            threads,
            gpu_memory.clone(),
        )?)
    };
    // Results of tasks run elsewhere (`peftspace trial`) are stored before anything is trained again.
    let mut pool: Box<dyn TrialPool + '_> = Box::new(CollectResults {
        inner: pool,
        dir: results_folder(&out),
    });
    let mut progress = progress::Bars::new(gpu_memory, args.quiet);
    let outcome = refine::run_experiment(
        &spec,
        space.as_ref(),
        executor.as_ref(),
        pool.as_mut(),
        &mut results,
        &mut progress,
        stop,
    );
    drop(pool);
    progress.clear();
    // Whatever happened, render what the store holds.
    if out.join(store::PLAN_FILE).exists() {
        let report = peftspace_core::report::write_reports_for(&results)?;
        print!("{}", report.to_terminal());
    }
    match outcome {
        Ok(o) => {
            println!(
                "{} trials run now, {} reused from earlier runs of this experiment",
                o.trials_run, o.trials_reused
            );
            Ok(())
        }
        Err(e) if stop.load(Ordering::SeqCst) => Err(Exit {
            code: 130,
            error: e.into(),
        }),
        Err(e) => Err(e.into()),
    }
}

fn synthetic_mode() -> bool {
    std::env::var("PEFTSPACE_EXECUTOR").is_ok_and(|v| v == "synthetic")
}

/// What a real run trains on: the resolved model folder, GLUE data folder and device (all `None` in development
/// mode, which needs none of them).
struct RunInputs {
    model: Option<ModelFolder>,
    data_dir: Option<PathBuf>,
    device: Option<peftspace_core::device::DeviceChoice>,
    opened: Option<candle_core::Device>,
}

fn resolve_inputs(
    experiment: &Experiment,
    global: &Global,
    announce: bool,
) -> Result<RunInputs, Exit> {
    if synthetic_mode() {
        return Ok(RunInputs {
            model: None,
            data_dir: None,
            device: None,
            opened: None,
        });
    }
    // The device first: a wrong one is refused before anything is downloaded.
    let (choice, device) = super::device(global)?;
    let model = super::model_folder(global, experiment, ModelNeeds::Everything)?;
    let data_dir = super::glue_data_dir(global, experiment, &experiment.spec.tasks)?;
    if announce {
        eprintln!("model: {}; device: {choice}", model.dir().display());
    }
    Ok(RunInputs {
        model: Some(model),
        data_dir,
        device: Some(choice),
        opened: Some(device),
    })
}

/// The device of each worker, round-robin over `--devices` (empty when not given).
fn worker_devices(
    jobs: usize,
    devices: &[String],
) -> Result<Vec<peftspace_core::device::DeviceChoice>, peftspace_core::Error> {
    use peftspace_core::device::DeviceChoice;
    let parsed = devices
        .iter()
        .map(|d| match d.trim().parse::<usize>() {
            Ok(index) => Ok(DeviceChoice::Cuda(index)),
            Err(_) => DeviceChoice::parse(d),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(if parsed.is_empty() {
        parsed
    } else {
        (0..jobs).map(|i| parsed[i % parsed.len()]).collect()
    })
}

/// The trial executor: the synthetic one in development mode (recording the `--device` it was given, without
/// opening it), else the trainer, which writes the trained designs of final runs that ask for it.
fn make_executor(
    experiment: &Experiment,
    inputs: &RunInputs,
    global: &Global,
) -> Result<Box<dyn TrialExecutor>, Exit> {
    match (&inputs.model, &inputs.opened) {
        // Wrapped so that final runs with `final_runs.save` write their trained designs (in workers too).
        (Some(model), Some(device)) => Ok(Box::new(SavingExecutor::new(
            TrainingExecutor::new(
                experiment,
                model.clone(),
                inputs.data_dir.clone(),
                device.clone(),
            )
            .map_err(Exit::library)?,
            experiment.spec.backbone.hub_id.clone(),
        ))),
        _ => Ok(Box::new(SyntheticExecutor {
            device: global.device.clone(),
            ..SyntheticExecutor::from_env().map_err(Exit::library)?
        })),
    }
}

/// The design space: the synthetic one in development mode, else the experiment's (S0 for its backbone).
fn make_space(experiment: &Experiment, inputs: &RunInputs) -> Result<Box<dyn SearchSpace>, Exit> {
    let spec = &experiment.spec;
    let Some(model) = &inputs.model else {
        let names = spec.strategies.iter().map(|s| s.name.clone()).collect();
        return Ok(Box::new(SyntheticSpace::new(
            spec.groups,
            names,
            spec.budget,
        )));
    };
    let reg = registries()?;
    let info = model.describe(&reg).map_err(Exit::library)?;
    Ok(Box::new(
        ExperimentSpace::for_experiment(experiment, info, &reg).map_err(Exit::usage)?,
    ))
}

/// Crate version, plus `git describe` of the checkout the binary was built from (see `build.rs`).
pub fn code_version() -> String {
    let described = env!("PEFTSPACE_GIT_DESCRIBE");
    if described.is_empty() {
        format!("peftspace {}", env!("CARGO_PKG_VERSION"))
    } else {
        format!("peftspace {} (git {described})", env!("CARGO_PKG_VERSION"))
    }
}
