//! peftspace-plugins: built-in strategies, grouping rules, allocation rules and evaluators.

pub mod evaluators;
pub mod strategies;
