//! Differentiable building blocks shared by all backbones.
//!
//! candle's fused `layer_norm`, `rms_norm` and `softmax_last_dim` have no backward pass, and its matmul backward
//! computes the weight's gradient even when the weight is frozen. Here each block runs candle's fast kernel forward,
//! on a detached input, and [`with_input_gradient`] attaches a hand-written gradient for the input alone: gradients
//! reach the hooks below (prefixes, adapters, LoRA) and nothing is spent on frozen weights.
//!
//! When a weight is itself trainable (a `Var`, or computed from one: full fine-tuning), that shortcut would drop its
//! gradient, so the block takes the composed path instead ([`composed_layer_norm`], [`composed_rms_norm`], a plain
//! matmul), which candle differentiates with respect to every operand.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;
use peftspace_core::autograd::with_input_gradient;

pub mod attention;
mod fast_math;
pub mod fused;
pub mod heap;
pub mod matmul;
mod simd;

/// `y = x Wᵀ + b` for `W: [d_out, d_in]`, any number of leading axes in `x`. `W` and `b` are frozen tensors, or
/// `Var`s when the backbone was loaded trainable.
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    /// Loads `weight` (and `bias` when `bias` is true) under `vb`, checking shapes.
    pub fn load(vb: VarBuilder, d_in: usize, d_out: usize, bias: bool) -> Result<Self> {
        let weight = vb.get((d_out, d_in), "weight")?;
        let bias = if bias {
            Some(vb.get(d_out, "bias")?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    /// Whether the weight or the bias needs a gradient (full fine-tuning).
    pub fn is_trainable(&self) -> bool {
        self.weight.track_op() || self.bias.as_ref().is_some_and(Tensor::track_op)
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (d_out, d_in) = self.weight.dims2()?;
        let mut dims = x.dims().to_vec();
        if dims.last() != Some(&d_in) {
            candle_core::bail!("linear layer expects inputs of width {d_in}, got shape {dims:?}");
        }
        let rows = dims.iter().rev().skip(1).product::<usize>();
        let flat = x.reshape((rows, d_in))?;
        if let Some(last) = dims.last_mut() {
            *last = d_out;
        }
        if self.is_trainable() {
            let mut y = flat.matmul(&self.weight.t()?)?;
            if let Some(b) = &self.bias {
                y = y.broadcast_add(b)?;
            }
            return y.reshape(dims);
        }
        // On the fused paths `x` itself is the op's input, not a reshape of it: a reshape would be one more recorded
        // node, whose backward pass zero-fills and accumulates an activation-sized gradient of its own.
        if let Some(b) = self
            .bias
            .as_ref()
            .filter(|_| fused::applies(x) && x.track_op())
        {
            return fused::frozen_linear_with_bias(x, &self.weight, b);
        }
        if fused::applies(x) {
            // The pooled product sends `dy · W` to the input and nothing to the frozen weight.
            let mut y = matmul::matmul(x, &self.weight.t()?)?;
            if let Some(b) = &self.bias {
                y = y.broadcast_add(b)?;
            }
            return Ok(y);
        }
        let mut y = flat.detach().matmul(&self.weight.t()?)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        let weight = self.weight.clone();
        let y = with_input_gradient("frozen-linear", &flat, y, move |_, _, grad| {
            grad.matmul(&weight)
        })?;
        y.reshape(dims)
    }
}

/// Layer normalisation over the last axis with a scale and shift (frozen, or `Var`s when trainable).
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

/// `(x - mean) / sqrt(var + eps) * weight + bias` over the last axis, differentiable in `x`; also in `weight` and
/// `bias` when they are trainable (then through [`composed_layer_norm`]).
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    if weight.track_op() || bias.is_some_and(Tensor::track_op) {
        return composed_layer_norm(x, weight, bias, eps);
    }
    if let Some(b) = bias.filter(|_| fused::applies(x)) {
        return fused::layer_norm(x, weight, b, eps);
    }
    let zeros;
    let bias = match bias {
        Some(b) => b,
        None => {
            zeros = weight.zeros_like()?;
            &zeros
        }
    };
    let y = candle_nn::ops::layer_norm(&x.detach().contiguous()?, weight, bias, eps as f32)?;
    let weight = weight.clone();
    with_input_gradient("layer-norm", x, y, move |x, _, grad| {
        // dx = r · (g − mean(g) − x̂ · mean(g · x̂)), with g = dy · weight, x̂ = (x − mean) · r, r = 1/sqrt(var + eps).
        let centered = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
        let rstd = (centered.sqr()?.mean_keepdim(D::Minus1)? + eps)?
            .sqrt()?
            .recip()?;
        let normed = centered.broadcast_mul(&rstd)?;
        let g = grad.broadcast_mul(&weight)?;
        let g_mean = g.mean_keepdim(D::Minus1)?;
        let gx_mean = (&g * &normed)?.mean_keepdim(D::Minus1)?;
        g.broadcast_sub(&g_mean)?
            .sub(&normed.broadcast_mul(&gx_mean)?)?
            .broadcast_mul(&rstd)
    })
}

/// Layer normalisation from elementary ops, which candle differentiates with respect to `x`, `weight` and `bias`:
/// the path for trainable norms, and the reference the fused path is checked against.
pub fn composed_layer_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    let centered = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let y = centered
        .broadcast_div(&(var + eps)?.sqrt()?)?
        .broadcast_mul(weight)?;
    match bias {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// T5's norm: `x / sqrt(mean(x²) + eps) * weight`, no mean subtraction and no bias, differentiable in `x`; also in
/// `weight` when it is trainable (then through [`composed_rms_norm`]).
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    if weight.track_op() {
        return composed_rms_norm(x, weight, eps);
    }
    let y = candle_nn::ops::rms_norm(&x.detach().contiguous()?, weight, eps as f32)?;
    let weight = weight.clone();
    with_input_gradient("rms-norm", x, y, move |x, _, grad| {
        // dx = r · (g − x · r² · mean(g · x)), with g = dy · weight, r = 1/sqrt(mean(x²) + eps).
        let rstd = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
        let g = grad.broadcast_mul(&weight)?;
        let gx_mean = (&g * x)?.mean_keepdim(D::Minus1)?;
        let correction = x.broadcast_mul(&(gx_mean * rstd.sqr()?)?)?;
        (g - correction)?.broadcast_mul(&rstd)
    })
}

/// RMS normalisation from elementary ops, differentiable with respect to `x` and `weight` (see
/// [`composed_layer_norm`]).
pub fn composed_rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(weight)
}

