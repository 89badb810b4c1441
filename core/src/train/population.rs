//! The training loop, for a population of K designs trained together; one design alone is the population K = 1.
//!
//! The K designs share the backbone, the task, the training settings and the seed, hence the data order and the
//! dropout masks. Every step stacks the batch's B rows K times ([`PopulationHooks`]: member k answers the hook sites
//! for rows `k·B .. (k+1)·B`), so the frozen blocks run once for all members. The loss is the sum of the members'
//! mean losses: no variable is shared, so each member's gradient is exactly its gradient alone. Everything else is
//! per member: the head, AdamW state and clipping, the score after each epoch, divergence (a diverged or failed
//! member leaves and the others go on) and the report.

use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::batches::{eval_batches, training_batches};
use super::generation::{
    decoding_settings, language_model, references, target_tokens, teacher_forcing,
    token_cross_entropy_per_group,
};
use super::member::Member;
use super::optim::LinearSchedule;
use super::trial::{progress_bar, tokenize, TrainedTrial, TrialExtras};
use super::{stream_seed, EpochReport, TrainingReport, TrialInput};
use crate::backbone::lm::LanguageModel;
use crate::backbone::{Dropout, Mode};
use crate::data::{pad_batch, TaskKind, Tokens};
use crate::evaluator::{Evaluator, Metrics};
use crate::generate::{decode_texts, generate, GenerationSettings};
use crate::hooks::{LayerHooks, PopulationHooks};
use crate::registry::registries;
use crate::spec::Select;
use crate::trial::TrialStatus;
use crate::{Error, Result};

pub(super) const SEED_INIT: u64 = 1;
pub(super) const SEED_DROPOUT: u64 = 2;
pub(super) const SEED_ORDER: u64 = 3;

