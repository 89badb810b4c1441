//! BART layers and stacks (post-norm, biased projections), following transformers' `modeling_bart.py`.

use candle_core::Tensor;
use candle_nn::VarBuilder;
use peftspace_core::backbone::Mode;
use peftspace_core::hooks::LayerHooks;
use peftspace_core::shapes::{AttentionKind, NormSite, ResidualSite, SiteKind, Stack};
use peftspace_core::{Error, Result};

use super::config::{Config, LAYER_NORM_EPS, POSITION_OFFSET};
use crate::ops::{Activation, LayerNorm, Linear};
use crate::seq2seq::attention::{AttentionBlock, AttentionContext};
use crate::seq2seq::{embed, project, LayerStack, StackInput};

/// Loads `self_attn` or `encoder_attn`: `q_proj`, `k_proj`, `v_proj`, `out_proj` with biases, scores scaled by
/// `head_dim^-0.5`.
fn load_attention(
    vb: VarBuilder,
    d: usize,
    heads: usize,
    kind: AttentionKind,
) -> candle_core::Result<AttentionBlock> {
    let head_dim = d / heads;
    Ok(AttentionBlock {
        q: Linear::load(vb.pp("q_proj"), d, d, true)?,
        k: Linear::load(vb.pp("k_proj"), d, d, true)?,
        v: Linear::load(vb.pp("v_proj"), d, d, true)?,
        o: Linear::load(vb.pp("out_proj"), d, d, true)?,
        heads,
        head_dim,
        kind,
        scale: (head_dim as f64).powf(-0.5),
    })
}

/// An encoder or decoder layer: `LN(h + dropout(sub(h)))` for self-attention, cross-attention (decoder) and FFN.
#[derive(Debug, Clone)]
struct Layer {
    self_attention: AttentionBlock,
    self_norm: LayerNorm,
    cross: Option<(AttentionBlock, LayerNorm)>,
    fc1: Linear,
    fc2: Linear,
    final_norm: LayerNorm,
}

impl Layer {
    fn load(
        vb: VarBuilder,
        d: usize,
        heads: usize,
        ffn: usize,
        stack: Stack,
    ) -> candle_core::Result<Self> {
        let cross = if stack == Stack::Decoder {
            Some((
                load_attention(
                    vb.pp("encoder_attn"),
                    d,
                    heads,
                    AttentionKind::CrossAttention,
                )?,
                LayerNorm::load(vb.pp("encoder_attn_layer_norm"), d, LAYER_NORM_EPS)?,
            ))
        } else {
            None
        };
        Ok(Layer {
            self_attention: load_attention(
                vb.pp("self_attn"),
                d,
                heads,
                AttentionKind::SelfAttention,
            )?,
            self_norm: LayerNorm::load(vb.pp("self_attn_layer_norm"), d, LAYER_NORM_EPS)?,
            cross,
            fc1: Linear::load(vb.pp("fc1"), d, ffn, true)?,
            fc2: Linear::load(vb.pp("fc2"), ffn, d, true)?,
            final_norm: LayerNorm::load(vb.pp("final_layer_norm"), d, LAYER_NORM_EPS)?,
        })
    }
}

/// Dropout probabilities of a stack.
#[derive(Debug, Clone, Copy)]
struct Dropouts {
    hidden: f64,
    attention: f64,
    activation: f64,
}

/// `BartEncoder` or `BartDecoder`.
#[derive(Debug, Clone)]
pub struct BartStack {
    embed_tokens: Tensor,
    embed_scale: f64,
    positions: Tensor,
    layernorm_embedding: LayerNorm,
    layers: Vec<Layer>,
    activation: Activation,
    dropouts: Dropouts,
    first_layer: usize,
}

impl LayerStack for BartStack {
    type Config = Config;

