//! `peftspace run --jobs N --devices …` on a CPU-only machine: the synthetic executor records the `--device` each
//! worker was started with (without opening it), so the round-robin assignment is checked without a GPU.

use crate::refine_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

/// `peftspace ARGS… run EXP --out DIR/results RUN_ARGS…` in the synthetic development mode.
fn synthetic_run(dir: &Path, global: &[&str], run_args: &[&str]) -> Output {
    let exp = dir.join("exp.ron");
    std::fs::write(&exp, refine_support::experiment_ron(3)).expect("write experiment");
    std::process::Command::new(env!("CARGO_BIN_EXE_peftspace"))
        .env("PEFTSPACE_EXECUTOR", "synthetic")
        .env_remove("PEFTSPACE_SYNTHETIC_DIVERGE")
        .env_remove("PEFTSPACE_SYNTHETIC_SLEEP_MS")
        .env_remove("PEFTSPACE_SYNTHETIC_LOG")
        .env_remove("PEFTSPACE_DEVICE")
        .args(global)
        .arg("run")
        .arg(&exp)
        .arg("--out")
        .arg(dir.join("results"))
        .args(run_args)
        .output()
        .expect("run peftspace")
}

/// Trials per recorded device in `trials.csv`.
fn devices_used(dir: &Path) -> BTreeMap<String, usize> {
    let mut used = BTreeMap::new();
    for row in refine_support::read_csv(&dir.join("results").join("trials.csv")) {
        *used.entry(row["device"].clone()).or_insert(0) += 1;
    }
    used
}

fn names(used: &BTreeMap<String, usize>) -> Vec<&str> {
    used.keys().map(String::as_str).collect()
}

#[test]
fn workers_get_the_devices_round_robin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = synthetic_run(dir.path(), &[], &["--jobs", "2", "--devices", "0,1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let used = devices_used(dir.path());
    assert_eq!(names(&used), ["cuda:0", "cuda:1"], "{used:?}");
}

#[test]
fn several_workers_may_share_a_device() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = synthetic_run(dir.path(), &[], &["--jobs", "3", "--devices", "cuda:0,0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let used = devices_used(dir.path());
    assert_eq!(names(&used), ["cuda:0"], "{used:?}");
}

#[test]
fn one_process_records_its_device_and_bad_names_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = synthetic_run(dir.path(), &["--device", "cpu"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let used = devices_used(dir.path());
    assert_eq!(names(&used), ["cpu"], "{used:?}");

    let dir = tempfile::tempdir().expect("tempdir");
    let out = synthetic_run(dir.path(), &[], &["--jobs", "2", "--devices", "0,gpu"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("device `gpu`"), "{stderr}");
    assert!(!dir.path().join("results").join("trials.jsonl").exists());
}
