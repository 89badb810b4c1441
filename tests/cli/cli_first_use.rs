//! What a first-time user runs into: custom task files checked by `validate` (exit 2, `file:line: message` with
//! the fix), a classification task without `labels`, and the `did not learn` flag of `train` on a model that
//! cannot beat the majority class (and its absence on one that learns).

use crate::refine_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn tiny_bert() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-bert")
}

const GOOD_TRAIN: &str = "sentence\tlabel\nthe cat sat\tpos\na dog ran\tneg\n";

/// An experiment over the tiny BERT with one custom task; `custom` is the inside of `custom: Some((…))`.
fn experiment(dir: &Path, custom: &str, training: &str) -> PathBuf {
    let spec = format!(
        r#"ExperimentSpec(
    name: "first-use",
    backbone: (path: Some("{model}")),
    tasks: [(id: "toy", custom: Some(({custom})))],
    seeds: [1],
    training: ({training}),
)
"#,
        model = tiny_bert().display()
    );
    let path = dir.join("experiment.ron");
    std::fs::write(&path, spec).expect("write experiment");
    path
}

const TSV_TASK: &str = r#"train: "train.tsv", eval: "eval.tsv", text: "sentence", label: "label", labels: ["neg", "pos"]"#;

fn peftspace(args: &[&str], experiment: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peftspace"))
        .env_remove("PEFTSPACE_MODEL")
        .env_remove("PEFTSPACE_DATA")
        .env_remove("PEFTSPACE_EXECUTOR")
        .arg("--offline")
        .arg(args[0])
        .arg(experiment)
        .args(&args[1..])
        .output()
        .expect("run peftspace")
}

/// Runs `validate` on a task whose files are `train` and `eval` (TSV) and returns its stderr after checking that
/// it exited with code 2.
fn validate_fails(custom: &str, train: Option<&str>, eval: Option<&str>) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    if let Some(text) = train {
        std::fs::write(dir.path().join("train.tsv"), text).expect("write");
    }
    if let Some(text) = eval {
        std::fs::write(dir.path().join("eval.tsv"), text).expect("write");
    }
    let exp = experiment(dir.path(), custom, "");
    let out = peftspace(&["validate"], &exp);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr
}

#[test]
fn validate_accepts_good_task_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("train.tsv"), GOOD_TRAIN).expect("write");
    std::fs::write(dir.path().join("eval.tsv"), GOOD_TRAIN).expect("write");
    let exp = experiment(dir.path(), TSV_TASK, "");
    let out = peftspace(&["validate"], &exp);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn validate_reports_a_missing_file_once_with_its_place() {
    let e = validate_fails(TSV_TASK, Some(GOOD_TRAIN), None);
    assert!(e.contains("experiment.ron:4:"), "{e}");
    assert!(e.contains("tasks[0].custom.eval: no file"), "{e}");
    assert!(
        e.contains("paths are relative to the experiment file's folder"),
        "{e}"
    );
    assert!(!e.contains("os error"), "no OS error repeated: {e}");
}

#[test]
fn validate_reports_a_missing_label_column() {
    let e = validate_fails(
        TSV_TASK,
        Some("sentence\tstars\nthe cat sat\tpos\n"),
        Some(GOOD_TRAIN),
    );
    assert!(e.contains("train.tsv:1: no column `label` (the task's `label`) in the header; columns: sentence, stars"), "{e}");
}

#[test]
fn validate_reports_an_unknown_label_value_at_its_line() {
    let e = validate_fails(
        TSV_TASK,
        Some(GOOD_TRAIN),
        Some("sentence\tlabel\nfine\tpos\nhm\tmaybe\n"),
    );
    assert!(
        e.contains("eval.tsv:3: label `maybe` is not one of: neg, pos"),
        "{e}"
    );
}

#[test]
fn validate_reports_an_empty_file_as_empty() {
    let e = validate_fails(TSV_TASK, Some(GOOD_TRAIN), Some(""));
    assert!(
        e.contains("eval.tsv:1: the file is empty; it needs a header row"),
        "{e}"
    );
    let e = validate_fails(TSV_TASK, Some(GOOD_TRAIN), Some("sentence\tlabel\n"));
    assert!(
        e.contains("eval.tsv:2: no examples after the header row"),
        "{e}"
    );
}

