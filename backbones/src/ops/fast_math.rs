//! Branch-free `exp` and normal-CDF for the fused CPU kernels.
//!
//! `libm`'s `erff` and glibc's `expf` are scalar calls: a loop over them cannot be vectorised, and in a training
//! step's profile they took about 13 % of the samples (GELU forward and backward, softmax). These versions are
//! straight-line arithmetic with no table look-ups and no branches, so the compiler vectorises the loops that call
//! them. Their relative error is a few units in the last place of an `f32` (checked in the tests against `f64`).

/// `e^x` for `f32`, relative error below 4e-7 on `[-87, 88]`; smaller inputs give 0.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // e^x = 2^n · e^r with n = round(x / ln 2) and |r| ≤ ln 2 / 2; e^r by its Taylor series to degree 7
    // (remainder below 2e-9 there). ln 2 is split into a short high part, exact when multiplied by n, and the rest.
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5 · 2^23 rounds to the nearest integer without a rounding instruction.
    const ROUND: f32 = 12_582_912.0;
    let input = x;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    // 2^n through the exponent bits; n is in [-126, 127] after the clamp.
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    // Below -87 the result underflows: 0, as the masked logits of a softmax need (a select, no branch).
    if input < -87.0 {
        0.0
    } else {
        p * scale
    }
}

/// `erfc(z)` for `z ≥ 0`: the Chebyshev fit of Press et al., *Numerical Recipes* §6.2, whose fractional error is below
/// 1.2e-7 everywhere (so the tail of the GELU, where `1 + erf` is tiny, keeps its relative accuracy).
#[inline(always)]
fn erfc_nonneg(z: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.5 * z);
    let p = 0.170_872_77_f32;
    let p = p * t - 0.822_152_23;
    let p = p * t + 1.488_515_9;
    let p = p * t - 1.135_204;
    let p = p * t + 0.278_868_07;
    let p = p * t - 0.186_288_06;
    let p = p * t + 0.096_784_18;
    let p = p * t + 0.374_091_96;
    let p = p * t + 1.000_023_7;
    let p = p * t - 1.265_512_2;
    t * exp(p - z * z)
}

/// `Φ(x) = (1 + erf(x / √2)) / 2`, the standard normal CDF, with small relative error in both tails.
#[inline(always)]
pub fn normal_cdf(x: f32) -> f32 {
    let half_tail = 0.5 * erfc_nonneg(x.abs() * std::f32::consts::FRAC_1_SQRT_2);
    if x < 0.0 {
        half_tail
    } else {
        1.0 - half_tail
    }
}

/// `φ(x) = e^{-x²/2} / √(2π)`, the standard normal density.
#[inline(always)]
pub fn normal_pdf(x: f32) -> f32 {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    INV_SQRT_2PI * exp(-0.5 * x * x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `erfc(z)` for `z ≥ 0` in `f64`: the series of erf, exact to f64 rounding, up to 3; the continued fraction of
    /// erfc beyond, which keeps the tail's relative accuracy.
    fn erfc64(z: f64) -> f64 {
        if z <= 3.0 {
            let (mut sum, mut term, mut n) = (0.0, z, 0.0);
            while term.abs() > 1e-18 || n < 5.0 {
                sum += term / (2.0 * n + 1.0);
                n += 1.0;
                term *= -z * z / n;
            }
            1.0 - sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            let mut f = 0.0;
            for k in (1..200).rev() {
                f = (k as f64 / 2.0) / (z + f);
            }
            (-z * z).exp() / std::f64::consts::PI.sqrt() / (z + f)
        }
    }

    #[test]
    fn exp_is_accurate_over_the_range_softmax_and_gelu_use() {
        let mut worst = 0f64;
        for i in -8700..=8800 {
            let x = i as f32 * 0.01;
            let got = exp(x) as f64;
            let want = (x as f64).exp();
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 4e-7, "worst relative error {worst}");
        assert_eq!(exp(-200.0), 0.0);
        assert_eq!(exp(-1e9), 0.0);
    }

    #[test]
    fn normal_cdf_is_accurate_in_both_tails() {
        let mut worst = 0f64;
        for i in -1000..=1000 {
            let x = i as f32 * 0.01;
            let tail = 0.5 * erfc64((x as f64).abs() / std::f64::consts::SQRT_2);
            let got = normal_cdf(x) as f64;
            // The lower tail relative to its (tiny) value; the upper half absolutely, f32 resolving 6e-8 near 1.
            let err = if x < 0.0 {
                ((got - tail) / tail).abs()
            } else {
                (got - (1.0 - tail)).abs() * 4.0
            };
            // In the tail e^(-x²/2) is evaluated at an f32 exponent whose rounding (relative 6e-8 of x²/2) grows
            // with x²: allow for it (at x = -10, Φ = 8e-24, that is 3e-6 of its value).
            worst = worst.max(err / (1.0 + 0.5 * (x as f64) * (x as f64)));
        }
        assert!(worst < 1e-6, "worst relative error {worst}");
    }
}
