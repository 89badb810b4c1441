//! Gradients of a design's variables on a fixed probe: the check that every trainable variable is reached by the
//! backward pass (a hook site wired, no op cutting the graph), and the numbers to compare between devices.

use candle_core::Tensor;

use super::build_design;
use crate::backbone::{Backbone, Mode};
use crate::budget::LayerAssignment;
use crate::data::Tokenize;
use crate::params::ParamStore;
use crate::spec::TrainingSpec;
use crate::{Error, Result};

/// Every layer of `backbone` gets the same `(strategy, size)` list.
pub fn every_layer(backbone: &dyn Backbone, strategies: &[(&str, usize)]) -> Vec<LayerAssignment> {
    (0..backbone.info().num_layers())
        .map(|layer| LayerAssignment {
            layer,
            strategies: strategies
                .iter()
                .map(|(n, s)| (n.to_string(), *s))
                .collect(),
        })
        .collect()
}

/// Builds `plan` on `backbone` (variables seeded with `seed`, then moved off their initial values so that LoRA's
/// `A` and zero-initialised deltas get informative gradients), runs two short texts through it in evaluation mode,
/// and returns `(variable name, gradient)` for every trainable variable of the design, in creation order, of the
/// loss `Σ features · sin(j / 7)` (a different weight for every feature). A variable the backward pass does not
/// reach is an error naming it.
pub fn design_gradients(
    backbone: &dyn Backbone,
    tokenizer: &dyn Tokenize,
    plan: &[LayerAssignment],
    seed: u64,
) -> Result<Vec<(String, Tensor)>> {
    let device = backbone.device();
    let mut store = ParamStore::new(device, seed);
    let built = build_design(
        backbone.info(),
        plan,
        &[],
        &TrainingSpec::default(),
        &mut store,
    )?;
    if built.trainable_params != store.num_scalars() {
        return Err(Error::msg(format!(
            "the design reports {} trainable parameters but created {}",
            built.trainable_params,
            store.num_scalars()
        )));
    }
    for (_, var) in store.named_vars() {
        var.set(&(var.as_tensor() + 0.05)?)?;
    }
    let rows = [
        tokenizer.encode("hello world", None, 16)?,
        tokenizer.encode("the cat sat", None, 16)?,
    ];
    let batch = crate::data::pad_batch(&[&rows[0], &rows[1]], tokenizer.pad_id(), device)?;
    let features = backbone.features(&batch, &built.hooks, Mode::Eval)?;
    let weights = (Tensor::arange(0f32, features.dim(1)? as f32, device)? / 7.0)?.sin()?;
    let loss = features.broadcast_mul(&weights)?.sum_all()?;
    let grads = loss.backward()?;
    store
        .named_vars()
        .iter()
        .map(|(name, var)| {
            grads
                .get(var)
                .map(|g| (name.clone(), g.clone()))
                .ok_or_else(|| Error::msg(format!("no gradient reaches `{name}`")))
        })
        .collect()
}
