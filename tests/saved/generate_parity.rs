//! `peftspace_core::generate` on the tiny T5 and BART language models equals transformers' `generate` token for
//! token: greedy and beam search, with n-gram bans, minimum lengths, length penalties, early stopping and BART's
//! forced EOS (references: `tests/fixtures/lm/*/generate.json`, written by `tests/fixtures/gen_generation.py`).

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use peftspace_core::backbone::lm::LanguageModel;
use peftspace_core::backbone::Backbone;
use peftspace_core::generate::{generate, GenerationSettings};
use peftspace_core::hooks::NoHooks;
use serde_json::Value;

const MODELS: [&str; 3] = ["t5-tiny-relu", "t5-tiny-gated", "bart-tiny"];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/lm")
        .join(name)
}

fn reference(name: &str) -> Value {
    let path = fixture(name).join("generate.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ids(value: &Value) -> Vec<Vec<u32>> {
    value
        .as_array()
        .expect("a list of rows")
        .iter()
        .map(|row| {
            row.as_array()
                .expect("a row of ids")
                .iter()
                .map(|v| v.as_u64().expect("an id") as u32)
                .collect()
        })
        .collect()
}

fn tensor(rows: &[Vec<u32>]) -> Tensor {
    let width = rows[0].len();
    let flat: Vec<u32> = rows.iter().flatten().copied().collect();
    Tensor::from_vec(flat, (rows.len(), width), &Device::Cpu).unwrap()
}

fn settings(case: &Value) -> GenerationSettings {
    let s = &case["settings"];
    let count = |key: &str| s[key].as_u64().unwrap_or_else(|| panic!("settings.{key}")) as usize;
    GenerationSettings {
        num_beams: count("num_beams"),
        max_new_tokens: count("max_new_tokens"),
        min_new_tokens: count("min_new_tokens"),
        no_repeat_ngram_size: count("no_repeat_ngram_size"),
        length_penalty: s["length_penalty"]
            .as_f64()
            .expect("settings.length_penalty"),
        early_stopping: s["early_stopping"]
            .as_bool()
            .expect("settings.early_stopping"),
    }
}

fn load(name: &str) -> Box<dyn Backbone> {
    peftspace_backbones::load(&fixture(name), &Device::Cpu)
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

fn language_model<'a>(name: &str, backbone: &'a dyn Backbone) -> &'a dyn LanguageModel {
    backbone
        .language_model()
        .unwrap_or_else(|| panic!("{name} has no language model"))
}

#[test]
fn the_special_tokens_are_transformers() {
    for name in MODELS {
        let r = reference(name);
        let backbone = load(name);
        let special = language_model(name, backbone.as_ref()).special_tokens();
        assert_eq!(
            special.decoder_start as u64,
            r["decoder_start_token_id"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            special.eos as u64,
            r["eos_token_id"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            special.pad as u64,
            r["pad_token_id"].as_u64().unwrap(),
            "{name}"
        );
        for case in r["cases"].as_array().unwrap() {
            let forced = case["settings"]["forced_eos_token_id"]
                .as_u64()
                .map(|t| t as u32);
            assert_eq!(special.forced_eos, forced, "{name} {}", case["name"]);
        }
    }
}

#[test]
fn generated_sequences_equal_transformers() {
    let mut failures = Vec::new();
    for name in MODELS {
        let r = reference(name);
        let backbone = load(name);
        let lm = language_model(name, backbone.as_ref());
        let input_ids = tensor(&ids(&r["input_ids"]));
        let mask = tensor(&ids(&r["attention_mask"]));
        for case in r["cases"].as_array().unwrap() {
            let expected = ids(&case["sequences"]);
            let ours = generate(lm, &input_ids, &mask, &NoHooks, &settings(case))
                .unwrap_or_else(|e| panic!("{name} {}: {e}", case["name"]));
            if ours != expected {
                failures.push(format!(
                    "{name} {}:\n  ours         {ours:?}\n  transformers {expected:?}",
                    case["name"]
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn each_row_alone_generates_what_it_does_in_the_padded_batch() {
    for name in MODELS {
        let r = reference(name);
        let backbone = load(name);
        let lm = language_model(name, backbone.as_ref());
        let rows = ids(&r["input_ids"]);
        let masks = ids(&r["attention_mask"]);
        for case in r["cases"].as_array().unwrap() {
            let expected = ids(&case["sequences"]);
            for (i, (row, mask)) in rows.iter().zip(&masks).enumerate() {
                let real = mask.iter().filter(|&&m| m == 1).count();
                let alone = tensor(&[row[..real].to_vec()]);
                let ones = tensor(&[vec![1; real]]);
                let ours = generate(lm, &alone, &ones, &NoHooks, &settings(case)).unwrap();
                assert_eq!(ours[0], expected[i], "{name} {} row {i}", case["name"]);
            }
        }
    }
}
