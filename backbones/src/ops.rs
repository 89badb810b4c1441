//! Differentiable building blocks shared by all backbones.
//!
//! candle's fused `layer_norm`, `rms_norm` and `softmax_last_dim` have no backward pass: on a path that trainable
//! parameters feed (prefixes, adapters, LoRA), they would silently cut the graph. Everything here is written with
//! elementary tensor ops, which all have gradients.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

/// `y = x Wᵀ + b` for frozen `W: [d_out, d_in]`, any number of leading axes in `x`.
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    /// Loads `weight` (and `bias` when `bias` is true) under `vb`, checking shapes.
    pub fn load(vb: VarBuilder, d_in: usize, d_out: usize, bias: bool) -> Result<Self> {
        let weight = vb.get((d_out, d_in), "weight")?;
        let bias = if bias { Some(vb.get(d_out, "bias")?) } else { None };
        Ok(Linear { weight, bias })
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.broadcast_matmul(&self.weight.t()?)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// Layer normalisation over the last axis with a frozen scale and shift.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    /// Loads `weight` and `bias` (also accepts the old `gamma`/`beta` names).
    pub fn load(vb: VarBuilder, width: usize, eps: f64) -> Result<Self> {
        let (weight, bias) = if vb.contains_tensor("gamma") && !vb.contains_tensor("weight") {
            (vb.get(width, "gamma")?, vb.get(width, "beta")?)
        } else {
            (vb.get(width, "weight")?, vb.get(width, "bias")?)
        };
        Ok(LayerNorm { weight, bias, eps })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        layer_norm(x, &self.weight, Some(&self.bias), self.eps)
    }
}

/// `(x - mean) / sqrt(var + eps) * weight + bias` over the last axis, differentiable.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centered.broadcast_div(&(var + eps)?.sqrt()?)?;
    let scaled = normed.broadcast_mul(weight)?;
    match bias {
        Some(b) => scaled.broadcast_add(b),
        None => Ok(scaled),
    }
}

/// T5's norm: `x / sqrt(mean(x²) + eps) * weight`, no mean subtraction and no bias, differentiable.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(weight)
}

/// Softmax over the last axis, differentiable (the max is subtracted as a constant for stability).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// Additive attention bias `[batch, 1, 1, keys]` from a `[batch, keys]` 0/1 mask: 0 where attended, a large negative
/// number where masked.
pub fn mask_bias(mask: &Tensor, dtype: DType) -> Result<Tensor> {
    let (b, s) = mask.dims2()?;
    let keep = mask.to_dtype(dtype)?;
    let bias = ((keep - 1.0)? * 1e9)?;
    bias.reshape((b, 1, 1, s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn close(a: &Tensor, b: &Tensor, tol: f32) -> bool {
        let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
        d.to_scalar::<f32>().unwrap() <= tol
    }

    #[test]
    fn layer_norm_matches_candle_forward() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (3, 5, 8), &dev)?;
        let w = Tensor::randn(0f32, 1., 8, &dev)?;
        let b = Tensor::randn(0f32, 1., 8, &dev)?;
        let ours = layer_norm(&x, &w, Some(&b), 1e-12)?;
        let theirs = candle_nn::ops::layer_norm(&x, &w, &b, 1e-12)?;
        assert!(close(&ours, &theirs, 1e-4));
        Ok(())
    }

    #[test]
    fn softmax_matches_candle_and_has_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (2, 7), &dev)?)?;
        let ours = softmax_last_dim(x.as_tensor())?;
        assert!(close(&ours, &candle_nn::ops::softmax_last_dim(x.as_tensor())?, 1e-6));
        let w = Tensor::randn(0f32, 1., (2, 7), &dev)?;
        let grads = (ours * w)?.sum_all()?.backward()?;
        let g = grads.get(&x).expect("softmax input must receive a gradient");
        assert!(g.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0);
        Ok(())
    }

    #[test]
    fn norms_pass_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (4, 6), &dev)?)?;
        let w = Tensor::ones(6, DType::F32, &dev)?;
        let r = Tensor::randn(0f32, 1., (4, 6), &dev)?;
        for y in [layer_norm(x.as_tensor(), &w, None, 1e-6)?, rms_norm(x.as_tensor(), &w, 1e-6)?] {
            let grads = (y * &r)?.sum_all()?.backward()?;
            let g = grads.get(&x).expect("norm input must receive a gradient");
            assert!(g.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0);
        }
        Ok(())
    }
}
