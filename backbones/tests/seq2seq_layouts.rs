//! Checkpoint layouts transformers writes for task models: tensors under `model.` (BART) or `transformer.` (T5),
//! per-stack `embed_tokens` copies instead of `shared.weight`, and an LM head that must be ignored.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use peftspace_backbones::bart::Bart;
use peftspace_backbones::t5::T5;
use peftspace_core::backbone::{Backbone, Batch, Mode};
use peftspace_core::hooks::NoHooks;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

/// Copies a fixture into `out` with every tensor renamed by `rename` (which may also drop or add tensors).
fn rewrite(
    name: &str,
    out: &Path,
    rename: impl Fn(HashMap<String, Tensor>) -> HashMap<String, Tensor>,
) {
    let tensors =
        candle_core::safetensors::load(fixture(name).join("model.safetensors"), &Device::Cpu)
            .unwrap();
    candle_core::safetensors::save(&rename(tensors), out.join("model.safetensors")).unwrap();
    std::fs::copy(fixture(name).join("config.json"), out.join("config.json")).unwrap();
}

fn decoder_hidden(model: &dyn Backbone, name: &str) -> Tensor {
    let r =
        candle_core::safetensors::load(fixture(name).join("reference.safetensors"), &Device::Cpu)
            .unwrap();
    let batch = Batch {
        input_ids: r["input_ids"].to_dtype(DType::U32).unwrap(),
        attention_mask: r["attention_mask"].to_dtype(DType::U32).unwrap(),
        token_type_ids: None,
        decoder_input_ids: None,
    };
    model
        .encode(&batch, &NoHooks, Mode::Eval)
        .unwrap()
        .decoder_hidden
        .unwrap()
}

fn same(a: &Tensor, b: &Tensor) -> bool {
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
        == 0.0
}

#[test]
fn bart_task_checkpoint_under_model_prefix_with_lm_head() {
    let dir = tempfile::tempdir().unwrap();
    rewrite("bart-tiny", dir.path(), |tensors| {
        let mut out: HashMap<String, Tensor> = tensors
            .into_iter()
            .map(|(k, v)| (format!("model.{k}"), v))
            .collect();
        let shared = out["model.shared.weight"].clone();
        out.insert("lm_head.weight".to_string(), (shared * 3.0).unwrap());
        out.insert(
            "final_logits_bias".to_string(),
            Tensor::ones((1, 44), DType::F32, &Device::Cpu).unwrap(),
        );
        out
    });
    let original = Bart::load(&fixture("bart-tiny"), &Device::Cpu).unwrap();
    let task = Bart::load(dir.path(), &Device::Cpu).unwrap();
    assert!(same(
        &decoder_hidden(&original, "bart-tiny"),
        &decoder_hidden(&task, "bart-tiny")
    ));
}

#[test]
fn t5_classification_checkpoint_with_per_stack_embeddings() {
    let dir = tempfile::tempdir().unwrap();
    rewrite("t5-tiny-gated", dir.path(), |tensors| {
        let mut out = HashMap::new();
        for (k, v) in tensors {
            if k == "shared.weight" {
                out.insert(
                    "transformer.encoder.embed_tokens.weight".to_string(),
                    v.clone(),
                );
                out.insert("transformer.decoder.embed_tokens.weight".to_string(), v);
            } else {
                out.insert(format!("transformer.{k}"), v);
            }
        }
        out
    });
    let original = T5::load(&fixture("t5-tiny-gated"), &Device::Cpu).unwrap();
    let task = T5::load(dir.path(), &Device::Cpu).unwrap();
    assert!(same(
        &decoder_hidden(&original, "t5-tiny-gated"),
        &decoder_hidden(&task, "t5-tiny-gated")
    ));
}

#[test]
fn missing_tensors_name_the_file_and_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    rewrite("t5-tiny-relu", dir.path(), |mut tensors| {
        tensors.remove("decoder.block.1.layer.1.EncDecAttention.k.weight");
        tensors
    });
    let err = T5::load(dir.path(), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    assert!(
        err.contains("decoder.block.1.layer.1.EncDecAttention.k.weight"),
        "{err}"
    );
    let empty = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("bart-tiny").join("config.json"),
        empty.path().join("config.json"),
    )
    .unwrap();
    let err = Bart::load(empty.path(), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("no such file"),
        "{err}"
    );
}
