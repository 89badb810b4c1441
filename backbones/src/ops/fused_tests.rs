//! Each fused kernel against the composed ops it replaces (value and input gradient, ≤ 1e-5 relative) and against
//! central finite differences of its own forward pass (in `f64` arithmetic on the `f32` outputs).

use candle_core::{DType, Device, Result, Tensor, Var, D};

use crate::ops::{composed_layer_norm, fused, mask_bias};

fn max_abs(t: &Tensor) -> Result<f32> {
    t.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
}

/// Value and input gradient of `f` at `x` for the upstream gradient `upstream` (loss `Σ f(x) · upstream`).
fn value_and_gradient(
    x: &Tensor,
    upstream: &Tensor,
    f: &dyn Fn(&Tensor) -> Result<Tensor>,
) -> Result<(Tensor, Tensor)> {
    let var = Var::from_tensor(x)?;
    let y = f(var.as_tensor())?;
    let grads = (&y * upstream)?.sum_all()?.backward()?;
    let g = grads
        .get(&var)
        .cloned()
        .ok_or_else(|| candle_core::Error::Msg("no gradient reached the input".into()))?;
    Ok((y.detach(), g))
}

/// Largest value and gradient differences of `fast` from `reference`, each relative to the reference's largest.
fn relative_gaps(
    x: &Tensor,
    fast: &dyn Fn(&Tensor) -> Result<Tensor>,
    reference: &dyn Fn(&Tensor) -> Result<Tensor>,
) -> Result<(f32, f32)> {
    let shape = reference(x)?.dims().to_vec();
    let upstream = Tensor::randn(0f32, 1., shape, x.device())?;
    let (y_fast, g_fast) = value_and_gradient(x, &upstream, fast)?;
    let (y_ref, g_ref) = value_and_gradient(x, &upstream, reference)?;
    Ok((
        max_abs(&(&y_fast - &y_ref)?)? / max_abs(&y_ref)?,
        max_abs(&(&g_fast - &g_ref)?)? / max_abs(&g_ref)?,
    ))
}

/// The fused gradient against central differences of the fused forward pass, on a few coordinates: the largest
/// difference relative to the largest gradient.
fn finite_difference_gap(x: &Tensor, f: &dyn Fn(&Tensor) -> Result<Tensor>) -> Result<f32> {
    let shape = f(x)?.dims().to_vec();
    let upstream = Tensor::randn(0f32, 1., shape, x.device())?;
    let (_, grad) = value_and_gradient(x, &upstream, f)?;
    let grad = grad.flatten_all()?.to_vec1::<f32>()?;
    let base = x.flatten_all()?.to_vec1::<f32>()?;
    let loss = |values: Vec<f32>| -> Result<f64> {
        let xs = Tensor::from_vec(values, x.dims(), x.device())?;
        let y = f(&xs)?.to_dtype(DType::F64)?;
        (y * upstream.to_dtype(DType::F64)?)?
            .sum_all()?
            .to_scalar::<f64>()
    };
    let h = 1e-2f32;
    let scale = grad.iter().fold(0f32, |m, g| m.max(g.abs()));
    let mut worst = 0f32;
    for i in (0..base.len()).step_by(base.len() / 23 + 1) {
        let mut plus = base.clone();
        plus[i] += h;
        let mut minus = base.clone();
        minus[i] -= h;
        let numeric = (loss(plus)? - loss(minus)?) / (2.0 * h as f64);
        worst = worst.max((numeric as f32 - grad[i]).abs() / scale);
    }
    Ok(worst)
}

