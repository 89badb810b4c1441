//! Evaluators: classification and regression metrics and the GLUE tasks' primary scores.
//!
//! GLUE conventions (Wang et al., 2019): CoLA → Matthews correlation; MRPC and QQP → mean of F1 (positive class 1)
//! and accuracy; STS-B → mean of Pearson and Spearman correlation; SST-2, MNLI, QNLI, RTE, WNLI → accuracy.
//! Classification predictions and labels are class indices (as `f64`, rounded); regression ones are real values.
//! Degenerate inputs follow scikit-learn's convention: a correlation (MCC, Pearson, Spearman) whose denominator is 0
//! (e.g. every prediction the same) is 0, and F1 with no predicted and no true positives is 0.

use std::collections::BTreeMap;

use peftspace_core::evaluator::{Evaluator, EvaluatorEntry, Metrics};
use peftspace_core::stats::average_ranks;
use peftspace_core::{Error, Result};

fn check(predictions: &[f64], labels: &[f64]) -> Result<()> {
    if predictions.len() != labels.len() {
        return Err(Error::msg(format!(
            "evaluator: {} predictions but {} labels",
            predictions.len(),
            labels.len()
        )));
    }
    if predictions.is_empty() {
        return Err(Error::msg("evaluator: no examples to score"));
    }
    if let Some(x) = predictions.iter().chain(labels).find(|x| !x.is_finite()) {
        return Err(Error::msg(format!(
            "evaluator: non-finite value {x} among predictions or labels"
        )));
    }
    Ok(())
}

fn class(x: f64) -> i64 {
    x.round() as i64
}

/// Fraction of predictions equal to their label.
pub fn accuracy(predictions: &[f64], labels: &[f64]) -> Result<f64> {
    check(predictions, labels)?;
    let hits = predictions
        .iter()
        .zip(labels)
        .filter(|(p, l)| class(**p) == class(**l))
        .count();
    Ok(hits as f64 / labels.len() as f64)
}

/// F1 of the positive class (label 1).
pub fn binary_f1(predictions: &[f64], labels: &[f64]) -> Result<f64> {
    check(predictions, labels)?;
    let (mut tp, mut fp, mut fneg) = (0usize, 0usize, 0usize);
    for (p, l) in predictions.iter().zip(labels) {
        match (class(*p) == 1, class(*l) == 1) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fneg += 1,
            (false, false) => {}
        }
    }
    let denom = 2 * tp + fp + fneg;
    Ok(if denom == 0 {
        0.0
    } else {
        2.0 * tp as f64 / denom as f64
    })
}

/// Matthews correlation coefficient, for any number of classes (Gorodkin's generalisation, as scikit-learn).
pub fn matthews_corrcoef(predictions: &[f64], labels: &[f64]) -> Result<f64> {
    check(predictions, labels)?;
    let mut true_counts: BTreeMap<i64, f64> = BTreeMap::new();
    let mut pred_counts: BTreeMap<i64, f64> = BTreeMap::new();
    let mut correct = 0.0;
    for (p, l) in predictions.iter().zip(labels) {
        *true_counts.entry(class(*l)).or_default() += 1.0;
        *pred_counts.entry(class(*p)).or_default() += 1.0;
        if class(*p) == class(*l) {
            correct += 1.0;
        }
    }
    let n = labels.len() as f64;
    let dot: f64 = true_counts
        .iter()
        .map(|(k, t)| t * pred_counts.get(k).copied().unwrap_or(0.0))
        .sum();
    let cov_yp = correct * n - dot;
    let cov_yy = n * n - true_counts.values().map(|t| t * t).sum::<f64>();
    let cov_pp = n * n - pred_counts.values().map(|p| p * p).sum::<f64>();
    let denom = (cov_yy * cov_pp).sqrt();
    Ok(if denom == 0.0 { 0.0 } else { cov_yp / denom })
}

/// Pearson correlation coefficient.
pub fn pearson(predictions: &[f64], labels: &[f64]) -> Result<f64> {
    check(predictions, labels)?;
    let n = labels.len() as f64;
    let mp = predictions.iter().sum::<f64>() / n;
    let ml = labels.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (p, l) in predictions.iter().zip(labels) {
        let (dp, dl) = (p - mp, l - ml);
        sxy += dp * dl;
        sxx += dp * dp;
        syy += dl * dl;
    }
    let denom = (sxx * syy).sqrt();
    Ok(if denom == 0.0 {
        0.0
    } else {
        (sxy / denom).clamp(-1.0, 1.0)
    })
}

