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
    /// A folder written by `train --save`, or a PEFT adapter folder.
    pub design: PathBuf,
    /// The GLUE task to score on (its dev set; the data folder comes from --data-dir, PEFTSPACE_DATA or the cache).
    #[arg(long)]
    pub task: String,
    /// Score a seeded subsample of this many evaluation examples. Default: all.
    #[arg(long)]
    pub max_eval: Option<usize>,
    /// Examples per forward pass. Default: the training run's eval_batch_size.
    #[arg(long)]
    pub batch_size: Option<usize>,
}

pub fn run(args: Args, global: &Global) -> Result<(), Exit> {
    glue_task(&args.task).map_err(Exit::usage)?;
    let spec = TaskSpec {
        id: args.task.clone(),
        max_train: None,
        max_eval: args.max_eval,
        custom: None,
        generation: None,
    };
    let data_dir = super::resolver(global)
        .glue_data_for(
            global.data_dir.as_deref(),
            None,
            Path::new("."),
            std::slice::from_ref(&spec),
        )
        .map_err(Exit::library)?;
    let loaded = super::predict::load(&args.design, global)?;
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