/// Softmax over the last axis, differentiable.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let y = candle_nn::ops::softmax_last_dim(&x.detach().contiguous()?)?;
    with_input_gradient("softmax", x, y, |_, y, grad| {
        // dx = y · (g − Σ g·y)
        let dot = (grad * y)?.sum_keepdim(D::Minus1)?;
        grad.broadcast_sub(&dot)?.mul(y)
    })
}

/// Additive attention bias `[batch, 1, 1, keys]` from a `[batch, keys]` 0/1 mask: 0 where attended, a large negative
/// number where masked.
pub fn mask_bias(mask: &Tensor, dtype: DType) -> Result<Tensor> {
    let (b, s) = mask.dims2()?;
    let keep = mask.to_dtype(dtype)?;
    let bias = ((keep - 1.0)? * 1e9)?;
    bias.reshape((b, 1, 1, s))
}

/// An FFN activation, by its transformers (`ACT2FN`) names; shared by every backbone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Relu,
    /// Exact GELU with erf (`gelu`).
    GeluErf,
    /// The tanh approximation (`gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`).
    GeluTanh,
    /// `silu` / `swish`.
    Silu,
    Tanh,
}

impl Activation {
    /// The accepted names, for error messages.
    pub const SUPPORTED: &'static str =
        "relu, gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, silu, swish, tanh";

