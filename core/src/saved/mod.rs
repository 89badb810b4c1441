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
use crate::spec::{StrategySpec, TaskSpec, TrainingSpec};
use crate::train::TargetScale;
use crate::trial::{hash_file, hex_digest};
use crate::{Error, Result};

pub use executor::SavingExecutor;
pub use predict::{design_hooks, probabilities, read_examples, Predictor};
pub use tensors::{file_error, read_tensors, write_tensors};

/// The manifest of a saved design.
pub const MANIFEST_FILE: &str = "design.json";
/// The design's and head's variables.
pub const TENSORS_FILE: &str = "weights.safetensors";
/// `format` of the manifests this version writes.
///
/// Version 2 stores each strategy's options with every field written out (no defaults left to the reader) and a
/// regression head's target scale; version 1 folders (options as the experiment spelled them, raw-target heads)
/// still load.
pub const FORMAT: &str = "peftspace-design/2";
/// Every `format` this version reads.
pub const READABLE_FORMATS: &[&str] = &["peftspace-design/1", FORMAT];

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
    /// A regression head's target scale (format 2): the head predicts standardised targets and maps them back.
    /// Absent for classification, and for format-1 heads, which predicted raw targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_scale: Option<TargetScale>,
    /// Where the task's data came from (format 2), so `eval DIR` scores the design on its own task with no flags:
    /// the task's definition from the experiment (custom and generation files as absolute paths) and the GLUE
    /// folder it was read from. Absent in format 1 and for imported adapters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<TaskSource>,
}

/// A saved design's task, as the experiment defined it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSource {
    pub definition: TaskSpec,
    /// The GLUE folder (GLUE tasks only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
}

impl TaskSource {
    /// `task` with its file paths made absolute against `spec_dir` (the experiment file's folder), and the GLUE
    /// folder when the task reads one.
    pub fn new(task: &TaskSpec, spec_dir: &Path, data_dir: Option<&Path>) -> TaskSource {
        let absolute = |p: &Path| -> PathBuf {
            let joined = spec_dir.join(p);
            std::path::absolute(&joined).unwrap_or(joined)
        };
        let mut definition = task.clone();
        if let Some(custom) = definition.custom.as_mut() {
            custom.train = absolute(&custom.train);
            custom.eval = absolute(&custom.eval);
        }
        if let Some(generation) = definition.generation.as_mut() {
            generation.train = absolute(&generation.train);
            generation.eval = absolute(&generation.eval);
        }
        TaskSource {
            data_dir: data_dir.filter(|_| task.is_glue()).map(absolute),
            definition,
        }
    }
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
    /// The strategy as a saved design records it: its options in canonical form ([`canonical_options`]).
    pub fn from_spec(spec: &StrategySpec) -> Result<SavedStrategy> {
        Ok(SavedStrategy {
            name: spec.name.clone(),
            options: canonical_options(spec)?,
            learning_rate: spec.learning_rate,
        })
    }
}

/// A strategy's options as RON text with every field written out, whatever the experiment's spelling (`()`, some
/// fields, all fields): the strategy, built from the options, writes them back
/// ([`crate::strategy::TuningStrategy::canonical_options`]). A strategy that does not write its options (a plugin
/// that predates the method) keeps the experiment's text.
pub fn canonical_options(spec: &StrategySpec) -> Result<String> {
    let registries = crate::registry::registries()?;
    let strategy = registries.strategy(&spec.name, &spec.options)?;
    match strategy.canonical_options() {
        Some(text) => Ok(text),
        None => ron::to_string(&spec.options)
            .map_err(|e| Error::msg(format!("options of `{}`: {e}", spec.name))),
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
            target_scale: None,
            source: None,
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
        if !READABLE_FORMATS.contains(&manifest.format.as_str()) {
            return Err(file_error(
                &path,
                format!(
                    "format `{}` is not one this version reads ({})",
                    manifest.format,
                    READABLE_FORMATS.join(", ")
                ),
            ));
        }
        let tensors = read_tensors(&dir.join(TENSORS_FILE), device)?;
        Ok(SavedDesign { manifest, tensors })
    }

    /// Refuses to write over `dir` when it already holds something else: a saved design of another design text,
    /// task or backbone, or files that are not a saved design. The same design retrained (a rerun of the same
    /// command) may replace itself. `force` skips the check. Called before training, so nothing is trained in vain.
    pub fn check_overwrite(
        dir: &Path,
        design: Option<&str>,
        task: &str,
        weights_sha256: &str,
        force: bool,
    ) -> Result<()> {
        if force || !dir.exists() {
            return Ok(());
        }
        let manifest_path = dir.join(MANIFEST_FILE);
        let refuse = |what: String| {
            Err(Error::Refused(format!(
                "{} {what}; choose another folder, or pass --force to replace it",
                dir.display()
            )))
        };
        if !manifest_path.is_file() {
            let empty = std::fs::read_dir(dir)
                .map_err(|e| Error::io(dir, e))?
                .next()
                .is_none();
            return if empty {
                Ok(())
            } else {
                refuse("holds files that are not a saved design".into())
            };
        }
        let text =
            std::fs::read_to_string(&manifest_path).map_err(|e| Error::io(&manifest_path, e))?;
        let stored: serde_json::Value =
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        let same = stored["design"].as_str() == design
            && stored["task"]["id"].as_str() == Some(task)
            && stored["backbone"]["weights_sha256"].as_str() == Some(weights_sha256);
        if same {
            Ok(())
        } else {
            refuse(format!(
                "holds another saved design (`{}` on task `{}`)",
                stored["design"].as_str().unwrap_or("?"),
                stored["task"]["id"].as_str().unwrap_or("?")
            ))
        }
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
