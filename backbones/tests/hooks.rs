//! Hook sites: every site is called in every layer, a prefix really enters attention, and trainable tensors in hooks
//! receive gradients through the frozen backbone.

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor, Var};
use peftspace_backbones::bert::Bert;
use peftspace_core::backbone::{Backbone, Dropout, Mode};
use peftspace_core::hooks::{expand_rows, LayerHooks, NoHooks, Prefix};
use peftspace_core::shapes::{AttentionKind, NormSite, ResidualSite, SiteKind};
use peftspace_core::Result;

use common::{fixture, load_tensors, max_abs_diff, reference_batch};

fn tiny(name: &str) -> (Bert, peftspace_core::backbone::Batch) {
    let dir = fixture(name);
    let model = Bert::load(&dir, &Device::Cpu).expect("fixture loads");
    let batch = reference_batch(&load_tensors(&dir.join("reference.safetensors")));
    (model, batch)
}

/// Counts calls per (layer, site) and checks the shapes it is handed.
#[derive(Default)]
struct Recorder {
    calls: Mutex<BTreeMap<(usize, String), usize>>,
}

impl Recorder {
    fn note(&self, layer: usize, site: String) {
        let mut calls = self.calls.lock().expect("lock");
        *calls.entry((layer, site)).or_default() += 1;
    }
}

impl LayerHooks for Recorder {
    fn linear(&self, layer: usize, site: SiteKind, x: &Tensor, y: Tensor) -> Result<Tensor> {
        assert_eq!(
            x.dims()[..2],
            y.dims()[..2],
            "x and y share batch and sequence axes"
        );
        self.note(layer, site.short_name().to_string());
        Ok(y)
    }
    fn prefix(&self, layer: usize, kind: AttentionKind, _batch: usize) -> Result<Option<Prefix>> {
        self.note(layer, format!("{kind:?}"));
        Ok(None)
    }
    fn residual(&self, layer: usize, site: ResidualSite, h: Tensor) -> Result<Tensor> {
        self.note(layer, format!("residual {site:?}"));
        Ok(h)
    }
    fn norm(&self, layer: usize, site: NormSite, h: Tensor) -> Result<Tensor> {
        self.note(layer, format!("norm {site:?}"));
        Ok(h)
    }
}

#[test]
fn every_site_is_called_once_per_layer() {
    let (model, batch) = tiny("tiny-bert");
    let recorder = Recorder::default();
    let with = model
        .encode(&batch, &recorder, Mode::Eval)
        .expect("forward")
        .encoder_hidden;
    let without = model
        .encode(&batch, &NoHooks, Mode::Eval)
        .expect("forward")
        .encoder_hidden;
    assert_eq!(
        max_abs_diff(&with, &without),
        0.0,
        "identity hooks change nothing"
    );
    let calls = recorder.calls.lock().expect("lock");
    let sites = [
        "q",
        "k",
        "v",
        "o",
        "ffn_in",
        "ffn_out",
        "SelfAttention",
        "residual Attention",
        "residual Ffn",
        "norm Attention",
        "norm Ffn",
    ];
    for layer in 0..model.info().num_layers() {
        for site in sites {
            assert_eq!(
                calls.get(&(layer, site.to_string())),
                Some(&1),
                "layer {layer} site {site}"
            );
        }
    }
    assert_eq!(calls.len(), sites.len() * model.info().num_layers());
}

/// A prefix of trainable rows in every layer plus a LoRA-like update of the value projection in layer 0.
struct TrainableHooks {
    key: Var,
    value: Var,
    lora_a: Var,
    lora_b: Var,
}

impl TrainableHooks {
    fn new(hidden: usize, prefix_len: usize, rank: usize) -> Self {
        let dev = Device::Cpu;
        let var = |shape: (usize, usize), seed: f64| {
            let t = Tensor::arange(0f32, (shape.0 * shape.1) as f32, &dev)
                .and_then(|t| (t * seed)?.sin())
                .and_then(|t| t.reshape(shape))
                .expect("init");
            Var::from_tensor(&t).expect("var")
        };
        TrainableHooks {
            key: var((prefix_len, hidden), 0.7),
            value: var((prefix_len, hidden), 1.3),
            lora_a: var((hidden, rank), 0.3),
            lora_b: var((rank, hidden), 0.9),
        }
    }
}

