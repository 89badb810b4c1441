//! The refinement loop: plan a stage, run its missing trials, decide, narrow the space, repeat; then final runs.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::AtomicBool;

use serde_json::Value;

use crate::spec::{Dimension, ExperimentSpec, OnUndecided, TaskSpec, TrainingSpec};
use crate::store::{self, ResultStore};
use crate::{Error, Result};

use super::decision::{decide_stage, StageDecision};
use super::plan::{CandidatePlan, PlannedDesign, PlannedTrial, SearchPlan, StagePlan};
use super::race::RacePlan;
use super::rounds::{run_race, Rounds};
use super::search_space::SearchSpace;
use super::{Progress, TrialPool};
use crate::trial::TrialExecutor;
use crate::trial::{child_seed, Split, TrialRecord, TrialSpec, TrialStatus};

/// What a finished run produced.
#[derive(Debug)]
pub struct RunOutcome {
    pub plan: SearchPlan,
    pub decisions: Vec<StageDecision>,
    /// Trials executed by this invocation.
    pub trials_run: usize,
    /// Planned trials found in the store from an earlier invocation (not those this invocation stored, such as a
    /// final run that equals a stage's trial).
    pub trials_reused: usize,
}

/// The parts of an experiment that trial ids and the plan depend on, plus the backbone identity and the data
/// fingerprints. Stored as `manifest.json`; a rerun with a different manifest is refused and explained.
pub fn manifest(spec: &ExperimentSpec, executor: &dyn TrialExecutor) -> Result<Value> {
    let mut value = serde_json::to_value(spec)
        .map_err(|e| Error::msg(format!("cannot serialise the experiment: {e}")))?;
    if let Value::Object(map) = &mut value {
        // Where files live does not change results; what they contain is covered by the identities below.
        for key in ["name", "data_dir", "plugins", "backbone"] {
            map.remove(key);
        }
        // Saving the final runs' designs changes no result; it may be turned on for a folder that has them.
        if let Some(Value::Object(final_runs)) = map.get_mut("final_runs") {
            final_runs.remove("save");
        }
        map.insert(
            "backbone_identity".into(),
            Value::String(executor.backbone_identity()?),
        );
        let mut data = serde_json::Map::new();
        let final_tasks = spec
            .final_runs
            .as_ref()
            .and_then(|f| f.tasks.clone())
            .unwrap_or_default();
        for task in spec.tasks.iter().chain(final_tasks.iter()) {
            data.insert(
                task_key(task),
                Value::String(executor.data_fingerprint(task)?),
            );
        }
        map.insert("data_fingerprints".into(), Value::Object(data));
    }
    Ok(value)
}

fn task_key(task: &TaskSpec) -> String {
    serde_json::to_string(task).unwrap_or_else(|_| task.id.clone())
}

/// Builds trial specs with ids, caching the executor's identities.
pub(super) struct TrialFactory<'a> {
    spec: &'a ExperimentSpec,
    backbone: String,
    fingerprints: BTreeMap<String, String>,
    executor: &'a dyn TrialExecutor,
}

impl TrialFactory<'_> {
    pub(super) fn trial(
        &mut self,
        design: &str,
        task: &TaskSpec,
        seed: u64,
        training: &TrainingSpec,
        split: Split,
    ) -> Result<TrialSpec> {
        let key = task_key(task);
        if !self.fingerprints.contains_key(&key) {
            let fingerprint = self.executor.data_fingerprint(task)?;
            self.fingerprints.insert(key.clone(), fingerprint);
        }
        let data = &self.fingerprints[&key];
        TrialSpec::new(
            design,
            task,
            seed,
            training,
            self.spec.budget,
            &self.spec.strategies,
            &self.backbone,
            data,
            split,
        )
    }

    /// The split search trials are scored on: `validation_fraction` of each training set, or `validation.rows`
    /// spare rows outside it, drawn with the root seed, the same for every search trial so their scores compare.
    fn search_split(&self) -> Split {
        match self.spec.validation {
            Some(v) => Split::SpareRows {
                rows: v.rows,
                seed: self.spec.seed,
            },
            None => Split::Validation {
                fraction: self.spec.validation_fraction,
                seed: self.spec.seed,
            },
        }
    }
}

