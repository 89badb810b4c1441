//! Gradients through the encoder-decoder hook sites: a LoRA-like update on a cross-attention projection, prefixes in
//! a decoder self-attention and a cross-attention, and BitFit-like biases that T5 lacks (added by the `norm` and
//! `linear` hooks). Every trainable `Var` must get a non-zero gradient that agrees with a finite difference.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor, Var};
use peftspace_backbones::bart::Bart;
use peftspace_backbones::t5::T5;
use peftspace_core::backbone::{Backbone, Batch, Mode};
use peftspace_core::hooks::{add_bias, expand_rows, LayerHooks, NoHooks, Prefix};
use peftspace_core::params::ParamStore;
use peftspace_core::shapes::{AttentionKind, NormSite, SiteKind};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

fn batch(name: &str) -> Batch {
    let r =
        candle_core::safetensors::load(fixture(name).join("reference.safetensors"), &Device::Cpu)
            .unwrap();
    Batch {
        input_ids: r["input_ids"].to_dtype(DType::U32).unwrap(),
        attention_mask: r["attention_mask"].to_dtype(DType::U32).unwrap(),
        token_type_ids: None,
        decoder_input_ids: None,
    }
}

/// Small PEFT modules written for this test only; each stays on the activation path.
struct TestHooks {
    /// `y + (x Aᵀ) Bᵀ` on one linear site.
    lora: (usize, SiteKind, Var, Var),
    /// Key/value rows prepended in one attention block.
    prefixes: Vec<(usize, AttentionKind, Var, Var)>,
    /// A bias added after one norm (BitFit on a model whose norm has no bias).
    norm_bias: (usize, NormSite, Var),
    /// A bias added after one projection that has none.
    linear_bias: (usize, SiteKind, Var),
}

impl LayerHooks for TestHooks {
    fn linear(
        &self,
        layer: usize,
        site: SiteKind,
        x: &Tensor,
        y: Tensor,
    ) -> peftspace_core::Result<Tensor> {
        let mut y = y;
        let (l, s, a, b) = &self.lora;
        if (layer, site) == (*l, *s) {
            let update = x
                .broadcast_matmul(&a.as_tensor().t()?)?
                .broadcast_matmul(&b.as_tensor().t()?)?;
            y = (y + update)?;
        }
        let (l, s, bias) = &self.linear_bias;
        if (layer, site) == (*l, *s) {
            y = add_bias(&y, bias.as_tensor())?;
        }
        Ok(y)
    }

    fn prefix(
        &self,
        layer: usize,
        kind: AttentionKind,
        batch: usize,
    ) -> peftspace_core::Result<Option<Prefix>> {
        for (l, k, key, value) in &self.prefixes {
            if (layer, kind) == (*l, *k) {
                return Ok(Some(Prefix {
                    key: expand_rows(key.as_tensor(), batch)?,
                    value: expand_rows(value.as_tensor(), batch)?,
                }));
            }
        }
        Ok(None)
    }

    fn norm(&self, layer: usize, site: NormSite, h: Tensor) -> peftspace_core::Result<Tensor> {
        let (l, s, bias) = &self.norm_bias;
        if (layer, site) == (*l, *s) {
            return add_bias(&h, bias.as_tensor());
        }
        Ok(h)
    }
}

/// Builds the hooks from the model's own shapes: LoRA on the cross-attention value projection of the first decoder
/// layer, a prefix in the second decoder layer's self-attention and one in the last decoder layer's
/// cross-attention, a norm bias in encoder layer 0, a bias on the FFN output of the last decoder layer.
fn build_hooks(model: &dyn Backbone, store: &mut ParamStore, zero_updates: bool) -> TestHooks {
    let info = model.info();
    let first_dec = info.encoder_layers;
    let last = info.num_layers() - 1;
    let layer = &info.layers[first_dec];
    let site = *layer.linear_site(SiteKind::CrossValue).unwrap();
    let rank = 2;
    let a = store.normal("lora.a", &[rank, site.d_in], 0.5).unwrap();
    let b = if zero_updates {
        store.zeros("lora.b", &[site.d_out, rank]).unwrap()
    } else {
        store.normal("lora.b", &[site.d_out, rank], 0.5).unwrap()
    };
    let self_inner = info.layers[first_dec + 1]
        .attention_shape(AttentionKind::SelfAttention)
        .unwrap()
        .inner_dim();
    let cross_inner = info.layers[last]
        .attention_shape(AttentionKind::CrossAttention)
        .unwrap()
        .inner_dim();
    let prefixes = vec![
        (
            first_dec + 1,
            AttentionKind::SelfAttention,
            store
                .normal("prefix.self.key", &[3, self_inner], 0.5)
                .unwrap(),
            store
                .normal("prefix.self.value", &[3, self_inner], 0.5)
                .unwrap(),
        ),
        (
            last,
            AttentionKind::CrossAttention,
            store
                .normal("prefix.cross.key", &[2, cross_inner], 0.5)
                .unwrap(),
            store
                .normal("prefix.cross.value", &[2, cross_inner], 0.5)
                .unwrap(),
        ),
    ];
    let hidden = info.hidden;
    let out = info.layers[last]
        .linear_site(SiteKind::FfnOut)
        .unwrap()
        .d_out;
    TestHooks {
        lora: (first_dec, SiteKind::CrossValue, a, b),
        prefixes,
        norm_bias: (
            0,
            NormSite::Ffn,
            store.zeros("bitfit.norm", &[hidden]).unwrap(),
        ),
        linear_bias: (
            last,
            SiteKind::FfnOut,
            store.zeros("bitfit.ffn_out", &[out]).unwrap(),
        ),
    }
}

