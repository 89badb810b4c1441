//! The BERT/RoBERTa layers, bottom up: embeddings, self-attention, feed-forward, encoder layer, the whole model.
//!
//! Post-LN as in the original: `h = LayerNorm(x + Dropout(SubLayer(x)))`. Every hook site of the architecture guide
//! is called here; with [`peftspace_core::hooks::NoHooks`] the output equals transformers' `BertModel` /
//! `RobertaModel` in eval mode.

use candle_core::{DType, Device, IndexOp, Module, Tensor, Var};
use candle_nn::VarBuilder;

use peftspace_core::backbone::{Backbone, Batch, Encoded, Mode, Weights};
use peftspace_core::hooks::LayerHooks;
use peftspace_core::shapes::{AttentionKind, BackboneInfo, NormSite, ResidualSite, SiteKind};
use peftspace_core::{Error, Result};

use super::config::{BertConfig, Flavour};
use crate::checkpoint::Checkpoint;
use crate::ops::attention::attention;
use crate::ops::{Activation, LayerNorm, Linear};

/// Word + position + token-type embeddings, then LayerNorm and dropout.
struct Embeddings {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    norm: LayerNorm,
    dropout: f64,
    flavour: Flavour,
    pad_id: u32,
    position_offset: usize,
}

impl Embeddings {
    fn load(vb: VarBuilder, cfg: &BertConfig, flavour: Flavour) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Embeddings {
            word: vb.get((cfg.vocab_size, h), "word_embeddings.weight")?,
            position: vb.get(
                (cfg.max_position_embeddings, h),
                "position_embeddings.weight",
            )?,
            token_type: vb.get((cfg.type_vocab_size, h), "token_type_embeddings.weight")?,
            norm: LayerNorm::load(vb.pp("LayerNorm"), h, cfg.layer_norm_eps)?,
            dropout: cfg.hidden_dropout_prob,
            flavour,
            pad_id: cfg.pad_id(),
            position_offset: cfg.position_offset(),
        })
    }

    /// Position ids, row after row: 0.. for BERT; for RoBERTa, transformers' rule: real tokens count up from
    /// `padding_idx + 1`, padding tokens sit at `padding_idx`.
    fn position_ids(&self, ids: &[Vec<u32>]) -> Vec<u32> {
        let mut positions = Vec::with_capacity(ids.len() * ids.first().map_or(0, Vec::len));
        for row in ids {
            let mut next = self.position_offset as u32;
            for &id in row {
                if self.flavour == Flavour::Roberta && id == self.pad_id {
                    positions.push(self.pad_id);
                } else {
                    positions.push(next);
                    next += 1;
                }
            }
        }
        positions
    }

    fn forward(&self, batch: &Batch, mode: Mode<'_>) -> Result<Tensor> {
        let (b, s) = batch.input_ids.dims2()?;
        let h = self.word.dim(1)?;
        let input_ids = batch.input_ids.to_dtype(DType::U32)?;
        let ids = input_ids.to_vec2::<u32>()?;
        let vocab = self.word.dim(0)?;
        if let Some(bad) = ids.iter().flatten().find(|&&id| id as usize >= vocab) {
            return Err(Error::msg(format!(
                "token id {bad} is outside the vocabulary (size {vocab})"
            )));
        }
        let positions = self.position_ids(&ids);
        let max_position = positions.iter().copied().max().unwrap_or(0) as usize;
        let table = self.position.dim(0)?;
        if max_position >= table {
            return Err(Error::msg(format!(
                "sequence of {s} tokens is longer than the model allows ({} positions); truncate the input",
                table - self.position_offset
            )));
        }
        let flat = |t: &Tensor| t.flatten_all();
        let positions = Tensor::from_vec(positions, b * s, batch.input_ids.device())?;
        let words = self.word.index_select(&flat(&input_ids)?, 0)?;
        let positions = self.position.index_select(&positions, 0)?;
        let mut x = (words + positions)?;
        let types = self.token_type.dim(0)?;
        x = match &batch.token_type_ids {
            // A single-row table (RoBERTa) is added to every token, whatever ids a tokenizer produced.
            Some(tt) if types > 1 => {
                let tt = &tt.to_dtype(DType::U32)?;
                let max_type = tt.flatten_all()?.max(0)?.to_scalar::<u32>()? as usize;
                if max_type >= types {
                    return Err(Error::msg(format!(
                        "token type id {max_type} is outside the model's {types} token types"
                    )));
                }
                (x + self.token_type.index_select(&flat(tt)?, 0)?)?
            }
            _ => x.broadcast_add(&self.token_type.i(0)?)?,
        };
        let x = self.norm.forward(&x.reshape((b, s, h))?)?;
        mode.dropout(&x, self.dropout)
    }
}