/// A stage to run: its name, the dimension it constrains (none for the plain S0 population) and candidates.
pub(super) struct StageToRun {
    pub(super) name: String,
    pub(super) dimension: Option<Dimension>,
    candidates: Vec<String>,
    pub(super) samples: usize,
    /// The experiment's root seed.
    root_seed: u64,
    /// What the stage hands on when it is not significant.
    on_undecided: OnUndecided,
}

impl StageToRun {
    /// Derived from root → stage → candidate.
    fn candidate_seed(&self, candidate: &str) -> u64 {
        child_seed(self.root_seed, &[&self.name, candidate])
    }
}

/// Runs the whole experiment, resuming from whatever the store already holds.
pub fn run_experiment(
    spec: &ExperimentSpec,
    space: &dyn SearchSpace,
    executor: &dyn TrialExecutor,
    pool: &mut dyn TrialPool,
    store: &mut ResultStore,
    progress: &mut dyn Progress,
    stop: &AtomicBool,
) -> Result<RunOutcome> {
    if spec.tasks.is_empty() {
        return Err(Error::msg(
            "the experiment has no tasks; add at least one to `tasks`",
        ));
    }
    if spec.seeds.is_empty() {
        return Err(Error::msg(
            "the experiment has no training seeds; set `seeds: [1]` or more",
        ));
    }
    let mut factory = TrialFactory {
        spec,
        backbone: executor.backbone_identity()?,
        fingerprints: BTreeMap::new(),
        executor,
    };
    // A run planned before `on_undecided` existed keeps the rule its later stages were sampled under.
    let legacy_narrowing = super::narrowing::plan_predates_on_undecided(store.dir());
    let mut plan = SearchPlan {
        experiment: spec.name.clone(),
        root_seed: spec.seed,
        tasks: spec.tasks.iter().map(|t| t.id.clone()).collect(),
        decision_rule: format!("{:?}", spec.decision),
        validation_fraction: Some(spec.validation_fraction),
        diverged: spec.diverged,
        stages: Vec::new(),
        final_runs: None,
        pruning: spec.training.prune.map(|p| p.describe()),
        equivalence_margin: spec.equivalence_margin,
        on_undecided: (!legacy_narrowing).then(|| format!("{:?}", spec.on_undecided)),
    };
    let stages: Vec<StageToRun> = if spec.stages.is_empty() {
        vec![StageToRun {
            name: "S0".into(),
            dimension: None,
            candidates: vec!["any".into()],
            samples: spec.samples,
            root_seed: spec.seed,
            on_undecided: OnUndecided::Best,
        }]
    } else {
        spec.stages
            .iter()
            .map(|s| StageToRun {
                name: s.name.clone(),
                dimension: Some(s.dimension),
                candidates: s.candidates.clone(),
                samples: s.samples.unwrap_or(spec.samples),
                root_seed: spec.seed,
                on_undecided: if legacy_narrowing {
                    OnUndecided::Best
                } else {
                    s.on_undecided
                        .clone()
                        .unwrap_or_else(|| spec.on_undecided.clone())
                },
            })
            .collect()
    };
    let mut counts = Counts {
        run: 0,
        reused: 0,
        stored_before: store.records().iter().map(|r| r.id.clone()).collect(),
    };
    let mut decisions = Vec::new();
    // The space so far: S0 until the first winner narrows it.
    let mut narrowed: Option<Box<dyn SearchSpace>> = None;
    for stage in &stages {
        let _stage_span = tracing::info_span!("stage", name = %stage.name).entered();
        let current: &dyn SearchSpace = narrowed.as_deref().unwrap_or(space);
        if let Some(reason) = stage.dimension.and_then(|d| current.inapplicable(d)) {
            plan.stages.push(StagePlan {
                name: stage.name.clone(),
                dimension: stage
                    .dimension
                    .map_or_else(String::new, |d| format!("{d:?}")),
                space: current.describe(),
                candidates: Vec::new(),
                skipped: Some(reason),
                race: None,
            });
            save_plan(store, &plan)?;
            let stage_plan = plan
                .stages
                .last()
                .ok_or_else(|| Error::msg("internal: stage plan missing"))?;
            let decision = decide_stage(
                stage_plan,
                store,
                spec.decision,
                spec.diverged,
                plan.margin(),
            );
            progress.stage_decided(&decision);
            decisions.push(decision);
            continue;
        }
        if let Some(race) = &spec.race {
            plan.stages.push(new_stage_plan(
                stage,
                current,
                Some(RacePlan::new(race, stage.samples)),
            ));
            let mut rounds = Rounds {
                pool: &mut *pool,
                progress: &mut *progress,
                stop,
                counts: &mut counts,
            };
            run_race(
                spec,
                stage,
                current,
                &mut factory,
                &mut plan,
                store,
                &mut rounds,
            )?;
        } else {
            let (stage_plan, trials) = plan_stage(spec, stage, current, &mut factory)?;
            plan.stages.push(stage_plan);
            save_plan(store, &plan)?;
            run_trials(
                &stage.name,
                trials,
                pool,
                store,
                progress,
                stop,
                &mut counts,
            )?;
        }
        // Stopped (Ctrl-C): the stage's populations are partial, so no decision is printed or acted on.
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::Interrupted);
        }
        let stage_plan = plan
            .stages
            .last()
            .ok_or_else(|| Error::msg("internal: stage plan missing"))?;
        let decision = decide_stage(
            stage_plan,
            store,
            spec.decision,
            spec.diverged,
            plan.margin(),
        );
        progress.stage_decided(&decision);
        if decision.winner.is_none() {
            return Err(Error::msg(format!(
                "stage {} cannot decide: no candidate has a design whose trials all succeeded (see stages.csv)",
                stage.name
            )));
        }
        if let Some(dimension) = stage.dimension {
            let (space, note) =
                super::narrowing::narrow(current, dimension, &decision, &stage.on_undecided)?;
            progress.note(&note);
            narrowed = Some(space);
        }
        decisions.push(decision);
    }
    if let Some(final_spec) = &spec.final_runs {
        let current = narrowed.as_deref().unwrap_or(space);
        let (final_plan, trials) = super::final_runs::plan_final(
            spec,
            final_spec,
            &plan,
            &decisions,
            current,
            store,
            &mut factory,
        )?;
        plan.final_runs = Some(final_plan);
        save_plan(store, &plan)?;
        let _stage_span = tracing::info_span!("stage", name = "final").entered();
        run_trials("final", trials, pool, store, progress, stop, &mut counts)?;
    }
    Ok(RunOutcome {
        plan,
        decisions,
        trials_run: counts.run,
        trials_reused: counts.reused,
    })
}

