//! T5's `config.json` (HF key names, transformers' defaults) and what it tells strategies: layers, sites, shapes and
//! the parameter count, from the config alone.

use peftspace_core::shapes::{
    AttentionKind, AttentionShape, BackboneInfo, LayerShape, NormShape, NormSite, ResidualSite,
    SiteKind, Stack,
};
use serde::Deserialize;

use crate::ops::Activation;
use crate::seq2seq::{site, TokenId};

/// The fields of a T5 `config.json` this backbone reads; every default is transformers' `T5Config` default.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// Default: 32128.
    #[serde(default = "defaults::vocab_size")]
    pub vocab_size: usize,
    /// Model width. Default: 512.
    #[serde(default = "defaults::d_model")]
    pub d_model: usize,
    /// Width of one attention head (T5 does not require `num_heads × d_kv == d_model`). Default: 64.
    #[serde(default = "defaults::d_kv")]
    pub d_kv: usize,
    /// FFN inner width. Default: 2048.
    #[serde(default = "defaults::d_ff")]
    pub d_ff: usize,
    /// Encoder layers. Default: 6.
    #[serde(default = "defaults::num_layers")]
    pub num_layers: usize,
    /// Decoder layers. Default: `num_layers`.
    #[serde(default)]
    pub num_decoder_layers: Option<usize>,
    /// Default: 8.
    #[serde(default = "defaults::num_heads")]
    pub num_heads: usize,
    /// Default: 32.
    #[serde(default = "defaults::num_buckets")]
    pub relative_attention_num_buckets: usize,
    /// Default: 128.
    #[serde(default = "defaults::max_distance")]
    pub relative_attention_max_distance: usize,
    /// Dropout everywhere (embeddings, attention weights, FFN, sub-layer outputs). Default: 0.1.
    #[serde(default = "defaults::dropout_rate")]
    pub dropout_rate: f64,
    /// Default: 1e-6.
    #[serde(default = "defaults::layer_norm_epsilon")]
    pub layer_norm_epsilon: f64,
    /// `relu` (T5 v1.0), `gated-gelu` (v1.1, flan), or `[gated-]ACT`. Default: `relu`.
    #[serde(default = "defaults::feed_forward_proj")]
    pub feed_forward_proj: String,
    /// Default: 0.
    #[serde(default = "defaults::pad_token_id")]
    pub pad_token_id: Option<u32>,
    /// Default: 1.
    #[serde(default = "defaults::eos_token_id")]
    pub eos_token_id: Option<TokenId>,
    /// First decoder token. Default: `pad_token_id` (T5's convention).
    #[serde(default)]
    pub decoder_start_token_id: Option<u32>,
    /// Forced as the last token of a hypothesis at its maximum length. Default: none.
    #[serde(default)]
    pub forced_eos_token_id: Option<TokenId>,
    /// `false` in the published T5 v1.1 / flan configs, whose `lm_head.weight` is not the shared embedding (and
    /// whose decoder output is not rescaled). Default: absent (transformers: true).
    #[serde(default)]
    pub tie_word_embeddings: Option<bool>,
    /// Multiply the decoder output by `d_model^-0.5` before the LM head (written by transformers 5). Default:
    /// absent, see [`Config::rescales_decoder_output`].
    #[serde(default)]
    pub scale_decoder_outputs: Option<bool>,
}

mod defaults {
    use crate::seq2seq::TokenId;
    pub fn vocab_size() -> usize {
        32128
    }
    pub fn d_model() -> usize {
        512
    }
    pub fn d_kv() -> usize {
        64
    }
    pub fn d_ff() -> usize {
        2048
    }
    pub fn num_layers() -> usize {
        6
    }
    pub fn num_heads() -> usize {
        8
    }
    pub fn num_buckets() -> usize {
        32
    }
    pub fn max_distance() -> usize {
        128
    }
    pub fn dropout_rate() -> f64 {
        0.1
    }
    pub fn layer_norm_epsilon() -> f64 {
        1e-6
    }
    pub fn feed_forward_proj() -> String {
        "relu".to_string()
    }
    pub fn pad_token_id() -> Option<u32> {
        Some(0)
    }
    pub fn eos_token_id() -> Option<TokenId> {
        Some(TokenId::One(1))
    }
}