#[test]
fn validate_spots_a_file_without_header_row() {
    let e = validate_fails(
        TSV_TASK,
        Some("the cat sat on the mat\tpos\na dog ran\tneg\n"),
        Some(GOOD_TRAIN),
    );
    assert!(e.contains("train.tsv:1: no column `sentence`"), "{e}");
    assert!(
        e.contains("line 1 looks like an example, not a header"),
        "{e}"
    );
    assert!(e.contains("`header: false`"), "{e}");
}

#[test]
fn a_classification_task_without_labels_is_refused_with_the_values_found() {
    let task = r#"train: "train.tsv", eval: "eval.tsv", text: "sentence", label: "label""#;
    let e = validate_fails(task, Some(GOOD_TRAIN), Some(GOOD_TRAIN));
    assert!(e.contains("experiment.ron:4:"), "{e}");
    assert!(e.contains(r#"`labels` is missing: a classification task lists its classes in order, e.g. `labels: ["pos", "neg"]`"#), "{e}");
    assert!(e.contains("`labels: []` or `kind: Regression`"), "{e}");
    // Said explicitly, a regression task with text labels fails on the first label instead.
    let regression = r#"train: "train.tsv", eval: "eval.tsv", text: "sentence", label: "label", kind: Regression"#;
    let e = validate_fails(regression, Some(GOOD_TRAIN), Some(GOOD_TRAIN));
    assert!(
        e.contains("train.tsv:2: label `pos` is not a finite number (regression task)"),
        "{e}"
    );
}

#[test]
fn train_reports_bad_task_files_with_exit_code_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("train.tsv"), GOOD_TRAIN).expect("write");
    std::fs::write(dir.path().join("eval.tsv"), "").expect("write");
    let exp = experiment(dir.path(), TSV_TASK, "");
    let out = peftspace(&["train", "--baseline", "bitfit", "--quiet"], &exp);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("eval.tsv:1: the file is empty"), "{stderr}");
}

/// Trains the full baseline on `train`/`eval` texts and returns (stdout, the `--out` CSV row).
fn train_full(
    train: &str,
    eval: &str,
    epochs: usize,
) -> (String, std::collections::BTreeMap<String, String>) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("train.tsv"), train).expect("write");
    std::fs::write(dir.path().join("eval.tsv"), eval).expect("write");
    let training = format!(
        "epochs: {epochs}, batch_size: 4, max_seq_len: 16, eval_batch_size: 8, dropout: 0.0, full_learning_rate: 3e-3"
    );
    let exp = experiment(dir.path(), TSV_TASK, &training);
    let csv = dir.path().join("out.csv");
    let out = peftspace(
        &[
            "train",
            "--baseline",
            "full",
            "--quiet",
            "--out",
            csv.to_str().expect("utf-8 path"),
        ],
        &exp,
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rows = refine_support::read_csv(&csv);
    assert_eq!(rows.len(), 1);
    (stdout, rows.remove(0))
}

fn rows(lines: &[(&str, &str, usize)]) -> String {
    let mut text = String::from("sentence\tlabel\n");
    for (sentence, label, times) in lines {
        for _ in 0..*times {
            text.push_str(&format!("{sentence}\t{label}\n"));
        }
    }
    text
}

#[test]
fn a_model_that_cannot_learn_is_flagged() {
    // Every text is the same, so every prediction is the same: at best the majority class (pos: 6 of 10 in
    // training, 3 of 5 in evaluation).
    let train = rows(&[("the same text", "pos", 6), ("the same text", "neg", 4)]);
    let eval = rows(&[("the same text", "pos", 3), ("the same text", "neg", 2)]);
    let (stdout, row) = train_full(&train, &eval, 2);
    assert!(
        stdout.contains("; majority class 0.6000: did not learn"),
        "{stdout}"
    );
    assert_eq!(row["reference"], "0.600000", "{row:?}");
    assert_eq!(row["learned"], "false", "{row:?}");
}

#[test]
fn a_model_that_learns_is_not_flagged() {
    let train = rows(&[
        ("the cat sat on the mat", "pos", 12),
        ("a dog runs in the park", "neg", 12),
    ]);
    let eval = rows(&[
        ("the cat sat on the mat", "pos", 4),
        ("a dog runs in the park", "neg", 4),
    ]);
    let (stdout, row) = train_full(&train, &eval, 6);
    assert!(!stdout.contains("did not learn"), "{stdout}");
    assert!(stdout.contains("; majority class 0.5000"), "{stdout}");
    assert_eq!(row["learned"], "true", "{row:?}");
    let accuracy: f64 = row["primary"].parse().expect("a score");
    assert!(accuracy > 0.5, "{row:?}");
}
