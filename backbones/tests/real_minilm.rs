//! Real-data checks against all-MiniLM-L6-v2 from the shared folder (`PEFTSPACE_SHARED`, else `../shared`):
//! transformers' hidden states and token ids (committed in `tests/fixtures/minilm`, made by `gen_fixtures.py
//! --minilm`) and the checkpoint's parameter count.

mod common;

use candle_core::Device;
use peftspace_backbones::checkpoint::Checkpoint;
use peftspace_core::backbone::Mode;
use peftspace_core::data::Tokenize;
use peftspace_core::hooks::NoHooks;
use peftspace_core::model::{ModelFolder, Tokenizer};

use common::{fixture, load_tensors, max_abs_diff, reference_batch, shared_dir};

fn minilm_dir() -> std::path::PathBuf {
    shared_dir().join("models").join("all-MiniLM-L6-v2")
}

fn minilm_tokenizer(dir: &std::path::Path) -> Tokenizer {
    ModelFolder::open(dir)
        .and_then(|m| m.tokenizer())
        .expect("tokenizer")
}

fn read_json(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ids_of(value: &serde_json::Value) -> Vec<u32> {
    value
        .as_array()
        .expect("id list")
        .iter()
        .map(|v| v.as_u64().expect("id") as u32)
        .collect()
}

#[test]
#[ignore = "real-data: needs ../shared (PEFTSPACE_SHARED)"]
fn minilm_hidden_states_match_transformers() {
    let dir = minilm_dir();
    let reference = load_tensors(&fixture("minilm").join("reference.safetensors"));
    let model = peftspace_backbones::load(&dir, &Device::Cpu).expect("MiniLM loads");
    let batch = reference_batch(&reference);
    let hidden = model
        .encode(&batch, &NoHooks, Mode::Eval)
        .expect("forward")
        .encoder_hidden;
    let diff = max_abs_diff(&hidden, &reference["last_hidden_state"]);
    eprintln!("MiniLM: max |Δ| last hidden state {diff:.2e}");
    assert!(diff <= 1e-4, "last hidden state differs by {diff}");
    let pooled = model
        .features(&batch, &NoHooks, Mode::Eval)
        .expect("features");
    let diff = max_abs_diff(&pooled, &reference["pooler_output"]);
    assert!(diff <= 1e-4, "pooler output differs by {diff}");

    // Our tokenizer builds the same batch from the texts.
    let examples = read_json(&fixture("minilm").join("batch.json"));
    let examples: Vec<(String, Option<String>)> = examples
        .as_array()
        .expect("list")
        .iter()
        .map(|e| {
            (
                e["text"].as_str().expect("text").to_string(),
                e["pair"].as_str().map(str::to_string),
            )
        })
        .collect();
    let refs: Vec<(&str, Option<&str>)> = examples
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_deref()))
        .collect();
    let tokenizer = minilm_tokenizer(&dir);
    let ours = tokenizer.batch(&refs, 512, &Device::Cpu).expect("batch");
    assert_eq!(
        ours.input_ids.to_vec2::<u32>().expect("ids"),
        batch.input_ids.to_vec2::<u32>().expect("ids")
    );
    assert_eq!(
        ours.attention_mask.to_vec2::<u32>().expect("m"),
        batch.attention_mask.to_vec2::<u32>().expect("m")
    );
    let types = |b: &peftspace_core::backbone::Batch| {
        b.token_type_ids
            .as_ref()
            .map(|t| t.to_vec2::<u32>().expect("t"))
    };
    assert_eq!(types(&ours), types(&batch));
}

#[test]
#[ignore = "real-data: needs ../shared (PEFTSPACE_SHARED)"]
fn minilm_token_ids_match_the_fast_tokenizer() {
    let tokenizer = minilm_tokenizer(&minilm_dir());
    let expected = read_json(&fixture("minilm").join("tokens.json"));
    let texts = expected["texts"].as_array().expect("texts");
    assert!(texts.len() >= 10);
    for entry in texts {
        let text = entry["text"].as_str().expect("text");
        let ours = tokenizer.encode(text, None, 512).expect("encode");
        assert_eq!(ours.ids, ids_of(&entry["ids"]), "{text:?}");
    }
    for entry in expected["pairs"].as_array().expect("pairs") {
        let (a, b) = (
            entry["text"].as_str().expect("text"),
            entry["pair"].as_str().expect("pair"),
        );
        let ours = tokenizer.encode(a, Some(b), 512).expect("encode");
        assert_eq!(ours.ids, ids_of(&entry["ids"]), "{a:?} / {b:?}");
        assert_eq!(ours.type_ids, ids_of(&entry["type_ids"]), "{a:?} / {b:?}");
    }
    // The file pads to 128; we must not.
    assert_eq!(
        tokenizer
            .encode("Hello, world!", None, 512)
            .expect("encode")
            .ids
            .len(),
        6
    );
}

#[test]
#[ignore = "real-data: needs ../shared (PEFTSPACE_SHARED)"]
fn minilm_parameter_count_equals_the_checkpoint() {
    let dir = minilm_dir();
    let described = peftspace_backbones::describe(&dir).expect("describe");
    let scalars = Checkpoint::open(&dir)
        .expect("open")
        .float_scalars(|_| true);
    assert_eq!(described.num_params, scalars);
    let model = peftspace_backbones::load(&dir, &Device::Cpu).expect("load");
    assert_eq!(model.info(), &described);
    assert_eq!((described.hidden, described.encoder_layers), (384, 6));
}
