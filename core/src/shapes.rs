//! What a backbone tells strategies about itself: layers, their hook sites and shapes.
//!
//! A strategy sizes itself from these shapes alone; it never sees which architecture it is in.

use serde::{Deserialize, Serialize};

/// Which stack of the transformer a layer belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Stack {
    Encoder,
    Decoder,
}

/// A projection inside a layer after which the `linear` hook is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SiteKind {
    Query,
    Key,
    Value,
    AttnOut,
    CrossQuery,
    CrossKey,
    CrossValue,
    CrossOut,
    /// First FFN projection (`intermediate.dense`, T5 `wi` / `wi_0`, BART `fc1`).
    FfnIn,
    /// Second input projection of a gated FFN (T5 v1.1 `wi_1`).
    FfnGate,
    /// Last FFN projection (`output.dense`, T5 `wo`, BART `fc2`).
    FfnOut,
}

impl SiteKind {
    /// Every site kind, in a fixed order.
    pub const ALL: [SiteKind; 11] = [
        SiteKind::Query,
        SiteKind::Key,
        SiteKind::Value,
        SiteKind::AttnOut,
        SiteKind::CrossQuery,
        SiteKind::CrossKey,
        SiteKind::CrossValue,
        SiteKind::CrossOut,
        SiteKind::FfnIn,
        SiteKind::FfnGate,
        SiteKind::FfnOut,
    ];

    /// The short name used in experiment files (`q`, `k`, `v`, `o`, `cq`, …, `ffn_in`, `ffn_gate`, `ffn_out`).
    pub fn short_name(self) -> &'static str {
        match self {
            SiteKind::Query => "q",
            SiteKind::Key => "k",
            SiteKind::Value => "v",
            SiteKind::AttnOut => "o",
            SiteKind::CrossQuery => "cq",
            SiteKind::CrossKey => "ck",
            SiteKind::CrossValue => "cv",
            SiteKind::CrossOut => "co",
            SiteKind::FfnIn => "ffn_in",
            SiteKind::FfnGate => "ffn_gate",
            SiteKind::FfnOut => "ffn_out",
        }
    }

    /// Parses a short name (see [`SiteKind::short_name`]).
    pub fn from_short_name(name: &str) -> Option<SiteKind> {
        SiteKind::ALL.into_iter().find(|k| k.short_name() == name)
    }
}

/// Self-attention or cross-attention (decoders only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AttentionKind {
    SelfAttention,
    CrossAttention,
}

/// A sub-layer output after which the `residual` hook is called (before the residual addition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ResidualSite {
    Attention,
    CrossAttention,
    Ffn,
}

/// A normalisation whose output passes the `norm` hook (BitFit trains a bias there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum NormSite {
    Attention,
    CrossAttention,
    Ffn,
}

/// One projection of a layer: `y = x W^T (+ b)` with `x: [.., d_in]`, `y: [.., d_out]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinearSite {
    pub kind: SiteKind,
    pub d_in: usize,
    pub d_out: usize,
    /// Whether the frozen projection has a bias (T5 has none).
    pub has_bias: bool,
}

/// One attention block of a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttentionShape {
    pub kind: AttentionKind,
    pub heads: usize,
    pub head_dim: usize,
}

impl AttentionShape {
    /// Width of keys and values over all heads (`heads × head_dim`).
    pub fn inner_dim(&self) -> usize {
        self.heads * self.head_dim
    }
}

/// One normalisation of a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NormShape {
    pub site: NormSite,
    pub width: usize,
    /// Whether the frozen norm has a bias (T5's RMS norm has none).
    pub has_bias: bool,
}

/// Everything a strategy may know about one layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerShape {
    /// Global index: encoder layers 0..Le, then decoder layers Le..Le+Ld.
    pub index: usize,
    pub stack: Stack,
    /// Model width (`d_model` / `hidden_size`).
    pub hidden: usize,
    pub linear: Vec<LinearSite>,
    pub attention: Vec<AttentionShape>,
    pub norms: Vec<NormShape>,
    pub residual: Vec<ResidualSite>,
}

