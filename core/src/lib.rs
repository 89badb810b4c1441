//! peftspace-core: the traits, registries and machinery of parameter-efficient fine-tuning design spaces.
//!
//! Concrete strategies, rules and evaluators live in `peftspace-plugins`, concrete models in `peftspace-backbones`;
//! this crate knows them only through the traits and registries below.

pub mod allocation;
pub mod autograd;
pub mod backbone;
pub mod budget;
pub mod data;
pub mod design;
pub mod device;
pub mod error;
pub mod evaluator;
pub mod experiment;
pub mod generate;
pub mod grouping;
pub mod hooks;
pub mod interrupt;
pub mod model;
pub mod params;
pub mod plugin_abi;
pub mod plugin_loader;
pub mod plugin_trust;
pub mod refine;
pub mod registry;
pub mod report;
pub mod resolve;
pub mod saved;
pub mod scale_out;
pub mod shapes;
pub mod space;
pub mod spec;
pub mod stats;
pub mod store;
pub mod strategy;
pub mod tensor_ops;
pub mod train;
pub mod trial;

/// Stand-ins (backbone shapes, strategies, registries) for the unit tests of this crate and of crates that enable
/// the `test-doubles` feature in their dev-dependencies; not part of a normal build.
#[cfg(any(test, feature = "test-doubles"))]
#[doc(hidden)]
pub mod test_doubles;

pub use error::{Error, Result};

/// Re-exported so plugins register with the same `inventory` the registries collect from.
pub use inventory;
