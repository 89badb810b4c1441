//! Two-sided permutation test of a difference in means, following
//! `scipy.stats.permutation_test((x, y), statistic, permutation_type='independent', alternative='two-sided',
//! n_resamples=N)` with `statistic(a, b) = mean(a) − mean(b)`.
//!
//! * **Exact** when the number of distinct splits of the pooled values into groups of the original sizes,
//!   C(nx+ny, nx), is at most max([`EXACT_LIMIT`], N): every split is enumerated (SciPy goes exact under the
//!   same rule, `n_resamples ≥ C`). 8 against 8 is 12,870 splits and 9 against 9 is 48,620; 10 against 10 is
//!   184,756 and goes to Monte Carlo unless N is at least that.
//! * **Monte Carlo** otherwise: N seeded random splits, N at least [`MIN_MONTE_CARLO`]. As in SciPy the observed
//!   statistic counts as one of the resamples, p = (count + 1)/(N + 1), which keeps the test valid (P(p ≤ u) ≤ u
//!   under the null) however few resamples are drawn.
//!
//! SciPy's conventions are reproduced exactly: each one-sided p counts the null statistics within a relative
//! tolerance γ = 100·ε·|observed| of the observed one (`null ≤ obs + γ` and `null ≥ obs − γ`), and the
//! two-sided p is min(1, 2·min(p_less, p_greater)).
//!
//! The tolerance exists because splits that swap tied values give the same statistic in exact arithmetic but
//! not always in floating point. Here each group's values are summed in ascending order, so such splits give
//! bitwise-identical statistics and ties never depend on the tolerance; SciPy sums in index order and relies
//! on γ alone. The two agree whenever SciPy's rounding stays inside γ, which holds unless the observed
//! difference is tiny next to the means themselves (every reference case, decimal ties included, matches).
//!
//! The resampling uses its own SplitMix64 generator so that a Monte-Carlo p-value depends only on the data,
//! N and the seed, not on the version of a random-number crate.

/// Splits are enumerated exhaustively up to this many.
pub const EXACT_LIMIT: usize = 100_000;

/// The fewest random splits a Monte-Carlo test draws; smaller requests are raised to this.
pub const MIN_MONTE_CARLO: usize = 10_000;

/// SciPy's relative tolerance for "equal" statistics: 100 machine epsilons.
const RELATIVE_TOLERANCE: f64 = 100.0 * f64::EPSILON;

/// The observed difference in means and its two-sided permutation p-value.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct PermutationResult {
    /// mean x − mean y.
    pub diff: f64,
    pub p_value: f64,
    /// Whether every split was enumerated.
    pub exact: bool,
    /// Splits enumerated (exact) or random splits drawn (Monte Carlo).
    pub permutations: usize,
}

/// How a pair of group sizes is tested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// Enumerate all this many splits.
    Exact(usize),
    /// Draw this many random splits.
    MonteCarlo(usize),
}

fn plan(nx: usize, ny: usize, monte_carlo: usize) -> Plan {
    let limit = EXACT_LIMIT.max(monte_carlo);
    match binomial_up_to(nx + ny, nx, limit) {
        Some(count) => Plan::Exact(count),
        None => Plan::MonteCarlo(monte_carlo.max(MIN_MONTE_CARLO)),
    }
}

/// C(n, k) if it is at most `cap`, else `None`. Every partial product C(n−k+i, i) is an integer, so the
/// running value stays exact; it only ever grows, so passing `cap` ends the loop early.
fn binomial_up_to(n: usize, k: usize, cap: usize) -> Option<usize> {
    let k = k.min(n - k.min(n));
    let mut c: u128 = 1;
    for i in 1..=k as u128 {
        c = c.checked_mul(n as u128 - k as u128 + i)? / i;
        if c > cap as u128 {
            return None;
        }
    }
    usize::try_from(c).ok()
}

/// The two-sided permutation test of mean x − mean y. `monte_carlo` is the number of random splits when the
/// test cannot be exact (raised to [`MIN_MONTE_CARLO`]); `seed` fixes them. `None` when either sample is empty
/// or any value is not finite.
pub fn permutation_mean_difference(
    x: &[f64],
    y: &[f64],
    monte_carlo: usize,
    seed: u64,
) -> Option<PermutationResult> {
    test(x, y, monte_carlo, seed, None)
}

