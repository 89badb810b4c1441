//! `final_runs: (save: true)` on the tiny BERT: with worker processes, every final run of a PEFT design writes a saved
//! design under `results/<exp>/final/<trial id>/` that `predict` loads and that reproduces the run's reported dev
//! score; a rerun trains nothing, and a removed folder is written again by training only its trial.

use crate::refine_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn peftspace(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peftspace"))
        .env_remove("PEFTSPACE_MODEL")
        .env_remove("PEFTSPACE_DATA")
        .env_remove("PEFTSPACE_EXECUTOR")
        .arg("--offline")
        .args(args)
        .output()
        .expect("run peftspace")
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A toy task whose label is whether a review has a kind word, with varied sentences so that the validation
/// split and the dev set hold other rows than training.
fn write_task(dir: &Path) {
    let kind = ["good", "great", "fine", "lovely"];
    let harsh = ["bad", "dull", "poor", "awful"];
    let things = ["film", "plot", "cast", "score", "ending"];
    let mut train = String::from("text\tlabel\n");
    let mut eval = String::from("text\tlabel\n");
    for i in 0..48 {
        let positive = i % 2 == 0;
        let word = if positive { kind[i % 4] } else { harsh[i % 4] };
        let line = format!(
            "the {} was {word}\t{}\n",
            things[i % 5],
            if positive { "pos" } else { "neg" }
        );
        if i < 36 {
            train.push_str(&line);
        } else {
            eval.push_str(&line);
        }
    }
    eval.push_str("a good cast and a dull plot\tpos\n");
    std::fs::write(dir.join("train.tsv"), train).expect("train");
    std::fs::write(dir.join("eval.tsv"), eval).expect("eval");
}

fn write_experiment(dir: &Path) -> PathBuf {
    write_task(dir);
    // LoRA r = 4 on q and v of both layers is 1,024 parameters: within 1 % of 5 % of the backbone.
    let spec = format!(
        r#"ExperimentSpec(
    name: "tiny-final-saved",
    backbone: (path: "{model}"),
    tasks: [(id: "toy", custom: (train: "train.tsv", eval: "eval.tsv", text: "text", label: "label",
             labels: ["neg", "pos"]))],
    budget: 0.05,
    groups: 2,
    samples: 2,
    seeds: [1],
    strategies: [(name: "lora")],
    training: (epochs: 8, batch_size: 4, max_seq_len: 32, eval_batch_size: 8, learning_rate: 2e-2),
    final_runs: (top: 1, seeds: [2], baselines: ["lora", "g=1,1 a=0.25,0.75 t=11 s=L|L", "full"], save: true),
)
"#,
        model = fixture("tiny-bert").display(),
    );
    let path = dir.join("experiment.ron");
    std::fs::write(&path, spec).expect("write experiment");
    path
}

