//! BART (Lewis et al., 2020, "BART: Denoising Sequence-to-Sequence Pre-training for Natural Language Generation,
//! Translation, and Comprehension"), following transformers' `modeling_bart.py`.
//!
//! - Post-norm layers (`LN(h + sub(h))`) with biased projections; `layernorm_embedding` after the embeddings of each
//!   stack; learned positions with an offset of 2 rows; token embeddings × `sqrt(d_model)` when `scale_embedding`.
//! - Embeddings: `shared.weight` (or `model.shared.weight` in task checkpoints; `encoder.embed_tokens.weight` as a
//!   fallback).
//! - Language-model head ([`crate::seq2seq::lm_head`]): the shared embedding (tied) plus `final_logits_bias` (zeros
//!   when the checkpoint has none).
//! - The FFN activation comes from `activation_function`.
//! - Global layers: encoder layers `0..encoder_layers`, then decoder layers.
//! - Loading, the encoder-decoder forward pass and the EOS read-out are [`EncoderDecoder`]'s.

pub mod config;
mod model;

use peftspace_core::backbone::{ArchitectureEntry, HfModules};
use peftspace_core::shapes::{BackboneInfo, SiteKind};

use crate::seq2seq::{self, Architecture, CheckpointLayout, EncoderDecoder, TokenId};
pub use config::Config;
pub use model::BartStack;
use peftspace_core::backbone::lm::SpecialTokens;

/// What BART plugs into the shared [`EncoderDecoder`].
pub struct BartArchitecture;

/// A BART encoder-decoder with hook sites; frozen, or trainable (every weight a `Var`).
pub type Bart = EncoderDecoder<BartArchitecture>;

impl Architecture for BartArchitecture {
    type Config = Config;
    type Stack = BartStack;

    // `BartModel` saves without a prefix, `BartForConditionalGeneration` / `…ForSequenceClassification` under
    // `model.`.
    const LAYOUT: CheckpointLayout = CheckpointLayout {
        display_name: "BART",
        encoder_probe: "encoder.layers.0.self_attn.q_proj.weight",
        root_prefixes: &["", "model."],
        encoder_embeddings: &[
            "shared.weight",
            "encoder.embed_tokens.weight",
            "decoder.embed_tokens.weight",
        ],
        decoder_embeddings: &["decoder.embed_tokens.weight"],
        // `BartForConditionalGeneration` saves `final_logits_bias` at the top level, outside `model.`.
        lm_head: "lm_head.weight",
        logits_bias: Some("final_logits_bias"),
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
        cfg.encoder_layers
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
        !cfg.tie_word_embeddings
    }

    /// BART's head reads the decoder output as it is.
    fn decoder_output_scale(_cfg: &Config) -> Option<f64> {
        None
    }

    /// The learned position table's rows (without BART's offset of 2).
    fn max_positions(cfg: &Config) -> Option<usize> {
        Some(cfg.max_position_embeddings)
    }
}

peftspace_core::inventory::submit! {
    ArchitectureEntry {
        name: "bart",
        model_types: &["bart"],
        summary: "BART encoder-decoder (post-norm, learned positions); features: decoder state at the last EOS",
        describe: seq2seq::describe::<BartArchitecture>,
        load: seq2seq::load::<BartArchitecture>,
        hf_modules: Some(HfModules {
            base_prefix: |_| "model",
            linear: hf_linear,
        }),
        load_trainable: Some(seq2seq::load_trainable::<BartArchitecture>),
    }
}

/// The module names `modeling_bart.py` gives a layer's projections: `encoder.layers.<i>.self_attn.q_proj`, the
/// decoder's cross-attention `encoder_attn.*`, the FFN `fc1` and `fc2`.
fn hf_linear(info: &BackboneInfo, layer: usize, site: SiteKind) -> Option<String> {
    info.layers.get(layer)?.linear_site(site)?;
    let (stack, local) = if layer < info.encoder_layers {
        ("encoder", layer)
    } else {
        ("decoder", layer - info.encoder_layers)
    };
    let module = match site {
        SiteKind::Query => "self_attn.q_proj",
        SiteKind::Key => "self_attn.k_proj",
        SiteKind::Value => "self_attn.v_proj",
        SiteKind::AttnOut => "self_attn.out_proj",
        SiteKind::CrossQuery => "encoder_attn.q_proj",
        SiteKind::CrossKey => "encoder_attn.k_proj",
        SiteKind::CrossValue => "encoder_attn.v_proj",
        SiteKind::CrossOut => "encoder_attn.out_proj",
        SiteKind::FfnIn => "fc1",
        SiteKind::FfnOut => "fc2",
        SiteKind::FfnGate => return None,
    };
    Some(format!("{stack}.layers.{local}.{module}"))
}
