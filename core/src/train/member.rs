//! One design of a population ([`super::population`]): its variables, hooks, head, optimiser and report, and what
//! happens to it alone — its update, its end of epoch, leaving the population.

use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::Var;

use super::design::build_design;
use super::head::{TargetScale, TaskHead};
use super::optim::{clip_factor, global_grad_norm, AdamW, ParamGroup};
use super::population::SEED_INIT;
use super::trial::{finish, TrainedTrial, TrialExtras};
use super::{stream_seed, EpochReport, TrainingReport, TrialInput};
use crate::data::TaskKind;
use crate::evaluator::{Evaluator, Metrics};
use crate::hooks::DesignHooks;
use crate::params::{ParamStore, Tensors};
use crate::spec::Select;
use crate::trial::TrialStatus;
use crate::Result;

/// One design of the population: its variables, hooks, head, optimiser and report so far.
pub(super) struct Member<'a> {
    /// Position in the caller's inputs.
    pub(super) index: usize,
    pub(super) input: &'a TrialInput<'a>,
    pub(super) extras: TrialExtras<'a>,
    pub(super) store: ParamStore,
    pub(super) hooks: DesignHooks,
    /// The task head; none for generation tasks (the backbone's language-model head predicts the tokens).
    pub(super) head: Option<TaskHead>,
    pub(super) optimizer: AdamW,
    /// Every variable it trains (design, head, a trainable backbone's weights): what its gradient norm covers.
    pub(super) vars: Vec<Var>,
    pub(super) report: TrainingReport,
    /// The variables at the epoch selected so far, when the caller keeps them.
    pub(super) kept: Option<(f64, Tensors)>,
    pub(super) loss_sum: f64,
    /// Left the population (diverged or failed), or finished.
    pub(super) done: bool,
}

impl<'a> Member<'a> {
    /// Initialises the design and head exactly as a trial alone does (same seed stream, same creation order).
    pub(super) fn build(
        index: usize,
        input: &'a TrialInput<'a>,
        extras: TrialExtras<'a>,
        evaluator: &dyn Evaluator,
    ) -> Result<Self> {
        let training = input.training;
        let backbone = input.backbone;
        let task = input.task;
        let mut store = ParamStore::new(backbone.device(), stream_seed(input.seed, SEED_INIT));
        let design = build_design(
            backbone.info(),
            input.plan,
            input.strategies,
            training,
            &mut store,
        )?;
        let head = match task.kind {
            TaskKind::Generation { .. } => None,
            _ => {
                let mut head = TaskHead::new(&mut store, backbone.feature_dim(), &task.kind)?;
                let targets: Vec<f32> = task.train.iter().map(|e| e.label).collect();
                head.set_scale(TargetScale::of(&targets));
                Some(head)
            }
        };
        if let Some(initial) = extras.initial {
            store.assign(initial)?;
        }
        // Full fine-tuning: a backbone loaded with trainable weights trains all of them, at the full-fine-tuning
        // rate (the head too, unless it has its own), as in the usual full fine-tuning recipe.
        let backbone_vars = backbone.trainable_weights();
        let backbone_params: usize = backbone_vars.iter().map(|v| v.elem_count()).sum();
        let base_rate = if backbone_vars.is_empty() {
            training.learning_rate
        } else {
            training.full_learning_rate
        };
        let mut groups = design.groups;
        if let Some(head) = &head {
            groups.push(ParamGroup {
                name: "head".into(),
                vars: head.vars(),
                learning_rate: training.head_learning_rate.unwrap_or(base_rate),
                weight_decay: training.weight_decay,
            });
        }
        let mut vars = store.vars();
        if !backbone_vars.is_empty() {
            vars.extend(backbone_vars.iter().cloned());
            groups.push(ParamGroup {
                name: "backbone".into(),
                vars: backbone_vars,
                learning_rate: training.full_learning_rate,
                weight_decay: training.weight_decay,
            });
        }
        let report = TrainingReport {
            status: TrialStatus::Ok,
            metrics: Metrics::default(),
            selected_epoch: None,
            per_epoch: Vec::new(),
            trainable_params: design.trainable_params + backbone_params,
            head_params: head.as_ref().map_or(0, TaskHead::num_params),
            steps: 0,
            seconds: 0.0,
            // Unknown rather than fatal when it cannot be scored (non-finite training labels): the trial itself
            // then reports what is wrong (it diverges at its first step).
            reference: task.reference(evaluator).ok(),
        };
        Ok(Member {
            index,
            input,
            extras,
            store,
            hooks: design.hooks,
            head,
            optimizer: AdamW::new(groups),
            vars,
            report,
            kept: None,
            loss_sum: 0.0,
            done: false,
        })
    }