fn composed_softmax(scores: &Tensor, mask: &Tensor, scale: f64) -> Result<Tensor> {
    let biased = (scores * scale)?.broadcast_add(&mask_bias(mask, DType::F32)?)?;
    let e = biased
        .broadcast_sub(&biased.max_keepdim(D::Minus1)?.detach())?
        .exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

#[test]
fn gelu_matches_candles_erf_gelu_and_finite_differences() -> Result<()> {
    let dev = Device::Cpu;
    // Wide enough for both tails, and long enough to be split over the thread pool.
    let x = (Tensor::randn(0f32, 1., (3, 40_000), &dev)? * 3.0)?;
    let (dy, dg) = relative_gaps(&x, &|x| fused::gelu_erf(x), &|x| x.gelu_erf())?;
    assert!(dy < 1e-5 && dg < 1e-5, "value {dy}, gradient {dg}");
    let small = (Tensor::randn(0f32, 1., (4, 9), &dev)? * 2.0)?;
    let fd = finite_difference_gap(&small, &|x| fused::gelu_erf(x))?;
    assert!(fd < 1e-3, "finite differences {fd}");
    Ok(())
}

#[test]
fn masked_softmax_matches_the_composed_ops_and_finite_differences() -> Result<()> {
    let dev = Device::Cpu;
    let scores = (Tensor::randn(0f32, 1., (2, 3, 5, 7), &dev)? * 4.0)?;
    let mask = Tensor::from_vec(
        vec![1u32, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1],
        (2, 7),
        &dev,
    )?;
    let scale = 1.0 / 8f64.sqrt();
    let (dy, dg) = relative_gaps(&scores, &|s| fused::masked_softmax(s, &mask, scale), &|s| {
        composed_softmax(s, &mask, scale)
    })?;
    assert!(dy < 1e-5 && dg < 1e-5, "value {dy}, gradient {dg}");
    let fd = finite_difference_gap(&scores, &|s| fused::masked_softmax(s, &mask, scale))?;
    assert!(fd < 1e-3, "finite differences {fd}");
    // Masked keys get no probability, and each row sums to 1.
    let y = fused::masked_softmax(&scores, &mask, scale)?;
    assert_eq!(
        y.narrow(3, 5, 2)?
            .narrow(0, 0, 1)?
            .sum_all()?
            .to_scalar::<f32>()?,
        0.0
    );
    let sums = y.sum(D::Minus1)?.flatten_all()?.to_vec1::<f32>()?;
    assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-6), "{sums:?}");
    Ok(())
}

#[test]
fn layer_norm_matches_the_composed_ops_and_finite_differences() -> Result<()> {
    let dev = Device::Cpu;
    let x = ((Tensor::randn(0f32, 1., (3, 50, 64), &dev)? * 3.0)? + 1.5)?;
    let w = Tensor::randn(0f32, 1., 64, &dev)?;
    let b = Tensor::randn(0f32, 1., 64, &dev)?;
    let (dy, dg) = relative_gaps(&x, &|x| fused::layer_norm(x, &w, &b, 1e-12), &|x| {
        composed_layer_norm(x, &w, Some(&b), 1e-12)
    })?;
    assert!(dy < 1e-5 && dg < 1e-5, "value {dy}, gradient {dg}");
    let small = Tensor::randn(0f32, 1., (3, 8), &dev)?;
    let w8 = w.narrow(0, 0, 8)?;
    let b8 = b.narrow(0, 0, 8)?;
    let fd = finite_difference_gap(&small, &|x| fused::layer_norm(x, &w8, &b8, 1e-5))?;
    assert!(fd < 2e-3, "finite differences {fd}");
    Ok(())
}

#[test]
fn frozen_linear_with_bias_matches_matmul_plus_bias_and_finite_differences() -> Result<()> {
    let dev = Device::Cpu;
    let w = Tensor::randn(0f32, 1., (24, 16), &dev)?;
    let b = Tensor::randn(0f32, 1., 24, &dev)?;
    let x = Tensor::randn(0f32, 1., (70, 16), &dev)?;
    let (dy, dg) = relative_gaps(&x, &|x| fused::frozen_linear_with_bias(x, &w, &b), &|x| {
        x.matmul(&w.t()?)?.broadcast_add(&b)
    })?;
    assert!(dy < 1e-5 && dg < 1e-5, "value {dy}, gradient {dg}");
    let fd = finite_difference_gap(&x, &|x| fused::frozen_linear_with_bias(x, &w, &b))?;
    assert!(fd < 1e-3, "finite differences {fd}");
    // Leading axes (a batch of sequences) are taken as they are, without a recorded reshape.
    let x = Tensor::randn(0f32, 1., (3, 10, 16), &dev)?;
    let (dy, dg) = relative_gaps(&x, &|x| fused::frozen_linear_with_bias(x, &w, &b), &|x| {
        x.broadcast_matmul(&w.t()?)?.broadcast_add(&b)
    })?;
    assert!(dy < 1e-5 && dg < 1e-5, "3-D: value {dy}, gradient {dg}");
    Ok(())
}

#[test]
fn fused_blocks_leave_frozen_weights_without_gradients() -> Result<()> {
    let dev = Device::Cpu;
    let x = Var::from_tensor(&Tensor::randn(0f32, 1., (4, 6), &dev)?)?;
    let w = Tensor::randn(0f32, 1., (6, 6), &dev)?;
    let b = Tensor::randn(0f32, 1., 6, &dev)?;
    let h = fused::frozen_linear_with_bias(x.as_tensor(), &w, &b)?;
    let h = fused::gelu_erf(&fused::layer_norm(&h, &b, &b, 1e-6)?)?;
    let grads = h.sum_all()?.backward()?;
    assert!(grads.get(&x).is_some());
    assert!(grads.get(&w).is_none() && grads.get(&b).is_none());
    // Untracked inputs record nothing.
    assert!(!fused::gelu_erf(&w)?.track_op());
    Ok(())
}
