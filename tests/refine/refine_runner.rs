//! The refinement runner end to end on the synthetic space and executor: outputs, statistics recomputed from
//! trials.csv, empty populations, resume without rerunning trials, and changed experiments.

use crate::refine_support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use peftspace_core::refine::{self, NoProgress, SerialPool, SyntheticExecutor, SyntheticSpace};
use peftspace_core::spec::{DivergedRule, ExperimentSpec, TaskSpec};
use peftspace_core::store::{CodeProvenance, ResultStore};
use peftspace_core::trial::{TrialExecutor, TrialOutcome, TrialSpec};
use peftspace_core::{report, Result};

fn spec(samples: usize) -> ExperimentSpec {
    ron::from_str(&refine_support::experiment_ron(samples)).expect("test experiment parses")
}

fn space(spec: &ExperimentSpec) -> SyntheticSpace {
    SyntheticSpace::new(
        spec.groups,
        spec.strategies.iter().map(|s| s.name.clone()).collect(),
        spec.budget,
    )
}

/// Counts executions per trial id and can stop after a number of trials.
struct Counting {
    inner: SyntheticExecutor,
    ran: Mutex<Vec<String>>,
    fail_after: Option<usize>,
    calls: AtomicUsize,
}

impl Counting {
    fn new(inner: SyntheticExecutor, fail_after: Option<usize>) -> Self {
        Counting {
            inner,
            ran: Mutex::new(Vec::new()),
            fail_after,
            calls: AtomicUsize::new(0),
        }
    }
}

impl TrialExecutor for Counting {
    fn backbone_identity(&self) -> Result<String> {
        self.inner.backbone_identity()
    }
    fn data_fingerprint(&self, task: &TaskSpec) -> Result<String> {
        self.inner.data_fingerprint(task)
    }
    fn run(&self, trial: &TrialSpec) -> Result<TrialOutcome> {
        if self
            .fail_after
            .is_some_and(|n| self.calls.fetch_add(1, Ordering::SeqCst) >= n)
        {
            return Err(peftspace_core::Error::msg("simulated crash"));
        }
        self.ran.lock().expect("lock").push(trial.id.clone());
        self.inner.run(trial)
    }
}

fn run(
    dir: &std::path::Path,
    spec: &ExperimentSpec,
    executor: &dyn TrialExecutor,
) -> Result<refine::RunOutcome> {
    let space = space(spec);
    let mut results = ResultStore::open(dir)?;
    results.check_manifest(
        &refine::manifest(spec, executor)?,
        &CodeProvenance::new("test", &[] as &[std::path::PathBuf])?,
        false,
    )?;
    let mut pool = SerialPool {
        executor,
        population: 1,
    };
    let stop = AtomicBool::new(false);
    refine::run_experiment(
        spec,
        &space,
        executor,
        &mut pool,
        &mut results,
        &mut NoProgress,
        &stop,
    )
}

fn outputs(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().to_string()))
        .filter(|n| n.ends_with(".csv") || n.ends_with(".svg"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            (
                n.clone(),
                std::fs::read_to_string(dir.join(&n)).expect("read"),
            )
        })
        .collect()
}

