//! `peftspace generate` on the tiny language-model fixtures: its ids equal transformers' `generate` output for the
//! reference inputs; a model without a language model, bad settings and bad ids are clear usage errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

fn generate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peftspace"))
        .arg("generate")
        .args(args)
        .env_remove("PEFTSPACE_MODEL")
        .output()
        .expect("run peftspace")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn comma_list(values: &Value) -> String {
    values
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs each named case of the fixture's reference on its unpadded first input and compares the printed ids.
fn check(name: &str, cases: &[&str]) {
    let dir = fixture(&format!("lm/{name}"));
    let text = std::fs::read_to_string(dir.join("generate.json")).unwrap();
    let r: Value = serde_json::from_str(&text).unwrap();
    // Row 0 of every reference batch has no padding.
    let ids = comma_list(&r["input_ids"][0]);
    for wanted in cases {
        let case = r["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == *wanted)
            .unwrap_or_else(|| panic!("{name}: no case {wanted}"));
        let s = &case["settings"];
        let number = |key: &str| s[key].to_string();
        let mut args = vec![
            "--model".to_string(),
            dir.to_str().unwrap().to_string(),
            "--ids".into(),
            ids.clone(),
        ];
        for key in [
            "num_beams",
            "max_new_tokens",
            "min_new_tokens",
            "no_repeat_ngram_size",
            "length_penalty",
        ] {
            args.push(format!("--{}", key.replace('_', "-")));
            args.push(number(key));
        }
        if s["early_stopping"].as_bool().unwrap() {
            args.push("--early-stopping".into());
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = generate(&refs);
        assert!(o.status.success(), "{name} {wanted}: {}", stderr(&o));
        let stdout = String::from_utf8(o.stdout).unwrap();
        let mut lines = stdout.lines();
        assert_eq!(
            lines.next(),
            Some(comma_list(&case["sequences"][0]).as_str()),
            "{name} {wanted}"
        );
        let decoded = lines
            .next()
            .unwrap_or_else(|| panic!("{name} {wanted}: no text line"));
        // One word per generated id that is not a special token of the model (start, EOS, padding).
        let special: Vec<&Value> = ["decoder_start_token_id", "eos_token_id", "pad_token_id"]
            .iter()
            .map(|k| &r[*k])
            .collect();
        let content = case["sequences"][0]
            .as_array()
            .unwrap()
            .iter()
            .filter(|id| !special.contains(id))
            .count();
        assert_eq!(
            decoded.split_whitespace().count(),
            content,
            "{name} {wanted}: {decoded}"
        );
        assert!(
            !decoded.contains("</s>") && !decoded.contains("<pad>"),
            "{decoded}"
        );
    }
}

#[test]
fn generate_prints_transformers_sequences() {
    check("t5-tiny-relu", &["greedy", "beam4_constrained"]);
    check("t5-tiny-gated", &["greedy_constrained", "beam3_long"]);
    check("bart-tiny", &["greedy", "beam4_constrained"]);
}

#[test]
fn the_defaults_are_greedy_with_twenty_new_tokens() {
    let model = fixture("lm/bart-tiny");
    let o = generate(&["--model", model.to_str().unwrap(), "--text", "w3 w7 w1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8(o.stdout).unwrap();
    let first = stdout.lines().next().unwrap();
    let ids: Vec<u32> = first.split(',').map(|t| t.parse().unwrap()).collect();
    // BART: decoder start `</s>` (2), and its forced EOS ends a sequence at the limit.
    assert_eq!(ids[0], 2);
    assert!(ids.len() <= 21, "{first}");
    assert_eq!(ids.last(), Some(&2), "{first}");
}

#[test]
fn a_model_without_a_language_model_is_refused() {
    let model = fixture("tiny-bert");
    let o = generate(&["--model", model.to_str().unwrap(), "--ids", "2,5,3"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("no language-model head"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_settings_and_ids_are_usage_errors() {
    let model = fixture("lm/t5-tiny-relu");
    let model = model.to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["--num-beams", "0"], "num_beams must be at least 1"),
        (
            &["--max-new-tokens", "0"],
            "max_new_tokens must be at least 1",
        ),
        (
            &["--min-new-tokens", "5", "--max-new-tokens", "3"],
            "min_new_tokens (5) is larger than max_new_tokens (3)",
        ),
        (&["--num-beams", "two"], "invalid value 'two'"),
        (&["--beams", "2"], "unexpected argument '--beams'"),
    ];
    for (flags, words) in cases {
        let mut args = vec!["--model", model, "--ids", "6,10,1"];
        args.extend_from_slice(flags);
        let o = generate(&args);
        assert_eq!(o.status.code(), Some(2), "{flags:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(words), "{flags:?}: {}", stderr(&o));
    }
    let o = generate(&["--model", model, "--ids", "6,100000,1"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("input id 100000 is not in the model's vocabulary"),
        "{}",
        stderr(&o)
    );
    let o = generate(&["--model", model]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// References from transformers + PEFT 0.21.2 (`tests/fixtures/gen_generate_adapter.py`).
#[test]
fn the_adapter_applies_as_peft_does() {
    let model = fixture("bart-tiny");
    let adapter = fixture("peft/lora-bart");
    let base = [
        "--model",
        model.to_str().unwrap(),
        "--text",
        "w3 w7 w1 w12",
        "--max-new-tokens",
        "8",
    ];
    let cases: [(&[&str], &str); 3] = [
        (&[], "2,28,28,28,28,28,28,28,2"),
        (
            &["--adapter", adapter.to_str().unwrap()],
            "2,11,11,11,26,11,26,11,2",
        ),
        (
            &["--adapter", adapter.to_str().unwrap(), "--num-beams", "3"],
            "2,26,11,11,26,11,11,11,2",
        ),
    ];
    for (flags, expected) in cases {
        let mut args = base.to_vec();
        args.extend_from_slice(flags);
        let o = generate(&args);
        assert!(o.status.success(), "{flags:?}: {}", stderr(&o));
        let stdout = String::from_utf8(o.stdout).unwrap();
        assert_eq!(stdout.lines().next(), Some(expected), "{flags:?}");
    }
}

fn peftspace(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peftspace"))
        .args(args)
        .current_dir(dir)
        .env_remove("PEFTSPACE_MODEL")
        .output()
        .expect("run peftspace")
}

/// A design trained on a generation task and saved: `predict` writes one generated text per input row, the same
/// text `generate --adapter` prints for that row.
#[test]
fn a_saved_generation_design_predicts_texts_and_generates_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = fixture("generation");
    let spec = format!(
        r#"ExperimentSpec(
    name: "reverse",
    backbone: (path: "{model}"),
    tasks: [(id: "reverse", generation: (train: "{data}/train.jsonl", eval: "{data}/dev.jsonl",
        max_target_tokens: 8))],
    budget: 0.2,
    training: (epochs: 1, batch_size: 8, learning_rate: 1e-2, max_seq_len: 16),
)"#,
        model = fixture("lm/t5-copy").display(),
        data = data.display(),
    );
    std::fs::write(dir.path().join("exp.ron"), spec).expect("write");
    let train = peftspace(
        &["train", "exp.ron", "--baseline", "lora", "--save", "saved"],
        dir.path(),
    );
    assert!(train.status.success(), "{}", stderr(&train));
    let input = data.join("dev.jsonl");
    let predict = peftspace(
        &[
            "predict",
            "saved",
            "--input",
            input.to_str().unwrap(),
            "--text",
            "source",
            "--out",
            "out.csv",
        ],
        dir.path(),
    );
    assert!(predict.status.success(), "{}", stderr(&predict));
    let csv = std::fs::read_to_string(dir.path().join("out.csv")).expect("csv");
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows[0], "index,generated");
    let sources: Vec<Value> = std::fs::read_to_string(&input)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), sources.len() + 1, "{csv}");
    let first_source = sources[0]["source"].as_str().unwrap();
    let generated = peftspace(
        &[
            "generate",
            "--model",
            fixture("lm/t5-copy").to_str().unwrap(),
            "--adapter",
            "saved",
            "--text",
            first_source,
            "--max-new-tokens",
            "8",
        ],
        dir.path(),
    );
    assert!(generated.status.success(), "{}", stderr(&generated));
    let text = String::from_utf8_lossy(&generated.stdout);
    let printed = text.lines().nth(1).unwrap_or_default();
    assert_eq!(rows[1], format!("0,{printed}"), "{csv}");
}
