//! BART's `config.json` (HF key names, transformers' defaults) and what it tells strategies: layers, sites, shapes
//! and the parameter count, from the config alone.

use peftspace_core::shapes::{
    AttentionKind, AttentionShape, BackboneInfo, LayerShape, NormShape, NormSite, ResidualSite,
    SiteKind, Stack,
};
use serde::Deserialize;

use crate::ops::Activation;
use crate::seq2seq::{site, TokenId};

/// transformers' learned positional embeddings keep two extra rows in front (a fairseq legacy).
pub const POSITION_OFFSET: usize = 2;

/// PyTorch's `nn.LayerNorm` default, which BART uses everywhere.
pub const LAYER_NORM_EPS: f64 = 1e-5;

/// The fields of a BART `config.json` this backbone reads; every default is transformers' `BartConfig` default.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// Default: 50265.
    #[serde(default = "defaults::vocab_size")]
    pub vocab_size: usize,
    /// Learned positions per stack (plus [`POSITION_OFFSET`] rows). Default: 1024.
    #[serde(default = "defaults::max_position_embeddings")]
    pub max_position_embeddings: usize,
    /// Default: 1024.
    #[serde(default = "defaults::d_model")]
    pub d_model: usize,
    /// Default: 12.
    #[serde(default = "defaults::layers")]
    pub encoder_layers: usize,
    /// Default: 4096.
    #[serde(default = "defaults::ffn_dim")]
    pub encoder_ffn_dim: usize,
    /// Default: 16.
    #[serde(default = "defaults::heads")]
    pub encoder_attention_heads: usize,
    /// Default: 12.
    #[serde(default = "defaults::layers")]
    pub decoder_layers: usize,
    /// Default: 4096.
    #[serde(default = "defaults::ffn_dim")]
    pub decoder_ffn_dim: usize,
    /// Default: 16.
    #[serde(default = "defaults::heads")]
    pub decoder_attention_heads: usize,
    /// FFN activation (transformers name). Default: `gelu`.
    #[serde(default = "defaults::activation_function")]
    pub activation_function: String,
    /// Dropout after embeddings and sub-layers. Default: 0.1.
    #[serde(default = "defaults::dropout")]
    pub dropout: f64,
    /// Dropout on attention weights. Default: 0.0.
    #[serde(default)]
    pub attention_dropout: f64,
    /// Dropout after the FFN activation. Default: 0.0.
    #[serde(default)]
    pub activation_dropout: f64,
    /// Multiply token embeddings by `sqrt(d_model)`. Default: false.
    #[serde(default)]
    pub scale_embedding: bool,
    /// Default: 1.
    #[serde(default = "defaults::pad_token_id")]
    pub pad_token_id: Option<u32>,
    /// Default: 2.
    #[serde(default = "defaults::eos_token_id")]
    pub eos_token_id: Option<TokenId>,
    /// First decoder token. Default: 2.
    #[serde(default = "defaults::decoder_start_token_id")]
    pub decoder_start_token_id: Option<u32>,
    /// Forced as the last token of a hypothesis at its maximum length (`null`: none). Default: 2.
    #[serde(default = "defaults::forced_eos_token_id")]
    pub forced_eos_token_id: Option<TokenId>,
    /// `false` when the checkpoint's `lm_head.weight` is not the shared embedding. Default: true.
    #[serde(default = "defaults::tie_word_embeddings")]
    pub tie_word_embeddings: bool,
    /// mBART-style pre-norm; not supported (must be false). Default: false.
    #[serde(default)]
    pub normalize_before: bool,
    /// mBART-style final norm; not supported (must be false). Default: false.
    #[serde(default)]
    pub add_final_layer_norm: bool,
}

mod defaults {
    use crate::seq2seq::TokenId;
    pub fn vocab_size() -> usize {
        50265
    }
    pub fn max_position_embeddings() -> usize {
        1024
    }
    pub fn d_model() -> usize {
        1024
    }
    pub fn layers() -> usize {
        12
    }
    pub fn ffn_dim() -> usize {
        4096
    }
    pub fn heads() -> usize {
        16
    }
    pub fn activation_function() -> String {
        "gelu".to_string()
    }
    pub fn dropout() -> f64 {
        0.1
    }
    pub fn pad_token_id() -> Option<u32> {
        Some(1)
    }
    pub fn eos_token_id() -> Option<TokenId> {
        Some(TokenId::One(2))
    }
    pub fn decoder_start_token_id() -> Option<u32> {
        Some(2)
    }
    pub fn forced_eos_token_id() -> Option<TokenId> {
        Some(TokenId::One(2))
    }
    pub fn tie_word_embeddings() -> bool {
        true
    }
}