/// The FFN variant and its activation, from `feed_forward_proj`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedForward {
    /// Gated (`wi_0`, `wi_1`) rather than a single `wi`.
    pub gated: bool,
    pub activation: Activation,
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
            ("d_kv", self.d_kv, MAX_CONFIG_WIDTH),
            ("d_ff", self.d_ff, MAX_CONFIG_WIDTH),
            ("num_heads", self.num_heads, MAX_CONFIG_WIDTH),
            // heads × d_kv is the attention width.
            (
                "num_heads × d_kv",
                self.num_heads.saturating_mul(self.d_kv),
                MAX_CONFIG_WIDTH,
            ),
            (
                "relative_attention_num_buckets",
                self.relative_attention_num_buckets,
                MAX_CONFIG_WIDTH,
            ),
            (
                "relative_attention_max_distance",
                self.relative_attention_max_distance,
                MAX_CONFIG_WIDTH,
            ),
            ("num_layers", self.num_layers, MAX_CONFIG_LAYERS),
            (
                "num_decoder_layers",
                self.decoder_layers(),
                MAX_CONFIG_LAYERS,
            ),
            ("vocab_size", self.vocab_size, MAX_CONFIG_VOCAB),
        ])?;
        for (name, value) in [
            ("d_model", self.d_model),
            ("d_kv", self.d_kv),
            ("d_ff", self.d_ff),
            ("num_heads", self.num_heads),
            ("vocab_size", self.vocab_size),
        ] {
            if value == 0 {
                return Err(format!("`{name}` must be positive"));
            }
        }
        if self.num_layers == 0 || self.decoder_layers() == 0 {
            return Err("`num_layers` and `num_decoder_layers` must be positive".to_string());
        }
        if self.relative_attention_num_buckets < 4 || self.relative_attention_max_distance < 2 {
            return Err("`relative_attention_num_buckets` must be ≥ 4 and \
                        `relative_attention_max_distance` ≥ 2"
                .to_string());
        }
        self.feed_forward().map(|_| ())
    }

    pub fn decoder_layers(&self) -> usize {
        self.num_decoder_layers.unwrap_or(self.num_layers)
    }

    /// `heads × d_kv`: the width of queries, keys and values.
    pub fn inner_dim(&self) -> usize {
        self.num_heads * self.d_kv
    }

    /// Parses `feed_forward_proj` the way transformers does (`gated-gelu` means the tanh-approximated GELU).
    pub fn feed_forward(&self) -> std::result::Result<FeedForward, String> {
        let parts: Vec<&str> = self.feed_forward_proj.split('-').collect();
        let (gated, act) = match parts.as_slice() {
            [act] => (false, *act),
            ["gated", act] => (true, *act),
            _ => {
                return Err(format!(
                    "`feed_forward_proj` = `{}` must be `ACT` or `gated-ACT` (e.g. `relu`, `gated-gelu`)",
                    self.feed_forward_proj
                ))
            }
        };
        let activation = if self.feed_forward_proj == "gated-gelu" {
            Activation::GeluTanh
        } else {
            Activation::from_hf_name(act).map_err(|e| format!("`feed_forward_proj`: {e}"))?
        };
        Ok(FeedForward { gated, activation })
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_token_id.unwrap_or(0)
    }

    pub fn eos_id(&self) -> u32 {
        self.eos_token_id
            .as_ref()
            .and_then(TokenId::first)
            .unwrap_or(1)
    }

    pub fn decoder_start_id(&self) -> u32 {
        self.decoder_start_token_id.unwrap_or_else(|| self.pad_id())
    }

    /// Whether the LM head sees the decoder output × `d_model^-0.5`: `scale_decoder_outputs` when the config has
    /// it; otherwise unless `tie_word_embeddings` is false (T5 v1.0 rescales its tied head, v1.1 / flan do not), as
    /// transformers derives it from older configs.
    pub fn rescales_decoder_output(&self) -> bool {
        self.scale_decoder_outputs
            .unwrap_or(self.tie_word_embeddings != Some(false))
    }

    /// Layers, sites, shapes and the parameter count (shared embedding once, LM head excluded).
    pub fn describe(&self) -> std::result::Result<BackboneInfo, String> {
        let ff = self.feed_forward()?;
        let (d, inner, dff) = (self.d_model, self.inner_dim(), self.d_ff);
        let layer = |index: usize, stack: Stack| {
            let mut linear = vec![
                site(SiteKind::Query, d, inner, false),
                site(SiteKind::Key, d, inner, false),
                site(SiteKind::Value, d, inner, false),
                site(SiteKind::AttnOut, inner, d, false),
            ];
            let self_attention = AttentionShape {
                kind: AttentionKind::SelfAttention,
                heads: self.num_heads,
                head_dim: self.d_kv,
            };
            let mut attention = vec![self_attention];
            let mut norms = vec![NormShape {
                site: NormSite::Attention,
                width: d,
                has_bias: false,
            }];
            let mut residual = vec![ResidualSite::Attention];
            if stack == Stack::Decoder {
                linear.extend([
                    site(SiteKind::CrossQuery, d, inner, false),
                    site(SiteKind::CrossKey, d, inner, false),
                    site(SiteKind::CrossValue, d, inner, false),
                    site(SiteKind::CrossOut, inner, d, false),
                ]);
                attention.push(AttentionShape {
                    kind: AttentionKind::CrossAttention,
                    ..self_attention
                });
                norms.push(NormShape {
                    site: NormSite::CrossAttention,
                    width: d,
                    has_bias: false,
                });
                residual.push(ResidualSite::CrossAttention);
            }
            linear.push(site(SiteKind::FfnIn, d, dff, false));
            if ff.gated {
                linear.push(site(SiteKind::FfnGate, d, dff, false));
            }
            linear.push(site(SiteKind::FfnOut, dff, d, false));
            norms.push(NormShape {
                site: NormSite::Ffn,
                width: d,
                has_bias: false,
            });
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
        let (le, ld) = (self.num_layers, self.decoder_layers());
        let layers: Vec<LayerShape> = (0..le)
            .map(|i| layer(i, Stack::Encoder))
            .chain((le..le + ld).map(|i| layer(i, Stack::Decoder)))
            .collect();
        let linear_params =
            |l: &LayerShape| l.linear.iter().map(|s| s.d_in * s.d_out).sum::<usize>();
        let norm_params = |l: &LayerShape| l.norms.iter().map(|n| n.width).sum::<usize>();
        let per_layer: usize = layers
            .iter()
            .map(|l| linear_params(l) + norm_params(l))
            .sum();
        // Shared embedding once; one relative-position table and one final norm per stack.
        let num_params = self.vocab_size * d
            + per_layer
            + 2 * self.relative_attention_num_buckets * self.num_heads
            + 2 * d;
        Ok(BackboneInfo {
            model_type: "t5".to_string(),
            hidden: d,
            num_params,
            encoder_layers: le,
            decoder_layers: ld,
            layers,
        })
    }
}
