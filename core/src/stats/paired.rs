//! Paired sign-flip permutation test of the mean difference, following
//! `scipy.stats.permutation_test((x, y), lambda a, b: np.mean(a - b), permutation_type='samples',
//! alternative='two-sided')`, with the t-based interval of `scipy.stats.ttest_rel(x, y).confidence_interval()`.
//!
//! Under the null hypothesis each pair is exchangeable, so swapping x_i and y_i (flipping the sign of
//! d_i = x_i − y_i) leaves the distribution unchanged; the null distribution of the mean difference is the set of
//! means over all 2^n sign patterns.

use statrs::distribution::{Continuous, ContinuousCDF, StudentsT};

/// Sign patterns are enumerated exactly up to this many pairs (2^16 = 65 536 means).
pub const EXACT_MAX_PAIRS: usize = 16;

/// Result of [`paired_sign_flip`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct PairedResult {
    /// mean(d), summed in NumPy's order (`np.mean(x - y)`).
    pub mean_diff: f64,
    /// Two-sided p-value: twice the smaller one-sided p-value, capped at 1 (SciPy's convention).
    pub p_value: f64,
    /// True when all 2^n sign patterns were enumerated; false for a seeded Monte Carlo estimate.
    pub exact: bool,
    /// 95% Student-t interval of the mean difference, mean ± t_{0.975, n−1} · s/√n
    /// (`ttest_rel(x, y).confidence_interval(0.95)`); it collapses to the mean when all d_i are equal.
    pub ci_low: f64,
    pub ci_high: f64,
}

/// Paired sign-flip permutation test on the differences `d` (x_i − y_i).
///
/// Exact when n ≤ [`EXACT_MAX_PAIRS`] or when 2^n ≤ `monte_carlo`: then the p-value equals SciPy's with
/// `n_resamples=np.inf` (SciPy's own default of 9 999 resamples switches to Monte Carlo from n = 14 on, so for
/// 14 ≤ n ≤ 16 this is the value SciPy's estimate converges to). Otherwise `monte_carlo` random sign patterns
/// drawn from `seed` give (count + 1) / (monte_carlo + 1) per side, SciPy's Monte Carlo estimator; the draws
/// differ from SciPy's, so such p-values agree only within sampling error.
///
/// As in SciPy, null means within a relative 100·ε of the observed mean count as ties with it, so means that are
/// equal in exact arithmetic but differ in the last bits (e.g. with tied |d_i|) are counted as at least as extreme.
///
/// `None` for fewer than two pairs (SciPy requires two), for a non-finite difference, or when the Monte Carlo path
/// is needed and `monte_carlo` is 0.
pub fn paired_sign_flip(d: &[f64], monte_carlo: usize, seed: u64) -> Option<PairedResult> {
    let n = d.len();
    if n < 2 || d.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let exact = n <= EXACT_MAX_PAIRS || (n < 64 && (1u64 << n) <= monte_carlo as u64);
    if !exact && monte_carlo == 0 {
        return None;
    }
    let observed = numpy_mean(d);
    let tally = if exact {
        exact_tally(d, observed)
    } else {
        monte_carlo_tally(d, observed, monte_carlo, seed)
    };
    let (ci_low, ci_high) = t_interval_95(d, observed);
    Some(PairedResult {
        mean_diff: observed,
        p_value: tally.two_sided_p(exact),
        exact,
        ci_low,
        ci_high,
    })
}

/// The smallest two-sided p-value an exact sign-flip test on n pairs can report, 2 / 2^n (capped at 1): with
/// fewer pairs than log2(2/α) no outcome can be significant at level α.
pub fn smallest_paired_p(n: usize) -> f64 {
    let n = i32::try_from(n).unwrap_or(i32::MAX);
    (2.0 * 2f64.powi(-n)).min(1.0)
}

/// Counts of null means at most / at least the observed one, out of `total`.
struct Tally {
    less: u64,
    greater: u64,
    total: u64,
}

impl Tally {
    fn new() -> Self {
        Tally {
            less: 0,
            greater: 0,
            total: 0,
        }
    }

    fn add(&mut self, null: f64, observed: f64) {
        // SciPy's tolerance: eps * 100 relative to the observed statistic (zero tolerance when it is 0).
        let gamma = (observed * f64::EPSILON * 100.0).abs();
        self.less += u64::from(null <= observed + gamma);
        self.greater += u64::from(null >= observed - gamma);
        self.total += 1;
    }

