//! The trial runner: one design fine-tuned on one task with one seed, then scored.
//!
//! [`run_trial`] tokenises the task, builds the design's strategies into hooks, adds a task head, and trains with
//! AdamW (per-strategy learning rates), a linear warm-up/decay schedule and gradient-norm clipping over the design's own variables, on
//! length-bucketed batches; it scores the evaluation set after every epoch. [`run_population`] trains K designs that
//! share backbone, task, settings and seed in one loop (the frozen blocks run once for all of them) and reports each
//! exactly as alone; [`run_trial`] is its population of one. On CPU a seed fixes everything:
//! initialisation, dropout and data order. Inputs are truncated to `training.max_seq_len`, or to the backbone's
//! position limit ([`Backbone::max_positions`]) when that is shorter. A backbone loaded with trainable weights is
//! fully fine-tuned (all its weights plus the head; the plan is then usually empty).

mod batches;
mod design;
pub mod executor;
mod generation;
mod head;
mod member;
pub mod optim;
mod population;
pub mod probe;
mod trial;

pub use batches::{eval_batches, training_batches};
pub use design::{build_design, uniform_plan, BuiltDesign};
pub use generation::{token_cross_entropy, token_cross_entropy_per_group, TargetLabels};
pub use head::{TargetScale, TaskHead};
pub use population::{run_population, run_population_with};
pub(crate) use trial::max_input_len;
pub use trial::{run_trial, run_trial_with, TrainedTrial, TrialExtras};

use crate::backbone::Backbone;
use crate::budget::LayerAssignment;
use crate::data::{TaskData, Tokenize};
use crate::evaluator::Metrics;
use crate::spec::{StrategySpec, TrainingSpec};
use crate::trial::{TrialOutcome, TrialStatus};

/// Everything one trial needs.
pub struct TrialInput<'a> {
    /// The model. Frozen (weights shared between trials; a trial only adds hooks), or loaded with trainable weights
    /// for full fine-tuning: then every [`Backbone::trainable_weights`] variable trains too (at
    /// `training.full_learning_rate`) and is counted in `trainable_params`; such a model is updated in place and
    /// must be loaded afresh for each trial.
    pub backbone: &'a dyn Backbone,
    /// The backbone's tokenizer.
    pub tokenizer: &'a dyn Tokenize,
    /// Training and evaluation examples (already subsampled).
    pub task: &'a TaskData,
    /// The design: strategies and sizes per layer. Empty = only the task head trains.
    pub plan: &'a [LayerAssignment],
    /// Options and learning rates of the strategies the plan names (by name; missing ones get defaults).
    pub strategies: &'a [StrategySpec],
    pub training: &'a TrainingSpec,
    /// Fixes initialisation, dropout and data order.
    pub seed: u64,
    /// Draw a progress bar on stderr (it stays hidden anyway when stderr is not a terminal).
    pub progress: bool,
    /// Called after each epoch's evaluation (e.g. to print the dev score as it comes).
    pub on_epoch: Option<&'a (dyn Fn(&EpochReport) + Sync)>,
}

/// One epoch: its mean training loss and the evaluation metrics after it.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochReport {
    /// 1-based epoch number.
    pub epoch: usize,
    pub train_loss: f64,
    pub metrics: Metrics,
    /// Seconds since the trial started.
    pub seconds: f64,
}

/// What training one trial produced, epoch by epoch; [`TrainingReport::outcome`] is the part a result store keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingReport {
    pub status: TrialStatus,
    /// The selected epoch's metrics (`TrainingSpec::select`); default (empty) when no epoch finished.
    pub metrics: Metrics,
    /// 1-based epoch whose metrics were selected.
    pub selected_epoch: Option<usize>,
    pub per_epoch: Vec<EpochReport>,
    /// Scalars in the design's strategies (the budget counts these), plus the backbone's weights when they train
    /// (full fine-tuning).
    pub trainable_params: usize,
    /// Scalars in the task head (reported apart from the budget).
    pub head_params: usize,
    /// Optimiser steps taken.
    pub steps: usize,
    /// Wall time of the whole trial (tokenising, training, evaluating).
    pub seconds: f64,
    /// The task's reference metrics (majority class or mean predictor, [`TaskData::reference`]).
    pub reference: Option<Metrics>,
}

impl TrainingReport {
    /// The stored outcome: the selected epoch's metrics, the primary score only when the trial ended well.
    pub fn outcome(&self) -> TrialOutcome {
        TrialOutcome {
            status: self.status.clone(),
            metrics: self.metrics.values.clone(),
            primary: self.status.is_scored().then_some(self.metrics.primary),
            trainable_params: self.trainable_params as u64,
            head_params: self.head_params as u64,
            seconds: self.seconds,
            reference: self.reference.as_ref().map(|m| m.primary),
            device: None,
        }
    }
}

impl TrainingReport {
    /// Whether the selected epoch beat the reference score (`Some(false)`: the model learned nothing).
    pub fn learned(&self) -> Option<bool> {
        self.outcome().learned()
    }
}

/// Mixes a trial seed with a purpose tag so that init, dropout and data order draw independent streams.
pub fn stream_seed(seed: u64, purpose: u64) -> u64 {
    // SplitMix64 finaliser over the combined value.
    let mut z = seed ^ purpose.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
