//! Exact parameter counts of the registered strategies on BERT-base shapes (from the hand-written
//! `tests/fixtures/configs/bert-base-uncased/config.json`), against numbers computed by hand.

use std::path::Path;

use peftspace_core::model::ModelFolder;
use peftspace_core::registry::registries;
use peftspace_core::shapes::BackboneInfo;

// Link the crates whose `inventory` entries the registries collect.
use peftspace_backbones as _;
use peftspace_plugins as _;

fn bert_base() -> BackboneInfo {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/configs/bert-base-uncased");
    ModelFolder::open(&dir)
        .and_then(|m| m.describe(&registries().expect("registries")))
        .expect("describe bert-base")
}

fn count(strategy: &str, options: &str, size: usize) -> usize {
    let options: ron::Value = if options.is_empty() {
        ron::Value::Unit
    } else {
        ron::from_str(options).expect("options")
    };
    let s = registries()
        .unwrap()
        .strategy(strategy, &options)
        .expect("registered strategy");
    let info = bert_base();
    let counts: Vec<usize> = info.layers.iter().map(|l| s.params(l, size)).collect();
    assert!(
        counts.iter().all(|&c| c == counts[0]),
        "every BERT-base layer has the same shape: {counts:?}"
    );
    counts[0]
}

#[test]
fn bert_base_shapes() {
    let info = bert_base();
    assert_eq!(info.num_layers(), 12);
    assert_eq!(info.hidden, 768);
    // Embeddings 30522·768 + 512·768 + 2·768 + LN 2·768 = 23,837,184; per layer 4·(768·768+768) + 768·3072+3072
    // + 3072·768+768 + 2·2·768 = 7,087,872, ×12 = 85,054,464; pooler 768·768+768 = 590,592. Total 109,482,240.
    assert_eq!(info.num_params, 109_482_240);
}

#[test]
fn lora_counts() {
    // Default targets q and v: rank · (768 + 768) per target.
    assert_eq!(count("lora", "", 1), 3_072);
    assert_eq!(count("lora", "", 8), 24_576);
}

#[test]
fn adapter_counts() {
    // Houlsby (after attention and after FFN): per site down 768·r + r, up r·768 + 768.
    assert_eq!(count("adapter", "", 1), 2 * (768 + 1 + 768 + 768));
    assert_eq!(count("adapter", "", 64), 198_272);
}

#[test]
fn prefix_counts() {
    // Key and value rows of width 12·64 = 768 per prefix position, no reparameterisation.
    assert_eq!(count("prefix", "", 1), 1_536);
    assert_eq!(count("prefix", "", 10), 15_360);
}

#[test]
fn bitfit_counts() {
    // Biases of q, k, v, o (4·768), FFN in (3072) and out (768), and of the two layer norms (2·768).
    assert_eq!(count("bitfit", "", 1), 8_448);
    assert_eq!(count("bitfit", "", 99), 8_448, "BitFit's size is fixed");
}
