//! `peftspace plan` through the built binary: the paper's T5 protocol counted without its model (nothing loaded,
//! nothing downloaded), task sizes counted from files, a race's least and most, and a calibrated time estimate on
//! the tiny BERT fixture.

use crate::common;
use common::shared;

use crate::refine_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn plan(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peftspace"))
        .arg("plan")
        .args(args)
        .current_dir(root())
        .env_remove("PEFTSPACE_MODEL")
        .env_remove("PEFTSPACE_DATA")
        .env_remove("PEFTSPACE_DEVICE")
        .env("PEFTSPACE_CACHE", cache)
        .output()
        .expect("the peftspace binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The row of `stage` in the printed table, split on whitespace.
fn row<'a>(stdout: &'a str, stage: &str) -> Vec<&'a str> {
    stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(stage))
        .unwrap_or_else(|| panic!("no row {stage}:\n{stdout}"))
        .split_whitespace()
        .collect()
}

#[test]
fn the_paper_t5_protocol_is_counted_without_its_model() {
    let cache = tempfile::tempdir().expect("tempdir");
    let out = plan(
        &[
            "experiments/paper_t5_base.ron",
            "--no-calibrate",
            "--offline",
        ],
        cache.path(),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", text(&out.stderr));
    // 73 candidates (5 + 3 + 5 + 4 × 15) × 100 designs × 8 tasks, plus (1 best + 5 baselines) × 8 tasks × 3 seeds.
    assert_eq!(row(&stdout, "S4.1")[3], "12,000");
    assert_eq!(row(&stdout, "final")[3], "144");
    assert_eq!(row(&stdout, "total")[1], "58,544");
    assert!(stdout.contains("backbone not described"), "{stdout}");
    assert!(stdout.contains("qqp 363846/40430 (GLUE sizes)"), "{stdout}");
    assert!(!stdout.contains("estimated wall time"), "{stdout}");
    // Nothing was downloaded or written into the cache.
    assert_eq!(std::fs::read_dir(cache.path()).expect("cache").count(), 0);
}

/// A raced two-stage experiment on a 40-row custom task and GLUE's fixture RTE (2 training rows, 2 dev rows).
fn write_experiment(dir: &Path) -> PathBuf {
    std::fs::write(dir.join("train.tsv"), refine_support::toy_tsv(40)).expect("write train");
    std::fs::write(dir.join("eval.tsv"), refine_support::toy_tsv(10)).expect("write eval");
    let spec = format!(
        r#"ExperimentSpec(
    name: "plan",
    backbone: (path: Some("{model}")),
    data_dir: Some("{glue}"),
    tasks: [
        (id: "toy", custom: Some((train: "train.tsv", eval: "eval.tsv", text: "text", label: "label",
            labels: ["neg", "pos"]))),
        (id: "rte"),
    ],
    seeds: [1],
    // The tiny fixture has 20,320 parameters: 0.5 % would not fit one adapter.
    budget: 0.2,
    samples: 6,
    training: (epochs: 2, batch_size: 4, max_seq_len: 16),
    race: (min_samples: 2, batch: 2),
    stages: [(name: "S1", dimension: Grouping, candidates: ["uniform", "spindle", "increasing"])],
)
"#,
        model = root().join("tests/fixtures/tiny-bert").display(),
        glue = root().join("tests/fixtures/glue").display(),
    );
    let path = dir.join("experiment.ron");
    std::fs::write(&path, spec).expect("write experiment");
    path
}

#[test]
fn sizes_come_from_the_files_and_a_race_shows_least_and_most() {
    let dir = tempfile::tempdir().expect("tempdir");
    let experiment = write_experiment(dir.path());
    let exp = experiment.to_str().expect("utf-8 path");
    let out = plan(&[exp, "--no-calibrate", "--offline"], dir.path());
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", text(&out.stderr));
    let rte =
        std::fs::read_to_string(root().join("tests/fixtures/glue/RTE/train.tsv")).expect("rte");
    let rte_dev =
        std::fs::read_to_string(root().join("tests/fixtures/glue/RTE/dev.tsv")).expect("rte");
    let (rte_train, rte_eval) = (rte.lines().count() - 1, rte_dev.lines().count() - 1);
    assert_eq!((rte_train, rte_eval), (2, 1));
    // The rows a search trial uses: training rows less the validation split (a tenth, at least one), scored on it.
    assert!(
        stdout.contains("search trials (train/validation examples per trial): toy 36/4, rte 1/1"),
        "{stdout}"
    );
    assert!(stdout.contains("backbone 2 layers"), "{stdout}");
    let s1 = row(&stdout, "S1");
    // 3 candidates × (2…6) designs × 2 tasks; 2 epochs each.
    assert_eq!(&s1[1..5], ["3", "2–6", "12–36", "24–72"]);
    // Search trials train on the training set less its validation split (a tenth by default).
    let search = |n: usize| n - peftspace_core::data::validation_rows(n, 0.1);
    let train = |designs: usize| 3 * designs * 2 * (search(40) + search(rte_train));
    let digits = |n: usize| peftspace_core::budget::thousands(n);
    assert_eq!(s1[5], format!("{}–{}", digits(train(2)), digits(train(6))));
}

