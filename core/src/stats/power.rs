//! Power of the two-sided two-sample t-test with equal group sizes, and the two questions a stage plan asks of
//! it: the smallest effect n designs per group can detect, and the designs per group an effect needs.
//!
//! The power follows statsmodels' `TTestIndPower().power(effect_size=d, nobs1=n, alpha=α, ratio=1,
//! alternative='two-sided')`: df = 2n − 2, noncentrality d·√(n/2) (n/2 = 1/(1/n + 1/n)), critical value
//! c = t_{1−α/2, df}, power = P(T > c) + P(T < −c) for T noncentral t. `mde` and `designs_needed` solve the same
//! equation as `TTestIndPower().solve_power(...)`, but to full precision: statsmodels' root finder stops at
//! `xtol=1e-5`, so its effect sizes can differ from the exact root by a few parts in a million.

use statrs::distribution::{ContinuousCDF, Normal};

use super::noncentral_t::{nct_cdf, nct_sf, t_isf};

/// The conventional target power.
pub const DEFAULT_POWER: f64 = 0.8;

/// `designs_needed` gives up above this many designs per group (the answer would not be a plan anyone runs).
pub const MAX_DESIGNS_PER_GROUP: usize = 1_000_000;

/// Power of the two-sided two-sample t-test (pooled variance) for standardized effect `effect_size`
/// (difference of means over the common standard deviation) with `n_per_group` observations in each group;
/// `statsmodels.stats.power.TTestIndPower().power(effect_size, nobs1=n_per_group, alpha=alpha, ratio=1,
/// alternative='two-sided')`. NaN unless n_per_group > 1 and 0 < alpha < 1.
pub fn two_sample_power(effect_size: f64, n_per_group: f64, alpha: f64) -> f64 {
    if effect_size.is_nan()
        || n_per_group.is_nan()
        || n_per_group <= 1.0
        || !valid_probability(alpha)
    {
        return f64::NAN;
    }
    let df = 2.0 * n_per_group - 2.0;
    let nobs = 1.0 / (2.0 / n_per_group);
    let crit = t_isf(alpha / 2.0, df);
    let nc = effect_size * nobs.sqrt();
    nct_sf(crit, df, nc) + nct_cdf(-crit, df, nc)
}