/// Multi-head self-attention with its output projection, residual and LayerNorm (`attention.self` +
/// `attention.output`).
struct Attention {
    query: Linear,
    key: Linear,
    value: Linear,
    output: Linear,
    norm: LayerNorm,
    heads: usize,
    head_dim: usize,
    attention_dropout: f64,
    hidden_dropout: f64,
}

impl Attention {
    fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        let this = vb.pp("self");
        let out = vb.pp("output");
        Ok(Attention {
            query: Linear::load(this.pp("query"), h, h, true)?,
            key: Linear::load(this.pp("key"), h, h, true)?,
            value: Linear::load(this.pp("value"), h, h, true)?,
            output: Linear::load(out.pp("dense"), h, h, true)?,
            norm: LayerNorm::load(out.pp("LayerNorm"), h, cfg.layer_norm_eps)?,
            heads: cfg.num_attention_heads,
            head_dim: cfg.head_dim(),
            attention_dropout: cfg.attention_probs_dropout_prob,
            hidden_dropout: cfg.hidden_dropout_prob,
        })
    }

    fn forward(
        &self,
        layer: usize,
        x: &Tensor,
        mask: &Tensor,
        hooks: &dyn LayerHooks,
        mode: Mode<'_>,
    ) -> Result<Tensor> {
        let (b, _, h) = x.dims3()?;
        let q = hooks.linear(layer, SiteKind::Query, x, self.query.forward(x)?)?;
        let mut k = hooks.linear(layer, SiteKind::Key, x, self.key.forward(x)?)?;
        let mut v = hooks.linear(layer, SiteKind::Value, x, self.value.forward(x)?)?;
        let mut mask = mask.clone();
        if let Some(prefix) = hooks.prefix(layer, AttentionKind::SelfAttention, b)? {
            let p = prefix.len()?;
            for (what, t) in [("key", &prefix.key), ("value", &prefix.value)] {
                if t.dims() != [b, p, h] {
                    return Err(Error::msg(format!(
                        "layer {layer}: prefix {what} has shape {:?}, expected [{b}, {p}, {h}]",
                        t.dims()
                    )));
                }
            }
            k = Tensor::cat(&[&prefix.key.to_dtype(k.dtype())?, &k], 1)?;
            v = Tensor::cat(&[&prefix.value.to_dtype(v.dtype())?, &v], 1)?;
            // Prefix positions are attended by every query, padded batch rows included.
            mask = Tensor::cat(
                &[&Tensor::ones((b, p), mask.dtype(), mask.device())?, &mask],
                1,
            )?;
        }
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let context = attention(
            &q,
            &k,
            &v,
            &mask,
            self.heads,
            scale,
            self.attention_dropout,
            mode,
        )?;
        let out = hooks.linear(
            layer,
            SiteKind::AttnOut,
            &context,
            self.output.forward(&context)?,
        )?;
        let out = mode.dropout(&out, self.hidden_dropout)?;
        let out = hooks.residual(layer, ResidualSite::Attention, out)?;
        let h = self.norm.forward(&(out + x)?)?;
        hooks.norm(layer, NormSite::Attention, h)
    }
}

/// The position-wise feed-forward block with residual and LayerNorm (`intermediate` + `output`).
struct FeedForward {
    up: Linear,
    down: Linear,
    norm: LayerNorm,
    activation: Activation,
    dropout: f64,
}

impl FeedForward {
    fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(FeedForward {
            up: Linear::load(vb.pp("intermediate").pp("dense"), h, i, true)?,
            down: Linear::load(vb.pp("output").pp("dense"), i, h, true)?,
            norm: LayerNorm::load(vb.pp("output").pp("LayerNorm"), h, cfg.layer_norm_eps)?,
            activation: cfg.activation()?,
            dropout: cfg.hidden_dropout_prob,
        })
    }

    fn forward(
        &self,
        layer: usize,
        x: &Tensor,
        hooks: &dyn LayerHooks,
        mode: Mode<'_>,
    ) -> Result<Tensor> {
        let up = hooks.linear(layer, SiteKind::FfnIn, x, self.up.forward(x)?)?;
        let act = self.activation.apply(&up)?;
        let out = hooks.linear(layer, SiteKind::FfnOut, &act, self.down.forward(&act)?)?;
        let out = mode.dropout(&out, self.dropout)?;
        let out = hooks.residual(layer, ResidualSite::Ffn, out)?;
        let h = self.norm.forward(&(out + x)?)?;
        hooks.norm(layer, NormSite::Ffn, h)
    }
}

/// One encoder layer (`encoder.layer.N`).
struct Layer {
    attention: Attention,
    ffn: FeedForward,
}

impl Layer {
    fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        Ok(Layer {
            attention: Attention::load(vb.pp("attention"), cfg)?,
            ffn: FeedForward::load(vb.clone(), cfg)?,
        })
    }
}

/// A loaded BERT or RoBERTa encoder. Its weights are plain tensors (frozen), or `Var`s when loaded with
/// [`Weights::Trainable`].
pub struct Bert {
    config: BertConfig,
    info: BackboneInfo,
    device: Device,
    embeddings: Embeddings,
    layers: Vec<Layer>,
    pooler: Option<Linear>,
    trainable: Vec<Var>,
}