#[test]
fn s0_to_s4_writes_all_outputs_and_stage_statistics_match_trials() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = spec(8);
    let executor = SyntheticExecutor::default();
    let outcome = run(dir.path(), &spec, &executor).expect("run");
    assert_eq!(outcome.decisions.len(), 5);
    for d in &outcome.decisions {
        assert!(d.winner.is_some(), "{}", d.summary);
    }
    let report = report::write_reports(dir.path()).expect("report");
    let names: Vec<String> = outputs(dir.path()).into_iter().map(|(n, _)| n).collect();
    for want in [
        "trials.csv",
        "stages.csv",
        "final.csv",
        "edf_S1.svg",
        "edf_S2.svg",
        "edf_S3.svg",
        "edf_S4a.svg",
        "edf_S4b.svg",
    ] {
        assert!(
            names.contains(&want.to_string()),
            "{want} missing from {names:?}"
        );
    }
    assert_eq!(report.decisions.len(), 5);
    // Every candidate of every stage is a row; one chosen per stage.
    let stages = refine_support::read_csv(&dir.path().join("stages.csv"));
    assert_eq!(stages.len(), 5 + 3 + 3 + 3 + 2);
    assert_eq!(stages.iter().filter(|r| r["chosen"] == "true").count(), 5);
    // The synthetic space accepts every draw: one draw per design, nothing rejected.
    for row in &stages {
        assert_eq!(row["draws"], row["designs_planned"]);
        assert_eq!(row["rejection_rate"], "0");
    }
    // S1 hands on its winner when significant, else (`on_undecided: KeepAll`) every candidate still in the
    // running: the winner and those it does not beat significantly. Every later design has one of those groupings,
    // and S2 samples all of them.
    let s1: Vec<_> = stages.iter().filter(|r| r["stage"] == "S1").collect();
    let handed: std::collections::BTreeSet<&str> = s1
        .iter()
        .filter(|r| {
            r["chosen"] == "true"
                || (s1[0]["outcome"] != "significant" && r["significant"] != "true")
        })
        .map(|r| r["candidate"].as_str())
        .collect();
    let trials = refine_support::read_csv(&dir.path().join("trials.csv"));
    let mut s2_groupings = std::collections::BTreeSet::new();
    for row in trials
        .iter()
        .filter(|r| r["stage"] == "S2" || r["stage"] == "S4b")
    {
        assert!(
            handed.contains(row["group_sizes"].as_str()),
            "{} not in {handed:?}",
            row["group_sizes"]
        );
        if row["stage"] == "S2" {
            s2_groupings.insert(row["group_sizes"].as_str());
        }
    }
    assert_eq!(s2_groupings, handed);
    // 8 designs × 2 tasks × 1 seed per candidate, plus final runs: (1 best + 2 baselines) × 2 tasks × 3 seeds.
    assert_eq!(trials.len(), 16 * 16 + 18);
    assert!(refine_support::check_stages_against_trials(dir.path()) >= 11);
    let final_rows = refine_support::read_csv(&dir.path().join("final.csv"));
    let methods: Vec<&str> = final_rows.iter().map(|r| r["method"].as_str()).collect();
    assert_eq!(methods, ["best1", "lora", "full", "reference"]);
    // Fractions, with the spread and the number of seeds in their own columns.
    let mean: f64 = final_rows[0]["sst2"].parse().expect("a number");
    assert!((0.0..=1.0).contains(&mean), "{:?}", final_rows[0]);
    assert!(!final_rows[0]["sst2_std"].is_empty(), "{:?}", final_rows[0]);
    // Seeds whose run ended well (a synthetic trial sometimes diverges).
    let n: usize = final_rows[0]["sst2_n"].parse().expect("a count");
    assert!((1..=3).contains(&n), "{:?}", final_rows[0]);
    assert_eq!(
        final_rows[3]["sst2"], "0.5",
        "the synthetic tasks' reference"
    );
    assert_eq!(final_rows[2]["trainable_pct"], "100.0000");
    let svg = std::fs::read_to_string(dir.path().join("edf_S1.svg")).expect("svg");
    assert!(
        svg.contains("<svg") && svg.contains("spindle") && svg.contains("n=8"),
        "legend with n"
    );
    // Reporting again from the directory alone gives the same files.
    let before = outputs(dir.path());
    report::write_reports(dir.path()).expect("report again");
    assert_eq!(outputs(dir.path()), before);
}

