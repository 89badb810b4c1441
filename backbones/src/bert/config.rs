//! The `config.json` of BERT-family encoders (BERT, RoBERTa, MiniLM) and what it says about layers and size.

use serde::Deserialize;

use peftspace_core::shapes::{BackboneInfo, LayerShape};
use peftspace_core::Result;

use crate::checkpoint::{config_error, parse_config};
use crate::ops::Activation;

/// BERT or RoBERTa: the two differ only in how position ids are counted (see [`BertConfig::position_offset`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    Bert,
    Roberta,
}

impl Flavour {
    /// The `model_type` values of `config.json` each flavour accepts.
    pub fn from_model_type(model_type: &str) -> Option<Flavour> {
        match model_type {
            "bert" => Some(Flavour::Bert),
            "roberta" => Some(Flavour::Roberta),
            _ => None,
        }
    }

    /// The tensor-name prefix task checkpoints put before the encoder (`bert.` / `roberta.`).
    pub fn checkpoint_prefix(self) -> &'static str {
        match self {
            Flavour::Bert => "bert",
            Flavour::Roberta => "roberta",
        }
    }
}

/// The fields of a BERT/RoBERTa `config.json` we use, under their Hugging Face names.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    /// `bert` or `roberta`.
    pub model_type: String,
    /// Rows of the word embedding.
    pub vocab_size: usize,
    /// Model width. Default 768.
    #[serde(default = "default_hidden")]
    pub hidden_size: usize,
    /// Number of encoder layers. Default 12.
    #[serde(default = "default_layers")]
    pub num_hidden_layers: usize,
    /// Attention heads per layer. Default 12.
    #[serde(default = "default_heads")]
    pub num_attention_heads: usize,
    /// FFN width. Default 3072.
    #[serde(default = "default_intermediate")]
    pub intermediate_size: usize,
    /// FFN activation. Default `gelu` (exact).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Dropout after embeddings and sub-layers in training. Default 0.1.
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    /// Dropout on attention probabilities in training. Default 0.1.
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    /// Rows of the position embedding. Default 512.
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    /// Rows of the token-type (segment) embedding. Default 2.
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// Epsilon of every LayerNorm. Default 1e-12.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Padding token id; RoBERTa counts positions from here. Default 0 (BERT) — RoBERTa configs always set it.
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// Only `absolute` is supported. Default `absolute`.
    #[serde(default = "default_position_type")]
    pub position_embedding_type: String,
    /// The transformers classes the checkpoint was saved from; used to guess whether it has a pooler.
    #[serde(default)]
    pub architectures: Vec<String>,
}

fn default_hidden() -> usize {
    768
}
fn default_layers() -> usize {
    12
}
fn default_heads() -> usize {
    12
}
fn default_intermediate() -> usize {
    3072
}
fn default_act() -> String {
    "gelu".to_string()
}
fn default_dropout() -> f64 {
    0.1
}
fn default_positions() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_position_type() -> String {
    "absolute".to_string()
}

