//! Full fine-tuning (every backbone weight trainable) and truncation to the model's position limit: a tiny BERT
//! loaded with trainable weights learns a separable task, and `peftspace train --baseline full` runs end to end,
//! reporting the backbone's parameter count as trainable; texts longer than the model's 40 positions are truncated
//! to them rather than failing the trial.

use crate::common;
use crate::refine_support;

// Links the built-in strategies, evaluators and backbones into this test binary.
use peftspace_backbones as _;
use peftspace_plugins as _;

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::Device;
use common::{ensure_accuracy_evaluator, synthetic_task, ToyTokenizer};
use peftspace_core::backbone::Weights;
use peftspace_core::spec::TrainingSpec;
use peftspace_core::train::{run_trial, TrialInput};
use peftspace_core::trial::TrialStatus;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The tiny BERT fixture's parameter count (embeddings, 2 layers, pooler), also its position limit.
const TINY_BERT_PARAMS: usize = 20_320;
const TINY_BERT_POSITIONS: usize = 40;

#[test]
fn full_fine_tuning_of_a_tiny_bert_learns_a_separable_task() {
    ensure_accuracy_evaluator();
    let device = Device::Cpu;
    let dir = fixture("tiny-bert");
    let backbone = peftspace_backbones::load_with(&dir, &device, Weights::Trainable)
        .expect("trainable tiny BERT");
    assert_eq!(backbone.info().num_params, TINY_BERT_PARAMS);
    let before: Vec<_> = backbone
        .trainable_weights()
        .iter()
        .map(|v| v.as_tensor().copy().expect("copy"))
        .collect();
    // The toy tokenizer's ids (< 64) fit the fixture's vocabulary of 89.
    let task = synthetic_task(320, 200, 5);
    let training = TrainingSpec {
        epochs: 4,
        batch_size: 16,
        full_learning_rate: 2e-3,
        max_seq_len: 16,
        eval_batch_size: 32,
        dropout: 0.0,
        ..TrainingSpec::default()
    };
    let out = run_trial(&TrialInput {
        backbone: backbone.as_ref(),
        tokenizer: &ToyTokenizer,
        task: &task,
        plan: &[],
        strategies: &[],
        training: &training,
        seed: 1,
        progress: false,
        on_epoch: None,
    })
    .expect("trial runs");
    assert_eq!(out.status, TrialStatus::Ok);
    assert_eq!(out.trainable_params, TINY_BERT_PARAMS);
    let first = out.per_epoch[0].train_loss;
    let last = out.per_epoch[3].train_loss;
    assert!(last < 0.7 * first, "loss should fall: {first} → {last}");
    assert!(
        out.metrics.primary > 0.85,
        "accuracy {} should be far above chance",
        out.metrics.primary
    );
    // The optimiser moved the backbone's own weights (in place: this copy is spent).
    let moved = backbone
        .trainable_weights()
        .iter()
        .zip(&before)
        .filter(|(v, b)| {
            let diff = (v.as_tensor() - *b)
                .and_then(|d| d.abs())
                .and_then(|d| d.max_all())
                .and_then(|d| d.to_scalar::<f32>())
                .expect("diff");
            diff > 0.0
        })
        .count();
    assert_eq!(moved, before.len(), "every backbone weight should change");
}

/// An experiment over the tiny BERT with two custom tasks in `dir`; some texts are longer than the model's positions.
fn write_experiment(dir: &Path, max_seq_len: usize) -> PathBuf {
    let long: Vec<&str> = std::iter::repeat_n("the small cat sat on the mat and", 12).collect();
    let long = long.join(" ");
    let mut train = String::from("text\tlabel\n");
    let mut eval = String::from("text\tlabel\n");
    for i in 0..24 {
        let (text, label) = if i % 2 == 0 {
            ("the cat sat on the mat", "pos")
        } else {
            ("a dog runs in the park", "neg")
        };
        let text = if i % 6 == 0 {
            format!("{text} {long}")
        } else {
            text.to_string()
        };
        train.push_str(&format!("{text}\t{label}\n"));
        if i < 8 {
            eval.push_str(&format!("{text}\t{label}\n"));
        }
    }
    std::fs::write(dir.join("train.tsv"), train).expect("write train");
    std::fs::write(dir.join("eval.tsv"), eval).expect("write eval");
    let task = |id: &str| {
        format!(
            r#"(id: "{id}", custom: Some((train: "train.tsv", eval: "eval.tsv", text: "text", label: "label",
                labels: ["neg", "pos"])))"#
        )
    };
    let spec = format!(
        r#"ExperimentSpec(
    name: "tiny-full",
    backbone: (path: Some("{model}")),
    tasks: [{a}, {b}],
    seeds: [3],
    training: (epochs: 1, batch_size: 8, max_seq_len: {max_seq_len}, eval_batch_size: 8, full_learning_rate: 1e-3),
)
"#,
        model = fixture("tiny-bert").display(),
        a = task("first"),
        b = task("second"),
    );
    let path = dir.join("experiment.ron");
    std::fs::write(&path, spec).expect("write experiment");
    path
}

