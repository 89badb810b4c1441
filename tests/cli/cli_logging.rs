//! Diagnostics on stderr: `-vv --log-format json` gives one JSON object per line naming the training spans, the
//! default level shows warnings but no debug lines, and `run --jobs N` workers log to stderr without disturbing the
//! stdout protocol they speak with the parent.

use crate::refine_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The binary with no logging configuration inherited from whoever runs the tests.
fn peftspace() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_peftspace"));
    command
        .env_remove("RUST_LOG")
        .env_remove("PEFTSPACE_MODEL")
        .env_remove("PEFTSPACE_DATA")
        .env_remove("PEFTSPACE_EXECUTOR");
    command
}

/// The synthetic development mode of `peftspace run` (fake scores, no model): fast, and it writes a real store.
fn synthetic_run() -> Command {
    let mut command = peftspace();
    command
        .env("PEFTSPACE_EXECUTOR", "synthetic")
        .env_remove("PEFTSPACE_SYNTHETIC_DIVERGE")
        .env_remove("PEFTSPACE_SYNTHETIC_SLEEP_MS")
        .env_remove("PEFTSPACE_SYNTHETIC_LOG");
    command
}

/// One custom task of a few short examples on the tiny BERT fixture, one epoch of two batches.
fn write_tiny_experiment(dir: &Path) -> PathBuf {
    std::fs::write(dir.join("train.tsv"), refine_support::toy_tsv(16)).expect("write train");
    std::fs::write(dir.join("eval.tsv"), refine_support::toy_tsv(2)).expect("write eval");
    let spec = format!(
        r#"ExperimentSpec(
    name: "tiny-logging",
    backbone: (path: Some("{model}")),
    tasks: [(id: "tiny", custom: Some((train: "train.tsv", eval: "eval.tsv", text: "text", label: "label",
        labels: ["neg", "pos"])))],
    seeds: [1],
    training: (epochs: 1, batch_size: 8, max_seq_len: 16, eval_batch_size: 8),
)
"#,
        model = fixture("tiny-bert").display(),
    );
    let path = dir.join("experiment.ron");
    std::fs::write(&path, spec).expect("write experiment");
    path
}

fn train(experiment: &Path, logging: &[&str]) -> Output {
    let run = peftspace()
        .args(logging)
        .arg("--offline")
        .arg("train")
        .arg(experiment)
        .args(["--baseline", "bitfit", "--quiet"])
        .output()
        .expect("run peftspace train");
    assert!(
        run.status.success(),
        "train {logging:?} failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    run
}

/// Every stderr line that is a log event (JSON lines start with `{`), parsed; panics on one that is not valid JSON.
fn json_events(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
        })
        .collect()
}

/// Names of the spans the events mention: the span an event is in, the spans above it, and closed spans.
fn span_names(events: &[Value]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for event in events {
        let listed = event["spans"].as_array().into_iter().flatten();
        for span in listed.chain(std::iter::once(&event["span"])) {
            if let Some(name) = span["name"].as_str() {
                names.insert(name.to_string());
            }
        }
    }
    names
}

/// Lines a log subscriber would have written at debug or trace level in text format.
fn debug_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|line| line.contains("DEBUG") || line.contains("TRACE") || line.starts_with('{'))
        .collect()
}

/// The result lines on stdout without their wall time, which differs between runs.
fn results_without_seconds(stdout: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|line| line.split(", ").next().unwrap_or(line).to_string())
        .collect()
}

