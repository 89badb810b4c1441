//! The tiny random BERT and RoBERTa of `tests/fixtures` against transformers' outputs on a padded batch of two
//! (a single text and a pair), and our tokenizer against transformers' fast tokenizer.

mod common;

use candle_core::{DType, Device};
use peftspace_backbones::bert::Bert;
use peftspace_core::backbone::{Backbone, Mode};
use peftspace_core::data::Tokenize;
use peftspace_core::hooks::NoHooks;
use peftspace_core::model::{ModelFolder, Tokenizer};

use common::{fixture, load_tensors, max_abs_diff, reference_batch};

const TOLERANCE: f32 = 1e-4;

/// The examples `gen_fixtures.py` encodes.
const EXAMPLES: [(&str, Option<&str>); 2] = [
    ("the cat sat on the mat", None),
    ("a dog runs", Some("the dog is fast !")),
];

fn check_parity(name: &str) {
    let dir = fixture(name);
    let reference = load_tensors(&dir.join("reference.safetensors"));
    let model = Bert::load(&dir, &Device::Cpu).expect("fixture loads");
    let batch = reference_batch(&reference);
    let hidden = model
        .encode(&batch, &NoHooks, Mode::Eval)
        .expect("forward")
        .encoder_hidden;
    let diff = max_abs_diff(&hidden, &reference["last_hidden_state"]);
    eprintln!("{name}: max |Δ| last hidden state {diff:.2e}");
    assert!(
        diff <= TOLERANCE,
        "{name}: last hidden state differs from transformers by {diff}"
    );
    let pooled = model
        .features(&batch, &NoHooks, Mode::Eval)
        .expect("features");
    assert!(model.has_pooler());
    let diff = max_abs_diff(&pooled, &reference["pooler_output"]);
    assert!(
        diff <= TOLERANCE,
        "{name}: pooler output differs from transformers by {diff}"
    );
    // The padded row is really padded, so the mask was exercised.
    let mask = batch.attention_mask.to_vec2::<u32>().expect("mask");
    assert!(
        mask[0].contains(&0),
        "{name}: the reference batch should pad its first row"
    );
}

#[test]
fn tiny_bert_matches_transformers() {
    check_parity("tiny-bert");
}

#[test]
fn tiny_roberta_matches_transformers() {
    check_parity("tiny-roberta");
}

fn check_tokenizer(name: &str) {
    let dir = fixture(name);
    let reference = load_tensors(&dir.join("reference.safetensors"));
    let expected = reference_batch(&reference);
    let model = Bert::load(&dir, &Device::Cpu).expect("fixture loads");
    // The fixture's tokenizer.json pads to 24 and truncates (tiny-bert): both must be overridden.
    let tokenizer =
        Tokenizer::from_file(&dir.join("tokenizer.json"), Some(model.config().pad_id()))
            .expect("tokenizer");
    let batch = tokenizer.batch(&EXAMPLES, 64, &Device::Cpu).expect("batch");
    let ids = |t: &candle_core::Tensor| {
        t.to_dtype(DType::U32)
            .and_then(|t| t.to_vec2::<u32>())
            .expect("ids")
    };
    assert_eq!(
        ids(&batch.input_ids),
        ids(&expected.input_ids),
        "{name}: token ids"
    );
    assert_eq!(
        ids(&batch.attention_mask),
        ids(&expected.attention_mask),
        "{name}: attention mask"
    );
    if let Some(types) = &expected.token_type_ids {
        let ours = batch.token_type_ids.as_ref().expect("token type ids");
        assert_eq!(ids(ours), ids(types), "{name}: token type ids");
    }
    // Our batch through the model gives transformers' output too.
    let hidden = model
        .encode(&batch, &NoHooks, Mode::Eval)
        .expect("forward")
        .encoder_hidden;
    let diff = max_abs_diff(&hidden, &reference["last_hidden_state"]);
    assert!(diff <= TOLERANCE, "{name}: {diff}");
}

#[test]
fn tiny_bert_tokenizer_matches_transformers() {
    check_tokenizer("tiny-bert");
}

#[test]
fn tiny_roberta_tokenizer_matches_transformers() {
    check_tokenizer("tiny-roberta");
}

#[test]
fn truncation_keeps_the_special_tokens() {
    let tokenizer = ModelFolder::open(fixture("tiny-bert"))
        .and_then(|m| m.tokenizer())
        .expect("tokenizer");
    let tokens = tokenizer
        .encode("the cat sat on the mat", None, 5)
        .expect("encode");
    assert_eq!(tokens.ids.len(), 5);
    let cls = tokenizer.inner().token_to_id("[CLS]").expect("[CLS]");
    let sep = tokenizer.inner().token_to_id("[SEP]").expect("[SEP]");
    assert_eq!((tokens.ids[0], tokens.ids[4]), (cls, sep));
    let pair = tokenizer
        .encode("the cat sat on the mat", Some("a dog runs"), 5)
        .expect("encode pair");
    assert_eq!(pair.ids.len(), 5);
}

#[test]
fn padding_does_not_change_real_tokens() {
    let dir = fixture("tiny-roberta");
    let model = Bert::load(&dir, &Device::Cpu).expect("fixture loads");
    let tokenizer =
        Tokenizer::from_file(&dir.join("tokenizer.json"), Some(model.config().pad_id()))
            .expect("tokenizer");
    let alone = tokenizer
        .batch(&EXAMPLES[..1], 64, &Device::Cpu)
        .expect("batch");
    let padded = tokenizer.batch(&EXAMPLES, 64, &Device::Cpu).expect("batch");
    let n = alone.input_ids.dim(1).expect("seq");
    assert!(
        padded.input_ids.dim(1).expect("seq") > n,
        "the first example must be padded in the pair batch"
    );
    let a = model
        .encode(&alone, &NoHooks, Mode::Eval)
        .expect("forward")
        .encoder_hidden;
    let p = model
        .encode(&padded, &NoHooks, Mode::Eval)
        .expect("forward")
        .encoder_hidden;
    let p = p
        .narrow(0, 0, 1)
        .and_then(|t| t.narrow(1, 0, n))
        .expect("slice");
    assert!(max_abs_diff(&a, &p) <= TOLERANCE);
}

#[test]
fn describe_agrees_with_the_loaded_weights() {
    for name in ["tiny-bert", "tiny-roberta"] {
        let dir = fixture(name);
        let described = peftspace_backbones::describe(&dir).expect("describe");
        let model = peftspace_backbones::load(&dir, &Device::Cpu).expect("load");
        assert_eq!(&described, model.info(), "{name}");
        let checkpoint = peftspace_backbones::checkpoint::Checkpoint::open(&dir).expect("open");
        assert_eq!(
            checkpoint.float_scalars(|_| true),
            described.num_params,
            "{name}"
        );
    }
}
