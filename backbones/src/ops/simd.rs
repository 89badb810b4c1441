//! The row kernels of the fused CPU ops (softmax, LayerNorm, GELU), compiled twice: for the baseline x86-64 the
//! build targets, and for AVX2 + FMA, chosen at run time when the CPU has them.
//!
//! The workspace is built for the baseline target (SSE2) so that one binary runs on any x86-64 node of a cluster;
//! `gemm` picks its own vector kernels at run time, but our loops would otherwise stay 4 lanes wide. Reductions
//! (row maxima, sums, dot products) keep eight independent partial results, which the compiler can keep in one
//! vector register: a single running sum is a chain of dependent additions that it may not reorder. Splitting the
//! sums this way reassociates them (results change in the last bits, not more); no multiply-add is fused, so the
//! element-wise results are the same with or without AVX2.

use super::fast_math::{exp, normal_cdf, normal_pdf};

/// Defines `fn NAME(args)` that runs its body compiled for AVX2 + FMA when the CPU has both, else as built.
macro_rules! vectorised {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn portable($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    portable($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has the features `avx2` is compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            portable($($arg),*)
        }
    };
}

/// Lanes of the split reductions: one AVX2 register of `f32`.
const LANES: usize = 8;

/// `Σ f(a[i], b[i], c[i])` over the common length, as eight interleaved partial sums added at the end.
#[inline(always)]
fn split_sum(a: &[f32], b: &[f32], c: &[f32], f: impl Fn(f32, f32, f32) -> f32) -> f32 {
    let n = a.len().min(b.len()).min(c.len());
    let (a, b, c) = (&a[..n], &b[..n], &c[..n]);
    let mut lanes = [0f32; LANES];
    let (ac, bc, cc) = (
        a.chunks_exact(LANES),
        b.chunks_exact(LANES),
        c.chunks_exact(LANES),
    );
    let whole = n - n % LANES;
    for ((a, b), c) in ac.zip(bc).zip(cc) {
        for lane in 0..LANES {
            lanes[lane] += f(a[lane], b[lane], c[lane]);
        }
    }
    let mut total = lanes.iter().sum::<f32>();
    for i in whole..n {
        total += f(a[i], b[i], c[i]);
    }
    total
}

/// The largest value of `row` (−∞ for an empty row).
#[inline(always)]
fn split_max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (m, &x) in lanes.iter_mut().zip(chunk) {
            *m = m.max(x);
        }
    }
    let lanes_max = lanes.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    chunks.remainder().iter().fold(lanes_max, |m, &x| m.max(x))
}

vectorised! {
    /// In place: `row ← softmax(scale · row + bias)`.
    pub fn softmax_row(row: &mut [f32], bias: &[f32], scale: f32) {
        for (x, &b) in row.iter_mut().zip(bias) {
            *x = *x * scale + b;
        }
        let max = split_max(row);
        for x in row.iter_mut() {
            *x = exp(*x - max);
        }
        let inv = 1.0 / split_sum(row, row, row, |x, _, _| x);
        for x in row.iter_mut() {
            *x *= inv;
        }
    }
}

vectorised! {
    /// In place: `grad ← scale · y ∘ (grad − Σ grad ∘ y)`, the softmax's input gradient from its output `y`.
    pub fn softmax_backward_row(grad: &mut [f32], y: &[f32], scale: f32) {
        let dot = split_sum(grad, y, y, |g, y, _| g * y);
        for (g, &y) in grad.iter_mut().zip(y) {
            *g = scale * y * (*g - dot);
        }
    }
}

/// Mean and `1 / sqrt(var + eps)` of one row.
#[inline(always)]
fn row_moments(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = split_sum(x, x, x, |x, _, _| x) / n;
    let var = split_sum(x, x, x, |x, _, _| (x - mean) * (x - mean)) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

vectorised! {
    /// `out = (x − mean) / std · weight + bias` over one row.
    pub fn layer_norm_row(out: &mut [f32], x: &[f32], weight: &[f32], bias: &[f32], eps: f32) {
        let (mean, rstd) = row_moments(x, eps);
        for (((o, &x), &g), &b) in out.iter_mut().zip(x).zip(weight).zip(bias) {
            *o = (x - mean) * rstd * g + b;
        }
    }
}

vectorised! {
    /// `out = r · (g − mean(g) − x̂ · mean(g · x̂))` over one row, with `g = dy · weight`.
    pub fn layer_norm_backward_row(out: &mut [f32], x: &[f32], dy: &[f32], weight: &[f32], eps: f32) {
        let (mean, rstd) = row_moments(x, eps);
        let n = x.len() as f32;
        let g_mean = split_sum(dy, weight, weight, |dy, w, _| dy * w) / n;
        let gx_mean = split_sum(x, dy, weight, |x, dy, w| dy * w * (x - mean) * rstd) / n;
        for (((o, &x), &dy), &wt) in out.iter_mut().zip(x).zip(dy).zip(weight) {
            let normed = (x - mean) * rstd;
            *o = rstd * (dy * wt - g_mean - normed * gx_mean);
        }
    }
}

vectorised! {
    /// `out = x · Φ(x)`.
    pub fn gelu_erf(out: &mut [f32], x: &[f32]) {
        for (o, &x) in out.iter_mut().zip(x) {
            *o = x * normal_cdf(x);
        }
    }
}

vectorised! {
    /// `out = dy · (Φ(x) + x φ(x))`.
    pub fn gelu_erf_backward(out: &mut [f32], x: &[f32], dy: &[f32]) {
        for ((o, &x), &g) in out.iter_mut().zip(x).zip(dy) {
            *o = g * (normal_cdf(x) + x * normal_pdf(x));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sequential_softmax(row: &[f32], bias: &[f32], scale: f32) -> Vec<f64> {
        let z: Vec<f64> = row
            .iter()
            .zip(bias)
            .map(|(&x, &b)| x as f64 * scale as f64 + b as f64)
            .collect();
        let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|z| (z - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        e.iter().map(|e| e / sum).collect()
    }

    #[test]
    fn softmax_rows_of_every_length_match_f64() {
        // Lengths below, at and around the lane count, so both the split part and the remainder are covered.
        for n in [1, 5, 8, 9, 16, 23, 128, 131] {
            let row: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.7).collect();
            let mut bias = vec![0f32; n];
            if n > 2 {
                bias[n - 1] = -1e9;
            }
            let mut got = row.clone();
            softmax_row(&mut got, &bias, 0.8);
            for (g, w) in got.iter().zip(sequential_softmax(&row, &bias, 0.8)) {
                assert!(
                    (*g as f64 - w).abs() <= 1e-6 * w.max(1e-3),
                    "n {n}: {g} against {w}"
                );
            }
        }
    }

    #[test]
    fn split_reductions_cover_the_remainder() {
        let x: Vec<f32> = (0..19).map(|i| i as f32).collect();
        assert_eq!(split_sum(&x, &x, &x, |x, _, _| x), 171.0);
        assert_eq!(split_sum(&x[..5], &x, &x, |x, y, _| x * y), 30.0);
        assert_eq!(split_max(&x), 18.0);
        assert_eq!(split_max(&x[..3]), 2.0);
        assert_eq!(split_max(&[]), f32::NEG_INFINITY);
    }
}