#[test]
fn empty_population_gives_a_clear_decision_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = spec(4);
    let executor = SyntheticExecutor {
        diverge_when_contains: Some("grouping=spindle".into()),
        ..Default::default()
    };
    let outcome = run(dir.path(), &spec, &executor).expect("run goes on");
    let s1 = &outcome.decisions[0];
    let spindle = s1
        .candidates
        .iter()
        .find(|c| c.candidate == "spindle")
        .expect("row");
    assert_eq!(spindle.n, 0);
    assert!(!spindle.chosen);
    assert!(
        spindle.note.contains("empty population"),
        "{}",
        spindle.note
    );
    assert!(spindle.note.contains("8 diverged"), "{}", spindle.note);
    assert!(
        s1.summary.contains("empty populations: spindle"),
        "{}",
        s1.summary
    );
    report::write_reports(dir.path()).expect("report");
    let stages = refine_support::read_csv(&dir.path().join("stages.csv"));
    let row = stages
        .iter()
        .find(|r| r["stage"] == "S1" && r["candidate"] == "spindle")
        .expect("row");
    assert_eq!(row["n"], "0");
    assert_eq!(row["mean"], "");
    assert_eq!(row["trials_diverged"], "8");
    assert_eq!(row["designs_run"], "4");
    assert_eq!(row["designs_diverged"], "4");
    assert_eq!(row["diverged_rate"], "1");
    assert_eq!(row["designs_at_chance"], "0");
    let uniform = stages
        .iter()
        .find(|r| r["stage"] == "S1" && r["candidate"] == "uniform")
        .expect("row");
    let rate: f64 = uniform["diverged_rate"].parse().expect("a rate");
    let diverged: f64 = uniform["designs_diverged"].parse().expect("a count");
    assert_eq!(rate, diverged / 4.0);
}

#[test]
fn diverged_designs_can_score_at_chance_instead_of_being_dropped() {
    let ron = refine_support::experiment_ron(4)
        .replace("    samples: 4,", "    samples: 4,\n    diverged: Chance,");
    let spec: ExperimentSpec = ron::from_str(&ron).expect("test experiment parses");
    assert_eq!(spec.diverged, DivergedRule::Chance);
    let dir = tempfile::tempdir().expect("tempdir");
    let executor = SyntheticExecutor {
        diverge_when_contains: Some("grouping=spindle".into()),
        ..Default::default()
    };
    let outcome = run(dir.path(), &spec, &executor).expect("run");
    let spindle = outcome.decisions[0]
        .candidates
        .iter()
        .find(|c| c.candidate == "spindle")
        .expect("row");
    // Every spindle design diverged on both tasks: each scores the tasks' reference, 0.5 in the synthetic space.
    assert_eq!(spindle.n, 4);
    assert_eq!(spindle.scores, vec![0.5; 4]);
    assert_eq!(
        (spindle.designs_diverged, spindle.designs_at_chance),
        (4, 4)
    );
    assert_eq!(spindle.designs_learned, Some(0));
    assert!(!spindle.chosen);
    report::write_reports(dir.path()).expect("report");
    let stages = refine_support::read_csv(&dir.path().join("stages.csv"));
    let row = stages
        .iter()
        .find(|r| r["stage"] == "S1" && r["candidate"] == "spindle")
        .expect("row");
    assert_eq!(row["mean"], "0.5");
    assert_eq!(row["designs_at_chance"], "4");
    // The report rebuilds the same decision from plan.json, which records the rule.
    let plan = std::fs::read_to_string(dir.path().join("plan.json")).expect("plan");
    assert!(plan.contains("\"diverged\": \"Chance\""), "{plan}");
}

#[test]
fn a_stage_where_everything_diverged_stops_with_a_reason_and_still_reports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = spec(3);
    let executor = SyntheticExecutor {
        diverge_when_contains: Some("grouping=".into()),
        ..Default::default()
    };
    let err = run(dir.path(), &spec, &executor)
        .err()
        .expect("cannot decide")
        .to_string();
    assert!(err.contains("stage S1 cannot decide"), "{err}");
    let report = report::write_reports(dir.path()).expect("report");
    assert!(report.decisions[0].winner.is_none());
    assert!(report.decisions[0].summary.contains("cannot decide"));
}

