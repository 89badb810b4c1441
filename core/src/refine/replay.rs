//! Replaying a race over a stored full run: no training, only the stored scores in their stored design order.
//! It answers, per stage, whether racing would have reached the decision the full protocol reached, and with how
//! many of its trials.

use serde::Serialize;

use crate::spec::{DecisionRule, DivergedRule, RaceSpec};
use crate::store::ResultStore;

use super::decision::decide_stage;
use super::plan::{SearchPlan, StagePlan};
use super::race::RacePlan;

/// One stage replayed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RaceReplay {
    pub stage: String,
    /// What the stored populations decide (all their designs).
    pub full_winner: Option<String>,
    /// What the race decides over the same designs, looking at them in order.
    pub race_winner: Option<String>,
    /// Whether the race's decision is significant (every other candidate dropped).
    pub race_significant: bool,
    /// (candidate, round, corrected p) for every candidate the race dropped.
    pub dropped: Vec<(String, usize, f64)>,
    pub rounds: usize,
    pub trials_used: usize,
    pub trials_full: usize,
}

impl RaceReplay {
    pub fn same_decision(&self) -> bool {
        self.full_winner == self.race_winner
    }
}

/// Replays `race` over every decided stage of a stored run. The cap of a stage's race is its largest stored
/// population (the run's N). A stage that raced when it ran is replayed over the designs it has.
pub fn replay_race(
    plan: &SearchPlan,
    store: &ResultStore,
    race: &RaceSpec,
    rule: DecisionRule,
) -> Vec<RaceReplay> {
    plan.stages
        .iter()
        .filter(|s| s.skipped.is_none())
        .map(|stage| replay_stage(stage, store, race, rule, plan.diverged, plan.margin()))
        .collect()
}

fn replay_stage(
    stage: &StagePlan,
    store: &ResultStore,
    race: &RaceSpec,
    rule: DecisionRule,
    diverged: DivergedRule,
    margin: f64,
) -> RaceReplay {
    let stored = StagePlan {
        race: None,
        ..stage.clone()
    };
    let full = decide_stage(&stored, store, rule, diverged, margin);
    let cap = stage
        .candidates
        .iter()
        .map(|c| c.designs.len())
        .max()
        .unwrap_or(0);
    let raced_plan = StagePlan {
        race: Some(RacePlan::new(race, cap)),
        ..stored
    };
    let raced = decide_stage(&raced_plan, store, rule, diverged, margin);
    let summary = raced.race;
    RaceReplay {
        stage: stage.name.clone(),
        full_winner: full.winner_name().map(str::to_string),
        race_winner: raced.winner_name().map(str::to_string),
        race_significant: raced
            .winner
            .is_some_and(|w| raced.candidates[w].significant),
        dropped: raced
            .candidates
            .iter()
            .filter_map(|c| {
                let r = c.race?;
                Some((c.candidate.clone(), r.dropped_in?, r.drop_p?))
            })
            .collect(),
        rounds: summary.map_or(0, |s| s.looks_done),
        trials_used: summary.map_or(0, |s| s.trials_used),
        trials_full: summary.map_or(0, |s| s.trials_full),
    }
}

/// A plain-text table of replayed stages, with the totals.
pub fn replay_table(replays: &[RaceReplay]) -> String {
    let mut out = format!(
        "{:<6} {:<22} {:<22} {:>5} {:>6} {:>14}  {}\n",
        "stage", "full protocol", "race", "same", "rounds", "trials", "dropped (round, p)"
    );
    for r in replays {
        let dropped: Vec<String> = r
            .dropped
            .iter()
            .map(|(c, round, p)| format!("{c} ({round}, {p:.1e})"))
            .collect();
        out.push_str(&format!(
            "{:<6} {:<22} {:<22} {:>5} {:>6} {:>14}  {}\n",
            r.stage,
            r.full_winner.as_deref().unwrap_or("-"),
            format!(
                "{}{}",
                r.race_winner.as_deref().unwrap_or("-"),
                if r.race_significant { " *" } else { "" }
            ),
            if r.same_decision() { "yes" } else { "NO" },
            r.rounds,
            format!("{}/{}", r.trials_used, r.trials_full),
            dropped.join(", ")
        ));
    }
    let used: usize = replays.iter().map(|r| r.trials_used).sum();
    let full: usize = replays.iter().map(|r| r.trials_full).sum();
    let same = replays.iter().filter(|r| r.same_decision()).count();
    out.push_str(&format!(
        "same decision in {same} of {} stages; {used} of {full} trials ({:.0} %); `*`: every other candidate \
         dropped\n",
        replays.len(),
        if full == 0 {
            0.0
        } else {
            100.0 * used as f64 / full as f64
        }
    ));
    out
}
