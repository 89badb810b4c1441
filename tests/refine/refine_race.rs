//! Racing end to end on the synthetic space and executor: rounds, eliminations and savings in stages.csv; a crash
//! or kill -9 mid-race resumes into the same rounds and decisions without running a trial twice; a race replayed
//! over a stored full run reaches the decisions a raced run reaches.

use crate::refine_support;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use peftspace_core::refine::{self, NoProgress, SerialPool, SyntheticExecutor, SyntheticSpace};
use peftspace_core::spec::{DecisionRule, ExperimentSpec, RaceSpec, TaskSpec};
use peftspace_core::store::{CodeProvenance, ResultStore};
use peftspace_core::trial::{TrialExecutor, TrialOutcome, TrialSpec};
use peftspace_core::{report, Result};

const RACE: &str = "race: Some((min_samples: 8, batch: 4, alpha: 0.05)),";

/// The synthetic S1–S4b experiment with `samples` designs per candidate, raced when `raced`.
fn experiment_ron(samples: usize, raced: bool) -> String {
    let text = refine_support::experiment_ron(samples);
    if raced {
        text.replacen("    seed: 7,", &format!("    seed: 7,\n    {RACE}"), 1)
    } else {
        text
    }
}

fn spec(samples: usize, raced: bool) -> ExperimentSpec {
    ron::from_str(&experiment_ron(samples, raced)).expect("test experiment parses")
}

/// Records every trial it runs and can crash (return an error) once it has run `crash_after` trials.
struct Counting {
    inner: SyntheticExecutor,
    ran: Mutex<Vec<String>>,
    crash_after: Option<usize>,
    calls: AtomicUsize,
}

