//! The noncentral t distribution's CDF and survival function, following `scipy.stats.nct.cdf(t, df, nc)` and
//! `scipy.stats.nct.sf(t, df, nc)`; statrs has only the central t.
//!
//! For t ≥ 0, with x = t²/(t²+ν), λ = δ²/2 and the Poisson-type weights
//! P_j = e^{−λ} λ^j / j!,  Q_j = e^{−λ} λ^j δ / (√2 Γ(j+3/2)),
//! the series of Lenth (1989, Applied Statistics algorithm AS 243) is
//!
//! ```text
//! F(t)     = Φ(−δ) + ½ Σ_j [ P_j I_x(j+½, ν/2)       + Q_j I_x(j+1, ν/2) ]
//! 1 − F(t) =         ½ Σ_j [ P_j I_{1−x}(ν/2, j+½)   + Q_j I_{1−x}(ν/2, j+1) ]
//! ```
//!
//! (the second follows from the first with 1 − I_x(a, b) = I_{1−x}(b, a) and F(∞) = 1). Negative t reflect:
//! F(t; ν, δ) = 1 − F(−t; ν, −δ).
//!
//! Unlike AS 243, which sums upwards from j = 0, the sums here start at the largest weight (j ≈ λ) and run
//! outwards in both directions until the remaining Poisson mass cannot change the result, so a large δ costs
//! O(√λ) terms instead of O(λ) and loses no terms to underflow. Every term evaluates its incomplete beta
//! afresh (no recurrences), which keeps the error near the accuracy of `beta_reg` itself.
//!
//! Both tails are computed from their own series, so each is accurate in relative terms when δ ≥ 0 (all terms
//! positive). For t ≥ 0 with δ < 0 (equivalently t ≤ 0 with δ > 0: the far lower tail of a positively shifted
//! distribution) the Q terms are negative and that tail is accurate only in absolute terms (about 1e-13: the
//! terms that cancel are of order one and each incomplete beta is good to ~1e-14), which is what power
//! calculations need: there it is a tiny addend next to the main tail. SciPy (Boost) is not exact there either;
//! at t = −2, ν = 38, δ = 6, where the true value is 3.1257e-15, it gives 3.12567e-15 and this series 5e-14.

use statrs::distribution::{Continuous, ContinuousCDF, Normal, StudentsT};
use statrs::function::beta::checked_beta_reg;
use statrs::function::gamma::{checked_gamma_ur, ln_gamma};

/// P(T ≤ t) for T noncentral t with `df` degrees of freedom and noncentrality `nc`
/// (`scipy.stats.nct.cdf(t, df, nc)`); NaN for NaN arguments or `df` ≤ 0.
pub fn nct_cdf(t: f64, df: f64, nc: f64) -> f64 {
    if !valid(t, df, nc) {
        return f64::NAN;
    }
    if t.is_infinite() {
        return if t > 0.0 { 1.0 } else { 0.0 };
    }
    if t < 0.0 {
        upper_tail(-t, df, -nc)
    } else {
        lower_tail(t, df, nc)
    }
}

/// P(T > t) for T noncentral t (`scipy.stats.nct.sf(t, df, nc)`); NaN for NaN arguments or `df` ≤ 0.
pub fn nct_sf(t: f64, df: f64, nc: f64) -> f64 {
    if !valid(t, df, nc) {
        return f64::NAN;
    }
    if t.is_infinite() {
        return if t > 0.0 { 0.0 } else { 1.0 };
    }
    if t < 0.0 {
        lower_tail(-t, df, -nc)
    } else {
        upper_tail(t, df, nc)
    }
}

fn valid(t: f64, df: f64, nc: f64) -> bool {
    !t.is_nan() && !nc.is_nan() && df > 0.0 && nc.is_finite()
}

/// Φ(z), accurate to a few ulps in relative terms in both tails.
///
/// statrs' `erfc` (and with it `Normal::cdf`/`sf`) is good to only ~1e-10 relative, not enough to reproduce
/// SciPy to 1e-9 after the cancellations above, so Φ comes from the regularized upper incomplete gamma
/// function instead: Φ(−|z|) = ½·Q(½, z²/2).
pub(crate) fn normal_cdf(z: f64) -> f64 {
    if z.is_nan() {
        return f64::NAN;
    }
    // Beyond 40 standard deviations the smaller tail is below the smallest subnormal.
    if z.abs() > 40.0 {
        return if z > 0.0 { 1.0 } else { 0.0 };
    }
    if z == 0.0 {
        return 0.5;
    }
    let half_tail = 0.5 * checked_gamma_ur(0.5, 0.5 * z * z).unwrap_or(f64::NAN);
    if z < 0.0 {
        half_tail
    } else {
        1.0 - half_tail
    }
}

/// 1 − Φ(z), by symmetry.
pub(crate) fn normal_sf(z: f64) -> f64 {
    normal_cdf(-z)
}

