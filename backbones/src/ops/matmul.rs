//! Matrix products on candle's CPU thread pool, for the frozen path's projections and attention.
//!
//! candle's CPU matmul hands each product to `gemm` with rayon parallelism. Two things cost time in a training step:
//! `gemm` runs a product below ~590k multiply-adds on one thread, so attention's many small per-head products
//! (`[n, d] · [d, n]` for every batch row and head) run one after another on a single core, forward and backward;
//! and the larger products run on rayon's threads while candle's element-wise kernels (and ours, [`super::fused`])
//! run on candle's own barrier pool, whose workers spin between ops: two pools on the same cores take turns
//! waking up. Here every product runs on the barrier pool, `gemm` single-threaded inside each part: a stack of
//! matrices is split by matrix (each thread takes whole heads), a single matrix by rows. Each output element is the
//! same `gemm` sum as before, so results do not change.
//!
//! Only CPU `f32` operands take this path ([`matmul`] falls back to candle's matmul for CUDA and other dtypes); an
//! operand whose leading axes do not collapse into one stride is copied first.

use std::ops::Range;

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, D};
use gemm::{gemm, Parallelism};

/// A stack of `batch` matrices of `rows × cols` in one storage: matrix `i` starts at `offset + i · batch_stride`,
/// element `(r, c)` sits `r · row_stride + c · col_stride` further.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Matrices {
    batch: usize,
    rows: usize,
    cols: usize,
    offset: usize,
    batch_stride: usize,
    row_stride: usize,
    col_stride: usize,
}

impl Matrices {
    /// The view of `layout` as a stack of matrices over its last two axes, when its leading axes collapse into one
    /// stride (any contiguous tensor, and transposes of the last two axes).
    fn of(layout: &Layout) -> Option<Matrices> {
        let (dims, strides) = (layout.dims(), layout.stride());
        let rank = dims.len();
        if rank < 2 {
            return None;
        }
        let (mut batch, mut batch_stride) = (1, 0);
        for axis in (0..rank - 2).rev() {
            if dims[axis] == 1 {
                continue;
            }
            if batch == 1 {
                batch_stride = strides[axis];
            } else if strides[axis] != batch_stride * batch {
                return None;
            }
            batch *= dims[axis];
        }
        Some(Matrices {
            batch,
            rows: dims[rank - 2],
            cols: dims[rank - 1],
            offset: layout.start_offset(),
            batch_stride,
            row_stride: strides[rank - 2],
            col_stride: strides[rank - 1],
        })
    }

    /// A stack whose matrices follow one another row after row (a contiguous `[batch, rows, cols]`, say) as one
    /// matrix of `batch · rows` rows: a product by a shared matrix then runs as one product, whatever the leading
    /// axes, so a projection gives the same values for `[b, s, d]` as for `[b · s, d]`.
    fn as_one_matrix(self) -> Matrices {
        if self.batch > 1 && self.batch_stride == self.rows * self.row_stride {
            Matrices {
                batch: 1,
                rows: self.batch * self.rows,
                batch_stride: 0,
                ..self
            }
        } else {
            self
        }
    }

    /// One past the largest index the view reads.
    fn end(&self) -> usize {
        if self.batch == 0 || self.rows == 0 || self.cols == 0 {
            return self.offset;
        }
        self.offset
            + (self.batch - 1) * self.batch_stride
            + (self.rows - 1) * self.row_stride
            + (self.cols - 1) * self.col_stride
            + 1
    }
}

/// Products below this many multiply-adds run on the calling thread: handing them to the pool costs more than it saves.
const PARALLEL_WORK: usize = 1 << 18;

/// A raw pointer the pool's threads share; each part writes its own block (matrices or rows here, `(batch row,
/// head)` blocks in [`super::attention`]).
#[derive(Clone, Copy)]
pub(super) struct Shared(pub(super) *mut f32);
// SAFETY: every user hands each part of the pool a disjoint block of the buffer and returns after all parts are done.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

