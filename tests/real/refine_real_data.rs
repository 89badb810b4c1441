//! Real-data suite: a reduced quickstart (N = 3, tiny SST-2 subsets, 1 epoch) runs S1→S4 on MiniLM end to end,
//! writes all four outputs, and every statistic in stages.csv equals a recomputation from trials.csv
//! (`tests/stats_reference/check_pvalues.py` does the same with SciPy when `PEFTSPACE_PYTHON` names a Python with
//! SciPy). A race on MiniLM is killed with `kill -9` mid-run and resumed: the rerun draws the same designs in the same
//! rounds and trains no stored trial again.

use crate::common;
use common::shared;

use crate::refine_support;

use std::path::PathBuf;
use std::process::Command;

#[test]
#[ignore = "real-data: needs ../shared (PEFTSPACE_SHARED)"]
fn reduced_quickstart_on_minilm_runs_s1_to_s4_and_stage_statistics_match_trials() {
    let shared = shared();
    let model = shared.join("models/all-MiniLM-L6-v2");
    let data = shared.join("data/glue");
    assert!(model.is_dir(), "{} missing", model.display());
    let work = tempfile::tempdir().expect("tempdir");
    let exp = work.path().join("reduced_quickstart.ron");
    std::fs::write(
        &exp,
        format!(
            r#"ExperimentSpec(
    name: "reduced_quickstart",
    backbone: (path: Some({model:?})),
    tasks: [(id: "sst2", max_train: Some(64), max_eval: Some(64))],
    training: (epochs: 1, batch_size: 16, max_seq_len: 64, eval_batch_size: 64),
    groups: 4,
    samples: 3,
    seed: 1,
    seeds: [1],
    stages: [
        (name: "S1", dimension: Grouping, candidates: ["uniform", "spindle"]),
        (name: "S2", dimension: Allocation, candidates: ["uniform", "increasing"]),
        (name: "S3", dimension: TunedGroups, candidates: ["1111", "1110"]),
        (name: "S4", dimension: Strategies(0), candidates: ["lora", "adapter+bitfit"]),
    ],
    final_runs: Some((top: 1, seeds: [2, 3], baselines: ["lora"])),
)
"#
        ),
    )
    .expect("write experiment");
    let out = work.path().join("results");
    // `plan` first: its calibrated estimate's range must hold the run's measured wall time (the estimate once left
    // out each trial's fixed cost and said a third of the time this run took).
    let plan = Command::new(env!("CARGO_BIN_EXE_peftspace"))
        .env_remove("PEFTSPACE_EXECUTOR")
        .arg("--model")
        .arg(&model)
        .arg("--data-dir")
        .arg(&data)
        .arg("plan")
        .arg(&exp)
        .output()
        .expect("run peftspace plan");
    let plan_out = String::from_utf8_lossy(&plan.stdout).to_string();
    assert!(
        plan.status.success(),
        "{plan_out}\n{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let range: Vec<f64> = plan_out
        .lines()
        .find_map(|l| l.strip_prefix("estimated range in seconds: "))
        .unwrap_or_else(|| panic!("no range:\n{plan_out}"))
        .split('–')
        .map(|v| v.trim().parse().expect("seconds"))
        .collect();
    let started = std::time::Instant::now();
    let run = Command::new(env!("CARGO_BIN_EXE_peftspace"))
        .env_remove("PEFTSPACE_EXECUTOR")
        .arg("--model")
        .arg(&model)
        .arg("--data-dir")
        .arg(&data)
        .arg("run")
        .arg(&exp)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run peftspace");
    let wall = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    println!("plan's range {range:?} s, the run took {wall:.1} s");
    assert!(
        range[0] <= wall && wall <= range[1],
        "the run took {wall:.1} s, outside plan's range {range:?}:\n{plan_out}"
    );
    for f in [
        "trials.csv",
        "stages.csv",
        "final.csv",
        "edf_S1.svg",
        "edf_S2.svg",
        "edf_S3.svg",
        "edf_S4.svg",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let trials = refine_support::read_csv(&out.join("trials.csv"));
    assert!(trials.iter().all(|r| r["status"] != "pending"));
    assert!(
        trials.iter().filter(|r| r["status"] == "ok").count() >= 20,
        "most trials train"
    );
    let stages = refine_support::read_csv(&out.join("stages.csv"));
    assert_eq!(stages.iter().filter(|r| r["chosen"] == "true").count(), 4);
    assert!(refine_support::check_stages_against_trials(&out) >= 4);
    // With a Python that has SciPy (`.ci/run` provides one), SciPy recomputes every p-value too.
    if let Some(python) = std::env::var_os("PEFTSPACE_PYTHON") {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/stats_reference/check_pvalues.py");
        let check = Command::new(python)
            .arg(&script)
            .arg(&out)
            .output()
            .expect("run check_pvalues.py");
        assert!(
            check.status.success(),
            "SciPy disagrees with stages.csv:\n{}\n{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        println!("{}", String::from_utf8_lossy(&check.stdout));
    }
}

/// Every `"id"` string of the plan's trials.
fn planned_ids(value: &serde_json::Value, out: &mut std::collections::HashSet<String>) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Array(trials)) = map.get("trials") {
                for t in trials {
                    if let Some(id) = t["id"].as_str() {
                        out.insert(id.to_string());
                    }
                }
            }
            for v in map.values() {
                planned_ids(v, out);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| planned_ids(v, out)),
        _ => {}
    }
}

