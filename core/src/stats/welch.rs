//! Welch's unequal-variance t-test, two-sided, following `scipy.stats.ttest_ind(x, y, equal_var=False)`.

use statrs::distribution::{ContinuousCDF, StudentsT};

/// t statistic (mean x − mean y over its standard error), Welch–Satterthwaite degrees of freedom, p-value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WelchResult {
    pub t: f64,
    pub df: f64,
    pub p_value: f64,
}

/// Welch's t-test; `None` when either sample has fewer than two values (no variance estimate).
pub fn welch_t_test(x: &[f64], y: &[f64]) -> Option<WelchResult> {
    if x.len() < 2 || y.len() < 2 {
        return None;
    }
    let sx = super::summary(x);
    let sy = super::summary(y);
    let vx = sx.std * sx.std / sx.n as f64;
    let vy = sy.std * sy.std / sy.n as f64;
    let mut df =
        (vx + vy).powi(2) / (vx * vx / (sx.n as f64 - 1.0) + vy * vy / (sy.n as f64 - 1.0));
    if df.is_nan() {
        // Both variances zero: df is undefined and irrelevant (SciPy uses 1).
        df = 1.0;
    }
    let t = (sx.mean - sy.mean) / (vx + vy).sqrt();
    let p_value = if t.is_nan() {
        f64::NAN
    } else if t.is_infinite() {
        0.0
    } else {
        match StudentsT::new(0.0, 1.0, df) {
            Ok(dist) => (2.0 * dist.sf(t.abs())).clamp(0.0, 1.0),
            Err(_) => f64::NAN,
        }
    };
    Some(WelchResult { t, df, p_value })
}