#[test]
fn plan_sd_gives_each_stage_its_detectable_difference() {
    let dir = tempfile::tempdir().expect("tempdir");
    let experiment = write_experiment(dir.path());
    let exp = experiment.to_str().expect("utf-8 path");
    let out = plan(
        &[exp, "--no-calibrate", "--offline", "--sd", "0.03"],
        dir.path(),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", text(&out.stderr));
    // S1: 3 candidates (3 pairs), 6 designs each; statsmodels' TTestIndPower at α = 0.05/3 gives d = 2.19, 0.066.
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("S1: detects "))
        .unwrap_or_else(|| panic!("{stdout}"));
    let mde: f64 = line
        .trim_start()
        .trim_start_matches("S1: detects ")
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!((0.05..0.09).contains(&mde), "{line}");
    assert!(line.contains("with 6 designs per candidate"), "{line}");
    let out = plan(
        &[exp, "--no-calibrate", "--offline", "--sd", "-1"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn calibration_prints_an_estimated_wall_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let experiment = write_experiment(dir.path());
    let out = plan(
        &[
            experiment.to_str().expect("utf-8 path"),
            "--offline",
            "--device",
            "cpu",
        ],
        dir.path(),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", text(&out.stderr));
    let line = stdout
        .lines()
        .find(|l| l.starts_with("estimated wall time on cpu"))
        .unwrap_or_else(|| panic!("no estimate:\n{stdout}"));
    assert!(
        line.contains("at most") && line.contains("at least (race)"),
        "{line}"
    );
    assert!(line.contains(" per training example"), "{line}");
    // Rates in a unit that fits, never `0.00e0`.
    assert!(!line.contains("e0") && !line.contains("e-"), "{line}");
    assert!(
        ["ms per", "µs per", " s per", "resolution"]
            .iter()
            .any(|u| line.contains(u)),
        "{line}"
    );
}

#[test]
fn without_weights_plan_prints_the_counts_and_says_why_there_is_no_estimate() {
    // A folder with config.json alone: counting works, calibration would need weights. Before, `plan` printed the
    // table and then exited 2.
    let dir = tempfile::tempdir().expect("tempdir");
    let experiment = write_experiment(dir.path());
    let config_only = root().join("tests/fixtures/configs/all-MiniLM-L6-v2");
    let out = plan(
        &[
            experiment.to_str().expect("utf-8 path"),
            "--offline",
            "--model",
            config_only.to_str().expect("utf-8 path"),
        ],
        dir.path(),
    );
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{stdout}",
        text(&out.stderr)
    );
    assert!(row(&stdout, "total").len() > 2, "{stdout}");
    assert!(
        stdout.contains(
            "no time estimate: calibration trains a few short trials and needs the model's weights"
        ),
        "{stdout}"
    );
}

#[test]
#[ignore = "real-data: needs ../shared (PEFTSPACE_SHARED)"]
fn the_published_glue_sizes_match_the_rows_of_the_real_files() {
    use peftspace_core::refine::{known_glue_size, task_size, SizeSource};
    let glue = shared().join("data/glue");
    let mut checked = 0;
    for task in peftspace_core::data::GLUE_TASKS {
        if !glue.join(task.folder).join(task.train_file).is_file() {
            continue;
        }
        let spec: peftspace_core::spec::TaskSpec =
            ron::from_str(&format!("(id: \"{}\")", task.id)).expect("task");
        let counted = task_size(&spec, Some(&glue), &glue);
        assert_eq!(counted.source, SizeSource::Files, "{}", task.id);
        assert_eq!(
            Some((counted.train, counted.eval)),
            known_glue_size(task.id),
            "{}",
            task.id
        );
        checked += 1;
    }
    assert!(checked > 0, "no GLUE task under {}", glue.display());
}
