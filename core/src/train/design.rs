//! A design's trainable parts: for each layer of a plan, every strategy builds its module into the hooks.

use crate::budget::LayerAssignment;
use crate::hooks::DesignHooks;
use crate::params::ParamStore;
use crate::registry::registries;
use crate::shapes::BackboneInfo;
use crate::spec::{StrategySpec, TrainingSpec};
use crate::strategy::TuningStrategy;
use crate::train::optim::ParamGroup;
use crate::{Error, Result};

/// What [`build_design`] made: the hooks the backbone calls and one optimiser group per strategy.
pub struct BuiltDesign {
    pub hooks: DesignHooks,
    pub groups: Vec<ParamGroup>,
    /// Scalars in all strategies' variables (the head is not counted).
    pub trainable_params: usize,
}

/// Builds every strategy of `plan` into hooks for `info`'s layers, with variables from `store`.
///
/// A strategy's options and learning rate come from the first entry of `strategies` with its name (defaults and
/// `training.learning_rate` when it has none). Strategies name their own variables (`layer.<i>.<strategy>.…`).
pub fn build_design(
    info: &BackboneInfo,
    plan: &[LayerAssignment],
    strategies: &[StrategySpec],
    training: &TrainingSpec,
    store: &mut ParamStore,
) -> Result<BuiltDesign> {
    let registries = registries()?;
    let mut hooks = DesignHooks::new(info.num_layers());
    // One group per strategy name, in order of first use.
    let mut groups: Vec<(ParamGroup, Box<dyn TuningStrategy>)> = Vec::new();
    let mut trainable_params = 0;
    for assignment in plan {
        let shape = info.layers.get(assignment.layer).ok_or_else(|| {
            Error::msg(format!(
                "the design names layer {} but the backbone has {} layers",
                assignment.layer,
                info.num_layers()
            ))
        })?;
        for (name, size) in &assignment.strategies {
            let index = match groups.iter().position(|(g, _)| &g.name == name) {
                Some(i) => i,
                None => {
                    let spec = strategies.iter().find(|s| &s.name == name);
                    let options = spec.map(|s| s.options.clone()).unwrap_or(ron::Value::Unit);
                    let strategy = registries.strategy(name, &options)?;
                    let group = ParamGroup {
                        name: name.clone(),
                        vars: Vec::new(),
                        learning_rate: spec
                            .and_then(|s| s.learning_rate)
                            .unwrap_or(training.learning_rate),
                        weight_decay: training.weight_decay,
                    };
                    groups.push((group, strategy));
                    groups.len() - 1
                }
            };
            let (group, strategy) = &mut groups[index];
            let before = store.named_vars().len();
            let module = strategy.build(shape, *size, store)?;
            let created: Vec<_> = store.named_vars()[before..]
                .iter()
                .map(|(_, v)| v.clone())
                .collect();
            let scalars: usize = created.iter().map(|v| v.elem_count()).sum();
            let expected = strategy.params(shape, *size);
            if scalars != expected {
                return Err(Error::msg(format!(
                    "strategy `{name}` at layer {} size {size} created {scalars} trainable scalars but counts {expected}",
                    assignment.layer
                )));
            }
            trainable_params += scalars;
            group.vars.extend(created);
            hooks.push(assignment.layer, module)?;
        }
    }
    Ok(BuiltDesign {
        hooks,
        groups: groups.into_iter().map(|(g, _)| g).collect(),
        trainable_params,
    })
}

/// One strategy in every layer at the same size: the plan of a single-strategy baseline.
pub fn uniform_plan(info: &BackboneInfo, strategy: &str, size: usize) -> Vec<LayerAssignment> {
    (0..info.num_layers())
        .map(|layer| LayerAssignment {
            layer,
            strategies: vec![(strategy.to_string(), size)],
        })
        .collect()
}
