//! Honest final runs on the synthetic space and executor: search trials are scored on the validation split held out
//! of the training set, final runs (best designs and baselines alike) on the dev set with seeds the search never
//! used; design texts are baselines like strategy names; bad final-run settings point at their place in the file.

use crate::refine_support;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

use peftspace_core::experiment;
use peftspace_core::model::ModelFolder;
use peftspace_core::refine::{self, NoProgress, SerialPool, SyntheticExecutor, SyntheticSpace};
use peftspace_core::registry::registries;
use peftspace_core::spec::{ExperimentSpec, TaskSpec};
use peftspace_core::store::{CodeProvenance, ResultStore};
use peftspace_core::trial::{Split, TrialExecutor, TrialOutcome, TrialSpec};
use peftspace_core::{report, Result};
// Linked for their registry entries (the tiny BERT, the strategies).
use peftspace_backbones as _;
use peftspace_plugins as _;

/// A design text of the synthetic experiment's four groups (12 layers), used as a baseline.
const PUBLISHED: &str = "g=3,3,3,3 a=0.25,0.25,0.25,0.25 t=1111 s=AL|P|L|BL";

fn spec_with_design_baseline() -> ExperimentSpec {
    let text = refine_support::experiment_ron(3).replace(
        r#"baselines: ["lora", "full"]"#,
        &format!(r#"baselines: ["lora", "full", "{PUBLISHED}"]"#),
    );
    ron::from_str(&text).expect("test experiment parses")
}

/// Keeps every trial it is asked to run.
struct Recording {
    inner: SyntheticExecutor,
    seen: Mutex<Vec<TrialSpec>>,
}

impl TrialExecutor for Recording {
    fn backbone_identity(&self) -> Result<String> {
        self.inner.backbone_identity()
    }
    fn data_fingerprint(&self, task: &TaskSpec) -> Result<String> {
        self.inner.data_fingerprint(task)
    }
    fn run(&self, trial: &TrialSpec) -> Result<TrialOutcome> {
        self.seen.lock().expect("lock").push(trial.clone());
        self.inner.run(trial)
    }
}

fn run(
    dir: &Path,
    spec: &ExperimentSpec,
    executor: &dyn TrialExecutor,
) -> Result<refine::RunOutcome> {
    let space = SyntheticSpace::new(
        spec.groups,
        spec.strategies.iter().map(|s| s.name.clone()).collect(),
        spec.budget,
    );
    let mut store = ResultStore::open(dir)?;
    let manifest = refine::manifest(spec, executor)?;
    store.check_manifest(
        &manifest,
        &CodeProvenance::new("test", &[] as &[&Path])?,
        false,
    )?;
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
}

#[test]
fn search_trials_score_on_the_validation_split_and_final_runs_on_dev_with_fresh_seeds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = spec_with_design_baseline();
    let executor = Recording {
        inner: SyntheticExecutor::default(),
        seen: Mutex::new(Vec::new()),
    };
    let outcome = run(dir.path(), &spec, &executor).expect("run");
    let seen = executor.seen.lock().expect("lock").clone();
    let final_plan = outcome
        .plan
        .final_runs
        .as_ref()
        .expect("final runs planned");
    let final_ids: BTreeSet<&str> = final_plan
        .methods
        .iter()
        .flat_map(|m| m.trials.iter().map(|t| t.id.as_str()))
        .collect();
    let (finals, search): (Vec<&TrialSpec>, Vec<&TrialSpec>) =
        seen.iter().partition(|t| final_ids.contains(t.id.as_str()));
    assert!(!search.is_empty() && !finals.is_empty());
    let validation = Split::Validation {
        fraction: spec.validation_fraction,
        seed: spec.seed,
    };
    assert_eq!(spec.validation_fraction, 0.1, "the documented default");
    for trial in &search {
        assert_eq!(trial.split, validation, "search trial {}", trial.design);
    }
    for trial in &finals {
        assert_eq!(trial.split, Split::Dev, "final trial {}", trial.design);
    }
    // Fresh seeds: none of the final runs' seeds trained a search trial.
    let search_seeds: BTreeSet<u64> = search.iter().map(|t| t.seed).collect();
    let final_seeds: BTreeSet<u64> = finals.iter().map(|t| t.seed).collect();
    assert_eq!(final_seeds, BTreeSet::from([2, 3, 4]));
    assert!(
        search_seeds.is_disjoint(&final_seeds),
        "{search_seeds:?} vs {final_seeds:?}"
    );
    // The best design is the search's, yet its final trials are new ones: other seeds and another split.
    let best = &final_plan.methods[0];
    assert_eq!(best.name, "best1");
    assert!(search.iter().any(|t| t.design == best.design.text));
    // Baselines run exactly as the best design does; the design text is named by its place.
    let names: Vec<&str> = final_plan.methods.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["best1", "lora", "full", "design1"]);
    assert_eq!(final_plan.methods[3].design.text, PUBLISHED);
    for method in &final_plan.methods {
        assert_eq!(
            method.trials.len(),
            2 * 3,
            "{}: two tasks × three seeds",
            method.name
        );
    }
    // trials.csv says what each trial was scored on.
    report::write_reports(dir.path()).expect("reports");
    let rows = refine_support::read_csv(&dir.path().join("trials.csv"));
    for row in &rows {
        let expected = if row["stage"] == "final" {
            "dev"
        } else {
            "validation"
        };
        assert_eq!(row["scored_on"], expected, "{row:?}");
    }
    let methods = refine_support::read_csv(&dir.path().join("final.csv"));
    assert!(methods
        .iter()
        .any(|r| r["method"] == "design1" && r["design"] == PUBLISHED));
}