impl Counting {
    fn new(crash_after: Option<usize>) -> Self {
        Counting {
            inner: SyntheticExecutor::default(),
            ran: Mutex::new(Vec::new()),
            crash_after,
            calls: AtomicUsize::new(0),
        }
    }
    fn ran(&self) -> Vec<String> {
        self.ran.lock().expect("lock").clone()
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
            .crash_after
            .is_some_and(|n| self.calls.fetch_add(1, Ordering::SeqCst) >= n)
        {
            return Err(peftspace_core::Error::msg("simulated crash"));
        }
        self.ran.lock().expect("lock").push(trial.id.clone());
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

/// stages.csv keyed by (stage, candidate).
fn stage_rows(dir: &Path) -> BTreeMap<(String, String), BTreeMap<String, String>> {
    refine_support::read_csv(&dir.join("stages.csv"))
        .into_iter()
        .map(|r| ((r["stage"].clone(), r["candidate"].clone()), r))
        .collect()
}

#[test]
fn a_raced_run_drops_clear_losers_saves_trials_and_its_statistics_match_trials_csv() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = spec(40, true);
    let executor = Counting::new(None);
    let outcome = run(dir.path(), &spec, &executor).expect("run");
    report::write_reports(dir.path()).expect("report");
    let mut used = 0;
    let mut full = 0;
    for d in &outcome.decisions {
        let race = d.race.expect("every stage races");
        assert!(race.finished, "{}", d.summary);
        assert!(d.summary.contains("race: "), "{}", d.summary);
        used += race.trials_used;
        full += race.trials_full;
    }
    let final_trials = 2 * 3 * 3;
    assert_eq!(executor.ran().len(), used + final_trials);
    // The synthetic dimensions differ by a few hundredths against noise of the same size: racing saves less here
    // than with the clear winners of the simulations in core (`refine::race` tests), but it saves.
    assert!(used < full, "racing used {used} of {full} trials");
    let rows = stage_rows(dir.path());
    // S1's spindle scores 0.03 above bottleneck: the race drops bottleneck by the middle of its 9 looks (its
    // O'Brien–Fleming thresholds spend little alpha early), with a p-value below what was spendable by then.
    let bottleneck = &rows[&("S1".to_string(), "bottleneck".to_string())];
    let round: usize = bottleneck["dropped_in_round"].parse().expect("a round");
    let p: f64 = bottleneck["drop_p"].parse().expect("a p-value");
    let spendable = peftspace_core::stats::obf_spent(0.05, (8 + 4 * (round - 1)) as f64 / 40.0);
    assert!(round <= 5 && p < spendable, "round {round}, p {p}");
    assert_eq!(bottleneck["significant"], "true");
    let planned: usize = bottleneck["designs_planned"].parse().expect("count");
    assert_eq!(planned, 8 + 4 * (round - 1));
    for row in rows.values() {
        assert!(!row["race_rounds"].is_empty() && !row["race_trials_full"].is_empty());
        if row["chosen"] == "true" {
            assert_eq!(row["dropped_in_round"], "-");
        }
    }
    assert!(refine_support::check_stages_against_trials(dir.path()) >= 5);
}

#[test]
fn a_crash_mid_race_resumes_into_the_same_rounds_and_decisions_without_running_a_trial_twice() {
    let spec = spec(24, true);
    let whole = tempfile::tempdir().expect("tempdir");
    run(whole.path(), &spec, &Counting::new(None)).expect("uninterrupted run");
    report::write_reports(whole.path()).expect("report");

    let dir = tempfile::tempdir().expect("tempdir");
    let mut ran = Vec::new();
    // Crashes inside S1's first round, between rounds, and deep in later stages.
    for crash_after in [5, 13, 40, 61] {
        let executor = Counting::new(Some(crash_after));
        let err = run(dir.path(), &spec, &executor).expect_err("crashes");
        assert!(err.to_string().contains("simulated crash"), "{err}");
        ran.extend(executor.ran());
    }
    let last = Counting::new(None);
    run(dir.path(), &spec, &last).expect("resumed run");
    ran.extend(last.ran());
    report::write_reports(dir.path()).expect("report");
    let distinct: HashSet<&String> = ran.iter().collect();
    assert_eq!(distinct.len(), ran.len(), "a trial ran twice");
    for file in ["stages.csv", "trials.csv", "final.csv", "plan.json"] {
        let a = std::fs::read_to_string(whole.path().join(file)).expect("read");
        let b = std::fs::read_to_string(dir.path().join(file)).expect("read");
        assert_eq!(a, b, "{file} differs after resuming");
    }
}

#[test]
fn replaying_the_race_over_a_stored_full_run_gives_the_raced_runs_decisions_with_fewer_trials() {
    let full_dir = tempfile::tempdir().expect("tempdir");
    run(full_dir.path(), &spec(40, false), &Counting::new(None)).expect("full run");
    let raced_dir = tempfile::tempdir().expect("tempdir");
    let raced = run(raced_dir.path(), &spec(40, true), &Counting::new(None)).expect("raced run");

    let plan = report::read_plan(full_dir.path()).expect("plan");
    let store = ResultStore::read(full_dir.path()).expect("store");
    let race = RaceSpec {
        min_samples: 8,
        batch: 4,
        alpha: 0.05,
    };
    let replays = refine::replay_race(&plan, &store, &race, DecisionRule::HighestMean);
    println!("{}", refine::replay_table(&replays));
    assert_eq!(replays.len(), raced.decisions.len());
    let mut same = 0;
    // Where both runs sampled a stage from the same space (every earlier stage handed on the same candidates),
    // they drew the same designs in the same order with deterministic scores, so the replay is exactly the race
    // that ran.
    let mut compared = 0;
    for (i, (replay, decision)) in replays.iter().zip(&raced.decisions).enumerate() {
        let race = decision.race.expect("raced");
        if plan.stages[i].space == raced.plan.stages[i].space {
            assert_eq!(
                replay.race_winner.as_deref(),
                decision.winner_name(),
                "{}",
                replay.stage
            );
            assert_eq!(replay.trials_used, race.trials_used, "{}", replay.stage);
            assert_eq!(replay.rounds, race.looks_done, "{}", replay.stage);
            compared += 1;
        }
        assert!(replay.trials_used <= replay.trials_full, "{replay:?}");
        same += usize::from(replay.same_decision());
    }
    assert!(compared >= 1);
    assert!(
        same >= 4,
        "the race agreed with the full protocol in {same} of 5 stages"
    );
}

fn peftspace() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_peftspace"));
    c.env("PEFTSPACE_EXECUTOR", "synthetic")
        .env_remove("PEFTSPACE_SYNTHETIC_DIVERGE")
        .env_remove("PEFTSPACE_SYNTHETIC_FAIL")
        .env_remove("PEFTSPACE_SYNTHETIC_SLEEP_MS")
        .env_remove("PEFTSPACE_SYNTHETIC_LOG");
    c
}

