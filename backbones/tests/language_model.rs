//! The language model of the encoder-decoders against transformers (`tests/fixtures/gen_generation.py`): teacher-forced
//! logits of the three heads (T5 v1.0 tied and rescaled, T5 v1.1 with its own `lm_head`, BART with
//! `final_logits_bias`), the first greedy decoding steps, and key/value-cached decoding against teacher forcing
//! (one token or several per step, with hooks that add prefixes and change projections, after reordering rows).

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, IndexOp, Tensor};
use common::{fixture, load_tensors, max_abs_diff};
use peftspace_core::backbone::lm::{DecoderCache, LanguageModel, SpecialTokens};
use peftspace_core::backbone::{Backbone, Batch, Dropout, Mode, Weights};
use peftspace_core::hooks::{LayerHooks, NoHooks, Prefix};
use peftspace_core::shapes::{AttentionKind, BackboneInfo, SiteKind};
use peftspace_core::Result;

const LM_FIXTURES: [&str; 3] = ["lm/t5-tiny-relu", "lm/t5-tiny-gated", "lm/bart-tiny"];

/// How far logits may be from transformers' (first value) and cached decoding from teacher forcing (second: the same
/// arithmetic in another order). The fixtures are drawn so that f32 rounding stays far below both (the gated T5 with
/// a narrower `initializer_factor`: its FFN multiplies two projections).
fn tolerances(_name: &str) -> (f32, f32) {
    (1e-4, 1e-5)
}

fn load(name: &str, weights: Weights) -> Box<dyn Backbone> {
    peftspace_backbones::load_with(&fixture(name), &Device::Cpu, weights)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn lm(model: &dyn Backbone) -> &dyn LanguageModel {
    model
        .language_model()
        .expect("an encoder-decoder has a language model")
}

fn reference(name: &str) -> HashMap<String, Tensor> {
    load_tensors(&fixture(name).join("reference.safetensors"))
}

fn ids(t: &Tensor) -> Tensor {
    t.to_dtype(DType::U32).expect("u32")
}

/// The reference batch with transformers' decoder input (the labels shifted right).
fn teacher_batch(r: &HashMap<String, Tensor>) -> Batch {
    Batch {
        input_ids: ids(&r["input_ids"]),
        attention_mask: ids(&r["attention_mask"]),
        token_type_ids: None,
        decoder_input_ids: Some(ids(&r["decoder_input_ids"])),
    }
}

/// Hooks that give every attention block of the decoder and encoder two non-zero prefix rows and change the outputs
/// of some projections position by position (so that cached and uncached decoding must still agree).
struct TestHooks {
    info: BackboneInfo,
}

impl TestHooks {
    fn rows(&self, layer: usize, kind: AttentionKind, batch: usize, salt: f32) -> Result<Tensor> {
        let shape = self.info.layers[layer]
            .attention
            .iter()
            .find(|a| a.kind == kind)
            .expect("the layer has this attention");
        let width = shape.heads * shape.head_dim;
        let seed = layer as f32
            + if kind == AttentionKind::CrossAttention {
                0.5
            } else {
                0.0
            };
        let rows = (Tensor::arange(0f32, (2 * width) as f32, &Device::Cpu)? * 0.37)?;
        let rows = ((rows + f64::from(seed + salt))?.sin()? * 1.5)?.reshape((1, 2, width))?;
        Ok(rows.repeat((batch, 1, 1))?)
    }
}

impl LayerHooks for TestHooks {
    fn linear(&self, _layer: usize, site: SiteKind, _x: &Tensor, y: Tensor) -> Result<Tensor> {
        match site {
            SiteKind::Value | SiteKind::CrossKey | SiteKind::FfnOut | SiteKind::Query => {
                Ok(((y * 0.9)? + 0.05)?)
            }
            _ => Ok(y),
        }
    }

    fn prefix(&self, layer: usize, kind: AttentionKind, batch: usize) -> Result<Option<Prefix>> {
        Ok(Some(Prefix {
            key: self.rows(layer, kind, batch, 0.0)?,
            value: self.rows(layer, kind, batch, 1.0)?,
        }))
    }
}

#[test]
fn teacher_forced_logits_match_transformers() {
    for name in LM_FIXTURES {
        let model = load(name, Weights::Frozen);
        let r = reference(name);
        let logits = lm(model.as_ref())
            .logits(&teacher_batch(&r), &NoHooks, Mode::Eval)
            .expect("logits");
        let diff = max_abs_diff(&logits, &r["logits"]);
        println!("{name}: teacher-forced logits max |diff| {diff:.2e}");
        assert!(
            diff <= tolerances(name).0,
            "{name}: logits differ by {diff}"
        );
        assert_eq!(
            lm(model.as_ref()).vocab_size(),
            r["logits"].dim(2).expect("vocab")
        );
    }
}

#[test]
fn special_tokens_come_from_the_config() {
    let t5 = load("lm/t5-tiny-relu", Weights::Frozen);
    assert_eq!(
        lm(t5.as_ref()).special_tokens(),
        SpecialTokens {
            decoder_start: 0,
            eos: 1,
            pad: 0,
            forced_eos: None
        }
    );
    let bart = load("lm/bart-tiny", Weights::Frozen);
    assert_eq!(
        lm(bart.as_ref()).special_tokens(),
        SpecialTokens {
            decoder_start: 2,
            eos: 2,
            pad: 1,
            forced_eos: Some(2)
        }
    );
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("json")
}

fn u32_rows(value: &serde_json::Value) -> Vec<Vec<u32>> {
    value
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| {
            row.as_array()
                .expect("row")
                .iter()
                .map(|v| v.as_u64().expect("id") as u32)
                .collect()
        })
        .collect()
}

