//! `train --save`, `predict`, `export --format peft` and re-import on the tiny BERT: a saved design predicts what its
//! training run scored, loads only onto its own backbone, and a LoRA design survives the PEFT round trip exactly;
//! designs PEFT cannot express are refused with the parts named.

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
        .arg("--offline")
        .args(args)
        .output()
        .expect("run peftspace")
}

fn run(args: &[&str], paths: &[&Path]) -> Output {
    let mut all: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    all.extend(paths.iter().map(|p| p.as_os_str()));
    peftspace(&all)
}

fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A separable toy task on the tiny BERT (as `train_full.rs`), with LoRA options that leave layers at two ranks.
fn write_experiment(dir: &Path) -> PathBuf {
    let mut train = String::from("text\tlabel\n");
    let mut eval = String::from("text\tlabel\n");
    for i in 0..32 {
        let (text, label) = if i % 2 == 0 {
            ("the cat sat on the mat", "pos")
        } else {
            ("a dog runs in the park", "neg")
        };
        train.push_str(&format!("{text}\t{label}\n"));
        if i < 10 {
            eval.push_str(&format!("{text}\t{label}\n"));
        }
    }
    eval.push_str("the dog is fast and the cat is slow\tpos\n");
    std::fs::write(dir.join("train.tsv"), train).unwrap();
    std::fs::write(dir.join("eval.tsv"), eval).unwrap();
    let spec = format!(
        r#"ExperimentSpec(
    name: "tiny-saved",
    backbone: (path: Some("{model}")),
    tasks: [(id: "toy", custom: Some((train: "train.tsv", eval: "eval.tsv", text: "text", label: "label",
             labels: ["neg", "pos"])))],
    seeds: [3],
    budget: 0.05,
    strategies: [(name: "lora", options: (targets: ["q", "v", "ffn_out"], alpha: 4.0))],
    training: (epochs: 3, batch_size: 8, eval_batch_size: 4, learning_rate: 1e-2),
)
"#,
        model = fixture("tiny-bert").display()
    );
    let path = dir.join("experiment.ron");
    std::fs::write(&path, spec).unwrap();
    path
}

/// `(label, logits)` per row of a `predict` CSV.
fn read_predictions(path: &Path) -> Vec<(String, Vec<f64>)> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let header = reader.headers().unwrap().clone();
    let logit_columns: Vec<usize> = header
        .iter()
        .enumerate()
        .filter(|(_, h)| h.starts_with("logit_"))
        .map(|(i, _)| i)
        .collect();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            let logits = logit_columns
                .iter()
                .map(|&i| r[i].parse().unwrap())
                .collect();
            (r[1].to_string(), logits)
        })
        .collect()
}

#[test]
fn a_saved_lora_design_predicts_what_training_scored_and_round_trips_through_peft() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let experiment = write_experiment(d);
    let saved = d.join("saved");
    ok(&run(
        &["train", "--baseline", "lora", "--quiet", "--save"],
        &[&saved, &experiment],
    ));
    assert!(saved.join("design.json").is_file() && saved.join("weights.safetensors").is_file());
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(saved.join("design.json")).unwrap()).unwrap();
    let trained = manifest["metrics"]["primary"].as_f64().unwrap();
    assert_eq!(manifest["format"], "peftspace-design/2");
    assert_eq!(manifest["plan"].as_array().unwrap().len(), 2);
    // Options in canonical form whatever the experiment's spelling (`(name: "lora")` gives the defaults written out),
    // so `export` needs no defaults; and the task's own definition, so `eval` needs no flags.
    assert_eq!(
        manifest["strategies"][0]["options"],
        "(targets: [\"q\", \"v\", \"ffn_out\"], alpha: 4.0)"
    );
    assert!(
        manifest["task"]["source"]["definition"]["id"].is_string(),
        "{manifest}"
    );

    // predict on the evaluation file reproduces the training run's accuracy.
    let preds = d.join("preds.csv");
    ok(&run(
        &["predict"],
        &[
            &saved,
            Path::new("--input"),
            &d.join("eval.tsv"),
            Path::new("--out"),
            &preds,
        ],
    ));
    let rows = read_predictions(&preds);
    let eval = std::fs::read_to_string(d.join("eval.tsv")).unwrap();
    let labels: Vec<&str> = eval
        .lines()
        .skip(1)
        .map(|l| l.split('\t').nth(1).unwrap())
        .collect();
    assert_eq!(rows.len(), labels.len());
    let correct = rows
        .iter()
        .zip(&labels)
        .filter(|((p, _), l)| p == *l)
        .count();
    let accuracy = correct as f64 / labels.len() as f64;
    assert!(
        (accuracy - trained).abs() < 1e-9,
        "predict {accuracy} vs training {trained}"
    );

    // Exported to PEFT and imported back, the logits are the same.
    let exported = d.join("peft");
    ok(&run(&["export"], &[&saved, Path::new("--out"), &exported]));
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(exported.join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["task_type"], "SEQ_CLS");
    let again = d.join("preds-peft.csv");
    ok(&run(
        &["--model"],
        &[
            &fixture("tiny-bert"),
            Path::new("predict"),
            &exported,
            Path::new("--input"),
            &d.join("eval.tsv"),
            Path::new("--out"),
            &again,
        ],
    ));
    let back = read_predictions(&again);
    let worst = rows
        .iter()
        .zip(&back)
        .flat_map(|((_, a), (_, b))| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
        .fold(0.0, f64::max);
    assert!(worst < 1e-5, "round trip moved a logit by {worst}");

    // Another backbone (same architecture, one weight changed) is refused with both hashes.
    let other = d.join("other-bert");
    std::fs::create_dir_all(&other).unwrap();
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(fixture("tiny-bert").join(f), other.join(f)).unwrap();
    }
    let weights = other.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&weights, bytes).unwrap();
    let out = run(
        &["--model"],
        &[
            &other,
            Path::new("predict"),
            &saved,
            Path::new("--input"),
            &d.join("eval.tsv"),
            Path::new("--out"),
            &d.join("x.csv"),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("another backbone"), "{stderr}");
    assert!(
        stderr.contains(manifest["backbone"]["weights_sha256"].as_str().unwrap()),
        "{stderr}"
    );
    assert_eq!(stderr.matches("sha256").count(), 2, "{stderr}");
}

