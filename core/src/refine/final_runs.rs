//! The final runs: the best designs of the search and the baselines, trained on the whole training sets with seeds of
//! their own and scored on the dev sets; with `final_runs.save`, the folders their trained designs go to.

use crate::spec::{ExperimentSpec, FinalRunsSpec};
use crate::store::ResultStore;
use crate::trial::{Split, TrialSpec};
use crate::{Error, Result};

use super::decision::StageDecision;
use super::plan::{FinalMethod, FinalPlan, PlannedTrial, SearchPlan, StagePlan};
use super::runner::TrialFactory;
use super::search_space::{DesignRecord, SearchSpace};

/// The folder of a results directory that holds the final runs' saved designs, one `<trial id>/` each
/// (`final_runs.save`).
pub const FINAL_DESIGNS_DIR: &str = "final";

/// The final runs: the `top` best designs of the winning population of the last decided stage, then the baselines,
/// each on every final task and seed. Unlike the search they train on the whole training set, with seeds the search
/// never used, and are scored on the official dev set, so the best designs and the baselines are measured alike
/// and on examples that chose nothing.
pub(super) fn plan_final(
    spec: &ExperimentSpec,
    final_spec: &FinalRunsSpec,
    plan: &SearchPlan,
    decisions: &[StageDecision],
    space: &dyn SearchSpace,
    store: &ResultStore,
    factory: &mut TrialFactory<'_>,
) -> Result<(FinalPlan, Vec<(String, TrialSpec)>)> {
    let last = plan
        .stages
        .iter()
        .zip(decisions)
        .rev()
        .find(|(_, d)| d.winner.is_some());
    let best = last.map_or_else(Vec::new, |(stage, decision)| {
        best_designs(stage, decision, store, final_spec.top)
    });
    let tasks = final_spec
        .tasks
        .clone()
        .unwrap_or_else(|| spec.tasks.clone());
    let seeds = final_spec.seeds_after(&spec.seeds);
    if let Some(seed) = seeds.iter().find(|s| spec.seeds.contains(s)) {
        return Err(Error::msg(format!(
            "final_runs.seeds: seed {seed} is also a search seed; final runs need seeds the search never trained with"
        )));
    }
    let mut training = spec.training.clone();
    // Final runs train to the end: pruning is a search economy, and a final score must be a full run's.
    training.prune = None;
    // Final runs are scored on the dev set, so they report their last epoch: selecting the best epoch there would
    // report the score the selection was made on (an optimistic, leaked estimate). `select: Best` stays a choice of
    // the search, whose trials select on the validation split.
    training.select = crate::spec::Select::Last;
    if let Some(epochs) = final_spec.epochs {
        training.epochs = epochs;
    }
    let mut methods: Vec<(String, DesignRecord)> = best
        .into_iter()
        .enumerate()
        .map(|(i, d)| (format!("best{}", i + 1), d))
        .collect();
    let mut design_baselines = 0;
    for name in &final_spec.baselines {
        let design = space.baseline(name)?;
        // A design text is named by its place among the design baselines; its text is in the `design` column.
        let method = if crate::design::is_design_text(name) {
            design_baselines += 1;
            format!("design{design_baselines}")
        } else {
            name.clone()
        };
        methods.push((method, design));
    }
    let save_root = if final_spec.save {
        let dir = store.dir().join(FINAL_DESIGNS_DIR);
        // Absolute, so that workers and scheduler tasks started elsewhere write to the same place.
        Some(std::path::absolute(&dir).map_err(|e| Error::io(&dir, e))?)
    } else {
        None
    };
    let mut trials = Vec::new();
    let mut final_plan = FinalPlan {
        tasks: tasks.iter().map(|t| t.id.clone()).collect(),
        seeds: seeds.clone(),
        epochs: training.epochs,
        methods: Vec::new(),
    };
    for (name, design) in methods {
        let mut planned = Vec::new();
        for task in &tasks {
            for &seed in &seeds {
                let mut trial = factory.trial(&design.text, task, seed, &training, Split::Dev)?;
                // Full fine-tuning changes the backbone itself, which a saved design does not hold.
                if !trial.is_full_fine_tuning() {
                    trial.save = save_root.as_ref().map(|root| root.join(&trial.id));
                }
                planned.push(PlannedTrial {
                    id: trial.id.clone(),
                    task: task.id.clone(),
                    seed,
                });
                trials.push((name.clone(), trial));
            }
        }
        final_plan.methods.push(FinalMethod {
            name,
            design,
            trials: planned,
        });
    }
    Ok((final_plan, trials))
}

/// Whether a stored trial that should have written its trained design has none yet (saving was turned on after it
/// ran, or its folder was removed): it is trained again to write it; its stored record stays. A trial that did not
/// end well has nothing to save.
pub(super) fn unsaved(store: &ResultStore, trial: &TrialSpec) -> bool {
    let Some(dir) = &trial.save else {
        return false;
    };
    let ended_well = store
        .get(&trial.id)
        .is_some_and(|r| r.outcome.status.is_ok());
    ended_well && !dir.join(crate::saved::MANIFEST_FILE).is_file()
}

/// The `top` best distinct designs of the winning candidate's population, by design score.
fn best_designs(
    stage: &StagePlan,
    decision: &StageDecision,
    store: &ResultStore,
    top: usize,
) -> Vec<DesignRecord> {
    let Some(w) = decision.winner else {
        return Vec::new();
    };
    let mut scored: Vec<(f64, &DesignRecord)> = Vec::new();
    for design in &stage.candidates[w].designs {
        // Only designs trained to the end: a pruned one was stopped for a low score.
        let primaries: Option<Vec<f64>> = design
            .trials
            .iter()
            .map(|t| {
                store
                    .get(&t.id)
                    .filter(|r| r.outcome.status.is_ok())
                    .and_then(|r| r.outcome.primary)
            })
            .collect();
        if let Some(p) = primaries.filter(|p| !p.is_empty()) {
            scored.push((p.iter().sum::<f64>() / p.len() as f64, &design.design));
        }
    }
    // Highest score first; equal scores keep sampling order.
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut out: Vec<DesignRecord> = Vec::new();
    for (_, design) in scored {
        if out.len() == top {
            break;
        }
        if !out.iter().any(|d| d.text == design.text) {
            out.push(design.clone());
        }
    }
    out
}