/// Spearman rank correlation (Pearson correlation of average ranks).
pub fn spearman(predictions: &[f64], labels: &[f64]) -> Result<f64> {
    check(predictions, labels)?;
    pearson(&average_ranks(predictions), &average_ranks(labels))
}

/// Which metrics an evaluator reports and how its primary score is formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Accuracy,
    F1Accuracy,
    Mcc,
    PearsonSpearman,
    /// Generic `f1`: primary = F1 alone.
    F1,
}

struct Glue {
    name: &'static str,
    scheme: Scheme,
}

impl Evaluator for Glue {
    fn name(&self) -> &str {
        self.name
    }

    fn score(&self, predictions: &[f64], labels: &[f64]) -> Result<Metrics> {
        let mut values = BTreeMap::new();
        let primary = match self.scheme {
            Scheme::Accuracy => {
                let acc = accuracy(predictions, labels)?;
                values.insert("accuracy".to_string(), acc);
                acc
            }
            Scheme::F1Accuracy | Scheme::F1 => {
                let acc = accuracy(predictions, labels)?;
                let f1 = binary_f1(predictions, labels)?;
                values.insert("accuracy".to_string(), acc);
                values.insert("f1".to_string(), f1);
                if self.scheme == Scheme::F1 {
                    f1
                } else {
                    (f1 + acc) / 2.0
                }
            }
            Scheme::Mcc => {
                let mcc = matthews_corrcoef(predictions, labels)?;
                values.insert("mcc".to_string(), mcc);
                values.insert("accuracy".to_string(), accuracy(predictions, labels)?);
                mcc
            }
            Scheme::PearsonSpearman => {
                let p = pearson(predictions, labels)?;
                let s = spearman(predictions, labels)?;
                values.insert("pearson".to_string(), p);
                values.insert("spearman".to_string(), s);
                (p + s) / 2.0
            }
        };
        Ok(Metrics { values, primary })
    }
}

macro_rules! evaluator {
    ($name:literal, $scheme:expr, $summary:literal) => {
        peftspace_core::inventory::submit! {
            EvaluatorEntry {
                name: $name,
                summary: $summary,
                create: || Box::new(Glue { name: $name, scheme: $scheme }),
            }
        }
    };
}

evaluator!(
    "cola",
    Scheme::Mcc,
    "CoLA: Matthews correlation (accuracy also reported)"
);
evaluator!("sst2", Scheme::Accuracy, "SST-2: accuracy");
evaluator!(
    "mrpc",
    Scheme::F1Accuracy,
    "MRPC: mean of F1 (class 1) and accuracy"
);
evaluator!(
    "qqp",
    Scheme::F1Accuracy,
    "QQP: mean of F1 (class 1) and accuracy"
);
evaluator!(
    "stsb",
    Scheme::PearsonSpearman,
    "STS-B: mean of Pearson and Spearman correlation"
);
evaluator!(
    "mnli",
    Scheme::Accuracy,
    "MNLI (matched or mismatched): accuracy"
);
evaluator!("qnli", Scheme::Accuracy, "QNLI: accuracy");
evaluator!("rte", Scheme::Accuracy, "RTE: accuracy");
evaluator!("wnli", Scheme::Accuracy, "WNLI: accuracy");
evaluator!("accuracy", Scheme::Accuracy, "accuracy");
evaluator!("f1", Scheme::F1, "F1 of class 1 (accuracy also reported)");
evaluator!(
    "mcc",
    Scheme::Mcc,
    "Matthews correlation, any number of classes (accuracy also reported)"
);
evaluator!(
    "pearson_spearman",
    Scheme::PearsonSpearman,
    "mean of Pearson and Spearman correlation (regression)"
);

#[cfg(test)]
mod tests {
    use super::*;

