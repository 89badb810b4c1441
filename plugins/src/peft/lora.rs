//! PEFT LoRA adapters ⇄ the `lora` strategy.
//!
//! PEFT keys a projection's update as `base_model.model.<module>.lora_A.weight` (`[r, d_in]`) and `…lora_B.weight`
//! (`[d_out, r]`) and scales it by `lora_alpha / r` (`/ √r` with `use_rslora`), with per-module overrides in
//! `rank_pattern` and `alpha_pattern`. Our `lora` has one rank per layer, one target list and one alpha. On import,
//! a module with a smaller rank than its layer's largest is padded with zero rows of `A` and zero columns of `B`, a
//! target a layer lacks gets zero matrices, and each module's scale is folded into its `B`: the output is PEFT's
//! exactly. On export, each layer's rank goes to `rank_pattern` under the module's full name.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use candle_core::{DType, Tensor};
use serde_json::{Map, Value};

use peftspace_core::params::Tensors;
use peftspace_core::saved::{file_error, PlanLayer, SavedDesign, SavedStrategy};
use peftspace_core::shapes::SiteKind;
use peftspace_core::strategy::parse_options;
use peftspace_core::{Error, Result};

use super::{base_config, export_head, import_head, Mapped, Target};
use crate::strategies::lora::{var_name, LoraOptions, LoraScaling};

/// Prefix of every LoRA key in a PEFT adapter file.
const KEY_PREFIX: &str = "base_model.model.";

/// One projection of the backbone: its layer, kind and sizes.
#[derive(Clone, Copy)]
struct Site {
    layer: usize,
    kind: SiteKind,
    d_in: usize,
    d_out: usize,
}

/// One projection's matrices as found in the file, with the module name they were keyed by.
struct Found {
    a: Option<Tensor>,
    b: Option<Tensor>,
    module: String,
    site: Site,
}

/// Module path (relative to the base model) → projection.
fn module_index(target: &Target<'_>) -> BTreeMap<String, Site> {
    let mut out = BTreeMap::new();
    for layer in &target.info.layers {
        for s in &layer.linear {
            if let Some(path) = (target.modules.linear)(target.info, layer.index, s.kind) {
                out.insert(
                    path,
                    Site {
                        layer: layer.index,
                        kind: s.kind,
                        d_in: s.d_in,
                        d_out: s.d_out,
                    },
                );
            }
        }
    }
    out
}

/// The value of the first key of a PEFT `*_pattern` that names `module` (the module itself or a dotted suffix).
fn pattern<T: Copy>(patterns: &BTreeMap<String, T>, module: &str) -> Option<T> {
    patterns
        .iter()
        .find(|(k, _)| module == k.as_str() || module.ends_with(&format!(".{k}")))
        .map(|(_, v)| *v)
}

