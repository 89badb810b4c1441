//! A results directory under stress, in the synthetic development mode: one writer at a time, kill -9 at random
//! points, and names that would leave the results folder.

use crate::refine_support;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

fn peftspace() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_peftspace"));
    c.env("PEFTSPACE_EXECUTOR", "synthetic")
        .env_remove("PEFTSPACE_SYNTHETIC_DIVERGE")
        .env_remove("PEFTSPACE_SYNTHETIC_FAIL")
        .env_remove("PEFTSPACE_SYNTHETIC_SLEEP_MS")
        .env_remove("PEFTSPACE_SYNTHETIC_LOG");
    c
}

fn stored_lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("trials.jsonl"))
        .map(|t| t.lines().map(String::from).collect())
        .unwrap_or_default()
}

fn start_slow_run(exp: &Path, out: &Path, sleep_ms: u64, jobs: usize) -> Child {
    peftspace()
        .arg("run")
        .arg(exp)
        .arg("--out")
        .arg(out)
        .arg("--jobs")
        .arg(jobs.to_string())
        .env("PEFTSPACE_SYNTHETIC_SLEEP_MS", sleep_ms.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn")
}

fn wait_for_trials(child: &mut Child, out: &Path, at_least: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while stored_lines(out).len() < at_least {
        assert!(Instant::now() < deadline, "the run made no progress");
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the run ended too early"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn experiment(work: &Path) -> std::path::PathBuf {
    let exp = work.join("exp.ron");
    std::fs::write(&exp, refine_support::experiment_ron(4)).expect("write");
    exp
}

#[test]
fn a_second_run_on_one_directory_is_refused_naming_the_holder_and_report_waits_its_turn() {
    let work = tempfile::tempdir().expect("tempdir");
    let exp = experiment(work.path());
    let out = work.path().join("results");
    let mut first = start_slow_run(&exp, &out, 20, 1);
    wait_for_trials(&mut first, &out, 1);

    let second = peftspace()
        .arg("run")
        .arg(&exp)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("second run");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("pid {}", first.id())) && stderr.contains("host"),
        "{stderr}"
    );
    let report = peftspace()
        .arg("report")
        .arg(&out)
        .output()
        .expect("report");
    assert_eq!(
        report.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );

    first.kill().expect("kill");
    first.wait().expect("reap");
    // The kernel dropped the dead holder's lock: the directory is usable at once.
    let resumed = peftspace()
        .arg("run")
        .arg(&exp)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("resume");
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let report = peftspace()
        .arg("report")
        .arg(&out)
        .output()
        .expect("report");
    assert!(report.status.success());
}

#[test]
fn kill_9_at_twenty_random_points_then_resume_stores_every_trial_exactly_once() {
    let work = tempfile::tempdir().expect("tempdir");
    let exp = experiment(work.path());
    let out = work.path().join("results");
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    // Rounds whose kill landed while the run was still going (it had not finished on its own): once a run
    // completes, later rounds would test nothing, so this count must cover most rounds.
    let mut killed_mid_run = 0;
    let mut stored_before = 0;
    for round in 0..20 {
        let jobs = 1 + round % 2;
        // 60 ms a trial: the 146 trials take longer than all twenty rounds together, so every kill lands mid-run.
        let mut child = start_slow_run(&exp, &out, 60, jobs);
        // From "still starting" to "well into a stage".
        std::thread::sleep(Duration::from_millis(rng.random_range(0..400)));
        let finished_on_its_own = child.try_wait().expect("poll").is_some();
        let _ = child.kill();
        child.wait().expect("reap");
        let lines = stored_lines(&out);
        if !finished_on_its_own {
            killed_mid_run += 1;
        }
        assert!(
            lines.len() >= stored_before,
            "round {round}: stored trials were lost"
        );
        stored_before = lines.len();
        let ids: HashSet<String> = lines
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["id"].as_str().map(String::from))
            .collect();
        // At most the last line may be torn; no id is stored twice.
        assert!(
            ids.len() + 1 >= lines.len(),
            "round {round}: {} lines, {} ids",
            lines.len(),
            ids.len()
        );
    }
    assert!(
        killed_mid_run >= 15,
        "only {killed_mid_run} of 20 kills landed while the run was going"
    );
    let before_last = stored_lines(&out).len();
    let last = peftspace()
        .arg("run")
        .arg(&exp)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("final run");
    assert!(
        last.status.success(),
        "{}",
        String::from_utf8_lossy(&last.stderr)
    );
    let lines = stored_lines(&out);
    let ids: HashSet<String> = lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("every line is a record");
            v["id"].as_str().expect("id").to_string()
        })
        .collect();
    assert_eq!(ids.len(), lines.len(), "a trial was stored twice");
    // The kills interrupted a run with work left: the last run had trials to train.
    assert!(
        lines.len() > before_last,
        "the killed runs had already finished everything"
    );
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("plan.json")).expect("plan"))
            .expect("plan parses");
    let mut planned = HashSet::new();
    collect_ids(&plan, &mut planned);
    assert_eq!(planned, ids, "stored trials are exactly the planned ones");
    for csv in ["trials.csv", "stages.csv", "final.csv"] {
        assert!(
            !refine_support::read_csv(&out.join(csv)).is_empty(),
            "{csv}"
        );
    }
    let leftovers: Vec<String> = std::fs::read_dir(&out)
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".tmp") && !n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Every `"id"` string under `trials` arrays of the plan.
fn collect_ids(value: &serde_json::Value, out: &mut HashSet<String>) {
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
                collect_ids(v, out);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_ids(v, out)),
        _ => {}
    }
}

