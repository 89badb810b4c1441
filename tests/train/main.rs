//! The trainer: data, strategies, gradients, parameter counts, metrics, populations, generation.
//!
//! One test binary of the root crate (`cargo test --test train`); each module is one former file of tests.

#[allow(dead_code)]
#[path = "../common/mod.rs"]
mod common;
#[allow(dead_code)]
#[path = "../refine_support/mod.rs"]
mod refine_support;

mod param_counts;
mod population;
mod strategy_gradients;
mod text_metrics;
mod train_data;
mod train_full;
mod train_generation;
mod train_trainer;
