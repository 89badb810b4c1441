//! One trial: the entry points for a design trained alone (the population of one, [`super::population`]) and what
//! every trial's report is made of.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use super::population::run_population_with;
use super::{EpochReport, TrainingReport, TrialInput};
use crate::data::{Example, TaskKind, Tokens};
use crate::params::Tensors;
use crate::spec::Select;
use crate::{Error, Result};

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
    /// Values for some of the design's or head's variables, by [`crate::params::ParamStore`] name, set after initialisation
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

/// [`run_trial`] with a starting point and a copy of the trained variables (see [`TrialExtras`]): the population of
/// one design.
pub fn run_trial_with(input: &TrialInput<'_>, extras: TrialExtras<'_>) -> Result<TrainedTrial> {
    run_population_with(std::slice::from_ref(input), &[extras])?
        .pop()
        .unwrap_or_else(|| Err(Error::msg("the trial produced no report")))
}

pub(super) fn finish(
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
/// A generation task's `max_source_tokens` replaces `max_seq_len` for its sources.
pub(super) fn tokenize(input: &TrialInput<'_>, examples: &[Example]) -> Result<Vec<Tokens>> {
    let max_seq_len = match input.task.kind {
        TaskKind::Generation {
            max_source_tokens: Some(limit),
            ..
        } => limit,
        _ => input.training.max_seq_len,
    };
    let max_len = max_input_len(max_seq_len, input.backbone.max_positions());
    examples
        .iter()
        .map(|e| input.tokenizer.encode(&e.text, e.pair.as_deref(), max_len))
        .collect()
}

/// `min(max_seq_len, max_positions)`; `max_seq_len` when the model has no position limit.
pub(crate) fn max_input_len(max_seq_len: usize, max_positions: Option<usize>) -> usize {
    max_positions.map_or(max_seq_len, |limit| max_seq_len.min(limit))
}

pub(super) fn progress_bar(show: bool, steps: u64, task: &str) -> ProgressBar {
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
