//! Trained designs written as saved designs: [`SavedDesign::from_trained`] (what `train --save` and the final runs
//! both write) and [`SavingExecutor`], the trial executor of runs whose final trials keep their designs
//! (`final_runs.save`).
//!
//! The trainer lives a floor below and knows nothing of saved designs: it hands back the trained variables
//! ([`crate::train::TrainedTrial::values`]) and the plan it built them from, and this module writes them.

use std::sync::OnceLock;

use super::{
    Manifest, PlanLayer, SavedBackbone, SavedDesign, SavedMetrics, SavedStrategy, SavedTask,
    TaskSource, FORMAT,
};
use crate::budget::LayerAssignment;
use crate::data::{TaskData, TaskKind};
use crate::params::Tensors;
use crate::spec::TaskSpec;
use crate::train::executor::{device_name, TrainingExecutor, Watch};
use crate::train::{TargetScale, TrainingReport, TrialExtras};
use crate::trial::{TrialExecutor, TrialOutcome, TrialSpec};
use crate::{Error, Result};

impl SavedDesign {
    /// The design a trial trained, ready to save: `values` are its variables at the epoch `report` selected
    /// ([`crate::train::TrainedTrial::values`]), `plan` the per-layer sizes they were built with, `design` the text written into
    /// the manifest (`None` for an imported adapter). Only the strategies the plan uses are recorded.
    pub fn from_trained(
        trial: &TrialSpec,
        task: &TaskData,
        plan: &[LayerAssignment],
        report: &TrainingReport,
        values: Tensors,
        design: Option<String>,
        backbone: SavedBackbone,
    ) -> Result<SavedDesign> {
        let strategies = trial
            .strategies
            .iter()
            .filter(|s| {
                plan.iter()
                    .any(|l| l.strategies.iter().any(|(n, _)| n == &s.name))
            })
            .map(SavedStrategy::from_spec)
            .collect::<Result<Vec<_>>>()?;
        Ok(SavedDesign {
            manifest: Manifest {
                format: FORMAT.to_string(),
                design,
                plan: PlanLayer::from_plan(plan),
                strategies,
                task: SavedTask {
                    target_scale: trained_scale(task),
                    ..SavedTask::new(&task.id, &task.kind, &task.evaluator)
                },
                backbone,
                training: Some(trial.training.clone()),
                seed: Some(trial.seed),
                metrics: Some(SavedMetrics::new(&report.metrics, report.selected_epoch)),
            },
            tensors: values,
        })
    }
}

/// The target scale a regression head trained on `task` used (the same function of the training targets the trainer
/// applies), `None` for other kinds.
fn trained_scale(task: &TaskData) -> Option<TargetScale> {
    match task.kind {
        TaskKind::Regression => {
            let targets: Vec<f32> = task.train.iter().map(|e| e.label).collect();
            TargetScale::of(&targets)
        }
        _ => None,
    }
}

/// Trains trials with a [`TrainingExecutor`] and writes the trained design of every trial that asks for it
/// ([`TrialSpec::save`]) into that folder before reporting the outcome, so a stored trial's folder is complete.
/// Nothing is written for a trial that did not end well, nor for full fine-tuning (it changes the backbone itself,
/// which a saved design does not hold; the runner asks no folder of it).
pub struct SavingExecutor {
    trainer: TrainingExecutor,
    hub_id: Option<String>,
    /// The backbone's identity with the hash of its weight files, computed at the first save.
    backbone: OnceLock<SavedBackbone>,
}

impl SavingExecutor {
    /// `hub_id`: the hub id the model was resolved from, recorded in each manifest (the folder's path is too).
    pub fn new(trainer: TrainingExecutor, hub_id: Option<String>) -> Self {
        SavingExecutor {
            trainer,
            hub_id,
            backbone: OnceLock::new(),
        }
    }

    pub fn trainer(&self) -> &TrainingExecutor {
        &self.trainer
    }

    fn backbone(&self) -> Result<SavedBackbone> {
        if let Some(b) = self.backbone.get() {
            return Ok(b.clone());
        }
        let b = SavedBackbone::of(self.trainer.model(), self.hub_id.as_deref())?;
        Ok(self.backbone.get_or_init(|| b).clone())
    }
}

impl TrialExecutor for SavingExecutor {
    fn backbone_identity(&self) -> Result<String> {
        self.trainer.backbone_identity()
    }

    fn data_fingerprint(&self, task: &TaskSpec) -> Result<String> {
        self.trainer.data_fingerprint(task)
    }

    /// A trial that saves its design trains alone (its trained values are written to its own folder); the others
    /// group as the trainer groups them.
    fn population_key(&self, trial: &TrialSpec) -> Result<Option<String>> {
        if trial.save.is_some() {
            return Ok(None);
        }
        self.trainer.population_key(trial)
    }

    fn run_population(&self, trials: &[TrialSpec]) -> Result<Vec<Result<TrialOutcome>>> {
        if trials.iter().any(|t| t.save.is_some()) {
            return Ok(trials.iter().map(|t| self.run(t)).collect());
        }
        self.trainer.run_population(trials)
    }

    fn run(&self, trial: &TrialSpec) -> Result<TrialOutcome> {
        let Some(dir) = &trial.save else {
            return self.trainer.run(trial);
        };
        if trial.is_full_fine_tuning() {
            return Err(Error::msg(format!(
                "trial {}: full fine-tuning changes the backbone itself, which a saved design does not hold",
                trial.id
            )));
        }
        let plain = TrialSpec {
            save: None,
            ..trial.clone()
        };
        let (trained, plan) = self.trainer.train_with(
            &plain,
            None,
            TrialExtras {
                initial: None,
                keep_values: true,
            },
            Watch::default(),
        )?;
        let mut outcome = trained.report.outcome();
        outcome.device = Some(device_name(self.trainer.device()));
        if let (true, Some(values)) = (outcome.status.is_ok(), trained.values) {
            let task = self.trainer.task_on(&trial.task, trial.split)?;
            let mut saved = SavedDesign::from_trained(
                trial,
                &task,
                &plan,
                &trained.report,
                values,
                Some(trial.design.clone()),
                self.backbone()?,
            )?;
            let (spec_dir, data_dir) = self.trainer.data_location();
            saved.manifest.task.source = Some(TaskSource::new(&trial.task, spec_dir, data_dir));
            saved.save(dir)?;
        }
        Ok(outcome)
    }
}