impl Bert {
    /// Builds the model from a parsed config and opened weights. Tensor names may carry the `bert.` / `roberta.`
    /// prefix of task checkpoints or not; heads outside the encoder (`cls.*`, `lm_head.*`, `classifier.*`) are
    /// ignored. The pooler is used when the weights have one. `weights` decides whether they load frozen or as
    /// `Var`s.
    pub fn from_checkpoint(
        config: BertConfig,
        checkpoint: &Checkpoint,
        device: &Device,
        weights: Weights,
    ) -> Result<Bert> {
        let flavour = config.flavour().ok_or_else(|| {
            Error::msg(format!(
                "model_type `{}` is not BERT or RoBERTa",
                config.model_type
            ))
        })?;
        let prefix = flavour.checkpoint_prefix();
        let (mut vb, trainable) = checkpoint.var_builder_for(device, weights);
        let mut pooler_name = "pooler.dense.weight".to_string();
        if !checkpoint.contains("embeddings.word_embeddings.weight")
            && checkpoint.has_prefix(prefix)
        {
            vb = vb.pp(prefix);
            pooler_name = format!("{prefix}.{pooler_name}");
        }
        let h = config.hidden_size;
        let embeddings = Embeddings::load(vb.pp("embeddings"), &config, flavour)?;
        let layers = (0..config.num_hidden_layers)
            .map(|l| Layer::load(vb.pp("encoder").pp("layer").pp(l), &config))
            .collect::<Result<Vec<_>>>()?;
        let pooler = if checkpoint.contains(&pooler_name) {
            Some(Linear::load(vb.pp("pooler").pp("dense"), h, h, true)?)
        } else {
            None
        };
        let info = config.info(pooler.is_some());
        Ok(Bert {
            config,
            info,
            device: device.clone(),
            embeddings,
            layers,
            pooler,
            trainable: trainable.vars(),
        })
    }

    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Whether the checkpoint had a pooler (then [`Backbone::features`] is `tanh(W·CLS + b)`, else CLS).
    pub fn has_pooler(&self) -> bool {
        self.pooler.is_some()
    }

    fn check_batch(&self, batch: &Batch) -> Result<(usize, usize)> {
        let (b, s) = batch.input_ids.dims2()?;
        if b == 0 || s == 0 {
            return Err(Error::msg(format!("empty batch ({b} rows of {s} tokens)")));
        }
        let same = |t: &Tensor| t.dims() == [b, s];
        if !same(&batch.attention_mask) {
            return Err(Error::msg(format!(
                "attention_mask has shape {:?}, input_ids {:?}",
                batch.attention_mask.dims(),
                [b, s]
            )));
        }
        if let Some(tt) = &batch.token_type_ids {
            if !same(tt) {
                return Err(Error::msg(format!(
                    "token_type_ids has shape {:?}, input_ids {:?}",
                    tt.dims(),
                    [b, s]
                )));
            }
        }
        Ok((b, s))
    }

    /// `[batch, hidden]`: the pooled first token (`[CLS]` / `<s>`) of encoder output `hidden`.
    pub fn pool(&self, hidden: &Tensor) -> Result<Tensor> {
        let cls = hidden.i((.., 0, ..))?.contiguous()?;
        match &self.pooler {
            Some(dense) => Ok(dense.forward(&cls)?.tanh()?),
            None => Ok(cls),
        }
    }
}

impl Backbone for Bert {
    fn info(&self) -> &BackboneInfo {
        &self.info
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn encode(&self, batch: &Batch, hooks: &dyn LayerHooks, mode: Mode<'_>) -> Result<Encoded> {
        self.check_batch(batch)?;
        let mask = batch.attention_mask.to_dtype(DType::U32)?;
        let mut h = self.embeddings.forward(batch, mode)?;
        for (index, layer) in self.layers.iter().enumerate() {
            let _span = tracing::trace_span!("bert_layer", index).entered();
            h = layer.attention.forward(index, &h, &mask, hooks, mode)?;
            h = layer.ffn.forward(index, &h, hooks, mode)?;
        }
        Ok(Encoded {
            encoder_hidden: h,
            decoder_hidden: None,
        })
    }

    fn features(&self, batch: &Batch, hooks: &dyn LayerHooks, mode: Mode<'_>) -> Result<Tensor> {
        let encoded = self.encode(batch, hooks, mode)?;
        self.pool(&encoded.encoder_hidden)
    }

    fn trainable_weights(&self) -> Vec<Var> {
        self.trainable.clone()
    }

    /// The position table's rows minus RoBERTa's offset (`padding_idx + 1`; 0 for BERT).
    fn max_positions(&self) -> Option<usize> {
        Some(self.config.max_sequence_len())
    }
}
