//! `peftspace train`: fine-tune one design or a single-strategy baseline on the experiment's tasks.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use peftspace_core::data::glue_task;
use peftspace_core::design::StrategyCodes;
use peftspace_core::experiment::Experiment;
use peftspace_core::registry::registries;
use peftspace_core::resolve::ModelNeeds;
use peftspace_core::saved::{SavedBackbone, SavedDesign, TaskSource};
use peftspace_core::spec::{ExperimentSpec, TaskSpec};
use peftspace_core::train::executor::{TrainingExecutor, Watch};
use peftspace_core::train::{EpochReport, TrainingReport, TrialExtras};
use peftspace_core::trial::{TrialSpec, FULL_FINE_TUNING};

use super::{Exit, Global};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The experiment file (RON): backbone, tasks, budget, strategies and training settings.
    pub experiment: PathBuf,
    /// A design in the text form `peftspace sample` prints.
    #[arg(long, conflicts_with_all = ["baseline", "adapter"])]
    pub design: Option<String>,
    /// One strategy in every layer at the experiment's budget (`adapter`, `prefix`, `lora`, `bitfit`, or any
    /// registered strategy), or `full`: full fine-tuning, every backbone weight trainable (at
    /// `training.full_learning_rate`), loaded afresh for each task.
    #[arg(long, conflicts_with = "adapter")]
    pub baseline: Option<String>,
    /// Train the design of this folder (a PEFT LoRA adapter, or a design `train --save` wrote), starting from its
    /// trained values (its head too when it fits the task).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Train only this task (an id from the experiment's `tasks`).
    #[arg(long)]
    pub task: Option<String>,
    /// Training seed. Default: the experiment's first seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Epochs. Default: the experiment's `training.epochs`.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Training examples per task (seeded subsample). Default: the task's `max_train`.
    #[arg(long)]
    pub max_train: Option<usize>,
    /// Evaluation examples per task (seeded subsample). Default: the task's `max_eval`.
    #[arg(long)]
    pub max_eval: Option<usize>,
    /// Write one CSV row per task here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Save the trained design here (`docs/SAVED_DESIGNS.md`): DIR itself for one task, DIR/<task> for several.
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Let --save replace a folder that holds another saved design (or other files).
    #[arg(long, requires = "save")]
    pub force: bool,
}