fn column(tokens: &[u32]) -> Tensor {
    Tensor::from_vec(tokens.to_vec(), (tokens.len(), 1), &Device::Cpu).expect("ids")
}

#[test]
fn the_first_greedy_steps_give_transformers_logits() {
    for name in LM_FIXTURES {
        let model = load(name, Weights::Frozen);
        let lm = lm(model.as_ref());
        let generate = read_json(&fixture(name).join("generate.json"));
        let input_ids = u32_rows(&generate["input_ids"]);
        let mask = u32_rows(&generate["attention_mask"]);
        let to_tensor = |rows: &[Vec<u32>]| {
            let width = rows[0].len();
            let flat: Vec<u32> = rows.iter().flatten().copied().collect();
            Tensor::from_vec(flat, (rows.len(), width), &Device::Cpu).expect("tensor")
        };
        let greedy = generate["cases"]
            .as_array()
            .expect("cases")
            .iter()
            .find(|c| c["name"] == "greedy")
            .expect("a greedy case");
        let sequences = u32_rows(&greedy["sequences"]);
        let pad = lm.special_tokens().pad;
        let mut cache = lm
            .start(&to_tensor(&input_ids), &to_tensor(&mask), &NoHooks)
            .expect("start");
        for (step, expected) in greedy["first_logits"]
            .as_array()
            .expect("first_logits")
            .iter()
            .enumerate()
        {
            // transformers feeds a finished row padding after its EOS.
            let tokens: Vec<u32> = sequences
                .iter()
                .map(|row| row.get(step).copied().unwrap_or(pad))
                .collect();
            let logits = lm
                .step(&mut cache, &column(&tokens), &NoHooks)
                .expect("step");
            let expected: Vec<Vec<f32>> = expected
                .as_array()
                .expect("step logits")
                .iter()
                .map(|row| {
                    row.as_array()
                        .expect("row")
                        .iter()
                        .map(|v| v.as_f64().expect("logit") as f32)
                        .collect()
                })
                .collect();
            let expected = Tensor::new(expected, &Device::Cpu).expect("tensor");
            let diff = max_abs_diff(&logits, &expected);
            println!("{name}: greedy step {step} logits max |diff| {diff:.2e}");
            assert!(diff <= tolerances(name).0, "{name} step {step}: {diff}");
            assert_eq!(cache.position, step + 1);
        }
    }
}

/// Decodes `decoder_ids` in chunks of `chunks` tokens and checks each chunk's last logits against teacher forcing.
fn check_cached_decoding(
    lm: &dyn LanguageModel,
    batch: &Batch,
    decoder_ids: &Tensor,
    hooks: &dyn LayerHooks,
    chunks: &[usize],
    tolerance: f32,
    what: &str,
) -> f32 {
    let teacher = lm
        .logits(
            &Batch {
                decoder_input_ids: Some(decoder_ids.clone()),
                ..batch.clone()
            },
            hooks,
            Mode::Eval,
        )
        .expect("teacher-forced logits");
    let mut cache = lm
        .start(&batch.input_ids, &batch.attention_mask, hooks)
        .expect("start");
    let mut position = 0;
    let mut worst = 0f32;
    for &n in chunks {
        let ids = decoder_ids.narrow(1, position, n).expect("chunk");
        let logits = lm.step(&mut cache, &ids, hooks).expect("step");
        position += n;
        assert_eq!(cache.position, position);
        let expected = teacher.i((.., position - 1)).expect("position");
        let diff = max_abs_diff(&logits, &expected);
        assert!(
            diff <= tolerance,
            "{what}: at position {} cached logits differ by {diff}",
            position - 1
        );
        worst = worst.max(diff);
    }
    worst
}

