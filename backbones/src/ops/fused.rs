//! Fused CPU kernels for the frozen path: GELU (erf), masked and scaled softmax, LayerNorm, and the bias add of a
//! frozen linear layer, each one pass forward and one pass backward over its rows, run on candle's CPU thread pool.
//!
//! Composed from candle's element-wise ops, each of these is several passes over a full activation, each pass a new
//! buffer (page faults, zero-filling), and the backward pass records and accumulates a gradient for every
//! intermediate. Here the forward pass computes its output directly into the op's result (no copy of a precomputed
//! output) and the backward pass is a second custom op that writes the input gradient in one pass. Like
//! [`crate::ops`]' other blocks they give a gradient to their input only: the weights they read are frozen (the
//! callers take the composed path for trainable weights) and masks are constants.
//!
//! Only CPU `f32` storage has these kernels; [`applies`] says whether a tensor qualifies, and the callers fall back to
//! the composed ops otherwise (CUDA, other dtypes). The results equal the composed path's up to float reassociation
//! and the few units in the last place of [`super::fast_math`]'s `exp` and normal CDF.

use std::ops::Range;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};

use super::simd;

/// Whether `x` lives on the CPU as `f32`, where the fused kernels exist, and they are not switched off
/// (`PEFTSPACE_FUSED_KERNELS=0`, see [`peftspace_core::autograd::cpu_kernels_apply`]).
pub fn applies(x: &Tensor) -> bool {
    peftspace_core::autograd::cpu_kernels_apply(x)
}

/// The contiguous `f32` values of a CPU storage, or an error naming the op.
pub(super) fn values<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(all) = storage else {
        candle_core::bail!("{op}: only f32 has a fused kernel");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: expects a contiguous input");
    };
    all.get(start..end)
        .ok_or_else(|| candle_core::Error::Msg(format!("{op}: storage shorter than its layout")))
}

/// A raw output pointer shared by the pool's threads, each of which writes a disjoint range.
struct SharedOut(*mut f32);
// SAFETY: `par_blocks` hands every thread a disjoint range of the buffer, and waits for all of them.
unsafe impl Sync for SharedOut {}

/// Fills `out` in parallel on candle's thread pool: `f(start, part)` writes `part = out[start..start + part.len()]`,
/// where `start` and the part's length are multiples of `block` (except at the end of `out`).
fn par_blocks(out: &mut [f32], block: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let len = out.len();
    let blocks = len.div_ceil(block.max(1));
    let ptr = SharedOut(out.as_mut_ptr());
    let ptr = &ptr;
    candle_core::utils::barrier_pool().execute_chunked(blocks, |range: Range<usize>| {
        let start = range.start * block;
        let end = (range.end * block).min(len);
        // SAFETY: the pool's ranges are disjoint and within `blocks`, so `start..end` are disjoint parts of `out`,
        // which outlives the call (execute_chunked returns after every thread has finished).
        let part = unsafe { std::slice::from_raw_parts_mut(ptr.0.add(start), end - start) };
        f(start, part);
    });
}

/// Element-wise blocks of this many values: large enough to amortise the pool's hand-out, small enough to balance.
const ELEMENT_BLOCK: usize = 16 * 1024;

/// `x · Φ(x)`, the exact (erf) GELU.
struct GeluErf;

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "fused-gelu-erf"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = values(storage, layout, self.name())?;
        let mut out = vec![0f32; x.len()];
        par_blocks(&mut out, ELEMENT_BLOCK, |start, part| {
            simd::gelu_erf(part, &x[start..]);
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        Ok(Some(x.detach().apply_op2_no_bwd(&grad, &GeluErfBackward)?))
    }
}

/// `dx = dy · (Φ(x) + x φ(x))`, from `(x, dy)`.
struct GeluErfBackward;

impl CustomOp2 for GeluErfBackward {
    fn name(&self) -> &'static str {
        "fused-gelu-erf-backward"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = values(xs, xl, self.name())?;
        let g = values(gs, gl, self.name())?;
        if x.len() != g.len() {
            candle_core::bail!("{}: input and gradient differ in size", self.name());
        }
        let mut out = vec![0f32; x.len()];
        par_blocks(&mut out, ELEMENT_BLOCK, |start, part| {
            simd::gelu_erf_backward(part, &x[start..], &g[start..]);
        });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}