pub fn run(args: Args, global: &Global) -> Result<(), Exit> {
    if args.design.is_none() && args.baseline.is_none() && args.adapter.is_none() {
        return Err(Exit::usage(anyhow!(
            "say what to train: --design TEXT (a design as `peftspace sample` prints it), --baseline NAME (one \
             strategy in every layer, or `full`) or --adapter DIR (a saved design or PEFT adapter)"
        )));
    }
    let exp = super::validate::load_experiment(&args.experiment, global)?;
    let mut spec = exp.spec.clone();
    if let Some(epochs) = args.epochs {
        spec.training.epochs = epochs;
    }
    let seed = args
        .seed
        .or_else(|| spec.seeds.first().copied())
        .unwrap_or(1);
    let tasks = selected_tasks(&spec, &args).map_err(Exit::usage)?;
    // Bad task files are the user's to fix (exit 2), found before the model is loaded.
    exp.check_tasks_data(&tasks, "tasks").map_err(Exit::usage)?;

    // The device first: a wrong one is refused before anything is downloaded.
    let (choice, device) = super::device(global)?;
    let model = super::model_folder(global, &exp, ModelNeeds::Everything)?;
    let hub_id = match global.model {
        Some(_) => None,
        None => exp.spec.backbone.hub_id.clone(),
    };
    let saved_backbone = match &args.save {
        Some(_) if args.baseline.as_deref() == Some(FULL_FINE_TUNING) => {
            return Err(Exit::usage(anyhow!(
                "--save keeps a design's variables; full fine-tuning changes the backbone itself, which is not saved"
            )))
        }
        Some(_) => Some(
            SavedBackbone::of(&model, hub_id.as_deref()).map_err(Exit::library)?,
        ),
        None => None,
    };
    let data_dir = super::glue_data_dir(global, &exp, &tasks)?;
    eprintln!("device: {choice}");
    // `train` subsamples a task with its training seed, as it always has.
    let adapter = match &args.adapter {
        Some(dir) => Some(super::adapter::read(dir, &model, &device)?),
        None => None,
    };
    let executor = TrainingExecutor::new(&exp, model, data_dir, device)
        .map_err(Exit::library)?
        .with_data_seed(seed);
    let design = match (&args.design, args.baseline.as_deref()) {
        _ if adapter.is_some() => {
            let from = args.adapter.as_deref().unwrap_or(Path::new("")).display();
            adapter
                .as_ref()
                .and_then(|a| a.design.manifest.design.clone())
                .unwrap_or_else(|| format!("adapter {from}"))
        }
        (Some(text), _) => {
            check_design_strategies(text, &exp)?;
            text.clone()
        }
        (None, Some(FULL_FINE_TUNING)) => FULL_FINE_TUNING.to_string(),
        (None, Some(name)) => {
            let design = executor.baseline(name).map_err(Exit::usage)?;
            design
                .to_text(&StrategyCodes::from_registries(&registries()?))
                .map_err(Exit::usage)?
        }
        (None, None) => {
            return Err(Exit::usage(anyhow!(
                "say what to train: --design TEXT (a design as `peftspace sample` prints it), --baseline NAME \
                 (one strategy in every layer, or `full`) or --adapter DIR (a saved design or PEFT adapter)"
            )))
        }
    };
    if let (Some(dir), Some(backbone)) = (&args.save, &saved_backbone) {
        // Before any training: a folder holding another design is refused now, not after the work is done.
        let recorded = match &adapter {
            Some(a) => a.design.manifest.design.clone(),
            None => Some(design.clone()),
        };
        for task in &tasks {
            let dir = save_dir(dir, &task.id, tasks.len());
            SavedDesign::check_overwrite(
                &dir,
                recorded.as_deref(),
                &task.id,
                &backbone.weights_sha256,
                args.force,
            )
            .map_err(Exit::library)?;
        }
    }
    let num_params = executor.info().num_params;
    let full = design == FULL_FINE_TUNING;
    if let Some(a) = &adapter {
        let layers: Vec<String> = a
            .design
            .manifest
            .plan
            .iter()
            .map(|l| l.layer.to_string())
            .collect();
        eprintln!(
            "plan: the adapter's, in layers {}, starting from its values ({})",
            layers.join(","),
            a.source.display()
        );
    } else if full {
        eprintln!(
            "plan: full fine-tuning, all {num_params} backbone weights trainable (learning rate {})",
            spec.training.full_learning_rate
        );
    } else {
        // A given design must meet the budget; a one-strategy baseline may not (BitFit's size is fixed).
        let parsed = executor.design(&design).map_err(Exit::usage)?;
        let plan = executor
            .solve(&parsed, spec.budget, args.design.is_some())
            .map_err(Exit::usage)?;
        eprintln!(
            "plan: {} ({} parameters for a target of {}, {:+.2} %)",
            plan.sizes_text(|n| executor.code(n)),
            plan.achieved,
            plan.target,
            100.0 * plan.relative_error()
        );
        if plan.layer_assignments().is_empty() {
            eprintln!("note: the design tunes no layer; only the task head trains");
        }
    }

    let mut rows = Vec::new();
    for task_spec in &tasks {
        let task = executor.task(task_spec).map_err(Exit::library)?;
        eprintln!(
            "{}: {} training / {} evaluation examples, seed {seed}",
            task.id,
            task.train.len(),
            task.eval.len()
        );
        let print_epoch = |r: &EpochReport| {
            let metrics: Vec<String> = r
                .metrics
                .values
                .iter()
                .map(|(k, v)| format!("{k} {v:.4}"))
                .collect();
            eprintln!(
                "  epoch {}: train loss {:.4}, dev {} (primary {:.4}), {:.0} s",
                r.epoch,
                r.train_loss,
                metrics.join(", "),
                r.metrics.primary,
                r.seconds
            );
        };
        let strategies = match &adapter {
            Some(a) => a.design.strategy_specs().map_err(Exit::usage)?,
            None => spec.strategies.clone(),
        };
        let trial = TrialSpec::unstored(
            &design,
            task_spec,
            seed,
            &spec.training,
            spec.budget,
            &strategies,
        );
        // The adapter's head starts the task's head only when it has the task's number of outputs.
        let initial = adapter.as_ref().map(|a| {
            let mut values = a.design.tensors.clone();
            let fits = values
                .get("head.weight")
                .is_some_and(|w| w.dims().first() == Some(&task.kind.outputs()));
            if !fits {
                values.retain(|name, _| !name.starts_with("head."));
            }
            values
        });
        let adapter_plan = adapter.as_ref().map(|a| a.design.plan());
        let (trained, plan) = executor.train_with(
            &trial,
            adapter_plan.as_deref(),
            TrialExtras {
                initial: initial.as_ref(),
                keep_values: args.save.is_some(),
            },
            Watch {
                progress: !args.quiet,
                on_epoch: Some(&print_epoch),
            },
        )?;
        if let (Some(dir), Some(backbone)) = (&args.save, &saved_backbone) {
            let dir = save_dir(dir, &task.id, tasks.len());
            let Some(tensors) = trained.values.clone() else {
                return Err(Exit::from(anyhow!(
                    "{}: no epoch finished ({}), so there is no trained design to save",
                    task.id,
                    trained.report.status
                )));
            };
            let design = match &adapter {
                Some(a) => a.design.manifest.design.clone(),
                None => Some(design.clone()),
            };
            let mut saved = SavedDesign::from_trained(
                &trial,
                &task,
                &plan,
                &trained.report,
                tensors,
                design,
                backbone.clone(),
            )
            .map_err(Exit::library)?;
            let (spec_dir, data_dir) = executor.data_location();
            saved.manifest.task.source = Some(TaskSource::new(&trial.task, spec_dir, data_dir));
            saved.save(&dir).map_err(Exit::library)?;
            eprintln!("saved the trained design to {}", dir.display());
        }
        let report = trained.report;
        if rows.is_empty() {
            let share = 100.0 * report.trainable_params as f64 / num_params as f64;
            let of_what = if full {
                "all weights".to_string()
            } else {
                format!(
                    "{share:.3} % of {num_params}; the budget is {} %",
                    spec.budget * 100.0
                )
            };
            eprintln!(
                "trainable parameters: {} ({of_what}) + task head {}",
                report.trainable_params, report.head_params
            );
        }
        println!(
            "{}: {} = {:.4} ({}, {:.0} s){}",
            task.id,
            task.evaluator,
            report.metrics.primary,
            report.status,
            report.seconds,
            reference_note(&report, task.kind.reference_name())
        );
        rows.push((task.id.clone(), report));
    }
    if let Some(out) = &args.out {
        write_csv(out, &rows)?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

/// `; majority class 0.5092`, and `: did not learn` when the score does not beat it.
fn reference_note(report: &TrainingReport, name: &str) -> String {
    let Some(reference) = &report.reference else {
        return String::new();
    };
    let verdict = match report.learned() {
        Some(false) => format!(": did not learn (the score does not beat the {name}'s)"),
        _ => String::new(),
    };
    format!("; {name} {:.4}{verdict}", reference.primary)
}

fn selected_tasks(spec: &ExperimentSpec, args: &Args) -> anyhow::Result<Vec<TaskSpec>> {
    let mut tasks: Vec<TaskSpec> = match &args.task {
        Some(id) => {
            let found = spec.tasks.iter().find(|t| &t.id == id).cloned();
            match found {
                Some(t) => vec![t],
                // A GLUE task not listed in the experiment is still fine to train.
                None if glue_task(id).is_ok() => vec![TaskSpec {
                    id: id.clone(),
                    max_train: None,
                    max_eval: None,
                    custom: None,
                    generation: None,
                }],
                None => {
                    let known: Vec<&str> = spec.tasks.iter().map(|t| t.id.as_str()).collect();
                    return Err(anyhow!(
                        "--task {id}: not a GLUE task nor one of the experiment's tasks ({})",
                        known.join(", ")
                    ));
                }
            }
        }
        None => spec.tasks.clone(),
    };
    if tasks.is_empty() {
        return Err(anyhow!(
            "the experiment lists no tasks; add `tasks: [(id: \"sst2\")]` or pass --task"
        ));
    }
    for t in &mut tasks {
        if args.max_train.is_some() {
            t.max_train = args.max_train;
        }
        if args.max_eval.is_some() {
            t.max_eval = args.max_eval;
        }
    }
    Ok(tasks)
}

/// `task, <metric columns…>, primary, trainable_params, head_params, seconds, status, reference, learned`; metric
/// columns are the union over tasks; scores are fractions.
/// `train --design` trains what `sample --design` accepts: only the experiment's strategies, with its options (a
/// design naming another one would train it with defaults the experiment never chose).
fn check_design_strategies(text: &str, exp: &Experiment) -> Result<(), Exit> {
    let codes = StrategyCodes::from_registries(&registries()?);
    let design = peftspace_core::design::Design::parse(text, &codes).map_err(Exit::usage)?;
    let listed: Vec<&str> = exp
        .spec
        .strategies
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    if let Some(unknown) = design
        .strategies
        .iter()
        .flatten()
        .find(|name| !listed.contains(&name.as_str()))
    {
        return Err(Exit::usage(anyhow!(
            "--design uses `{unknown}`, which is not one of the experiment's strategies ({}); add it to \
             `strategies` in {}",
            listed.join(", "),
            exp.file.display()
        )));
    }
    Ok(())
}

/// Where `--save DIR` puts a task's design: DIR itself for one task, DIR/<task> for several.
fn save_dir(dir: &Path, task: &str, tasks: usize) -> PathBuf {
    if tasks > 1 {
        dir.join(task)
    } else {
        dir.to_path_buf()
    }
}

fn write_csv(path: &Path, rows: &[(String, TrainingReport)]) -> anyhow::Result<()> {
    let metrics: BTreeSet<&String> = rows
        .iter()
        .flat_map(|(_, o)| o.metrics.values.keys())
        .collect();
    // Built in memory and written atomically (temporary, fsync, rename): a crash never leaves half a table.
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["task".to_string()];
    header.extend(metrics.iter().map(|m| m.to_string()));
    header.extend(
        [
            "primary",
            "trainable_params",
            "head_params",
            "seconds",
            "status",
            "reference",
            "learned",
        ]
        .map(String::from),
    );
    w.write_record(&header)?;
    for (task, o) in rows {
        let mut record = vec![task.clone()];
        record.extend(metrics.iter().map(|m| {
            o.metrics
                .values
                .get(*m)
                .map(|v| format!("{v:.6}"))
                .unwrap_or_default()
        }));
        record.push(format!("{:.6}", o.metrics.primary));
        record.push(o.trainable_params.to_string());
        record.push(o.head_params.to_string());
        record.push(format!("{:.1}", o.seconds));
        record.push(o.status.label().to_string());
        record.push(
            o.reference
                .as_ref()
                .map_or(String::new(), |r| format!("{:.6}", r.primary)),
        );
        record.push(o.learned().map_or(String::new(), |l| l.to_string()));
        w.write_record(&record)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| anyhow::anyhow!("building {}: {e}", path.display()))?;
    peftspace_core::store::write_bytes_atomically(path, &bytes)?;
    Ok(())
}