pub(super) fn import(
    config: &Map<String, Value>,
    config_path: &Path,
    tensors: Tensors,
    weights: &Path,
    target: &Target<'_>,
) -> Result<Mapped> {
    let refuse = |field: &str, why: &str| {
        file_error(
            config_path,
            format!("`{field}`: {why}; this importer maps plain LoRA only"),
        )
    };
    let flag = |field: &str| config.get(field).and_then(Value::as_bool).unwrap_or(false);
    for field in ["use_dora", "fan_in_fan_out", "lora_bias"] {
        if flag(field) {
            return Err(refuse(field, "is true"));
        }
    }
    if let Some(bias) = config.get("bias").and_then(Value::as_str) {
        if bias != "none" {
            return Err(refuse("bias", &format!("is `{bias}` (trained biases)")));
        }
    }
    let alpha = config
        .get("lora_alpha")
        .and_then(Value::as_f64)
        .ok_or_else(|| file_error(config_path, "no numeric `lora_alpha`"))?;
    let rslora = flag("use_rslora");
    let alpha_pattern: BTreeMap<String, f64> = config
        .get("alpha_pattern")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                .collect()
        })
        .unwrap_or_default();

    let index = module_index(target);
    let base = target.base_prefix();
    let mut found: BTreeMap<(usize, SiteKind), Found> = BTreeMap::new();
    let mut out = Tensors::new();
    for (key, value) in tensors {
        let Some(rest) = key.strip_prefix(KEY_PREFIX) else {
            return Err(file_error(
                weights,
                format!("tensor `{key}`: LoRA keys start with `{KEY_PREFIX}`"),
            ));
        };
        if import_head(&key, rest, value.clone(), weights, target, &mut out)? {
            continue;
        }
        let (module, matrix) = match (rest.strip_suffix(".lora_A.weight"), rest.strip_suffix(".lora_B.weight")) {
            (Some(m), _) => (m, 'A'),
            (_, Some(m)) => (m, 'B'),
            _ => {
                return Err(file_error(
                    weights,
                    format!("tensor `{key}` is not a LoRA matrix (`….lora_A.weight` / `….lora_B.weight`) nor the head"),
                ))
            }
        };
        let relative = module.strip_prefix(&format!("{base}.")).unwrap_or(module);
        let site = *index.get(relative).ok_or_else(|| {
            let example = index.keys().next().map_or(String::new(), |k| format!("{base}.{k}"));
            file_error(
                weights,
                format!(
                    "tensor `{key}`: `{module}` is not a projection of this {} backbone (its modules are named like \
                     `{example}`); is the adapter made for another architecture?",
                    target.model.model_type()
                ),
            )
        })?;
        let entry = found.entry((site.layer, site.kind)).or_insert(Found {
            a: None,
            b: None,
            module: module.to_string(),
            site,
        });
        if matrix == 'A' {
            entry.a = Some(value);
        } else {
            entry.b = Some(value);
        }
    }
    if found.is_empty() {
        return Err(file_error(weights, "no LoRA matrices in the file"));
    }

    // Check shapes, then each layer's rank (the largest of its modules).
    let mut modules = Vec::new();
    for Found { a, b, module, site } in found.into_values() {
        let key = |m: &str| format!("{KEY_PREFIX}…{module}.{m}.weight");
        let a = a.ok_or_else(|| file_error(weights, format!("`{}` is missing", key("lora_A"))))?;
        let b = b.ok_or_else(|| file_error(weights, format!("`{}` is missing", key("lora_B"))))?;
        let r = a.dims().first().copied().unwrap_or(0);
        if r == 0 || a.dims() != [r, site.d_in] || b.dims() != [site.d_out, r] {
            return Err(file_error(
                weights,
                format!(
                    "`{}` has shape {:?} and `{}` {:?}; this backbone's projection needs [r, {}] and [{}, r]",
                    key("lora_A"),
                    a.dims(),
                    key("lora_B"),
                    b.dims(),
                    site.d_in,
                    site.d_out
                ),
            ));
        }
        let module_alpha = pattern(&alpha_pattern, &module).unwrap_or(alpha);
        let scale = if rslora {
            module_alpha / (r as f64).sqrt()
        } else {
            module_alpha / r as f64
        };
        modules.push((site, r, scale, a, b));
    }
    let mut ranks: BTreeMap<usize, usize> = BTreeMap::new();
    let mut kinds: BTreeSet<SiteKind> = BTreeSet::new();
    for (site, r, ..) in &modules {
        let e = ranks.entry(site.layer).or_insert(0);
        *e = (*e).max(*r);
        kinds.insert(site.kind);
    }
    let device = modules[0].3.device().clone();
    for (site, r, scale, a, b) in &modules {
        let rank = ranks[&site.layer];
        let ours = alpha / rank as f64;
        let b = (b.to_dtype(DType::F32)? * (scale / ours))?;
        let (a, b) = if *r < rank {
            let pad_a = Tensor::zeros((rank - r, site.d_in), DType::F32, &device)?;
            let pad_b = Tensor::zeros((site.d_out, rank - r), DType::F32, &device)?;
            (
                Tensor::cat(&[a, &pad_a], 0)?,
                Tensor::cat(&[&b, &pad_b], 1)?,
            )
        } else {
            (a.clone(), b)
        };
        out.insert(var_name(site.layer, site.kind, "lora_A"), a);
        out.insert(var_name(site.layer, site.kind, "lora_B"), b);
    }
    // Targets a layer lacks (PEFT's layers_to_transform, or a pattern): zero updates of the layer's rank.
    for layer in &target.info.layers {
        let Some(&rank) = ranks.get(&layer.index) else {
            continue;
        };
        for s in layer.linear.iter().filter(|s| kinds.contains(&s.kind)) {
            let name = var_name(layer.index, s.kind, "lora_A");
            if !out.contains_key(&name) {
                out.insert(name, Tensor::zeros((rank, s.d_in), DType::F32, &device)?);
                out.insert(
                    var_name(layer.index, s.kind, "lora_B"),
                    Tensor::zeros((s.d_out, rank), DType::F32, &device)?,
                );
            }
        }
    }
    let targets: Vec<String> = kinds
        .iter()
        .map(|k| format!("{:?}", k.short_name()))
        .collect();
    Ok(Mapped {
        plan: ranks
            .iter()
            .map(|(&layer, &rank)| PlanLayer {
                layer,
                strategies: vec![("lora".into(), rank)],
            })
            .collect(),
        strategies: vec![SavedStrategy {
            name: "lora".into(),
            options: format!("(targets: [{}], alpha: {alpha:?})", targets.join(", ")),
            learning_rate: None,
        }],
        tensors: out,
    })
}

