//! peftspace-backbones: pretrained transformers (frozen, or trainable for full fine-tuning) on candle, loaded from Hugging Face folders, with hook sites.
//!
//! Architectures register themselves (keyed by `config.json`'s `model_type`); a folder is opened with
//! `peftspace_core::model::ModelFolder`, which picks the right one ([`load`] and [`describe`] are shortcuts).

pub mod bart;
pub mod bert;
pub mod checkpoint;
pub mod ops;
pub mod seq2seq;
pub mod t5;

use std::path::Path;

use candle_core::Device;

use peftspace_core::backbone::{Backbone, Weights};
use peftspace_core::model::ModelFolder;
use peftspace_core::registry::registries;
use peftspace_core::shapes::BackboneInfo;
use peftspace_core::Result;

/// Layers and parameter count of a model folder, from its `config.json` alone (no weights are read): a shortcut
/// for [`ModelFolder::describe`] with the registries of this process.
pub fn describe(dir: &Path) -> Result<BackboneInfo> {
    ModelFolder::open(dir)?.describe(&registries()?)
}

/// Loads the frozen backbone of a model folder onto `device`: a shortcut for [`ModelFolder::load`].
pub fn load(dir: &Path, device: &Device) -> Result<Box<dyn Backbone>> {
    load_with(dir, device, Weights::Frozen)
}

/// Loads the backbone of a model folder with frozen or trainable weights (full fine-tuning: every weight a `Var`,
/// listed by [`Backbone::trainable_weights`]): a shortcut for [`ModelFolder::load`].
pub fn load_with(dir: &Path, device: &Device, weights: Weights) -> Result<Box<dyn Backbone>> {
    ModelFolder::open(dir)?.load(&registries()?, device, weights)
}