/// The p-value of [`permutation_mean_difference`] when it is below `threshold`, else `None` (also for empty or
/// non-finite samples). The same splits in the same order; it stops as soon as both one-sided counts show that
/// p cannot fall below `threshold` (counts only grow), which under the null is after a few hundred splits. A
/// race asks only this question, many times.
pub fn permutation_p_below(
    x: &[f64],
    y: &[f64],
    monte_carlo: usize,
    seed: u64,
    threshold: f64,
) -> Option<f64> {
    test(x, y, monte_carlo, seed, Some(threshold))
        .map(|r| r.p_value)
        .filter(|&p| p < threshold)
}

/// The test; with `stop_at`, it may end early once p ≥ `stop_at` is certain (the result then has p ≥ `stop_at`
/// but not its exact value).
fn test(
    x: &[f64],
    y: &[f64],
    monte_carlo: usize,
    seed: u64,
    stop_at: Option<f64>,
) -> Option<PermutationResult> {
    let (nx, ny) = (x.len(), y.len());
    if nx == 0 || ny == 0 || x.iter().chain(y).any(|v| !v.is_finite()) {
        return None;
    }
    let pooled = super::sorted(&x.iter().chain(y).copied().collect::<Vec<f64>>());
    let observed = statistic(
        ascending_sum(&super::sorted(x)),
        nx,
        ascending_sum(&super::sorted(y)),
        ny,
    );
    let gamma = (RELATIVE_TOLERANCE * observed).abs();
    let plan = plan(nx, ny, monte_carlo);
    // p = 2·min(count + offset)/total, so p ≥ stop_at once both counts reach stop_at·total/2 − offset.
    let (total, offset) = match plan {
        Plan::Exact(count) => (count as f64, 0.0),
        Plan::MonteCarlo(resamples) => (resamples as f64 + 1.0, 1.0),
    };
    let enough = stop_at.map_or(f64::INFINITY, |t| t * total / 2.0 - offset);
    let mut counts = Counts::default();
    let mut tally = |s: f64| {
        counts.less += usize::from(s <= observed + gamma);
        counts.greater += usize::from(s >= observed - gamma);
        (counts.less.min(counts.greater) as f64) < enough
    };
    let (p_less, p_greater, exact, permutations) = match plan {
        Plan::Exact(count) => {
            for_each_split(&pooled, nx, &mut tally);
            let n = count as f64;
            (
                counts.less as f64 / n,
                counts.greater as f64 / n,
                true,
                count,
            )
        }
        Plan::MonteCarlo(resamples) => {
            random_splits(&pooled, nx, resamples, seed, &mut tally);
            let n = resamples as f64 + 1.0;
            (
                (counts.less + 1) as f64 / n,
                (counts.greater + 1) as f64 / n,
                false,
                resamples,
            )
        }
    };
    Some(PermutationResult {
        diff: super::mean(x) - super::mean(y),
        p_value: (2.0 * p_less.min(p_greater)).clamp(0.0, 1.0),
        exact,
        permutations,
    })
}

/// The smallest two-sided p-value the exact test can give for these group sizes, 2/C(nx+ny, nx) capped at 1
/// (reached when the observed split is the most extreme one and all values are distinct). It is a lower bound
/// on every p-value [`permutation_mean_difference`] returns, whatever `monte_carlo`; for sizes that go to Monte
/// Carlo the attainable floor is higher, 2/(N+1), which [`smallest_attainable_p_for`] gives. 1 when a group is
/// empty.
pub fn smallest_attainable_p(nx: usize, ny: usize) -> f64 {
    if nx == 0 || ny == 0 {
        return 1.0;
    }
    (2.0 / binomial_f64(nx + ny, nx)).min(1.0)
}

/// The smallest two-sided p-value [`permutation_mean_difference`] can return with these sizes and
/// `monte_carlo`: 2/C(nx+ny, nx) when the test is exact, 2/(N+1) when it draws N random splits; capped at 1.
pub fn smallest_attainable_p_for(nx: usize, ny: usize, monte_carlo: usize) -> f64 {
    if nx == 0 || ny == 0 {
        return 1.0;
    }
    match plan(nx, ny, monte_carlo) {
        Plan::Exact(count) => (2.0 / count as f64).min(1.0),
        Plan::MonteCarlo(resamples) => (2.0 / (resamples as f64 + 1.0)).min(1.0),
    }
}

