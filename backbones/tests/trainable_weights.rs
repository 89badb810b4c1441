//! Full fine-tuning: a backbone loaded with trainable weights hands out every weight as a `Var` (each once, tied
//! embeddings once), their scalars add up to the backbone's parameter count, every one of them gets a non-zero
//! gradient through the fast blocks of `ops`, and the outputs equal the frozen model's.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use peftspace_core::backbone::{Batch, Dropout, Mode, Weights};
use peftspace_core::hooks::NoHooks;
use peftspace_core::model::ModelFolder;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

fn batch(dir: &Path, device: &Device) -> Batch {
    let tokenizer = ModelFolder::open(dir)
        .and_then(|m| m.tokenizer())
        .expect("tokenizer");
    tokenizer
        .batch(
            &[("hello world", Some("a pair")), ("the cat sat", None)],
            16,
            device,
        )
        .expect("batch")
}

/// A loss that reads every feature with a different weight.
fn loss(features: &Tensor) -> Tensor {
    let width = features.dim(1).expect("width");
    let weights = (Tensor::arange(0f32, width as f32, features.device()).expect("arange") / 7.0)
        .and_then(|w| w.sin())
        .expect("weights");
    features
        .broadcast_mul(&weights)
        .and_then(|x| x.sum_all())
        .expect("loss")
}

fn check(model: &str) {
    let device = Device::Cpu;
    let dir = fixture(model);
    let trainable =
        peftspace_backbones::load_with(&dir, &device, Weights::Trainable).expect("trainable loads");
    let frozen = peftspace_backbones::load(&dir, &device).expect("frozen loads");
    assert!(
        frozen.trainable_weights().is_empty(),
        "{model}: frozen model has variables"
    );
    let vars = trainable.trainable_weights();
    let scalars: usize = vars.iter().map(|v| v.elem_count()).sum();
    assert_eq!(
        scalars,
        trainable.info().num_params,
        "{model}: the variables' scalars must equal the backbone's parameter count"
    );

    let batch = batch(&dir, &device);
    // Same function as the frozen model (the composed path only changes how gradients are found).
    let a = trainable
        .features(&batch, &NoHooks, Mode::Eval)
        .expect("forward");
    let b = frozen
        .features(&batch, &NoHooks, Mode::Eval)
        .expect("forward");
    let diff = (a.detach() - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.max_all())
        .and_then(|d| d.to_scalar::<f32>())
        .expect("diff");
    assert!(
        diff < 1e-4,
        "{model}: trainable and frozen outputs differ by {diff}"
    );

    // Training mode: dropout on, as in a trial.
    let dropout = Dropout::new(3);
    let features = trainable
        .features(&batch, &NoHooks, Mode::Train { dropout: &dropout })
        .expect("forward");
    let grads = loss(&features).backward().expect("backward");
    let mut missing = Vec::new();
    for (index, var) in vars.iter().enumerate() {
        let size = grads
            .get(var)
            .and_then(|g| g.abs().ok())
            .and_then(|g| g.sum_all().ok())
            .and_then(|g| g.to_scalar::<f32>().ok())
            .unwrap_or(0.0);
        if !(size > 0.0 && size.is_finite()) {
            missing.push(format!("#{index} {:?}", var.dims()));
        }
    }
    assert!(
        missing.is_empty(),
        "{model}: {} of {} variables got no gradient: {}",
        missing.len(),
        vars.len(),
        missing.join(", ")
    );
}

#[test]
fn every_bert_weight_gets_a_gradient() {
    check("tiny-bert");
}

#[test]
fn every_roberta_weight_gets_a_gradient() {
    check("tiny-roberta");
}

#[test]
fn every_t5_weight_gets_a_gradient() {
    check("t5-tiny-relu");
    check("t5-tiny-gated");
}

#[test]
fn every_bart_weight_gets_a_gradient() {
    check("bart-tiny");
}

#[test]
fn max_positions_follow_the_position_tables() {
    let device = Device::Cpu;
    let load = |name: &str| peftspace_backbones::load(&fixture(name), &device).expect("loads");
    // tiny-bert: 40 position rows; tiny-roberta: rows minus `padding_idx + 1`.
    assert_eq!(load("tiny-bert").max_positions(), Some(40));
    let roberta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("tiny-roberta").join("config.json")).expect("config"),
    )
    .expect("json");
    let rows = roberta["max_position_embeddings"].as_u64().expect("rows") as usize;
    let pad = roberta["pad_token_id"].as_u64().expect("pad") as usize;
    assert_eq!(load("tiny-roberta").max_positions(), Some(rows - pad - 1));
    // T5: relative positions, no limit. BART: its learned table without the offset.
    assert_eq!(load("t5-tiny-relu").max_positions(), None);
    let bart: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("bart-tiny").join("config.json")).expect("config"),
    )
    .expect("json");
    assert_eq!(
        load("bart-tiny").max_positions(),
        bart["max_position_embeddings"].as_u64().map(|v| v as usize)
    );
}
