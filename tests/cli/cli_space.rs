//! End-to-end checks of `peftspace list`, `validate` and `sample` through the built binary.
//! Self-contained: the backbone is the hand-written `config.json` under `tests/fixtures/configs/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn peftspace(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peftspace"))
        .args(args)
        .current_dir(root())
        .env_remove("PEFTSPACE_MODEL")
        .env_remove("PEFTSPACE_DATA")
        .output()
        .expect("the peftspace binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const MINILM: &str = "tests/fixtures/configs/all-MiniLM-L6-v2";

/// Writes `content` as an experiment file in a fresh folder and returns both (the folder must outlive the test).
fn experiment(content: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("exp.ron");
    std::fs::write(&path, content).expect("write experiment");
    (dir, path)
}

const BASE: &str = r#"ExperimentSpec(
    name: "cli",
    backbone: (path: "model"),
    tasks: [(id: "sst2", max_train: 64)],
    budget: 0.005,
    stages: [(name: "S1", dimension: Grouping, candidates: ["spindle", "uniform"])],
)"#;

#[test]
fn list_shows_the_rules() {
    let out = peftspace(&["list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for rule in [
        "s0",
        "uniform",
        "increasing",
        "decreasing",
        "spindle",
        "bottleneck",
    ] {
        assert!(
            stdout.contains(&format!("  {rule} ")),
            "grouping rule {rule} missing:\n{stdout}"
        );
    }
    let allocation = stdout.split("allocation rules:").nth(1).unwrap_or("");
    let allocation = allocation.split("\n\n").next().unwrap_or("");
    assert_eq!(allocation.trim().lines().count(), 4, "{allocation}");
}

/// Runs `validate` on `content` and returns its one-line error (exit code 2 checked).
fn validate_error(content: &str) -> String {
    let (_dir, path) = experiment(content);
    let out = peftspace(&["validate", path.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout {} stderr {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stderr = text(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr.trim().replace(path.to_str().unwrap(), "FILE")
}

#[test]
fn validate_reports_line_and_column_with_exit_code_2() {
    let e = validate_error(&BASE.replace("budget:", "budgte:"));
    assert!(
        e.starts_with("error: FILE:5:5: ") && e.contains("budgte"),
        "{e}"
    );
    let e = validate_error(&BASE.replace("budget: 0.005", "budget: \"small\""));
    assert!(e.starts_with("error: FILE:5:12: "), "{e}");
    let e = validate_error(&BASE.replace("budget: 0.005", "budget: 0"));
    assert!(
        e.starts_with("error: FILE:5:5: budget: 0 is not a fraction"),
        "{e}"
    );
    let e = validate_error(&BASE.replace(
        "budget: 0.005,",
        "budget: 0.005, strategies: [(name: \"lorra\")],",
    ));
    assert!(
        e.starts_with("error: FILE:5:34: strategies[0].name: unknown strategy `lorra`; known: "),
        "{e}"
    );
    let e = validate_error(&BASE.replace("\"spindle\"", "\"spindel\""));
    assert!(
        e.starts_with("error: FILE:6:61: stages[0].candidates[0]: unknown grouping rule `spindel`"),
        "{e}"
    );
    assert!(
        e.contains("bottleneck, decreasing, increasing, s0, spindle, uniform"),
        "{e}"
    );
    let e = validate_error(&BASE.replace("budget: 0.005,", "budget: 0.005"));
    assert!(e.starts_with("error: FILE:6:5: "), "{e}");
    // The equivalence margin of the stage outcomes, placed at its field.
    let e = validate_error(&BASE.replace(
        "budget: 0.005,",
        "budget: 0.005,\n    equivalence_margin: 0.0,",
    ));
    assert!(
        e.contains(":6:") && e.contains("equivalence_margin") && e.contains("(0, 1)"),
        "{e}"
    );
    // `on_undecided: Keep(…)` names a candidate of each stage it applies to, at the experiment or at the stage.
    let e = validate_error(&BASE.replace(
        "budget: 0.005,",
        "budget: 0.005,\n    on_undecided: Keep(\"bottleneck\"),",
    ));
    assert!(
        e.starts_with("error: FILE:6:5: on_undecided: Keep(\"bottleneck\") is not a candidate of stage `S1` (spindle, uniform)"),
        "{e}"
    );
    let e = validate_error(&BASE.replace(
        "\"uniform\"])",
        "\"uniform\"], on_undecided: Keep(\"spindel\"))",
    ));
    assert!(
        e.contains("stages[0].on_undecided: Keep(\"spindel\")"),
        "{e}"
    );
    let e = validate_error(&BASE.replace(
        "budget: 0.005,",
        "budget: 0.005,\n    on_undecided: KeepSome,",
    ));
    assert!(e.contains(":6:") && e.contains("KeepSome"), "{e}");
    // `validation: (rows: N)`: at least one row, and spare rows need a `max_train` on every task.
    let e = validate_error(&BASE.replace(
        "budget: 0.005,",
        "budget: 0.005,\n    validation: (rows: 0),",
    ));
    assert!(
        e.contains(":6:") && e.contains("validation.rows: must be at least 1"),
        "{e}"
    );
    let e = validate_error(&BASE.replace(", max_train: 64", "").replace(
        "budget: 0.005,",
        "budget: 0.005,\n    validation: (rows: 500),",
    ));
    assert!(
        e.contains("tasks[0]") && e.contains("needs a `max_train`"),
        "{e}"
    );
}

#[test]
fn validate_accepts_the_shipped_experiments() {
    // `--model`: the shipped files point at ../shared, which a fresh clone lacks (validate refuses a missing folder).
    for file in [
        "experiments/quickstart.ron",
        "experiments/paper_minilm.ron",
        // sick.ron reads its custom task files, which live in ../shared: the real-data suite trains from them.
        "experiments/smoke.ron",
    ] {
        let out = peftspace(&["validate", file, "--model", MINILM]);
        assert!(out.status.success(), "{file}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains(": ok ("),
            "{}",
            text(&out.stdout)
        );
    }
}

#[test]
fn validate_refuses_a_backbone_folder_that_does_not_exist() {
    // Before validate checked the folder, this said `ok` and `sample`/`train` failed later.
    let (_dir, path) = experiment(
        r#"ExperimentSpec(
    name: "nofolder",
    backbone: (path: "no/such/model"),
    tasks: [(id: "sst2")],
    stages: [(name: "S1", dimension: Grouping, candidates: ["spindle", "increasing"])],
)"#,
    );
    let out = peftspace(&["--offline", "validate", path.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let e = text(&out.stderr);
    assert!(e.contains(":3:") && e.contains("no/such/model"), "{e}");
    let out = peftspace(&[
        "--offline",
        "validate",
        path.to_str().expect("utf-8"),
        "--model",
        "no/such/flag",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no/such/flag"));
}

fn sample(args: &[&str]) -> Output {
    let mut all = vec!["sample", "experiments/paper_minilm.ron", "--model", MINILM];
    all.extend_from_slice(args);
    peftspace(&all)
}

/// Rows of a csv output as maps from column name to value.
fn csv_rows(out: &Output) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut r = csv::Reader::from_reader(out.stdout.as_slice());
    let headers = r.headers().expect("header").clone();
    r.records()
        .map(|rec| {
            let rec = rec.expect("record");
            headers
                .iter()
                .zip(rec.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

#[test]
fn sample_csv_is_within_one_percent_and_seeded() {
    let out = sample(&["-n", "40", "--seed", "3", "--format", "csv"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("rejected by the budget solver"),
        "{}",
        text(&out.stderr)
    );
    let rows = csv_rows(&out);
    assert_eq!(rows.len(), 40);
    for row in &rows {
        let target: f64 = row["target_params"].parse().unwrap();
        let achieved: f64 = row["achieved_params"].parse().unwrap();
        assert!((achieved - target).abs() <= 0.01 * target, "{row:?}");
        let sizes: Vec<usize> = row["group_sizes"]
            .split(',')
            .map(|x| x.parse().unwrap())
            .collect();
        assert_eq!(sizes.iter().sum::<usize>(), 6);
        assert_eq!(row["per_layer_sizes"].split(' ').count(), 6, "{row:?}");
    }
    let again = sample(&["-n", "40", "--seed", "3", "--format", "csv"]);
    assert_eq!(out.stdout, again.stdout, "same seed, same bytes");
    let other = sample(&["-n", "40", "--seed", "4", "--format", "csv"]);
    assert_ne!(out.stdout, other.stdout, "another seed, other designs");
}

#[test]
fn sample_by_stage_uses_the_first_candidates() {
    let out = sample(&["-n", "20", "--stage", "S2", "--format", "csv"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for row in csv_rows(&out) {
        // S1's first candidate is `uniform` grouping, S2's is `uniform` allocation.
        let sizes: Vec<usize> = row["group_sizes"]
            .split(',')
            .map(|x| x.parse().unwrap())
            .collect();
        assert!(
            sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
            "{row:?}"
        );
        let shares: Vec<f64> = row["allocation"]
            .split(',')
            .map(|x| x.parse().unwrap())
            .collect();
        let per_layer: Vec<f64> = shares
            .iter()
            .zip(&sizes)
            .filter(|(s, _)| **s > 0.0)
            .map(|(s, &n)| s / n as f64)
            .collect();
        assert!(
            per_layer.windows(2).all(|w| (w[0] - w[1]).abs() < 1e-3),
            "{row:?}"
        );
    }
    let out = sample(&["--stage", "S9"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("S1, S2, S3, S4a"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn sample_solves_a_given_design() {
    let out = sample(&["--design", "g=1,2,2,1 s=L|L|L|L", "--format", "csv"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows = csv_rows(&out);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["tuned_groups"], "1111");
    assert_eq!(rows[0]["target_params"], "113566");
    let bad = sample(&["--design", "g=1,2,2 s=L|L|X"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("unknown strategy code `X`"),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn sample_explains_a_missing_config() {
    let (_dir, path) = experiment(BASE);
    let out = peftspace(&["sample", path.to_str().unwrap()]);
    // A model folder the user named that is not there is invalid input: exit code 2.
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&Path::new("model").join("config.json").display().to_string()),
        "{stderr}"
    );
}

/// The acceptance check on the real MiniLM folder: 200 designs, all within 1 % and admitted.
#[test]
#[ignore = "real-data: needs ../shared (PEFTSPACE_SHARED)"]
fn real_minilm_200_designs() {
    let shared = std::env::var_os("PEFTSPACE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared"));
    let model = shared.join("models/all-MiniLM-L6-v2");
    let out = peftspace(&[
        "sample",
        "experiments/paper_minilm.ron",
        "-n",
        "200",
        "--seed",
        "1",
        "--format",
        "csv",
        "--model",
        model.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows = csv_rows(&out);
    assert_eq!(rows.len(), 200);
    for row in &rows {
        let target: f64 = row["target_params"].parse().unwrap();
        let achieved: f64 = row["achieved_params"].parse().unwrap();
        assert!((achieved - target).abs() <= 0.01 * target, "{row:?}");
    }
}

#[test]
fn sample_spans_the_24_layers_of_t5_base_within_one_percent() {
    let out = peftspace(&[
        "sample",
        "experiments/paper_t5_base.ron",
        "--model",
        "tests/fixtures/configs/t5-base",
        "-n",
        "30",
        "--seed",
        "2",
        "--format",
        "csv",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows = csv_rows(&out);
    assert_eq!(rows.len(), 30);
    for row in &rows {
        let target: f64 = row["target_params"].parse().unwrap();
        let achieved: f64 = row["achieved_params"].parse().unwrap();
        assert!((achieved - target).abs() <= 0.01 * target, "{row:?}");
        let sizes: Vec<usize> = row["group_sizes"]
            .split(',')
            .map(|x| x.parse().unwrap())
            .collect();
        assert_eq!(sizes.len(), 4);
        assert_eq!(
            sizes.iter().sum::<usize>(),
            24,
            "encoder and decoder layers together: {row:?}"
        );
        assert_eq!(row["per_layer_sizes"].split(' ').count(), 24, "{row:?}");
    }
    // 0.5 % of t5-base's 222,903,552 parameters.
    assert_eq!(rows[0]["target_params"], "1114518");
}

/// Runs `validate` on a grouping stage of all five patterns over the hand-written config of `model`.
fn grouping_coverage(model: &str) -> String {
    let (_dir, path) = experiment(&format!(
        r#"ExperimentSpec(
    name: "coverage",
    backbone: (path: "{}"),
    tasks: [(id: "sst2")],
    stages: [(name: "S1", dimension: Grouping,
              candidates: ["uniform", "spindle", "bottleneck", "increasing", "decreasing"])],
)"#,
        root().join(model).display()
    ));
    let out = peftspace(&["--offline", "validate", path.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn validate_counts_the_splits_each_grouping_candidate_admits() {
    // 12 layers in 4 groups: uniform is the single split 3,3,3,3; spindle admits 20 (e.g. 1,5,5,1 … 2,3,4,3).
    let bert = grouping_coverage("tests/fixtures/configs/bert-base-uncased");
    assert!(
        bert.contains(
            "S1: splits of 12 layers into 4 groups each candidate admits: uniform 1, spindle 20"
        ),
        "{bert}"
    );
    assert!(
        bert.contains("warning: S1: `uniform` admits a single split (3,3,3,3)"),
        "{bert}"
    );
    assert!(!bert.contains("`uniform` and `spindle` overlap"), "{bert}");
    // MiniLM's 6 layers: uniform admits 6 splits, among them the only spindle and the only bottleneck.
    let minilm = grouping_coverage(MINILM);
    assert!(
        minilm.contains("uniform 6, spindle 1, bottleneck 1"),
        "{minilm}"
    );
    assert!(
        minilm.contains(
            "`uniform` and `spindle` overlap: 1 split(s) admitted by both (e.g. 1,2,2,1)"
        ),
        "{minilm}"
    );
    assert!(
        minilm.contains("`spindle` admits a single split (1,2,2,1)"),
        "{minilm}"
    );
    assert!(
        minilm.contains("`bottleneck` admits a single split (2,1,1,2)"),
        "{minilm}"
    );
}

#[test]
fn validate_flags_a_strategy_candidate_of_fixed_size_strategies_only() {
    let (_dir, path) = experiment(&format!(
        r#"ExperimentSpec(
    name: "fixed",
    backbone: (path: "{}"),
    tasks: [(id: "sst2")],
    stages: [(name: "S4", dimension: Strategies(1), candidates: ["lora", "bitfit", "lora+bitfit"])],
)"#,
        root().join(MINILM).display()
    ));
    let out = peftspace(&["--offline", "validate", path.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("warning: S4: `bitfit` has only fixed-size strategies: group 2"),
        "{stdout}"
    );
    assert!(!stdout.contains("`lora+bitfit` has only"), "{stdout}");
    assert!(!stdout.contains("`lora` has only"), "{stdout}");
}

#[test]
fn max_group_ratio_bounds_the_splits_validate_counts_and_sample_draws() {
    let bert = root().join("tests/fixtures/configs/bert-base-uncased");
    let (_dir, path) = experiment(&format!(
        r#"ExperimentSpec(
    name: "ratio",
    backbone: (path: "{}"),
    tasks: [(id: "sst2")],
    max_group_ratio: Some(2.0),
    stages: [(name: "S1", dimension: Grouping, candidates: ["spindle", "increasing"])],
)"#,
        bert.display()
    ));
    let path = path.to_str().expect("utf-8");
    let out = peftspace(&["--offline", "validate", path]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    // Of spindle's 20 splits of 12 layers into 4 groups only 2,4,4,2 keeps the largest within twice the smallest.
    assert!(stdout.contains("spindle 1"), "{stdout}");
    assert!(
        stdout.contains("`spindle` admits a single split (2,4,4,2)"),
        "{stdout}"
    );
    let out = peftspace(&[
        "--offline",
        "sample",
        path,
        "--stage",
        "S1",
        "-n",
        "20",
        "--format",
        "csv",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let csv = text(&out.stdout);
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 20, "{csv}");
    assert!(rows.iter().all(|r| r.contains("\"2,4,4,2\"")), "{csv}");

    let err = validate_error(&BASE.replace(
        "budget: 0.005,",
        "budget: 0.005,\n    max_group_ratio: Some(0.5),",
    ));
    assert!(err.starts_with("error: FILE:6:"), "{err}");
    assert!(err.contains("max_group_ratio"), "{err}");
}
