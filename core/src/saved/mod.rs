//! Trained designs as files (`docs/SAVED_DESIGNS.md`): a folder with `design.json` (the design text, the solved
//! per-layer plan, the strategies' options, the task, the backbone's identity, the training settings and the
//! scores) and `weights.safetensors` (every design and head variable under its [`crate::params::ParamStore`] name).
//!
//! A saved design is loaded only onto the backbone it was trained on: the SHA-256 of the weight files must match.
//! [`Predictor`] rebuilds the design's hooks and head from the file and scores examples. [`SavingExecutor`] writes
//! the final runs' trained designs (`final_runs.save`).

mod executor;
mod predict;
mod tensors;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::budget::LayerAssignment;
use crate::data::TaskKind;
use crate::evaluator::Metrics;
use crate::model::ModelFolder;
use crate::params::Tensors;
use crate::spec::{StrategySpec, TrainingSpec};
use crate::trial::{hash_file, hex_digest};
use crate::{Error, Result};

pub use executor::SavingExecutor;
pub use predict::{design_hooks, probabilities, read_examples, Predictor};
pub use tensors::{file_error, read_tensors, write_tensors};

/// The manifest of a saved design.
pub const MANIFEST_FILE: &str = "design.json";
/// The design's and head's variables.
pub const TENSORS_FILE: &str = "weights.safetensors";
/// `format` of the manifests this version writes and reads.
pub const FORMAT: &str = "peftspace-design/1";

/// `design.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// The design's text (`g=… a=… t=… s=…`, a baseline's text, or `None` for an imported adapter).
    pub design: Option<String>,
    /// The solved per-layer strategy sizes the variables were built with.
    pub plan: Vec<PlanLayer>,
    /// Options and learning rates of the strategies the plan names.
    pub strategies: Vec<SavedStrategy>,
    pub task: SavedTask,
    pub backbone: SavedBackbone,
    /// Training settings and seed (absent for an imported adapter).
    pub training: Option<TrainingSpec>,
    pub seed: Option<u64>,
    /// The scores the training run reported for the saved epoch.
    pub metrics: Option<SavedMetrics>,
}

/// One layer of the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanLayer {
    pub layer: usize,
    /// `[strategy name, size]` in the order their modules run.
    pub strategies: Vec<(String, usize)>,
}

/// A strategy's options as RON text (the experiment file's syntax) and its learning rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedStrategy {
    pub name: String,
    pub options: String,
    pub learning_rate: Option<f64>,
}

/// What the head predicts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedTask {
    pub id: String,
    /// Class names in index order; empty for regression.
    pub labels: Vec<String>,
    pub regression: bool,
    /// Evaluator name the training run scored with.
    pub evaluator: String,
    /// A generation task's target length limit (no head: the language model predicts tokens); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_target_tokens: Option<usize>,
}

/// Which backbone the variables belong to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedBackbone {
    pub model_type: String,
    /// The hub id the model was resolved from, when there was one.
    pub hub_id: Option<String>,
    /// The model folder used for training.
    pub path: PathBuf,
    /// SHA-256 over the weight files' bytes ([`weights_sha256`]).
    pub weights_sha256: String,
}

/// The selected epoch's scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedMetrics {
    pub primary: f64,
    pub values: BTreeMap<String, f64>,
    pub epoch: Option<usize>,
}

/// A manifest and its tensors.
#[derive(Debug, Clone)]
pub struct SavedDesign {
    pub manifest: Manifest,
    pub tensors: Tensors,
}

impl PlanLayer {
    pub fn from_plan(plan: &[LayerAssignment]) -> Vec<PlanLayer> {
        plan.iter()
            .map(|a| PlanLayer {
                layer: a.layer,
                strategies: a.strategies.clone(),
            })
            .collect()
    }
}

impl SavedStrategy {
    pub fn from_spec(spec: &StrategySpec) -> Result<SavedStrategy> {
        Ok(SavedStrategy {
            name: spec.name.clone(),
            options: ron::to_string(&spec.options)
                .map_err(|e| Error::msg(format!("options of `{}`: {e}", spec.name)))?,
            learning_rate: spec.learning_rate,
        })
    }
}

impl SavedTask {
    pub fn new(id: &str, kind: &TaskKind, evaluator: &str) -> SavedTask {
        let (labels, regression, max_target_tokens) = match kind {
            TaskKind::Classification { labels } => (labels.clone(), false, None),
            TaskKind::Regression => (Vec::new(), true, None),
            TaskKind::Generation {
                max_target_tokens, ..
            } => (Vec::new(), false, Some(*max_target_tokens)),
        };
        SavedTask {
            id: id.to_string(),
            labels,
            regression,
            evaluator: evaluator.to_string(),
            max_target_tokens,
        }
    }

