//! `TuningStrategy`: one PEFT method (Adapter, Prefix, LoRA, BitFit, or a plugin's), sized from layer shapes alone.

use crate::hooks::LayerModule;
use crate::params::ParamStore;
use crate::shapes::LayerShape;
use crate::Result;

/// A PEFT method. It counts its parameters exactly and builds the per-layer module that answers hook calls.
pub trait TuningStrategy: Send + Sync {
    /// Registry name (`adapter`, `lora`, …).
    fn name(&self) -> &str;

    /// True when the size is fixed by the layer (BitFit): `params` and `build` then ignore `size`.
    fn fixed_size(&self) -> bool {
        false
    }

    /// Exact number of trainable scalars `build` creates for this layer at this size
    /// (adapter width, prefix length, LoRA rank, …). Must equal the scalars of the `Var`s created.
    fn params(&self, layer: &LayerShape, size: usize) -> usize;

    /// Creates the trainable variables (through `store`, under the layer's name scope) and the module.
    fn build(
        &self,
        layer: &LayerShape,
        size: usize,
        store: &mut ParamStore,
    ) -> Result<Box<dyn LayerModule>>;

    /// The options this strategy was built with, as RON text with every field written out (`(alpha: 8.0, …)`), so
    /// a saved design needs no defaults to be read back and exported. `None` keeps the experiment's own text.
    fn canonical_options(&self) -> Option<String> {
        None
    }
}

/// A registry entry for a strategy. Plugins `inventory::submit!` one next to each implementation.
#[derive(Clone, Copy)]
pub struct StrategyEntry {
    /// Unique name used in experiment files.
    pub name: &'static str,
    /// Unique short code used in a design's text form (`A`, `P`, `L`, `B`); letters only.
    pub code: &'static str,
    /// One line for `peftspace list`.
    pub summary: &'static str,
    /// Builds the strategy from the options the experiment gives it (`ron::Value::Unit` when none; see [`parse_options`]).
    pub create: fn(options: &ron::Value) -> Result<Box<dyn TuningStrategy>>,
}

inventory::collect!(StrategyEntry);

/// Reads a strategy's options into its typed options struct; `Unit` (no options given) yields the defaults.
pub fn parse_options<T: serde::de::DeserializeOwned + Default>(
    strategy: &str,
    options: &ron::Value,
) -> Result<T> {
    match options {
        ron::Value::Unit => Ok(T::default()),
        other => other
            .clone()
            .into_rust()
            .map_err(|e| crate::Error::msg(format!("options of strategy `{strategy}`: {e}"))),
    }
}
