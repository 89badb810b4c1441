//! `peftspace validate` on generation tasks: good files pass; a missing target key, an empty target and an
//! encoder-only backbone each stop it with one line placed at `file:line` and exit code 2. `train` refuses the
//! encoder-only backbone too, before it trains.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// An experiment over the fixture model `model` with one generation task evaluated on the fixture file `eval`.
fn experiment(dir: &Path, model: &str, eval: &str) -> PathBuf {
    let data = fixtures().join("generation");
    let spec = format!(
        r#"ExperimentSpec(
    name: "generation",
    backbone: (path: "{model}"),
    tasks: [(id: "reverse", generation: (
        train: "{train}", eval: "{eval}", max_target_tokens: 8,
    ))],
    training: (max_seq_len: 16),
)
"#,
        model = fixtures().join(model).display(),
        train = data.join("train.jsonl").display(),
        eval = data.join(eval).display(),
    );
    let path = dir.join("experiment.ron");
    std::fs::write(&path, spec).expect("write experiment");
    path
}

fn validate(experiment: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peftspace"))
        .env_remove("PEFTSPACE_MODEL")
        .env_remove("PEFTSPACE_DATA")
        .env_remove("PEFTSPACE_EXECUTOR")
        .arg("--offline")
        .arg("validate")
        .arg(experiment)
        .output()
        .expect("run peftspace")
}

/// `validate`'s one-line message on a file that must fail with exit code 2.
fn validate_fails(model: &str, eval: &str) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = validate(&experiment(dir.path(), model, eval));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr
}

#[test]
fn a_good_generation_task_on_t5_validates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = validate(&experiment(dir.path(), "t5-tiny-relu", "dev.jsonl"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_missing_target_key_is_reported_at_its_line_with_the_keys_found() {
    let e = validate_fails("t5-tiny-relu", "missing_target.jsonl");
    assert!(e.contains("missing_target.jsonl:1: key `target`"), "{e}");
    assert!(e.contains("keys found:") && e.contains("output"), "{e}");
}

#[test]
fn an_empty_target_is_reported_at_its_line() {
    let e = validate_fails("t5-tiny-relu", "empty_target.jsonl");
    assert!(e.contains("empty_target.jsonl:3: empty target"), "{e}");
}

#[test]
fn an_encoder_only_backbone_is_refused_at_the_task() {
    let e = validate_fails("tiny-bert", "dev.jsonl");
    assert!(
        e.contains("experiment.ron:4:29: tasks[0].generation: task `reverse` generates text"),
        "{e}"
    );
    assert!(
        e.contains("`bert` model") && e.contains("T5 or BART"),
        "{e}"
    );
}

#[test]
fn train_refuses_an_encoder_only_backbone_before_training() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exp = experiment(dir.path(), "tiny-bert", "dev.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_peftspace"))
        .env_remove("PEFTSPACE_MODEL")
        .env_remove("PEFTSPACE_DATA")
        .env_remove("PEFTSPACE_EXECUTOR")
        .args(["--offline", "--device", "cpu", "train"])
        .arg(&exp)
        .args(["--baseline", "lora", "--quiet"])
        .output()
        .expect("run peftspace");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("experiment.ron:4:29: tasks[0].generation: task `reverse` generates text"),
        "{stderr}"
    );
}
