//! Hugging Face PEFT LoRA adapters imported onto our hook sites reproduce PEFT's own outputs (hidden states and, for
//! BERT's classifier, logits) on the tiny fixtures (`tests/fixtures/gen_peft.py`); bad adapters give one clear error
//! naming the file and the tensor, with exit code 2.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use peftspace_core::backbone::{Batch, Mode, Weights};
use peftspace_core::model::ModelFolder;
use peftspace_core::registry::registries;
use peftspace_core::saved::design_hooks;
use peftspace_plugins::peft;

use peftspace_backbones as _;

/// PEFT's outputs in float32 against ours: the same operations in another order.
const TOLERANCE: f32 = 2e-5;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
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

/// Imports `adapter` onto `model` and compares hidden states (and logits when the reference has them); returns the
/// largest differences.
fn parity(model: &str, adapter: &str) -> (f32, Option<f32>) {
    let device = Device::Cpu;
    let folder = ModelFolder::open(fixture(model)).unwrap();
    let registries = registries().unwrap();
    let info = folder.describe(&registries).unwrap();
    let target = peft::Target::new(&folder, &info, &registries).unwrap();
    let dir = fixture("peft").join(adapter);
    let imported = peft::import(&dir, &target, &device).unwrap();
    let backbone = folder.load(&registries, &device, Weights::Frozen).unwrap();
    let hooks = design_hooks(backbone.as_ref(), &imported.design, &imported.source).unwrap();
    let reference =
        candle_core::safetensors::load(dir.join("reference.safetensors"), &device).unwrap();
    let ids = |name: &str| reference.get(name).map(|t| t.to_dtype(DType::U32).unwrap());
    let batch = Batch {
        input_ids: ids("input_ids").unwrap(),
        attention_mask: ids("attention_mask").unwrap(),
        token_type_ids: ids("token_type_ids"),
        decoder_input_ids: None,
    };
    let encoded = backbone.encode(&batch, &hooks, Mode::Eval).unwrap();
    // Padding positions differ between implementations and nobody reads them: compare real tokens only.
    let mask = reference["attention_mask"]
        .to_dtype(DType::F32)
        .unwrap()
        .unsqueeze(2)
        .unwrap();
    let ours = encoded.encoder_hidden.broadcast_mul(&mask).unwrap();
    let theirs = reference["last_hidden_state"].broadcast_mul(&mask).unwrap();
    let hidden = max_abs_diff(&ours, &theirs);
    let logits = reference.get("logits").map(|expected| {
        assert!(imported.has_head, "{adapter}: the classifier should import");
        let features = backbone.features(&batch, &hooks, Mode::Eval).unwrap();
        let w = &imported.design.tensors["head.weight"];
        let b = &imported.design.tensors["head.bias"];
        let logits = features
            .matmul(&w.t().unwrap())
            .unwrap()
            .broadcast_add(b)
            .unwrap();
        max_abs_diff(&logits, expected)
    });
    (hidden, logits)
}

#[test]
fn lora_with_rank_and_alpha_patterns_matches_peft_on_tiny_bert() {
    let (hidden, logits) = parity("tiny-bert", "lora-bert");
    eprintln!("lora-bert: hidden {hidden:e}, logits {logits:?}");
    assert!(hidden <= TOLERANCE, "hidden states differ by {hidden}");
    let logits = logits.expect("reference logits");
    assert!(logits <= TOLERANCE, "logits differ by {logits}");
}

#[test]
fn lora_on_one_layer_with_rslora_matches_peft_on_tiny_bert() {
    let (hidden, logits) = parity("tiny-bert", "lora-bert-layer1");
    eprintln!("lora-bert-layer1: hidden {hidden:e}, logits {logits:?}");
    assert!(hidden <= TOLERANCE, "hidden states differ by {hidden}");
    assert!(logits.expect("reference logits") <= TOLERANCE);
}

#[test]
fn lora_matches_peft_on_tiny_roberta() {
    let (hidden, logits) = parity("tiny-roberta", "lora-roberta");
    eprintln!("lora-roberta: hidden {hidden:e}");
    assert!(hidden <= TOLERANCE, "hidden states differ by {hidden}");
    assert!(logits.is_none());
}

/// Encoder-decoders: encoder (real tokens) and decoder hidden states against PEFT's.
fn seq2seq_parity(model: &str, adapter: &str) -> (f32, f32) {
    let device = Device::Cpu;
    let folder = ModelFolder::open(fixture(model)).unwrap();
    let registries = registries().unwrap();
    let info = folder.describe(&registries).unwrap();
    let target = peft::Target::new(&folder, &info, &registries).unwrap();
    let dir = fixture("peft").join(adapter);
    let imported = peft::import(&dir, &target, &device).unwrap();
    assert!(!imported.has_head);
    let backbone = folder.load(&registries, &device, Weights::Frozen).unwrap();
    let hooks = design_hooks(backbone.as_ref(), &imported.design, &imported.source).unwrap();
    let reference =
        candle_core::safetensors::load(dir.join("reference.safetensors"), &device).unwrap();
    let ids = |name: &str| reference[name].to_dtype(DType::U32).unwrap();
    let batch = Batch {
        input_ids: ids("input_ids"),
        attention_mask: ids("attention_mask"),
        token_type_ids: None,
        decoder_input_ids: Some(ids("decoder_input_ids")),
    };
    let encoded = backbone.encode(&batch, &hooks, Mode::Eval).unwrap();
    let mask = reference["attention_mask"]
        .to_dtype(DType::F32)
        .unwrap()
        .unsqueeze(2)
        .unwrap();
    let encoder = max_abs_diff(
        &encoded.encoder_hidden.broadcast_mul(&mask).unwrap(),
        &reference["encoder_hidden"].broadcast_mul(&mask).unwrap(),
    );
    let decoder = max_abs_diff(
        &encoded.decoder_hidden.unwrap(),
        &reference["decoder_hidden"],
    );
    let plain = backbone
        .encode(&batch, &peftspace_core::hooks::NoHooks, Mode::Eval)
        .unwrap();
    let moved = max_abs_diff(&plain.decoder_hidden.unwrap(), &reference["decoder_hidden"]);
    assert!(
        moved > 1e-2,
        "{adapter}: the adapter moves the decoder by only {moved}"
    );
    (encoder, decoder)
}