#[test]
fn resume_runs_only_missing_trials_and_matches_an_uninterrupted_run() {
    let spec = spec(5);
    let whole = tempfile::tempdir().expect("tempdir");
    let uninterrupted = Counting::new(SyntheticExecutor::default(), None);
    run(whole.path(), &spec, &uninterrupted).expect("run");
    report::write_reports(whole.path()).expect("report");

    let parts = tempfile::tempdir().expect("tempdir");
    let first = Counting::new(SyntheticExecutor::default(), Some(47));
    let err = run(parts.path(), &spec, &first).err().expect("crash");
    assert!(err.to_string().contains("simulated crash"));
    let second = Counting::new(SyntheticExecutor::default(), None);
    let outcome = run(parts.path(), &spec, &second).expect("resume");
    let ran_first = first.ran.lock().expect("lock").clone();
    let ran_second = second.ran.lock().expect("lock").clone();
    assert_eq!(ran_first.len(), 47);
    assert_eq!(outcome.trials_reused, 47);
    for id in &ran_second {
        assert!(!ran_first.contains(id), "trial {id} ran twice");
    }
    assert_eq!(
        ran_first.len() + ran_second.len(),
        uninterrupted.ran.lock().expect("lock").len()
    );
    report::write_reports(parts.path()).expect("report");
    assert_eq!(outputs(parts.path()), outputs(whole.path()));
    // A third run has nothing left to do.
    let third = Counting::new(SyntheticExecutor::default(), None);
    run(parts.path(), &spec, &third).expect("nothing to do");
    assert!(third.ran.lock().expect("lock").is_empty());
}

#[test]
fn changing_what_ids_depend_on_is_detected_and_explained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec_a = spec(2);
    let executor = SyntheticExecutor::default();
    run(dir.path(), &spec_a, &executor).expect("run");
    let mut spec_b = spec_a.clone();
    spec_b.training.epochs = 1;
    spec_b.samples = 3;
    let err = run(dir.path(), &spec_b, &executor)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("training.epochs: 3 → 1"), "{err}");
    assert!(err.contains("samples: 2 → 3"), "{err}");
    assert!(err.contains("--out"), "{err}");
    // Renaming the experiment changes no id and is accepted.
    let mut renamed = spec_a.clone();
    renamed.name = "another name".into();
    run(dir.path(), &renamed, &executor).expect("rename is fine");
}

#[test]
fn paper_experiment_files_parse_and_follow_the_protocol() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments");
    for name in [
        "paper_t5_base.ron",
        "paper_roberta_base.ron",
        "paper_bart_base.ron",
        "paper_bart_xsum.ron",
    ] {
        let path = root.join(name);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let spec: ExperimentSpec = ron::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(spec.samples, 100, "{name}");
        assert_eq!(spec.training.epochs, 3, "{name}");
        assert_eq!(spec.groups, 4, "{name}");
        assert_eq!(spec.budget, 0.005, "{name}");
        // The paper's batch and peak learning rate for base models, one rate for every method.
        assert_eq!(spec.training.batch_size, 128, "{name}");
        assert_eq!(spec.training.learning_rate, 5e-5, "{name}");
        assert!(
            spec.strategies.iter().all(|s| s.learning_rate.is_none()),
            "{name}"
        );
        assert!(text.contains("not stated in the paper"), "{name}");
        assert_eq!(
            spec.stages.len(),
            7,
            "{name}: S1, S2, S3 and four strategy stages"
        );
        assert!(spec.final_runs.is_some(), "{name}");
    }
}

#[test]
fn a_strategy_stage_for_an_untuned_group_is_skipped_and_recorded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = spec(3);
    spec.stages.retain(|s| s.name != "S3");
    spec.stages.insert(
        2,
        ron::from_str(r#"(name: "S3", dimension: TunedGroups, candidates: ["0111", "0011"])"#)
            .expect("stage"),
    );
    let outcome = run(dir.path(), &spec, &SyntheticExecutor::default()).expect("run");
    let s4a = outcome
        .decisions
        .iter()
        .find(|d| d.stage == "S4a")
        .expect("S4a decision");
    assert!(s4a.winner.is_none());
    assert!(
        s4a.summary.contains("skipped: group 0 is not tuned"),
        "{}",
        s4a.summary
    );
    // Later stages and the final runs still happen.
    assert!(outcome
        .decisions
        .iter()
        .find(|d| d.stage == "S4b")
        .expect("S4b")
        .winner
        .is_some());
    assert!(outcome
        .plan
        .final_runs
        .as_ref()
        .is_some_and(|f| f.methods.len() == 3));
    report::write_reports(dir.path()).expect("report");
    let stages = refine_support::read_csv(&dir.path().join("stages.csv"));
    let row = stages
        .iter()
        .find(|r| r["stage"] == "S4a")
        .expect("row for the skipped stage");
    assert!(row["note"].starts_with("stage skipped"), "{row:?}");
    assert!(!dir.path().join("edf_S4a.svg").exists());
}
