//! Stages whose populations cannot be told apart: every design scores the same, at the task's reference score. The
//! stage says it cannot decide ("no decision possible: all populations equal") and that nothing learned, instead of
//! printing a choice; a model that beats the reference is not flagged.

use crate::refine_support;

use std::sync::atomic::AtomicBool;

use peftspace_core::refine::{self, NoProgress, SerialPool, SyntheticExecutor, SyntheticSpace};
use peftspace_core::spec::{ExperimentSpec, TaskSpec};
use peftspace_core::store::{CodeProvenance, ResultStore};
use peftspace_core::trial::{TrialExecutor, TrialOutcome, TrialSpec, TrialStatus};
use peftspace_core::{report, Result};

/// Every trial scores `score`; the task's reference (majority class) is `reference`.
struct Constant {
    score: f64,
    reference: f64,
}

impl TrialExecutor for Constant {
    fn backbone_identity(&self) -> Result<String> {
        SyntheticExecutor::default().backbone_identity()
    }
    fn data_fingerprint(&self, task: &TaskSpec) -> Result<String> {
        SyntheticExecutor::default().data_fingerprint(task)
    }
    fn run(&self, trial: &TrialSpec) -> Result<TrialOutcome> {
        // The synthetic outcome's bookkeeping, with its score and status replaced (it lets some designs diverge).
        let mut outcome = SyntheticExecutor::default().run(trial)?;
        outcome.status = TrialStatus::Ok;
        outcome.primary = Some(self.score);
        outcome.reference = Some(self.reference);
        Ok(outcome)
    }
}

/// Runs the synthetic experiment's stages with `executor` and returns the stage decisions as a report renders them.
fn decisions(executor: &Constant) -> Vec<refine::StageDecision> {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec: ExperimentSpec =
        ron::from_str(&refine_support::experiment_ron(3)).expect("test experiment parses");
    let space = SyntheticSpace::new(
        spec.groups,
        spec.strategies.iter().map(|s| s.name.clone()).collect(),
        spec.budget,
    );
    let mut results = ResultStore::open(dir.path()).expect("store");
    results
        .check_manifest(
            &refine::manifest(&spec, executor).expect("manifest"),
            &CodeProvenance::new("test", &[] as &[std::path::PathBuf]).expect("provenance"),
            false,
        )
        .expect("fresh directory");
    refine::run_experiment(
        &spec,
        &space,
        executor,
        &mut SerialPool {
            executor,
            population: 1,
        },
        &mut results,
        &mut NoProgress,
        &AtomicBool::new(false),
    )
    .expect("the run goes on through tied stages");
    // The run's lock goes with its store; `report` then takes it shared.
    drop(results);
    report::write_reports(dir.path())
        .expect("reports")
        .decisions
}

#[test]
fn equal_populations_decide_nothing_and_a_majority_model_did_not_learn() {
    for decision in decisions(&Constant {
        score: 0.6042,
        reference: 0.6042,
    }) {
        assert!(decision.tied, "{}", decision.summary);
        assert!(decision.did_not_learn, "{}", decision.summary);
        assert!(
            decision
                .summary
                .contains("no decision possible: all populations equal"),
            "{}",
            decision.summary
        );
        let table = report::decisions_table(std::slice::from_ref(&decision));
        assert!(table.contains("did not learn"), "{table}");
    }
}

#[test]
fn equal_populations_above_the_reference_are_tied_but_learned() {
    for decision in decisions(&Constant {
        score: 0.8,
        reference: 0.6042,
    }) {
        assert!(decision.tied, "{}", decision.summary);
        assert!(!decision.did_not_learn, "{}", decision.summary);
        let table = report::decisions_table(std::slice::from_ref(&decision));
        assert!(!table.contains("did not learn"), "{table}");
    }
}