/// A fixed, non-trivial read-out of the EOS features, so that every direction matters.
fn loss(model: &dyn Backbone, batch: &Batch, hooks: &dyn LayerHooks) -> Tensor {
    let features = model.features(batch, hooks, Mode::Eval).unwrap();
    let (rows, width) = features.dims2().unwrap();
    let weights: Vec<f32> = (0..rows * width)
        .map(|i| ((i as f32) * 0.37).sin())
        .collect();
    let weights = Tensor::from_vec(weights, (rows, width), &Device::Cpu).unwrap();
    (features * weights).unwrap().sum_all().unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

fn check_gradients(model: &dyn Backbone, name: &str) {
    let batch = batch(name);
    let mut store = ParamStore::new(&Device::Cpu, 11);
    let hooks = build_hooks(model, &mut store, false);
    let grads = loss(model, &batch, &hooks).backward().unwrap();
    for (var_name, var) in store.named_vars() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name}: `{var_name}` has no gradient"));
        let flat: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
        let (index, analytic) = flat
            .iter()
            .copied()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
            .unwrap();
        assert!(
            analytic.abs() > 0.0,
            "{name}: `{var_name}` has an all-zero gradient"
        );
        // Central finite difference on the element with the largest gradient.
        let original = var.as_tensor().copy().unwrap();
        let shape = original.dims().to_vec();
        let values: Vec<f32> = original.flatten_all().unwrap().to_vec1().unwrap();
        let step = 1e-2f32;
        let at = |delta: f32| {
            let mut v = values.clone();
            v[index] += delta;
            var.set(&Tensor::from_vec(v, shape.as_slice(), &Device::Cpu).unwrap())
                .unwrap();
            scalar(&loss(model, &batch, &hooks))
        };
        let numeric = (at(step) - at(-step)) / (2.0 * step as f64);
        var.set(&original).unwrap();
        let analytic = analytic as f64;
        let err = (numeric - analytic).abs() / analytic.abs().max(numeric.abs());
        println!("{name}: {var_name}[{index}] analytic {analytic:.6} numeric {numeric:.6} rel err {err:.2e}");
        assert!(
            err < 1e-2,
            "{name}: `{var_name}` gradient {analytic} vs finite difference {numeric}"
        );
    }
}

fn check_zero_updates_are_neutral(model: &dyn Backbone, name: &str) {
    let batch = batch(name);
    let mut store = ParamStore::new(&Device::Cpu, 5);
    let mut hooks = build_hooks(model, &mut store, true);
    hooks.prefixes.clear();
    let plain = model.encode(&batch, &NoHooks, Mode::Eval).unwrap();
    let hooked = model.encode(&batch, &hooks, Mode::Eval).unwrap();
    for (a, b) in [
        (&plain.encoder_hidden, &hooked.encoder_hidden),
        (
            plain.decoder_hidden.as_ref().unwrap(),
            hooked.decoder_hidden.as_ref().unwrap(),
        ),
    ] {
        let d = scalar(
            &(a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_keepdim(0)
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap(),
        );
        assert_eq!(
            d, 0.0,
            "{name}: zero-initialised LoRA B and biases must leave the output unchanged"
        );
    }
}

#[test]
fn t5_gated_gradients_reach_every_trainable_var() {
    let model = T5::load(&fixture("t5-tiny-gated"), &Device::Cpu).unwrap();
    check_gradients(&model, "t5-tiny-gated");
}

#[test]
fn bart_gradients_reach_every_trainable_var() {
    let model = Bart::load(&fixture("bart-tiny"), &Device::Cpu).unwrap();
    check_gradients(&model, "bart-tiny");
}

#[test]
fn zero_initialised_updates_leave_outputs_unchanged() {
    let t5 = T5::load(&fixture("t5-tiny-relu"), &Device::Cpu).unwrap();
    check_zero_updates_are_neutral(&t5, "t5-tiny-relu");
    let bart = Bart::load(&fixture("bart-tiny"), &Device::Cpu).unwrap();
    check_zero_updates_are_neutral(&bart, "bart-tiny");
}

#[test]
fn prefix_changes_decoder_but_not_encoder_and_bad_width_is_an_error() {
    let model = T5::load(&fixture("t5-tiny-relu"), &Device::Cpu).unwrap();
    let batch = batch("t5-tiny-relu");
    let mut store = ParamStore::new(&Device::Cpu, 3);
    let mut hooks = build_hooks(&model, &mut store, true);
    let plain = model.encode(&batch, &NoHooks, Mode::Eval).unwrap();
    let hooked = model.encode(&batch, &hooks, Mode::Eval).unwrap();
    let enc = scalar(
        &(&plain.encoder_hidden - &hooked.encoder_hidden)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap(),
    );
    let dec = (plain.decoder_hidden.unwrap() - hooked.decoder_hidden.unwrap()).unwrap();
    let dec = scalar(&dec.abs().unwrap().sum_all().unwrap());
    assert_eq!(enc, 0.0, "decoder prefixes must not touch the encoder");
    assert!(
        dec > 1e-3,
        "decoder prefixes must change the decoder output"
    );
    // A prefix of the wrong width fails with a message naming the expected shape.
    let wrong = store.zeros("prefix.wrong", &[2, 5]).unwrap();
    hooks.prefixes = vec![(0, AttentionKind::SelfAttention, wrong.clone(), wrong)];
    let err = model
        .encode(&batch, &hooks, Mode::Eval)
        .unwrap_err()
        .to_string();
    assert!(err.contains("prefix key has shape"), "{err}");
}
