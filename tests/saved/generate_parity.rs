//! `peftspace_core::generate` on the tiny T5 and BART language models equals transformers' `generate` token for
//! token: greedy and beam search, with n-gram bans, minimum lengths, length penalties, early stopping and BART's
//! forced EOS (references: `tests/fixtures/lm/*/generate.json`, written by `tests/fixtures/gen_generation.py`).
//!
//! A reference that repeats one token would pass a decoder that ignores its input or its cache, so every reference
//! is checked to hold at least three distinct generated tokens (start and EOS left out), and the two inputs of each
//! batch to give different outputs in every case (`every_reference_is_varied_and_depends_on_the_input`).
//! `broken_decoders_miss_the_references` runs decoders with a deliberate fault (a zeroed encoder output, inputs
//! swapped between rows, padding not masked, forgotten earlier tokens) and requires each to miss a reference in
//! every case. Checked by hand as well: making `generated_sequences_equal_transformers` pass an all-ones attention
//! mask to `generate` made all 15 cases fail (row 1, the padded one, every time). References that repeat one token,
//! as tiny random models tend to give, miss such faults: the tiny BART drawn without the adjustments of
//! `gen_generation.py` (every weight at `init_std` 0.3) answers `w0 w0 …` in its greedy, `beam4` and `beam3_long`
//! cases whatever the input, and under that fault too.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use peftspace_core::backbone::lm::{DecoderCache, KeyValues, LanguageModel, SpecialTokens};
use peftspace_core::backbone::{Backbone, Batch, Mode};
use peftspace_core::generate::{generate, GenerationSettings};
use peftspace_core::hooks::{LayerHooks, NoHooks};
use peftspace_core::Result;
use serde_json::Value;

const MODELS: [&str; 3] = ["t5-tiny-relu", "t5-tiny-gated", "bart-tiny"];

/// The fewest distinct generated tokens a reference sequence may hold.
const MIN_DISTINCT: usize = 3;

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

/// The distinct tokens of a reference row after its decoder start token, the start and EOS ids left out.
fn distinct_generated(row: &[u32], start: u32, eos: u32) -> BTreeSet<u32> {
    row.iter()
        .skip(1)
        .copied()
        .filter(|&t| t != start && t != eos)
        .collect()
}

#[test]
fn every_reference_is_varied_and_depends_on_the_input() {
    for name in MODELS {
        let r = reference(name);
        let start = r["decoder_start_token_id"].as_u64().unwrap() as u32;
        let eos = r["eos_token_id"].as_u64().unwrap() as u32;
        let inputs = ids(&r["input_ids"]);
        assert!(inputs.len() >= 2, "{name}: a batch of at least two inputs");
        assert_ne!(inputs[0], inputs[1], "{name}");
        let cases = r["cases"].as_array().unwrap();
        assert!(!cases.is_empty(), "{name}: no cases");
        for case in cases {
            let rows = ids(&case["sequences"]);
            assert_eq!(rows.len(), inputs.len(), "{name} {}", case["name"]);
            for (i, row) in rows.iter().enumerate() {
                assert_eq!(row[0], start, "{name} {} row {i}", case["name"]);
                let distinct = distinct_generated(row, start, eos);
                assert!(
                    distinct.len() >= MIN_DISTINCT,
                    "{name} {} row {i}: {} distinct generated tokens {distinct:?} in {row:?}; a reference this \
                     repetitive cannot tell a decoder that ignores its input or cache from a correct one",
                    case["name"],
                    distinct.len()
                );
            }
            assert_ne!(
                rows[0], rows[1],
                "{name} {}: both inputs give the same output",
                case["name"]
            );
        }
    }
}

/// What to break in a [`LanguageModel`].
#[derive(Debug, Clone, Copy)]
enum Break {
    /// The decoder sees an all-zero encoder output (the input is ignored).
    ZeroEncoder,
    /// Each input is decoded against the encoder output of another input of the batch (rows mixed up).
    SwappedInputs,
    /// The encoder and the cross-attention see padding as real tokens.
    UnmaskedPadding,
    /// Every step sees zeros for the cached self-attention keys and values of the earlier tokens (the decoder
    /// forgets what it generated).
    Forgetful,
}

/// A language model that decodes as `inner` does, but for one deliberate fault.
struct Broken<'a> {
    inner: &'a dyn LanguageModel,
    fault: Break,
}

impl LanguageModel for Broken<'_> {
    fn special_tokens(&self) -> SpecialTokens {
        self.inner.special_tokens()
    }

    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }

    fn logits(&self, batch: &Batch, hooks: &dyn LayerHooks, mode: Mode<'_>) -> Result<Tensor> {
        self.inner.logits(batch, hooks, mode)
    }

    fn start(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        hooks: &dyn LayerHooks,
    ) -> Result<DecoderCache> {
        let mut cache = match self.fault {
            Break::UnmaskedPadding => {
                self.inner
                    .start(input_ids, &attention_mask.ones_like()?, hooks)?
            }
            _ => self.inner.start(input_ids, attention_mask, hooks)?,
        };
        match self.fault {
            Break::ZeroEncoder => cache.encoder_hidden = cache.encoder_hidden.zeros_like()?,
            Break::SwappedInputs => {
                let reversed: Vec<u32> = (0..cache.batch()? as u32).rev().collect();
                cache.select_rows(&reversed)?;
            }
            Break::UnmaskedPadding | Break::Forgetful => {}
        }
        Ok(cache)
    }

    fn step(
        &self,
        cache: &mut DecoderCache,
        ids: &Tensor,
        hooks: &dyn LayerHooks,
    ) -> Result<Tensor> {
        if let Break::Forgetful = self.fault {
            for layer in &mut cache.layers {
                if let Some(kv) = &layer.self_attention {
                    layer.self_attention = Some(KeyValues {
                        key: kv.key.zeros_like()?,
                        value: kv.value.zeros_like()?,
                    });
                }
            }
        }
        self.inner.step(cache, ids, hooks)
    }
}

/// The references' power: a decoder with a deliberate fault misses, in every case of every model, the reference of
/// at least one row. (A reference that gives both inputs the same output cannot catch rows swapped.)
#[test]
fn broken_decoders_miss_the_references() {
    let mut unnoticed = Vec::new();
    for fault in [
        Break::ZeroEncoder,
        Break::SwappedInputs,
        Break::UnmaskedPadding,
        Break::Forgetful,
    ] {
        for name in MODELS {
            let r = reference(name);
            let backbone = load(name);
            let broken = Broken {
                inner: language_model(name, backbone.as_ref()),
                fault,
            };
            let input_ids = tensor(&ids(&r["input_ids"]));
            let mask = tensor(&ids(&r["attention_mask"]));
            for case in r["cases"].as_array().unwrap() {
                let expected = ids(&case["sequences"]);
                let ours = generate(&broken, &input_ids, &mask, &NoHooks, &settings(case))
                    .unwrap_or_else(|e| panic!("{fault:?} {name} {}: {e}", case["name"]));
                if ours == expected {
                    unnoticed.push(format!("{fault:?} {name} {}: {expected:?}", case["name"]));
                }
            }
        }
    }
    assert!(
        unnoticed.is_empty(),
        "broken decoders that match the references:\n{}",
        unnoticed.join("\n")
    );
}