/// Minimum detectable effect, in the units of `sd`: the difference of means that the two-sided two-sample
/// t-test at level `alpha` detects with probability `power` given `n_per_group` designs in each group.
///
/// Equals `TTestIndPower().solve_power(effect_size=None, nobs1=n_per_group, alpha=alpha, power=power, ratio=1,
/// alternative='two-sided') * sd` (to statsmodels' solver tolerance; this root is exact to ~1e-13).
/// NaN unless sd ≥ 0, n_per_group ≥ 2 and 0 < alpha < power < 1.
pub fn mde(sd: f64, n_per_group: usize, alpha: f64, power: f64) -> f64 {
    if sd.is_nan()
        || sd < 0.0
        || sd.is_infinite()
        || n_per_group < 2
        || !valid_probability(alpha)
        || !valid_probability(power)
        || power <= alpha
    {
        return f64::NAN;
    }
    let n = n_per_group as f64;
    let shortfall = |d: f64| two_sample_power(d, n, alpha) - power;
    // The normal approximation underestimates the t-test's effect; doubling brackets the root quickly.
    let mut hi = ((normal_quantile(1.0 - alpha / 2.0) + normal_quantile(power)) * (2.0 / n).sqrt())
        .max(f64::EPSILON);
    let mut lo = 0.0;
    let mut brackets = false;
    for _ in 0..64 {
        let s = shortfall(hi);
        if s.is_nan() {
            return f64::NAN;
        }
        if s >= 0.0 {
            brackets = true;
            break;
        }
        lo = hi;
        hi *= 2.0;
    }
    if !brackets {
        return f64::NAN;
    }
    // Bisection: power is increasing in the effect, and each evaluation is cheap next to the certainty.
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi || hi - lo <= 1e-15 * hi {
            break;
        }
        if shortfall(mid) >= 0.0 {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    0.5 * (lo + hi) * sd
}

/// The smallest number of designs per group for which the two-sided two-sample t-test at level `alpha` has
/// at least `power` against a true difference `effect` with standard deviation `sd`.
///
/// Equals `ceil(TTestIndPower().solve_power(effect_size=abs(effect)/sd, nobs1=None, alpha=alpha, power=power,
/// ratio=1, alternative='two-sided'))`, except that the answer is never below 2 (the fewest with a variance
/// estimate). `None` when effect is zero or not finite, sd is not positive, 0 < alpha < power < 1 fails, or
/// more than [`MAX_DESIGNS_PER_GROUP`] would be needed.
pub fn designs_needed(effect: f64, sd: f64, alpha: f64, power: f64) -> Option<usize> {
    if !effect.is_finite()
        || effect == 0.0
        || sd.is_nan()
        || sd <= 0.0
        || sd.is_infinite()
        || !valid_probability(alpha)
        || !valid_probability(power)
        || power <= alpha
    {
        return None;
    }
    let d = effect.abs() / sd;
    let reaches = |n: usize| -> Option<bool> {
        let p = two_sample_power(d, n as f64, alpha);
        if p.is_nan() {
            None
        } else {
            Some(p >= power)
        }
    };
    if reaches(2)? {
        return Some(2);
    }
    // Invariant: `lo` falls short, `hi` reaches. The normal approximation is a good first guess for `hi`.
    let guess = 2.0 * ((normal_quantile(1.0 - alpha / 2.0) + normal_quantile(power)) / d).powi(2);
    let mut lo = 2usize;
    let mut hi = if guess.is_finite() && guess < MAX_DESIGNS_PER_GROUP as f64 {
        (guess.ceil() as usize).max(3)
    } else {
        MAX_DESIGNS_PER_GROUP
    };
    while !reaches(hi)? {
        if hi >= MAX_DESIGNS_PER_GROUP {
            return None;
        }
        lo = hi;
        hi = (hi * 2).min(MAX_DESIGNS_PER_GROUP);
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if reaches(mid)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

fn valid_probability(p: f64) -> bool {
    p > 0.0 && p < 1.0
}

fn normal_quantile(p: f64) -> f64 {
    match Normal::new(0.0, 1.0) {
        Ok(normal) => normal.inverse_cdf(p),
        Err(_) => f64::NAN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_effect_has_power_alpha() {
        for (n, alpha) in [(2.0, 0.05), (8.0, 0.05), (40.0, 0.01)] {
            let p = two_sample_power(0.0, n, alpha);
            assert!((p - alpha).abs() < 1e-14, "{n} {alpha}: {p}");
        }
    }

    #[test]
    fn mde_and_designs_needed_invert_each_other() {
        for n in [4usize, 9, 25, 60] {
            let d = mde(1.0, n, 0.05, DEFAULT_POWER);
            assert_eq!(
                designs_needed(d * 1.000_001, 1.0, 0.05, DEFAULT_POWER),
                Some(n)
            );
            assert_eq!(
                designs_needed(d * 0.999_99, 1.0, 0.05, DEFAULT_POWER),
                Some(n + 1)
            );
        }
    }

    #[test]
    fn mde_scales_with_sd_and_effect_sign_does_not_matter() {
        let one = mde(1.0, 12, 0.05, 0.8);
        assert!((mde(0.25, 12, 0.05, 0.8) - 0.25 * one).abs() < 1e-14);
        assert_eq!(
            designs_needed(-0.7, 1.0, 0.05, 0.8),
            designs_needed(0.7, 1.0, 0.05, 0.8)
        );
    }

    #[test]
    fn invalid_inputs_are_rejected() {
        assert!(mde(1.0, 1, 0.05, 0.8).is_nan());
        assert!(mde(1.0, 10, 0.05, 0.04).is_nan());
        assert!(mde(f64::NAN, 10, 0.05, 0.8).is_nan());
        assert_eq!(designs_needed(0.0, 1.0, 0.05, 0.8), None);
        assert_eq!(designs_needed(1.0, 0.0, 0.05, 0.8), None);
        assert_eq!(designs_needed(1.0, 1.0, 1.5, 0.8), None);
        assert_eq!(designs_needed(1e-4, 1.0, 0.05, 0.8), None);
        assert_eq!(designs_needed(50.0, 1.0, 0.05, 0.8), Some(2));
    }
}