fn stored_ids(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("trials.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["id"].as_str().map(String::from))
        .collect()
}

#[test]
fn kill_9_during_a_race_then_rerun_replays_the_same_rounds_and_decision() {
    let work = tempfile::tempdir().expect("tempdir");
    let exp = work.path().join("exp.ron");
    std::fs::write(&exp, experiment_ron(16, true)).expect("write");
    let whole = work.path().join("whole");
    let run_to_end = |out: &Path| {
        let done = peftspace()
            .arg("run")
            .arg(&exp)
            .arg("--out")
            .arg(out)
            .output()
            .expect("run");
        assert!(
            done.status.success(),
            "{}",
            String::from_utf8_lossy(&done.stderr)
        );
        String::from_utf8_lossy(&done.stderr).to_string()
    };
    let log = run_to_end(&whole);
    assert!(log.contains("S1 round 1 (8 designs each)"), "{log}");

    let out = work.path().join("killed");
    for (i, wait_ms) in [60u64, 150, 90, 250, 120].into_iter().enumerate() {
        let mut child = peftspace()
            .arg("run")
            .arg(&exp)
            .arg("--out")
            .arg(&out)
            .arg("--jobs")
            .arg((1 + i % 2).to_string())
            .env("PEFTSPACE_SYNTHETIC_SLEEP_MS", "2")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(wait_ms));
        let _ = child.kill();
        child.wait().expect("reap");
    }
    let before = stored_ids(&out).len();
    run_to_end(&out);
    let ids = stored_ids(&out);
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "a trial was stored twice");
    assert!(
        before > 0 && before < ids.len(),
        "killed mid-run: {before} of {}",
        ids.len()
    );
    let whole_rows = stage_rows(&whole);
    let rows = stage_rows(&out);
    assert_eq!(
        whole_rows, rows,
        "stages.csv differs after kill -9 and rerun"
    );
    let mut whole_ids = stored_ids(&whole);
    let mut resumed_ids = ids;
    whole_ids.sort();
    resumed_ids.sort();
    assert_eq!(whole_ids, resumed_ids, "the same trials, each once");
}

#[test]
fn report_replays_a_race_over_a_stored_run_and_rejects_a_bad_race_with_exit_2() {
    let work = tempfile::tempdir().expect("tempdir");
    let exp = work.path().join("exp.ron");
    std::fs::write(&exp, experiment_ron(20, false)).expect("write");
    let out = work.path().join("results");
    let done = peftspace()
        .arg("run")
        .arg(&exp)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run");
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let stages_before = std::fs::read_to_string(out.join("stages.csv")).expect("stages");
    let replay = peftspace()
        .arg("report")
        .arg(&out)
        .arg("--replay-race")
        .arg("6,2")
        .output()
        .expect("report");
    let text = String::from_utf8_lossy(&replay.stdout);
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    assert!(
        text.contains("same decision in ") && text.contains("S4b"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("stages.csv")).expect("stages"),
        stages_before,
        "replaying writes nothing"
    );
    for bad in ["6", "1,2", "6,0", "6,2,2.0", "six,2"] {
        let refused = peftspace()
            .arg("report")
            .arg(&out)
            .arg("--replay-race")
            .arg(bad)
            .output()
            .expect("report");
        let err = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(2), "{bad}: {err}");
        assert!(err.contains("--replay-race"), "{bad}: {err}");
    }
}
