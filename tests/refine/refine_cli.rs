//! `peftspace run` and `peftspace report` end to end in the synthetic development mode
//! (`PEFTSPACE_EXECUTOR=synthetic`): outputs, parallel workers, and a SIGKILL in the middle of a stage.

use crate::refine_support;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn peftspace() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_peftspace"));
    c.env("PEFTSPACE_EXECUTOR", "synthetic")
        .env_remove("PEFTSPACE_SYNTHETIC_DIVERGE")
        .env_remove("PEFTSPACE_SYNTHETIC_SLEEP_MS")
        .env_remove("PEFTSPACE_SYNTHETIC_LOG");
    c
}

fn csv_outputs(dir: &Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = ["trials.csv", "stages.csv", "final.csv"]
        .iter()
        .map(|n| {
            (
                n.to_string(),
                std::fs::read_to_string(dir.join(n)).unwrap_or_else(|e| panic!("{n}: {e}")),
            )
        })
        .collect();
    let mut svgs: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().to_string()))
        .filter(|n| n.ends_with(".svg"))
        .collect();
    svgs.sort();
    assert_eq!(svgs.len(), 5, "{svgs:?}");
    for name in svgs {
        let text = std::fs::read_to_string(dir.join(&name)).expect("svg");
        out.push((name, text));
    }
    out
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|t| t.lines().map(String::from).collect())
        .unwrap_or_default()
}

#[test]
fn run_then_report_regenerates_identical_outputs() {
    let work = tempfile::tempdir().expect("tempdir");
    let exp = work.path().join("exp.ron");
    std::fs::write(&exp, refine_support::experiment_ron(4)).expect("write");
    let out = work.path().join("results");
    let run = peftspace()
        .arg("run")
        .arg(&exp)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}\n{}",
        stdout,
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("S1: chose"), "{stdout}");
    for f in [
        "experiment.ron",
        "version.txt",
        "manifest.json",
        "plan.json",
        "trials.jsonl",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
    let before = csv_outputs(&out);
    for (name, _) in &before {
        std::fs::remove_file(out.join(name)).expect("remove");
    }
    let report = peftspace()
        .arg("report")
        .arg(&out)
        .output()
        .expect("report");
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    assert_eq!(csv_outputs(&out), before);
    refine_support::check_stages_against_trials(&out);
}

/// `report --effects` on a synthetic run recovers the synthetic model's known effects: spindle grouping scores 0.01
/// above uniform and bottleneck 0.02 below it, each tuned group adds 0.008 (uniform noise of sd 0.017 on top).
#[test]
fn report_effects_recovers_the_synthetic_models_known_effects() {
    let work = tempfile::tempdir().expect("tempdir");
    let exp = work.path().join("exp.ron");
    std::fs::write(&exp, refine_support::experiment_ron(10)).expect("write");
    let out = work.path().join("results");
    let run = peftspace()
        .arg("run")
        .arg(&exp)
        .arg("--out")
        .arg(&out)
        .arg("--quiet")
        .output()
        .expect("run");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report = peftspace()
        .arg("report")
        .arg(&out)
        .arg("--effects")
        .output()
        .expect("report");
    let text = String::from_utf8_lossy(&report.stdout);
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    assert!(
        text.contains("EXPLORATORY") && text.contains("stage: fixed effects"),
        "{text}"
    );
    // The design-score fit's coefficient table: after its `coefficient` header, up to the next blank line.
    let design_fit = text
        .split("design score:")
        .nth(1)
        .expect("design score fit");
    let design_fit = design_fit.split("\n\n").next().expect("fit");
    let first_fit = design_fit
        .split("coefficient")
        .nth(1)
        .expect("coefficients");
    let estimate = |column: &str| -> (f64, f64) {
        let line = first_fit
            .lines()
            .find(|l| l.trim_start().starts_with(column))
            .unwrap_or_else(|| panic!("no {column} in {first_fit}"));
        let fields: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        (fields[0], fields[1])
    };
    for (column, truth) in [
        ("grouping[spindle]", 0.01),
        ("grouping[bottleneck]", -0.02),
        ("tuned_groups", 0.008),
    ] {
        let (est, se) = estimate(column);
        assert!(
            (est - truth).abs() < 4.0 * se.max(1e-4),
            "{column}: {est} ± {se}, truth {truth}\n{text}"
        );
    }
}

#[test]
fn bad_experiment_file_is_a_usage_error_with_location() {
    let work = tempfile::tempdir().expect("tempdir");
    let exp = work.path().join("bad.ron");
    std::fs::write(&exp, "ExperimentSpec(\n  name: \"x\",\n  budgte: 0.1,\n)").expect("write");
    let run = peftspace().arg("run").arg(&exp).output().expect("run");
    assert_eq!(run.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("bad.ron:3:"), "{stderr}");
}

#[test]
fn sigkill_mid_stage_then_rerun_loses_nothing_and_matches_an_uninterrupted_run() {
    let work = tempfile::tempdir().expect("tempdir");
    let exp = work.path().join("exp.ron");
    std::fs::write(&exp, refine_support::experiment_ron(4)).expect("write");

    // Reference: uninterrupted, serial.
    let reference = work.path().join("reference");
    let run = peftspace()
        .arg("run")
        .arg(&exp)
        .arg("--out")
        .arg(&reference)
        .output()
        .expect("run");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    // Interrupted: two workers, each trial takes 15 ms; killed once stage S2 is under way.
    let out = work.path().join("killed");
    let first_log = work.path().join("first.log");
    let mut child = peftspace()
        .arg("run")
        .arg(&exp)
        .arg("--out")
        .arg(&out)
        .arg("--jobs")
        .arg("2")
        .env("PEFTSPACE_SYNTHETIC_SLEEP_MS", "15")
        .env("PEFTSPACE_SYNTHETIC_LOG", &first_log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let s1_trials = 5 * 4 * 2;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stored = lines(&out.join("trials.jsonl")).len();
        if stored >= s1_trials + 7 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "run made no progress ({stored} trials stored)"
        );
        assert!(
            child.try_wait().expect("wait").is_none(),
            "run finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    // Workers may still be finishing their trial; let them notice their parent is gone.
    std::thread::sleep(Duration::from_millis(100));
    let stored_at_kill: HashSet<String> = lines(&out.join("trials.jsonl"))
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["id"].as_str().map(String::from))
        .collect();
    assert!(stored_at_kill.len() >= s1_trials + 7);

    let second_log = work.path().join("second.log");
    let rerun = peftspace()
        .arg("run")
        .arg(&exp)
        .arg("--out")
        .arg(&out)
        .arg("--jobs")
        .arg("2")
        .env("PEFTSPACE_SYNTHETIC_LOG", &second_log)
        .output()
        .expect("rerun");
    assert!(
        rerun.status.success(),
        "{}",
        String::from_utf8_lossy(&rerun.stderr)
    );
    assert!(String::from_utf8_lossy(&rerun.stderr).contains("resuming"));
    for id in lines(&second_log) {
        assert!(
            !stored_at_kill.contains(&id),
            "completed trial {id} ran again after the kill"
        );
    }
    // Every stored line is complete and unique.
    let all = lines(&out.join("trials.jsonl"));
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len());
    assert_eq!(csv_outputs(&out), csv_outputs(&reference));
}
