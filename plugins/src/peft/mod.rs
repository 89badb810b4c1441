//! Exchanging adapters with Hugging Face PEFT (`docs/SAVED_DESIGNS.md`, "PEFT adapters"): a PEFT LoRA adapter folder (`adapter_config.json` + `adapter_model.safetensors`) becomes a
//! [`SavedDesign`] of the built-in `lora` strategy, and a LoRA-only design is written as one. Prefix tuning is
//! not exchanged (see [`PREFIX_POSITIONS`]). The backbone's side (where transformers keeps each projection) comes from its
//! [`peftspace_core::backbone::HfModules`]; the strategies' side (variable names) from the strategies' `var_name`.

mod lora;

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde_json::{Map, Value};

use peftspace_core::backbone::HfModules;
use peftspace_core::model::ModelFolder;
use peftspace_core::params::Tensors;
use peftspace_core::registry::Registries;
use peftspace_core::saved::{
    file_error, read_tensors, write_tensors, Manifest, SavedBackbone, SavedDesign, SavedTask,
    FORMAT,
};
use peftspace_core::shapes::BackboneInfo;
use peftspace_core::{Error, Result};

/// PEFT's configuration file.
pub const CONFIG_FILE: &str = "adapter_config.json";
/// PEFT's tensor file.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// Our head's variables (`core::train::TaskHead`).
const HEAD_WEIGHT: &str = "head.weight";
const HEAD_BIAS: &str = "head.bias";

/// Why prefix-tuning adapters are not exchanged.
const PREFIX_POSITIONS: &str = "PEFT's prefix tuning of BERT/RoBERTa counts the virtual tokens as past positions, so the \
     input's position ids start at num_virtual_tokens, while our `prefix` keeps them at 0; an exchanged prefix would \
     not give PEFT's outputs";

/// Whether `dir` holds a PEFT adapter (rather than a design saved by `train --save`).
pub fn is_adapter(dir: &Path) -> bool {
    dir.join(CONFIG_FILE).is_file()
}

/// What an imported adapter is: the design (its `head.*` tensors present only when the adapter carries a head
/// this backbone's head can take) and whether it has that head.
pub struct Imported {
    pub design: SavedDesign,
    pub has_head: bool,
    /// The adapter's tensor file, for messages.
    pub source: PathBuf,
}

/// The backbone an adapter is mapped onto.
pub struct Target<'a> {
    pub model: &'a ModelFolder,
    pub info: &'a BackboneInfo,
    pub modules: HfModules,
}

impl<'a> Target<'a> {
    /// `model`'s description and module names, or an error saying its architecture cannot exchange adapters.
    pub fn new(
        model: &'a ModelFolder,
        info: &'a BackboneInfo,
        registries: &Registries,
    ) -> Result<Self> {
        let modules = model
            .architecture(registries)?
            .hf_modules
            .ok_or_else(|| Error::Model {
                path: model.dir().to_path_buf(),
                message: format!(
                    "PEFT adapters are not mapped onto `{}` models (BERT, RoBERTa, T5 and BART are)",
                    model.model_type()
                ),
            })?;
        Ok(Target {
            model,
            info,
            modules,
        })
    }

    fn base_prefix(&self) -> &'static str {
        (self.modules.base_prefix)(self.model.model_type())
    }
}

/// Reads a PEFT adapter folder and maps it onto `target`'s hook sites.
pub fn import(dir: &Path, target: &Target<'_>, device: &Device) -> Result<Imported> {
    let config_path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let config: Map<String, Value> = serde_json::from_str(&text).map_err(|e| Error::Spec {
        file: config_path.display().to_string(),
        line: e.line(),
        col: e.column(),
        message: e.to_string(),
    })?;
    let weights = dir.join(WEIGHTS_FILE);
    let tensors = read_tensors(&weights, device)?;
    let peft_type = config
        .get("peft_type")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mapped = match peft_type {
        "LORA" => lora::import(&config, &config_path, tensors, &weights, target)?,
        "PREFIX_TUNING" => return Err(file_error(&config_path, PREFIX_POSITIONS)),
        other => {
            return Err(file_error(
                &config_path,
                format!("peft_type `{other}` is not imported; LORA adapters are"),
            ))
        }
    };
    let labels = mapped
        .tensors
        .get(HEAD_WEIGHT)
        .map(|w| w.dims().first().copied().unwrap_or(0))
        .unwrap_or(0);
    let has_head = labels > 0;
    Ok(Imported {
        design: SavedDesign {
            manifest: Manifest {
                format: FORMAT.to_string(),
                design: None,
                plan: mapped.plan,
                strategies: mapped.strategies,
                task: SavedTask {
                    id: "peft".into(),
                    labels: (0..labels).map(|i| format!("LABEL_{i}")).collect(),
                    regression: false,
                    evaluator: "accuracy".into(),
                    max_target_tokens: None,
                    target_scale: None,
                    source: None,
                },
                backbone: SavedBackbone {
                    model_type: target.model.model_type().to_string(),
                    hub_id: None,
                    path: target.model.dir().to_path_buf(),
                    weights_sha256: String::new(),
                },
                training: None,
                seed: None,
                metrics: None,
            },
            tensors: mapped.tensors,
        },
        has_head,
        source: weights,
    })
}