/// final.csv compares best1 with every other method, paired by (seed, task): the mean difference recomputed from
/// trials.csv, the sign-flip p (exact over 2⁶ sign patterns) Holm-adjusted over the three methods; with six pairs
/// and three comparisons no p can reach 0.05, and the final table says the comparison is descriptive.
#[test]
fn the_final_comparison_is_paired_by_seed_and_task_and_says_when_it_is_only_descriptive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = spec_with_design_baseline();
    let executor = Recording {
        inner: SyntheticExecutor::default(),
        seen: Mutex::new(Vec::new()),
    };
    run(dir.path(), &spec, &executor).expect("run");
    report::write_reports(dir.path()).expect("reports");
    let trials = refine_support::read_csv(&dir.path().join("trials.csv"));
    let final_csv = refine_support::read_csv(&dir.path().join("final.csv"));
    let plan = report::read_plan(dir.path()).expect("plan");
    let final_plan = plan.final_runs.as_ref().expect("final runs");
    let score = |method: &str, task: &str, seed: u64| -> Option<f64> {
        let m = final_plan
            .methods
            .iter()
            .find(|m| m.name == method)
            .expect("method");
        let id = &m
            .trials
            .iter()
            .find(|t| t.task == task && t.seed == seed)
            .expect("trial")
            .id;
        // A diverged run has no score, and its (seed, task) pair drops out of that comparison.
        trials.iter().find(|r| &r["trial_id"] == id).expect("row")["primary"]
            .parse()
            .ok()
    };
    let best_row = final_csv
        .iter()
        .find(|r| r["method"] == "best1")
        .expect("best1");
    assert_eq!(best_row["diff"], "");
    for method in ["lora", "full", "design1"] {
        let mut d = Vec::new();
        for &seed in &final_plan.seeds {
            for task in &final_plan.tasks {
                if let (Some(a), Some(b)) = (score("best1", task, seed), score(method, task, seed))
                {
                    d.push(a - b);
                }
            }
        }
        let row = final_csv
            .iter()
            .find(|r| r["method"] == method)
            .expect("row");
        let diff: f64 = row["diff"].parse().expect("diff");
        let mean = d.iter().sum::<f64>() / d.len() as f64;
        assert!((diff - mean).abs() < 1e-9, "{method}: {diff} vs {mean}");
        let p: f64 = row["p"].parse().expect("p");
        // Exact over 2ⁿ sign patterns (n ≤ 6); Holm over 3 comparisons multiplies the smallest by 3.
        assert!(p >= 3.0 * 2.0 / 64.0 - 1e-12 && p <= 1.0, "{method}: p {p}");
        assert!(d.len() >= 4, "{method}: {} pairs", d.len());
        let (low, high): (f64, f64) = (
            row["diff_ci_low"].parse().expect("low"),
            row["diff_ci_high"].parse().expect("high"),
        );
        assert!(
            low <= diff && diff <= high,
            "{method}: [{low}, {high}] around {diff}"
        );
    }
    let table =
        report::final_table(&plan, &ResultStore::read(dir.path()).expect("store")).expect("table");
    assert!(
        table.contains("vs lora") && table.contains("descriptive only: with "),
        "{table}"
    );
}