    /// SciPy's two-sided p: 2 · min(p_less, p_greater), clipped to [0, 1]; Monte Carlo counts the observed sample
    /// once more in numerator and denominator so that the estimate is never 0.
    fn two_sided_p(&self, exact: bool) -> f64 {
        let adjustment = if exact { 0.0 } else { 1.0 };
        let total = self.total as f64 + adjustment;
        let less = (self.less as f64 + adjustment) / total;
        let greater = (self.greater as f64 + adjustment) / total;
        (less.min(greater) * 2.0).clamp(0.0, 1.0)
    }
}

/// All 2^n sign patterns; bit i of the pattern flips d_i.
fn exact_tally(d: &[f64], observed: f64) -> Tally {
    let mut tally = Tally::new();
    let mut signed = d.to_vec();
    for pattern in 0u64..(1u64 << d.len()) {
        flip(d, std::iter::once(pattern), &mut signed);
        tally.add(numpy_mean(&signed), observed);
    }
    tally
}

fn monte_carlo_tally(d: &[f64], observed: f64, resamples: usize, seed: u64) -> Tally {
    let mut tally = Tally::new();
    let mut rng = SplitMix64(seed);
    let mut signed = d.to_vec();
    let mut bits = Vec::new();
    for _ in 0..resamples {
        bits.clear();
        bits.extend((0..d.len().div_ceil(64)).map(|_| rng.next()));
        flip(d, bits.iter().copied(), &mut signed);
        tally.add(numpy_mean(&signed), observed);
    }
    tally
}

/// signed_i = ±d_i by bit i of the words. Negation is exact, and x − y = −(y − x) in IEEE arithmetic, so these
/// are bit for bit the differences SciPy computes after swapping the pairs.
fn flip(d: &[f64], words: impl Iterator<Item = u64>, signed: &mut [f64]) {
    for (word_index, word) in words.enumerate() {
        let start = word_index * 64;
        for (offset, (out, v)) in signed[start..]
            .iter_mut()
            .zip(&d[start..])
            .take(64)
            .enumerate()
        {
            *out = if (word >> offset) & 1 == 1 { -v } else { *v };
        }
    }
}

/// `np.mean` of a contiguous float64 array: NumPy's pairwise summation, then division by n. Reproducing the order
/// makes every null mean equal SciPy's to the bit, so the tie tolerance decides exactly the same cases.
fn numpy_mean(values: &[f64]) -> f64 {
    numpy_sum(values) / values.len() as f64
}