/// The final trials of a results directory: (trial id, method, status, primary) from trials.jsonl and trials.csv.
fn final_trials(out: &Path) -> Vec<(String, String, String, f64)> {
    let stored: Vec<serde_json::Value> = std::fs::read_to_string(out.join("trials.jsonl"))
        .expect("trials.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("record"))
        .collect();
    refine_support::read_csv(&out.join("trials.csv"))
        .into_iter()
        .filter(|r| r["stage"] == "final")
        .map(|r| {
            let record = stored
                .iter()
                .find(|s| s["id"] == r["trial_id"].as_str())
                .expect("stored");
            (
                r["trial_id"].clone(),
                r["candidate"].clone(),
                r["status"].clone(),
                record["outcome"]["primary"].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect()
}

/// Accuracy of `predict` on the eval file with the saved design in `saved`.
fn predicted_accuracy(dir: &Path, saved: &Path) -> f64 {
    let preds = dir.join("preds.csv");
    ok(&peftspace(&[
        "predict".as_ref(),
        saved.as_os_str(),
        "--input".as_ref(),
        dir.join("eval.tsv").as_os_str(),
        "--out".as_ref(),
        preds.as_os_str(),
    ]));
    let predicted: Vec<String> = refine_support::read_csv(&preds)
        .into_iter()
        .map(|r| r["label"].clone())
        .collect();
    let eval = std::fs::read_to_string(dir.join("eval.tsv")).expect("eval");
    let labels: Vec<&str> = eval
        .lines()
        .skip(1)
        .map(|l| l.split('\t').nth(1).expect("label"))
        .collect();
    assert_eq!(predicted.len(), labels.len());
    let right = predicted
        .iter()
        .zip(&labels)
        .filter(|(p, l)| p == *l)
        .count();
    right as f64 / labels.len() as f64
}

fn run(experiment: &Path, out: &Path) -> String {
    ok(&peftspace(&[
        "run".as_ref(),
        experiment.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--jobs".as_ref(),
        "2".as_ref(),
        "--threads".as_ref(),
        "1".as_ref(),
    ]))
}

#[test]
fn saved_final_designs_reproduce_their_dev_scores_and_are_not_trained_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let experiment = write_experiment(d);
    let out = d.join("results");
    let printed = run(&experiment, &out);
    assert!(printed.contains("reused from earlier runs"), "{printed}");

    let finals = final_trials(&out);
    assert_eq!(finals.len(), 4, "{finals:?}");
    for (id, method, status, primary) in &finals {
        assert_eq!(status, "ok", "{method}");
        let folder = out.join("final").join(id);
        if method == "full" {
            // Full fine-tuning changes the backbone itself: nothing to save as a design.
            assert!(!folder.exists(), "{method}");
            continue;
        }
        let manifest: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(folder.join("design.json")).expect("design.json"),
        )
        .expect("json");
        assert_eq!(manifest["format"], "peftspace-design/2");
        assert_eq!(manifest["seed"], 2, "{method}: the final run's own seed");
        assert_eq!(
            manifest["metrics"]["primary"].as_f64(),
            Some(*primary),
            "{method}"
        );
        // Loaded by `predict`, the design scores on the dev set what the final run reported.
        let accuracy = predicted_accuracy(d, &folder);
        assert!(
            (accuracy - primary).abs() < 1e-9,
            "{method}: predict {accuracy} vs the final run's {primary}"
        );
    }
    let design_of = |method: &str| {
        let (id, ..) = finals.iter().find(|f| f.1 == method).expect(method);
        out.join("final").join(id).join("design.json")
    };
    let given: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(design_of("design1")).expect("read"))
            .expect("json");
    assert_eq!(given["design"], "g=1,1 a=0.25,0.75 t=11 s=L|L");

    // Resumed: every final run is stored and saved, so nothing trains.
    let printed = run(&experiment, &out);
    assert!(printed.contains("0 trials run now"), "{printed}");

    // A removed folder is written again by training that trial alone; its stored score stays and matches.
    let removed = design_of("lora");
    let before = std::fs::read_to_string(&removed).expect("read");
    std::fs::remove_dir_all(removed.parent().expect("folder")).expect("remove");
    let printed = run(&experiment, &out);
    assert!(printed.contains("1 trials run now"), "{printed}");
    let after = std::fs::read_to_string(&removed).expect("written again");
    let metrics = |text: &str| {
        serde_json::from_str::<serde_json::Value>(text).expect("json")["metrics"].clone()
    };
    assert_eq!(metrics(&before), metrics(&after));
}

/// `validation: (rows: N)` on the tiny BERT: search trials train on the whole `max_train` subset and are scored on
/// N training rows outside it — a split the trainer reads as it would any other — so the run completes, its search
/// trials say `validation`, and their ids differ from the `validation_fraction` run's.
#[test]
fn search_trials_score_on_spare_rows_outside_max_train() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let experiment = write_experiment(d);
    let base = std::fs::read_to_string(&experiment).expect("read");
    let spare = base
        .replace(
            r#"labels: ["neg", "pos"]))],"#,
            r#"labels: ["neg", "pos"]), max_train: 24)],"#,
        )
        .replace(
            "    budget: 0.05,",
            "    budget: 0.05,\n    validation: (rows: 10),",
        )
        .replace(", save: true)", ")")
        .replace("tiny-final-saved", "tiny-spare-rows");
    assert!(
        spare.contains("rows: 10") && spare.contains("max_train: 24"),
        "{spare}"
    );
    let spare_file = d.join("spare.ron");
    std::fs::write(&spare_file, &spare).expect("write");
    let out = d.join("spare-results");
    ok(&peftspace(&[
        "run".as_ref(),
        spare_file.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--quiet".as_ref(),
    ]));
    let trials = refine_support::read_csv(&out.join("trials.csv"));
    let search: Vec<_> = trials.iter().filter(|r| r["stage"] != "final").collect();
    assert!(!search.is_empty());
    assert!(search
        .iter()
        .all(|r| r["scored_on"] == "validation" && r["status"] == "ok"));
    // Without `validation` the same experiment's search trials are other trials (another split).
    let fraction = spare.replace("\n    validation: (rows: 10),", "");
    let fraction_file = d.join("fraction.ron");
    std::fs::write(&fraction_file, fraction).expect("write");
    let out2 = d.join("fraction-results");
    ok(&peftspace(&[
        "run".as_ref(),
        fraction_file.as_os_str(),
        "--out".as_ref(),
        out2.as_os_str(),
        "--quiet".as_ref(),
    ]));
    let other = refine_support::read_csv(&out2.join("trials.csv"));
    let ids = |rows: &[std::collections::BTreeMap<String, String>]| -> std::collections::BTreeSet<String> {
        rows.iter()
            .filter(|r| r["stage"] != "final")
            .map(|r| r["trial_id"].clone())
            .collect()
    };
    assert!(ids(&trials).is_disjoint(&ids(&other)));
}