    pub fn kind(&self) -> TaskKind {
        if let Some(max_target_tokens) = self.max_target_tokens {
            TaskKind::Generation {
                max_source_tokens: None,
                max_target_tokens,
                decoding: Default::default(),
            }
        } else if self.regression {
            TaskKind::Regression
        } else {
            TaskKind::Classification {
                labels: self.labels.clone(),
            }
        }
    }
}

impl SavedMetrics {
    pub fn new(metrics: &Metrics, epoch: Option<usize>) -> SavedMetrics {
        SavedMetrics {
            primary: metrics.primary,
            values: metrics.values.clone(),
            epoch,
        }
    }
}

impl SavedBackbone {
    /// The identity of `model` (hashes its weight files).
    pub fn of(model: &ModelFolder, hub_id: Option<&str>) -> Result<SavedBackbone> {
        Ok(SavedBackbone {
            model_type: model.model_type().to_string(),
            hub_id: hub_id.map(str::to_string),
            path: model.dir().to_path_buf(),
            weights_sha256: weights_sha256(model)?,
        })
    }
}

impl SavedDesign {
    /// The plan as the trainer takes it.
    pub fn plan(&self) -> Vec<LayerAssignment> {
        self.manifest
            .plan
            .iter()
            .map(|l| LayerAssignment {
                layer: l.layer,
                strategies: l.strategies.clone(),
            })
            .collect()
    }

    /// The strategies' options parsed back from RON.
    pub fn strategy_specs(&self) -> Result<Vec<StrategySpec>> {
        self.manifest
            .strategies
            .iter()
            .map(|s| {
                let options = ron::from_str(&s.options).map_err(|e| {
                    Error::msg(format!(
                        "{MANIFEST_FILE}: options of strategy `{}` are not valid RON: {e}",
                        s.name
                    ))
                })?;
                Ok(StrategySpec {
                    name: s.name.clone(),
                    options,
                    learning_rate: s.learning_rate,
                })
            })
            .collect()
    }

    /// Writes `design.json` and `weights.safetensors` into `dir` (created if needed).
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        write_tensors(&dir.join(TENSORS_FILE), &self.tensors)?;
        let manifest = dir.join(MANIFEST_FILE);
        let text = serde_json::to_string_pretty(&self.manifest)
            .map_err(|e| Error::msg(format!("{}: {e}", manifest.display())))?;
        crate::store::write_bytes_atomically(&manifest, format!("{text}\n").as_bytes())
    }

    /// Reads a folder [`SavedDesign::save`] wrote; tensors go to `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<SavedDesign> {
        let path = dir.join(MANIFEST_FILE);
        if !path.is_file() {
            return Err(file_error(
                &path,
                format!(
                    "no such file; give a folder written by `peftspace train --save` (it holds {MANIFEST_FILE} and \
                     {TENSORS_FILE})"
                ),
            ));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| Error::Spec {
            file: path.display().to_string(),
            line: e.line(),
            col: e.column(),
            message: e.to_string(),
        })?;
        if manifest.format != FORMAT {
            return Err(file_error(
                &path,
                format!(
                    "format `{}` is not `{FORMAT}`, the one this version reads",
                    manifest.format
                ),
            ));
        }
        let tensors = read_tensors(&dir.join(TENSORS_FILE), device)?;
        Ok(SavedDesign { manifest, tensors })
    }

    /// Refuses a backbone other than the one the design was trained on (another weights hash or model type).
    pub fn check_backbone(&self, model: &ModelFolder) -> Result<()> {
        let saved = &self.manifest.backbone;
        let found = weights_sha256(model)?;
        if found != saved.weights_sha256 || model.model_type() != saved.model_type {
            return Err(Error::Model {
                path: model.dir().to_path_buf(),
                message: format!(
                    "this design was trained on another backbone: saved {} weights sha256 {} ({}), given {} weights \
                     sha256 {found}; pass the model it was trained on with --model",
                    saved.model_type,
                    saved.weights_sha256,
                    saved
                        .hub_id
                        .clone()
                        .unwrap_or_else(|| saved.path.display().to_string()),
                    model.model_type(),
                ),
            });
        }
        Ok(())
    }
}

/// SHA-256 over the bytes of a model folder's weight files (in [`ModelFolder::weight_files`] order).
pub fn weights_sha256(model: &ModelFolder) -> Result<String> {
    let mut hasher = Sha256::new();
    for path in model.weight_files()? {
        hash_file(&mut hasher, &path)?;
    }
    Ok(hex_digest(hasher))
}