#[test]
fn cached_decoding_equals_teacher_forcing() {
    for name in LM_FIXTURES {
        let model = load(name, Weights::Frozen);
        let r = reference(name);
        let batch = teacher_batch(&r);
        let decoder_ids = batch.decoder_input_ids.clone().expect("decoder ids");
        let len = decoder_ids.dim(1).expect("length");
        assert!(
            len >= 5,
            "{name}: the reference decoder input is too short for this test"
        );
        let hooks = TestHooks {
            info: model.info().clone(),
        };
        let one_by_one = vec![1; len];
        let mut with_three = vec![1, 3];
        with_three.extend(vec![1; len - 4]);
        let first_three = [3, len - 3];
        let mut worst = 0f32;
        for (hooks, hooks_name) in [
            (&NoHooks as &dyn LayerHooks, "no hooks"),
            (&hooks, "test hooks"),
        ] {
            for chunks in [&one_by_one[..], &with_three[..], &first_three[..]] {
                worst = worst.max(check_cached_decoding(
                    lm(model.as_ref()),
                    &batch,
                    &decoder_ids,
                    hooks,
                    chunks,
                    tolerances(name).1,
                    &format!("{name}, {hooks_name}, chunks {chunks:?}"),
                ));
            }
        }
        println!("{name}: cached against teacher-forced logits max |diff| {worst:.2e}");
    }
}

fn rows_of(t: &Tensor, rows: &[u32]) -> Tensor {
    let index = Tensor::new(rows, t.device()).expect("index");
    t.index_select(&index, 0).expect("rows")
}

#[test]
fn selecting_rows_equals_decoding_them_from_scratch() {
    for name in LM_FIXTURES {
        let model = load(name, Weights::Frozen);
        let lm = lm(model.as_ref());
        let r = reference(name);
        let batch = teacher_batch(&r);
        let decoder_ids = batch.decoder_input_ids.clone().expect("decoder ids");
        let hooks = TestHooks {
            info: model.info().clone(),
        };
        let rows = [1u32, 1, 0];
        let mut reordered: DecoderCache = lm
            .start(&batch.input_ids, &batch.attention_mask, &hooks)
            .expect("start");
        lm.step(
            &mut reordered,
            &decoder_ids.narrow(1, 0, 2).expect("ids"),
            &hooks,
        )
        .expect("step");
        reordered.select_rows(&rows).expect("select rows");
        let picked_ids = rows_of(&decoder_ids, &rows);
        let mut scratch = lm
            .start(
                &rows_of(&batch.input_ids, &rows),
                &rows_of(&batch.attention_mask, &rows),
                &hooks,
            )
            .expect("start");
        lm.step(
            &mut scratch,
            &picked_ids.narrow(1, 0, 2).expect("ids"),
            &hooks,
        )
        .expect("step");
        for position in 2..5 {
            let ids = picked_ids.narrow(1, position, 1).expect("ids");
            let a = lm.step(&mut reordered, &ids, &hooks).expect("step");
            let b = lm.step(&mut scratch, &ids, &hooks).expect("step");
            let diff = max_abs_diff(&a, &b);
            assert!(
                diff <= tolerances(name).1,
                "{name}: position {position}: reordered cache differs by {diff}"
            );
        }
        assert!(reordered.select_rows(&[3]).is_err());
    }
}

#[test]
fn a_step_checks_its_ids_against_the_cache() {
    let model = load("lm/bart-tiny", Weights::Frozen);
    let lm = lm(model.as_ref());
    let r = reference("lm/bart-tiny");
    let batch = teacher_batch(&r);
    let mut cache = lm
        .start(&batch.input_ids, &batch.attention_mask, &NoHooks)
        .expect("start");
    let three_rows = Tensor::new(&[[2u32], [2], [2]], &Device::Cpu).expect("ids");
    let err = lm
        .step(&mut cache, &three_rows, &NoHooks)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cache of 2 rows"), "{err}");
    // BART's learned positions end: a step past them is refused.
    let long = Tensor::zeros((2, 41), DType::U32, &Device::Cpu).expect("ids");
    let err = lm
        .step(&mut cache, &long, &NoHooks)
        .unwrap_err()
        .to_string();
    assert!(err.contains("learned positions"), "{err}");
}