fn numpy_sum(a: &[f64]) -> f64 {
    const BLOCK: usize = 128;
    let n = a.len();
    if n < 8 {
        a.iter().fold(0.0, |acc, v| acc + v)
    } else if n <= BLOCK {
        // Eight running sums over the largest multiple of 8, combined as a tree, then the remainder in order.
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let body = n - n % 8;
        for chunk in a[8..body].chunks_exact(8) {
            for (acc, v) in r.iter_mut().zip(chunk) {
                *acc += v;
            }
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for v in &a[body..] {
            res += v;
        }
        res
    } else {
        let mut half = n / 2;
        half -= half % 8;
        numpy_sum(&a[..half]) + numpy_sum(&a[half..])
    }
}

/// mean ± t_{0.975, n−1} · s/√n, s with ddof = 1, as `ttest_rel(...).confidence_interval()` (n ≥ 2).
fn t_interval_95(d: &[f64], mean: f64) -> (f64, f64) {
    let n = d.len() as f64;
    let squares: Vec<f64> = d.iter().map(|v| (v - mean) * (v - mean)).collect();
    let se = (numpy_sum(&squares) / (n - 1.0) / n).sqrt();
    let q = t_quantile(0.975, n - 1.0);
    (mean - q * se, mean + q * se)
}

/// Student-t quantile. statrs' inverse (through its incomplete beta inverse) is off by up to a few 1e-13 relative
/// for larger df; a Newton step or two on the CDF brings it to the precision of `scipy.special.stdtrit`.
fn t_quantile(p: f64, df: f64) -> f64 {
    let Ok(dist) = StudentsT::new(0.0, 1.0, df) else {
        return f64::NAN;
    };
    let mut t = dist.inverse_cdf(p);
    for _ in 0..3 {
        let density = dist.pdf(t);
        // A zero or NaN density (far tails, degenerate df) leaves no usable Newton step.
        if density.is_nan() || density <= 0.0 {
            break;
        }
        let step = (dist.cdf(t) - p) / density;
        t -= step;
        if step.abs() <= 1e-16 * t.abs() {
            break;
        }
    }
    t
}

/// SplitMix64 (Steele, Lea & Flood 2014), kept local so that a Monte Carlo p-value depends only on the data, the
/// seed and the number of resamples, never on a random-number crate's version.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_smallest_p_halves_per_pair() {
        assert_eq!(smallest_paired_p(0), 1.0);
        assert_eq!(smallest_paired_p(1), 1.0);
        assert_eq!(smallest_paired_p(2), 0.5);
        assert_eq!(smallest_paired_p(5), 0.0625);
        assert_eq!(smallest_paired_p(10), 2.0 / 1024.0);
        assert!(smallest_paired_p(usize::MAX) >= 0.0);
    }

    #[test]
    fn paired_all_same_sign_reaches_smallest_p() {
        let d = [0.3, 0.1, 0.7, 0.2, 0.5, 0.9];
        let r = paired_sign_flip(&d, 0, 1).expect("six pairs");
        assert!(r.exact);
        assert_eq!(r.p_value, smallest_paired_p(d.len()));
        assert!(r.ci_low > 0.0 && r.ci_high > r.ci_low);
    }

    #[test]
    fn paired_zero_observed_mean_gives_p_one() {
        // Null means: sums of ±0.5 ±0.5 ±0.25 ±0.25 over 4; 10 of 16 are ≤ 0 and 10 are ≥ 0, so 2·10/16 caps at 1.
        let r = paired_sign_flip(&[0.5, -0.5, 0.25, -0.25], 0, 1).expect("four pairs");
        assert_eq!(r.mean_diff, 0.0);
        assert_eq!(r.p_value, 1.0);
    }

    #[test]
    fn paired_constant_differences_collapse_interval() {
        let r = paired_sign_flip(&[1.0, 1.0, 1.0], 0, 1).expect("three pairs");
        assert_eq!((r.ci_low, r.ci_high), (1.0, 1.0));
        assert_eq!(r.p_value, 0.25);
        let zeros = paired_sign_flip(&[0.0; 5], 0, 1).expect("five pairs");
        assert_eq!(zeros.p_value, 1.0);
        assert_eq!((zeros.ci_low, zeros.ci_high), (0.0, 0.0));
    }

    #[test]
    fn paired_rejects_degenerate_input() {
        assert!(paired_sign_flip(&[], 100, 1).is_none());
        assert!(paired_sign_flip(&[1.0], 100, 1).is_none());
        assert!(paired_sign_flip(&[1.0, f64::NAN], 100, 1).is_none());
        assert!(paired_sign_flip(&[0.1; 20], 0, 1).is_none());
    }

    #[test]
    fn paired_monte_carlo_is_seeded() {
        let d: Vec<f64> = (0..40).map(|i| (i as f64 * 0.77).sin() + 0.1).collect();
        let a = paired_sign_flip(&d, 2000, 9).expect("forty pairs");
        let b = paired_sign_flip(&d, 2000, 9).expect("forty pairs");
        let c = paired_sign_flip(&d, 2000, 10).expect("forty pairs");
        assert!(!a.exact);
        assert_eq!(a, b);
        assert_ne!(a.p_value, c.p_value);
        // Never below SciPy's Monte Carlo floor 2 / (resamples + 1).
        assert!(a.p_value >= 2.0 / 2001.0);
    }

    #[test]
    fn paired_numpy_sum_order_matches_numpy_bits() {
        // `np.sum(a[:n])` from tests/stats_reference/gen_effects_reference.py; from n = 100 on a sequential fold
        // differs in the last bits.
        const NUMPY_SUMS: &[(usize, f64)] = &[
            (3, -3332.129319955407),
            (8, -3793.331558029681),
            (13, -3981.8531878766685),
            (100, -4642.646378976066),
            (128, -4721.5829345186185),
            (129, -4721.57514028635),
            (300, -5004.109768539797),
        ];
        let a: Vec<f64> = (0..300)
            .map(|i| 1.0 / (i as f64 + 0.3) * if i % 3 == 0 { -1e3 } else { 1.0 })
            .collect();
        for &(n, want) in NUMPY_SUMS {
            assert_eq!(numpy_sum(&a[..n]).to_bits(), want.to_bits(), "n = {n}");
        }
    }
}