#[test]
fn the_validation_fraction_is_part_of_every_search_trial_id() {
    let spec = spec_with_design_baseline();
    let mut other = spec.clone();
    other.validation_fraction = 0.2;
    let ids = |spec: &ExperimentSpec| -> (BTreeSet<String>, BTreeSet<String>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let outcome = run(dir.path(), spec, &SyntheticExecutor::default()).expect("run");
        let search = outcome
            .plan
            .trial_contexts()
            .iter()
            .filter(|(stage, _, _)| *stage != "final")
            .map(|(_, _, t)| t.id.clone())
            .collect();
        let baselines = outcome
            .plan
            .final_runs
            .as_ref()
            .expect("final")
            .methods
            .iter()
            .filter(|m| m.name != "best1")
            .flat_map(|m| m.trials.iter().map(|t| t.id.clone()))
            .collect();
        (search, baselines)
    };
    let (search_a, baselines_a) = ids(&spec);
    let (search_b, baselines_b) = ids(&other);
    assert!(search_a.is_disjoint(&search_b));
    // The final runs do not use the split: the same baselines have the same trials.
    assert_eq!(baselines_a, baselines_b);
}

#[test]
fn a_library_caller_cannot_reuse_a_search_seed_in_the_final_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = spec_with_design_baseline();
    if let Some(f) = spec.final_runs.as_mut() {
        f.seeds = Some(vec![1, 5]);
    }
    let err = run(dir.path(), &spec, &SyntheticExecutor::default())
        .expect_err("seed 1 trained the search")
        .to_string();
    assert!(
        err.contains("final_runs.seeds") && err.contains("seed 1"),
        "{err}"
    );
}

/// An experiment on the tiny BERT (2 layers) with `final_runs` as given.
fn tiny(final_runs: &str) -> String {
    format!(
        r#"ExperimentSpec(
    name: "honest",
    backbone: (path: "model"),
    tasks: [(id: "sst2")],
    seeds: [1, 2],
    groups: 2,
    strategies: [(name: "lora"), (name: "adapter")],
    final_runs: ({final_runs}),
)
"#
    )
}

fn validation_error(text: &str) -> String {
    let reg = registries().expect("registries");
    experiment::parse_str(text, "honest.ron")
        .and_then(|p| p.validate(&reg))
        .expect_err("refused")
        .to_string()
}

#[test]
fn final_run_settings_are_refused_at_their_place_in_the_file() {
    let err = validation_error(&tiny(r#"seeds: [3, 2]"#));
    assert!(
        err.starts_with("honest.ron:8:")
            && err.contains("final_runs.seeds[1]: seed 2 is also a search seed"),
        "{err}"
    );
    assert!(err.contains("e.g. [3, 4, 5, 6, 7, 8, 9, 10]"), "{err}");
    let err = validation_error(&tiny(
        r#"baselines: ["lora", "g=1,1 a=0.5,0.5 t=11 s=L|Q"]"#,
    ));
    assert!(err.starts_with("honest.ron:8:"), "{err}");
    assert!(err.contains("final_runs.baselines[1]"), "{err}");
    // A strategy the registries know but the experiment does not list.
    let err = validation_error(&tiny(r#"baselines: ["g=1,1 a=0.5,0.5 t=11 s=L|B"]"#));
    assert!(
        err.contains("final_runs.baselines[0]") && err.contains("`bitfit`"),
        "{err}"
    );
    let err = validation_error(&tiny(r#"baselines: ["lora", "lorra"]"#));
    assert!(
        err.contains("final_runs.baselines[1]") && err.contains("design text"),
        "{err}"
    );
    let err = validation_error(&tiny("").replace(
        "seeds: [1, 2],",
        "seeds: [1, 2],\n    validation_fraction: 1.0,",
    ));
    assert!(
        err.starts_with("honest.ron:6:") && err.contains("validation_fraction"),
        "{err}"
    );
    // Valid: fresh seeds, names and a design text.
    let reg = registries().expect("registries");
    experiment::parse_str(
        &tiny(r#"seeds: [3], baselines: ["lora", "full", "g=1,1 a=0.5,0.5 t=11 s=L|AL"]"#),
        "honest.ron",
    )
    .and_then(|p| p.validate(&reg))
    .expect("valid");
}

#[test]
fn a_design_baseline_that_does_not_fit_the_backbone_is_refused_at_its_place() {
    let reg = registries().expect("registries");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-bert");
    let info = ModelFolder::open(&fixture)
        .and_then(|m| m.describe(&reg))
        .expect("tiny-bert");
    // Three layers for a two-layer backbone.
    let text = tiny(r#"baselines: ["lora", "g=2,1 a=0.5,0.5 t=11 s=L|L"]"#);
    let exp = experiment::parse_str(&text, "honest.ron")
        .and_then(|p| p.validate(&reg))
        .expect("valid without the backbone");
    let err = match refine::ExperimentSpace::for_experiment(&exp, info.clone(), &reg) {
        Ok(_) => panic!("a three-layer design on a two-layer backbone was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.starts_with("honest.ron:8:"), "{err}");
    assert!(
        err.contains("final_runs.baselines[1]") && err.contains("covers 3 layers"),
        "{err}"
    );
}