/// The bare `T5Model` / `BartModel` fixtures have no head of their own: the tied head reads the shared embedding
/// (× `d_model^-0.5` when the config says to rescale), without a logits bias.
#[test]
fn bare_checkpoints_get_the_tied_head() {
    for (name, scale) in [
        ("t5-tiny-relu", Some(16f64.powf(-0.5))),
        ("t5-tiny-gated", None),
        ("bart-tiny", None),
    ] {
        let model = load(name, Weights::Frozen);
        let r = load_tensors(&fixture(name).join("reference.safetensors"));
        let batch = Batch {
            input_ids: ids(&r["input_ids"]),
            attention_mask: ids(&r["attention_mask"]),
            token_type_ids: None,
            decoder_input_ids: None,
        };
        let hidden = model
            .encode(&batch, &NoHooks, Mode::Eval)
            .expect("encode")
            .decoder_hidden
            .expect("decoder hidden");
        let weights = load_tensors(&fixture(name).join("model.safetensors"));
        let shared = &weights["shared.weight"];
        let hidden = match scale {
            Some(s) => (hidden * s).expect("scale"),
            None => hidden,
        };
        let expected = hidden
            .broadcast_matmul(&shared.t().expect("transpose"))
            .expect("matmul");
        let logits = lm(model.as_ref())
            .logits(&batch, &NoHooks, Mode::Eval)
            .expect("logits");
        let diff = max_abs_diff(&logits, &expected);
        assert!(diff <= 1e-5, "{name}: tied head differs by {diff}");
    }
}

/// A loss that reads every logit with a different weight.
fn loss(logits: &Tensor) -> Tensor {
    let width = logits.dim(2).expect("vocab");
    let weights = (Tensor::arange(0f32, width as f32, logits.device()).expect("arange") / 3.0)
        .and_then(|w| w.sin())
        .expect("weights");
    logits
        .broadcast_mul(&weights)
        .and_then(|x| x.sum_all())
        .expect("loss")
}

#[test]
fn full_fine_tuning_trains_every_weight_through_the_head() {
    for name in LM_FIXTURES {
        let trainable = load(name, Weights::Trainable);
        let frozen = load(name, Weights::Frozen);
        let r = reference(name);
        let batch = teacher_batch(&r);
        let a = lm(trainable.as_ref())
            .logits(&batch, &NoHooks, Mode::Eval)
            .expect("logits");
        let b = lm(frozen.as_ref())
            .logits(&batch, &NoHooks, Mode::Eval)
            .expect("logits");
        assert!(
            max_abs_diff(&a.detach(), &b) <= 1e-5,
            "{name}: trainable and frozen differ"
        );
        let vars = trainable.trainable_weights();
        let scalars: usize = vars.iter().map(|v| v.elem_count()).sum();
        // The untied T5 v1.1 head is the only weight beyond the backbone's parameter count.
        let own_head = if name == "lm/t5-tiny-gated" {
            lm(trainable.as_ref()).vocab_size() * trainable.info().hidden
        } else {
            0
        };
        assert_eq!(scalars, trainable.info().num_params + own_head, "{name}");
        let dropout = Dropout::new(5);
        let logits = lm(trainable.as_ref())
            .logits(&batch, &NoHooks, Mode::Train { dropout: &dropout })
            .expect("logits");
        let grads = loss(&logits).backward().expect("backward");
        let missing: Vec<String> = vars
            .iter()
            .enumerate()
            .filter(|(_, var)| {
                let size = grads
                    .get(var)
                    .and_then(|g| g.abs().ok())
                    .and_then(|g| g.sum_all().ok())
                    .and_then(|g| g.to_scalar::<f32>().ok())
                    .unwrap_or(0.0);
                !(size > 0.0 && size.is_finite())
            })
            .map(|(index, var)| format!("#{index} {:?}", var.dims()))
            .collect();
        assert!(
            missing.is_empty(),
            "{name}: {} of {} variables got no gradient: {}",
            missing.len(),
            vars.len(),
            missing.join(", ")
        );
    }
}
