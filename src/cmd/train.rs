//! `peftspace train`: fine-tune one design or a single-strategy baseline on the experiment's tasks.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use candle_core::Device;
use peftspace_core::backbone::{Backbone, Weights};
use peftspace_core::budget;
use peftspace_core::data::{glue_task, load_task, GlueTask, HfTokenizer};
use peftspace_core::design::{Design, StrategyCodes};
use peftspace_core::experiment::Experiment;
use peftspace_core::refine::FULL_FINE_TUNING;
use peftspace_core::registry::registries;
use peftspace_core::resolve::Resolver;
use peftspace_core::spec::{ExperimentSpec, TaskSpec};
use peftspace_core::train::{run_trial, EpochReport, LayerAssignment, TrialInput, TrialOutcome};

use crate::{Exit, Global};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The experiment file (RON): backbone, tasks, budget, strategies and training settings.
    pub experiment: PathBuf,
    /// A design in the text form `peftspace sample` prints.
    #[arg(
        long,
        conflicts_with = "baseline",
        required_unless_present = "baseline"
    )]
    pub design: Option<String>,
    /// One strategy in every layer at the experiment's budget (`adapter`, `prefix`, `lora`, `bitfit`, or any
    /// registered strategy), or `full`: full fine-tuning, every backbone weight trainable (at
    /// `training.full_learning_rate`), loaded afresh for each task.
    #[arg(long)]
    pub baseline: Option<String>,
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
}