/// `dst (m×n) = lhs (m×k) · rhs (k×n)` with `gemm` on the calling thread, every operand given by its pointer and
/// (row, column) strides (`dst`'s columns contiguous); `dst` is overwritten.
///
/// # Safety
/// Every index the strides reach must lie within its buffer, and `dst` must not overlap the operands.
pub(super) unsafe fn gemm_into(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: usize,
    lhs: *const f32,
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: *const f32,
    (rhs_rs, rhs_cs): (usize, usize),
) {
    gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        false,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        0.0,
        1.0,
        false,
        false,
        false,
        Parallelism::None,
    );
}

/// `out = a · b` for stacks of matrices (`b.batch` is `a.batch`, or 1 for one matrix shared by all), `out`
/// contiguous `[batch, a.rows, b.cols]`.
fn product(a: &[f32], am: Matrices, b: &[f32], bm: Matrices, out: &mut [f32]) {
    let (m, k, n) = (am.rows, am.cols, bm.cols);
    let out_ptr = Shared(out.as_mut_ptr());
    // SAFETY (both closures): the caller checked that every index of `am` and `bm` lies within `a` and `b`, and
    // `out` holds `batch · m · n` values; the parts below write disjoint matrices or row ranges of `out`.
    let run = |batches: Range<usize>, rows: Range<usize>| {
        let out_ptr = out_ptr;
        for i in batches {
            let b_start = if bm.batch == 1 {
                bm.offset
            } else {
                bm.offset + i * bm.batch_stride
            };
            unsafe {
                gemm_into(
                    (rows.len(), n, k),
                    out_ptr.0.add(i * m * n + rows.start * n),
                    n,
                    a.as_ptr()
                        .add(am.offset + i * am.batch_stride + rows.start * am.row_stride),
                    (am.row_stride, am.col_stride),
                    b.as_ptr().add(b_start),
                    (bm.row_stride, bm.col_stride),
                );
            }
        }
    };
    let threads = candle_core::utils::barrier_pool().n_workers() + 1;
    if threads == 1 || am.batch * m * n * k < PARALLEL_WORK {
        run(0..am.batch, 0..m);
    } else if am.batch >= threads {
        // Whole matrices per part; the pool's shared cursor balances the parts between threads.
        candle_core::utils::barrier_pool().execute_chunked(am.batch, |batches| run(batches, 0..m));
    } else {
        // One part of the rows per thread (each part packs `b` again, so no finer than that).
        let per = m.div_ceil(threads);
        candle_core::utils::barrier_pool().execute_chunked(threads, |parts| {
            for part in parts {
                let rows = (part * per).min(m)..((part + 1) * per).min(m);
                if !rows.is_empty() {
                    run(0..am.batch, rows);
                }
            }
        });
    }
}

/// `a · b` on the barrier pool; differentiable in every operand that needs a gradient (a frozen weight gets none).
struct PoolMatmul;

impl CustomOp2 for PoolMatmul {
    fn name(&self) -> &'static str {
        "pool-matmul"
    }

    fn cpu_fwd(
        &self,
        a_storage: &CpuStorage,
        a_layout: &Layout,
        b_storage: &CpuStorage,
        b_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(a), CpuStorage::F32(b)) = (a_storage, b_storage) else {
            candle_core::bail!("{}: only f32 operands", self.name());
        };
        let (Some(am), Some(bm)) = (Matrices::of(a_layout), Matrices::of(b_layout)) else {
            candle_core::bail!(
                "{}: operands are not stacks of strided matrices",
                self.name()
            );
        };
        if am.cols != bm.rows || (bm.batch != am.batch && bm.batch != 1) {
            candle_core::bail!(
                "{}: cannot multiply {:?} by {:?}",
                self.name(),
                a_layout.dims(),
                b_layout.dims()
            );
        }
        let am = if bm.batch == 1 {
            am.as_one_matrix()
        } else {
            am
        };
        if am.end() > a.len() || bm.end() > b.len() {
            candle_core::bail!("{}: storage shorter than its layout", self.name());
        }
        let mut out = vec![0f32; am.batch * am.rows * bm.cols];
        product(a, am, b, bm, &mut out);
        let mut dims = a_layout.dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = bm.cols;
        }
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad_a = if a.track_op() {
            Some(matmul(grad, &b.detach().t()?)?)
        } else {
            None
        };
        let grad_b = if b.track_op() {
            let a = a.detach();
            Some(if b.rank() == 2 && a.rank() > 2 {
                // A matrix shared by a stack: its gradient sums over the stack, i.e. one product over all rows.
                let k = a.dim(D::Minus1)?;
                let flat_a = a.reshape((a.elem_count() / k, k))?;
                let flat_g = grad.reshape((flat_a.dim(0)?, grad.dim(D::Minus1)?))?;
                matmul(&flat_a.t()?, &flat_g)?
            } else {
                matmul(&a.t()?, grad)?
            })
        } else {
            None
        };
        Ok((grad_a, grad_b))
    }
}

