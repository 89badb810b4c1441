//! Progressive refinement: stages in order, populations of designs per candidate, decisions with statistics,
//! the winning constraint carried into the next stage, and optional final runs.
//!
//! The runner reaches trials only through [`TrialPool`] (which runs many trials, perhaps in other processes) and
//! [`TrialExecutor`] (which runs one), and designs only through [`SearchSpace`], so it is tested end to end with the
//! [`SyntheticSpace`] and [`SyntheticExecutor`].

#[cfg(test)]
mod calibration_tests;
mod cost;
mod coverage;
mod decision;
mod experiment_space;
mod final_runs;
mod narrowing;
mod outcome;
mod plan;
mod populations;
mod race;
mod replay;
mod rounds;
mod runner;
mod search_space;
mod synthetic;

pub use cost::{
    calibrate, compute_plan, known_glue_size, task_size, Calibration, ComputePlan, SizeSource,
    StageCost, TaskSize, Work, ESTIMATE_RANGE,
};
pub use coverage::{
    fixed_size_warnings, grouping_coverage, CandidateCoverage, StageCoverage, COUNT_LIMIT,
};
pub use decision::{
    decide_stage, CandidateStats, Comparison, RaceSummary, StageDecision, ALPHA,
    BOOTSTRAP_RESAMPLES, CI_LEVEL,
};
pub use experiment_space::ExperimentSpace;
pub use final_runs::FINAL_DESIGNS_DIR;
pub use outcome::{
    pooled_sd, stage_outcome, MeanComparison, Outcome, StageOutcome, DEFAULT_EQUIVALENCE_MARGIN,
};
pub use plan::{
    CandidatePlan, FinalMethod, FinalPlan, PlannedDesign, PlannedTrial, SearchPlan, StagePlan,
};
pub use populations::{population_span, populations};
pub use race::{
    race, DesignScore, LookThresholds, NextLook, RaceCandidate, RaceEntry, RacePlan, RaceRule,
    RaceState,
};
pub use replay::{replay_race, replay_table, RaceReplay};
pub use runner::{manifest, run_experiment, trial_span, RunOutcome};
pub use search_space::{DesignRecord, SearchSpace, UnionSpace};
pub use synthetic::{SyntheticExecutor, SyntheticScores, SyntheticSpace};

use std::sync::atomic::{AtomicBool, Ordering};

use crate::trial::{TrialExecutor, TrialOutcome, TrialRecord, TrialSpec};
use crate::{Error, Result};

/// Runs a batch of trials and hands each finished one to `done` (always on the calling thread, so only one place
/// appends to the store). It stops dispatching new trials once `stop` is set.
pub trait TrialPool {
    fn run_batch(
        &mut self,
        trials: Vec<TrialSpec>,
        stop: &AtomicBool,
        done: &mut dyn FnMut(&TrialSpec, TrialOutcome) -> Result<()>,
    ) -> Result<()>;
}

/// Runs trials in this process, one population after another: populations of up to `population` trials that the
/// executor may train together ([`populations`]); 1 trains every trial alone.
pub struct SerialPool<'a> {
    pub executor: &'a dyn TrialExecutor,
    pub population: usize,
}

impl TrialPool for SerialPool<'_> {
    fn run_batch(
        &mut self,
        trials: Vec<TrialSpec>,
        stop: &AtomicBool,
        done: &mut dyn FnMut(&TrialSpec, TrialOutcome) -> Result<()>,
    ) -> Result<()> {
        for population in populations(trials, self.executor, self.population)? {
            if stop.load(Ordering::SeqCst) {
                return Err(Error::msg(INTERRUPTED));
            }
            let results = population_span(&population)
                .in_scope(|| self.executor.run_population(&population))?;
            hand_over_population(&population, results, done)?;
        }
        Ok(())
    }
}

/// Hands every finished trial of a population to `done` (each is stored as soon as the population ends), then
/// reports the first trial that could not run: it stops the run, and a rerun trains only what was not stored.
pub fn hand_over_population(
    population: &[TrialSpec],
    results: Vec<Result<TrialOutcome>>,
    done: &mut dyn FnMut(&TrialSpec, TrialOutcome) -> Result<()>,
) -> Result<()> {
    let mut first_error = None;
    for (trial, result) in population.iter().zip(results) {
        match result {
            Ok(outcome) => done(trial, outcome)?,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The message of a run stopped on request; rerunning the same command resumes it.
pub const INTERRUPTED: &str =
    "interrupted: finished trials are stored; rerun the same command to resume";

/// Hears about the run's progress (the command line draws progress bars from it).
pub trait Progress {
    /// A stage (or `final`) starts with `total` trials, `done` of them already in the store.
    fn stage_started(&mut self, stage: &str, total: usize, done: usize);
    /// One trial of `candidate` finished.
    fn trial_finished(&mut self, stage: &str, candidate: &str, record: &TrialRecord);
    /// A stage's decision, once all its trials are in.
    fn stage_decided(&mut self, decision: &StageDecision);
    /// Anything else worth telling.
    fn note(&mut self, text: &str);
}

/// Ignores all progress.
pub struct NoProgress;

impl Progress for NoProgress {
    fn stage_started(&mut self, _: &str, _: usize, _: usize) {}
    fn trial_finished(&mut self, _: &str, _: &str, _: &TrialRecord) {}
    fn stage_decided(&mut self, _: &StageDecision) {}
    fn note(&mut self, _: &str) {}
}