/// A stage's plan with every candidate's seed and no design yet.
fn new_stage_plan(
    stage: &StageToRun,
    space: &dyn SearchSpace,
    race: Option<RacePlan>,
) -> StagePlan {
    StagePlan {
        name: stage.name.clone(),
        dimension: stage
            .dimension
            .map_or_else(|| "None".to_string(), |d| format!("{d:?}")),
        space: space.describe(),
        candidates: stage
            .candidates
            .iter()
            .map(|name| CandidatePlan {
                name: name.clone(),
                seed: stage.candidate_seed(name),
                designs: Vec::new(),
                error: None,
            })
            .collect(),
        skipped: None,
        race,
    }
}

/// Samples every candidate's population and builds its trials (candidate-major order).
fn plan_stage(
    spec: &ExperimentSpec,
    stage: &StageToRun,
    space: &dyn SearchSpace,
    factory: &mut TrialFactory<'_>,
) -> Result<(StagePlan, Vec<(String, TrialSpec)>)> {
    let mut plan = new_stage_plan(stage, space, None);
    let mut trials = Vec::new();
    for candidate in &mut plan.candidates {
        extend_candidate(
            spec,
            stage,
            space,
            candidate,
            stage.samples,
            factory,
            &mut trials,
        )?;
    }
    Ok((plan, trials))
}