/// Trains the designs of `inputs` as one population (see the module's description) and reports each as if it had
/// been trained alone with [`super::run_trial`].
///
/// `Err` for the whole population: the inputs do not share backbone, tokenizer, task, training settings and seed, a
/// trainable backbone (full fine-tuning runs alone) is given more than one design, the task or settings are
/// unusable, or training was interrupted. `Err` in one member's place: a problem with that design's inputs, found
/// before training (an unknown strategy, a layer the backbone lacks); the others still train.
pub fn run_population(inputs: &[TrialInput<'_>]) -> Result<Vec<Result<TrainingReport>>> {
    let extras = vec![TrialExtras::default(); inputs.len()];
    Ok(run_population_with(inputs, &extras)?
        .into_iter()
        .map(|r| r.map(|t| t.report))
        .collect())
}

/// [`run_population`] with each member's [`TrialExtras`] (`extras[k]` for `inputs[k]`).
#[tracing::instrument(
    name = "run_trial",
    skip_all,
    fields(
        task = %inputs.first().map_or("", |i| i.task.id.as_str()),
        seed = inputs.first().map_or(0, |i| i.seed),
        layers = inputs.first().map_or(0, |i| i.plan.len()),
        designs = inputs.len(),
    )
)]
pub fn run_population_with(
    inputs: &[TrialInput<'_>],
    extras: &[TrialExtras<'_>],
) -> Result<Vec<Result<TrainedTrial>>> {
    let Some(first) = inputs.first() else {
        return Ok(Vec::new());
    };
    if extras.len() != inputs.len() {
        return Err(Error::msg(format!(
            "a population of {} designs got {} sets of extras",
            inputs.len(),
            extras.len()
        )));
    }
    check_shared(inputs)?;
    let started = Instant::now();
    let training = first.training;
    let task = first.task;
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
    let generation = match (language_model(first.backbone, task)?, &task.kind) {
        (
            Some(lm),
            TaskKind::Generation {
                max_target_tokens,
                decoding,
                ..
            },
        ) => Some(GenerationParts {
            lm,
            train_targets: target_tokens(first.tokenizer, &task.train, *max_target_tokens)?,
            decoding: decoding_settings(*max_target_tokens, decoding)?,
        }),
        _ => None,
    };
    let shared = Shared {
        input: first,
        train_tokens: tokenize(first, &task.train)?,
        eval_tokens: tokenize(first, &task.eval)?,
        evaluator: evaluator.as_ref(),
        generation,
    };
    let mut results: Vec<Option<Result<TrainedTrial>>> = (0..inputs.len()).map(|_| None).collect();
    let mut members = Vec::new();
    for (index, (input, extra)) in inputs.iter().zip(extras).enumerate() {
        match Member::build(index, input, *extra, shared.evaluator) {
            Ok(member) => members.push(member),
            Err(e) => results[index] = Some(Err(e)),
        }
    }
    train(&shared, &mut members, started)?;
    for member in members {
        let index = member.index;
        results[index] = Some(Ok(member.into_trained()));
    }
    results
        .into_iter()
        .map(|r| r.ok_or_else(|| Error::msg("a design of the population was lost")))
        .collect()
}

/// The inputs every member must share: one backbone and tokenizer (by identity), one task, training settings and
/// seed (by value).
fn check_shared(inputs: &[TrialInput<'_>]) -> Result<()> {
    let first = &inputs[0];
    for (k, other) in inputs.iter().enumerate().skip(1) {
        let same = std::ptr::addr_eq(first.backbone, other.backbone)
            && std::ptr::addr_eq(first.tokenizer, other.tokenizer)
            && (std::ptr::eq(first.task, other.task) || first.task == other.task)
            && first.training == other.training
            && first.seed == other.seed;
        if !same {
            return Err(Error::msg(format!(
                "design {k} of a population differs from design 0 in backbone, tokenizer, task, training settings \
                 or seed; the designs of a population share all five"
            )));
        }
    }
    if inputs.len() > 1 && !first.backbone.trainable_weights().is_empty() {
        return Err(Error::msg(
            "full fine-tuning updates the backbone's own weights, so it trains alone, not in a population",
        ));
    }
    Ok(())
}

/// What every member shares.
struct Shared<'a> {
    input: &'a TrialInput<'a>,
    train_tokens: Vec<Tokens>,
    eval_tokens: Vec<Tokens>,
    evaluator: &'a dyn Evaluator,
    /// For generation tasks: the language model and the tokenised training targets.
    generation: Option<GenerationParts<'a>>,
}

/// What a generation task adds to [`Shared`].
struct GenerationParts<'a> {
    lm: &'a dyn LanguageModel,
    train_targets: Vec<Tokens>,
    /// How evaluation decodes.
    decoding: GenerationSettings,
}

/// Positions (in `members`) of the members still training.
fn active(members: &[Member<'_>]) -> Vec<usize> {
    (0..members.len()).filter(|&m| !members[m].done).collect()
}

/// The epochs of the whole population; each member's report is closed when it leaves or at the end.
fn train(shared: &Shared<'_>, members: &mut [Member<'_>], started: Instant) -> Result<()> {
    let input = shared.input;
    let training = input.training;
    let task = input.task;
    let steps_per_epoch = shared.train_tokens.len().div_ceil(training.batch_size);
    let total_steps = steps_per_epoch * training.epochs;
    let schedule = LinearSchedule::new(total_steps, training.warmup);
    let dropout = Dropout::new(stream_seed(input.seed, SEED_DROPOUT));
    let mut order_rng = StdRng::seed_from_u64(stream_seed(input.seed, SEED_ORDER));
    let bar = progress_bar(input.progress, total_steps as u64, &task.id);
    let train_lengths: Vec<usize> = shared.train_tokens.iter().map(Tokens::len).collect();
    tracing::debug!(
        train_examples = shared.train_tokens.len(),
        eval_examples = shared.eval_tokens.len(),
        steps_per_epoch,
        total_steps,
        designs = members.len(),
        "training starts"
    );
    let mut step = 0usize;
    for epoch in 1..=training.epochs {
        if active(members).is_empty() {
            break;
        }
        // One order per epoch for all members, drawn from the shared seed exactly as each member alone draws it.
        let batches = training_batches(&train_lengths, training.batch_size, &mut order_rng);
        let _epoch_span = tracing::info_span!("epoch", epoch, batches = batches.len()).entered();
        let epoch_started = Instant::now();
        for batch in &batches {
            if crate::interrupt::requested() {
                bar.abandon();
                return Err(Error::Interrupted);
            }
            let running = active(members);
            if running.is_empty() {
                bar.abandon();
                return Ok(());
            }
            let _step_span =
                tracing::debug_span!("step", step, rows = batch.len(), designs = running.len())
                    .entered();
            let step_started = Instant::now();
            match train_step(shared, members, &running, batch, &dropout) {
                Err(e) => {
                    // The shared forward or backward pass failed: no member's step can be told apart.
                    for &m in &running {
                        let status = TrialStatus::Failed {
                            message: format!("step {step}: {e}"),
                        };
                        members[m].leave(status, step, started, training.select);
                    }
                }
                Ok((losses, grads)) => {
                    for (&m, loss) in running.iter().zip(losses) {
                        let member = &mut members[m];
                        let updated = if loss.is_finite() {
                            member.update(&grads, schedule.factor(step), training.grad_clip)
                        } else {
                            Ok(None)
                        };
                        match updated {
                            Ok(Some(norm)) => {
                                member.loss_sum += loss;
                                tracing::trace!(
                                    design = member.index,
                                    loss,
                                    grad_norm = norm,
                                    seconds = step_started.elapsed().as_secs_f64(),
                                    "step done"
                                );
                            }
                            Ok(None) => {
                                tracing::debug!(
                                    step,
                                    design = member.index,
                                    "the loss or the gradient norm is not finite: diverged"
                                );
                                let status = TrialStatus::Diverged { step: step as u64 };
                                member.leave(status, step, started, training.select);
                            }
                            Err(e) => {
                                let status = TrialStatus::Failed {
                                    message: format!("step {step}: {e}"),
                                };
                                member.leave(status, step, started, training.select);
                            }
                        }
                    }
                }
            }
            step += 1;
            if let Some(&m) = active(members).first() {
                bar.set_message(format!(
                    "{} epoch {epoch} loss {:.4}",
                    task.id,
                    members[m].loss_sum / (batches.len() as f64)
                ));
            }
            bar.inc(1);
        }
        let running = active(members);
        if running.is_empty() {
            bar.abandon();
            return Ok(());
        }
        // Training time apart from evaluation: a slow epoch shows whether the steps or the scoring dominate.
        let train_seconds = epoch_started.elapsed().as_secs_f64();
        tracing::debug!(
            batches = batches.len(),
            train_seconds,
            seconds_per_step = train_seconds / batches.len().max(1) as f64,
            "epoch trained"
        );
        if !scored_after(shared, epoch) {
            for &m in &running {
                members[m].loss_sum = 0.0;
            }
            continue;
        }
        match evaluate(shared, members, &running) {
            Ok(scores) => {
                for (&m, metrics) in running.iter().zip(scores) {
                    tracing::debug!(
                        design = members[m].index,
                        primary = metrics.primary,
                        "epoch evaluated"
                    );
                    let member = &mut members[m];
                    let train_loss = member.loss_sum / batches.len().max(1) as f64;
                    member.loss_sum = 0.0;
                    match bar.suspend(|| member.end_epoch(epoch, train_loss, metrics, started)) {
                        Ok(None) => {}
                        Ok(Some(status)) => member.leave(status, step, started, training.select),
                        Err(e) => {
                            let status = TrialStatus::Failed {
                                message: format!("after epoch {epoch}: {e}"),
                            };
                            member.leave(status, step, started, training.select);
                        }
                    }
                }
            }
            Err(Error::Interrupted) => {
                bar.abandon();
                return Err(Error::Interrupted);
            }
            Err(e) => {
                bar.abandon();
                for &m in &running {
                    let status = TrialStatus::Failed {
                        message: format!("evaluation after epoch {epoch}: {e}"),
                    };
                    members[m].leave(status, step, started, training.select);
                }
                return Ok(());
            }
        }
    }
    bar.finish_and_clear();
    let running = active(members);
    if training.epochs == 0 && !running.is_empty() {
        // Nothing to train: score the untrained heads so the trials still report something comparable.
        let scores = evaluate(shared, members, &running)?;
        for (&m, metrics) in running.iter().zip(scores) {
            let member = &mut members[m];
            if member.extras.keep_values {
                member.kept = Some((metrics.primary, member.store.snapshot()?));
            }
            member.report.per_epoch.push(EpochReport {
                epoch: 0,
                train_loss: f64::NAN,
                metrics,
                seconds: started.elapsed().as_secs_f64(),
            });
        }
    }
    for &m in &running {
        members[m].close(step, started, training.select);
    }
    Ok(())
}

/// Whether the designs are scored after `epoch`. Always, except for generation tasks, whose scoring decodes every
/// evaluation example: when only the last epoch's score is reported (`select: Last`), they are scored after the
/// last epoch and after the epoch pruning looks at, not after the others. The reported score is the same; the
/// learning curve then has only those epochs.
fn scored_after(shared: &Shared<'_>, epoch: usize) -> bool {
    let training = shared.input.training;
    shared.generation.is_none()
        || epoch == training.epochs
        || training.select == Select::Best
        || training.prune.is_some_and(|rule| rule.after_epoch == epoch)
}

/// The hooks of the members at `running`, stacked in that order.
fn member_hooks<'m>(members: &'m [Member<'_>], running: &[usize]) -> Vec<&'m dyn LayerHooks> {
    running
        .iter()
        .map(|&m| &members[m].hooks as &dyn LayerHooks)
        .collect()
}

/// Forward and backward on one batch for every running member: each member's loss, and the gradients of the sum of
/// the finite ones.
fn train_step(
    shared: &Shared<'_>,
    members: &[Member<'_>],
    running: &[usize],
    indices: &[usize],
    dropout: &Dropout,
) -> Result<(Vec<f64>, GradStore)> {
    let input = shared.input;
    let backbone = input.backbone;
    let k = running.len();
    let b = indices.len();
    let rows: Vec<&Tokens> = (0..k)
        .flat_map(|_| indices.iter().map(|&i| &shared.train_tokens[i]))
        .collect();
    let mut batch = pad_batch(&rows, input.tokenizer.pad_id(), backbone.device())?;
    let labels: Vec<f32> = indices.iter().map(|&i| input.task.train[i].label).collect();
    dropout.set_copies(k);
    let mode = Mode::Train { dropout };
    let hooks = PopulationHooks::new(member_hooks(members, running));
    let forward_span = tracing::debug_span!("forward").entered();
    let mut losses = Vec::with_capacity(k);
    let mut total: Option<Tensor> = None;
    let mut add = |loss: Tensor| -> Result<()> {
        let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        losses.push(value);
        // A member with a non-finite loss leaves; the others' gradients do not depend on it.
        if value.is_finite() {
            total = Some(match total.take() {
                None => loss,
                Some(t) => (t + loss)?,
            });
        }
        Ok(())
    };
    let rows_of = |t: &Tensor, slot: usize| -> Result<Tensor> {
        Ok(if k == 1 {
            t.clone()
        } else {
            t.narrow(0, slot * b, b)?
        })
    };
    if let Some(generation) = &shared.generation {
        let targets: Vec<&Tokens> = (0..k)
            .flat_map(|_| indices.iter().map(|&i| &generation.train_targets[i]))
            .collect();
        let special = generation.lm.special_tokens();
        let labels = teacher_forcing(&mut batch, &targets, special.pad, special.decoder_start)?;
        let logits = generation.lm.logits(&batch, &hooks, mode)?;
        // One loss pass over the stacked logits; only the per-token losses are split per member.
        for loss in
            token_cross_entropy_per_group(&logits, &labels, input.training.label_smoothing, k)?
        {
            add(loss)?;
        }
    } else {
        let features = backbone.features(&batch, &hooks, mode)?;
        // The heads' dropout is drawn once for the stacked rows, like the backbone's.
        let features = mode.dropout(&features.to_dtype(DType::F32)?, input.training.dropout)?;
        for (slot, &m) in running.iter().enumerate() {
            let head = members[m]
                .head
                .as_ref()
                .ok_or_else(|| Error::msg("a classification or regression design has no head"))?;
            add(head.loss(&head.project(&rows_of(&features, slot)?)?, &labels)?)?;
        }
    }
    drop(forward_span);
    let Some(total) = total else {
        // No backward pass through a NaN graph; the caller ends those members.
        return Ok((losses, GradStore::default()));
    };
    let _backward_span = tracing::debug_span!("backward").entered();
    Ok((losses, hooks.backward(&total)?))
}

/// Scores the evaluation set with dropout off, for every running member (stacked like a training step).
#[tracing::instrument(level = "debug", skip_all, fields(examples = shared.eval_tokens.len()))]
fn evaluate(
    shared: &Shared<'_>,
    members: &[Member<'_>],
    running: &[usize],
) -> Result<Vec<Metrics>> {
    let input = shared.input;
    if let Some(generation) = &shared.generation {
        return evaluate_generation(shared, generation, members, running);
    }
    let backbone = input.backbone;
    let examples = &input.task.eval;
    let k = running.len();
    let lengths: Vec<usize> = shared.eval_tokens.iter().map(Tokens::len).collect();
    let mut predictions = vec![vec![0f64; examples.len()]; k];
    let hooks = PopulationHooks::without_gradients(member_hooks(members, running));
    for indices in eval_batches(&lengths, input.training.eval_batch_size) {
        crate::interrupt::check()?;
        let b = indices.len();
        let rows: Vec<&Tokens> = (0..k)
            .flat_map(|_| indices.iter().map(|&i| &shared.eval_tokens[i]))
            .collect();
        let batch = pad_batch(&rows, input.tokenizer.pad_id(), backbone.device())?;
        let features = backbone.features(&batch, &hooks, Mode::Eval)?.detach();
        for (slot, &m) in running.iter().enumerate() {
            let rows = if k == 1 {
                features.clone()
            } else {
                features.narrow(0, slot * b, b)?
            };
            let head = members[m]
                .head
                .as_ref()
                .ok_or_else(|| Error::msg("a classification or regression design has no head"))?;
            let outputs = head.forward(&rows, Mode::Eval, 0.0)?;
            for (&i, p) in indices.iter().zip(head.predictions(&outputs)?) {
                predictions[slot][i] = p;
            }
        }
    }
    let labels: Vec<f64> = examples.iter().map(|e| f64::from(e.label)).collect();
    predictions
        .iter()
        .map(|p| shared.evaluator.score(p, &labels))
        .collect()
}

/// Scores a generation task: every running member decodes the evaluation sources greedily with its own hooks (the
/// key/value cache drops rows as they finish, which stacked members could not share) and its texts are scored
/// against the references.
fn evaluate_generation(
    shared: &Shared<'_>,
    generation: &GenerationParts<'_>,
    members: &[Member<'_>],
    running: &[usize],
) -> Result<Vec<Metrics>> {
    let input = shared.input;
    let examples = &input.task.eval;
    let lengths: Vec<usize> = shared.eval_tokens.iter().map(Tokens::len).collect();
    let mut hypotheses = vec![vec![String::new(); examples.len()]; running.len()];
    for indices in eval_batches(&lengths, input.training.eval_batch_size) {
        crate::interrupt::check()?;
        let rows: Vec<&Tokens> = indices.iter().map(|&i| &shared.eval_tokens[i]).collect();
        let batch = pad_batch(&rows, input.tokenizer.pad_id(), input.backbone.device())?;
        for (slot, &m) in running.iter().enumerate() {
            let sequences = generate(
                generation.lm,
                &batch.input_ids,
                &batch.attention_mask,
                &members[m].hooks,
                &generation.decoding,
            )?;
            for (&i, text) in indices.iter().zip(decode_texts(
                input.tokenizer,
                &sequences,
                generation.lm.special_tokens(),
            )?) {
                hypotheses[slot][i] = text;
            }
        }
    }
    let targets = references(examples);
    hypotheses
        .iter()
        .map(|h| shared.evaluator.score_texts(h, &targets))
        .collect()
}
