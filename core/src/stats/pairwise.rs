//! All-pairs Mann–Whitney tests with Holm's correction over every pair of populations: the selection-aware answer
//! to "is the chosen population better than each other one".
//!
//! Testing the population with the highest mean against each other one, with a correction over those m − 1
//! comparisons only, ignores that the winner was picked *because* it looked best: when all populations are equal,
//! the maximum of m samples is compared with the rest, and some comparison comes out "significant" far more often
//! than the nominal level (about 10 % with 5 equal populations and 19 % with 15 at level 0.05). Here the family is
//! every one of the m(m−1)/2 pairs, whichever population is chosen afterwards: each pair's p-value is valid
//! whatever the data, Holm's step-down procedure keeps the probability of any false rejection in the whole family
//! at most alpha, and the chosen population's comparisons are a subset of that family. The cost is power: the
//! smallest p-value is compared with alpha / (m(m−1)/2) instead of alpha / (m − 1).

use super::{holm_adjust, mann_whitney_u};

/// Any two-sided test run on every pair of populations, Holm-adjusted over the pairs it could test.
#[derive(Debug, Clone, PartialEq)]
pub struct AllPairs {
    m: usize,
    /// Pairs tested (the test gave a p-value that is not NaN).
    pairs: usize,
    /// Raw two-sided p-values, row-major m × m, symmetric; NaN on the diagonal and for untested pairs.
    raw: Vec<f64>,
    /// Holm-adjusted p-values over all tested pairs, laid out like `raw`.
    adjusted: Vec<f64>,
}

impl AllPairs {
    /// Runs `test(i, j)` for every pair i < j of `m` populations (`None`: the pair cannot be tested) and adjusts
    /// the p-values with Holm's procedure over all pairs tested.
    pub fn new(m: usize, mut test: impl FnMut(usize, usize) -> Option<f64>) -> AllPairs {
        let mut raw = vec![f64::NAN; m * m];
        let mut index = Vec::new();
        let mut p_values = Vec::new();
        for i in 0..m {
            for j in (i + 1)..m {
                if let Some(p) = test(i, j) {
                    raw[i * m + j] = p;
                    raw[j * m + i] = p;
                    index.push((i, j));
                    p_values.push(p);
                }
            }
        }
        let mut adjusted = vec![f64::NAN; m * m];
        let mut pairs = 0;
        for (&(i, j), p) in index.iter().zip(holm_adjust(&p_values)) {
            adjusted[i * m + j] = p;
            adjusted[j * m + i] = p;
            // A NaN p-value is not a test: Holm left it out of the family, so it is not counted either.
            if !p.is_nan() {
                pairs += 1;
            }
        }
        AllPairs {
            m,
            pairs,
            raw,
            adjusted,
        }
    }

    /// How many pairs the correction counted.
    pub fn pairs(&self) -> usize {
        self.pairs
    }

    /// The raw two-sided p-value of the pair (NaN when it was not tested or `a == b`).
    pub fn p_raw(&self, a: usize, b: usize) -> f64 {
        self.raw.get(a * self.m + b).copied().unwrap_or(f64::NAN)
    }

    /// The Holm-adjusted p-value of the pair over all tested pairs (NaN when it was not tested or `a == b`).
    pub fn p_holm(&self, a: usize, b: usize) -> f64 {
        self.adjusted
            .get(a * self.m + b)
            .copied()
            .unwrap_or(f64::NAN)
    }
}

/// The Mann–Whitney tests of every pair of non-empty populations, Holm-adjusted over all those pairs, with each
/// pair's direction.
#[derive(Debug, Clone, PartialEq)]
pub struct PairwiseTests {
    tests: AllPairs,
    /// U of the row population against the column population (SciPy's statistic with the row first); NaN untested.
    u: Vec<f64>,
    sizes: Vec<usize>,
}

/// Runs the two-sided Mann–Whitney test ([`mann_whitney_u`]) on every pair of non-empty populations and adjusts
/// the p-values with Holm's procedure over all of those pairs.
pub fn all_pairs_mann_whitney(populations: &[&[f64]]) -> PairwiseTests {
    let m = populations.len();
    let mut u = vec![f64::NAN; m * m];
    let tests = AllPairs::new(m, |i, j| {
        let r = mann_whitney_u(populations[i], populations[j])?;
        let n = (populations[i].len() * populations[j].len()) as f64;
        u[i * m + j] = r.u;
        u[j * m + i] = n - r.u;
        Some(r.p_value)
    });
    PairwiseTests {
        tests,
        u,
        sizes: populations.iter().map(|p| p.len()).collect(),
    }
}

impl PairwiseTests {
    /// How many pairs the correction counted.
    pub fn pairs(&self) -> usize {
        self.tests.pairs()
    }

    /// The raw two-sided p-value of the pair (NaN when it was not tested or `a == b`).
    pub fn p_raw(&self, a: usize, b: usize) -> f64 {
        self.tests.p_raw(a, b)
    }

    /// The Holm-adjusted p-value of the pair over all tested pairs (NaN when it was not tested or `a == b`).
    pub fn p_holm(&self, a: usize, b: usize) -> f64 {
        self.tests.p_holm(a, b)
    }

    /// Whether population `a` ranks above `b`: its U exceeds its null mean n_a·n_b/2.
    pub fn ranks_higher(&self, a: usize, b: usize) -> bool {
        let u = self.u[a * self.tests.m + b];
        u > (self.sizes[a] * self.sizes[b]) as f64 / 2.0
    }

    /// `a` is significantly better than `b`: the pair is rejected at `alpha` after the all-pairs correction and `a`
    /// is the one that ranks higher (a two-sided rejection the other way round is no evidence for `a`).
    pub fn better(&self, a: usize, b: usize, alpha: f64) -> bool {
        self.p_holm(a, b) < alpha && self.ranks_higher(a, b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_is_every_tested_pair() {
        let a = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];
        let b = [1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0];
        let c = [0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95, 1.05];
        let empty: [f64; 0] = [];
        let t = all_pairs_mann_whitney(&[&a, &b, &c, &empty]);
        assert_eq!(t.pairs(), 3);
        assert!(t.p_holm(0, 3).is_nan() && t.p_holm(2, 2).is_nan());
        let raw = [t.p_raw(0, 1), t.p_raw(0, 2), t.p_raw(1, 2)];
        let holm = holm_adjust(&raw);
        assert_eq!(t.p_holm(0, 1), holm[0]);
        assert_eq!(t.p_holm(2, 1), holm[2]);
        // b is above both; the direction matters for `better`.
        assert!(t.better(1, 0, 0.05) && t.better(1, 2, 0.05));
        assert!(!t.better(0, 1, 0.05));
        assert!(!t.better(2, 0, 0.05));
        // Mann–Whitney of b vs a: every b above every a, U = 100.
        assert!(t.ranks_higher(1, 0) && !t.ranks_higher(0, 1));
    }
}