#[test]
fn a_name_that_leaves_the_results_folder_is_refused_before_anything_is_written() {
    let work = tempfile::tempdir().expect("tempdir");
    let text = refine_support::experiment_ron(2).replace("synthetic-refine", "..");
    std::fs::write(work.path().join("exp.ron"), text).expect("write");
    let run = peftspace()
        .current_dir(work.path())
        .arg("run")
        .arg("exp.ron")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("exp.ron:2:") && stderr.contains("name"),
        "{stderr}"
    );
    let entries: Vec<_> = std::fs::read_dir(work.path()).expect("dir").collect();
    assert_eq!(entries.len(), 1, "only the experiment file is there");
}

fn run_to_end(
    exp: &Path,
    out: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut command = peftspace();
    command
        .arg("run")
        .arg(exp)
        .arg("--out")
        .arg(out)
        .args(extra);
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run")
}

#[test]
fn resuming_with_different_code_is_refused_unless_allowed_and_then_recorded() {
    let work = tempfile::tempdir().expect("tempdir");
    let exp = experiment(work.path());
    let out = work.path().join("results");
    let first = run_to_end(&exp, &out, &[], &[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let path = out.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("manifest")).expect("json");
    let version = manifest["code"]["version"]
        .as_str()
        .expect("version")
        .to_string();
    assert!(version.starts_with("peftspace "), "{version}");
    assert!(manifest["backbone_identity"].is_string());
    // As if the results had been written by another build.
    manifest["code"]["version"] = "peftspace 0.0.1 (git 0123abc)".into();
    std::fs::write(&path, manifest.to_string()).expect("write");

    let refused = run_to_end(&exp, &out, &[], &[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("code.version: \"peftspace 0.0.1 (git 0123abc)\"")
            && stderr.contains("--allow-code-change"),
        "{stderr}"
    );
    let allowed = run_to_end(&exp, &out, &["--allow-code-change"], &[]);
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("manifest")).expect("json");
    let history = manifest["history"].as_array().expect("history");
    assert_eq!(history.len(), 2, "{history:?}");
    assert!(history[1]["event"]
        .as_str()
        .expect("event")
        .contains("--allow-code-change"));
    assert_eq!(manifest["code"]["version"].as_str(), Some(version.as_str()));
}

#[test]
fn retry_failed_reruns_only_the_failed_trials_and_stages_csv_counts_them() {
    let work = tempfile::tempdir().expect("tempdir");
    let exp = experiment(work.path());
    let out = work.path().join("results");
    let log = work.path().join("ran.log");
    let failing = run_to_end(
        &exp,
        &out,
        &[],
        &[("PEFTSPACE_SYNTHETIC_FAIL", "grouping=spindle")],
    );
    assert!(
        failing.status.success(),
        "{}",
        String::from_utf8_lossy(&failing.stderr)
    );
    let stages = refine_support::read_csv(&out.join("stages.csv"));
    let spindle = stages
        .iter()
        .find(|r| r["stage"] == "S1" && r["candidate"] == "spindle")
        .expect("spindle row");
    assert_eq!(spindle["trials_failed"], "8", "{spindle:?}");
    assert_eq!(spindle["n"], "0");

    let plain = run_to_end(
        &exp,
        &out,
        &[],
        &[("PEFTSPACE_SYNTHETIC_LOG", log.to_str().expect("utf-8"))],
    );
    assert!(plain.status.success());
    assert!(!log.exists(), "without --retry-failed nothing runs again");

    let retried = run_to_end(
        &exp,
        &out,
        &["--retry-failed"],
        &[("PEFTSPACE_SYNTHETIC_LOG", log.to_str().expect("utf-8"))],
    );
    assert!(
        retried.status.success(),
        "{}",
        String::from_utf8_lossy(&retried.stderr)
    );
    let rerun = std::fs::read_to_string(&log).expect("log");
    assert!(rerun.lines().count() >= 8, "{rerun}");
    let stages = refine_support::read_csv(&out.join("stages.csv"));
    let spindle = stages
        .iter()
        .find(|r| r["stage"] == "S1" && r["candidate"] == "spindle")
        .expect("spindle row");
    assert_eq!(spindle["trials_failed"], "0", "{spindle:?}");
    assert_ne!(spindle["n"], "0");
}
