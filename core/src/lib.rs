//! peftspace-core: the traits, registries and machinery of parameter-efficient fine-tuning design spaces.
//!
//! Concrete strategies, rules and evaluators live in `peftspace-plugins`, concrete models in `peftspace-backbones`;
//! this crate knows them only through the traits and registries below.

pub mod allocation;
pub mod backbone;
pub mod error;
pub mod evaluator;
pub mod grouping;
pub mod hooks;
pub mod params;
pub mod plugin_abi;
pub mod plugin_loader;
pub mod registry;
pub mod shapes;
pub mod spec;
pub mod strategy;

pub use error::{Error, Result};

/// Re-exported so plugins register with the same `inventory` the registries collect from.
pub use inventory;
