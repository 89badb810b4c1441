//! PEFT prefix-tuning adapters ⇄ the `prefix` strategy.
//!
//! PEFT stores one `prompt_embeddings` tensor `[num_virtual_tokens, num_layers · 2 · hidden]`; at run time it views
//! it as `[n, num_layers · 2, heads, head_dim]`, so columns `[2l·hidden, (2l+1)·hidden)` are layer `l`'s key rows and
//! the next `hidden` columns its value rows, each laid out heads × head_dim as our `[n, inner]` rows are. PEFT
//! prepends them in every layer with one length, so only such designs export.

use std::path::Path;

use candle_core::Tensor;
use serde_json::{Map, Value};

use peftspace_core::params::Tensors;
use peftspace_core::saved::{file_error, PlanLayer, SavedDesign, SavedStrategy};
use peftspace_core::shapes::AttentionKind;
use peftspace_core::{Error, Result};

use super::{base_config, export_head, import_head, Mapped, Target};
use crate::strategies::prefix::{var_name, PrefixOptions};

const EMBEDDINGS: &str = "prompt_embeddings";
/// PEFT saves a prompt-learning model's `modules_to_save` under `base_model.` (no `model.`).
const HEAD_PREFIX: &str = "base_model.";

/// Self-attention width of the backbone's layers, when every layer has the same (as PEFT assumes).
fn uniform_inner(target: &Target<'_>) -> Result<(usize, usize)> {
    let mut widths = target.info.layers.iter().map(|l| {
        l.attention_shape(AttentionKind::SelfAttention)
            .map(|a| (a.inner_dim(), a.heads))
    });
    let first = widths.next().flatten();
    match first {
        Some(w) if target.info.decoder_layers == 0 && widths.all(|x| x == Some(w)) => Ok(w),
        _ => Err(Error::msg(format!(
            "PEFT prefix adapters are mapped onto encoders with one attention width in every layer; this {} is not",
            target.model.model_type()
        ))),
    }
}

pub(super) fn import(
    config: &Map<String, Value>,
    config_path: &Path,
    tensors: Tensors,
    weights: &Path,
    target: &Target<'_>,
) -> Result<Mapped> {
    if config
        .get("prefix_projection")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        return Err(file_error(
            config_path,
            "`prefix_projection` is true: the adapter holds PEFT's reparameterisation MLP, not the prefix rows; \
             this importer maps plain prefixes",
        ));
    }
    let (inner, heads) = uniform_inner(target)?;
    let layers = target.info.encoder_layers;
    let number = |field: &str| {
        config
            .get(field)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
    };
    for (field, want) in [
        ("num_layers", layers),
        ("token_dim", inner),
        ("num_attention_heads", heads),
    ] {
        if let Some(found) = number(field) {
            if found != want {
                return Err(file_error(
                    config_path,
                    format!("`{field}` is {found} but this backbone has {want}; the adapter is for another model"),
                ));
            }
        }
    }
    let mut out = Tensors::new();
    let mut rows: Option<Tensor> = None;
    for (key, value) in tensors {
        if key == EMBEDDINGS {
            rows = Some(value);
            continue;
        }
        let rest = key
            .strip_prefix("base_model.model.")
            .or_else(|| key.strip_prefix(HEAD_PREFIX))
            .unwrap_or(&key);
        if !import_head(&key, rest, value, weights, target, &mut out)? {
            return Err(file_error(
                weights,
                format!("tensor `{key}` is neither `{EMBEDDINGS}` nor the head"),
            ));
        }
    }
    let rows = rows.ok_or_else(|| file_error(weights, format!("no `{EMBEDDINGS}` tensor")))?;
    let (n, width) = rows.dims2().map_err(|_| {
        file_error(
            weights,
            format!("tensor `{EMBEDDINGS}` has shape {:?}, not 2-d", rows.dims()),
        )
    })?;
    if n == 0 || width != layers * 2 * inner {
        return Err(file_error(
            weights,
            format!(
                "tensor `{EMBEDDINGS}` has shape {:?}; this backbone needs [num_virtual_tokens, {}] ({layers} layers × \
                 2 × {inner})",
                rows.dims(),
                layers * 2 * inner
            ),
        ));
    }
    for l in 0..layers {
        out.insert(
            var_name(l, AttentionKind::SelfAttention, "key"),
            rows.narrow(1, 2 * l * inner, inner)?.contiguous()?,
        );
        out.insert(
            var_name(l, AttentionKind::SelfAttention, "value"),
            rows.narrow(1, (2 * l + 1) * inner, inner)?.contiguous()?,
        );
    }
    Ok(Mapped {
        plan: (0..layers)
            .map(|layer| PlanLayer {
                layer,
                strategies: vec![("prefix".into(), n)],
            })
            .collect(),
        strategies: vec![SavedStrategy {
            name: "prefix".into(),
            options: "()".into(),
            learning_rate: None,
        }],
        tensors: out,
    })
}

pub(super) fn export(
    design: &SavedDesign,
    target: &Target<'_>,
) -> Result<(Map<String, Value>, Tensors)> {
    let options: PrefixOptions = design
        .strategy_specs()?
        .into_iter()
        .find(|s| s.name == "prefix")
        .map(|s| ron::Value::into_rust(s.options))
        .transpose()
        .map_err(|e| Error::msg(format!("options of `prefix`: {e}")))?
        .unwrap_or_default();
    let (inner, heads) = uniform_inner(target)?;
    let layers = target.info.encoder_layers;
    let plan = &design.manifest.plan;
    let lengths: Vec<usize> = plan.iter().map(|l| l.strategies[0].1).collect();
    let mut problems = Vec::new();
    if plan.len() != layers || plan.iter().enumerate().any(|(i, l)| l.layer != i) {
        let tuned: Vec<String> = plan.iter().map(|l| l.layer.to_string()).collect();
        problems.push(format!(
            "a prefix in layers {} only (PEFT prepends one in all {layers})",
            tuned.join(",")
        ));
    }
    if lengths.windows(2).any(|w| w[0] != w[1]) {
        let text: Vec<String> = lengths.iter().map(usize::to_string).collect();
        problems.push(format!(
            "per-layer prefix lengths {} (PEFT has one length)",
            text.join(",")
        ));
    }
    if options.reparameterize {
        problems.push("reparameterised prefixes (the MLP's rows are not stored)".to_string());
    }
    if !problems.is_empty() {
        return Err(Error::msg(format!(
            "this design cannot be exported to PEFT: {}",
            problems.join("; ")
        )));
    }
    let mut parts = Vec::new();
    for l in 0..layers {
        for rows in ["key", "value"] {
            let name = var_name(l, AttentionKind::SelfAttention, rows);
            parts.push(
                design
                    .tensors
                    .get(&name)
                    .ok_or_else(|| Error::msg(format!("tensor `{name}` is missing")))?
                    .clone(),
            );
        }
    }
    let mut tensors = Tensors::new();
    tensors.insert(EMBEDDINGS.into(), Tensor::cat(&parts, 1)?);
    export_head(design, target, HEAD_PREFIX, &mut tensors)?;
    let mut c = base_config("PREFIX_TUNING", target);
    c.insert("num_virtual_tokens".into(), lengths[0].into());
    c.insert("num_layers".into(), layers.into());
    c.insert("token_dim".into(), inner.into());
    c.insert("encoder_hidden_size".into(), inner.into());
    c.insert("num_attention_heads".into(), heads.into());
    c.insert("num_transformer_submodules".into(), 1.into());
    c.insert("prefix_projection".into(), false.into());
    Ok((c, tensors))
}
