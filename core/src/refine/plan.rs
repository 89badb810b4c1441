//! The plan of a run: which designs each stage sampled and which trials they need. The runner writes it to
//! `plan.json` after planning each stage; `peftspace report` rebuilds every table from it and the store.

use serde::{Deserialize, Serialize};

use super::race::RacePlan;
use super::search_space::DesignRecord;
use crate::spec::DivergedRule;

/// Everything planned so far, stage by stage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SearchPlan {
    /// Experiment name.
    pub experiment: String,
    /// Root seed all design seeds derive from.
    pub root_seed: u64,
    /// Search task ids, in order.
    pub tasks: Vec<String>,
    /// The winner rule, as written in the experiment (`HighestMean`, `HighestMedian`).
    pub decision_rule: String,
    /// The share of each training set the search trials were scored on (`validation_fraction`); absent in plans
    /// written before search trials had a validation split, whose search trials were scored on the dev set.
    #[serde(default)]
    pub validation_fraction: Option<f64>,
    /// How diverged trials count in a stage's populations (plans written before the option read as `Drop`).
    #[serde(default, skip_serializing_if = "DivergedRule::is_drop")]
    pub diverged: DivergedRule,
    pub stages: Vec<StagePlan>,
    /// Present once the final runs are planned.
    pub final_runs: Option<FinalPlan>,
    /// The learning-curve pruning rule of the search trials in words, when `training.prune` is on (it changes the
    /// populations, so the stage tables say so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruning: Option<String>,
    /// The experiment's `equivalence_margin` when it set one (plans without it use
    /// [`super::DEFAULT_EQUIVALENCE_MARGIN`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equivalence_margin: Option<f64>,
    /// The experiment's `on_undecided` (`KeepAll`, `Keep("…")`, `Best`); absent in plans written before the
    /// option existed, whose runs resume with `Best`, the rule their later stages were sampled under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_undecided: Option<String>,
}

impl SearchPlan {
    /// The margin of practical equality the stages are judged with.
    pub fn margin(&self) -> f64 {
        self.equivalence_margin
            .unwrap_or(super::DEFAULT_EQUIVALENCE_MARGIN)
    }
}

/// One stage: a dimension and its candidates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StagePlan {
    pub name: String,
    /// The dimension as written in the experiment (`Grouping`, `Strategies(0)`, …).
    pub dimension: String,
    /// The space this stage started from.
    pub space: String,
    pub candidates: Vec<CandidatePlan>,
    /// Why the stage was skipped (it does not apply to the space so far), if it was.
    #[serde(default)]
    pub skipped: Option<String>,
    /// The stage's race, when the experiment races (then each candidate holds the designs its rounds drew).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub race: Option<RacePlan>,
}

/// One candidate's population.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidatePlan {
    pub name: String,
    /// Seed of this candidate (derived from root → stage → candidate).
    pub seed: u64,
    pub designs: Vec<PlannedDesign>,
    /// Why the population is smaller than asked (an impossible constraint, no feasible design), if it is.
    pub error: Option<String>,
}

/// One sampled design and its trials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedDesign {
    pub index: usize,
    /// Seed the design was drawn with (derived from root → stage → candidate → index).
    pub seed: u64,
    pub design: DesignRecord,
    pub trials: Vec<PlannedTrial>,
}

/// One trial of a design: a task and a training seed, and the trial's id in the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedTrial {
    pub id: String,
    pub task: String,
    pub seed: u64,
}

/// The final runs: best designs and baselines, on the whole training sets with seeds of their own, scored on the
/// dev sets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinalPlan {
    pub tasks: Vec<String>,
    pub seeds: Vec<u64>,
    pub epochs: usize,
    pub methods: Vec<FinalMethod>,
}

/// One row of `final.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinalMethod {
    /// `best1`, `best2`, …, a baseline name (`lora`, `full`, …), or `design1`, `design2`, … for baselines given as
    /// design texts.
    pub name: String,
    pub design: DesignRecord,
    pub trials: Vec<PlannedTrial>,
}

impl SearchPlan {
    /// What the trials of `stage` were scored on: `dev` for the final runs (and for the search trials of plans
    /// written before the validation split), else `validation`.
    pub fn scored_on(&self, stage: &str) -> &'static str {
        if stage == "final" || self.validation_fraction.is_none() {
            "dev"
        } else {
            "validation"
        }
    }

    /// Every planned trial id with the stage and candidate it belongs to (final runs as stage `final`).
    pub fn trial_contexts(&self) -> Vec<(&str, &str, &PlannedTrial)> {
        let mut out = Vec::new();
        for stage in &self.stages {
            for candidate in &stage.candidates {
                for design in &candidate.designs {
                    for trial in &design.trials {
                        out.push((stage.name.as_str(), candidate.name.as_str(), trial));
                    }
                }
            }
        }
        if let Some(final_runs) = &self.final_runs {
            for method in &final_runs.methods {
                for trial in &method.trials {
                    out.push(("final", method.name.as_str(), trial));
                }
            }
        }
        out
    }
}
