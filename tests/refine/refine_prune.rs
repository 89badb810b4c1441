//! Learning-curve pruning in the refinement runner: pruned trials keep their partial score in their population,
//! stages.csv counts them and says the rule was on, the printed report says so, and final runs are never pruned.

use crate::refine_support;

use std::sync::atomic::AtomicBool;

use peftspace_core::refine::{self, NoProgress, SerialPool, SyntheticExecutor, SyntheticSpace};
use peftspace_core::spec::{ExperimentSpec, PruneSpec, PruneThreshold, TaskSpec};
use peftspace_core::store::{CodeProvenance, ResultStore};
use peftspace_core::trial::{TrialExecutor, TrialOutcome, TrialSpec, TrialStatus};
use peftspace_core::{report, Result};

/// The synthetic executor with the pruning rule applied to its score, as the trainer applies it after an epoch.
struct Pruning(SyntheticExecutor);

impl TrialExecutor for Pruning {
    fn backbone_identity(&self) -> Result<String> {
        self.0.backbone_identity()
    }
    fn data_fingerprint(&self, task: &TaskSpec) -> Result<String> {
        self.0.data_fingerprint(task)
    }
    fn run(&self, trial: &TrialSpec) -> Result<TrialOutcome> {
        let mut outcome = self.0.run(trial)?;
        let t = &trial.training;
        if let (Some(rule), Some(score)) = (t.prune, outcome.primary) {
            if outcome.status.is_ok()
                && rule.prunes(rule.after_epoch, t.epochs, score, outcome.reference)
            {
                outcome.status = TrialStatus::Pruned {
                    epoch: rule.after_epoch as u64,
                };
            }
        }
        Ok(outcome)
    }
}

fn run(dir: &std::path::Path, spec: &ExperimentSpec) -> refine::RunOutcome {
    let executor = Pruning(SyntheticExecutor::default());
    let space = SyntheticSpace::new(
        spec.groups,
        spec.strategies.iter().map(|s| s.name.clone()).collect(),
        spec.budget,
    );
    let mut results = ResultStore::open(dir).expect("store");
    results
        .check_manifest(
            &refine::manifest(spec, &executor).expect("manifest"),
            &CodeProvenance::new("test", &[] as &[std::path::PathBuf]).expect("provenance"),
            false,
        )
        .expect("manifest");
    let mut pool = SerialPool {
        executor: &executor,
        population: 1,
    };
    refine::run_experiment(
        spec,
        &space,
        &executor,
        &mut pool,
        &mut results,
        &mut NoProgress,
        &AtomicBool::new(false),
    )
    .expect("run")
}

fn spec(prune: Option<PruneSpec>) -> ExperimentSpec {
    let mut spec: ExperimentSpec =
        ron::from_str(&refine_support::experiment_ron(6)).expect("test experiment parses");
    spec.training.prune = prune;
    spec
}

#[test]
fn pruned_trials_are_counted_scored_and_reported() {
    let median_ish = 0.74;
    let dir = tempfile::tempdir().expect("tempdir");
    let outcome = run(
        dir.path(),
        &spec(Some(PruneSpec {
            after_epoch: 1,
            below: PruneThreshold::Score(median_ish),
        })),
    );
    let printed = report::write_reports(dir.path())
        .expect("report")
        .to_terminal();
    let trials = refine_support::read_csv(&dir.path().join("trials.csv"));
    let pruned: Vec<_> = trials.iter().filter(|r| r["status"] == "pruned").collect();
    assert!(
        !pruned.is_empty() && pruned.len() < trials.len(),
        "{} of {} pruned",
        pruned.len(),
        trials.len()
    );
    for row in &pruned {
        let score: f64 = row["primary"]
            .parse()
            .expect("a pruned trial keeps its partial score");
        assert!(score < median_ish, "{row:?}");
        assert_eq!(row["status_detail"], "epoch 1", "{row:?}");
        assert_ne!(
            row["stage"], "final",
            "final runs are never pruned: {row:?}"
        );
    }
    let stages = refine_support::read_csv(&dir.path().join("stages.csv"));
    let counted: usize = stages
        .iter()
        .map(|r| r["trials_pruned"].parse::<usize>().unwrap_or(0))
        .sum();
    let in_stages = pruned.len();
    assert_eq!(counted, in_stages);
    for row in &stages {
        assert_eq!(row["pruning"], "after epoch 1 below 0.74", "{row:?}");
    }
    // Pruned designs stay in their populations: only designs with a diverged or failed trial leave n.
    for d in &outcome.decisions {
        for c in &d.candidates {
            assert_eq!(c.trials_missing, 0, "{c:?}");
            assert!(
                c.n + c.trials_diverged + c.trials_failed >= c.designs_planned,
                "{c:?}"
            );
        }
    }
    assert!(outcome
        .decisions
        .iter()
        .any(|d| d.candidates.iter().any(|c| c.trials_pruned > 0)));
    assert!(
        printed.contains(&format!(
            "learning-curve pruning was on (after epoch 1 below 0.74): {in_stages} search trials pruned"
        )),
        "{printed}"
    );
}

#[test]
fn without_pruning_nothing_is_pruned_and_stages_say_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(dir.path(), &spec(None));
    let printed = report::write_reports(dir.path())
        .expect("report")
        .to_terminal();
    let stages = refine_support::read_csv(&dir.path().join("stages.csv"));
    for row in &stages {
        assert_eq!(row["pruning"], "-");
        assert_eq!(row["trials_pruned"], "0");
    }
    assert!(!printed.contains("pruning"), "{printed}");
}
