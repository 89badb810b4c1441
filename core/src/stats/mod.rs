//! Statistics for comparing design populations: EDFs, two-sample tests, bootstrap intervals, Holm's correction and
//! all-pairs tests for a selected winner.
//!
//! Every test follows one SciPy call, named in its doc comment, so a stage's p-values can be recomputed with SciPy
//! from `trials.csv` (`tests/stats_reference/check_pvalues.py` does exactly that). The unit tests compare against
//! numbers SciPy 1.17 produced once (`tests/stats_reference/gen_unit_reference.py`).

mod binomial;
mod bootstrap;
mod holm;
mod ks;
mod mann_whitney;
mod noncentral_t;
mod ols;
mod paired;
mod pairwise;
mod permutation;
mod power;
mod ranks;
mod spending;
mod tost;
mod welch;

#[cfg(test)]
mod decisive_reference_tests;
#[cfg(test)]
mod effects_reference_tests;
#[cfg(test)]
mod reference_tests;

pub use binomial::binomial_greater_p;
pub use bootstrap::{bootstrap_mean_ci, bootstrap_mean_difference_ci, ConfidenceInterval};
pub use holm::holm_adjust;
pub use ks::{ks_two_sample, KsMethod, KsResult};
pub use mann_whitney::{mann_whitney_u, MannWhitneyResult, MwuMethod};
pub use noncentral_t::{nct_cdf, nct_sf, t_isf};
pub use ols::{
    drop_reference, ols_hc3, Coefficient, OlsError, OlsFit, Term, TermEffect, INTERCEPT,
};
pub use paired::{paired_sign_flip, smallest_paired_p, PairedResult, EXACT_MAX_PAIRS};
pub use pairwise::{all_pairs_mann_whitney, AllPairs, PairwiseTests};
pub use permutation::{
    permutation_mean_difference, permutation_p_below, smallest_attainable_p,
    smallest_attainable_p_for, PermutationResult, EXACT_LIMIT, MIN_MONTE_CARLO,
};
pub use power::{designs_needed, mde, two_sample_power, DEFAULT_POWER, MAX_DESIGNS_PER_GROUP};
pub use ranks::{average_ranks, average_ranks_and_ties};
pub use spending::{obf_spent, Look, SequentialAlpha};
pub use tost::{tost_welch, TostResult};
pub use welch::{welch_t_test, WelchResult};

/// n, mean, median and sample standard deviation (ddof = 1) of a population.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    pub median: f64,
    /// Sample standard deviation (`numpy.std(x, ddof=1)`); NaN when n < 2.
    pub std: f64,
}

/// Summarises a population; all fields are NaN (and n = 0) for an empty one.
pub fn summary(values: &[f64]) -> Summary {
    let n = values.len();
    if n == 0 {
        return Summary {
            n,
            mean: f64::NAN,
            median: f64::NAN,
            std: f64::NAN,
        };
    }
    let mean = mean(values);
    let std = if n < 2 {
        f64::NAN
    } else {
        (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0)).sqrt()
    };
    Summary {
        n,
        mean,
        median: median(values),
        std,
    }
}

/// Arithmetic mean (NaN for an empty slice).
pub fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.iter().sum::<f64>() / values.len() as f64
}

/// Median, averaging the two middle values for an even count (NaN for an empty slice).
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let sorted = sorted(values);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        0.5 * (sorted[mid - 1] + sorted[mid])
    }
}

/// The empirical distribution function of a sample, as the steps of a plotted curve.
#[derive(Debug, Clone, PartialEq)]
pub struct Edf {
    sorted: Vec<f64>,
}

impl Edf {
    /// Builds the EDF; NaN values are dropped (they are not scores).
    pub fn new(values: &[f64]) -> Self {
        let kept: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
        Edf {
            sorted: sorted(&kept),
        }
    }

    /// The fraction of the sample that is ≤ x.
    pub fn eval(&self, x: f64) -> f64 {
        if self.sorted.is_empty() {
            return f64::NAN;
        }
        let count = self.sorted.partition_point(|v| *v <= x);
        count as f64 / self.sorted.len() as f64
    }

    /// Distinct sample values with the EDF's value there, in increasing order (the corners of the step curve).
    pub fn steps(&self) -> Vec<(f64, f64)> {
        let n = self.sorted.len() as f64;
        let mut out: Vec<(f64, f64)> = Vec::new();
        for (i, v) in self.sorted.iter().enumerate() {
            let height = (i + 1) as f64 / n;
            match out.last_mut() {
                Some(last) if last.0 == *v => last.1 = height,
                _ => out.push((*v, height)),
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }
}

/// A sorted copy; callers pass finite scores (NaN sorts last through `total_cmp`).
pub(crate) fn sorted(values: &[f64]) -> Vec<f64> {
    let mut out = values.to_vec();
    out.sort_by(|a, b| a.total_cmp(b));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edf_counts_values_at_or_below() {
        let edf = Edf::new(&[0.3, 0.1, 0.3, 0.9]);
        assert_eq!(edf.eval(0.0), 0.0);
        assert_eq!(edf.eval(0.1), 0.25);
        assert_eq!(edf.eval(0.3), 0.75);
        assert_eq!(edf.eval(1.0), 1.0);
        assert_eq!(edf.steps(), vec![(0.1, 0.25), (0.3, 0.75), (0.9, 1.0)]);
    }

    #[test]
    fn summary_of_empty_population_is_nan_not_panic() {
        let s = summary(&[]);
        assert_eq!(s.n, 0);
        assert!(s.mean.is_nan() && s.median.is_nan() && s.std.is_nan());
        let one = summary(&[2.0]);
        assert_eq!(one.mean, 2.0);
        assert!(one.std.is_nan());
    }

    #[test]
    fn median_of_even_count_averages_middle_pair() {
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
