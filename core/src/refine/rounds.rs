//! A raced stage, round by round: before each round the race is replayed from the plan and the store, the
//! candidates it names get their next designs, and those trials run.

use std::sync::atomic::AtomicBool;

use crate::spec::ExperimentSpec;
use crate::store::ResultStore;
use crate::{Error, Result};

use super::decision::race_state;
use super::plan::{SearchPlan, StagePlan};
use super::race::{NextLook, RaceState};
use super::runner::{extend_candidate, run_trials, save_plan, Counts, StageToRun, TrialFactory};
use super::search_space::SearchSpace;
use super::{Progress, TrialPool};

/// What running a round's trials needs besides the store.
pub(super) struct Rounds<'a> {
    pub(super) pool: &'a mut dyn TrialPool,
    pub(super) progress: &'a mut dyn Progress,
    pub(super) stop: &'a AtomicBool,
    pub(super) counts: &'a mut Counts,
}

/// Runs a raced stage (the last one in `plan`) round by round. Before each round the race is replayed from the
/// plan and the store alone, so a rerun after a kill draws the same designs, finds their trials stored and goes
/// on from the first round that is not complete.
pub(super) fn run_race(
    spec: &ExperimentSpec,
    stage: &StageToRun,
    space: &dyn SearchSpace,
    factory: &mut TrialFactory<'_>,
    plan: &mut SearchPlan,
    store: &mut ResultStore,
    rounds: &mut Rounds<'_>,
) -> Result<()> {
    let mut asked: Option<NextLook> = None;
    let mut reported = 0;
    let margin = plan.margin();
    loop {
        let stage_plan = plan
            .stages
            .last_mut()
            .ok_or_else(|| Error::msg("internal: stage plan missing"))?;
        let state = race_state(stage_plan, store, spec.decision, spec.diverged, margin)
            .ok_or_else(|| Error::msg("internal: a raced stage has no race"))?;
        for look in reported + 1..=state.looks_done {
            rounds.progress.note(&round_note(stage_plan, &state, look));
        }
        reported = state.looks_done;
        let Some(next) = state.next else {
            return Ok(());
        };
        if asked.as_ref() == Some(&next) {
            return Err(Error::msg(format!(
                "internal: round {} of stage {} did not complete its trials",
                next.look, stage.name
            )));
        }
        let mut trials = Vec::new();
        for &c in &next.candidates {
            extend_candidate(
                spec,
                stage,
                space,
                &mut stage_plan.candidates[c],
                next.designs,
                factory,
                &mut trials,
            )?;
        }
        save_plan(store, plan)?;
        run_trials(
            &format!("{} r{}", stage.name, next.look),
            trials,
            rounds.pool,
            store,
            rounds.progress,
            rounds.stop,
            rounds.counts,
        )?;
        asked = Some(next);
    }
}

/// One line for a finished round: its design count and whom it dropped.
fn round_note(stage: &StagePlan, state: &RaceState, look: usize) -> String {
    let dropped: Vec<String> = state
        .candidates
        .iter()
        .zip(&stage.candidates)
        .filter(|(r, _)| r.dropped_in == Some(look))
        .map(|(r, c)| format!("{} (p = {:.2e})", c.name, r.drop_p.unwrap_or(f64::NAN)))
        .collect();
    let n = state.looks.get(look - 1).copied().unwrap_or(0);
    if state.equivalent_in == Some(look) {
        let dropped = if dropped.is_empty() {
            String::new()
        } else {
            format!("dropped {}; ", dropped.join(", "))
        };
        return format!(
            "{} round {look} ({n} designs each): {dropped}the rest are equivalent within the margin; the race stops",
            stage.name
        );
    }
    if dropped.is_empty() {
        format!(
            "{} round {look} ({n} designs each): nobody dropped",
            stage.name
        )
    } else {
        format!(
            "{} round {look} ({n} designs each): dropped {}",
            stage.name,
            dropped.join(", ")
        )
    }
}