/// Exact GELU, `x · Φ(x)`: the fused kernel on CPU `f32`, candle's `gelu_erf` elsewhere.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if !applies(x) {
        return x.gelu_erf();
    }
    x.contiguous()?.apply_op1(GeluErf)
}

/// `softmax(scale · s + bias)` over the last axis of `s: [batch, …, keys]`, with an additive bias per batch row and
/// key (0 where attended, -1e9 where masked, as [`super::mask_bias`]).
struct MaskedSoftmax {
    bias: Vec<f32>,
    keys: usize,
    scale: f32,
}

impl CustomOp1 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "fused-masked-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let s = values(storage, layout, self.name())?;
        let k = self.keys;
        let batch = self.bias.len() / k.max(1);
        if k == 0 || layout.dims().last() != Some(&k) || batch == 0 || s.len() % (batch * k) != 0 {
            candle_core::bail!(
                "{}: scores {:?} do not match a mask of {batch} rows and {k} keys",
                self.name(),
                layout.dims()
            );
        }
        let rows_per_batch = s.len() / (batch * k);
        let mut out = vec![0f32; s.len()];
        par_blocks(&mut out, k, |start, part| {
            for (i, row) in part.chunks_mut(k).enumerate() {
                let r = start / k + i;
                let bias = &self.bias[(r / rows_per_batch) * k..][..k];
                row.copy_from_slice(&s[r * k..][..k]);
                simd::softmax_row(row, bias, self.scale);
            }
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, _: &Tensor, y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let op = SoftmaxBackward {
            keys: self.keys,
            scale: self.scale,
        };
        Ok(Some(y.detach().apply_op2_no_bwd(&grad, &op)?))
    }
}

/// `ds = scale · y · (dy − Σ dy·y)` per row, from `(y, dy)`.
struct SoftmaxBackward {
    keys: usize,
    scale: f32,
}

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "fused-softmax-backward"
    }

    fn cpu_fwd(
        &self,
        ys: &CpuStorage,
        yl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = values(ys, yl, self.name())?;
        let g = values(gs, gl, self.name())?;
        let k = self.keys;
        if y.len() != g.len() || k == 0 || y.len() % k != 0 {
            candle_core::bail!("{}: output and gradient differ in size", self.name());
        }
        let mut out = vec![0f32; y.len()];
        par_blocks(&mut out, k, |start, part| {
            for (i, row) in part.chunks_mut(k).enumerate() {
                let at = start + i * k;
                row.copy_from_slice(&g[at..at + k]);
                simd::softmax_backward_row(row, &y[at..at + k], self.scale);
            }
        });
        Ok((CpuStorage::F32(out), yl.shape().clone()))
    }
}

/// `softmax(scale · scores + mask bias)` over the last axis of `scores: [batch, …, keys]`, with `mask: [batch, keys]`
/// (1 attended, 0 masked); differentiable in `scores` only.
pub fn masked_softmax(scores: &Tensor, mask: &Tensor, scale: f64) -> Result<Tensor> {
    let (_, k) = mask.dims2()?;
    if !applies(scores) {
        let scaled = (scores * scale)?;
        let biased = scaled.broadcast_add(&super::mask_bias(mask, scores.dtype())?)?;
        return super::softmax_last_dim(&biased);
    }
    let bias = ((mask.to_dtype(DType::F32)? - 1.0)? * 1e9)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    scores.contiguous()?.apply_op1(MaskedSoftmax {
        bias,
        keys: k,
        scale: scale as f32,
    })
}