impl LayerHooks for TrainableHooks {
    fn linear(&self, layer: usize, site: SiteKind, x: &Tensor, y: Tensor) -> Result<Tensor> {
        if layer == 0 && site == SiteKind::Value {
            let update = x
                .broadcast_matmul(self.lora_a.as_tensor())?
                .broadcast_matmul(self.lora_b.as_tensor())?;
            return Ok((y + (update * 0.1)?)?);
        }
        Ok(y)
    }
    fn prefix(&self, _layer: usize, _kind: AttentionKind, batch: usize) -> Result<Option<Prefix>> {
        Ok(Some(Prefix {
            key: expand_rows(self.key.as_tensor(), batch)?,
            value: expand_rows(self.value.as_tensor(), batch)?,
        }))
    }
}

fn check_gradients(name: &str) {
    let (model, batch) = tiny(name);
    let hooks = TrainableHooks::new(model.info().hidden, 3, 2);
    let plain = model
        .features(&batch, &NoHooks, Mode::Eval)
        .expect("forward");
    let dropout = Dropout::new(7);
    let pooled = model
        .features(&batch, &hooks, Mode::Train { dropout: &dropout })
        .expect("forward");
    assert!(
        max_abs_diff(&plain, &pooled) > 1e-3,
        "{name}: the hooks must change the output"
    );
    let target = Tensor::ones(pooled.dims(), DType::F32, &Device::Cpu).expect("ones");
    let loss = (pooled - target)
        .and_then(|d| d.sqr())
        .and_then(|d| d.sum_all())
        .expect("loss");
    let grads = loss.backward().expect("backward");
    for (what, var) in [
        ("prefix key", &hooks.key),
        ("prefix value", &hooks.value),
        ("lora A", &hooks.lora_a),
        ("lora B", &hooks.lora_b),
    ] {
        let g = grads
            .get(var)
            .unwrap_or_else(|| panic!("{name}: {what} has no gradient"));
        let norm = g
            .abs()
            .and_then(|g| g.sum_all())
            .and_then(|g| g.to_scalar::<f32>())
            .expect("norm");
        assert!(
            norm > 0.0 && norm.is_finite(),
            "{name}: {what} gradient is {norm}"
        );
    }
}

#[test]
fn trainable_hooks_get_gradients_through_bert() {
    check_gradients("tiny-bert");
}

#[test]
fn trainable_hooks_get_gradients_through_roberta() {
    check_gradients("tiny-roberta");
}

#[test]
fn prefix_is_attended_by_padded_rows_too() {
    // With a prefix, a padded row must still equal the same example run alone (padding stays masked, the prefix
    // does not).
    let (model, batch) = tiny("tiny-bert");
    let hooks = TrainableHooks::new(model.info().hidden, 2, 1);
    let full = model
        .encode(&batch, &hooks, Mode::Eval)
        .expect("forward")
        .encoder_hidden;
    let mask = batch.attention_mask.to_vec2::<u32>().expect("mask");
    let n = mask[0].iter().filter(|&&m| m == 1).count();
    let alone = peftspace_core::backbone::Batch {
        input_ids: batch
            .input_ids
            .narrow(0, 0, 1)
            .and_then(|t| t.narrow(1, 0, n))
            .expect("ids"),
        attention_mask: batch
            .attention_mask
            .narrow(0, 0, 1)
            .and_then(|t| t.narrow(1, 0, n))
            .expect("mask"),
        token_type_ids: batch.token_type_ids.as_ref().map(|t| {
            t.narrow(0, 0, 1)
                .and_then(|t| t.narrow(1, 0, n))
                .expect("types")
        }),
        decoder_input_ids: None,
    };
    let single = model
        .encode(&alone, &hooks, Mode::Eval)
        .expect("forward")
        .encoder_hidden;
    let row = full
        .narrow(0, 0, 1)
        .and_then(|t| t.narrow(1, 0, n))
        .expect("row");
    assert!(max_abs_diff(&single, &row) <= 1e-4);
}

#[test]
fn dropout_is_seeded_and_off_in_eval() {
    let (model, batch) = tiny("tiny-bert");
    let run = |seed| {
        let dropout = Dropout::new(seed);
        model
            .encode(&batch, &NoHooks, Mode::Train { dropout: &dropout })
            .expect("forward")
            .encoder_hidden
    };
    let eval = model
        .encode(&batch, &NoHooks, Mode::Eval)
        .expect("forward")
        .encoder_hidden;
    assert_eq!(max_abs_diff(&run(1), &run(1)), 0.0, "same seed, same masks");
    assert!(
        max_abs_diff(&run(1), &run(2)) > 0.0,
        "different seeds differ"
    );
    assert!(
        max_abs_diff(&run(1), &eval) > 0.0,
        "training applies dropout"
    );
}
