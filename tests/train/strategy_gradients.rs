//! Every trainable variable of every built-in strategy, alone and all four combined, receives a non-zero gradient
//! through real backbones (tiny random BERT, T5 gated-GELU and BART checkpoints): the hook sites are wired and no
//! operation on the path cuts the graph. And the gradient is the right one: for every variable its largest element
//! equals a central finite difference of the probe loss (a non-zero but wrong gradient — a missing scale in a
//! hand-written backward such as the fused attention's, a transposed product — fails here; to see it fail, scale
//! any gradient returned by `backbones/src/ops/fused.rs`'s `bwd` by 1.1).

use std::path::{Path, PathBuf};

use candle_core::Device;
use peftspace_core::backbone::Weights;
use peftspace_core::model::ModelFolder;
use peftspace_core::registry::registries;
use peftspace_core::train::probe::{design_gradients, every_layer, finite_difference_check};

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
    let folder = ModelFolder::open(fixture(model)).expect("fixture opens");
    let backbone = folder
        .load(&registries().expect("registries"), &device, Weights::Frozen)
        .expect("fixture loads");
    let tokenizer = folder.tokenizer().expect("tokenizer");
    let plan = every_layer(backbone.as_ref(), strategies);
    let gradients = design_gradients(backbone.as_ref(), &tokenizer, &plan, 11)
        .unwrap_or_else(|e| panic!("{model} {strategies:?}: {e}"));
    assert!(!gradients.is_empty(), "{model} {strategies:?}");
    for (name, g) in gradients {
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
    let checked = finite_difference_check(backbone.as_ref(), &tokenizer, &plan, 11, 1e-2)
        .unwrap_or_else(|e| panic!("{model} {strategies:?}: {e}"));
    for (name, analytic, numeric) in checked {
        // f32 throughout: a step of 1e-2 keeps the rounding of the loss (≈ 1e-7 relative) well below the tolerance.
        let tolerance = 0.03 * analytic.abs().max(numeric.abs()) + 2e-3;
        assert!(
            (analytic - numeric).abs() <= tolerance,
            "{model} {strategies:?}: {name}: backward {analytic}, finite difference {numeric}"
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
