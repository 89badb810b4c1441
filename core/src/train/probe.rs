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
    let probe = Probe::new(backbone, tokenizer, plan, seed)?;
    let loss = probe.loss()?;
    let grads = loss.backward()?;
    probe
        .store
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

/// For every trainable variable of the design, its element with the largest gradient: `(variable name, analytic
/// gradient, central finite difference with step `step`)` of the probe loss of [`design_gradients`]. A wrong
/// backward pass (a missing scale, a transposed product, a cut path) shows as a mismatch; a non-zero gradient alone
/// would not.
pub fn finite_difference_check(
    backbone: &dyn Backbone,
    tokenizer: &dyn Tokenize,
    plan: &[LayerAssignment],
    seed: u64,
    step: f32,
) -> Result<Vec<(String, f32, f32)>> {
    let probe = Probe::new(backbone, tokenizer, plan, seed)?;
    let grads = probe.loss()?.backward()?;
    let mut out = Vec::new();
    for (name, var) in probe.store.named_vars() {
        let grad = grads
            .get(&var)
            .ok_or_else(|| Error::msg(format!("no gradient reaches `{name}`")))?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let Some((index, &analytic)) = grad
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
        else {
            continue;
        };
        let shape = var.as_tensor().shape().clone();
        let original = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        let loss_at = |delta: f32| -> Result<f32> {
            let mut values = original.clone();
            values[index] += delta;
            var.set(&Tensor::from_vec(
                values,
                shape.clone(),
                var.as_tensor().device(),
            )?)?;
            Ok(probe.loss()?.to_scalar::<f32>()?)
        };
        let (plus, minus) = (loss_at(step)?, loss_at(-step)?);
        var.set(&Tensor::from_vec(
            original,
            shape.clone(),
            var.as_tensor().device(),
        )?)?;
        out.push((name.clone(), analytic, (plus - minus) / (2.0 * step)));
    }
    Ok(out)
}

/// A design built on a backbone with two short probe texts: what both checks above differentiate.
struct Probe<'a> {
    backbone: &'a dyn Backbone,
    store: ParamStore,
    hooks: crate::hooks::DesignHooks,
    batch: crate::backbone::Batch,
}

impl<'a> Probe<'a> {
    /// Builds `plan` (variables seeded with `seed`, then moved off their initial values so that LoRA's `A` and
    /// zero-initialised deltas get informative gradients) and the probe batch.
    fn new(
        backbone: &'a dyn Backbone,
        tokenizer: &dyn Tokenize,
        plan: &[LayerAssignment],
        seed: u64,
    ) -> Result<Self> {
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
        Ok(Probe {
            backbone,
            store,
            hooks: built.hooks,
            batch,
        })
    }

    /// `Σ features · sin(j / 7)` in evaluation mode (a different weight for every feature).
    fn loss(&self) -> Result<Tensor> {
        let features = self
            .backbone
            .features(&self.batch, &self.hooks, Mode::Eval)?;
        let device = self.backbone.device();
        let weights = (Tensor::arange(0f32, features.dim(1)? as f32, device)? / 7.0)?.sin()?;
        Ok(features.broadcast_mul(&weights)?.sum_all()?)
    }
}
