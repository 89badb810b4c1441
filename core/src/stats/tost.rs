//! Two one-sided Welch tests (TOST) for equivalence of two means within a margin, following
//! `statsmodels.stats.weightstats.ttost_ind(x, y, low, upp, usevar='unequal')`.
//!
//! The null hypothesis is that mean x − mean y lies outside (low, upp); it is rejected at level α when both
//! one-sided tests reject: H0₁: diff ≤ low against diff > low, and H0₂: diff ≥ upp against diff < upp. The
//! TOST p-value is therefore the larger of the two one-sided p-values (an intersection–union test needs no
//! multiplicity correction).

use statrs::distribution::{ContinuousCDF, StudentsT};

/// Both one-sided tests and the TOST p-value.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct TostResult {
    /// max(p_lower, p_upper).
    pub p_value: f64,
    /// P(T ≥ t_lower): the test of diff ≤ low against diff > low.
    pub p_lower: f64,
    /// P(T ≤ t_upper): the test of diff ≥ upp against diff < upp.
    pub p_upper: f64,
    /// (mean x − mean y − low) / se.
    pub t_lower: f64,
    /// (mean x − mean y − upp) / se.
    pub t_upper: f64,
    /// Welch–Satterthwaite degrees of freedom, shared by both tests.
    pub df: f64,
}

/// Welch TOST of mean x − mean y within (low, upp). `None` when either sample has fewer than two values, a
/// margin is not finite, or low ≥ upp.
pub fn tost_welch(x: &[f64], y: &[f64], low: f64, upp: f64) -> Option<TostResult> {
    if x.len() < 2 || y.len() < 2 || !low.is_finite() || !upp.is_finite() || low >= upp {
        return None;
    }
    let sx = super::summary(x);
    let sy = super::summary(y);
    let vx = sx.std * sx.std / sx.n as f64;
    let vy = sy.std * sy.std / sy.n as f64;
    let mut df =
        (vx + vy).powi(2) / (vx * vx / (sx.n as f64 - 1.0) + vy * vy / (sy.n as f64 - 1.0));
    if df.is_nan() {
        // Both variances zero: as in `welch_t_test`, df is irrelevant because t is ±∞ (or NaN on the margin).
        df = 1.0;
    }
    let se = (vx + vy).sqrt();
    let diff = sx.mean - sy.mean;
    let t_lower = (diff - low) / se;
    let t_upper = (diff - upp) / se;
    let dist = StudentsT::new(0.0, 1.0, df).ok();
    let tail = |t: f64, upper: bool| match &dist {
        Some(d) if !t.is_nan() => {
            if upper {
                d.sf(t)
            } else {
                d.cdf(t)
            }
        }
        _ => f64::NAN,
    };
    let p_lower = tail(t_lower, true);
    let p_upper = tail(t_upper, false);
    Some(TostResult {
        // NaN-propagating maximum: a NaN side leaves the equivalence undecided.
        p_value: if p_lower.is_nan() || p_upper.is_nan() {
            f64::NAN
        } else {
            p_lower.max(p_upper)
        },
        p_lower,
        p_upper,
        t_lower,
        t_upper,
        df,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p_value_is_the_larger_one_sided_p() {
        let x = [0.71, 0.74, 0.69, 0.73, 0.75, 0.70];
        let y = [0.72, 0.70, 0.71, 0.74, 0.69];
        let r = tost_welch(&x, &y, -0.05, 0.05).expect("two or more values");
        assert_eq!(r.p_value, r.p_lower.max(r.p_upper));
        assert!(r.t_lower > 0.0 && r.t_upper < 0.0);
        // A margin that excludes the observed difference cannot show equivalence.
        let far = tost_welch(&x, &y, 0.02, 0.1).expect("two or more values");
        assert!(far.p_value > 0.5);
    }

    #[test]
    fn rejects_degenerate_input() {
        assert!(tost_welch(&[1.0], &[1.0, 2.0], -1.0, 1.0).is_none());
        assert!(tost_welch(&[1.0, 2.0], &[1.0, 2.0], 1.0, -1.0).is_none());
        assert!(tost_welch(&[1.0, 2.0], &[1.0, 2.0], f64::NAN, 1.0).is_none());
    }

    #[test]
    fn constant_samples_inside_the_margin_are_equivalent() {
        let r = tost_welch(&[0.5, 0.5, 0.5], &[0.5, 0.5], -0.1, 0.1).expect("two or more values");
        assert_eq!((r.p_lower, r.p_upper, r.p_value), (0.0, 0.0, 0.0));
    }
}
