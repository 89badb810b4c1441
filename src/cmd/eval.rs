//! `peftspace eval`: score a saved design (or a PEFT adapter with its head) on a task's evaluation set with the
//! task's evaluator.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use peftspace_core::data::{glue_task, load_task, TaskKind};
use peftspace_core::registry::registries;
use peftspace_core::spec::TaskSpec;

use super::{Exit, Global};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A folder written by `train --save` (or by a run's final runs), or a PEFT adapter folder.
    pub design: PathBuf,
    /// The task to score on: a GLUE task id (its dev set, from --data-dir, PEFTSPACE_DATA or the cache). Default:
    /// the task the design was trained on, read as its experiment defined it (custom tasks included) from the
    /// folder the design records.
    #[arg(long)]
    pub task: Option<String>,
    /// Score a seeded subsample of this many evaluation examples. Default: all.
    #[arg(long)]
    pub max_eval: Option<usize>,
    /// Examples per forward pass. Default: the training run's eval_batch_size.
    #[arg(long)]
    pub batch_size: Option<usize>,
}

/// The task `eval` scores on and the GLUE folder to read it from: `--task` (a GLUE id, or the saved task's own id),
/// else the saved design's own task definition.
fn task_to_score(
    args: &Args,
    saved: &peftspace_core::saved::SavedTask,
    global: &Global,
) -> Result<(TaskSpec, Option<PathBuf>), Exit> {
    let own = saved.source.as_ref().filter(|s| match &args.task {
        None => true,
        Some(id) => *id == s.definition.id,
    });
    let mut spec = match (own, &args.task) {
        (Some(source), _) => source.definition.clone(),
        (None, Some(id)) => {
            glue_task(id).map_err(Exit::usage)?;
            TaskSpec {
                id: id.clone(),
                max_train: None,
                max_eval: None,
                custom: None,
                generation: None,
            }
        }
        (None, None) => {
            return Err(Exit::usage(anyhow!(
                "{} does not record the task it was trained on (a design saved by an older version, or an \
                 imported adapter); pass --task ID",
                args.design.display()
            )))
        }
    };
    spec.max_train = None;
    spec.max_eval = args.max_eval;
    if spec.id != saved.id {
        eprintln!(
            "warning: scoring on `{}`, but the design was trained on `{}`: its head's classes may mean other things",
            spec.id, saved.id
        );
    }
    if !spec.is_glue() {
        return Ok((spec, None));
    }
    let recorded = own.and_then(|s| s.data_dir.clone());
    let data_dir = super::resolver(global)
        .glue_data_for(
            global.data_dir.as_deref().or(recorded.as_deref()),
            None,
            Path::new("."),
            std::slice::from_ref(&spec),
        )
        .map_err(Exit::library)?;
    Ok((spec, data_dir))
}

pub fn run(args: Args, global: &Global) -> Result<(), Exit> {
    let loaded = super::predict::load(&args.design, global)?;
    let (spec, data_dir) = task_to_score(&args, &loaded.design.manifest.task, global)?;
    let seed = loaded.design.manifest.seed.unwrap_or(1);
    let task =
        load_task(&spec, data_dir.as_deref(), Path::new("."), seed).map_err(Exit::library)?;
    let saved = &loaded.design.manifest.task;
    let fits = match &task.kind {
        TaskKind::Classification { labels } => {
            !saved.regression && labels.len() == saved.labels.len()
        }
        TaskKind::Regression => saved.regression,
        TaskKind::Generation { .. } => {
            return Err(Exit::usage(anyhow!(
                "task {} is a generation task; `eval` scores classification and regression heads (a design trained \
                 on a generation task is scored by the run that trained it)",
                task.id
            )))
        }
    };
    if !fits {
        return Err(Exit::usage(anyhow!(
            "task {} does not fit the design's head (trained for {}: {})",
            task.id,
            saved.id,
            if saved.regression {
                "regression".to_string()
            } else {
                format!("{} classes", saved.labels.len())
            }
        )));
    }
    let batch = args.batch_size.unwrap_or(loaded.training.eval_batch_size);
    let outputs = loaded.predictor.outputs(
        &loaded.tokenizer,
        &task.eval,
        loaded.training.max_seq_len,
        batch,
    )?;
    let predictions: Vec<f64> = outputs
        .iter()
        .map(|row| match task.kind {
            TaskKind::Regression | TaskKind::Generation { .. } => {
                f64::from(row.first().copied().unwrap_or(f32::NAN))
            }
            // Ties go to the first class, as in training.
            TaskKind::Classification { .. } => {
                row.iter()
                    .enumerate()
                    .fold(0, |b, (j, &v)| if v > row[b] { j } else { b }) as f64
            }
        })
        .collect();
    let labels: Vec<f64> = task.eval.iter().map(|e| f64::from(e.label)).collect();
    let evaluator = registries()?
        .evaluator(&task.evaluator)
        .map_err(Exit::library)?;
    let metrics = evaluator
        .score(&predictions, &labels)
        .map_err(Exit::library)?;
    let values: Vec<String> = metrics
        .values
        .iter()
        .map(|(k, v)| format!("{k} {v:.4}"))
        .collect();
    println!(
        "{}: {} = {:.4} on {} examples ({})",
        task.id,
        task.evaluator,
        metrics.primary,
        task.eval.len(),
        values.join(", ")
    );
    if let Some(trained) = &loaded.design.manifest.metrics {
        eprintln!("the training run reported {:.4}", trained.primary);
    }
    Ok(())
}
