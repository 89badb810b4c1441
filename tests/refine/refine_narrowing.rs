//! What a stage that is not significant hands to the next stage (`on_undecided`), end to end on the synthetic space
//! with known true means: S1's spindle and uniform are equal, bottleneck is far worse; S2 then samples under the
//! union of the first two (`KeepAll`), under the named one (`Keep`), or under the best mean (`Best`).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

use peftspace_core::refine::{
    self, NoProgress, SerialPool, SyntheticExecutor, SyntheticScores, SyntheticSpace,
};
use peftspace_core::spec::{ExperimentSpec, TaskSpec};
use peftspace_core::store::ResultStore;
use peftspace_core::trial::{TrialExecutor, TrialOutcome, TrialSpec};
use peftspace_core::Result;

fn spec(policy: &str) -> ExperimentSpec {
    let text = format!(
        r#"ExperimentSpec(
    name: "narrowing",
    backbone: (path: Some("unused-by-the-synthetic-executor")),
    tasks: [(id: "sst2")],
    seeds: [1],
    seed: 7,
    samples: 8,
    {policy}
    stages: [
        (name: "S1", dimension: Grouping, candidates: ["spindle", "uniform", "bottleneck"]),
        (name: "S2", dimension: Allocation, candidates: ["uniform", "increasing"]),
    ],
)"#
    );
    ron::from_str(&text).expect("experiment parses")
}

/// Records the trials it runs.
struct Recording {
    inner: SyntheticExecutor,
    ran: Mutex<Vec<String>>,
}

impl Recording {
    fn new() -> Self {
        Recording {
            inner: SyntheticExecutor {
                scores: Some(SyntheticScores {
                    means: vec![
                        ("grouping=spindle".into(), 0.70),
                        ("grouping=uniform".into(), 0.70),
                        ("grouping=bottleneck".into(), 0.40),
                    ],
                    sd: 0.01,
                }),
                ..Default::default()
            },
            ran: Mutex::new(Vec::new()),
        }
    }
}

impl TrialExecutor for Recording {
    fn backbone_identity(&self) -> Result<String> {
        self.inner.backbone_identity()
    }
    fn data_fingerprint(&self, task: &TaskSpec) -> Result<String> {
        self.inner.data_fingerprint(task)
    }
    fn run(&self, trial: &TrialSpec) -> Result<TrialOutcome> {
        self.ran.lock().expect("lock").push(trial.id.clone());
        self.inner.run(trial)
    }
}

fn run(dir: &Path, spec: &ExperimentSpec, executor: &Recording) -> refine::RunOutcome {
    let space = SyntheticSpace::new(
        spec.groups,
        spec.strategies.iter().map(|s| s.name.clone()).collect(),
        spec.budget,
    );
    let mut store = ResultStore::open(dir).expect("store");
    let mut pool = SerialPool {
        executor,
        population: 1,
    };
    refine::run_experiment(
        spec,
        &space,
        executor,
        &mut pool,
        &mut store,
        &mut NoProgress,
        &AtomicBool::new(false),
    )
    .expect("run")
}

/// The groupings S2's designs were drawn under.
fn s2_groupings(outcome: &refine::RunOutcome) -> BTreeSet<String> {
    outcome.plan.stages[1]
        .candidates
        .iter()
        .flat_map(|c| &c.designs)
        .filter_map(|d| {
            d.design
                .text
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix("grouping="))
                .map(str::to_string)
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn an_undecided_stage_hands_on_the_union_of_the_candidates_still_in_the_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outcome = run(dir.path(), &spec(""), &Recording::new());
    let s1 = &outcome.decisions[0];
    let s1_outcome = s1.outcome.as_ref().expect("decided").outcome;
    assert_eq!(s1_outcome.as_str(), "undecided", "{}", s1.summary);
    // Bottleneck is significantly worse than the winner: out. The two equal candidates both go on.
    assert_eq!(s2_groupings(&outcome), set(&["spindle", "uniform"]));
    assert!(
        outcome.plan.stages[1].space.starts_with("any of "),
        "{}",
        outcome.plan.stages[1].space
    );
    assert_eq!(outcome.plan.on_undecided.as_deref(), Some("KeepAll"));
}

#[test]
fn keep_names_the_candidate_and_best_takes_the_best_mean_whatever_its_significance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keep = run(
        dir.path(),
        &spec(r#"on_undecided: Keep("uniform"),"#),
        &Recording::new(),
    );
    assert_eq!(s2_groupings(&keep), set(&["uniform"]));

    let dir = tempfile::tempdir().expect("tempdir");
    let best = run(dir.path(), &spec("on_undecided: Best,"), &Recording::new());
    let winner = best.decisions[0]
        .winner_name()
        .expect("a winner")
        .to_string();
    assert_eq!(s2_groupings(&best), set(&[winner.as_str()]));
}

#[test]
fn a_folder_planned_before_on_undecided_existed_resumes_with_its_own_designs() {
    // A run whose later stages were sampled under the best mean, as every run was before the option...
    let dir = tempfile::tempdir().expect("tempdir");
    run(dir.path(), &spec("on_undecided: Best,"), &Recording::new());
    // ...and whose plan.json, written then, has no `on_undecided`.
    let path = dir.path().join("plan.json");
    let mut plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("plan")).expect("json");
    plan.as_object_mut().expect("object").remove("on_undecided");
    std::fs::write(&path, serde_json::to_string_pretty(&plan).expect("json")).expect("write");
    // Rerun with today's default: nothing is trained again, and the plan stays as it was.
    let again = Recording::new();
    let outcome = run(dir.path(), &spec(""), &again);
    assert!(
        again.ran.lock().expect("lock").is_empty(),
        "trials ran again"
    );
    assert_eq!(outcome.plan.on_undecided, None);
    assert_eq!(s2_groupings(&outcome).len(), 1);
}