#[test]
fn json_trace_of_a_training_run_names_its_spans_and_leaves_stdout_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let experiment = write_tiny_experiment(dir.path());

    let quiet = train(&experiment, &[]);
    let quiet_stderr = String::from_utf8_lossy(&quiet.stderr);
    assert!(
        debug_lines(&quiet_stderr).is_empty(),
        "default level printed debug output:\n{quiet_stderr}"
    );

    let traced = train(&experiment, &["--log-format", "json", "-vv"]);
    let stderr = String::from_utf8_lossy(&traced.stderr);
    let events = json_events(&stderr);
    assert!(!events.is_empty(), "no JSON log lines:\n{stderr}");
    for event in &events {
        assert!(event["level"].is_string(), "event without a level: {event}");
        assert!(event["fields"].is_object(), "event without fields: {event}");
    }
    let names = span_names(&events);
    for expected in [
        "run_trial",
        "epoch",
        "step",
        "forward",
        "backward",
        "update",
        "evaluate",
    ] {
        assert!(
            names.contains(expected),
            "no `{expected}` span in {names:?}"
        );
    }
    let epoch_trained = events
        .iter()
        .find(|e| e["fields"]["message"] == "epoch trained")
        .unwrap_or_else(|| panic!("no `epoch trained` event:\n{stderr}"));
    assert_eq!(epoch_trained["fields"]["batches"], 2, "{epoch_trained}");
    assert_eq!(epoch_trained["span"]["epoch"], 1, "{epoch_trained}");
    let trial = epoch_trained["spans"]
        .as_array()
        .and_then(|spans| spans.iter().find(|s| s["name"] == "run_trial"))
        .unwrap_or_else(|| panic!("`epoch trained` is not inside `run_trial`: {epoch_trained}"));
    assert_eq!(trial["task"], "tiny", "{trial}");

    // Logging is diagnostics only: the command's own output is the same with or without it.
    assert_eq!(
        results_without_seconds(&traced.stdout),
        results_without_seconds(&quiet.stdout)
    );
}

#[test]
fn a_warning_shows_at_the_default_level_without_debug_lines() {
    let work = tempfile::tempdir().expect("tempdir");
    let experiment = work.path().join("exp.ron");
    std::fs::write(&experiment, refine_support::experiment_ron(1)).expect("write");
    let out = work.path().join("results");
    let run = || {
        synthetic_run()
            .arg("run")
            .arg(&experiment)
            .arg("--out")
            .arg(&out)
            .output()
            .expect("run")
    };
    let first = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    // A complete but unreadable last line: the store drops it with a warning and the trial runs again.
    let trials = out.join("trials.jsonl");
    let mut stored = std::fs::read_to_string(&trials).expect("read trials");
    stored.push_str("{\"id\": \"half a record\n");
    std::fs::write(&trials, stored).expect("write trials");

    let rerun = run();
    let stderr = String::from_utf8_lossy(&rerun.stderr);
    assert!(rerun.status.success(), "{stderr}");
    let warning = stderr
        .lines()
        .find(|line| line.contains("dropping an unreadable last line"))
        .unwrap_or_else(|| panic!("no warning about the unreadable line:\n{stderr}"));
    assert!(warning.contains("WARN"), "{warning}");
    // stderr is a pipe here: no colour codes.
    assert!(!stderr.contains('\u{1b}'), "ANSI codes in:\n{stderr}");
    assert!(debug_lines(&stderr).is_empty(), "debug output:\n{stderr}");
}

#[test]
fn workers_log_to_stderr_with_the_parents_flags_and_keep_stdout_for_answers() {
    let work = tempfile::tempdir().expect("tempdir");
    let experiment = work.path().join("exp.ron");
    std::fs::write(&experiment, refine_support::experiment_ron(1)).expect("write");
    let out = work.path().join("results");
    let run = synthetic_run()
        .args(["-vv", "--log-format", "json"])
        .arg("run")
        .arg(&experiment)
        .arg("--out")
        .arg(&out)
        .args(["--jobs", "2", "--threads", "1"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&run.stderr);
    // A log line on a worker's stdout would be an unreadable answer and fail the run.
    assert!(run.status.success(), "{stderr}");
    let events = json_events(&stderr);
    // With --jobs 2 only the workers run trials: `trial` spans on stderr show they got -vv and the JSON format.
    let closed_trials = events
        .iter()
        .filter(|e| e["span"]["name"] == "trial" && e["fields"]["message"] == "close")
        .count();
    assert!(
        closed_trials > 0,
        "no trial spans from the workers:\n{stderr}"
    );
    assert!(
        span_names(&events).contains("stage"),
        "no stage span from the parent"
    );
}