/// LayerNorm over the last axis with a frozen scale and shift.
struct FusedLayerNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl CustomOp1 for FusedLayerNorm {
    fn name(&self) -> &'static str {
        "fused-layer-norm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = values(storage, layout, self.name())?;
        let w = self.weight.len();
        if w == 0 || layout.dims().last() != Some(&w) || self.bias.len() != w {
            candle_core::bail!("{}: width does not match the weight", self.name());
        }
        let mut out = vec![0f32; x.len()];
        par_blocks(&mut out, w, |start, part| {
            for (i, row) in part.chunks_mut(w).enumerate() {
                let input = &x[start + i * w..][..w];
                simd::layer_norm_row(row, input, &self.weight, &self.bias, self.eps);
            }
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let op = LayerNormBackward {
            weight: self.weight.clone(),
            eps: self.eps,
        };
        Ok(Some(x.detach().apply_op2_no_bwd(&grad, &op)?))
    }
}

/// `dx = r · (g − mean(g) − x̂ · mean(g · x̂))` per row, with `g = dy · weight`, from `(x, dy)`.
struct LayerNormBackward {
    weight: Vec<f32>,
    eps: f32,
}

impl CustomOp2 for LayerNormBackward {
    fn name(&self) -> &'static str {
        "fused-layer-norm-backward"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = values(xs, xl, self.name())?;
        let g = values(gs, gl, self.name())?;
        let w = self.weight.len();
        if x.len() != g.len() || w == 0 || x.len() % w != 0 {
            candle_core::bail!("{}: input and gradient differ in size", self.name());
        }
        let mut out = vec![0f32; x.len()];
        par_blocks(&mut out, w, |start, part| {
            for (i, row) in part.chunks_mut(w).enumerate() {
                let at = start + i * w;
                let (x, dy) = (&x[at..at + w], &g[at..at + w]);
                simd::layer_norm_backward_row(row, x, dy, &self.weight, self.eps);
            }
        });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}

/// LayerNorm with frozen `weight` and `bias` on CPU `f32`: one pass forward, one pass backward (input gradient only).
/// Callers check [`applies`] and that the weights are not trainable.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let op = FusedLayerNorm {
        weight: weight.to_dtype(DType::F32)?.to_vec1::<f32>()?,
        bias: bias.to_dtype(DType::F32)?.to_vec1::<f32>()?,
        eps: eps as f32,
    };
    x.contiguous()?.apply_op1(op)
}

/// The bias add of a frozen linear layer, `y + b` with `y = x Wᵀ` computed on a detached `x`, recorded as an op of
/// `x` whose backward pass is `dy · W`: the add and the attachment of the input gradient in one pass.
struct FrozenLinearBias {
    bias: Vec<f32>,
    weight: Tensor,
}

impl CustomOp2 for FrozenLinearBias {
    fn name(&self) -> &'static str {
        "fused-frozen-linear"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        ys: &CpuStorage,
        yl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = values(ys, yl, self.name())?;
        let w = self.bias.len();
        if w == 0 || yl.dims().last() != Some(&w) {
            candle_core::bail!("{}: width does not match the bias", self.name());
        }
        let mut out = vec![0f32; y.len()];
        par_blocks(&mut out, w * 64, |start, part| {
            for (row, input) in part.chunks_mut(w).zip(y[start..].chunks(w)) {
                for ((o, &y), &b) in row.iter_mut().zip(input).zip(&self.bias) {
                    *o = y + b;
                }
            }
        });
        Ok((CpuStorage::F32(out), yl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        _: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let d_out = grad.dim(candle_core::D::Minus1)?;
        let dims = x.dims();
        // As one `[rows, d_out]` matrix, split by rows across the pool; the reshapes are of untracked tensors.
        let flat = grad.reshape((grad.elem_count() / d_out.max(1), d_out))?;
        let dx = super::matmul::matmul(&flat, &self.weight)?.reshape(dims)?;
        Ok((Some(dx), None))
    }
}

/// `x Wᵀ + b` for a frozen `weight: [d_out, d_in]` and `bias`, `x: [..., d_in]` tracked, on CPU `f32`; one recorded
/// op whatever the number of leading axes.
pub fn frozen_linear_with_bias(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let d_in = x.dim(candle_core::D::Minus1)?;
    let rows = x.elem_count() / d_in.max(1);
    let mut dims = x.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = weight.dim(0)?;
    }
    let flat = x.detach().reshape((rows, d_in))?;
    let y = super::matmul::matmul(&flat, &weight.t()?)?.reshape(dims)?;
    let op = FrozenLinearBias {
        bias: bias.to_dtype(DType::F32)?.to_vec1::<f32>()?,
        weight: weight.clone(),
    };
    x.apply_op2(&y.contiguous()?, op)
}

#[cfg(test)]
#[path = "fused_tests.rs"]
mod tests;
