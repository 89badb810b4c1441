//! Scaled dot-product attention of the frozen path as one CPU kernel, forward and input gradient.
//!
//! Composed from separate ops, attention materialises `[batch, heads, queries, keys]` scores, probabilities and
//! dropped-out probabilities, and splits and merges heads through reshapes, transposes and copies. The backward pass
//! then records, zero-fills and accumulates a gradient buffer for every one of those intermediates (about a dozen
//! per layer, three of them score-sized). Here the whole block is one op on `[batch, tokens, heads·d]` queries,
//! keys and values: each `(batch row, head)` tile's scores live in a per-thread scratch buffer (64 KiB at 128
//! tokens) and never reach memory as a tensor, and the heads are read and written in place through strides. The
//! backward pass recomputes the tile's probabilities from the queries and keys (the same operations in the same
//! order, so the same values) instead of keeping them, which also drops the score-sized tensors a training step
//! kept alive per layer.
//!
//! The result equals the composed path ([`attention`]'s fallback) up to float reassociation in the products and the
//! few units in the last place of [`super::fast_math`]'s `exp`; dropout uses the mask the composed path would have
//! drawn ([`Mode::dropout_mask`]). Only CPU `f32` has the kernel; CUDA and other dtypes take the composed path.

use std::ops::Range;
use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Storage, Tensor};
use peftspace_core::backbone::Mode;

use super::fused::values;
use super::matmul::{gemm_into, matmul, Shared};
use super::simd;

