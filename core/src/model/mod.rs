//! Hugging Face model folders: the one way every command, the executor and experiment checks open a backbone.
//!
//! A [`ModelFolder`] is a local folder (given, or resolved and downloaded by [`crate::resolve::Resolver`]) holding
//! `config.json`, `tokenizer.json` and the weights, either `model.safetensors` or the shards that
//! `model.safetensors.index.json` lists. From it come the description of the backbone ([`ModelFolder::describe`],
//! from `config.json` alone), the model itself with frozen or trainable weights ([`ModelFolder::load`], through the
//! architecture registered for its `model_type`), its one [`Tokenizer`], and its identity (part of every trial id).

mod tokenizer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use sha2::{Digest, Sha256};

pub use tokenizer::Tokenizer;

use crate::backbone::{ArchitectureEntry, Backbone, Weights};
use crate::registry::Registries;
use crate::shapes::BackboneInfo;
use crate::{Error, Result};

/// File name of the model configuration inside a model folder.
pub const CONFIG_FILE: &str = "config.json";
/// File name of the tokenizer inside a model folder (transformers' fast tokenizer file).
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// File name of single-file weights.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// File name of the index of sharded weights.
pub const WEIGHTS_INDEX_FILE: &str = "model.safetensors.index.json";

/// An opened model folder: its `config.json` has been read and names a `model_type`.
#[derive(Debug, Clone)]
pub struct ModelFolder {
    dir: PathBuf,
    config_path: PathBuf,
    config_text: String,
    model_type: String,
    pad_token_id: Option<u32>,
}

impl ModelFolder {
    /// Opens a folder: reads `config.json` and its `model_type`. Weights and tokenizer are read when asked for.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        let (config_path, config_text) = read_config(&dir)?;
        #[derive(serde::Deserialize)]
        struct Head {
            model_type: Option<String>,
            pad_token_id: Option<serde_json::Value>,
        }
        let head: Head = serde_json::from_str(&config_text).map_err(|e| Error::Spec {
            file: config_path.display().to_string(),
            line: e.line(),
            col: e.column(),
            message: format!("{e} (line {}, column {})", e.line(), e.column()),
        })?;
        let model_type = head.model_type.ok_or_else(|| Error::Model {
            path: config_path.clone(),
            message: "no `model_type` field; add the Hugging Face model type (e.g. \"bert\")"
                .to_string(),
        })?;
        let pad_token_id = head
            .pad_token_id
            .and_then(|v| v.as_u64())
            .and_then(|v| u32::try_from(v).ok());
        Ok(ModelFolder {
            dir,
            config_path,
            config_text,
            model_type,
            pad_token_id,
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `config.json`'s `model_type` (`bert`, `roberta`, `t5`, `bart`, …).
    pub fn model_type(&self) -> &str {
        &self.model_type
    }

    /// The text of `config.json`.
    pub fn config_text(&self) -> &str {
        &self.config_text
    }

    /// The architecture registered for this folder's `model_type`.
    pub fn architecture(&self, registries: &Registries) -> Result<ArchitectureEntry> {
        registries
            .architecture_for(&self.model_type)
            .copied()
            .map_err(|e| match e {
                Error::UnknownName { name, known, .. } => Error::Model {
                    path: self.config_path.clone(),
                    message: format!(
                        "model_type `{name}` is not supported; known: {}",
                        known.join(", ")
                    ),
                },
                other => other,
            })
    }

    /// Layers, shapes and parameter count, from `config.json` alone (no weights are read).
    pub fn describe(&self, registries: &Registries) -> Result<BackboneInfo> {
        let entry = self.architecture(registries)?;
        (entry.describe)(&self.config_text).map_err(|e| with_config_path(e, &self.config_path))
    }

    /// Loads the model onto `device`, frozen (shared by every PEFT trial) or trainable (full fine-tuning: every
    /// weight a `Var`, listed by [`Backbone::trainable_weights`]).
    pub fn load(
        &self,
        registries: &Registries,
        device: &Device,
        weights: Weights,
    ) -> Result<Box<dyn Backbone>> {
        let entry = self.architecture(registries)?;
        entry
            .load_weights(&self.dir, device, weights)
            .map_err(|e| with_config_path(e, &self.config_path))
    }

    /// The folder's `tokenizer.json`, padding with `config.json`'s `pad_token_id` when it names one.
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        Tokenizer::from_file(&self.dir.join(TOKENIZER_FILE), self.pad_token_id)
    }

    /// The weight files: `model.safetensors`, or every shard `model.safetensors.index.json` lists.
    pub fn weight_files(&self) -> Result<Vec<PathBuf>> {
        weight_files(&self.dir)
    }

    /// SHA-256 over the folder's config, tokenizer and weight files (names and bytes, sorted by name): the
    /// backbone part of every trial id.
    pub fn identity(&self) -> Result<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map_err(|e| Error::io(&self.dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = file_name(p);
                name == CONFIG_FILE || name == TOKENIZER_FILE || name.ends_with(".safetensors")
            })
            .collect();
        files.sort();
        let mut hasher = Sha256::new();
        for path in files {
            hasher.update(file_name(&path).as_bytes());
            crate::trial::hash_file(&mut hasher, &path)?;
        }
        Ok(crate::trial::hex_digest(hasher))
    }
}