#[test]
fn lora_matches_peft_on_tiny_t5_and_bart() {
    for (model, adapter) in [("t5-tiny-gated", "lora-t5"), ("bart-tiny", "lora-bart")] {
        let (encoder, decoder) = seq2seq_parity(model, adapter);
        eprintln!("{adapter}: encoder {encoder:e}, decoder {decoder:e}");
        assert!(
            encoder <= TOLERANCE,
            "{adapter}: encoder differs by {encoder}"
        );
        assert!(
            decoder <= TOLERANCE,
            "{adapter}: decoder differs by {decoder}"
        );
    }
}

#[test]
fn the_adapter_really_changes_the_output() {
    // A parity test that passes because the adapter does nothing would prove nothing.
    let device = Device::Cpu;
    let dir = fixture("peft/lora-bert");
    let reference =
        candle_core::safetensors::load(dir.join("reference.safetensors"), &device).unwrap();
    let folder = ModelFolder::open(fixture("tiny-bert")).unwrap();
    let backbone = folder
        .load(&registries().unwrap(), &device, Weights::Frozen)
        .unwrap();
    let ids = |name: &str| reference[name].to_dtype(DType::U32).unwrap();
    let batch = Batch {
        input_ids: ids("input_ids"),
        attention_mask: ids("attention_mask"),
        token_type_ids: Some(ids("token_type_ids")),
        decoder_input_ids: None,
    };
    let plain = backbone
        .encode(&batch, &peftspace_core::hooks::NoHooks, Mode::Eval)
        .unwrap();
    let moved = max_abs_diff(
        &plain.encoder_hidden.narrow(1, 0, 3).unwrap(),
        &reference["last_hidden_state"].narrow(1, 0, 3).unwrap(),
    );
    assert!(
        moved > 1e-2,
        "the adapter moves the hidden states by only {moved}"
    );
}

// ---- bad adapters: one clear error naming the file and the tensor, exit code 2 ----

fn copy_adapter(from: &str, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(fixture("peft").join(from).join(f), to.join(f)).unwrap();
    }
}

fn encode_with(adapter: &Path, model: &str) -> (i32, String) {
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_peftspace"))
        .env_remove("PEFTSPACE_MODEL")
        .arg("--offline")
        .arg("--model")
        .arg(fixture(model))
        .args(["encode", "--ids", "2,7,3", "--adapter"])
        .arg(adapter)
        .arg("--out")
        .arg(out.path().join("h.safetensors"))
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[test]
fn encode_with_a_good_adapter_succeeds() {
    let (code, stderr) = encode_with(&fixture("peft/lora-bert"), "tiny-bert");
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn an_adapter_for_another_architecture_is_refused_naming_the_tensor() {
    // RoBERTa's LoRA names `roberta.encoder…` modules and RoBERTa's classifier; on BERT neither has a place.
    let (code, stderr) = encode_with(&fixture("peft/lora-roberta"), "tiny-bert");
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("adapter_model.safetensors"), "{stderr}");
    assert!(stderr.contains("tensor `base_model.model."), "{stderr}");
    assert!(stderr.contains("another architecture"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    // Without the head, the modules themselves are named.
    let dir = tempfile::tempdir().unwrap();
    copy_adapter("lora-roberta", dir.path());
    let path = dir.path().join("adapter_model.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    tensors.retain(|k, _| !k.contains("classifier"));
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let (code, stderr) = encode_with(dir.path(), "tiny-bert");
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("`roberta.encoder.layer.0.attention.self.query` is not a projection"),
        "{stderr}"
    );
}

#[test]
fn shape_mismatch_unknown_type_and_truncation_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Shapes: a LoRA matrix of the wrong width.
    let wrong = dir.path().join("wrong");
    copy_adapter("lora-bert", &wrong);
    let path = wrong.join("adapter_model.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let key = "base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight";
    tensors.insert(
        key.to_string(),
        Tensor::zeros((4, 31), DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let (code, stderr) = encode_with(&wrong, "tiny-bert");
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(
        stderr.contains("attention.self.query.lora_A.weight"),
        "{stderr}"
    );
    assert!(stderr.contains("[4, 31]"), "{stderr}");

    // An unknown peft_type.
    let unknown = dir.path().join("unknown");
    copy_adapter("lora-bert", &unknown);
    let config = unknown.join("adapter_config.json");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("\"LORA\"", "\"IA3\"");
    std::fs::write(&config, text).unwrap();
    let (code, stderr) = encode_with(&unknown, "tiny-bert");
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("adapter_config.json") && stderr.contains("IA3"),
        "{stderr}"
    );

    // A truncated tensor file: the first tensor cut off is named, nothing large is allocated.
    let cut = dir.path().join("cut");
    copy_adapter("lora-bert", &cut);
    let path = cut.join("adapter_model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let (code, stderr) = encode_with(&cut, "tiny-bert");
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(
        stderr.contains("truncated") && stderr.contains("tensor `"),
        "{stderr}"
    );

    // A header that claims far more bytes than the file has.
    std::fs::write(
        &path,
        [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, b'{', b'}'],
    )
    .unwrap();
    let (code, stderr) = encode_with(&cut, "tiny-bert");
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("truncated"), "{stderr}");
}
