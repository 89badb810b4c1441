//! Every trainable variable of every built-in strategy, alone and all four combined, receives a non-zero gradient
//! through real backbones (tiny random BERT, T5 gated-GELU and BART checkpoints): the hook sites are wired and no
//! operation on the path cuts the graph.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use peftspace_core::backbone::Mode;
use peftspace_core::budget::LayerAssignment;
use peftspace_core::model::ModelFolder;
use peftspace_core::params::ParamStore;
use peftspace_core::spec::TrainingSpec;
use peftspace_core::train::build_design;

// The built-in strategies and backbones register through `inventory`: name the crates so they are linked.
use peftspace_backbones as _;
use peftspace_plugins as _;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Sizes small enough for the tiny models; BitFit ignores its size.
const SIZES: [(&str, usize); 4] = [("adapter", 2), ("prefix", 2), ("lora", 2), ("bitfit", 1)];

fn check(model: &str, strategies: &[(&str, usize)]) {
    let device = Device::Cpu;
    let dir = fixture(model);
    let backbone = peftspace_backbones::load(&dir, &device).expect("fixture loads");
    let info = backbone.info().clone();
    let plan: Vec<LayerAssignment> = (0..info.num_layers())
        .map(|layer| LayerAssignment {
            layer,
            strategies: strategies
                .iter()
                .map(|(n, s)| (n.to_string(), *s))
                .collect(),
        })
        .collect();
    let mut store = ParamStore::new(&device, 11);
    let built = build_design(&info, &plan, &[], &TrainingSpec::default(), &mut store)
        .expect("design builds");
    assert_eq!(
        built.trainable_params,
        store.num_scalars(),
        "{model} {strategies:?}"
    );
    // LoRA's A only gets a gradient once B is non-zero (true of LoRA itself); move every variable off its
    // initial value so each one's gradient is informative.
    for (_, var) in store.named_vars() {
        let moved = (var.as_tensor() + 0.05).expect("shift");
        var.set(&moved).expect("set");
    }
    let tokenizer = ModelFolder::open(&dir)
        .and_then(|m| m.tokenizer())
        .expect("tokenizer");
    let batch = tokenizer
        .batch(&[("hello world", None), ("the cat sat", None)], 16, &device)
        .expect("batch");
    let features = backbone
        .features(&batch, &built.hooks, Mode::Eval)
        .expect("forward");
    let weights = Tensor::arange(0f32, features.dim(1).unwrap() as f32, &device).unwrap();
    let loss = features
        .broadcast_mul(&(weights / 7.0).unwrap().sin().unwrap())
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = loss.backward().expect("backward");
    for (name, var) in store.named_vars() {
        let g = grads
            .get(var)
            .unwrap_or_else(|| panic!("{model} {strategies:?}: no gradient for {name}"));
        let size = g
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            size > 0.0,
            "{model} {strategies:?}: zero gradient for {name}"
        );
    }
}

#[test]
fn each_strategy_alone_and_all_four_get_gradients_through_tiny_bert() {
    for s in SIZES {
        check("tiny-bert", &[s]);
    }
    check("tiny-bert", &SIZES);
}

#[test]
fn each_strategy_alone_and_all_four_get_gradients_through_tiny_t5() {
    for s in SIZES {
        check("t5-tiny-gated", &[s]);
    }
    check("t5-tiny-gated", &SIZES);
}

#[test]
fn all_four_get_gradients_through_tiny_bart() {
    check("bart-tiny", &SIZES);
}