pub(super) fn export(
    design: &SavedDesign,
    target: &Target<'_>,
) -> Result<(Map<String, Value>, Tensors)> {
    // `parse_options`: a format-1 design may store `()` for the defaults.
    let options: LoraOptions = design
        .strategy_specs()?
        .into_iter()
        .find(|s| s.name == "lora")
        .map(|s| parse_options("lora", &s.options))
        .transpose()?
        .unwrap_or_default();
    let base = target.base_prefix();
    let mut tensors = Tensors::new();
    let mut ranks: BTreeMap<String, usize> = BTreeMap::new();
    for layer in &design.manifest.plan {
        let Some(&(_, rank)) = layer.strategies.first() else {
            continue;
        };
        let Some(shape) = target.info.layers.get(layer.layer) else {
            return Err(Error::msg(format!(
                "the plan names layer {} the backbone lacks",
                layer.layer
            )));
        };
        for s in &shape.linear {
            let Some(a) = design.tensors.get(&var_name(layer.layer, s.kind, "lora_A")) else {
                continue;
            };
            let b_name = var_name(layer.layer, s.kind, "lora_B");
            let b = design
                .tensors
                .get(&b_name)
                .ok_or_else(|| Error::msg(format!("tensor `{b_name}` is missing")))?;
            let module =
                (target.modules.linear)(target.info, layer.layer, s.kind).ok_or_else(|| {
                    Error::msg(format!(
                        "layer {} projection `{}` has no transformers module name",
                        layer.layer,
                        s.kind.short_name()
                    ))
                })?;
            let full = format!("{base}.{module}");
            tensors.insert(format!("base_model.model.{full}.lora_A.weight"), a.clone());
            tensors.insert(format!("base_model.model.{full}.lora_B.weight"), b.clone());
            ranks.insert(full, rank);
        }
    }
    if ranks.is_empty() {
        return Err(Error::msg(
            "the design's LoRA updates no projection of this backbone",
        ));
    }
    // The most common rank is `r`; the others go to rank_pattern (the same alpha keeps each layer's alpha / r).
    let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
    for r in ranks.values() {
        *counts.entry(*r).or_default() += 1;
    }
    let r = counts
        .iter()
        .max_by_key(|(r, c)| (**c, std::cmp::Reverse(**r)))
        .map_or(0, |(r, _)| *r);
    let rank_pattern: Map<String, Value> = ranks
        .iter()
        .filter(|(_, &v)| v != r)
        .map(|(k, &v)| (k.clone(), v.into()))
        .collect();
    export_head(design, target, "base_model.model.", &mut tensors)?;
    let mut c = base_config("LORA", target);
    c.insert("r".into(), r.into());
    c.insert("lora_alpha".into(), options.alpha.into());
    c.insert("lora_dropout".into(), 0.0.into());
    c.insert("bias".into(), "none".into());
    c.insert("fan_in_fan_out".into(), false.into());
    // rsLoRA's alpha / √r per module is exactly our `scaling: Rank` at each layer's rank.
    c.insert(
        "use_rslora".into(),
        (options.scaling()? == LoraScaling::Rank).into(),
    );
    c.insert("use_dora".into(), false.into());
    c.insert("init_lora_weights".into(), true.into());
    c.insert(
        "target_modules".into(),
        Value::Array(ranks.keys().map(|k| Value::from(k.as_str())).collect()),
    );
    c.insert("rank_pattern".into(), Value::Object(rank_pattern));
    c.insert("alpha_pattern".into(), Value::Object(Map::new()));
    Ok((c, tensors))
}
