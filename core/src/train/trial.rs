//! The training loop of one trial.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::batches::{eval_batches, training_batches};
use super::design::build_design;
use super::head::TaskHead;
use super::optim::{clip_factor, global_grad_norm, AdamW, LinearSchedule, ParamGroup};
use super::{stream_seed, EpochReport, TrainingReport, TrialInput};
use crate::backbone::{Dropout, Mode};
use crate::data::{pad_batch, Example, Tokens};
use crate::evaluator::{Evaluator, Metrics};
use crate::hooks::DesignHooks;
use crate::params::ParamStore;
use crate::params::Tensors;
use crate::registry::registries;
use crate::spec::Select;
use crate::trial::TrialStatus;
use crate::{Error, Result};

const SEED_INIT: u64 = 1;
const SEED_DROPOUT: u64 = 2;
const SEED_ORDER: u64 = 3;

/// Fine-tunes the design on the task and scores it after each epoch.
///
/// Errors (`Err`) are problems with the inputs, found before training starts: an unknown strategy or evaluator, a
/// layer the backbone lacks, text the tokenizer refuses, an empty task. Once training runs, the outcome's status
/// says how it ended: a NaN or infinite loss ends it as [`TrialStatus::Diverged`], never a panic.
pub fn run_trial(input: &TrialInput<'_>) -> Result<TrainingReport> {
    Ok(run_trial_with(input, TrialExtras::default())?.report)
}

/// What a trial may start from and keep beyond its report.
#[derive(Default, Clone, Copy)]
pub struct TrialExtras<'a> {
    /// Values for some of the design's or head's variables, by [`ParamStore`] name, set after initialisation
    /// (`train --adapter`: an imported adapter as the starting point).
    pub initial: Option<&'a Tensors>,
    /// Keep a copy of every variable at the selected epoch ([`TrainedTrial::values`]), to save the design.
    pub keep_values: bool,
}

/// A trial's report and, when asked for, the values of its variables at the selected epoch.
pub struct TrainedTrial {
    pub report: TrainingReport,
    /// Every design and head variable by name, at the epoch the report selected (`None` when not kept or when no
    /// epoch finished).
    pub values: Option<Tensors>,
}

/// [`run_trial`] with a starting point and a copy of the trained variables (see [`TrialExtras`]).
// The span keeps the name `run_trial`: both entry points are one trial to whoever reads a trace.
#[tracing::instrument(
    name = "run_trial",
    skip_all,
    fields(task = %input.task.id, seed = input.seed, layers = input.plan.len())
)]
pub fn run_trial_with(input: &TrialInput<'_>, extras: TrialExtras<'_>) -> Result<TrainedTrial> {
    let mut kept: Option<(f64, Tensors)> = None;
    let report = train_and_score(input, extras, &mut kept)?;
    // The kept copy follows `finish`'s choice: the last epoch, or the first best one.
    let values = match (kept, report.selected_epoch) {
        (Some((_, values)), Some(_)) => Some(values),
        _ => None,
    };
    Ok(TrainedTrial { report, values })
}

