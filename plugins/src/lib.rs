//! peftspace-plugins: built-in strategies, grouping rules, allocation rules and evaluators.

pub mod allocation;
pub mod evaluators;
pub mod grouping;
pub mod peft;
pub mod strategies;
pub mod text_metrics;