/// Errors an architecture raised about a bare `config.json` (it parses text, not files) name the real file instead.
pub fn with_config_path(error: Error, path: &Path) -> Error {
    match error {
        Error::Model { path: p, message } if p == Path::new(CONFIG_FILE) => Error::Model {
            path: path.to_path_buf(),
            message,
        },
        Error::Spec {
            file,
            line,
            col,
            message,
        } if file == CONFIG_FILE => Error::Spec {
            file: path.display().to_string(),
            line,
            col,
            message,
        },
        other => other,
    }
}

/// Reads `config.json` of a model folder: its path and its text.
pub fn read_config(dir: &Path) -> Result<(PathBuf, String)> {
    if !dir.is_dir() {
        return Err(Error::Model {
            path: dir.to_path_buf(),
            message:
                "not a folder; pass a Hugging Face model folder (config.json, model.safetensors, \
                      tokenizer.json)"
                    .to_string(),
        });
    }
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::Model {
        message: format!("cannot read the model configuration: {e}"),
        path: path.clone(),
    })?;
    Ok((path, text))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
}

/// The weight files of a model folder: `model.safetensors`, or every shard `model.safetensors.index.json` lists
/// (sorted, each once). A missing file is an error naming it.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join(WEIGHTS_FILE);
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join(WEIGHTS_INDEX_FILE);
    if !index.is_file() {
        return Err(Error::Model {
            path: single,
            message: format!(
                "no such file (nor {WEIGHTS_INDEX_FILE}); the folder needs safetensors weights (convert a \
                 pytorch_model.bin with transformers' save_pretrained(..., safe_serialization=True))"
            ),
        });
    }
    let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
    let shards = shard_names(&text).map_err(|message| Error::Model {
        path: index.clone(),
        message,
    })?;
    let files: Vec<PathBuf> = shards.iter().map(|s| dir.join(s)).collect();
    for path in &files {
        if !path.is_file() {
            return Err(Error::Model {
                path: path.clone(),
                message: format!("no such file (listed in {})", index.display()),
            });
        }
    }
    Ok(files)
}

/// The shard file names a `model.safetensors.index.json` text lists, sorted, each once.
pub fn shard_names(index_json: &str) -> std::result::Result<Vec<String>, String> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let parsed: Index =
        serde_json::from_str(index_json).map_err(|e| format!("invalid index: {e}"))?;
    let mut names: Vec<String> = parsed.weight_map.into_values().collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Err("the weight_map lists no tensors".to_string());
    }
    Ok(names)
}