/// C(n, k) in floating point (∞ beyond f64's range, which makes 2/C a correct 0).
fn binomial_f64(n: usize, k: usize) -> f64 {
    let k = k.min(n - k.min(n));
    (1..=k).fold(1.0, |c, i| c * (n - k + i) as f64 / i as f64)
}

#[derive(Default)]
struct Counts {
    less: usize,
    greater: usize,
}

/// SciPy's statistic for a split: mean of the first group minus mean of the second.
fn statistic(sum_a: f64, na: usize, sum_b: f64, nb: usize) -> f64 {
    sum_a / na as f64 - sum_b / nb as f64
}

fn ascending_sum(sorted: &[f64]) -> f64 {
    sorted.iter().sum()
}

/// The statistic of the split putting `in_a` (ascending positions into `pooled`) in the first group. Both
/// sums run over `pooled` in ascending order, matching the observed statistic's summation.
fn split_statistic(pooled: &[f64], in_a: &[usize]) -> f64 {
    let (mut sum_a, mut sum_b) = (0.0, 0.0);
    let mut next = 0;
    for (i, v) in pooled.iter().enumerate() {
        if next < in_a.len() && in_a[next] == i {
            sum_a += v;
            next += 1;
        } else {
            sum_b += v;
        }
    }
    statistic(sum_a, in_a.len(), sum_b, pooled.len() - in_a.len())
}

/// Calls `f` with the statistic of every split of `pooled` into `na` and the rest, in lexicographic order of
/// the first group's positions, until `f` returns false.
fn for_each_split(pooled: &[f64], na: usize, f: &mut impl FnMut(f64) -> bool) {
    let n = pooled.len();
    let mut chosen: Vec<usize> = (0..na).collect();
    loop {
        if !f(split_statistic(pooled, &chosen)) {
            return;
        }
        // Advance to the next combination: bump the rightmost position that still has room.
        let Some(i) = (0..na).rev().find(|&i| chosen[i] < n - na + i) else {
            return;
        };
        chosen[i] += 1;
        for j in i + 1..na {
            chosen[j] = chosen[j - 1] + 1;
        }
    }
}

/// Calls `f` with the statistics of `resamples` uniformly random splits, until `f` returns false.
fn random_splits(
    pooled: &[f64],
    na: usize,
    resamples: usize,
    seed: u64,
    f: &mut impl FnMut(f64) -> bool,
) {
    let n = pooled.len();
    let mut rng = SplitMix64(seed);
    let mut order: Vec<usize> = (0..n).collect();
    let mut chosen: Vec<usize> = Vec::with_capacity(na);
    for _ in 0..resamples {
        // A partial Fisher–Yates shuffle: the first `na` entries become a uniform random subset whatever the
        // arrangement left by the previous draw.
        for i in 0..na {
            let j = i + rng.below(n - i);
            order.swap(i, j);
        }
        chosen.clear();
        chosen.extend_from_slice(&order[..na]);
        chosen.sort_unstable();
        if !f(split_statistic(pooled, &chosen)) {
            return;
        }
    }
}

