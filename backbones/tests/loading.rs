//! Loading model folders: clear errors for broken folders, and the layouts real checkpoints come in (prefixed names,
//! shards, half precision).

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use peftspace_core::backbone::Mode;
use peftspace_core::hooks::NoHooks;
use peftspace_core::model::{WEIGHTS_FILE, WEIGHTS_INDEX_FILE};

use common::{load_tensors, max_abs_diff, reference_batch, scratch_copy};

fn load_error(dir: &Path) -> String {
    match peftspace_backbones::load(dir, &Device::Cpu) {
        Ok(_) => panic!("{} should not load", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn weights(dir: &Path) -> HashMap<String, Tensor> {
    load_tensors(&dir.join(WEIGHTS_FILE))
}

fn save(tensors: &HashMap<String, Tensor>, path: &Path) {
    candle_core::safetensors::save(tensors, path).expect("write safetensors");
}

/// The model's output on the reference batch.
fn reference_output(dir: &Path) -> (Tensor, Tensor) {
    let reference = load_tensors(&dir.join("reference.safetensors"));
    let model = peftspace_backbones::load(dir, &Device::Cpu).expect("loads");
    let hidden = model
        .encode(&reference_batch(&reference), &NoHooks, Mode::Eval)
        .expect("forward")
        .encoder_hidden;
    (hidden, reference["last_hidden_state"].clone())
}

#[test]
fn missing_config_names_the_file() {
    let dir = scratch_copy("tiny-bert");
    std::fs::remove_file(dir.path().join("config.json")).expect("rm");
    let e = load_error(dir.path());
    assert!(
        e.contains(&dir.path().join("config.json").display().to_string()),
        "{e}"
    );
}

#[test]
fn missing_weights_name_the_file() {
    let dir = scratch_copy("tiny-bert");
    std::fs::remove_file(dir.path().join(WEIGHTS_FILE)).expect("rm");
    let e = load_error(dir.path());
    assert!(
        e.contains(&dir.path().join(WEIGHTS_FILE).display().to_string()),
        "{e}"
    );
    assert!(e.contains(WEIGHTS_INDEX_FILE), "{e}");
}

#[test]
fn unknown_model_type_lists_the_known_ones() {
    let dir = scratch_copy("tiny-bert");
    let path = dir.path().join("config.json");
    let text = std::fs::read_to_string(&path)
        .expect("read")
        .replace("\"bert\"", "\"gpt9\"");
    std::fs::write(&path, text).expect("write");
    let e = load_error(dir.path());
    assert!(
        e.contains("gpt9") && e.contains("bert") && e.contains("roberta"),
        "{e}"
    );
    assert!(e.contains(&path.display().to_string()), "{e}");
    let e = peftspace_backbones::describe(dir.path())
        .expect_err("describe refuses too")
        .to_string();
    assert!(e.contains("gpt9"), "{e}");
}

#[test]
fn missing_tensor_is_named() {
    let dir = scratch_copy("tiny-bert");
    let mut tensors = weights(dir.path());
    tensors
        .remove("encoder.layer.1.output.dense.weight")
        .expect("present in the fixture");
    save(&tensors, &dir.path().join(WEIGHTS_FILE));
    let e = load_error(dir.path());
    assert!(
        e.contains("encoder.layer.1.output.dense.weight") && e.contains("missing"),
        "{e}"
    );
}

#[test]
fn wrong_shape_names_the_tensor_and_both_shapes() {
    let dir = scratch_copy("tiny-bert");
    let path = dir.path().join("config.json");
    let text = std::fs::read_to_string(&path)
        .expect("read")
        .replace("\"intermediate_size\": 48", "\"intermediate_size\": 64");
    std::fs::write(&path, text).expect("write");
    let e = load_error(dir.path());
    assert!(
        e.contains("encoder.layer.0.intermediate.dense.weight"),
        "{e}"
    );
    assert!(e.contains("[48, 32]") && e.contains("[64, 32]"), "{e}");
}

#[test]
fn truncated_weights_are_reported_as_truncated() {
    let dir = scratch_copy("tiny-bert");
    let path = dir.path().join(WEIGHTS_FILE);
    let bytes = std::fs::read(&path).expect("read");
    for keep in [bytes.len() - 100, 1000, 5] {
        std::fs::write(&path, &bytes[..keep]).expect("write");
        let e = load_error(dir.path());
        assert!(
            e.contains("truncated") && e.contains(&path.display().to_string()),
            "{keep} bytes: {e}"
        );
    }
}

#[test]
fn prefixed_task_checkpoint_loads_the_same_encoder() {
    for (name, prefix, head) in [
        ("tiny-bert", "bert", "cls.predictions.bias"),
        ("tiny-roberta", "roberta", "lm_head.bias"),
    ] {
        let dir = scratch_copy(name);
        let mut renamed: HashMap<String, Tensor> = weights(dir.path())
            .into_iter()
            .map(|(k, v)| (format!("{prefix}.{k}"), v))
            .collect();
        renamed.insert(
            head.to_string(),
            Tensor::zeros(7, DType::F32, &Device::Cpu).expect("zeros"),
        );
        save(&renamed, &dir.path().join(WEIGHTS_FILE));
        let (ours, theirs) = reference_output(dir.path());
        assert!(max_abs_diff(&ours, &theirs) <= 1e-4, "{name}");
    }
}

#[test]
fn sharded_checkpoint_with_index_loads() {
    let dir = scratch_copy("tiny-roberta");
    let tensors = weights(dir.path());
    std::fs::remove_file(dir.path().join(WEIGHTS_FILE)).expect("rm");
    let mut shards: [HashMap<String, Tensor>; 2] = [HashMap::new(), HashMap::new()];
    let mut map = serde_json::Map::new();
    for (name, t) in tensors {
        let shard = usize::from(name.starts_with("encoder.layer.1"));
        let file = format!("model-0000{}-of-00002.safetensors", shard + 1);
        map.insert(name.clone(), serde_json::Value::String(file));
        shards[shard].insert(name, t);
    }
    for (i, shard) in shards.iter().enumerate() {
        save(
            shard,
            &dir.path()
                .join(format!("model-0000{}-of-00002.safetensors", i + 1)),
        );
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": map });
    std::fs::write(dir.path().join(WEIGHTS_INDEX_FILE), index.to_string()).expect("index");
    let (ours, theirs) = reference_output(dir.path());
    assert!(max_abs_diff(&ours, &theirs) <= 1e-4);

    // A shard the index names but the folder lacks is named in the error.
    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).expect("rm");
    let e = load_error(dir.path());
    assert!(
        e.contains("model-00002-of-00002.safetensors") && e.contains(WEIGHTS_INDEX_FILE),
        "{e}"
    );
}

#[test]
fn half_precision_weights_are_converted_to_f32() {
    for dtype in [DType::F16, DType::BF16] {
        let dir = scratch_copy("tiny-bert");
        let half: HashMap<String, Tensor> = weights(dir.path())
            .into_iter()
            .map(|(k, v)| (k, v.to_dtype(dtype).expect("cast")))
            .collect();
        // The same rounded values stored as f32: loading the half-precision file must give exactly this model
        // (a conversion that lost or scaled anything fails here; the loose bound below alone would not see it).
        let rounded_dir = scratch_copy("tiny-bert");
        let rounded: HashMap<String, Tensor> = half
            .iter()
            .map(|(k, v)| (k.clone(), v.to_dtype(DType::F32).expect("cast")))
            .collect();
        save(&rounded, &rounded_dir.path().join(WEIGHTS_FILE));
        save(&half, &dir.path().join(WEIGHTS_FILE));
        let (ours, theirs) = reference_output(dir.path());
        assert_eq!(ours.dtype(), DType::F32);
        let (from_rounded, _) = reference_output(rounded_dir.path());
        let exact = max_abs_diff(&ours, &from_rounded);
        assert!(
            exact <= 1e-6,
            "{dtype:?}: {exact} from the same values in f32"
        );
        // Rounding the weights moves the output a little, not a lot.
        let diff = max_abs_diff(&ours, &theirs);
        assert!(diff > 0.0 && diff < 0.25, "{dtype:?}: {diff}");
    }
}

#[test]
fn too_long_input_is_an_error_not_a_panic() {
    let dir = common::fixture("tiny-bert");
    let model = peftspace_backbones::load(&dir, &Device::Cpu).expect("loads");
    let ids = Tensor::ones((1, 41), DType::U32, &Device::Cpu).expect("ids");
    let batch = peftspace_core::backbone::Batch {
        input_ids: ids.clone(),
        attention_mask: ids,
        token_type_ids: None,
        decoder_input_ids: None,
    };
    let e = model
        .encode(&batch, &NoHooks, Mode::Eval)
        .expect_err("40 positions only")
        .to_string();
    assert!(e.contains("41 tokens"), "{e}");
}