impl LayerShape {
    /// Encoder layer `index` shaped like BERT's (and RoBERTa's): self-attention with `heads` heads of width
    /// `hidden / heads`, query/key/value/output projections `hidden → hidden`, an FFN `hidden → ffn → hidden`, every
    /// projection and both LayerNorms (after attention and after the FFN) with a bias, and a residual after each
    /// sub-layer. `heads` must be positive and should divide `hidden`, as BERT's config requires.
    pub fn bert_encoder_layer(index: usize, hidden: usize, heads: usize, ffn: usize) -> LayerShape {
        let biased = |kind, d_in, d_out| LinearSite {
            kind,
            d_in,
            d_out,
            has_bias: true,
        };
        let biased_norm = |site| NormShape {
            site,
            width: hidden,
            has_bias: true,
        };
        LayerShape {
            index,
            stack: Stack::Encoder,
            hidden,
            linear: vec![
                biased(SiteKind::Query, hidden, hidden),
                biased(SiteKind::Key, hidden, hidden),
                biased(SiteKind::Value, hidden, hidden),
                biased(SiteKind::AttnOut, hidden, hidden),
                biased(SiteKind::FfnIn, hidden, ffn),
                biased(SiteKind::FfnOut, ffn, hidden),
            ],
            attention: vec![AttentionShape {
                kind: AttentionKind::SelfAttention,
                heads,
                head_dim: hidden / heads,
            }],
            norms: vec![biased_norm(NormSite::Attention), biased_norm(NormSite::Ffn)],
            residual: vec![ResidualSite::Attention, ResidualSite::Ffn],
        }
    }

    /// The projection of the given kind, if this layer has one.
    pub fn linear_site(&self, kind: SiteKind) -> Option<&LinearSite> {
        self.linear.iter().find(|s| s.kind == kind)
    }

    /// The attention block of the given kind, if this layer has one.
    pub fn attention_shape(&self, kind: AttentionKind) -> Option<&AttentionShape> {
        self.attention.iter().find(|a| a.kind == kind)
    }
}

/// What a backbone reports about itself, computable from `config.json` alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackboneInfo {
    /// HF `model_type` (`bert`, `roberta`, `t5`, `bart`, …).
    pub model_type: String,
    pub hidden: usize,
    /// Number of scalars in the pretrained checkpoint's model (embeddings included, LM heads excluded).
    pub num_params: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    /// All layers, encoder first, numbered globally.
    pub layers: Vec<LayerShape>,
}

impl BackboneInfo {
    /// Total number of layers (encoder + decoder).
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bert_encoder_layer_has_every_site_of_a_bert_layer() {
        let site = |kind, d_in, d_out| LinearSite {
            kind,
            d_in,
            d_out,
            has_bias: true,
        };
        let expected = LayerShape {
            index: 5,
            stack: Stack::Encoder,
            hidden: 384,
            linear: vec![
                site(SiteKind::Query, 384, 384),
                site(SiteKind::Key, 384, 384),
                site(SiteKind::Value, 384, 384),
                site(SiteKind::AttnOut, 384, 384),
                site(SiteKind::FfnIn, 384, 1536),
                site(SiteKind::FfnOut, 1536, 384),
            ],
            attention: vec![AttentionShape {
                kind: AttentionKind::SelfAttention,
                heads: 12,
                head_dim: 32,
            }],
            norms: vec![
                NormShape {
                    site: NormSite::Attention,
                    width: 384,
                    has_bias: true,
                },
                NormShape {
                    site: NormSite::Ffn,
                    width: 384,
                    has_bias: true,
                },
            ],
            residual: vec![ResidualSite::Attention, ResidualSite::Ffn],
        };
        assert_eq!(LayerShape::bert_encoder_layer(5, 384, 12, 1536), expected);
    }
}