/// SplitMix64 (Steele, Lea & Flood 2014): tiny, fast, and fixed forever.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n by a widening multiply (bias below n/2⁶⁴).
    fn below(&mut self, n: usize) -> usize {
        ((self.next() as u128 * n as u128) >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binomials_and_plans() {
        assert_eq!(binomial_up_to(16, 8, usize::MAX), Some(12_870));
        assert_eq!(binomial_up_to(18, 9, usize::MAX), Some(48_620));
        assert_eq!(binomial_up_to(20, 10, 100_000), None);
        assert_eq!(binomial_up_to(200, 100, usize::MAX), None);
        assert_eq!(plan(8, 8, 10_000), Plan::Exact(12_870));
        assert_eq!(plan(9, 9, 0), Plan::Exact(48_620));
        assert_eq!(plan(10, 10, 20_000), Plan::MonteCarlo(20_000));
        assert_eq!(plan(10, 10, 5), Plan::MonteCarlo(MIN_MONTE_CARLO));
        // As in SciPy, asking for at least as many resamples as there are splits makes the test exact.
        assert_eq!(plan(10, 10, 200_000), Plan::Exact(184_756));
    }

    #[test]
    fn smallest_p_bounds() {
        assert_eq!(smallest_attainable_p(8, 8), 2.0 / 12_870.0);
        assert_eq!(smallest_attainable_p(1, 1), 1.0);
        assert_eq!(smallest_attainable_p(0, 5), 1.0);
        // C(600, 300) ≈ 1.4e179 still fits a double; C(1200, 600) does not, and the bound becomes 0.
        assert!(smallest_attainable_p(300, 300) > 0.0 && smallest_attainable_p(300, 300) < 1e-178);
        assert_eq!(smallest_attainable_p(600, 600), 0.0);
        assert_eq!(smallest_attainable_p_for(10, 10, 20_000), 2.0 / 20_001.0);
        assert_eq!(smallest_attainable_p_for(4, 4, 20_000), 2.0 / 70.0);
        assert!(smallest_attainable_p(10, 10) < smallest_attainable_p_for(10, 10, 20_000));
    }

    #[test]
    fn most_extreme_split_reaches_the_smallest_p() {
        let x = [5.0, 6.0, 7.0, 8.0];
        let y = [1.0, 2.0, 3.0, 4.0, 4.5];
        let r = permutation_mean_difference(&x, &y, 10_000, 1).expect("non-empty");
        assert!(r.exact);
        assert_eq!(r.permutations, 126);
        assert_eq!(r.p_value, smallest_attainable_p(4, 5));
    }

    #[test]
    fn identical_values_give_p_one() {
        let r = permutation_mean_difference(&[0.3; 4], &[0.3; 5], 10_000, 1).expect("non-empty");
        assert_eq!((r.diff, r.p_value), (0.0, 1.0));
    }

    #[test]
    fn monte_carlo_is_seeded() {
        let x: Vec<f64> = (0..11).map(|i| (i as f64 * 0.7).sin()).collect();
        let y: Vec<f64> = (0..12).map(|i| 0.3 + (i as f64 * 1.3).cos()).collect();
        let a = permutation_mean_difference(&x, &y, 10_000, 5).expect("non-empty");
        let b = permutation_mean_difference(&x, &y, 10_000, 5).expect("non-empty");
        let c = permutation_mean_difference(&x, &y, 10_000, 6).expect("non-empty");
        assert!(!a.exact && a.permutations == 10_000);
        assert_eq!(a, b);
        assert_ne!(a.p_value, c.p_value);
    }

    #[test]
    fn rejects_empty_and_non_finite() {
        assert!(permutation_mean_difference(&[], &[1.0], 10_000, 1).is_none());
        assert!(permutation_mean_difference(&[f64::NAN, 1.0], &[1.0], 10_000, 1).is_none());
        assert!(permutation_mean_difference(&[f64::INFINITY], &[1.0], 10_000, 1).is_none());
    }

    #[test]
    fn the_early_stopping_query_agrees_with_the_full_test() {
        // Exact (6 vs 7) and Monte Carlo (12 vs 12) sizes, separated and overlapping samples, thresholds around p.
        let sample = |n: usize, shift: f64, k: u64| -> Vec<f64> {
            (0..n)
                .map(|i| shift + ((i as u64 * 7919 + k * 104_729) % 97) as f64 / 97.0)
                .collect()
        };
        for (nx, ny) in [(6, 7), (12, 12)] {
            for (shift, k) in [(0.0, 1), (0.2, 2), (0.5, 3), (1.0, 4)] {
                let (x, y) = (sample(nx, shift, k), sample(ny, 0.0, k + 10));
                let full = permutation_mean_difference(&x, &y, 10_000, 9)
                    .expect("test")
                    .p_value;
                for threshold in [1e-4, 0.01, 0.05, full, full * 1.0001, 0.5] {
                    let below = permutation_p_below(&x, &y, 10_000, 9, threshold);
                    assert_eq!(
                        below,
                        (full < threshold).then_some(full),
                        "{nx}/{ny} {shift} {threshold}"
                    );
                }
            }
        }
    }
}
