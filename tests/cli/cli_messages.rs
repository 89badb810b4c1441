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

/// Resuming a results folder with a changed experiment is a refusal of input: exit 2 (it was 1), with the fields.
#[test]
fn a_changed_experiment_on_resume_exits_2_naming_what_changed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exp = dir.path().join("exp.ron");
    std::fs::write(&exp, refine_support::experiment_ron(2)).expect("write experiment");
    let out_dir = dir.path().join("results");
    let args = [
        "run",
        exp.to_str().expect("utf-8"),
        "--out",
        out_dir.to_str().expect("utf-8"),
        "--quiet",
    ];
    let first = peftspace(&args, true);
    assert!(first.status.success(), "{}", text(&first.stderr));
    // `--quiet` draws no progress bar.
    assert!(
        !text(&first.stderr).contains("ETA"),
        "{}",
        text(&first.stderr)
    );
    std::fs::write(&exp, refine_support::experiment_ron(3)).expect("rewrite experiment");
    let second = peftspace(&args, true);
    let stderr = text(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("different experiment") && stderr.contains("samples"),
        "{stderr}"
    );
}

/// `train EXP` alone names all three ways to say what to train, before anything is loaded; `--design` with a
/// strategy the experiment does not list is refused as `sample --design` refuses it.
#[test]
fn train_says_what_it_needs_and_accepts_only_the_experiments_strategies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exp = tiny_experiment(dir.path());
    let exp = exp.to_str().expect("utf-8");
    let out = peftspace(&["train", exp], false);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--design")
            && stderr.contains("--baseline")
            && stderr.contains("--adapter"),
        "{stderr}"
    );
    // The experiment lists no strategies, so all four built-in ones are its strategies: use a plugin-free name
    // that is not among them.
    let listed = std::fs::read_to_string(exp).expect("read").replace(
        "budget: 0.05,",
        "budget: 0.05,\n    strategies: [(name: \"lora\")],",
    );
    std::fs::write(exp, listed).expect("write");
    let out = peftspace(
        &["train", exp, "--design", "g=1,1 t=11 s=P|P", "--quiet"],
        false,
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`prefix`") && stderr.contains("not one of the experiment's strategies"),
        "{stderr}"
    );
    let out = peftspace(&["sample", exp, "--design", "g=1,1 t=11 s=P|P"], false);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

/// A reader that closes the pipe (`peftspace validate FILE | head -1`) ends the command quietly: no panic, no
/// backtrace (it was exit 101 with "failed printing to stdout").
#[test]
fn a_closed_pipe_ends_a_command_quietly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_peftspace"))
        .current_dir(root())
        .args(["list"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let stderr = text(&out.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{stderr}"
    );
    assert_ne!(out.status.code(), Some(101));
}

/// Help keeps the global flags apart, names the positional argument the same way everywhere, and completions
/// are printed for a shell.
#[test]
fn help_groups_global_flags_and_completions_print() {
    for command in ["train", "validate", "sample", "plan", "run"] {
        let out = peftspace(&[command, "--help"], false);
        let stdout = text(&out.stdout);
        assert!(stdout.contains("Global options:"), "{command}: {stdout}");
        assert!(stdout.contains("<EXPERIMENT>"), "{command}: {stdout}");
    }
    let out = peftspace(&["completions", "bash"], false);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("peftspace"),
        "{}",
        text(&out.stdout)
    );
}

/// `encode --ids` runs a folder with a config and weights but no tokenizer.json (ids are used as given).
#[test]
fn encode_ids_needs_no_tokenizer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = dir.path().join("model");
    std::fs::create_dir(&model).expect("mkdir");
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(
            root().join("tests/fixtures/tiny-bert").join(file),
            model.join(file),
        )
        .expect("copy");
    }
    let out_file = dir.path().join("h.safetensors");
    let out = peftspace(
        &[
            "--offline",
            "encode",
            "--model",
            model.to_str().expect("utf-8"),
            "--ids",
            "2,5,7",
            "--out",
            out_file.to_str().expect("utf-8"),
        ],
        false,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out_file.is_file());
    // A text still needs the tokenizer, and says so.
    let out = peftspace(
        &[
            "--offline",
            "encode",
            "--model",
            model.to_str().expect("utf-8"),
            "--text",
            "hi",
            "--out",
            "x",
        ],
        false,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("tokenizer.json"),
        "{}",
        text(&out.stderr)
    );
}