impl Config {
    /// Parses and checks the text of a `config.json`.
    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        let cfg: Config = crate::seq2seq::parse_config(text)?;
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> std::result::Result<(), String> {
        use crate::checkpoint::{MAX_CONFIG_LAYERS, MAX_CONFIG_VOCAB, MAX_CONFIG_WIDTH};
        crate::checkpoint::check_config_limits(&[
            ("d_model", self.d_model, MAX_CONFIG_WIDTH),
            ("encoder_ffn_dim", self.encoder_ffn_dim, MAX_CONFIG_WIDTH),
            ("decoder_ffn_dim", self.decoder_ffn_dim, MAX_CONFIG_WIDTH),
            (
                "encoder_attention_heads",
                self.encoder_attention_heads,
                MAX_CONFIG_WIDTH,
            ),
            (
                "decoder_attention_heads",
                self.decoder_attention_heads,
                MAX_CONFIG_WIDTH,
            ),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                MAX_CONFIG_WIDTH,
            ),
            ("encoder_layers", self.encoder_layers, MAX_CONFIG_LAYERS),
            ("decoder_layers", self.decoder_layers, MAX_CONFIG_LAYERS),
            ("vocab_size", self.vocab_size, MAX_CONFIG_VOCAB),
        ])?;
        for (name, value) in [
            ("d_model", self.d_model),
            ("vocab_size", self.vocab_size),
            ("encoder_layers", self.encoder_layers),
            ("decoder_layers", self.decoder_layers),
            ("encoder_ffn_dim", self.encoder_ffn_dim),
            ("decoder_ffn_dim", self.decoder_ffn_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if value == 0 {
                return Err(format!("`{name}` must be positive"));
            }
        }
        for (name, heads) in [
            ("encoder_attention_heads", self.encoder_attention_heads),
            ("decoder_attention_heads", self.decoder_attention_heads),
        ] {
            if self.d_model.checked_rem(heads) != Some(0) {
                return Err(format!(
                    "`{name}` = {heads} must be positive and divide `d_model` = {}",
                    self.d_model
                ));
            }
        }
        if self.normalize_before || self.add_final_layer_norm {
            return Err(
                "`normalize_before` / `add_final_layer_norm` (mBART-style pre-norm) are not \
                        supported by the `bart` backbone; set them to false or use a BART checkpoint"
                    .to_string(),
            );
        }
        self.activation().map(|_| ())
    }

    pub fn activation(&self) -> std::result::Result<Activation, String> {
        Activation::from_hf_name(&self.activation_function)
            .map_err(|e| format!("`activation_function`: {e}"))
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_token_id.unwrap_or(1)
    }

    pub fn eos_id(&self) -> u32 {
        self.eos_token_id
            .as_ref()
            .and_then(TokenId::first)
            .unwrap_or(2)
    }

    pub fn decoder_start_id(&self) -> u32 {
        self.decoder_start_token_id.unwrap_or_else(|| self.eos_id())
    }

    /// Token embeddings are multiplied by this.
    pub fn embed_scale(&self) -> f64 {
        if self.scale_embedding {
            (self.d_model as f64).sqrt()
        } else {
            1.0
        }
    }

    /// Layers, sites, shapes and the parameter count (shared embedding once, LM head excluded).
    pub fn describe(&self) -> std::result::Result<BackboneInfo, String> {
        self.activation()?;
        let d = self.d_model;
        let layer = |index: usize, stack: Stack| {
            let (heads, ffn) = match stack {
                Stack::Encoder => (self.encoder_attention_heads, self.encoder_ffn_dim),
                Stack::Decoder => (self.decoder_attention_heads, self.decoder_ffn_dim),
            };
            let norm = |site| NormShape {
                site,
                width: d,
                has_bias: true,
            };
            let self_attention = AttentionShape {
                kind: AttentionKind::SelfAttention,
                heads,
                head_dim: d / heads,
            };
            let mut linear = vec![
                site(SiteKind::Query, d, d, true),
                site(SiteKind::Key, d, d, true),
                site(SiteKind::Value, d, d, true),
                site(SiteKind::AttnOut, d, d, true),
            ];
            let mut attention = vec![self_attention];
            let mut norms = vec![norm(NormSite::Attention)];
            let mut residual = vec![ResidualSite::Attention];
            if stack == Stack::Decoder {
                linear.extend([
                    site(SiteKind::CrossQuery, d, d, true),
                    site(SiteKind::CrossKey, d, d, true),
                    site(SiteKind::CrossValue, d, d, true),
                    site(SiteKind::CrossOut, d, d, true),
                ]);
                attention.push(AttentionShape {
                    kind: AttentionKind::CrossAttention,
                    ..self_attention
                });
                norms.push(norm(NormSite::CrossAttention));
                residual.push(ResidualSite::CrossAttention);
            }
            linear.push(site(SiteKind::FfnIn, d, ffn, true));
            linear.push(site(SiteKind::FfnOut, ffn, d, true));
            norms.push(norm(NormSite::Ffn));
            residual.push(ResidualSite::Ffn);
            LayerShape {
                index,
                stack,
                hidden: d,
                linear,
                attention,
                norms,
                residual,
            }
        };
        let (le, ld) = (self.encoder_layers, self.decoder_layers);
        let layers: Vec<LayerShape> = (0..le)
            .map(|i| layer(i, Stack::Encoder))
            .chain((le..le + ld).map(|i| layer(i, Stack::Decoder)))
            .collect();
        let per_layer: usize = layers
            .iter()
            .map(|l| {
                let linear: usize = l.linear.iter().map(|s| s.d_in * s.d_out + s.d_out).sum();
                let norms: usize = l.norms.iter().map(|n| 2 * n.width).sum();
                linear + norms
            })
            .sum();
        // Shared embedding once; per stack: learned positions (with the offset rows) and `layernorm_embedding`.
        let num_params = self.vocab_size * d
            + 2 * ((self.max_position_embeddings + POSITION_OFFSET) * d + 2 * d)
            + per_layer;
        Ok(BackboneInfo {
            model_type: "bart".to_string(),
            hidden: d,
            num_params,
            encoder_layers: le,
            decoder_layers: ld,
            layers,
        })
    }
}