/// Draws a candidate's designs up to `upto` (design i from H(candidate seed, i), whatever was drawn before) and
/// adds their trials to `trials`. A candidate that cannot be applied, or whose sampling fails, keeps the reason.
pub(super) fn extend_candidate(
    spec: &ExperimentSpec,
    stage: &StageToRun,
    space: &dyn SearchSpace,
    candidate: &mut CandidatePlan,
    upto: usize,
    factory: &mut TrialFactory<'_>,
    trials: &mut Vec<(String, TrialSpec)>,
) -> Result<()> {
    if candidate.error.is_some() || candidate.designs.len() >= upto {
        return Ok(());
    }
    let narrowed = match stage.dimension {
        Some(dimension) => match space.constrain(dimension, &candidate.name) {
            Ok(b) => Some(b),
            Err(e) => {
                candidate.error = Some(format!("candidate cannot be applied: {e}"));
                return Ok(());
            }
        },
        None => None,
    };
    let view: &dyn SearchSpace = narrowed.as_deref().unwrap_or(space);
    for index in candidate.designs.len()..upto {
        let design_seed = child_seed(candidate.seed, &[&index.to_string()]);
        let design = match view.sample(design_seed) {
            Ok(d) => d,
            Err(e) => {
                candidate.error = Some(format!("sampling stopped at design {index}: {e}"));
                break;
            }
        };
        let mut planned = Vec::new();
        for task in &spec.tasks {
            for &train_seed in &spec.seeds {
                let trial = factory.trial(
                    &design.text,
                    task,
                    train_seed,
                    &spec.training,
                    factory.search_split(),
                )?;
                planned.push(PlannedTrial {
                    id: trial.id.clone(),
                    task: task.id.clone(),
                    seed: train_seed,
                });
                trials.push((candidate.name.clone(), trial));
            }
        }
        candidate.designs.push(PlannedDesign {
            index,
            seed: design_seed,
            design,
            trials: planned,
        });
    }
    Ok(())
}

/// Trials this invocation ran, and those an earlier one had stored.
pub(super) struct Counts {
    run: usize,
    reused: usize,
    /// Ids in the store when this invocation began: only these count as reused (a final run equal to a stage's
    /// trial of this same invocation is neither run again nor reused from an earlier run).
    stored_before: HashSet<String>,
}

/// Runs the trials not yet stored (each distinct id once) and appends their records.
#[allow(clippy::too_many_arguments)]
pub(super) fn run_trials(
    stage: &str,
    trials: Vec<(String, TrialSpec)>,
    pool: &mut dyn TrialPool,
    store: &mut ResultStore,
    progress: &mut dyn Progress,
    stop: &AtomicBool,
    counts: &mut Counts,
) -> Result<()> {
    let mut seen = HashSet::new();
    let mut candidate_of = BTreeMap::new();
    let mut missing = Vec::new();
    let mut done_before = 0;
    for (candidate, trial) in trials {
        if !seen.insert(trial.id.clone()) {
            continue;
        }
        if store.is_done(&trial.id) && !super::final_runs::unsaved(store, &trial) {
            done_before += 1;
            if counts.stored_before.contains(&trial.id) {
                counts.reused += 1;
            }
        } else {
            candidate_of.insert(trial.id.clone(), candidate);
            missing.push(trial);
        }
    }
    tracing::debug!(
        total = seen.len(),
        stored = done_before,
        to_run = missing.len(),
        "stage trials"
    );
    progress.stage_started(stage, seen.len(), done_before);
    if missing.is_empty() {
        return Ok(());
    }
    let mut on_done = |trial: &TrialSpec, outcome: super::TrialOutcome| -> Result<()> {
        let record = TrialRecord::new(trial, outcome);
        tracing::debug!(
            id = short_id(&trial.id),
            status = ?record.outcome.status,
            seconds = record.outcome.seconds,
            "trial finished"
        );
        if let TrialStatus::Failed { message } = &record.outcome.status {
            tracing::warn!("trial {} failed: {message}", record.id);
        }
        store.append(record.clone())?;
        counts.run += 1;
        let candidate = candidate_of
            .get(&trial.id)
            .map(String::as_str)
            .unwrap_or("");
        progress.trial_finished(stage, candidate, &record);
        Ok(())
    };
    pool.run_batch(missing, stop, &mut on_done)
}

/// A span for running one trial, wherever it runs (this process or a worker), so its events name the trial.
pub fn trial_span(trial: &TrialSpec) -> tracing::Span {
    tracing::info_span!(
        "trial",
        id = short_id(&trial.id),
        design = %trial.design,
        task = %trial.task.id,
        seed = trial.seed
    )
}

/// The first 12 hex digits of a trial id: enough to find it in `trials.jsonl`, short enough to read in a log.
fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

pub(super) fn save_plan(store: &ResultStore, plan: &SearchPlan) -> Result<()> {
    store::write_atomically(&store.dir().join(store::PLAN_FILE), &store::pretty(plan)?)
}