/// The z with 1 − Φ(z) = p (`scipy.stats.norm.isf(p)`): statrs' quantile refined by Newton steps on
/// [`normal_sf`], for the same reason as [`t_isf`]. NaN unless 0 < p < 1.
pub(crate) fn normal_isf(p: f64) -> f64 {
    if p.is_nan() || p <= 0.0 || p >= 1.0 {
        return f64::NAN;
    }
    if p > 0.5 {
        return -normal_isf(1.0 - p);
    }
    let Ok(normal) = Normal::new(0.0, 1.0) else {
        return f64::NAN;
    };
    let mut z = -normal.inverse_cdf(p);
    for _ in 0..4 {
        let density = (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
        if density.is_nan() || density <= 0.0 {
            break;
        }
        let step = (normal_sf(z) - p) / density;
        z += step;
        if step.abs() <= 1e-16 * z.abs() {
            break;
        }
    }
    z
}

/// F(t) for t ≥ 0.
fn lower_tail(t: f64, df: f64, nc: f64) -> f64 {
    if df.is_infinite() {
        return normal_cdf(t - nc);
    }
    let Some((x, _)) = beta_arguments(t, df) else {
        return normal_cdf(-nc);
    };
    let b = 0.5 * df;
    let sum = weighted_sum(nc, |j| {
        let j = j as f64;
        (beta_reg(j + 0.5, b, x), beta_reg(j + 1.0, b, x))
    });
    (normal_cdf(-nc) + 0.5 * sum).clamp(0.0, 1.0)
}

/// 1 − F(t) for t ≥ 0.
fn upper_tail(t: f64, df: f64, nc: f64) -> f64 {
    if df.is_infinite() {
        return normal_cdf(nc - t);
    }
    let Some((_, y)) = beta_arguments(t, df) else {
        return normal_cdf(nc);
    };
    let a = 0.5 * df;
    let sum = weighted_sum(nc, |j| {
        let j = j as f64;
        (beta_reg(a, j + 0.5, y), beta_reg(a, j + 1.0, y))
    });
    (0.5 * sum).clamp(0.0, 1.0)
}

/// x = t²/(t²+ν) and 1 − x = ν/(t²+ν), each computed directly (1 − x from x would lose the small tail);
/// `None` when t² underflows to zero, where both tails reduce to Φ(∓δ).
fn beta_arguments(t: f64, df: f64) -> Option<(f64, f64)> {
    let t2 = t * t;
    if t2 == 0.0 {
        return None;
    }
    if t2.is_infinite() {
        // Only for |t| > 1e154: the t² term dominates completely.
        return Some((1.0, df / t / t));
    }
    let denom = t2 + df;
    Some((t2 / denom, df / denom))
}

/// statrs' regularized incomplete beta, NaN instead of a panic on out-of-range arguments.
fn beta_reg(a: f64, b: f64, x: f64) -> f64 {
    checked_beta_reg(a, b, x.clamp(0.0, 1.0)).unwrap_or(f64::NAN)
}

/// Σ_j P_j·u_j + Q_j·v_j with (u_j, v_j) = `betas(j)` (each in [0, 1]), summed from the mode of the Poisson
/// weights outwards; a direction stops once a geometric bound on the weights it has not reached falls below
/// 1e-17 of the running sum.
fn weighted_sum(nc: f64, betas: impl Fn(usize) -> (f64, f64)) -> f64 {
    const REL: f64 = 1e-17;
    // Far beyond any noncentrality a power calculation meets; only stops a runaway loop.
    const MAX_TERMS: usize = 100_000;
    let lambda = 0.5 * nc * nc;
    let mode = lambda.floor().min(MAX_TERMS as f64) as usize;
    // Weights at the mode, from logarithms (λ^k/k! alone would overflow for large λ).
    let log_pow = if mode == 0 {
        0.0
    } else {
        mode as f64 * lambda.ln()
    };
    let p_mode = (-lambda + log_pow - ln_gamma(mode as f64 + 1.0)).exp();
    let q_mode = if nc == 0.0 {
        0.0
    } else {
        nc.signum()
            * (-lambda + log_pow - ln_gamma(mode as f64 + 1.5) + nc.abs().ln()
                - 0.5 * std::f64::consts::LN_2)
                .exp()
    };

    let mut sum = 0.0;
    // Upwards from the mode: P_{j+1} = P_j·λ/(j+1), Q_{j+1} = Q_j·λ/(j+3/2).
    let (mut p, mut q) = (p_mode, q_mode);
    for j in mode..mode + MAX_TERMS {
        let (u, v) = betas(j);
        sum += p * u + q * v;
        let ratio = lambda / (j as f64 + 1.0);
        p *= ratio;
        q *= lambda / (j as f64 + 1.5);
        // Every later weight shrinks by at least `ratio` per step, and every beta factor is at most 1.
        if ratio < 1.0 && (p + q.abs()) / (1.0 - ratio) <= (REL * sum.abs()).max(f64::MIN_POSITIVE)
        {
            break;
        }
        if p == 0.0 && q == 0.0 {
            break;
        }
    }
    // Downwards: P_{j−1} = P_j·j/λ, Q_{j−1} = Q_j·(j+½)/λ.
    let (mut p, mut q) = (p_mode, q_mode);
    for j in (0..mode).rev() {
        p *= (j + 1) as f64 / lambda;
        q *= (j as f64 + 1.5) / lambda;
        let (u, v) = betas(j);
        sum += p * u + q * v;
        let ratio = j as f64 / lambda;
        if (p + q.abs()) * ratio / (1.0 - ratio) <= (REL * sum.abs()).max(f64::MIN_POSITIVE) {
            break;
        }
    }
    sum
}

/// The t with P(T > t) = p for the central t with `df` degrees of freedom (`scipy.stats.t.isf(p, df)`).
///
/// statrs' quantile inverts the incomplete beta only to about 1e-13 relative; a few Newton steps on its
/// (accurate) survival function bring the quantile to full precision. NaN unless 0 < p < 1 and df > 0.
pub fn t_isf(p: f64, df: f64) -> f64 {
    if p.is_nan() || p <= 0.0 || p >= 1.0 || df.is_nan() || df <= 0.0 {
        return f64::NAN;
    }
    let Ok(dist) = StudentsT::new(0.0, 1.0, df) else {
        return f64::NAN;
    };
    // By symmetry, isf(p) = −ppf(p); the lower quantile of a small p keeps its precision.
    let mut t = if p <= 0.5 {
        -dist.inverse_cdf(p)
    } else {
        dist.inverse_cdf(1.0 - p)
    };
    for _ in 0..4 {
        let density = dist.pdf(t);
        if density.is_nan() || density <= 0.0 {
            break;
        }
        let step = (dist.sf(t) - p) / density;
        t += step;
        if step.abs() <= 1e-16 * t.abs() {
            break;
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_noncentrality_is_the_central_t() {
        let dist = StudentsT::new(0.0, 1.0, 7.5).expect("valid");
        for t in [-3.0, -0.4, 0.0, 0.7, 2.5] {
            assert!(
                (nct_cdf(t, 7.5, 0.0) / dist.cdf(t) - 1.0).abs() < 1e-14,
                "{t}"
            );
            assert!(
                (nct_sf(t, 7.5, 0.0) / dist.sf(t) - 1.0).abs() < 1e-14,
                "{t}"
            );
        }
    }

    #[test]
    fn tails_add_to_one_and_reflect() {
        for (t, df, nc) in [
            (1.3, 4.0, 2.0),
            (-0.8, 12.0, 0.6),
            (2.2, 30.0, -1.5),
            (5.0, 3.0, 6.0),
        ] {
            let total = nct_cdf(t, df, nc) + nct_sf(t, df, nc);
            // The two series are summed independently; each is good to ~1e-13 (the incomplete beta's
            // prefactor comes from a difference of log-gammas).
            assert!((total - 1.0).abs() < 1e-12, "{t} {df} {nc}: {total}");
            assert!((nct_cdf(t, df, nc) - nct_sf(-t, df, -nc)).abs() < 1e-15);
        }
    }

    #[test]
    fn t_quantile_inverts_the_survival_function() {
        let dist = StudentsT::new(0.0, 1.0, 14.0).expect("valid");
        for p in [0.025, 0.005, 0.3, 0.9] {
            let t = t_isf(p, 14.0);
            assert!((dist.sf(t) - p).abs() <= 1e-15 * p.max(1.0 - p), "{p}");
        }
        assert!(t_isf(0.0, 3.0).is_nan() && t_isf(0.5, -1.0).is_nan());
    }

    #[test]
    fn normal_tails_and_quantile() {
        // scipy.special.ndtr(-2.0), ndtr(-6.0), ndtr(1.0); norm.isf(0.025)
        assert!((normal_cdf(-2.0) / 0.022750131948179195 - 1.0).abs() < 1e-14);
        assert!((normal_cdf(-6.0) / 9.865876450376946e-10 - 1.0).abs() < 1e-14);
        assert!((normal_cdf(1.0) - 0.8413447460685429).abs() < 1e-15);
        assert_eq!(normal_cdf(0.0), 0.5);
        assert!((normal_isf(0.025) - 1.9599639845400545).abs() < 1e-15);
        assert!((normal_isf(0.975) + 1.9599639845400545).abs() < 1e-15);
        assert!(normal_isf(0.0).is_nan() && normal_cdf(f64::NAN).is_nan());
    }

    #[test]
    fn invalid_arguments_give_nan() {
        assert!(nct_cdf(f64::NAN, 3.0, 1.0).is_nan());
        assert!(nct_sf(1.0, 0.0, 1.0).is_nan());
        assert_eq!(nct_cdf(f64::INFINITY, 3.0, 1.0), 1.0);
        assert_eq!(nct_sf(f64::INFINITY, 3.0, 1.0), 0.0);
    }
}
