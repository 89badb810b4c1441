//! Messages a first-time user reads: the trainable share of a fixed-size baseline is not called a budget, a design
//! outside the space says which constraint excludes it, and "reused" counts only trials stored before this run.

use crate::refine_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn peftspace(args: &[&str], synthetic: bool) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_peftspace"));
    if synthetic {
        command.env("PEFTSPACE_EXECUTOR", "synthetic");
    } else {
        command.env_remove("PEFTSPACE_EXECUTOR");
    }
    command
        .env_remove("PEFTSPACE_MODEL")
        .env_remove("PEFTSPACE_DATA")
        .env_remove("PEFTSPACE_DEVICE")
        .env_remove("PEFTSPACE_SYNTHETIC_DIVERGE")
        .env_remove("PEFTSPACE_SYNTHETIC_SLEEP_MS")
        .current_dir(root())
        .args(args)
        .output()
        .expect("run peftspace")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A custom two-class task on the tiny BERT fixture.
fn tiny_experiment(dir: &Path) -> PathBuf {
    std::fs::write(dir.join("data.tsv"), refine_support::toy_tsv(16)).expect("write data");
    let spec = format!(
        r#"ExperimentSpec(
    name: "messages",
    backbone: (path: Some("{}")),
    tasks: [(id: "toy", custom: Some((train: "data.tsv", eval: "data.tsv", text: "text", label: "label",
             labels: ["neg", "pos"])))],
    budget: 0.05,
    groups: 2,
    training: (epochs: 1, batch_size: 8, max_seq_len: 16, eval_batch_size: 8),
    stages: [
        (name: "S1", dimension: Grouping, candidates: ["s0", "uniform"]),
        (name: "S3", dimension: TunedGroups, candidates: ["11", "01"]),
    ],
)
"#,
        root().join("tests/fixtures/tiny-bert").display()
    );
    let path = dir.join("experiment.ron");
    std::fs::write(&path, spec).expect("write experiment");
    path
}

#[test]
fn a_fixed_size_baseline_reports_its_share_not_a_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exp = tiny_experiment(dir.path());
    let out = peftspace(
        &[
            "train",
            exp.to_str().expect("utf-8"),
            "--baseline",
            "bitfit",
            "--quiet",
        ],
        false,
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("trainable parameters:"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(line.contains("the budget is 5 %"), "{line}");
    assert!(!line.contains("(budget"), "{line}");
}

#[test]
fn a_design_outside_the_space_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exp = tiny_experiment(dir.path());
    let out = peftspace(
        &[
            "sample",
            exp.to_str().expect("utf-8"),
            "--stage",
            "S3",
            "--design",
            "g=1,1 t=01 s=-|L",
        ],
        false,
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("not in the space")
            && stderr.contains("it tunes groups 01; the space tunes 11"),
        "{stderr}"
    );
}

#[test]
fn reused_counts_only_trials_stored_before_this_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exp = dir.path().join("exp.ron");
    std::fs::write(&exp, refine_support::experiment_ron(2)).expect("write experiment");
    let out_dir = dir.path().join("results");
    let args = [
        "run",
        exp.to_str().expect("utf-8"),
        "--out",
        out_dir.to_str().expect("utf-8"),
    ];
    let first = peftspace(&args, true);
    let stdout = text(&first.stdout);
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(stdout.contains(" 0 reused"), "{stdout}");
    let second = peftspace(&args, true);
    let stdout = text(&second.stdout);
    assert!(second.status.success(), "{}", text(&second.stderr));
    assert!(stdout.contains("0 trials run now"), "{stdout}");
}