#[test]
fn designs_peft_cannot_express_are_refused_with_the_parts_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let experiment = write_experiment(d);
    let export = |saved: &Path, expected: &str| {
        let target = d.join("out");
        let out = run(&["export"], &[saved, Path::new("--out"), &target]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {stderr}", saved.display());
        assert!(stderr.contains(expected), "{}: {stderr}", saved.display());
        assert!(
            !target.exists(),
            "{}: a partial adapter was written",
            saved.display()
        );
    };
    for (baseline, expected) in [
        ("adapter", "`adapter` (no PEFT adapter type)"),
        ("bitfit", "`bitfit` (no PEFT adapter type)"),
        ("prefix", "position ids start at num_virtual_tokens"),
    ] {
        let saved = d.join(baseline);
        ok(&run(
            &[
                "train",
                "--baseline",
                baseline,
                "--epochs",
                "1",
                "--quiet",
                "--save",
            ],
            &[&saved, &experiment],
        ));
        export(&saved, expected);
    }
    // A mixed design: the adapter baseline's plan with LoRA added to every layer.
    let saved = d.join("adapter");
    let path = saved.join("design.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for layer in manifest["plan"].as_array_mut().unwrap() {
        layer["strategies"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!(["lora", 2]));
    }
    std::fs::write(&path, manifest.to_string()).unwrap();
    export(&saved, "a mix of adapter + lora");
}

