//! Seeded percentile bootstrap intervals for a mean and for a difference of means.
//!
//! The resampling uses its own SplitMix64 generator so that an interval depends only on the data, the seed and
//! the number of resamples, not on the version of a random-number crate.

/// A two-sided interval at `level` (e.g. 0.95).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ConfidenceInterval {
    pub low: f64,
    pub high: f64,
    pub level: f64,
}

/// Percentile bootstrap CI of the mean; `None` for an empty sample.
pub fn bootstrap_mean_ci(
    x: &[f64],
    resamples: usize,
    level: f64,
    seed: u64,
) -> Option<ConfidenceInterval> {
    if x.is_empty() || resamples == 0 {
        return None;
    }
    let mut rng = SplitMix64(seed);
    let means: Vec<f64> = (0..resamples).map(|_| resample_mean(x, &mut rng)).collect();
    Some(percentile_interval(means, level))
}

/// Percentile bootstrap CI of mean(x) − mean(y), resampling each sample independently; `None` if one is empty.
pub fn bootstrap_mean_difference_ci(
    x: &[f64],
    y: &[f64],
    resamples: usize,
    level: f64,
    seed: u64,
) -> Option<ConfidenceInterval> {
    if x.is_empty() || y.is_empty() || resamples == 0 {
        return None;
    }
    let mut rng = SplitMix64(seed);
    let diffs: Vec<f64> = (0..resamples)
        .map(|_| resample_mean(x, &mut rng) - resample_mean(y, &mut rng))
        .collect();
    Some(percentile_interval(diffs, level))
}

fn resample_mean(x: &[f64], rng: &mut SplitMix64) -> f64 {
    let n = x.len();
    (0..n).map(|_| x[rng.below(n)]).sum::<f64>() / n as f64
}

/// The (1−level)/2 and (1+level)/2 quantiles, linear interpolation between order statistics (NumPy's default).
fn percentile_interval(values: Vec<f64>, level: f64) -> ConfidenceInterval {
    let sorted = super::sorted(&values);
    let alpha = (1.0 - level) / 2.0;
    ConfidenceInterval {
        low: quantile(&sorted, alpha),
        high: quantile(&sorted, 1.0 - alpha),
        level,
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
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

    /// Uniform in 0..n (multiply-shift; the bias is below 2⁻³² for our n).
    fn below(&mut self, n: usize) -> usize {
        ((self.next() >> 32) * n as u64 >> 32) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_interval_and_it_brackets_the_mean() {
        let x: Vec<f64> = (0..50).map(|i| (i as f64 * 0.37).sin()).collect();
        let a = bootstrap_mean_ci(&x, 2000, 0.95, 7).expect("non-empty");
        let b = bootstrap_mean_ci(&x, 2000, 0.95, 7).expect("non-empty");
        assert_eq!(a, b);
        let m = super::super::mean(&x);
        assert!(a.low < m && m < a.high);
        let c = bootstrap_mean_ci(&x, 2000, 0.95, 8).expect("non-empty");
        assert_ne!(a, c);
    }

    #[test]
    fn difference_interval_excludes_zero_for_separated_samples() {
        let x: Vec<f64> = (0..30).map(|i| 1.0 + 0.01 * i as f64).collect();
        let y: Vec<f64> = (0..30).map(|i| 0.0 + 0.01 * i as f64).collect();
        let ci = bootstrap_mean_difference_ci(&x, &y, 1000, 0.95, 1).expect("non-empty");
        assert!(ci.low > 0.9 && ci.high < 1.1);
    }

    #[test]
    fn interval_narrows_with_more_data() {
        let small: Vec<f64> = (0..10).map(|i| (i as f64 * 1.3).cos()).collect();
        let large: Vec<f64> = (0..1000).map(|i| (i as f64 * 1.3).cos()).collect();
        let a = bootstrap_mean_ci(&small, 1000, 0.95, 3).expect("non-empty");
        let b = bootstrap_mean_ci(&large, 1000, 0.95, 3).expect("non-empty");
        assert!(b.high - b.low < (a.high - a.low) / 3.0);
    }
}