/// `a · b` over the last two axes, for `a: [..., m, k]` and `b` either `[..., k, n]` with the same leading axes or
/// one matrix `[k, n]` shared by the whole stack. On CPU `f32` with the fused kernels on, the product runs on the
/// barrier pool (this module's note); elsewhere it is candle's matmul, whose result and gradient it equals.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let same_stack = b.rank() == 2
        || (b.rank() == a.rank()
            && a.rank() >= 2
            && a.dims()[..a.rank() - 2] == b.dims()[..b.rank() - 2]);
    if super::fused::applies(a) && super::fused::applies(b) && same_stack {
        // A layout whose leading axes do not collapse (a head split without a copy) is copied once.
        let strided = |t: &Tensor| match Matrices::of(t.layout()) {
            Some(_) => Ok(t.clone()),
            None => t.contiguous(),
        };
        return strided(a)?.apply_op2(&strided(b)?, PoolMatmul);
    }
    if b.rank() == 2 && a.rank() > 2 {
        a.broadcast_matmul(b)
    } else {
        a.matmul(b)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Result, Tensor, Var};

    use super::{matmul, Matrices};

    fn max_abs(t: &Tensor) -> Result<f32> {
        t.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
    }

    fn gap(fast: &Tensor, reference: &Tensor) -> Result<f32> {
        Ok(max_abs(&(fast - reference)?)? / max_abs(reference)?)
    }

    /// Value and gradients of both operands (loss `Σ (a·b) ⊙ upstream`) for `product`, with `b` seen through
    /// `view` (a transpose, say) so that strided operands are covered.
    fn value_and_gradients(
        a: &Tensor,
        b: &Tensor,
        view: &dyn Fn(&Tensor) -> Result<Tensor>,
        upstream: &Tensor,
        product: &dyn Fn(&Tensor, &Tensor) -> Result<Tensor>,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (va, vb) = (Var::from_tensor(a)?, Var::from_tensor(b)?);
        let y = product(va.as_tensor(), &view(vb.as_tensor())?)?;
        let grads = (&y * upstream)?.sum_all()?.backward()?;
        let missing = || candle_core::Error::Msg("no gradient".into());
        let ga = grads.get(&va).cloned().ok_or_else(missing)?;
        let gb = grads.get(&vb).cloned().ok_or_else(missing)?;
        Ok((y.detach(), ga, gb))
    }

    /// The pooled product against candle's, value and both gradients within 1e-5 relative.
    fn check(
        a_dims: &[usize],
        b_dims: &[usize],
        view: &dyn Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<()> {
        let dev = Device::Cpu;
        let a = Tensor::randn(0f32, 1., a_dims, &dev)?;
        let b = Tensor::randn(0f32, 1., b_dims, &dev)?;
        let shape = candle_product(&a, &view(&b)?)?.dims().to_vec();
        let upstream = Tensor::randn(0f32, 1., shape, &dev)?;
        let (y, ga, gb) = value_and_gradients(&a, &b, view, &upstream, &|a, b| matmul(a, b))?;
        let (y_ref, ga_ref, gb_ref) =
            value_and_gradients(&a, &b, view, &upstream, &candle_product)?;
        for (what, fast, reference) in [
            ("value", &y, &y_ref),
            ("a", &ga, &ga_ref),
            ("b", &gb, &gb_ref),
        ] {
            let g = gap(fast, reference)?;
            assert!(g <= 1e-5, "{a_dims:?}·{b_dims:?}: {what} differs by {g}");
        }
        Ok(())
    }

    fn candle_product(a: &Tensor, b: &Tensor) -> Result<Tensor> {
        if b.rank() == 2 && a.rank() > 2 {
            a.broadcast_matmul(b)
        } else {
            a.matmul(b)
        }
    }

    #[test]
    fn a_projection_by_a_transposed_weight_matches_candle() -> Result<()> {
        // Large enough for the row split across the pool's threads.
        check(&[96, 80], &[72, 80], &|w| w.t())
    }

    #[test]
    fn stacked_heads_with_transposed_keys_match_candle() -> Result<()> {
        // [batch, heads, n, d] · [batch, heads, d, n]: split by matrix.
        check(&[4, 3, 48, 32], &[4, 3, 48, 32], &|k| k.t())?;
        check(&[4, 3, 48, 48], &[4, 3, 48, 32], &|v| Ok(v.clone()))
    }

    #[test]
    fn a_matrix_shared_by_a_stack_sums_its_gradient_over_the_stack() -> Result<()> {
        check(&[5, 40, 64], &[64, 48], &|w| Ok(w.clone()))
    }

    #[test]
    fn a_batch_of_sequences_by_a_shared_matrix_equals_the_flat_product_exactly() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (6, 50, 40), &dev)?;
        let w = Tensor::randn(0f32, 1., (40, 30), &dev)?;
        let stacked = matmul(&x, &w)?.flatten_all()?.to_vec1::<f32>()?;
        let flat = matmul(&x.reshape((300, 40))?, &w)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert!(stacked == flat, "the same rows gave different values");
        Ok(())
    }

    #[test]
    fn small_products_and_unsupported_layouts_still_match() -> Result<()> {
        // Below the pool's threshold: computed on the calling thread.
        check(&[3, 5], &[5, 4], &|b| Ok(b.clone()))?;
        // A head split without a copy: leading axes that do not collapse into one stride are copied first.
        let x = Tensor::randn(0f32, 1., (2, 6, 3, 4), &Device::Cpu)?.transpose(1, 2)?;
        assert!(Matrices::of(x.layout()).is_none());
        let w = Tensor::randn(0f32, 1., (4, 5), &Device::Cpu)?;
        let fast = matmul(&x, &w)?;
        let reference = x.contiguous()?.broadcast_matmul(&w)?;
        assert!(gap(&fast, &reference)? <= 1e-6);
        Ok(())
    }

    #[test]
    fn a_frozen_operand_gets_no_gradient_and_the_other_gets_dy_times_its_transpose() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (64, 48), &dev)?)?;
        let w = Tensor::randn(0f32, 1., (40, 48), &dev)?;
        let y = matmul(x.as_tensor(), &w.t()?)?;
        let upstream = Tensor::randn(0f32, 1., (64, 40), &dev)?;
        let grads = (&y * &upstream)?.sum_all()?.backward()?;
        assert!(grads.get(&w).is_none());
        let gx = grads.get(&x).expect("input gradient");
        assert!(gap(gx, &upstream.matmul(&w)?)? <= 1e-6);
        Ok(())
    }

    #[test]
    fn gradients_match_central_differences() -> Result<()> {
        let dev = Device::Cpu;
        let a = Tensor::randn(0f32, 1., (2, 24, 16), &dev)?;
        let b = Tensor::randn(0f32, 1., (2, 16, 20), &dev)?;
        let upstream = Tensor::randn(0f32, 1., (2, 24, 20), &dev)?;
        let (_, ga, _) =
            value_and_gradients(&a, &b, &|b| Ok(b.clone()), &upstream, &|a, b| matmul(a, b))?;
        let ga = ga.flatten_all()?.to_vec1::<f32>()?;
        let base = a.flatten_all()?.to_vec1::<f32>()?;
        let loss = |values: Vec<f32>| -> Result<f64> {
            let a = Tensor::from_vec(values, a.dims(), &dev)?;
            (matmul(&a, &b)? * &upstream)?
                .sum_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()
        };
        let h = 1e-2f32;
        let scale = ga.iter().fold(0f32, |m, g| m.max(g.abs()));
        for i in (0..base.len()).step_by(37) {
            let (mut plus, mut minus) = (base.clone(), base.clone());
            plus[i] += h;
            minus[i] -= h;
            let numeric = (loss(plus)? - loss(minus)?) / (2.0 * h as f64);
            let g = (numeric as f32 - ga[i]).abs() / scale;
            assert!(g < 1e-3, "coordinate {i}: {numeric} against {}", ga[i]);
        }
        Ok(())
    }
}
