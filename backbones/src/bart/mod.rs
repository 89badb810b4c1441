//! BART (Lewis et al., 2020, "BART: Denoising Sequence-to-Sequence Pre-training for Natural Language Generation,
//! Translation, and Comprehension"), following transformers' `modeling_bart.py`.
//!
//! - Post-norm layers (`LN(h + sub(h))`) with biased projections; `layernorm_embedding` after the embeddings of each
//!   stack; learned positions with an offset of 2 rows; token embeddings × `sqrt(d_model)` when `scale_embedding`.
//! - Embeddings: `shared.weight` (or `model.shared.weight` in task checkpoints; `encoder.embed_tokens.weight` as a
//!   fallback); an LM head or `final_logits_bias` in the checkpoint is ignored.
//! - The FFN activation comes from `activation_function`.
//! - Global layers: encoder layers `0..encoder_layers`, then decoder layers.

pub mod config;
mod model;

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use peftspace_core::backbone::{ArchitectureEntry, Backbone, Batch, Encoded, Mode, Weights};
use peftspace_core::hooks::LayerHooks;
use peftspace_core::shapes::BackboneInfo;
use peftspace_core::{Error, Result};

use crate::seq2seq::attention::{causal_bias, padding_bias};
use crate::seq2seq::{
    decoder_ids, first_present, model_error, open_weights_for, read_config, root_prefix,
};
pub use config::Config;
use model::{Stack, StackInput};

/// A BART encoder-decoder with hook sites; frozen, or trainable (every weight a `Var`).
pub struct Bart {
    cfg: Config,
    info: BackboneInfo,
    device: Device,
    encoder: Stack,
    decoder: Stack,
    trainable: Vec<Var>,
}

impl Bart {
    /// Loads `config.json` and `model.safetensors` from a Hugging Face folder.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        Self::load_with(dir, device, Weights::Frozen)
    }

    /// [`Self::load`] with frozen or trainable weights.
    pub fn load_with(dir: &Path, device: &Device, weights: Weights) -> Result<Self> {
        let cfg = read_config(dir, Config::from_json)?;
        let info = cfg.describe().map_err(|message| Error::Model {
            path: dir.join("config.json"),
            message,
        })?;
        let (vb, trainable) = open_weights_for(dir, device, weights)?;
        // `BartModel` saves without a prefix, `BartForConditionalGeneration` / `…ForSequenceClassification` under
        // `model.`.
        let root = root_prefix(
            &vb,
            "encoder.layers.0.self_attn.q_proj.weight",
            &["", "model."],
        )
        .ok_or_else(|| {
            model_error(
                dir,
                "no BART encoder found (expected `encoder.layers.0.self_attn.q_proj.weight`)",
            )
        })?;
        let (vocab, d) = (cfg.vocab_size, cfg.d_model);
        let encoder_embed = first_present(
            &vb,
            &[
                format!("{root}shared.weight"),
                format!("{root}encoder.embed_tokens.weight"),
                format!("{root}decoder.embed_tokens.weight"),
            ],
            vocab,
            d,
        )
        .map_err(|e| model_error(dir, e))?;
        let decoder_embed = first_present(
            &vb,
            &[format!("{root}decoder.embed_tokens.weight")],
            vocab,
            d,
        )
        .unwrap_or_else(|_| encoder_embed.clone());
        let vb = if root.is_empty() {
            vb
        } else {
            vb.pp(root.trim_end_matches('.'))
        };
        let encoder = Stack::load(vb.pp("encoder"), &cfg, encoder_embed, false, 0)
            .map_err(|e| model_error(dir, e))?;
        let decoder = Stack::load(
            vb.pp("decoder"),
            &cfg,
            decoder_embed,
            true,
            cfg.encoder_layers,
        )
        .map_err(|e| model_error(dir, e))?;
        Ok(Bart {
            cfg,
            info,
            device: device.clone(),
            encoder,
            decoder,
            trainable: trainable.vars(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }
}

impl Backbone for Bart {
    fn info(&self) -> &BackboneInfo {
        &self.info
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn encode(&self, batch: &Batch, hooks: &dyn LayerHooks, mode: Mode<'_>) -> Result<Encoded> {
        let decoder_input = decoder_ids(batch, self.cfg.decoder_start_id())?;
        let padding = padding_bias(&batch.attention_mask, DType::F32)?;
        let encoder_hidden = self.encoder.forward(
            StackInput {
                ids: &batch.input_ids,
                mask_bias: padding.clone(),
                memory: None,
            },
            hooks,
            mode,
        )?;
        // transformers' default: the decoder self-attention is causal only (no decoder padding mask).
        let causal = causal_bias(decoder_input.dim(1)?, DType::F32, &self.device)?;
        let decoder_hidden = self.decoder.forward(
            StackInput {
                ids: &decoder_input,
                mask_bias: causal,
                memory: Some((&encoder_hidden, padding)),
            },
            hooks,
            mode,
        )?;
        Ok(Encoded {
            encoder_hidden,
            decoder_hidden: Some(decoder_hidden),
        })
    }

    fn features(&self, batch: &Batch, hooks: &dyn LayerHooks, mode: Mode<'_>) -> Result<Tensor> {
        crate::seq2seq::eos_features(self.encode(batch, hooks, mode)?, batch, self.cfg.eos_id())
    }

    fn trainable_weights(&self) -> Vec<Var> {
        self.trainable.clone()
    }

    /// The learned position table's rows (without BART's offset of 2).
    fn max_positions(&self) -> Option<usize> {
        Some(self.cfg.max_position_embeddings)
    }
}

fn describe(config_json: &str) -> Result<BackboneInfo> {
    Config::from_json(config_json)
        .and_then(|c| c.describe())
        .map_err(crate::checkpoint::config_error)
}

fn load(dir: &Path, device: &Device) -> Result<Box<dyn Backbone>> {
    Ok(Box::new(Bart::load(dir, device)?))
}

fn load_trainable(dir: &Path, device: &Device) -> Result<Box<dyn Backbone>> {
    Ok(Box::new(Bart::load_with(dir, device, Weights::Trainable)?))
}

peftspace_core::inventory::submit! {
    ArchitectureEntry {
        name: "bart",
        model_types: &["bart"],
        summary: "BART encoder-decoder (post-norm, learned positions); features: decoder state at the last EOS",
        describe,
        load,
        load_trainable: Some(load_trainable),
    }
}