#[test]
#[ignore = "real-data: needs ../shared (PEFTSPACE_SHARED)"]
fn kill_9_during_a_race_on_minilm_then_rerun_replays_the_same_rounds_without_training_a_trial_twice(
) {
    use std::collections::HashSet;
    use std::time::{Duration, Instant};

    let shared = shared();
    let model = shared.join("models/all-MiniLM-L6-v2");
    let data = shared.join("data/glue");
    assert!(model.is_dir(), "{} missing", model.display());
    let work = tempfile::tempdir().expect("tempdir");
    let exp = work.path().join("race.ron");
    std::fs::write(
        &exp,
        format!(
            r#"ExperimentSpec(
    name: "race_kill",
    backbone: (path: Some({model:?})),
    tasks: [(id: "sst2", max_train: Some(64), max_eval: Some(64))],
    training: (epochs: 1, batch_size: 16, max_seq_len: 64, eval_batch_size: 64),
    groups: 4,
    samples: 4,
    seed: 1,
    seeds: [1],
    race: Some((min_samples: 2, batch: 1)),
    stages: [
        (name: "S1", dimension: Grouping, candidates: ["uniform", "spindle"]),
        (name: "S3", dimension: TunedGroups, candidates: ["1111", "0001"]),
    ],
)
"#
        ),
    )
    .expect("write experiment");
    let out = work.path().join("results");
    let peftspace = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_peftspace"));
        c.env_remove("PEFTSPACE_EXECUTOR")
            .arg("--model")
            .arg(&model)
            .arg("--data-dir")
            .arg(&data)
            .arg("run")
            .arg(&exp)
            .arg("--out")
            .arg(&out);
        c
    };
    let stored = || -> Vec<String> {
        std::fs::read_to_string(out.join("trials.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["id"].as_str().map(String::from))
            .collect()
    };
    // Kill -9 once the first round's trials are in and the second round is under way.
    let mut child = peftspace()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(600);
    while stored().len() < 5 {
        assert!(Instant::now() < deadline, "no progress");
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the run ended too early"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    let before: HashSet<String> = stored().into_iter().collect();
    let rerun = peftspace().output().expect("rerun");
    let stderr = String::from_utf8_lossy(&rerun.stderr);
    assert!(rerun.status.success(), "{stderr}");
    assert!(stderr.contains("S1 round 1 (2 designs each)"), "{stderr}");
    let ids = stored();
    let distinct: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(distinct.len(), ids.len(), "a trial was stored twice");
    // The rerun drew the same designs in the same rounds: everything the killed run stored is in the final plan,
    // and the plan holds exactly the stored trials (the race recomputed from the store asked for nothing more).
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("plan.json")).expect("plan"))
            .expect("plan parses");
    let mut planned = HashSet::new();
    planned_ids(&plan, &mut planned);
    assert!(before.is_subset(&planned), "the rerun drew other designs");
    assert_eq!(planned, distinct);
    let stages = refine_support::read_csv(&out.join("stages.csv"));
    assert_eq!(stages.iter().filter(|r| r["chosen"] == "true").count(), 2);
    assert!(stages.iter().all(|r| !r["race_rounds"].is_empty()));
    assert!(refine_support::check_stages_against_trials(&out) >= 2);
}
