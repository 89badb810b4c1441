//! Real data: a LoRA design trained on SST-2 with MiniLM and saved; `predict` on the dev set reproduces the accuracy
//! the training run reported, `eval` scores the same, and the design exported to PEFT and loaded by
//! `PeftModel.from_pretrained` in Python gives `predict`'s logits (within 1e-4).
//!
//! Ignored by default; needs `PEFTSPACE_SHARED` (or `../shared`) and `PEFTSPACE_PYTHON`, a Python with torch,
//! transformers and peft (`.ci/run` installs one in ~/.cache/peftspace/ci-python):
//! `PEFTSPACE_PYTHON=~/.cache/peftspace/ci-python/bin/python cargo test --test real saved_real:: -- --ignored`.

use crate::common;
use common::shared;

use std::path::Path;
use std::process::{Command, Output};

fn peftspace(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peftspace"))
        .env_remove("PEFTSPACE_MODEL")
        .env_remove("PEFTSPACE_DATA")
        .args(["--offline", "--device", "cpu"])
        .args(args)
        .output()
        .expect("run peftspace")
}

fn ok(out: Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    eprintln!("{stderr}");
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn os(items: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<std::ffi::OsString> {
    items.iter().map(|i| i.as_ref().to_os_string()).collect()
}

fn call(items: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let args = os(items);
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    peftspace(&refs)
}

/// Logit columns of a CSV (`logit_*`), row by row.
fn logits(path: &Path) -> Vec<Vec<f64>> {
    let mut reader = csv::Reader::from_path(path).expect("read CSV");
    let header = reader.headers().expect("header").clone();
    let columns: Vec<usize> = header
        .iter()
        .enumerate()
        .filter(|(_, h)| h.starts_with("logit_"))
        .map(|(i, _)| i)
        .collect();
    reader
        .records()
        .map(|r| {
            let r = r.expect("row");
            columns
                .iter()
                .map(|&i| r[i].parse().expect("number"))
                .collect()
        })
        .collect()
}

#[test]
#[ignore = "needs the shared MiniLM, GLUE and a Python with torch + peft (PEFTSPACE_PYTHON)"]
fn a_saved_sst2_lora_design_predicts_its_score_and_matches_peft_after_export() {
    let python = std::env::var_os("PEFTSPACE_PYTHON").expect(
        "PEFTSPACE_PYTHON must name a Python with torch, transformers and peft (.ci/run installs one)",
    );
    let model = shared().join("models/all-MiniLM-L6-v2");
    let glue = shared().join("data/glue");
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let experiment = d.join("sst2.ron");
    std::fs::write(
        &experiment,
        format!(
            r#"ExperimentSpec(
    name: "saved-sst2",
    backbone: (path: Some("{}")),
    data_dir: Some("{}"),
    tasks: [(id: "sst2", max_train: Some(2000))],
    seeds: [1],
    strategies: [(name: "lora", options: (targets: ["q", "v"], alpha: 16.0))],
    training: (epochs: 1, batch_size: 32, learning_rate: 1e-3),
)
"#,
            model.display(),
            glue.display()
        ),
    )
    .expect("write experiment");
    let saved = d.join("saved");
    let stdout = ok(call(&[
        &"train",
        &experiment,
        &"--baseline",
        &"lora",
        &"--quiet",
        &"--save",
        &saved,
    ]));
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(saved.join("design.json")).expect("design.json"),
    )
    .expect("json");
    let trained = manifest["metrics"]["primary"].as_f64().expect("primary");
    eprintln!("training: {stdout} (saved {trained})");
    assert!(
        trained > 0.6,
        "the design should learn SST-2 a little: {trained}"
    );

    // predict on the whole dev set reproduces the reported accuracy.
    let dev = glue.join("SST-2/dev.tsv");
    let preds = d.join("preds.csv");
    ok(call(&[
        &"predict", &saved, &"--input", &dev, &"--out", &preds,
    ]));
    let labels: Vec<String> = std::fs::read_to_string(&dev)
        .expect("dev")
        .lines()
        .skip(1)
        .map(|l| l.rsplit('\t').next().unwrap_or("").trim().to_string())
        .collect();
    let mut reader = csv::Reader::from_path(&preds).expect("preds");
    let predicted: Vec<String> = reader
        .records()
        .map(|r| r.expect("row")[1].to_string())
        .collect();
    assert_eq!(predicted.len(), labels.len());
    let correct = predicted
        .iter()
        .zip(&labels)
        .filter(|(p, l)| p == l)
        .count();
    let accuracy = correct as f64 / labels.len() as f64;
    eprintln!("predict accuracy {accuracy:.6}, training reported {trained:.6}");
    assert!(
        (accuracy - trained).abs() < 1e-9,
        "predict {accuracy} vs training {trained}"
    );

    // eval with the task's evaluator says the same.
    let out = ok(call(&[
        &"--data-dir",
        &glue,
        &"eval",
        &saved,
        &"--task",
        &"sst2",
    ]));
    assert!(out.contains(&format!("{trained:.4}")), "{out}");

    // Exported and loaded by PEFT in Python: the same logits.
    let exported = d.join("peft");
    ok(call(&[&"export", &saved, &"--out", &exported]));
    let theirs = d.join("peft-logits.csv");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peft_reference/peft_logits.py");
    let status = Command::new(&python)
        .arg(&script)
        .arg(&model)
        .arg(&exported)
        .arg(&dev)
        .arg(&theirs)
        .status()
        .expect("run Python");
    assert!(status.success(), "{} failed", script.display());
    let ours = logits(&preds);
    let peft = logits(&theirs);
    assert_eq!(ours.len(), peft.len());
    let worst = ours
        .iter()
        .zip(&peft)
        .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
        .fold(0.0, f64::max);
    eprintln!("largest logit difference against PEFT: {worst:e}");
    assert!(worst <= 1e-4, "logits differ from PEFT's by {worst}");
}