fn train_and_score(
    input: &TrialInput<'_>,
    extras: TrialExtras<'_>,
    kept: &mut Option<(f64, Tensors)>,
) -> Result<TrainingReport> {
    let started = Instant::now();
    let training = input.training;
    let task = input.task;
    if task.train.is_empty() || task.eval.is_empty() {
        return Err(Error::msg(format!(
            "task `{}` has {} training and {} evaluation examples; both must be non-empty",
            task.id,
            task.train.len(),
            task.eval.len()
        )));
    }
    if training.batch_size == 0 || training.eval_batch_size == 0 || training.max_seq_len < 2 {
        return Err(Error::msg(
            "training: batch_size and eval_batch_size must be at least 1 and max_seq_len at least 2",
        ));
    }
    let evaluator = registries()?.evaluator(&task.evaluator)?;
    let train_tokens = tokenize(input, &task.train)?;
    let eval_tokens = tokenize(input, &task.eval)?;

    let backbone = input.backbone;
    let mut store = ParamStore::new(backbone.device(), stream_seed(input.seed, SEED_INIT));
    let design = build_design(
        backbone.info(),
        input.plan,
        input.strategies,
        training,
        &mut store,
    )?;
    let head = TaskHead::new(&mut store, backbone.feature_dim(), &task.kind)?;
    let targets: Vec<f32> = task.train.iter().map(|e| e.label).collect();
    head.start_at_mean(&targets)?;
    if let Some(initial) = extras.initial {
        store.assign(initial)?;
    }
    // Full fine-tuning: a backbone loaded with trainable weights trains all of them, at the full-fine-tuning rate
    // (the head too, unless it has its own), as in the usual full fine-tuning recipe.
    let backbone_vars = backbone.trainable_weights();
    let backbone_params: usize = backbone_vars.iter().map(|v| v.elem_count()).sum();
    let base_rate = if backbone_vars.is_empty() {
        training.learning_rate
    } else {
        training.full_learning_rate
    };
    let mut groups = design.groups;
    groups.push(ParamGroup {
        name: "head".into(),
        vars: head.vars(),
        learning_rate: training.head_learning_rate.unwrap_or(base_rate),
        weight_decay: training.weight_decay,
    });
    let mut all_vars = store.vars();
    if !backbone_vars.is_empty() {
        all_vars.extend(backbone_vars.iter().cloned());
        groups.push(ParamGroup {
            name: "backbone".into(),
            vars: backbone_vars,
            learning_rate: training.full_learning_rate,
            weight_decay: training.weight_decay,
        });
    }
    let mut optimizer = AdamW::new(groups);

    let steps_per_epoch = train_tokens.len().div_ceil(training.batch_size);
    let total_steps = steps_per_epoch * training.epochs;
    let schedule = LinearSchedule::new(total_steps, training.warmup);
    let dropout = Dropout::new(stream_seed(input.seed, SEED_DROPOUT));
    let mut order_rng = StdRng::seed_from_u64(stream_seed(input.seed, SEED_ORDER));
    let bar = progress_bar(input.progress, total_steps as u64, &task.id);
    let train_lengths: Vec<usize> = train_tokens.iter().map(Tokens::len).collect();
    tracing::debug!(
        train_examples = train_tokens.len(),
        eval_examples = eval_tokens.len(),
        steps_per_epoch,
        total_steps,
        "training starts"
    );

    let mut outcome = TrainingReport {
        status: TrialStatus::Ok,
        metrics: Metrics::default(),
        selected_epoch: None,
        per_epoch: Vec::new(),
        trainable_params: design.trainable_params + backbone_params,
        head_params: head.num_params(),
        steps: 0,
        seconds: 0.0,
        // Unknown rather than fatal when it cannot be scored (non-finite training labels): the trial itself then
        // reports what is wrong (it diverges at its first step).
        reference: task.reference(evaluator.as_ref()).ok(),
    };
    let context = Context {
        input,
        hooks: &design.hooks,
        head: &head,
        evaluator: evaluator.as_ref(),
    };
    let mut step = 0usize;
    for epoch in 1..=training.epochs {
        let batches = training_batches(&train_lengths, training.batch_size, &mut order_rng);
        let _epoch_span = tracing::info_span!("epoch", epoch, batches = batches.len()).entered();
        let epoch_started = Instant::now();
        let mut loss_sum = 0.0;
        for batch in &batches {
            if crate::interrupt::requested() {
                bar.abandon();
                return Err(Error::Interrupted);
            }
            let _step_span = tracing::debug_span!("step", step, rows = batch.len()).entered();
            let step_started = Instant::now();
            let result =
                context
                    .train_step(batch, &train_tokens, &dropout)
                    .and_then(|(loss, grads)| {
                        if !loss.is_finite() {
                            return Ok((loss, None));
                        }
                        let norm = global_grad_norm(&grads, &all_vars)?;
                        if !norm.is_finite() {
                            return Ok((f64::NAN, None));
                        }
                        let _update_span = tracing::debug_span!("update").entered();
                        optimizer.step(
                            &grads,
                            schedule.factor(step),
                            clip_factor(norm, training.grad_clip),
                        )?;
                        Ok((loss, Some(norm)))
                    });
            match result {
                Ok((_, None)) => {
                    tracing::debug!(
                        step,
                        "the loss or the gradient norm is not finite: diverged"
                    );
                    bar.abandon_with_message(format!("{}: diverged at step {step}", task.id));
                    outcome.status = TrialStatus::Diverged { step: step as u64 };
                    return Ok(finish(outcome, step, started, training.select));
                }
                Ok((loss, Some(norm))) => {
                    loss_sum += loss;
                    tracing::trace!(
                        loss,
                        grad_norm = norm,
                        seconds = step_started.elapsed().as_secs_f64(),
                        "step done"
                    );
                }
                Err(e) => {
                    bar.abandon();
                    outcome.status = TrialStatus::Failed {
                        message: format!("step {step}: {e}"),
                    };
                    return Ok(finish(outcome, step, started, training.select));
                }
            }
            step += 1;
            bar.set_message(format!(
                "{} epoch {epoch} loss {:.4}",
                task.id,
                loss_sum / (batches.len() as f64)
            ));
            bar.inc(1);
        }
        // Training time apart from evaluation: a slow epoch shows whether the steps or the scoring dominate.
        let train_seconds = epoch_started.elapsed().as_secs_f64();
        tracing::debug!(
            batches = batches.len(),
            train_seconds,
            seconds_per_step = train_seconds / batches.len().max(1) as f64,
            "epoch trained"
        );
        let metrics = match context.evaluate(&eval_tokens) {
            Ok(m) => m,
            Err(Error::Interrupted) => {
                bar.abandon();
                return Err(Error::Interrupted);
            }
            Err(e) => {
                bar.abandon();
                outcome.status = TrialStatus::Failed {
                    message: format!("evaluation after epoch {epoch}: {e}"),
                };
                return Ok(finish(outcome, step, started, training.select));
            }
        };
        tracing::debug!(primary = metrics.primary, "epoch evaluated");
        let report = EpochReport {
            epoch,
            train_loss: loss_sum / batches.len().max(1) as f64,
            metrics,
            seconds: started.elapsed().as_secs_f64(),
        };
        if let Some(callback) = input.on_epoch {
            bar.suspend(|| callback(&report));
        }
        let pruned = training.prune.is_some_and(|rule| {
            let reference = outcome.reference.as_ref().map(|m| m.primary);
            rule.prunes(epoch, training.epochs, report.metrics.primary, reference)
        });
        if extras.keep_values {
            let newer = match (training.select, kept.as_ref()) {
                // Ties keep the earlier epoch, as `finish` does.
                (Select::Best, Some((best, _))) => !matches!(
                    best.partial_cmp(&report.metrics.primary),
                    Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
                ),
                _ => true,
            };
            if newer {
                *kept = Some((report.metrics.primary, store.snapshot()?));
            }
        }
        outcome.per_epoch.push(report);
        if pruned {
            tracing::debug!(epoch, "below the pruning threshold: pruned");
            bar.finish_and_clear();
            outcome.status = TrialStatus::Pruned {
                epoch: epoch as u64,
            };
            return Ok(finish(outcome, step, started, training.select));
        }
    }
    bar.finish_and_clear();
    if training.epochs == 0 {
        // Nothing to train: score the untrained head so the trial still reports something comparable.
        let metrics = context.evaluate(&eval_tokens)?;
        if extras.keep_values {
            *kept = Some((metrics.primary, store.snapshot()?));
        }
        outcome.per_epoch.push(EpochReport {
            epoch: 0,
            train_loss: f64::NAN,
            metrics,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    Ok(finish(outcome, step, started, training.select))
}

fn finish(
    mut outcome: TrainingReport,
    steps: usize,
    started: Instant,
    select: Select,
) -> TrainingReport {
    outcome.steps = steps;
    outcome.seconds = started.elapsed().as_secs_f64();
    let chosen = match select {
        Select::Last => outcome.per_epoch.last(),
        Select::Best => outcome
            .per_epoch
            .iter()
            .fold(None, |best: Option<&EpochReport>, r| match best {
                Some(b) if b.metrics.primary >= r.metrics.primary => Some(b),
                _ => Some(r),
            }),
    };
    if let Some(report) = chosen {
        outcome.metrics = report.metrics.clone();
        outcome.selected_epoch = Some(report.epoch);
    }
    outcome
}

/// Tokenises `examples`, truncated to `training.max_seq_len` or to the backbone's position limit if shorter (a text
/// too long for the model is cut, not a failed trial).
fn tokenize(input: &TrialInput<'_>, examples: &[Example]) -> Result<Vec<Tokens>> {
    let max_len = max_input_len(input.training.max_seq_len, input.backbone.max_positions());
    examples
        .iter()
        .map(|e| input.tokenizer.encode(&e.text, e.pair.as_deref(), max_len))
        .collect()
}

/// `min(max_seq_len, max_positions)`; `max_seq_len` when the model has no position limit.
pub(crate) fn max_input_len(max_seq_len: usize, max_positions: Option<usize>) -> usize {
    max_positions.map_or(max_seq_len, |limit| max_seq_len.min(limit))
}

fn progress_bar(show: bool, steps: u64, task: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(steps);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} steps, {elapsed} < {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(task.to_string());
    bar
}

/// What every step of one trial shares.
struct Context<'a> {
    input: &'a TrialInput<'a>,
    hooks: &'a DesignHooks,
    head: &'a TaskHead,
    evaluator: &'a dyn Evaluator,
}

impl Context<'_> {
    /// Forward and backward on one batch: the loss and the gradients.
    fn train_step(
        &self,
        indices: &[usize],
        tokens: &[Tokens],
        dropout: &Dropout,
    ) -> Result<(f64, candle_core::backprop::GradStore)> {
        let backbone = self.input.backbone;
        let rows: Vec<&Tokens> = indices.iter().map(|&i| &tokens[i]).collect();
        let batch = pad_batch(&rows, self.input.tokenizer.pad_id(), backbone.device())?;
        let labels: Vec<f32> = indices
            .iter()
            .map(|&i| self.input.task.train[i].label)
            .collect();
        let mode = Mode::Train { dropout };
        let forward_span = tracing::debug_span!("forward").entered();
        let features = backbone.features(&batch, self.hooks, mode)?;
        let outputs = self
            .head
            .forward(&features, mode, self.input.training.dropout)?;
        let loss = self.head.loss(&outputs, &labels)?;
        let value = loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        drop(forward_span);
        if !value.is_finite() {
            // No backward pass through a NaN graph; the caller ends the trial.
            return Ok((value, candle_core::backprop::GradStore::default()));
        }
        let _backward_span = tracing::debug_span!("backward").entered();
        Ok((value, loss.backward()?))
    }

    /// Scores the evaluation set with dropout off.
    #[tracing::instrument(level = "debug", skip_all, fields(examples = tokens.len()))]
    fn evaluate(&self, tokens: &[Tokens]) -> Result<Metrics> {
        let backbone = self.input.backbone;
        let examples = &self.input.task.eval;
        let lengths: Vec<usize> = tokens.iter().map(Tokens::len).collect();
        let mut predictions = vec![0f64; examples.len()];
        for indices in eval_batches(&lengths, self.input.training.eval_batch_size) {
            crate::interrupt::check()?;
            let rows: Vec<&Tokens> = indices.iter().map(|&i| &tokens[i]).collect();
            let batch = pad_batch(&rows, self.input.tokenizer.pad_id(), backbone.device())?;
            let features = backbone.features(&batch, self.hooks, Mode::Eval)?;
            let outputs = self.head.forward(&features.detach(), Mode::Eval, 0.0)?;
            for (&i, p) in indices.iter().zip(self.head.predictions(&outputs)?) {
                predictions[i] = p;
            }
        }
        let labels: Vec<f64> = examples.iter().map(|e| f64::from(e.label)).collect();
        self.evaluator.score(&predictions, &labels)
    }
}
