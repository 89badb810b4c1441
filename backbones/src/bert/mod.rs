//! BERT and RoBERTa encoders (Devlin et al., 2019, "BERT: Pre-training of Deep Bidirectional Transformers for Language
//! Understanding"; Liu et al., 2019, "RoBERTa: A Robustly Optimized BERT Pretraining Approach"), following
//! transformers' `modeling_bert.py` / `modeling_roberta.py`, with PEFT hook sites in every layer.
//!
//! One architecture serves both: RoBERTa differs only in counting positions from `padding_idx + 1` and in usually
//! having no pooler. MiniLM (all-MiniLM-L6-v2) is a BERT checkpoint without the `bert.` prefix.

mod config;
mod model;

use std::path::Path;

use candle_core::Device;

use peftspace_core::backbone::{ArchitectureEntry, Backbone, HfModules, Weights};
use peftspace_core::shapes::{BackboneInfo, SiteKind};
use peftspace_core::Result;

use crate::checkpoint::Checkpoint;
use peftspace_core::model::{read_config, with_config_path};

pub use config::{describe, BertConfig, Flavour};
pub use model::Bert;

impl Bert {
    /// Loads a BERT or RoBERTa folder (`config.json` + safetensors weights).
    pub fn load(dir: &Path, device: &Device) -> Result<Bert> {
        Bert::load_with(dir, device, Weights::Frozen)
    }

    /// [`Bert::load`] with frozen or trainable weights.
    pub fn load_with(dir: &Path, device: &Device, weights: Weights) -> Result<Bert> {
        if device.is_cpu() {
            crate::ops::heap::keep_freed_buffers();
        }
        let (config_path, text) = read_config(dir)?;
        let config = BertConfig::from_json(&text).map_err(|e| with_config_path(e, &config_path))?;
        let checkpoint = Checkpoint::open(dir)?;
        Bert::from_checkpoint(config, &checkpoint, device, weights)
    }
}

/// [`ArchitectureEntry::load`] for BERT and RoBERTa.
pub fn load(dir: &Path, device: &Device) -> Result<Box<dyn Backbone>> {
    Ok(Box::new(Bert::load(dir, device)?))
}

/// [`ArchitectureEntry::load_trainable`] for BERT and RoBERTa.
pub fn load_trainable(dir: &Path, device: &Device) -> Result<Box<dyn Backbone>> {
    Ok(Box::new(Bert::load_with(dir, device, Weights::Trainable)?))
}

peftspace_core::inventory::submit! {
    ArchitectureEntry {
        name: "bert",
        model_types: &["bert", "roberta"],
        summary: "BERT / RoBERTa / MiniLM encoder (post-LN, learned positions, pooled CLS)",
        describe,
        load,
        load_trainable: Some(load_trainable),
        hf_modules: Some(HfModules {
            base_prefix: hf_base_prefix,
            linear: hf_linear,
        }),
    }
}

/// `bert` or `roberta`: the attribute transformers' sequence classifiers keep the encoder under.
fn hf_base_prefix(model_type: &str) -> &'static str {
    if model_type == "roberta" {
        "roberta"
    } else {
        "bert"
    }
}

/// The module names `modeling_bert.py` / `modeling_roberta.py` give a layer's projections.
fn hf_linear(info: &BackboneInfo, layer: usize, site: SiteKind) -> Option<String> {
    if layer >= info.encoder_layers {
        return None;
    }
    let module = match site {
        SiteKind::Query => "attention.self.query",
        SiteKind::Key => "attention.self.key",
        SiteKind::Value => "attention.self.value",
        SiteKind::AttnOut => "attention.output.dense",
        SiteKind::FfnIn => "intermediate.dense",
        SiteKind::FfnOut => "output.dense",
        _ => return None,
    };
    Some(format!("encoder.layer.{layer}.{module}"))
}