/// `softmax(scale · q kᵀ + mask bias) v` per head, with dropout on the probabilities in training.
///
/// `q: [b, s, heads·d]`, `k` and `v`: `[b, t, heads·d]`, `mask: [b, t]` (1 attended, 0 masked); returns
/// `[b, s, heads·d]`, differentiable in `q`, `k` and `v`.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    heads: usize,
    scale: f64,
    dropout: f64,
    mode: Mode<'_>,
) -> Result<Tensor> {
    let (b, s, width) = q.dims3()?;
    let t = k.dim(1)?;
    if heads == 0 || width % heads != 0 || k.dims() != [b, t, width] || v.dims() != [b, t, width] {
        candle_core::bail!(
            "attention: queries {:?}, keys {:?} and values {:?} do not split into {heads} heads",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    let d = width / heads;
    let drop = mode
        .dropout_mask(&[b, heads, s, t], dropout)
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    if !(super::fused::applies(q) && super::fused::applies(k) && super::fused::applies(v)) {
        return composed(q, k, v, mask, heads, scale, drop);
    }
    let bias = ((mask.to_dtype(candle_core::DType::F32)? - 1.0)? * 1e9)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    if bias.len() != b * t {
        candle_core::bail!(
            "attention: mask {:?} does not match keys {:?}",
            mask.dims(),
            k.dims()
        );
    }
    let op = FusedAttention {
        shape: Tiles {
            batch: b,
            heads,
            queries: s,
            keys: t,
            head_dim: d,
        },
        scale: scale as f32,
        bias: Arc::new(bias),
        drop: drop.map(Arc::new),
    };
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

/// The same computation from candle's ops (and the pooled products): the CUDA path, and the reference of the tests.
fn composed(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    heads: usize,
    scale: f64,
    drop: Option<Vec<f32>>,
) -> Result<Tensor> {
    let (b, s, width) = q.dims3()?;
    let t = k.dim(1)?;
    let d = width / heads;
    let split = |x: &Tensor, n: usize| -> Result<Tensor> {
        x.reshape((b, n, heads, d))?.transpose(1, 2)?.contiguous()
    };
    let (qh, kh, vh) = (split(q, s)?, split(k, t)?, split(v, t)?);
    let scores = (matmul(&qh, &kh.t()?)? * scale)?;
    let scores = scores.broadcast_add(&super::mask_bias(mask, q.dtype())?)?;
    let mut probs = super::softmax_last_dim(&scores)?;
    if let Some(drop) = drop {
        let drop = Tensor::from_vec(drop, (b, heads, s, t), q.device())?.to_dtype(q.dtype())?;
        probs = (probs * drop)?;
    }
    matmul(&probs, &vh)?.transpose(1, 2)?.reshape((b, s, width))
}

/// The problem's sizes: `batch · heads` tiles of `queries × keys` scores over `head_dim`-wide heads.
#[derive(Debug, Clone, Copy)]
struct Tiles {
    batch: usize,
    heads: usize,
    queries: usize,
    keys: usize,
    head_dim: usize,
}

impl Tiles {
    fn width(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Offset of tile `tile`'s head in a `[batch, rows, width]` buffer.
    fn head_offset(&self, tile: usize, rows: usize) -> usize {
        (tile / self.heads) * rows * self.width() + (tile % self.heads) * self.head_dim
    }
}

/// The attention op: `(q, k, v)` → context, all `[batch, tokens, heads·d]` and contiguous.
struct FusedAttention {
    shape: Tiles,
    scale: f32,
    /// `[batch, keys]`: 0 where attended, -1e9 where masked.
    bias: Arc<Vec<f32>>,
    /// `[batch, heads, queries, keys]` scaled keep mask, in training with dropout.
    drop: Option<Arc<Vec<f32>>>,
}

impl FusedAttention {
    /// Tile `tile`'s probabilities into `probs` (`queries × keys`, row-major).
    fn probabilities(&self, tile: usize, q: &[f32], k: &[f32], probs: &mut [f32]) {
        let Tiles {
            queries: s,
            keys: t,
            head_dim: d,
            ..
        } = self.shape;
        let width = self.shape.width();
        // SAFETY: the head's rows lie within q and k (checked against the tensors' sizes by the caller), and
        // `probs` holds s·t values.
        unsafe {
            gemm_into(
                (s, t, d),
                probs.as_mut_ptr(),
                t,
                q.as_ptr().add(self.shape.head_offset(tile, s)),
                (width, 1),
                k.as_ptr().add(self.shape.head_offset(tile, t)),
                (1, width),
            );
        }
        let bias = &self.bias[(tile / self.shape.heads) * t..][..t];
        for row in probs.chunks_mut(t) {
            simd::softmax_row(row, bias, self.scale);
        }
    }

    /// Tile `tile`'s block of the dropout mask, if any.
    fn drop_tile(&self, tile: usize) -> Option<&[f32]> {
        let size = self.shape.queries * self.shape.keys;
        self.drop.as_ref().map(|m| &m[tile * size..][..size])
    }

    fn check(&self, q: &[f32], k: &[f32], v: &[f32]) -> Result<()> {
        let Tiles {
            batch,
            queries,
            keys,
            ..
        } = self.shape;
        let width = self.shape.width();
        let tiles = batch * self.shape.heads;
        if q.len() != batch * queries * width
            || k.len() != batch * keys * width
            || v.len() != k.len()
            || self
                .drop
                .as_ref()
                .is_some_and(|m| m.len() != tiles * queries * keys)
        {
            candle_core::bail!("fused-attention: buffers do not match {:?}", self.shape);
        }
        Ok(())
    }
}

/// Runs `f(tiles)` over all tiles on candle's CPU pool, each call with its own scratch buffers.
fn for_tiles(count: usize, f: impl Fn(Range<usize>) + Sync) {
    candle_core::utils::barrier_pool().execute_chunked(count, f);
}

impl CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (q, k, v) = (
            values(qs, ql, "fused-attention")?,
            values(ks, kl, "fused-attention")?,
            values(vs, vl, "fused-attention")?,
        );
        self.check(q, k, v)?;
        let Tiles {
            batch,
            heads,
            queries: s,
            keys: t,
            head_dim: d,
        } = self.shape;
        let width = self.shape.width();
        let mut out = vec![0f32; q.len()];
        let out_ptr = Shared(out.as_mut_ptr());
        for_tiles(batch * heads, |tiles| {
            let out_ptr = out_ptr;
            let mut probs = vec![0f32; s * t];
            for tile in tiles {
                self.probabilities(tile, q, k, &mut probs);
                if let Some(drop) = self.drop_tile(tile) {
                    probs.iter_mut().zip(drop).for_each(|(p, m)| *p *= m);
                }
                // SAFETY: this tile's head block of `out` is written by this tile only; the reads stay within v.
                unsafe {
                    gemm_into(
                        (s, d, t),
                        out_ptr.0.add(self.shape.head_offset(tile, s)),
                        width,
                        probs.as_ptr(),
                        (t, 1),
                        v.as_ptr().add(self.shape.head_offset(tile, t)),
                        (width, 1),
                    );
                }
            }
        });
        Ok((CpuStorage::F32(out), ql.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (dq, dk, dv) = {
            let (qs, ql) = q.storage_and_layout();
            let (ks, kl) = k.storage_and_layout();
            let (vs, vl) = v.storage_and_layout();
            let (gs, gl) = grad.storage_and_layout();
            let (Storage::Cpu(qs), Storage::Cpu(ks), Storage::Cpu(vs), Storage::Cpu(gs)) =
                (&*qs, &*ks, &*vs, &*gs)
            else {
                candle_core::bail!("fused-attention: backward expects CPU tensors");
            };
            let (q, k, v) = (
                values(qs, ql, "fused-attention")?,
                values(ks, kl, "fused-attention")?,
                values(vs, vl, "fused-attention")?,
            );
            let g = values(gs, gl, "fused-attention")?;
            self.check(q, k, v)?;
            if g.len() != q.len() {
                candle_core::bail!("fused-attention: gradient does not match the output");
            }
            self.gradients(q, k, v, g)
        };
        let device = q.device();
        let keep = |t: &Tensor, values: Vec<f32>| -> Result<Option<Tensor>> {
            if t.track_op() {
                Tensor::from_vec(values, t.shape(), device).map(Some)
            } else {
                Ok(None)
            }
        };
        Ok((keep(q, dq)?, keep(k, dk)?, keep(v, dv)?))
    }
}

impl FusedAttention {
    /// `(dq, dk, dv)` from the inputs and the output's gradient `g`, tile by tile.
    fn gradients(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        g: &[f32],
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let Tiles {
            batch,
            heads,
            queries: s,
            keys: t,
            head_dim: d,
        } = self.shape;
        let width = self.shape.width();
        let (mut dq, mut dk, mut dv) = (
            vec![0f32; q.len()],
            vec![0f32; k.len()],
            vec![0f32; v.len()],
        );
        let (dq_ptr, dk_ptr, dv_ptr) = (
            Shared(dq.as_mut_ptr()),
            Shared(dk.as_mut_ptr()),
            Shared(dv.as_mut_ptr()),
        );
        for_tiles(batch * heads, |tiles| {
            let (dq_ptr, dk_ptr, dv_ptr) = (dq_ptr, dk_ptr, dv_ptr);
            let (mut probs, mut work) = (vec![0f32; s * t], vec![0f32; s * t]);
            for tile in tiles {
                let (at_q, at_k) = (
                    self.shape.head_offset(tile, s),
                    self.shape.head_offset(tile, t),
                );
                self.probabilities(tile, q, k, &mut probs);
                let drop = self.drop_tile(tile);
                // dv = (P ∘ D)ᵀ · g, with P ∘ D in `work` for the moment.
                let dropped: &[f32] = match drop {
                    Some(drop) => {
                        work.iter_mut()
                            .zip(probs.iter().zip(drop))
                            .for_each(|(w, (p, m))| *w = p * m);
                        &work
                    }
                    None => &probs,
                };
                // SAFETY (every product below): this tile's head blocks of dq, dk and dv are written by this tile
                // only, the scratch buffers hold s·t values, and every read stays within q, k, v and g.
                unsafe {
                    gemm_into(
                        (t, d, s),
                        dv_ptr.0.add(at_k),
                        width,
                        dropped.as_ptr(),
                        (1, t),
                        g.as_ptr().add(at_q),
                        (width, 1),
                    );
                    // work = g · vᵀ, the gradient of the dropped-out probabilities.
                    gemm_into(
                        (s, t, d),
                        work.as_mut_ptr(),
                        t,
                        g.as_ptr().add(at_q),
                        (width, 1),
                        v.as_ptr().add(at_k),
                        (1, width),
                    );
                }
                if let Some(drop) = drop {
                    work.iter_mut().zip(drop).for_each(|(w, m)| *w *= m);
                }
                // Softmax backward into `work`: dS = scale · P ∘ (dP − Σ_row dP ∘ P).
                for (w_row, p_row) in work.chunks_mut(t).zip(probs.chunks(t)) {
                    simd::softmax_backward_row(w_row, p_row, self.scale);
                }
                unsafe {
                    // dq = dS · k
                    gemm_into(
                        (s, d, t),
                        dq_ptr.0.add(at_q),
                        width,
                        work.as_ptr(),
                        (t, 1),
                        k.as_ptr().add(at_k),
                        (width, 1),
                    );
                    // dk = dSᵀ · q
                    gemm_into(
                        (t, d, s),
                        dk_ptr.0.add(at_k),
                        width,
                        work.as_ptr(),
                        (1, t),
                        q.as_ptr().add(at_q),
                        (width, 1),
                    );
                }
            }
        });
        (dq, dk, dv)
    }
}

#[cfg(test)]
#[path = "attention_tests.rs"]
mod tests;
