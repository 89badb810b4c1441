//! `Evaluator`: turns predictions and labels into metrics with one primary score (GLUE conventions).

use std::collections::BTreeMap;

use crate::Result;

/// Named metric values plus the one score used to compare designs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Metrics {
    /// Metric name → value (`accuracy`, `f1`, `mcc`, `pearson`, `spearman`, …).
    pub values: BTreeMap<String, f64>,
    /// The task's primary score (GLUE convention), in [0, 1] for classification.
    pub primary: f64,
}

/// Scores predictions against labels. For classification both hold class indices; for regression, real values.
/// Evaluators of generated text (ROUGE, BLEU) score texts instead and say so with [`Evaluator::scores_texts`].
pub trait Evaluator: Send + Sync {
    fn name(&self) -> &str;
    fn score(&self, predictions: &[f64], labels: &[f64]) -> Result<Metrics>;
    /// Whether this evaluator scores generated texts ([`Evaluator::score_texts`]) rather than labels.
    fn scores_texts(&self) -> bool {
        false
    }
    /// Scores generated texts against one reference text each.
    fn score_texts(&self, hypotheses: &[String], references: &[String]) -> Result<Metrics> {
        let _ = (hypotheses, references);
        Err(crate::Error::msg(format!(
            "evaluator `{}` scores labels, not generated texts",
            self.name()
        )))
    }
}

/// A registry entry for an evaluator.
#[derive(Clone, Copy)]
pub struct EvaluatorEntry {
    pub name: &'static str,
    pub summary: &'static str,
    pub create: fn() -> Box<dyn Evaluator>,
}

inventory::collect!(EvaluatorEntry);
