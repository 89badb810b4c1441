//! Group-sequential alpha spending with the Lan–DeMets O'Brien–Fleming-type spending function, for a test
//! repeated at several looks as evidence accumulates.
//!
//! The spending function α(t) = 2 − 2·Φ(z_{1−α/2}/√t) spends almost nothing early (α(0.25) ≈ 9e-5 for
//! α = 0.05) and most of α near the end, so a test that may stop early loses little power at the final look.
//!
//! [`SequentialAlpha`] turns it into per-look thresholds without the group-sequential joint distribution: a
//! look may use the alpha spent since the last look that was actually tested, so the thresholds of all tested
//! looks sum to at most α. By Boole's inequality the chance of any false rejection is then at most α whatever
//! the dependence between looks (a Bonferroni split whose shares follow the spending function), which is what
//! lets each look use an exact permutation p-value rather than a normal-theory boundary.

use super::noncentral_t::{normal_isf, normal_sf};

/// Cumulative alpha spent by information fraction `t` under the O'Brien–Fleming-type spending function,
/// 2 − 2·Φ(z_{1−α/2}/√t) (Lan & DeMets 1983); exactly `alpha` at t ≥ 1 and 0 at t ≤ 0 or NaN. Computed as
/// 2·Φ̄(·) so that the tiny early values keep their relative precision. Equals
/// `2 * scipy.stats.norm.sf(scipy.stats.norm.isf(alpha / 2) / sqrt(t))`.
pub fn obf_spent(alpha: f64, t: f64) -> f64 {
    if alpha.is_nan() || alpha <= 0.0 || t.is_nan() || t <= 0.0 {
        return 0.0;
    }
    let alpha = alpha.min(1.0);
    if t >= 1.0 {
        return alpha;
    }
    // z_{1−α/2} as the upper quantile of α/2, which keeps its precision for small α.
    let z = normal_isf(alpha / 2.0);
    if z.is_nan() {
        return 0.0;
    }
    (2.0 * normal_sf(z / t.sqrt())).clamp(0.0, alpha)
}

/// What a look may do.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum Look {
    /// Test at this level; the alpha is now spent.
    Test { threshold: f64 },
    /// No p-value the test can produce is at or below `threshold`, so testing would waste the alpha; it stays
    /// unspent and is available to the next look.
    Skipped { threshold: f64 },
}

impl Look {
    /// The level this look had available, tested or not.
    pub fn threshold(&self) -> f64 {
        match *self {
            Look::Test { threshold } | Look::Skipped { threshold } => threshold,
        }
    }

    pub fn is_test(&self) -> bool {
        matches!(self, Look::Test { .. })
    }
}

/// Tracks the alpha spent over a sequence of looks at increasing information fractions.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct SequentialAlpha {
    alpha: f64,
    /// The spending function's value at the last tested look: the total of all tested thresholds.
    spent: f64,
}

impl SequentialAlpha {
    /// A fresh budget of `alpha` (clamped to [0, 1]; NaN counts as 0, so no look ever tests).
    pub fn new(alpha: f64) -> Self {
        let alpha = if alpha.is_nan() {
            0.0
        } else {
            alpha.clamp(0.0, 1.0)
        };
        SequentialAlpha { alpha, spent: 0.0 }
    }

    /// The next look, at `information_fraction` (≥ 1 for the final look, which may use everything left) by a
    /// test whose smallest possible p-value is `smallest_attainable_p`.
    ///
    /// The threshold is obf_spent(α, t) minus the alpha already spent by tested looks (never negative, so a
    /// fraction that does not grow gets nothing). The look is skipped, spending nothing, when even the
    /// smallest attainable p exceeds it (or is NaN); otherwise it is a test and its threshold is spent.
    pub fn look(&mut self, information_fraction: f64, smallest_attainable_p: f64) -> Look {
        let cumulative = obf_spent(self.alpha, information_fraction);
        let threshold = (cumulative - self.spent).max(0.0);
        if smallest_attainable_p.is_nan() || smallest_attainable_p > threshold || threshold == 0.0 {
            return Look::Skipped { threshold };
        }
        self.spent = cumulative.max(self.spent);
        Look::Test { threshold }
    }

    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// Total of the thresholds of all tested looks so far.
    pub fn spent(&self) -> f64 {
        self.spent
    }

    /// What is left for later looks.
    pub fn remaining(&self) -> f64 {
        (self.alpha - self.spent).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn obf_spends_alpha_at_the_end_and_little_early() {
        assert_eq!(obf_spent(0.05, 1.0), 0.05);
        assert_eq!(obf_spent(0.05, 1.5), 0.05);
        assert_eq!(obf_spent(0.05, 0.0), 0.0);
        assert_eq!(obf_spent(0.05, f64::NAN), 0.0);
        // Just below t = 1 the function is continuous with its end value.
        assert!((obf_spent(0.05, 1.0 - 1e-12) - 0.05).abs() < 1e-12);
        let mut last = 0.0;
        for i in 1..=20 {
            let s = obf_spent(0.05, i as f64 / 20.0);
            assert!(s > last);
            last = s;
        }
    }

    #[test]
    fn tested_thresholds_sum_to_at_most_alpha() {
        let mut seq = SequentialAlpha::new(0.05);
        let mut total = 0.0;
        for t in [0.2, 0.4, 0.6, 0.8, 1.0] {
            if let Look::Test { threshold } = seq.look(t, 0.0) {
                total += threshold;
            }
        }
        assert!(total <= 0.05 * (1.0 + 1e-15), "{total}");
        assert!((total - 0.05).abs() < 1e-15);
        assert_eq!(seq.remaining(), 0.0);
        // A look after the final one has nothing left.
        assert_eq!(seq.look(1.0, 0.0), Look::Skipped { threshold: 0.0 });
    }

    #[test]
    fn a_skipped_look_carries_its_alpha_forward() {
        // 8 against 8 designs: the exact permutation test cannot go below 2/12870 ≈ 1.55e-4.
        let floor = 2.0 / 12870.0;
        let mut seq = SequentialAlpha::new(0.05);
        let first = seq.look(0.25, floor);
        assert_eq!(
            first,
            Look::Skipped {
                threshold: obf_spent(0.05, 0.25)
            }
        );
        assert_eq!(seq.spent(), 0.0);
        let second = seq.look(0.5, floor);
        assert!(second.is_test());
        // The second look gets everything spendable by t = 0.5, including the first look's share.
        assert_eq!(second.threshold(), obf_spent(0.05, 0.5));
        let third = seq.look(0.75, floor);
        assert!((third.threshold() - (obf_spent(0.05, 0.75) - obf_spent(0.05, 0.5))).abs() < 1e-18);
        let last = seq.look(1.0, floor);
        let sum = second.threshold() + third.threshold() + last.threshold();
        assert!((sum - 0.05).abs() < 1e-15 && sum <= 0.05 * (1.0 + 1e-15));
    }

    #[test]
    fn a_look_that_cannot_reject_is_skipped_even_at_the_end() {
        let mut seq = SequentialAlpha::new(0.05);
        assert_eq!(seq.look(1.0, 0.1), Look::Skipped { threshold: 0.05 });
        assert_eq!(seq.look(1.0, f64::NAN), Look::Skipped { threshold: 0.05 });
        assert_eq!(seq.remaining(), 0.05);
    }
}