#[test]
fn train_adapter_starts_from_a_peft_adapter_and_keeps_its_plan() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let experiment = write_experiment(d);
    let saved = d.join("from-peft");
    // No epoch: what is saved is the starting point itself.
    ok(&run(
        &["train", "--epochs", "0", "--quiet", "--adapter"],
        &[
            &fixture("peft/lora-bert"),
            Path::new("--save"),
            &saved,
            &experiment,
        ],
    ));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(saved.join("design.json")).unwrap()).unwrap();
    assert_eq!(manifest["design"], serde_json::Value::Null);
    let plan = manifest["plan"].as_array().unwrap();
    assert_eq!(plan.len(), 2);
    assert_eq!(plan[0]["strategies"][0], serde_json::json!(["lora", 4]));
    let saved_tensors = candle_core::safetensors::load(
        saved.join("weights.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let adapter = candle_core::safetensors::load(
        fixture("peft/lora-bert").join("adapter_model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    // lora_A of layer 0's query is copied as is (its scale is the layer's).
    let ours = &saved_tensors["layer.0.lora.q.lora_A"];
    let theirs =
        &adapter["base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight"];
    let diff: f32 = (ours - theirs)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert_eq!(diff, 0.0);
    // The adapter's 3-class head does not fit the 2-class task: the task gets a fresh head.
    assert_eq!(saved_tensors["head.weight"].dims(), &[2, 32]);
}

/// The common case: an experiment naming `(name: "lora")` without options. Before, `design.json` stored `"()"` and
/// `export` failed with "Expected struct LoraOptions but found a unit value". Now the options are stored written out
/// (format 2); a format-1 folder with `"()"` still loads and exports. `eval` with no flags scores the design on its
/// own task, and `--save`/`export` refuse to write over something else without `--force`.
#[test]
fn default_option_designs_export_eval_without_flags_and_are_not_overwritten_silently() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let experiment = write_experiment(d);
    let text = std::fs::read_to_string(&experiment).unwrap().replace(
        r#"(name: "lora", options: (targets: ["q", "v", "ffn_out"], alpha: 4.0))"#,
        r#"(name: "lora")"#,
    );
    std::fs::write(&experiment, text).unwrap();
    let saved = d.join("saved");
    ok(&run(
        &["train", "--baseline", "lora", "--quiet", "--save"],
        &[&saved, &experiment],
    ));
    let manifest_path = saved.join("design.json");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    assert_eq!(
        manifest["strategies"][0]["options"],
        "(targets: [\"q\", \"v\"], alpha: 8.0)"
    );
    ok(&run(&["export", "--out"], &[&d.join("peft"), &saved]));
    assert!(d.join("peft/adapter_config.json").is_file());

    // `eval` with the folder alone: the design's own custom task, read from the files the experiment named.
    let stdout = ok(&run(&["eval"], &[&saved]));
    assert!(stdout.starts_with("toy: accuracy = "), "{stdout}");

    // A format-1 folder (options as spelled, `()`) still reads and exports.
    let old = manifest_path.display().to_string();
    let mut v1 = manifest.clone();
    v1["format"] = "peftspace-design/1".into();
    v1["strategies"][0]["options"] = "()".into();
    v1["task"].as_object_mut().unwrap().remove("source");
    std::fs::write(&old, serde_json::to_string_pretty(&v1).unwrap()).unwrap();
    ok(&run(&["export", "--out"], &[&d.join("peft_v1"), &saved]));

    // Export into a folder that holds files: refused (exit 2) unless --force.
    let out = run(&["export", "--out"], &[&d.join("peft"), &saved]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    ok(&run(
        &["export", "--force", "--out"],
        &[&d.join("peft"), &saved],
    ));

    // --save over another design (here: another baseline text) is refused before training, unless --force.
    let other = d.join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    let out = run(
        &["train", "--baseline", "lora", "--quiet", "--save"],
        &[&other, &experiment],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not a saved design") && stderr.contains("--force"),
        "{stderr}"
    );
    // The same design retrained may replace itself.
    ok(&run(
        &["train", "--baseline", "lora", "--quiet", "--save"],
        &[&saved, &experiment],
    ));
}

/// rsLoRA (`scaling: "rank"`, alpha / √r) exports as PEFT's `use_rslora`, and the imported adapter predicts the
/// saved design's logits.
#[test]
fn an_rslora_design_exports_with_use_rslora_and_predicts_the_same_after_import() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let experiment = write_experiment(d);
    let text = std::fs::read_to_string(&experiment)
        .unwrap()
        .replace(r#"alpha: 4.0))]"#, r#"alpha: 4.0, scaling: "rank"))]"#);
    assert!(text.contains("scaling"), "{text}");
    std::fs::write(&experiment, text).unwrap();
    let saved = d.join("saved");
    ok(&run(
        &["train", "--baseline", "lora", "--quiet", "--save"],
        &[&saved, &experiment],
    ));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(saved.join("design.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["strategies"][0]["options"],
        "(targets: [\"q\", \"v\", \"ffn_out\"], alpha: 4.0, scaling: \"rank\")"
    );
    let preds = d.join("preds.csv");
    ok(&run(
        &["predict"],
        &[
            &saved,
            Path::new("--input"),
            &d.join("eval.tsv"),
            Path::new("--out"),
            &preds,
        ],
    ));
    let exported = d.join("peft");
    ok(&run(&["export"], &[&saved, Path::new("--out"), &exported]));
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(exported.join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["use_rslora"], true);
    let again = d.join("preds-peft.csv");
    ok(&run(
        &["--model"],
        &[
            &fixture("tiny-bert"),
            Path::new("predict"),
            &exported,
            Path::new("--input"),
            &d.join("eval.tsv"),
            Path::new("--out"),
            &again,
        ],
    ));
    let (a, b) = (read_predictions(&preds), read_predictions(&again));
    let worst = a
        .iter()
        .zip(&b)
        .flat_map(|((_, x), (_, y))| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
        .fold(0.0, f64::max);
    assert!(worst < 1e-5, "round trip moved a logit by {worst}");
}
