//! What `predict`, `eval`, `export`, `encode --adapter` and `train --adapter` share: reading a design folder, either
//! saved by `train --save` or a Hugging Face PEFT adapter (mapped onto the model), and finding its model.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use candle_core::Device;
use peftspace_core::model::ModelFolder;
use peftspace_core::registry::registries;
use peftspace_core::resolve::ModelNeeds;
use peftspace_core::saved::{SavedDesign, MANIFEST_FILE, TENSORS_FILE};
use peftspace_core::spec::BackboneSpec;
use peftspace_plugins::peft;

use super::{Exit, Global};

/// A design read from a folder.
pub struct Design {
    pub design: SavedDesign,
    /// The tensor file, for messages.
    pub source: PathBuf,
    /// Whether the folder came with a task head for this backbone.
    pub has_head: bool,
}

/// The model a design folder runs on: `--model` (or `PEFTSPACE_MODEL`), else the model the saved design records
/// (its hub id, or its folder), else a PEFT adapter's `base_model_name_or_path`.
pub fn model_for(dir: &Path, global: &Global) -> Result<ModelFolder, Exit> {
    let spec = if peft::is_adapter(dir) {
        let path = dir.join(peft::CONFIG_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Exit::usage(anyhow!("{}: {e}", path.display())))?;
        let base = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| {
                v.get("base_model_name_or_path")?
                    .as_str()
                    .map(str::to_string)
            });
        match base {
            Some(b) if Path::new(&b).is_dir() => BackboneSpec {
                path: Some(b.into()),
                hub_id: None,
            },
            Some(b) => BackboneSpec {
                path: None,
                hub_id: Some(b),
            },
            None => BackboneSpec {
                path: None,
                hub_id: None,
            },
        }
    } else {
        let manifest = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&manifest).map_err(|e| {
            Exit::usage(anyhow!(
                "{}: {e}; give a folder written by `train --save` or a PEFT adapter folder ({})",
                manifest.display(),
                peft::CONFIG_FILE
            ))
        })?;
        let saved: peftspace_core::saved::Manifest = serde_json::from_str(&text)
            .map_err(|e| Exit::usage(anyhow!("{}: {e}", manifest.display())))?;
        let b = saved.backbone;
        BackboneSpec {
            path: Some(b.path).filter(|p| p.is_dir() || b.hub_id.is_none()),
            hub_id: b.hub_id,
        }
    };
    super::resolver(global)
        .model_folder(
            global.model.as_deref(),
            &spec,
            Path::new("."),
            ModelNeeds::Everything,
        )
        .map_err(Exit::library)
}

/// Reads the design in `dir` for `model`: a saved design (refused unless `model` has the weights it was trained
/// on), or a PEFT adapter mapped onto `model`'s hook sites.
pub fn read(dir: &Path, model: &ModelFolder, device: &Device) -> Result<Design, Exit> {
    if peft::is_adapter(dir) {
        let registries = registries()?;
        let info = model.describe(&registries).map_err(Exit::library)?;
        let target = peft::Target::new(model, &info, &registries).map_err(Exit::usage)?;
        let imported = peft::import(dir, &target, device).map_err(Exit::usage)?;
        return Ok(Design {
            design: imported.design,
            source: imported.source,
            has_head: imported.has_head,
        });
    }
    let design = SavedDesign::load(dir, device).map_err(Exit::usage)?;
    design.check_backbone(model).map_err(Exit::usage)?;
    Ok(Design {
        design,
        source: dir.join(TENSORS_FILE),
        has_head: true,
    })
}
