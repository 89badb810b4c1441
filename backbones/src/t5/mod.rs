//! T5 (Raffel et al., 2020, "Exploring the Limits of Transfer Learning with a Unified Text-to-Text Transformer"):
//! v1.0 with a ReLU FFN and v1.1 / flan with a gated-GELU FFN, following transformers' `modeling_t5.py`.
//!
//! - Norm: T5's RMS norm (no mean subtraction, no bias) before each sub-layer, written differentiably
//!   ([`crate::ops::rms_norm`]); no projection has a bias, so BitFit relies on the `linear`/`norm` hooks adding
//!   zero-initialised biases.
//! - Attention scores are not scaled; a relative position bias (bidirectional buckets in the encoder, causal in the
//!   decoder) is computed from the table of the first layer of each stack and shared by all its layers. Prefix
//!   positions get a bias of zero (no position, never masked). Cross-attention has no position bias.
//! - Embeddings: `shared.weight` (or `encoder.embed_tokens.weight`); an LM head in the checkpoint is ignored.
//! - Global layers: encoder blocks `0..num_layers`, then decoder blocks.

pub mod attention;
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

/// A T5 encoder-decoder with hook sites; frozen, or trainable (every weight a `Var`).
pub struct T5 {
    cfg: Config,
    info: BackboneInfo,
    device: Device,
    encoder: Stack,
    decoder: Stack,
    trainable: Vec<Var>,
}

impl T5 {
    /// Loads `config.json` and `model.safetensors` from a Hugging Face folder.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        Self::load_with(dir, device, Weights::Frozen)
    }

    /// [`Self::load`] with frozen or trainable weights.
    pub fn load_with(dir: &Path, device: &Device, weights: Weights) -> Result<Self> {
        let cfg = read_config(dir, Config::from_json)?;
        let config_path = dir.join("config.json");
        let info = cfg.describe().map_err(|message| Error::Model {
            path: config_path,
            message,
        })?;
        let (vb, trainable) = open_weights_for(dir, device, weights)?;
        // `T5Model` / `T5ForConditionalGeneration` save without a prefix, `T5ForSequenceClassification` under
        // `transformer.`.
        let root = root_prefix(
            &vb,
            "encoder.block.0.layer.0.SelfAttention.q.weight",
            &["", "transformer.", "model."],
        )
        .ok_or_else(|| {
            model_error(
                dir,
                "no T5 encoder found (expected `encoder.block.0.layer.0.SelfAttention.q.weight`)",
            )
        })?;
        let (vocab, d) = (cfg.vocab_size, cfg.d_model);
        let encoder_embed = first_present(
            &vb,
            &[
                format!("{root}shared.weight"),
                format!("{root}encoder.embed_tokens.weight"),
            ],
            vocab,
            d,
        )
        .map_err(|e| model_error(dir, e))?;
        let decoder_embed = first_present(
            &vb,
            &[
                format!("{root}decoder.embed_tokens.weight"),
                format!("{root}shared.weight"),
            ],
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
        let decoder = Stack::load(vb.pp("decoder"), &cfg, decoder_embed, true, cfg.num_layers)
            .map_err(|e| model_error(dir, e))?;
        Ok(T5 {
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

impl Backbone for T5 {
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
        let causal = causal_bias(decoder_input.dim(1)?, DType::F32, self.encoder.device())?;
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

    /// Relative position buckets: no hard limit on the input length.
    fn max_positions(&self) -> Option<usize> {
        None
    }
}

fn describe(config_json: &str) -> Result<BackboneInfo> {
    Config::from_json(config_json)
        .and_then(|c| c.describe())
        .map_err(crate::checkpoint::config_error)
}

fn load(dir: &Path, device: &Device) -> Result<Box<dyn Backbone>> {
    Ok(Box::new(T5::load(dir, device)?))
}

fn load_trainable(dir: &Path, device: &Device) -> Result<Box<dyn Backbone>> {
    Ok(Box::new(T5::load_with(dir, device, Weights::Trainable)?))
}

peftspace_core::inventory::submit! {
    ArchitectureEntry {
        name: "t5",
        model_types: &["t5"],
        summary: "T5 encoder-decoder (v1.0 ReLU and v1.1/flan gated-GELU FFN); features: decoder state at the last EOS",
        describe,
        load,
        load_trainable: Some(load_trainable),
    }
}
