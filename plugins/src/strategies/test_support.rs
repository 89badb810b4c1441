//! Layer shapes and helpers shared by the strategy tests.

use candle_core::{Device, Tensor, Var};
use peftspace_core::params::ParamStore;
use peftspace_core::shapes::{
    AttentionKind, AttentionShape, LayerShape, LinearSite, NormShape, NormSite, ResidualSite,
    SiteKind, Stack,
};

/// An encoder layer shaped like BERT's: projections with biases, LayerNorms with biases.
pub fn bert_layer(index: usize, hidden: usize, heads: usize, ffn: usize) -> LayerShape {
    LayerShape::bert_encoder_layer(index, hidden, heads, ffn)
}

/// BERT-base: hidden 768, 12 heads, FFN 3072.
pub fn bert_base_layer(index: usize) -> LayerShape {
    bert_layer(index, 768, 12, 3072)
}

/// A decoder layer shaped like T5's: no biases anywhere, self- and cross-attention, RMS norms.
/// `inner` (heads × head_dim) differs from `hidden` to catch strategies that confuse the two.
pub fn t5_decoder_layer(
    index: usize,
    hidden: usize,
    heads: usize,
    head_dim: usize,
    ffn: usize,
) -> LayerShape {
    let inner = heads * head_dim;
    let lin = |kind, d_in, d_out| LinearSite {
        kind,
        d_in,
        d_out,
        has_bias: false,
    };
    let norm = |site| NormShape {
        site,
        width: hidden,
        has_bias: false,
    };
    LayerShape {
        index,
        stack: Stack::Decoder,
        hidden,
        linear: vec![
            lin(SiteKind::Query, hidden, inner),
            lin(SiteKind::Key, hidden, inner),
            lin(SiteKind::Value, hidden, inner),
            lin(SiteKind::AttnOut, inner, hidden),
            lin(SiteKind::CrossQuery, hidden, inner),
            lin(SiteKind::CrossKey, hidden, inner),
            lin(SiteKind::CrossValue, hidden, inner),
            lin(SiteKind::CrossOut, inner, hidden),
            lin(SiteKind::FfnIn, hidden, ffn),
            lin(SiteKind::FfnOut, ffn, hidden),
        ],
        attention: vec![
            AttentionShape {
                kind: AttentionKind::SelfAttention,
                heads,
                head_dim,
            },
            AttentionShape {
                kind: AttentionKind::CrossAttention,
                heads,
                head_dim,
            },
        ],
        norms: vec![
            norm(NormSite::Attention),
            norm(NormSite::CrossAttention),
            norm(NormSite::Ffn),
        ],
        residual: vec![
            ResidualSite::Attention,
            ResidualSite::CrossAttention,
            ResidualSite::Ffn,
        ],
    }
}

/// Small shapes used for the tensor-level tests (quick to run).
pub fn small_shapes() -> Vec<LayerShape> {
    vec![bert_layer(0, 16, 4, 40), t5_decoder_layer(3, 12, 2, 10, 24)]
}

/// Shapes used for the parameter-count tests.
pub fn count_shapes() -> Vec<LayerShape> {
    vec![
        bert_base_layer(0),
        bert_layer(5, 384, 12, 1536),
        t5_decoder_layer(7, 512, 8, 64, 2048),
        t5_decoder_layer(2, 12, 2, 10, 24),
    ]
}

/// A deterministic input tensor with varied values.
pub fn input(shape: &[usize], salt: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|i| ((i as f32 * 0.37 + salt).sin()) * 0.8)
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

pub fn store() -> ParamStore {
    ParamStore::new(&Device::Cpu, 7)
}

/// Largest absolute element of `a - b`.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
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

/// Sum of absolute values of a var's gradient (0 when none).
pub fn grad_mass(grads: &candle_core::backprop::GradStore, var: &Var) -> f32 {
    match grads.get(var.as_tensor()) {
        Some(g) => g
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        None => 0.0,
    }
}

/// A minimal transformer layer over frozen random weights that calls every hook the way a backbone does
/// (post-norm, BERT order), for tests of strategies working together.
pub fn synthetic_layer(
    hooks: &dyn peftspace_core::hooks::LayerHooks,
    layer: &LayerShape,
    x: &Tensor,
) -> Tensor {
    use candle_core::D;
    let i = layer.index;
    let linear = |kind: SiteKind, x: &Tensor, salt: f32| {
        let site = layer.linear_site(kind).unwrap();
        let w =
            (input(&[site.d_out, site.d_in], salt) * (1.0 / (site.d_in as f64).sqrt())).unwrap();
        let y = x.broadcast_matmul(&w.t().unwrap()).unwrap();
        hooks.linear(i, kind, x, y).unwrap()
    };
    let (batch, seq, _) = x.dims3().unwrap();
    let q = linear(SiteKind::Query, x, 0.1);
    let mut k = linear(SiteKind::Key, x, 0.2);
    let mut v = linear(SiteKind::Value, x, 0.3);
    if let Some(p) = hooks
        .prefix(i, AttentionKind::SelfAttention, batch)
        .unwrap()
    {
        k = Tensor::cat(&[&p.key, &k], 1).unwrap();
        v = Tensor::cat(&[&p.value, &v], 1).unwrap();
    }
    // One head is enough to carry gradients; the scale keeps the softmax soft.
    let scores =
        (q.matmul(&k.t().unwrap()).unwrap() * (1.0 / (layer.hidden as f64).sqrt())).unwrap();
    let max = scores.max_keepdim(D::Minus1).unwrap();
    let e = scores.broadcast_sub(&max).unwrap().exp().unwrap();
    let probs = e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap();
    let ctx = probs.matmul(&v).unwrap();
    assert_eq!(ctx.dims(), &[batch, seq, layer.hidden]);
    let attn = linear(SiteKind::AttnOut, &ctx, 0.4);
    let attn = hooks.residual(i, ResidualSite::Attention, attn).unwrap();
    let h = hooks
        .norm(i, NormSite::Attention, (x + attn).unwrap())
        .unwrap();
    let inner = linear(SiteKind::FfnIn, &h, 0.5).gelu_erf().unwrap();
    let out = linear(SiteKind::FfnOut, &inner, 0.6);
    let out = hooks.residual(i, ResidualSite::Ffn, out).unwrap();
    hooks.norm(i, NormSite::Ffn, (h + out).unwrap()).unwrap()
}