    fn load(
        vb: VarBuilder,
        cfg: &Config,
        embed_tokens: Tensor,
        stack: Stack,
        first_layer: usize,
    ) -> candle_core::Result<Self> {
        let d = cfg.d_model;
        let (n, heads, ffn) = match stack {
            Stack::Encoder => (
                cfg.encoder_layers,
                cfg.encoder_attention_heads,
                cfg.encoder_ffn_dim,
            ),
            Stack::Decoder => (
                cfg.decoder_layers,
                cfg.decoder_attention_heads,
                cfg.decoder_ffn_dim,
            ),
        };
        let layers = (0..n)
            .map(|i| Layer::load(vb.pp(format!("layers.{i}")), d, heads, ffn, stack))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(BartStack {
            embed_tokens,
            embed_scale: cfg.embed_scale(),
            positions: vb.get(
                (cfg.max_position_embeddings + POSITION_OFFSET, d),
                "embed_positions.weight",
            )?,
            layernorm_embedding: LayerNorm::load(vb.pp("layernorm_embedding"), d, LAYER_NORM_EPS)?,
            layers,
            activation: cfg.activation().map_err(candle_core::Error::Msg)?,
            dropouts: Dropouts {
                hidden: cfg.dropout,
                attention: cfg.attention_dropout,
                activation: cfg.activation_dropout,
            },
            first_layer,
        })
    }

    fn forward(
        &self,
        mut input: StackInput<'_>,
        hooks: &dyn LayerHooks,
        mode: Mode<'_>,
    ) -> Result<Tensor> {
        input.check_cache(self.layers.len())?;
        let Dropouts {
            hidden: p,
            attention: pa,
            activation: pf,
        } = self.dropouts;
        let mut tokens = embed(&self.embed_tokens, input.ids)?;
        if self.embed_scale != 1.0 {
            tokens = (tokens * self.embed_scale)?;
        }
        let len = tokens.dim(1)?;
        let max = self.positions.dim(0)? - POSITION_OFFSET;
        // A decoding step's tokens sit at `offset ..`, after the cached ones.
        let end = input.offset + len;
        if end > max {
            return Err(Error::msg(format!(
                "sequence of {end} tokens is longer than the model's {max} learned positions; truncate the input"
            )));
        }
        let positions = self
            .positions
            .narrow(0, POSITION_OFFSET + input.offset, len)?;
        let h = tokens.broadcast_add(&positions)?;
        let mut h = mode.dropout(&self.layernorm_embedding.forward_t(&h)?, p)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let index = self.first_layer + i;
            let mut cache = input.cache.as_deref_mut().map(|layers| &mut layers[i]);
            let context = AttentionContext {
                memory: None,
                bias: &input.mask_bias,
                cache: cache.as_mut().map(|c| &mut c.self_attention),
            };
            let out = layer
                .self_attention
                .forward(&h, context, index, hooks, mode, pa)?;
            let out = hooks.residual(index, ResidualSite::Attention, mode.dropout(&out, p)?)?;
            h = hooks.norm(
                index,
                NormSite::Attention,
                layer.self_norm.forward_t(&(h + out)?)?,
            )?;
            if let (Some((attention, norm)), Some((memory, memory_bias))) =
                (&layer.cross, &input.memory)
            {
                let context = AttentionContext {
                    memory: Some(*memory),
                    bias: memory_bias,
                    cache: cache.as_mut().map(|c| &mut c.cross_attention),
                };
                let out = attention.forward(&h, context, index, hooks, mode, pa)?;
                let out =
                    hooks.residual(index, ResidualSite::CrossAttention, mode.dropout(&out, p)?)?;
                h = hooks.norm(
                    index,
                    NormSite::CrossAttention,
                    norm.forward_t(&(h + out)?)?,
                )?;
            }
            let f =
                self.activation
                    .apply(&project(hooks, index, SiteKind::FfnIn, &layer.fc1, &h)?)?;
            let f = mode.dropout(&f, pf)?;
            let f = project(hooks, index, SiteKind::FfnOut, &layer.fc2, &f)?;
            let f = hooks.residual(index, ResidualSite::Ffn, mode.dropout(&f, p)?)?;
            h = hooks.norm(index, NormSite::Ffn, layer.final_norm.forward_t(&(h + f)?)?)?;
        }
        Ok(h)
    }
}

/// The differentiable layer norm under a name that does not clash with `candle_core::Module`.
trait NormForward {
    fn forward_t(&self, x: &Tensor) -> Result<Tensor>;
}

impl NormForward for LayerNorm {
    fn forward_t(&self, x: &Tensor) -> Result<Tensor> {
        Ok(crate::ops::layer_norm(
            x,
            &self.weight,
            Some(&self.bias),
            self.eps,
        )?)
    }
}