impl BertConfig {
    /// Parses and checks `config.json` text. Errors name the field and the fix.
    pub fn from_json(text: &str) -> Result<BertConfig> {
        let cfg: BertConfig = parse_config(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    // `usize::is_multiple_of` needs Rust 1.87; the workspace supports 1.85.
    #[allow(clippy::manual_is_multiple_of)]
    fn validate(&self) -> Result<()> {
        if self.flavour().is_none() {
            return Err(config_error(format!(
                "model_type `{}` is not a BERT-family model (expected bert or roberta)",
                self.model_type
            )));
        }
        use crate::checkpoint::{MAX_CONFIG_LAYERS, MAX_CONFIG_VOCAB, MAX_CONFIG_WIDTH};
        crate::checkpoint::check_config_limits(&[
            ("hidden_size", self.hidden_size, MAX_CONFIG_WIDTH),
            (
                "intermediate_size",
                self.intermediate_size,
                MAX_CONFIG_WIDTH,
            ),
            (
                "num_attention_heads",
                self.num_attention_heads,
                MAX_CONFIG_WIDTH,
            ),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                MAX_CONFIG_WIDTH,
            ),
            ("type_vocab_size", self.type_vocab_size, MAX_CONFIG_WIDTH),
            (
                "num_hidden_layers",
                self.num_hidden_layers,
                MAX_CONFIG_LAYERS,
            ),
            ("vocab_size", self.vocab_size, MAX_CONFIG_VOCAB),
        ])
        .map_err(config_error)?;
        if self.num_attention_heads == 0 || self.hidden_size % self.num_attention_heads != 0 {
            return Err(config_error(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        if self.hidden_size == 0
            || self.num_hidden_layers == 0
            || self.intermediate_size == 0
            || self.vocab_size == 0
        {
            return Err(config_error(
                "hidden_size, num_hidden_layers, intermediate_size and vocab_size must all be positive",
            ));
        }
        if self.type_vocab_size == 0 {
            return Err(config_error("type_vocab_size must be at least 1"));
        }
        self.activation()?;
        if self.position_embedding_type != "absolute" {
            return Err(config_error(format!(
                "position_embedding_type `{}` is not supported (only `absolute`)",
                self.position_embedding_type
            )));
        }
        if self.flavour() == Some(Flavour::Roberta) {
            let offset = self.position_offset();
            if self.max_position_embeddings <= offset {
                return Err(config_error(format!(
                    "max_position_embeddings {} leaves no position after padding_idx {}",
                    self.max_position_embeddings,
                    offset - 1
                )));
            }
        }
        Ok(())
    }

    pub fn flavour(&self) -> Option<Flavour> {
        Flavour::from_model_type(&self.model_type)
    }

    /// The FFN activation, or an error listing the supported ones.
    pub fn activation(&self) -> Result<Activation> {
        Activation::parse(&self.hidden_act).ok_or_else(|| {
            config_error(format!(
                "hidden_act `{}` is not supported; supported: {}",
                self.hidden_act,
                Activation::SUPPORTED
            ))
        })
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// The padding id (`pad_token_id`, else 0 for BERT and 1 for RoBERTa, their tokenizers' values).
    pub fn pad_id(&self) -> u32 {
        match (self.pad_token_id, self.flavour()) {
            (Some(id), _) => id,
            (None, Some(Flavour::Roberta)) => 1,
            (None, _) => 0,
        }
    }

    /// The first position id: 0 for BERT; `padding_idx + 1` for RoBERTa, whose position table reserves the rows up
    /// to the padding index.
    pub fn position_offset(&self) -> usize {
        match self.flavour() {
            Some(Flavour::Roberta) => self.pad_id() as usize + 1,
            _ => 0,
        }
    }

    /// The longest input the position table allows.
    pub fn max_sequence_len(&self) -> usize {
        self.max_position_embeddings
            .saturating_sub(self.position_offset())
    }

    /// Whether the checkpoint is expected to hold a pooler, from `config.json` alone.
    ///
    /// BERT was pre-trained with next-sentence prediction, which reads the pooler, so released BERT checkpoints keep
    /// it whatever class they were saved from (bert-base-uncased says `BertForMaskedLM` and has one): always true.
    /// RoBERTa has no such task; transformers builds its pooler only in `RobertaModel` and
    /// `RobertaForMultipleChoice`, so roberta-base (`RobertaForMaskedLM`) has none. When the weights are loaded, their
    /// presence decides, and the loaded model's parameter count follows the weights.
    pub fn expects_pooler(&self) -> bool {
        match self.flavour() {
            Some(Flavour::Roberta) => self
                .architectures
                .iter()
                .any(|a| a == "RobertaModel" || a == "RobertaForMultipleChoice"),
            _ => true,
        }
    }

    /// Scalars of embeddings + encoder layers (+ pooler): the checkpoint's floating-point tensors, LM heads excluded.
    pub fn num_params(&self, with_pooler: bool) -> usize {
        let h = self.hidden_size;
        let i = self.intermediate_size;
        let embeddings =
            (self.vocab_size + self.max_position_embeddings + self.type_vocab_size) * h + 2 * h;
        let attention = 4 * (h * h + h) + 2 * h;
        let ffn = (h * i + i) + (i * h + h) + 2 * h;
        let pooler = if with_pooler { h * h + h } else { 0 };
        embeddings + self.num_hidden_layers * (attention + ffn) + pooler
    }

    /// The hook sites and shapes of encoder layer `index`.
    pub fn layer_shape(&self, index: usize) -> LayerShape {
        LayerShape::bert_encoder_layer(
            index,
            self.hidden_size,
            self.num_attention_heads,
            self.intermediate_size,
        )
    }

    /// Layers and parameter count, with or without the pooler.
    pub fn info(&self, with_pooler: bool) -> BackboneInfo {
        BackboneInfo {
            model_type: self.model_type.clone(),
            hidden: self.hidden_size,
            num_params: self.num_params(with_pooler),
            encoder_layers: self.num_hidden_layers,
            decoder_layers: 0,
            layers: (0..self.num_hidden_layers)
                .map(|l| self.layer_shape(l))
                .collect(),
        }
    }
}

/// [`peftspace_core::backbone::ArchitectureEntry::describe`] for BERT and RoBERTa.
pub fn describe(config_json: &str) -> Result<BackboneInfo> {
    let cfg = BertConfig::from_json(config_json)?;
    Ok(cfg.info(cfg.expects_pooler()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use peftspace_core::shapes::{AttentionKind, ResidualSite, SiteKind, Stack};

    const MINILM: &str = r#"{
      "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
      "hidden_dropout_prob": 0.1, "hidden_size": 384, "intermediate_size": 1536, "layer_norm_eps": 1e-12,
      "max_position_embeddings": 512, "model_type": "bert", "num_attention_heads": 12, "num_hidden_layers": 6,
      "pad_token_id": 0, "position_embedding_type": "absolute", "type_vocab_size": 2, "vocab_size": 30522
    }"#;

    const BERT_BASE: &str = r#"{
      "architectures": ["BertForMaskedLM"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
      "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
      "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert", "num_attention_heads": 12,
      "num_hidden_layers": 12, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": 30522
    }"#;

    const ROBERTA_BASE: &str = r#"{
      "architectures": ["RobertaForMaskedLM"], "attention_probs_dropout_prob": 0.1, "bos_token_id": 0,
      "eos_token_id": 2, "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": 768,
      "intermediate_size": 3072, "layer_norm_eps": 1e-05, "max_position_embeddings": 514, "model_type": "roberta",
      "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 1, "type_vocab_size": 1,
      "vocab_size": 50265
    }"#;

    #[test]
    fn minilm_layers_and_size() -> Result<()> {
        let info = describe(MINILM)?;
        assert_eq!(info.model_type, "bert");
        assert_eq!(
            (info.hidden, info.encoder_layers, info.decoder_layers),
            (384, 6, 0)
        );
        assert_eq!(info.layers.len(), 6);
        // The float tensors of all-MiniLM-L6-v2's model.safetensors (embeddings, 6 layers, pooler).
        assert_eq!(info.num_params, 22_713_216);
        let l = &info.layers[5];
        assert_eq!(l.index, 5);
        assert_eq!(l.stack, Stack::Encoder);
        let ffn_in = l.linear_site(SiteKind::FfnIn).expect("ffn_in site");
        assert_eq!(
            (ffn_in.d_in, ffn_in.d_out, ffn_in.has_bias),
            (384, 1536, true)
        );
        let ffn_out = l.linear_site(SiteKind::FfnOut).expect("ffn_out site");
        assert_eq!((ffn_out.d_in, ffn_out.d_out), (1536, 384));
        for kind in [
            SiteKind::Query,
            SiteKind::Key,
            SiteKind::Value,
            SiteKind::AttnOut,
        ] {
            let s = l.linear_site(kind).expect("attention site");
            assert_eq!((s.d_in, s.d_out, s.has_bias), (384, 384, true));
        }
        assert!(l.linear_site(SiteKind::CrossQuery).is_none());
        let att = l
            .attention_shape(AttentionKind::SelfAttention)
            .expect("self-attention");
        assert_eq!((att.heads, att.head_dim, att.inner_dim()), (12, 32, 384));
        assert!(l.attention_shape(AttentionKind::CrossAttention).is_none());
        assert_eq!(l.norms.len(), 2);
        assert!(l.norms.iter().all(|n| n.width == 384 && n.has_bias));
        assert_eq!(l.residual, vec![ResidualSite::Attention, ResidualSite::Ffn]);
        Ok(())
    }

    #[test]
    fn bert_base_has_its_published_size() -> Result<()> {
        let info = describe(BERT_BASE)?;
        // transformers' BertModel.from_pretrained("bert-base-uncased").num_parameters() = 109,482,240.
        assert_eq!(info.num_params, 109_482_240);
        assert_eq!(info.layers.len(), 12);
        assert_eq!(info.layers[0].attention[0].head_dim, 64);
        Ok(())
    }

    #[test]
    fn roberta_base_has_no_pooler_and_offset_positions() -> Result<()> {
        let cfg = BertConfig::from_json(ROBERTA_BASE)?;
        assert!(!cfg.expects_pooler());
        assert_eq!(cfg.position_offset(), 2);
        assert_eq!(cfg.max_sequence_len(), 512);
        // roberta-base without pooler: 124,645,632 - 590,592 (pooler) = 124,055,040.
        assert_eq!(describe(ROBERTA_BASE)?.num_params, 124_055_040);
        Ok(())
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        let no_vocab = r#"{"model_type": "bert", "hidden_size": 8}"#;
        let e = describe(no_vocab)
            .expect_err("vocab_size is required")
            .to_string();
        assert!(e.contains("vocab_size"), "{e}");
        let heads = MINILM.replace("\"num_attention_heads\": 12", "\"num_attention_heads\": 7");
        let e = describe(&heads).expect_err("384 % 7 != 0").to_string();
        assert!(e.contains("num_attention_heads 7"), "{e}");
        let act = MINILM.replace("\"hidden_act\": \"gelu\"", "\"hidden_act\": \"mish\"");
        let e = describe(&act).expect_err("unknown activation").to_string();
        assert!(e.contains("mish") && e.contains("gelu_new"), "{e}");
        let e = describe("{ not json")
            .expect_err("syntax error")
            .to_string();
        assert!(e.contains("line 1"), "{e}");
    }
}
