//! Parity of the encoder-decoder backbones with transformers on the tiny fixtures made by
//! `tests/fixtures/gen_seq2seq.py`: encoder and decoder last hidden states on a right-padded batch of two rows.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use peftspace_backbones::bart::Bart;
use peftspace_backbones::t5::T5;
use peftspace_core::backbone::{Backbone, Batch, Mode};
use peftspace_core::hooks::NoHooks;

const TOLERANCE: f32 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

fn reference(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(name).join("reference.safetensors"), &Device::Cpu)
        .expect("reference.safetensors (run tests/fixtures/gen_seq2seq.py)")
}

fn ids(t: &Tensor) -> Tensor {
    t.to_dtype(DType::U32).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn batch(r: &HashMap<String, Tensor>, decoder: Option<&str>) -> Batch {
    Batch {
        input_ids: ids(&r["input_ids"]),
        attention_mask: ids(&r["attention_mask"]),
        token_type_ids: None,
        decoder_input_ids: decoder.map(|k| ids(&r[k])),
    }
}

fn check(model: &dyn Backbone, name: &str) {
    let r = reference(name);
    // Default decoder input: the input shifted right with the decoder start token.
    let out = model
        .encode(&batch(&r, None), &NoHooks, Mode::Eval)
        .unwrap();
    let enc = max_abs_diff(&out.encoder_hidden, &r["encoder_hidden"]);
    let dec = max_abs_diff(out.decoder_hidden.as_ref().unwrap(), &r["decoder_hidden"]);
    println!("{name}: encoder max |diff| {enc:.2e}, decoder {dec:.2e}");
    assert!(enc <= TOLERANCE, "{name}: encoder differs by {enc}");
    assert!(dec <= TOLERANCE, "{name}: decoder differs by {dec}");
    // The same decoder ids given explicitly give the same result.
    let explicit = model
        .encode(&batch(&r, Some("decoder_input_ids")), &NoHooks, Mode::Eval)
        .unwrap();
    assert!(
        max_abs_diff(
            explicit.decoder_hidden.as_ref().unwrap(),
            &r["decoder_hidden"]
        ) <= TOLERANCE
    );
    // Shorter explicit decoder ids.
    let short = model
        .encode(
            &batch(&r, Some("explicit_decoder_input_ids")),
            &NoHooks,
            Mode::Eval,
        )
        .unwrap();
    let d = max_abs_diff(
        short.decoder_hidden.as_ref().unwrap(),
        &r["explicit_decoder_hidden"],
    );
    assert!(d <= TOLERANCE, "{name}: explicit decoder ids differ by {d}");
    // The classification read-out: decoder state at the last EOS of each row.
    let features = model
        .features(&batch(&r, None), &NoHooks, Mode::Eval)
        .unwrap();
    let f = max_abs_diff(&features, &r["eos_features"]);
    assert!(f <= TOLERANCE, "{name}: EOS features differ by {f}");
    assert_eq!(features.dims(), &[2, model.feature_dim()]);
}

#[test]
fn t5_relu_matches_transformers() {
    let model = T5::load(&fixture("t5-tiny-relu"), &Device::Cpu).unwrap();
    check(&model, "t5-tiny-relu");
}

#[test]
fn t5_gated_gelu_matches_transformers() {
    let model = T5::load(&fixture("t5-tiny-gated"), &Device::Cpu).unwrap();
    assert!(model.info().layers[0]
        .linear
        .iter()
        .any(|s| s.kind == peftspace_core::shapes::SiteKind::FfnGate));
    check(&model, "t5-tiny-gated");
}

#[test]
fn bart_matches_transformers() {
    let model = Bart::load(&fixture("bart-tiny"), &Device::Cpu).unwrap();
    check(&model, "bart-tiny");
}

#[test]
fn registry_finds_both_architectures_and_loads_them() {
    let registries = peftspace_core::registry::registries().unwrap();
    for (model_type, name) in [("t5", "t5-tiny-relu"), ("bart", "bart-tiny")] {
        let entry = registries.architecture_for(model_type).unwrap();
        let model = (entry.load)(&fixture(name), &Device::Cpu).unwrap();
        assert_eq!(model.info().model_type, model_type);
        check(model.as_ref(), name);
    }
}

#[test]
fn dropout_changes_training_outputs_only() {
    let model = T5::load(&fixture("t5-tiny-gated"), &Device::Cpu).unwrap();
    let r = reference("t5-tiny-gated");
    let dropout = peftspace_core::backbone::Dropout::new(7);
    let train = model
        .encode(
            &batch(&r, None),
            &NoHooks,
            Mode::Train { dropout: &dropout },
        )
        .unwrap();
    let diff = max_abs_diff(train.decoder_hidden.as_ref().unwrap(), &r["decoder_hidden"]);
    assert!(
        diff > 1e-3,
        "dropout 0.1 in training must change the output (diff {diff})"
    );
}

#[test]
fn fixture_tokenizers_reproduce_the_reference_batch() {
    // The texts `tests/fixtures/gen_seq2seq.py` tokenised.
    let cases: [(&str, [&str; 2]); 2] = [
        (
            "t5-tiny-relu",
            ["w3 w7 w1 w12 w30 w5 w9 w22 w17 w2 w8", "w4 w15 w6"],
        ),
        ("bart-tiny", ["w3 w7 w1 w12 w30 w5 w9", "w4 w15"]),
    ];
    for (name, texts) in cases {
        let dir = fixture(name);
        let tokenizer = peftspace_core::model::ModelFolder::open(&dir)
            .and_then(|m| m.tokenizer())
            .unwrap();
        let examples: Vec<(&str, Option<&str>)> = texts.iter().map(|t| (*t, None)).collect();
        let batch = tokenizer.batch(&examples, 64, &Device::Cpu).unwrap();
        let r = reference(name);
        assert_eq!(
            max_abs_diff(
                &batch.input_ids.to_dtype(DType::F32).unwrap(),
                &r["input_ids"].to_dtype(DType::F32).unwrap()
            ),
            0.0
        );
        assert_eq!(
            max_abs_diff(
                &batch.attention_mask.to_dtype(DType::F32).unwrap(),
                &r["attention_mask"].to_dtype(DType::F32).unwrap()
            ),
            0.0
        );
        // Through the crate-level loader (registry lookup by `model_type`).
        let model = peftspace_backbones::load(&dir, &Device::Cpu).unwrap();
        let features = model.features(&batch, &NoHooks, Mode::Eval).unwrap();
        assert!(
            max_abs_diff(&features, &r["eos_features"]) <= TOLERANCE,
            "{name}"
        );
    }
}