/// Writes `design` (trained on `target`'s backbone) as a PEFT adapter in `out`, or explains which parts PEFT
/// cannot express; nothing is written then.
pub fn export(design: &SavedDesign, target: &Target<'_>, out: &Path) -> Result<()> {
    let names: std::collections::BTreeSet<&str> = design
        .manifest
        .plan
        .iter()
        .flat_map(|l| l.strategies.iter().map(|(n, _)| n.as_str()))
        .collect();
    let (config, tensors) = match names.iter().copied().collect::<Vec<_>>().as_slice() {
        ["lora"] => lora::export(design, target)?,
        ["prefix"] => {
            return Err(Error::msg(format!(
                "this design cannot be exported to PEFT: {PREFIX_POSITIONS}"
            )))
        }
        [] => return Err(Error::msg(
            "the design tunes no layer (only its head trained); PEFT has no adapter type for that",
        )),
        other => {
            let parts: Vec<String> = other
                .iter()
                .filter(|n| **n != "lora")
                .map(|n| format!("`{n}` (no PEFT adapter type)"))
                .collect();
            let mixed = if other.len() > 1 {
                format!(
                    "a mix of {} (one PEFT adapter holds one method)",
                    other.join(" + ")
                )
            } else {
                String::new()
            };
            let listed: Vec<String> = parts
                .into_iter()
                .chain(Some(mixed).filter(|m| !m.is_empty()))
                .collect();
            return Err(Error::msg(format!(
                "this design cannot be exported to PEFT: {}; only LoRA-only designs and prefix-only designs with \
                 one prefix length in every layer can",
                listed.join("; ")
            )));
        }
    };
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    write_tensors(&out.join(WEIGHTS_FILE), &tensors)?;
    let path = out.join(CONFIG_FILE);
    let text = serde_json::to_string_pretty(&Value::Object(config))
        .map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
    std::fs::write(&path, format!("{text}\n")).map_err(|e| Error::io(&path, e))
}

/// What an importer mapped: the plan, the strategies' options and the tensors under our names.
struct Mapped {
    plan: Vec<peftspace_core::saved::PlanLayer>,
    strategies: Vec<peftspace_core::saved::SavedStrategy>,
    tensors: Tensors,
}

/// The task head of a BERT sequence classifier (`classifier.weight` `[labels, hidden]`, `classifier.bias`) as
/// ours; RoBERTa's classifier has a dense layer of its own that our head lacks.
fn import_head(
    key: &str,
    rest: &str,
    value: candle_core::Tensor,
    weights: &Path,
    target: &Target<'_>,
    out: &mut Tensors,
) -> Result<bool> {
    let name = match rest {
        "classifier.weight" | "classifier.modules_to_save.default.weight" => HEAD_WEIGHT,
        "classifier.bias" | "classifier.modules_to_save.default.bias" => HEAD_BIAS,
        _ if rest.starts_with("classifier.") || rest.starts_with("score.") => {
            if target.model.model_type() == "bert" {
                return Err(file_error(
                    weights,
                    format!(
                        "tensor `{key}`: not a BERT sequence classifier's head (`classifier.weight`, \
                         `classifier.bias`); is the adapter made for another architecture?"
                    ),
                ));
            }
            // Another architecture's head (RoBERTa's dense + out_proj): the adapter still maps without it.
            return Ok(true);
        }
        _ => return Ok(false),
    };
    if target.model.model_type() != "bert" {
        return Ok(true);
    }
    let hidden = target.info.hidden;
    let ok = match name {
        HEAD_WEIGHT => value.dims().len() == 2 && value.dims()[1] == hidden,
        _ => value.dims().len() == 1,
    };
    if !ok {
        return Err(file_error(
            weights,
            format!(
                "tensor `{key}` has shape {:?}; a classifier on this backbone's {hidden}-wide features needs \
                 [labels, {hidden}] weights and [labels] biases",
                value.dims()
            ),
        ));
    }
    out.insert(name.to_string(), value);
    Ok(true)
}

/// PEFT's key of our head's tensor, as `PeftModelForSequenceClassification` saves `modules_to_save`.
fn export_head(
    design: &SavedDesign,
    target: &Target<'_>,
    key_prefix: &str,
    out: &mut Tensors,
) -> Result<()> {
    let (Some(w), Some(b)) = (
        design.tensors.get(HEAD_WEIGHT),
        design.tensors.get(HEAD_BIAS),
    ) else {
        return Err(Error::msg(
            "the design has no task head (head.weight, head.bias)",
        ));
    };
    if target.model.model_type() != "bert" {
        return Err(Error::msg(format!(
            "the task head cannot be exported for `{}` backbones: transformers' classifier there has a dense layer \
             of its own (BERT's classifier is exactly our head)",
            target.model.model_type()
        )));
    }
    out.insert(format!("{key_prefix}classifier.weight"), w.clone());
    out.insert(format!("{key_prefix}classifier.bias"), b.clone());
    Ok(())
}

/// The common fields of an exported `adapter_config.json`.
fn base_config(peft_type: &str, target: &Target<'_>) -> Map<String, Value> {
    let mut c = Map::new();
    c.insert("peft_type".into(), peft_type.into());
    c.insert("task_type".into(), "SEQ_CLS".into());
    c.insert("inference_mode".into(), true.into());
    c.insert(
        "base_model_name_or_path".into(),
        target.model.dir().display().to_string().into(),
    );
    c.insert(
        "modules_to_save".into(),
        Value::Array(vec!["classifier".into(), "score".into()]),
    );
    c
}