    /// The activation a transformers name stands for, if it is one of [`Activation::SUPPORTED`].
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "relu" => Some(Activation::Relu),
            "gelu" => Some(Activation::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Activation::GeluTanh),
            "silu" | "swish" => Some(Activation::Silu),
            "tanh" => Some(Activation::Tanh),
            _ => None,
        }
    }

    /// [`Activation::parse`] with an error that names the unknown activation and lists the supported ones.
    pub fn from_hf_name(name: &str) -> std::result::Result<Self, String> {
        Self::parse(name).ok_or_else(|| {
            format!(
                "unsupported activation `{name}`; supported: {}",
                Self::SUPPORTED
            )
        })
    }

    /// Applies the activation (every variant has a backward pass; the erf GELU is a fused kernel on CPU).
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Relu => x.relu(),
            Activation::GeluErf => fused::gelu_erf(x),
            Activation::GeluTanh => x.gelu(),
            Activation::Silu => x.silu(),
            Activation::Tanh => x.tanh(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b)
            .and_then(|d| d.abs())
            .and_then(|d| d.flatten_all())
            .and_then(|d| d.max(0));
        d.and_then(|d| d.to_scalar::<f32>())
            .unwrap_or(f32::INFINITY)
    }

    // References built from elementary ops only, so candle's autograd differentiates them: the gradients the fused
    // blocks attach by hand must equal these ([`composed_layer_norm`], [`composed_rms_norm`] and this one).
    fn softmax_reference(x: &Tensor) -> Result<Tensor> {
        let e = x
            .broadcast_sub(&x.max_keepdim(D::Minus1)?.detach())?
            .exp()?;
        e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
    }

    /// Output and input gradient of `f` for the upstream gradient `upstream`.
    fn value_and_gradient(
        x: &Tensor,
        upstream: &Tensor,
        f: impl Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let var = Var::from_tensor(x)?;
        let y = f(var.as_tensor())?;
        let grads = (&y * upstream)?.sum_all()?.backward()?;
        let g = grads
            .get(&var)
            .cloned()
            .ok_or_else(|| candle_core::Error::Msg("no gradient".into()))?;
        Ok((y.detach(), g))
    }

    /// Largest value difference and largest gradient difference (relative to the reference's largest gradient) for
    /// one random upstream gradient.
    fn compare(
        x: &Tensor,
        fast: impl Fn(&Tensor) -> Result<Tensor>,
        reference: impl Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<(f32, f32)> {
        let shape = reference(x)?.dims().to_vec();
        let upstream = Tensor::randn(0f32, 1., shape, x.device())?;
        let (y_fast, g_fast) = value_and_gradient(x, &upstream, fast)?;
        let (y_ref, g_ref) = value_and_gradient(x, &upstream, reference)?;
        let scale = g_ref.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        assert!(scale > 0.0, "reference gradient is zero");
        Ok((
            max_abs_diff(&y_fast, &y_ref),
            max_abs_diff(&g_fast, &g_ref) / scale,
        ))
    }

    #[test]
    fn layer_norm_value_and_gradient_match_the_composed_reference() -> Result<()> {
        let dev = Device::Cpu;
        let x = (Tensor::randn(0f32, 1., (3, 5, 8), &dev)? * 3.0)?;
        let w = Tensor::randn(0f32, 1., 8, &dev)?;
        let b = Tensor::randn(0f32, 1., 8, &dev)?;
        let (dy, dg) = compare(
            &x,
            |x| layer_norm(x, &w, Some(&b), 1e-12),
            |x| composed_layer_norm(x, &w, Some(&b), 1e-12),
        )?;
        assert!(dy < 1e-5 && dg < 1e-5, "value {dy}, relative gradient {dg}");
        Ok(())
    }

    #[test]
    fn rms_norm_value_and_gradient_match_the_composed_reference() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (4, 6), &dev)?;
        let w = Tensor::randn(0f32, 1., 6, &dev)?;
        let (dy, dg) = compare(
            &x,
            |x| rms_norm(x, &w, 1e-6),
            |x| composed_rms_norm(x, &w, 1e-6),
        )?;
        assert!(dy < 1e-5 && dg < 1e-5, "value {dy}, relative gradient {dg}");
        Ok(())
    }

    #[test]
    fn softmax_value_and_gradient_match_the_composed_reference() -> Result<()> {
        let dev = Device::Cpu;
        let x = (Tensor::randn(0f32, 1., (2, 3, 7), &dev)? * 2.0)?;
        let (dy, dg) = compare(&x, softmax_last_dim, softmax_reference)?;
        assert!(dy < 1e-6 && dg < 1e-5, "value {dy}, relative gradient {dg}");
        Ok(())
    }

    #[test]
    fn frozen_linear_matches_matmul_and_sends_gradient_only_to_its_input() -> Result<()> {
        let dev = Device::Cpu;
        let linear = Linear {
            weight: Tensor::randn(0f32, 1., (5, 4), &dev)?,
            bias: Some(Tensor::randn(0f32, 1., 5, &dev)?),
        };
        let x = Tensor::randn(0f32, 1., (2, 3, 4), &dev)?;
        let reference = |x: &Tensor| {
            let bias = linear
                .bias
                .as_ref()
                .ok_or_else(|| candle_core::Error::Msg("bias".into()))?;
            x.broadcast_matmul(&linear.weight.t()?)?.broadcast_add(bias)
        };
        let (dy, dg) = compare(&x, |x| linear.forward(x), reference)?;
        assert!(dy < 1e-5 && dg < 1e-5, "value {dy}, relative gradient {dg}");
        // Untracked input: the plain product, no custom op.
        assert!(!linear.forward(&x)?.track_op());
        Ok(())
    }

    #[test]
    fn blocks_on_untracked_inputs_record_no_graph() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (2, 6), &dev)?;
        let w = Tensor::ones(6, DType::F32, &dev)?;
        for y in [
            layer_norm(&x, &w, None, 1e-6)?,
            rms_norm(&x, &w, 1e-6)?,
            softmax_last_dim(&x)?,
        ] {
            assert!(!y.track_op());
        }
        Ok(())
    }

    /// Sum of |gradient| of `var` in `grads`; 0 when it has none.
    fn gradient_size(grads: &candle_core::backprop::GradStore, var: &Var) -> f32 {
        grads
            .get(var)
            .and_then(|g| g.abs().ok())
            .and_then(|g| g.sum_all().ok())
            .and_then(|g| g.to_scalar::<f32>().ok())
            .unwrap_or(0.0)
    }

    #[test]
    fn trainable_weights_get_gradients_equal_to_the_plain_formula() -> Result<()> {
        let dev = Device::Cpu;
        let w = Var::from_tensor(&Tensor::randn(0f32, 1., (5, 4), &dev)?)?;
        let b = Var::from_tensor(&Tensor::randn(0f32, 1., 5, &dev)?)?;
        let gamma = Var::from_tensor(&(Tensor::randn(0f32, 1., 5, &dev)? + 1.0)?)?;
        let beta = Var::from_tensor(&Tensor::randn(0f32, 1., 5, &dev)?)?;
        let rms = Var::from_tensor(&(Tensor::randn(0f32, 1., 5, &dev)? + 1.0)?)?;
        let linear = Linear {
            weight: w.as_tensor().clone(),
            bias: Some(b.as_tensor().clone()),
        };
        assert!(linear.is_trainable());
        // A tracked input too, as inside a network: the fused path would cut the weights off here.
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (2, 3, 4), &dev)?)?;
        let upstream = Tensor::randn(0f32, 1., (2, 3, 5), &dev)?;
        let through_blocks = |x: &Tensor| -> Result<Tensor> {
            let h = linear.forward(x)?;
            let h = layer_norm(&h, gamma.as_tensor(), Some(beta.as_tensor()), 1e-6)?;
            rms_norm(&h, rms.as_tensor(), 1e-6)
        };
        let through_formulas = |x: &Tensor| -> Result<Tensor> {
            let h = x
                .broadcast_matmul(&w.as_tensor().t()?)?
                .broadcast_add(b.as_tensor())?;
            let h = composed_layer_norm(&h, gamma.as_tensor(), Some(beta.as_tensor()), 1e-6)?;
            composed_rms_norm(&h, rms.as_tensor(), 1e-6)
        };
        let fast = (through_blocks(x.as_tensor())? * &upstream)?
            .sum_all()?
            .backward()?;
        let slow = (through_formulas(x.as_tensor())? * &upstream)?
            .sum_all()?
            .backward()?;
        for (name, var) in [
            ("input", &x),
            ("weight", &w),
            ("bias", &b),
            ("layer-norm weight", &gamma),
            ("layer-norm bias", &beta),
            ("rms-norm weight", &rms),
        ] {
            let size = gradient_size(&fast, var);
            assert!(size > 0.0, "{name}: no gradient");
            let (Some(g_fast), Some(g_slow)) = (fast.get(var), slow.get(var)) else {
                panic!("{name}: missing gradient");
            };
            let diff = max_abs_diff(g_fast, g_slow);
            assert!(diff < 1e-4, "{name}: gradients differ by {diff}");
        }
        Ok(())
    }

    #[test]
    fn activations_parse_transformers_names() {
        assert_eq!(Activation::parse("gelu"), Some(Activation::GeluErf));
        assert_eq!(
            Activation::from_hf_name("gelu_new"),
            Ok(Activation::GeluTanh)
        );
        assert_eq!(Activation::parse("swish"), Some(Activation::Silu));
        let err = Activation::from_hf_name("mish").expect_err("mish is not supported");
        assert!(err.contains("unsupported activation `mish`"), "{err}");
    }
}
