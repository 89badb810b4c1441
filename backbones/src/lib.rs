//! peftspace-backbones: pretrained transformers (frozen, or trainable for full fine-tuning) on candle, loaded from Hugging Face folders, with hook sites.
//!
//! Architectures register themselves (keyed by `config.json`'s `model_type`); [`load`] and [`describe`] pick the
//! right one for a folder.

pub mod bart;
pub mod bert;
pub mod checkpoint;
pub mod ops;
pub mod seq2seq;
pub mod t5;
pub mod tokenizer;

use std::path::Path;

use candle_core::Device;

use peftspace_core::backbone::{ArchitectureEntry, Backbone, Weights};
use peftspace_core::registry::registries;
use peftspace_core::shapes::BackboneInfo;
use peftspace_core::{Error, Result};

use checkpoint::{model_type, read_config, with_config_path};

/// The registered architecture for a model folder's `config.json`, with the config's path and text.
pub fn architecture(dir: &Path) -> Result<(ArchitectureEntry, std::path::PathBuf, String)> {
    let (path, text) = read_config(dir)?;
    let model_type = model_type(&path, &text)?;
    let registries = registries()?;
    let entry = registries
        .architecture_for(&model_type)
        .map_err(|e| match e {
            Error::UnknownName { name, known, .. } => Error::Model {
                path: path.clone(),
                message: format!(
                    "model_type `{name}` is not supported; known: {}",
                    known.join(", ")
                ),
            },
            other => other,
        })?;
    Ok((*entry, path, text))
}

/// Layers and parameter count of a model folder, from its `config.json` alone (no weights are read).
pub fn describe(dir: &Path) -> Result<BackboneInfo> {
    let (entry, path, text) = architecture(dir)?;
    (entry.describe)(&text).map_err(|e| with_config_path(e, &path))
}

/// Loads the frozen backbone of a model folder onto `device`.
pub fn load(dir: &Path, device: &Device) -> Result<Box<dyn Backbone>> {
    load_with(dir, device, Weights::Frozen)
}

/// Loads the backbone of a model folder with frozen or trainable weights (full fine-tuning: every weight a `Var`,
/// listed by [`Backbone::trainable_weights`]).
pub fn load_with(dir: &Path, device: &Device, weights: Weights) -> Result<Box<dyn Backbone>> {
    let (entry, path, _) = architecture(dir)?;
    entry
        .load_weights(dir, device, weights)
        .map_err(|e| with_config_path(e, &path))
}