    /// Ends this member's training with `status` after `steps` steps (the others go on).
    pub(super) fn leave(
        &mut self,
        status: TrialStatus,
        steps: usize,
        started: Instant,
        select: Select,
    ) {
        tracing::debug!(design = self.index, %status, "a design leaves the population");
        self.report.status = status;
        self.close(steps, started, select);
    }

    pub(super) fn close(&mut self, steps: usize, started: Instant, select: Select) {
        let report = std::mem::replace(&mut self.report, empty_report());
        self.report = finish(report, steps, started, select);
        self.done = true;
    }

    /// One update from this member's part of the population's gradients: its own norm, clipping and AdamW step.
    /// `Ok(None)`: the gradient norm is not finite (the member diverged).
    pub(super) fn update(
        &mut self,
        grads: &GradStore,
        lr_scale: f64,
        grad_clip: f64,
    ) -> Result<Option<f64>> {
        let norm = global_grad_norm(grads, &self.vars)?;
        if !norm.is_finite() {
            return Ok(None);
        }
        let _update_span = tracing::debug_span!("update").entered();
        self.optimizer
            .step(grads, lr_scale, clip_factor(norm, grad_clip))?;
        Ok(Some(norm))
    }

    /// The end of an epoch for this member: the one place where its score after `epoch` is recorded (reported to
    /// the caller, kept for saving, added to its report), and where pruning decides on it: `Some(status)` when the
    /// member leaves after this epoch.
    pub(super) fn end_epoch(
        &mut self,
        epoch: usize,
        train_loss: f64,
        metrics: Metrics,
        started: Instant,
    ) -> Result<Option<TrialStatus>> {
        let training = self.input.training;
        // Learning-curve pruning (`training.prune`): a design below the threshold after this epoch stops here.
        let pruned = training.prune.is_some_and(|rule| {
            let reference = self.report.reference.as_ref().map(|m| m.primary);
            rule.prunes(epoch, training.epochs, metrics.primary, reference)
        });
        let report = EpochReport {
            epoch,
            train_loss,
            metrics,
            seconds: started.elapsed().as_secs_f64(),
        };
        if let Some(callback) = self.input.on_epoch {
            callback(&report);
        }
        if self.extras.keep_values {
            let newer = match (self.input.training.select, self.kept.as_ref()) {
                // Ties keep the earlier epoch, as `finish` does.
                (Select::Best, Some((best, _))) => !matches!(
                    best.partial_cmp(&report.metrics.primary),
                    Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
                ),
                _ => true,
            };
            if newer {
                self.kept = Some((report.metrics.primary, self.store.snapshot()?));
            }
        }
        self.report.per_epoch.push(report);
        Ok(pruned.then_some(TrialStatus::Pruned {
            epoch: epoch as u64,
        }))
    }

    pub(super) fn into_trained(self) -> TrainedTrial {
        // The kept copy follows `finish`'s choice: the last epoch, or the first best one.
        let values = match (self.kept, self.report.selected_epoch) {
            (Some((_, values)), Some(_)) => Some(values),
            _ => None,
        };
        TrainedTrial {
            report: self.report,
            values,
        }
    }
}

fn empty_report() -> TrainingReport {
    TrainingReport {
        status: TrialStatus::Ok,
        metrics: Metrics::default(),
        selected_epoch: None,
        per_epoch: Vec::new(),
        trainable_params: 0,
        head_params: 0,
        steps: 0,
        seconds: 0.0,
        reference: None,
    }
}