fn peftspace_train(experiment: &Path, baseline: &str, out: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_peftspace"))
        .env_remove("PEFTSPACE_MODEL")
        .env_remove("PEFTSPACE_DATA")
        .arg("--offline")
        .arg("train")
        .arg(experiment)
        .args(["--baseline", baseline, "--quiet", "--out"])
        .arg(out)
        .output()
        .expect("run peftspace")
}

#[test]
fn train_baseline_full_trains_every_backbone_weight_end_to_end() {
    let dir = tempfile::tempdir().expect("temp dir");
    let experiment = write_experiment(dir.path(), 64);
    let out = dir.path().join("full.csv");
    let run = peftspace_train(&experiment, "full", &out);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "train failed:\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "trainable parameters: {TINY_BERT_PARAMS} (all weights"
        )),
        "{stderr}"
    );
    let rows = refine_support::read_csv(&out);
    assert_eq!(rows.len(), 2, "one row per task");
    for row in &rows {
        assert_eq!(row["status"], "ok", "{row:?}");
        assert_eq!(row["trainable_params"], TINY_BERT_PARAMS.to_string());
        // Two classes: a hidden-width linear layer plus its biases.
        assert_eq!(row["head_params"], (2 * 32 + 2).to_string());
    }
    // Each task starts from the checkpoint (a fresh trainable copy): the two identical tasks train identically, which
    // they would not if the second started from the first one's updated weights.
    let losses: Vec<&str> = stderr
        .lines()
        .filter(|l| l.trim_start().starts_with("epoch 1: train loss"))
        // Up to the scores; the seconds at the end may differ.
        .map(|l| l.split(')').next().unwrap_or(l))
        .collect();
    assert_eq!(losses.len(), 2, "{stderr}");
    assert_eq!(losses[0], losses[1]);
    assert_eq!(rows[0]["primary"], rows[1]["primary"]);
}

#[test]
fn texts_longer_than_the_models_positions_are_truncated_not_fatal() {
    let dir = tempfile::tempdir().expect("temp dir");
    // max_seq_len 64 > the fixture's 40 positions; some texts have over 90 tokens.
    let experiment = write_experiment(dir.path(), 64);
    let out = dir.path().join("bitfit.csv");
    let run = peftspace_train(&experiment, "bitfit", &out);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "train failed:\n{stderr}");
    assert!(!stderr.contains("longer than the model allows"), "{stderr}");
    for row in refine_support::read_csv(&out) {
        assert_eq!(row["status"], "ok", "{row:?}");
    }
    assert!(TINY_BERT_POSITIONS < 64);
}

#[test]
fn refinement_final_runs_train_the_full_baseline() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_experiment(dir.path(), 64);
    let task = r#"(id: "toy", custom: Some((train: "train.tsv", eval: "eval.tsv", text: "text", label: "label",
                labels: ["neg", "pos"])))"#;
    // LoRA r = 4 on q and v of both layers is 1,024 parameters: within 1 % of 5 % of the backbone.
    let spec = format!(
        r#"ExperimentSpec(
    name: "tiny-final-runs",
    backbone: (path: Some("{model}")),
    tasks: [{task}],
    budget: 0.05,
    groups: 2,
    samples: 2,
    seeds: [1],
    training: (epochs: 1, batch_size: 8, max_seq_len: 64, eval_batch_size: 8),
    final_runs: Some((top: 1, seeds: [2], baselines: ["lora", "full"])),
)
"#,
        model = fixture("tiny-bert").display(),
    );
    let experiment = dir.path().join("final_runs.ron");
    std::fs::write(&experiment, spec).expect("write experiment");
    let out = dir.path().join("results");
    let run = Command::new(env!("CARGO_BIN_EXE_peftspace"))
        .env_remove("PEFTSPACE_MODEL")
        .env_remove("PEFTSPACE_DATA")
        .env_remove("PEFTSPACE_EXECUTOR")
        .arg("--offline")
        .arg("run")
        .arg(&experiment)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run peftspace");
    assert!(
        run.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let trials = refine_support::read_csv(&out.join("trials.csv"));
    let full: Vec<_> = trials
        .iter()
        .filter(|r| r["stage"] == "final" && r["candidate"] == "full")
        .collect();
    assert_eq!(full.len(), 1, "{trials:?}");
    assert_eq!(full[0]["status"], "ok", "{:?}", full[0]);
    assert_eq!(full[0]["trainable_params"], TINY_BERT_PARAMS.to_string());
    let methods = refine_support::read_csv(&out.join("final.csv"));
    let row = methods
        .iter()
        .find(|r| r["method"] == "full")
        .expect("a `full` row in final.csv");
    assert_eq!(row["trainable_params"], TINY_BERT_PARAMS.to_string());
    assert_eq!(row["runs_ok"], "1");
}
