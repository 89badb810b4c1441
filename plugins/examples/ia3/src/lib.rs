//! Example dynamic plugin: the IA3 strategy (Liu et al., 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better
//! and Cheaper than In-Context Learning"), loaded at run time with `peftspace --plugin libpeftspace_ia3.so …` or
//! `plugins: ["…/libpeftspace_ia3.so"]` in an experiment file.
//!
//! IA3 learns vectors that rescale, element-wise, the keys and values of every attention block (self, and
//! cross-attention in decoder layers) and the FFN's first projection output. The vectors start at one, so the
//! model starts unchanged. (The paper rescales the FFN activation *after* its non-linearity; this hook sits right
//! after the projection, before it — the same number of parameters, a slightly different function.)
//! Fixed size: `Σ d_out` over the scaled projections (BERT-base: 768 + 768 + 3072 = 4,608 per layer).
//!
//! Because this is a dynamic plugin, every tensor operation on the training path goes through
//! `peftspace_core::tensor_ops::ops()` (see docs/PLUGINS.md for why).

use candle_core::{Tensor, Var};
use serde::Deserialize;

use peftspace_core::hooks::LayerModule;
use peftspace_core::params::ParamStore;
use peftspace_core::plugin_abi::Registrar;
use peftspace_core::shapes::{LayerShape, SiteKind};
use peftspace_core::strategy::{parse_options, StrategyEntry, TuningStrategy};
use peftspace_core::tensor_ops::ops;
use peftspace_core::Result;

/// The projections IA3 rescales.
const SCALED: [SiteKind; 5] = [
    SiteKind::Key,
    SiteKind::Value,
    SiteKind::CrossKey,
    SiteKind::CrossValue,
    SiteKind::FfnIn,
];

/// IA3 takes no options (`(name: "ia3")`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ia3Options {}

/// The IA3 strategy.
pub struct Ia3;

impl TuningStrategy for Ia3 {
    fn name(&self) -> &str {
        "ia3"
    }

    fn fixed_size(&self) -> bool {
        true
    }

    fn params(&self, layer: &LayerShape, _size: usize) -> usize {
        layer
            .linear
            .iter()
            .filter(|s| SCALED.contains(&s.kind))
            .map(|s| s.d_out)
            .sum()
    }

    fn build(
        &self,
        layer: &LayerShape,
        _size: usize,
        store: &mut ParamStore,
    ) -> Result<Box<dyn LayerModule>> {
        let sites: Vec<_> = layer
            .linear
            .iter()
            .filter(|s| SCALED.contains(&s.kind))
            .copied()
            .collect();
        let scales = store.scoped(format!("layer.{}", layer.index), |store| {
            store.scoped("ia3", |store| {
                sites
                    .iter()
                    .map(|s| {
                        Ok((
                            s.kind,
                            store.constant(
                                &format!("{}.scale", s.kind.short_name()),
                                &[s.d_out],
                                1.0,
                            )?,
                        ))
                    })
                    .collect::<Result<Vec<_>>>()
            })
        })?;
        Ok(Box::new(Ia3Layer { scales }))
    }
}

/// The scaling vectors of one layer.
struct Ia3Layer {
    scales: Vec<(SiteKind, Var)>,
}

impl LayerModule for Ia3Layer {
    fn linear(&self, site: SiteKind, _x: &Tensor, y: Tensor) -> Result<Tensor> {
        match self.scales.iter().find(|(k, _)| *k == site) {
            Some((_, scale)) => Ok(ops().mul(&y, scale.as_tensor())?),
            None => Ok(y),
        }
    }
}

fn create(options: &ron::Value) -> Result<Box<dyn TuningStrategy>> {
    let _: Ia3Options = parse_options("ia3", options)?;
    Ok(Box::new(Ia3))
}

fn register(registrar: &mut Registrar) -> Result<()> {
    registrar.add_strategy(StrategyEntry {
        name: "ia3",
        code: "I",
        summary: "IA3: learned scaling of keys, values and the FFN's first projection (initialised to one); fixed size",
        create,
    });
    Ok(())
}

peftspace_core::declare_plugin!(register);