pub fn run(args: Args, global: &Global) -> Result<(), Exit> {
    let exp = super::validate::load_experiment(&args.experiment, global)?;
    let spec_dir = exp.base_dir();
    let mut spec = exp.spec.clone();
    if let Some(epochs) = args.epochs {
        spec.training.epochs = epochs;
    }
    let seed = args
        .seed
        .or_else(|| spec.seeds.first().copied())
        .unwrap_or(1);
    let tasks = selected_tasks(&spec, &args).map_err(Exit::usage)?;

    let resolver = Resolver::from_env(global.offline);
    let model = resolver.model(global.model.as_deref(), &spec.backbone, &spec_dir)?;
    let glue: Vec<&GlueTask> = tasks
        .iter()
        .filter(|t| t.custom.is_none())
        .map(|t| glue_task(&t.id))
        .collect::<Result<_, _>>()
        .map_err(Exit::usage)?;
    let data_dir = if glue.is_empty() {
        None
    } else {
        Some(
            resolver
                .data(
                    global.data_dir.as_deref(),
                    spec.data_dir.as_deref(),
                    &spec_dir,
                    &glue,
                )?
                .path,
        )
    };

    let device = Device::cuda_if_available(0)?;
    let full = args.baseline.as_deref() == Some(FULL_FINE_TUNING);
    let weights = if full {
        Weights::Trainable
    } else {
        Weights::Frozen
    };
    let (mut backbone, tokenizer) = load_backbone_with(&model.path, &device, weights)?;
    let plan = build_plan(&args, &exp, backbone.as_ref()).map_err(Exit::usage)?;
    if full {
        eprintln!(
            "plan: full fine-tuning, all {} backbone weights trainable (learning rate {})",
            backbone.info().num_params,
            spec.training.full_learning_rate
        );
    } else if plan.is_empty() {
        eprintln!("note: the design tunes no layer; only the task head trains");
    }

    let mut rows = Vec::new();
    for (index, task_spec) in tasks.iter().enumerate() {
        if full && index > 0 {
            // The previous task's optimiser changed the weights in place: every task starts from the checkpoint.
            backbone = load_model(&model.path, &device, Weights::Trainable)?;
        }
        let task = load_task(task_spec, data_dir.as_deref(), &spec_dir, seed)?;
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
        let outcome = run_trial(&TrialInput {
            backbone: backbone.as_ref(),
            encoder: &tokenizer,
            task: &task,
            plan: &plan,
            strategies: &spec.strategies,
            training: &spec.training,
            seed,
            progress: !args.quiet,
            on_epoch: Some(&print_epoch),
        })?;
        if rows.is_empty() {
            eprintln!(
                "trainable parameters: {} ({} {:.3} % of {}) + task head {}",
                outcome.trainable_params,
                if full { "all weights," } else { "budget" },
                100.0 * outcome.trainable_params as f64 / backbone.info().num_params as f64,
                backbone.info().num_params,
                outcome.head_params
            );
        }
        println!(
            "{}: {} = {:.4} ({}, {:.0} s)",
            task.id, task.evaluator, outcome.metrics.primary, outcome.status, outcome.seconds
        );
        rows.push((task.id.clone(), outcome));
    }
    if let Some(out) = &args.out {
        write_csv(out, &rows)?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
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

/// The frozen backbone from its folder (architecture chosen by `config.json`'s `model_type`) and its tokenizer.
pub fn load_backbone(
    dir: &Path,
    device: &Device,
) -> anyhow::Result<(Box<dyn Backbone>, HfTokenizer)> {
    load_backbone_with(dir, device, Weights::Frozen)
}

/// The backbone alone, frozen or trainable (full fine-tuning: a fresh copy per trial).
pub fn load_model(
    dir: &Path,
    device: &Device,
    weights: Weights,
) -> anyhow::Result<Box<dyn Backbone>> {
    let config = read_model_config(dir)?;
    let model_type = config
        .get("model_type")
        .and_then(|v| v.as_str())
        .ok_or_else(|| anyhow!("{}: no `model_type`", dir.join("config.json").display()))?;
    Ok(registries()?
        .architecture_for(model_type)?
        .load_weights(dir, device, weights)?)
}

/// [`load_backbone`] with frozen or trainable weights.
pub fn load_backbone_with(
    dir: &Path,
    device: &Device,
    weights: Weights,
) -> anyhow::Result<(Box<dyn Backbone>, HfTokenizer)> {
    let backbone = load_model(dir, device, weights)?;
    let pad_id = read_model_config(dir)?
        .get("pad_token_id")
        .and_then(|v| v.as_u64())
        .map(|v| v as u32);
    let tokenizer = HfTokenizer::from_file(&dir.join("tokenizer.json"), pad_id)?;
    Ok((backbone, tokenizer))
}

fn read_model_config(dir: &Path) -> anyhow::Result<serde_json::Value> {
    let config_path = dir.join("config.json");
    serde_json::from_str(
        &std::fs::read_to_string(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?,
    )
    .with_context(|| format!("{} is not JSON", config_path.display()))
}

/// The plan the flags ask for: a design solved at the experiment's budget, or a one-strategy baseline.
fn build_plan(
    args: &Args,
    exp: &Experiment,
    backbone: &dyn Backbone,
) -> anyhow::Result<Vec<LayerAssignment>> {
    let info = backbone.info();
    let registries = registries()?;
    let strategies = exp.strategies(&registries)?;
    let plan = if let Some(text) = &args.design {
        let design = Design::parse(text, &StrategyCodes::from_registries(&registries))?;
        budget::solve(info, &design, &strategies, exp.spec.budget)?
    } else {
        let name = args.baseline.as_deref().unwrap_or_default();
        if name == FULL_FINE_TUNING {
            // No PEFT module: the trainer trains the backbone's own weights.
            return Ok(Vec::new());
        }
        let mut strategies = strategies;
        if !strategies.contains_key(name) {
            strategies.insert(
                name.to_string(),
                registries.strategy(name, &ron::Value::Unit)?,
            );
        }
        // One group over all layers with the one strategy; no tolerance check, because a fixed-size strategy
        // (BitFit) cannot be resized to the budget: the achieved count is printed instead.
        let design = Design {
            group_sizes: vec![info.num_layers()],
            shares: vec![1.0],
            tuned: vec![true],
            strategies: vec![BTreeSet::from([name.to_string()])],
        };
        budget::allocate(info, &design, &strategies, exp.spec.budget)?
    };
    eprintln!(
        "plan: {} ({} parameters for a target of {}, {:+.2} %)",
        plan.sizes_text(|n| registries
            .strategy_entry(n)
            .map(|e| e.code.to_string())
            .unwrap_or_else(|_| n.to_string())),
        plan.achieved,
        plan.target,
        100.0 * plan.relative_error()
    );
    let mut assignments: Vec<LayerAssignment> = Vec::new();
    for (layer, name, size) in plan.assignments() {
        match assignments.last_mut() {
            Some(last) if last.layer == layer => last.strategies.push((name.to_string(), size)),
            _ => assignments.push(LayerAssignment {
                layer,
                strategies: vec![(name.to_string(), size)],
            }),
        }
    }
    Ok(assignments)
}

/// `task, <metric columns…>, primary, trainable_params, seconds, status`; metric columns are the union over tasks.
fn write_csv(path: &Path, rows: &[(String, TrialOutcome)]) -> anyhow::Result<()> {
    let metrics: BTreeSet<&String> = rows
        .iter()
        .flat_map(|(_, o)| o.metrics.values.keys())
        .collect();
    let mut w =
        csv::Writer::from_path(path).with_context(|| format!("creating {}", path.display()))?;
    let mut header = vec!["task".to_string()];
    header.extend(metrics.iter().map(|m| m.to_string()));
    header.extend(
        [
            "primary",
            "trainable_params",
            "head_params",
            "seconds",
            "status",
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
        w.write_record(&record)?;
    }
    w.flush()?;
    Ok(())
}
