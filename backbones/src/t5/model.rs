//! T5 blocks and stacks (pre-norm with T5's RMS norm, no biases), following transformers' `modeling_t5.py`.

use candle_core::Tensor;
use candle_nn::VarBuilder;
use peftspace_core::backbone::Mode;
use peftspace_core::hooks::LayerHooks;
use peftspace_core::shapes::{AttentionKind, NormSite, ResidualSite, SiteKind, Stack};
use peftspace_core::Result;

use super::attention::{load_attention, load_position_table, position_bias};
use super::config::{Config, FeedForward};
use crate::ops::{rms_norm, Linear};
use crate::seq2seq::attention::{AttentionBlock, AttentionContext};
use crate::seq2seq::{embed, project, LayerStack, StackInput};

/// `DenseReluDense`: `wi` (or gated `wi_0`·`wi_1`), activation, `wo`.
#[derive(Debug, Clone)]
struct FeedForwardBlock {
    wi: Linear,
    gate: Option<Linear>,
    wo: Linear,
    kind: FeedForward,
}

impl FeedForwardBlock {
    fn load(vb: VarBuilder, cfg: &Config, kind: FeedForward) -> candle_core::Result<Self> {
        let (d, dff) = (cfg.d_model, cfg.d_ff);
        let (wi, gate) = if kind.gated {
            (
                Linear::load(vb.pp("wi_0"), d, dff, false)?,
                Some(Linear::load(vb.pp("wi_1"), d, dff, false)?),
            )
        } else {
            (Linear::load(vb.pp("wi"), d, dff, false)?, None)
        };
        Ok(FeedForwardBlock {
            wi,
            gate,
            wo: Linear::load(vb.pp("wo"), dff, d, false)?,
            kind,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        layer: usize,
        hooks: &dyn LayerHooks,
        mode: Mode<'_>,
        p: f64,
    ) -> Result<Tensor> {
        let mut h =
            self.kind
                .activation
                .apply(&project(hooks, layer, SiteKind::FfnIn, &self.wi, x)?)?;
        if let Some(gate) = &self.gate {
            h = (h * project(hooks, layer, SiteKind::FfnGate, gate, x)?)?;
        }
        let h = mode.dropout(&h, p)?;
        project(hooks, layer, SiteKind::FfnOut, &self.wo, &h)
    }
}

/// One `T5Block`: self-attention, cross-attention (decoder), FFN; each as `h + dropout(sub(norm(h)))`.
#[derive(Debug, Clone)]
struct Block {
    self_norm: Tensor,
    self_attention: AttentionBlock,
    cross: Option<(Tensor, AttentionBlock)>,
    ffn_norm: Tensor,
    ffn: FeedForwardBlock,
}

impl Block {
    fn load(
        vb: VarBuilder,
        cfg: &Config,
        stack: Stack,
        ff: FeedForward,
    ) -> candle_core::Result<Self> {
        let d = cfg.d_model;
        let self_vb = vb.pp("layer.0");
        let self_norm = self_vb.get(d, "layer_norm.weight")?;
        let self_attention = load_attention(
            self_vb.pp("SelfAttention"),
            cfg,
            AttentionKind::SelfAttention,
        )?;
        let (cross, ffn_index) = if stack == Stack::Decoder {
            let cvb = vb.pp("layer.1");
            let norm = cvb.get(d, "layer_norm.weight")?;
            let attn = load_attention(
                cvb.pp("EncDecAttention"),
                cfg,
                AttentionKind::CrossAttention,
            )?;
            (Some((norm, attn)), 2)
        } else {
            (None, 1)
        };
        let ffn_vb = vb.pp(format!("layer.{ffn_index}"));
        Ok(Block {
            self_norm,
            self_attention,
            cross,
            ffn_norm: ffn_vb.get(d, "layer_norm.weight")?,
            ffn: FeedForwardBlock::load(ffn_vb.pp("DenseReluDense"), cfg, ff)?,
        })
    }
}

/// An encoder or decoder `T5Stack`.
#[derive(Debug, Clone)]
pub struct T5Stack {
    embed_tokens: Tensor,
    position_table: Tensor,
    blocks: Vec<Block>,
    final_norm: Tensor,
    /// Global index of the first layer (0 for the encoder, `num_layers` for the decoder).
    first_layer: usize,
    stack: Stack,
    eps: f64,
    dropout: f64,
    cfg: Config,
}

impl LayerStack for T5Stack {
    type Config = Config;

    fn load(
        vb: VarBuilder,
        cfg: &Config,
        embed_tokens: Tensor,
        stack: Stack,
        first_layer: usize,
    ) -> candle_core::Result<Self> {
        let ff = cfg.feed_forward().map_err(candle_core::Error::Msg)?;
        let n = match stack {
            Stack::Encoder => cfg.num_layers,
            Stack::Decoder => cfg.decoder_layers(),
        };
        let blocks = (0..n)
            .map(|i| Block::load(vb.pp(format!("block.{i}")), cfg, stack, ff))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(T5Stack {
            embed_tokens,
            position_table: load_position_table(vb.pp("block.0.layer.0.SelfAttention"), cfg)?,
            blocks,
            final_norm: vb.get(cfg.d_model, "final_layer_norm.weight")?,
            first_layer,
            stack,
            eps: cfg.layer_norm_epsilon,
            dropout: cfg.dropout_rate,
            cfg: cfg.clone(),
        })
    }

    fn forward(
        &self,
        mut input: StackInput<'_>,
        hooks: &dyn LayerHooks,
        mode: Mode<'_>,
    ) -> Result<Tensor> {
        input.check_cache(self.blocks.len())?;
        let p = self.dropout;
        let mut h = mode.dropout(&embed(&self.embed_tokens, input.ids)?, p)?;
        let len = h.dim(1)?;
        // Computed once by the first layer and shared by all layers of the stack, as in T5; in a decoding step the
        // new queries sit at `offset ..` and see every key from position 0.
        let bidirectional = self.stack == Stack::Encoder;
        let positions = position_bias(
            &self.position_table,
            input.offset,
            len,
            input.offset + len,
            bidirectional,
            &self.cfg,
        )?;
        let self_bias = positions.broadcast_add(&input.mask_bias)?;
        for (i, block) in self.blocks.iter().enumerate() {
            let layer = self.first_layer + i;
            let mut cache = input.cache.as_deref_mut().map(|layers| &mut layers[i]);
            let normed = hooks.norm(
                layer,
                NormSite::Attention,
                rms_norm(&h, &block.self_norm, self.eps)?,
            )?;
            let context = AttentionContext {
                memory: None,
                bias: &self_bias,
                cache: cache.as_mut().map(|c| &mut c.self_attention),
            };
            let out = block
                .self_attention
                .forward(&normed, context, layer, hooks, mode, p)?;
            let out = hooks.residual(layer, ResidualSite::Attention, mode.dropout(&out, p)?)?;
            h = (h + out)?;
            if let (Some((norm, attention)), Some((memory, memory_bias))) =
                (&block.cross, &input.memory)
            {
                let normed = hooks.norm(
                    layer,
                    NormSite::CrossAttention,
                    rms_norm(&h, norm, self.eps)?,
                )?;
                let context = AttentionContext {
                    memory: Some(*memory),
                    bias: memory_bias,
                    cache: cache.as_mut().map(|c| &mut c.cross_attention),
                };
                let out = attention.forward(&normed, context, layer, hooks, mode, p)?;
                let out =
                    hooks.residual(layer, ResidualSite::CrossAttention, mode.dropout(&out, p)?)?;
                h = (h + out)?;
            }
            let normed = hooks.norm(
                layer,
                NormSite::Ffn,
                rms_norm(&h, &block.ffn_norm, self.eps)?,
            )?;
            let out = block.ffn.forward(&normed, layer, hooks, mode, p)?;
            let out = hooks.residual(layer, ResidualSite::Ffn, mode.dropout(&out, p)?)?;
            h = (h + out)?;
        }
        mode.dropout(&rms_norm(&h, &self.final_norm, self.eps)?, p)
    }
}