    // Reference values computed once with scikit-learn (accuracy_score, f1_score, matthews_corrcoef) and scipy
    // (pearsonr, spearmanr) on exactly these vectors.
    const Y_TRUE: [f64; 16] = [
        1., 0., 1., 1., 0., 1., 0., 0., 1., 1., 0., 1., 1., 0., 0., 1.,
    ];
    const Y_PRED: [f64; 16] = [
        1., 0., 0., 1., 0., 1., 1., 0., 1., 0., 0., 1., 1., 1., 0., 1.,
    ];
    const SK_ACC: f64 = 0.75;
    const SK_F1: f64 = 0.7777777777777778;
    const SK_MCC: f64 = 0.49206349206349204;
    const Y_TRUE3: [f64; 12] = [0., 1., 2., 2., 1., 0., 1., 2., 0., 0., 1., 2.];
    const Y_PRED3: [f64; 12] = [0., 2., 2., 2., 1., 0., 0., 2., 1., 0., 1., 1.];
    const SK_ACC3: f64 = 0.6666666666666666;
    const SK_MCC3: f64 = 0.5;
    const X_REG: [f64; 10] = [0.5, 2.25, 3.0, 1.0, 4.5, 2.25, 0.0, 5.0, 3.0, 3.0];
    const Y_REG: [f64; 10] = [1.0, 2.0, 2.5, 1.5, 4.0, 3.5, 0.2, 4.8, 2.0, 3.1];
    const SCIPY_PEARSON: f64 = 0.9191856011322633;
    const SCIPY_SPEARMAN: f64 = 0.8796966720160407;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    #[test]
    fn metrics_match_scikit_learn_and_scipy() {
        close(accuracy(&Y_PRED, &Y_TRUE).unwrap(), SK_ACC);
        close(binary_f1(&Y_PRED, &Y_TRUE).unwrap(), SK_F1);
        close(matthews_corrcoef(&Y_PRED, &Y_TRUE).unwrap(), SK_MCC);
        close(accuracy(&Y_PRED3, &Y_TRUE3).unwrap(), SK_ACC3);
        close(matthews_corrcoef(&Y_PRED3, &Y_TRUE3).unwrap(), SK_MCC3);
        close(pearson(&X_REG, &Y_REG).unwrap(), SCIPY_PEARSON);
        close(spearman(&X_REG, &Y_REG).unwrap(), SCIPY_SPEARMAN);
    }

    #[test]
    fn degenerate_inputs_follow_scikit_learn() {
        // sklearn: f1_score([1,0,1], [0,0,0], zero_division=0) = 0; matthews_corrcoef([1,0,1], [1,1,1]) = 0.
        assert_eq!(binary_f1(&[0., 0., 0.], &[1., 0., 1.]).unwrap(), 0.0);
        assert_eq!(
            matthews_corrcoef(&[1., 1., 1.], &[1., 0., 1.]).unwrap(),
            0.0
        );
        assert_eq!(pearson(&[2., 2., 2.], &[1., 0., 1.]).unwrap(), 0.0);
        assert!(accuracy(&[1.0], &[]).is_err());
        assert!(accuracy(&[], &[]).is_err());
        assert!(pearson(&[f64::NAN], &[1.0]).is_err());
    }

    fn evaluator(name: &str) -> Box<dyn Evaluator> {
        let entry = peftspace_core::inventory::iter::<EvaluatorEntry>
            .into_iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("evaluator {name} is not registered"));
        (entry.create)()
    }

    #[test]
    fn glue_primary_scores() {
        let m = evaluator("mrpc").score(&Y_PRED, &Y_TRUE).unwrap();
        close(m.primary, (SK_F1 + SK_ACC) / 2.0);
        close(m.values["f1"], SK_F1);
        close(
            evaluator("qqp").score(&Y_PRED, &Y_TRUE).unwrap().primary,
            (SK_F1 + SK_ACC) / 2.0,
        );
        close(
            evaluator("cola").score(&Y_PRED, &Y_TRUE).unwrap().primary,
            SK_MCC,
        );
        close(
            evaluator("mcc").score(&Y_PRED3, &Y_TRUE3).unwrap().primary,
            SK_MCC3,
        );
        close(
            evaluator("f1").score(&Y_PRED, &Y_TRUE).unwrap().primary,
            SK_F1,
        );
        for name in ["sst2", "mnli", "qnli", "rte", "wnli", "accuracy"] {
            close(
                evaluator(name).score(&Y_PRED, &Y_TRUE).unwrap().primary,
                SK_ACC,
            );
        }
        for name in ["stsb", "pearson_spearman"] {
            let m = evaluator(name).score(&X_REG, &Y_REG).unwrap();
            close(m.primary, (SCIPY_PEARSON + SCIPY_SPEARMAN) / 2.0);
            close(m.values["spearman"], SCIPY_SPEARMAN);
        }
        assert_eq!(evaluator("stsb").name(), "stsb");
    }
}
