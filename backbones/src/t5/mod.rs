//! T5 (Raffel et al., 2020, "Exploring the Limits of Transfer Learning with a Unified Text-to-Text Transformer"):
//! v1.0 with a ReLU FFN and v1.1 / flan with a gated-GELU FFN, following transformers' `modeling_t5.py`.
//!
//! - Norm: T5's RMS norm (no mean subtraction, no bias) before each sub-layer, written differentiably
//!   ([`crate::ops::rms_norm`]); no projection has a bias, so BitFit relies on the `linear`/`norm` hooks adding
//!   zero-initialised biases.
//! - Attention scores are not scaled; a relative position bias (bidirectional buckets in the encoder, causal in the
//!   decoder) is computed from the table of the first layer of each stack and shared by all its layers. Prefix
//!   positions get a bias of zero (no position, never masked). Cross-attention has no position bias.
//! - Embeddings: `shared.weight` (or `encoder.embed_tokens.weight`).
//! - Language-model head ([`crate::seq2seq::lm_head`]): the checkpoint's own `lm_head.weight` (v1.1 / flan) or the
//!   shared embedding (v1.0, tied), reading the decoder output × `d_model^-0.5` when
//!   [`Config::rescales_decoder_output`].
//! - Global layers: encoder blocks `0..num_layers`, then decoder blocks.
//! - Loading, the encoder-decoder forward pass and the EOS read-out are [`EncoderDecoder`]'s.

pub mod attention;
pub mod config;
mod model;

use peftspace_core::backbone::{ArchitectureEntry, HfModules};
use peftspace_core::shapes::{BackboneInfo, SiteKind};

use crate::seq2seq::{self, Architecture, CheckpointLayout, EncoderDecoder, TokenId};
pub use config::Config;
pub use model::T5Stack;
use peftspace_core::backbone::lm::SpecialTokens;

/// What T5 plugs into the shared [`EncoderDecoder`].
pub struct T5Architecture;

/// A T5 encoder-decoder with hook sites; frozen, or trainable (every weight a `Var`).
pub type T5 = EncoderDecoder<T5Architecture>;

impl Architecture for T5Architecture {
    type Config = Config;
    type Stack = T5Stack;

    // `T5Model` / `T5ForConditionalGeneration` save without a prefix, `T5ForSequenceClassification` under
    // `transformer.`.
    const LAYOUT: CheckpointLayout = CheckpointLayout {
        display_name: "T5",
        encoder_probe: "encoder.block.0.layer.0.SelfAttention.q.weight",
        root_prefixes: &["", "transformer.", "model."],
        encoder_embeddings: &["shared.weight", "encoder.embed_tokens.weight"],
        decoder_embeddings: &["decoder.embed_tokens.weight", "shared.weight"],
        lm_head: "lm_head.weight",
        logits_bias: None,
    };

    fn parse_config(text: &str) -> std::result::Result<Config, String> {
        Config::from_json(text)
    }

    fn describe(cfg: &Config) -> std::result::Result<BackboneInfo, String> {
        cfg.describe()
    }

    fn embedding_shape(cfg: &Config) -> (usize, usize) {
        (cfg.vocab_size, cfg.d_model)
    }

    fn encoder_layers(cfg: &Config) -> usize {
        cfg.num_layers
    }

    fn decoder_start_id(cfg: &Config) -> u32 {
        cfg.decoder_start_id()
    }

    fn eos_id(cfg: &Config) -> u32 {
        cfg.eos_id()
    }

    fn special_tokens(cfg: &Config) -> SpecialTokens {
        SpecialTokens {
            decoder_start: cfg.decoder_start_id(),
            eos: cfg.eos_id(),
            pad: cfg.pad_id(),
            forced_eos: cfg.forced_eos_token_id.as_ref().and_then(TokenId::first),
        }
    }

    fn lm_head_declared_untied(cfg: &Config) -> bool {
        cfg.tie_word_embeddings == Some(false)
    }

    fn decoder_output_scale(cfg: &Config) -> Option<f64> {
        cfg.rescales_decoder_output()
            .then(|| (cfg.d_model as f64).powf(-0.5))
    }

    /// Relative position buckets: no hard limit on the input length.
    fn max_positions(_cfg: &Config) -> Option<usize> {
        None
    }
}

peftspace_core::inventory::submit! {
    ArchitectureEntry {
        name: "t5",
        model_types: &["t5"],
        summary: "T5 encoder-decoder (v1.0 ReLU and v1.1/flan gated-GELU FFN); features: decoder state at the last EOS",
        describe: seq2seq::describe::<T5Architecture>,
        load: seq2seq::load::<T5Architecture>,
        hf_modules: Some(HfModules {
            base_prefix: |_| "transformer",
            linear: hf_linear,
        }),
        load_trainable: Some(seq2seq::load_trainable::<T5Architecture>),
    }
}

/// The module names `modeling_t5.py` gives a layer's projections: `encoder.block.<i>.layer.0.SelfAttention.q`, the
/// decoder's cross-attention in `layer.1.EncDecAttention`, the FFN in `layer.1` (encoder) or `layer.2` (decoder)
/// `.DenseReluDense` (`wi`, or `wi_0` and `wi_1` when gated, then `wo`).
fn hf_linear(info: &BackboneInfo, layer: usize, site: SiteKind) -> Option<String> {
    let shape = info.layers.get(layer)?;
    shape.linear_site(site)?;
    let (stack, local, ffn) = if layer < info.encoder_layers {
        ("encoder", layer, 1)
    } else {
        ("decoder", layer - info.encoder_layers, 2)
    };
    let gated = shape.linear_site(SiteKind::FfnGate).is_some();
    let module = match site {
        SiteKind::Query => "layer.0.SelfAttention.q".to_string(),
        SiteKind::Key => "layer.0.SelfAttention.k".to_string(),
        SiteKind::Value => "layer.0.SelfAttention.v".to_string(),
        SiteKind::AttnOut => "layer.0.SelfAttention.o".to_string(),
        SiteKind::CrossQuery => "layer.1.EncDecAttention.q".to_string(),
        SiteKind::CrossKey => "layer.1.EncDecAttention.k".to_string(),
        SiteKind::CrossValue => "layer.1.EncDecAttention.v".to_string(),
        SiteKind::CrossOut => "layer.1.EncDecAttention.o".to_string(),
        SiteKind::FfnIn if gated => format!("layer.{ffn}.DenseReluDense.wi_0"),
        SiteKind::FfnIn => format!("layer.{ffn}.DenseReluDense.wi"),
        SiteKind::FfnGate => format!("layer.{ffn}.DenseReluDense.wi_1"),
        SiteKind::FfnOut => format!("layer.{ffn}.DenseReluDense.wo"),
    };
    Some(format!("{stack}.block.{local}.{module}"))
}
