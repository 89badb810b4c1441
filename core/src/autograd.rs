//! Hand-written input gradients for blocks that run a fast kernel without a backward pass.
//!
//! candle differentiates every op it records, and for a binary op or a matmul it computes the gradient of both
//! operands, also when one is a frozen weight or a constant mask. A block that knows its own derivative runs its
//! forward pass on a detached input and attaches the derivative with [`with_input_gradient`]: one recorded op instead
//! of many, and no work on gradients nobody reads.

use std::sync::{Arc, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Storage, Tensor,
};

/// The gradient of one block with respect to its input: `(input, output, output gradient) -> input gradient`.
type InputGradient = Arc<dyn Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor> + Send + Sync>;

/// A custom op whose forward pass returns its second argument (an output computed already) and whose backward pass
/// sends `gradient` to its first argument (the block's input).
struct AttachGradient {
    name: &'static str,
    gradient: InputGradient,
}

impl AttachGradient {
    fn output_shape(layout: &Layout) -> Result<Shape> {
        // `with_input_gradient` hands over a contiguous output starting at offset 0, so a plain copy of its storage is the output.
        if !layout.is_contiguous() || layout.start_offset() != 0 {
            candle_core::bail!("attached output must be contiguous from offset 0");
        }
        Ok(layout.shape().clone())
    }
}

impl CustomOp2 for AttachGradient {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        output: &CpuStorage,
        layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Ok((output.try_clone(layout)?, Self::output_shape(layout)?))
    }

    fn cuda_fwd(
        &self,
        _: &CudaStorage,
        _: &Layout,
        output: &CudaStorage,
        layout: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        Ok((output.try_clone(layout)?, Self::output_shape(layout)?))
    }

    fn bwd(
        &self,
        input: &Tensor,
        _: &Tensor,
        output: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad_input = (self.gradient)(&input.detach(), &output.detach(), grad)?;
        Ok((Some(grad_input), None))
    }
}

/// `output` (computed from `input.detach()`), with `gradient` as the backward pass from output to `input`. When
/// nothing below `input` is trainable, `output` is returned as it is.
pub fn with_input_gradient(
    name: &'static str,
    input: &Tensor,
    output: Tensor,
    gradient: impl Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor> + Send + Sync + 'static,
) -> Result<Tensor> {
    if !input.track_op() {
        return Ok(output);
    }
    input.apply_op2(
        &contiguous_from_start(output)?.detach(),
        AttachGradient {
            name,
            gradient: Arc::new(gradient),
        },
    )
}

/// `t` laid out from offset 0 of its storage, as the custom ops here hand an output over (a plain storage copy).
fn contiguous_from_start(t: Tensor) -> Result<Tensor> {
    if t.is_contiguous() && t.layout().start_offset() == 0 {
        Ok(t)
    } else {
        t.force_contiguous()
    }
}

/// The gradient of a block with respect to its inputs, from its output's gradient: one gradient (or none) per input.
type InputsGradient = Arc<dyn Fn(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync>;

/// A custom op over one or two inputs whose forward pass returns an output computed already (handed over once, so
/// that the recorded op does not keep it alive) and whose backward pass sends `gradient`'s answers to the inputs.
struct RouteGradient {
    name: &'static str,
    output: Mutex<Option<Tensor>>,
    gradient: InputsGradient,
}

impl RouteGradient {
    /// The output handed over by [`with_gradients_to`] (contiguous from offset 0); the op lets go of it.
    fn take_output(&self) -> Result<Tensor> {
        self.output
            .lock()
            .map_err(|_| candle_core::Error::Msg(format!("{}: poisoned", self.name)))?
            .take()
            .ok_or_else(|| candle_core::Error::Msg(format!("{}: run twice", self.name)))
    }

    fn cpu_output(&self) -> Result<(CpuStorage, Shape)> {
        let output = self.take_output()?;
        let (storage, layout) = output.storage_and_layout();
        match &*storage {
            Storage::Cpu(s) => Ok((s.try_clone(layout)?, layout.shape().clone())),
            _ => candle_core::bail!("{}: the output is not on the CPU", self.name),
        }
    }

    fn cuda_output(&self) -> Result<(CudaStorage, Shape)> {
        let output = self.take_output()?;
        let (storage, layout) = output.storage_and_layout();
        match &*storage {
            Storage::Cuda(s) => Ok((s.try_clone(layout)?, layout.shape().clone())),
            _ => candle_core::bail!("{}: the output is not on the GPU", self.name),
        }
    }

    fn answers<const N: usize>(&self, grad: &Tensor) -> Result<[Option<Tensor>; N]> {
        let answers = (self.gradient)(&grad.detach())?;
        let got = answers.len();
        answers.try_into().map_err(|_| {
            candle_core::Error::Msg(format!(
                "{}: {got} input gradients for {N} inputs",
                self.name
            ))
        })
    }
}

impl CustomOp1 for RouteGradient {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        self.cpu_output()
    }

    fn cuda_fwd(&self, _: &CudaStorage, _: &Layout) -> Result<(CudaStorage, Shape)> {
        self.cuda_output()
    }

    fn bwd(&self, _: &Tensor, _: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let [input] = self.answers::<1>(grad)?;
        Ok(input)
    }
}

impl CustomOp2 for RouteGradient {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.cpu_output()
    }

    fn cuda_fwd(
        &self,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        self.cuda_output()
    }

    fn bwd(
        &self,
        _: &Tensor,
        _: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let [first, second] = self.answers::<2>(grad)?;
        Ok((first, second))
    }
}

/// `output`, computed without recording from one or two recorded `inputs`, with `gradient` as the whole backward
/// pass from it: `gradient` receives the output's gradient (detached) and answers one gradient (or none) per input.
/// Nothing recorded in `output`'s own graph is reached from the result; `gradient` is where that graph is used.
pub fn with_gradients_to(
    name: &'static str,
    inputs: &[&Tensor],
    output: Tensor,
    gradient: impl Fn(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
) -> Result<Tensor> {
    let op = RouteGradient {
        name,
        output: Mutex::new(Some(contiguous_from_start(output.detach())?)),
        gradient: Arc::new(gradient),
    };
    match inputs {
        [input] => input.apply_op1(op),
        [first, second] => first.apply_op2(second, op),
        _ => candle_core::bail!(
            "{name}: gradients route to one or two inputs, not {}",
            inputs.len()
        ),
    }
}

/// Whether `x` lives on the CPU as `f32`, where the hand-written CPU kernels exist (here and in the backbones'
/// `ops`), and they are not switched off: `PEFTSPACE_FUSED_KERNELS=0` (read once per process) makes every caller take
/// the composed ops, so that one binary can time and check both paths side by side.
pub fn cpu_kernels_apply(x: &Tensor) -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    x.device().is_cpu()
        && x.dtype() == candle_core::DType::F32
        && *ENABLED
            .get_or_init(|| std::env::var("PEFTSPACE_FUSED_KERNELS").map_or(true, |v| v != "0"))
}

/// Rows per part of the bias gradient's column sums: a fixed split (not one per thread), so that the sum is the same
/// whatever the thread count.
const BIAS_ROWS_PER_PART: usize = 128;

/// A raw pointer the pool's threads share; each writes a disjoint range.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: every use hands each part a disjoint range of the buffer and waits for all parts.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

/// `h + b` over the last axis, on candle's CPU pool; backward: `dh = dy` (the same tensor, no copy) and
/// `db = Σ_rows dy`, each only where needed.
struct BiasAdd;

impl CustomOp2 for BiasAdd {
    fn name(&self) -> &'static str {
        "bias-add"
    }

    fn cpu_fwd(
        &self,
        hs: &CpuStorage,
        hl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (h, b) = (contiguous_f32(hs, hl)?, contiguous_f32(bs, bl)?);
        let width = b.len();
        if width == 0 || h.len() % width != 0 || hl.dims().last() != Some(&width) {
            candle_core::bail!(
                "bias-add: the bias does not match the last axis of {:?}",
                hl.dims()
            );
        }
        let mut out = vec![0f32; h.len()];
        let rows = h.len() / width;
        let out_ptr = SharedOut(out.as_mut_ptr());
        candle_core::utils::barrier_pool().execute_chunked(rows.div_ceil(64), |blocks| {
            let out_ptr = out_ptr;
            let (start, end) = (
                blocks.start * 64 * width,
                (blocks.end * 64 * width).min(h.len()),
            );
            // SAFETY: the pool's ranges are disjoint, so `start..end` are disjoint parts of `out`.
            let part = unsafe { std::slice::from_raw_parts_mut(out_ptr.0.add(start), end - start) };
            for (o_row, h_row) in part.chunks_mut(width).zip(h[start..end].chunks(width)) {
                for ((o, &x), &bias) in o_row.iter_mut().zip(h_row).zip(b) {
                    *o = x + bias;
                }
            }
        });
        Ok((CpuStorage::F32(out), hl.shape().clone()))
    }

    fn bwd(
        &self,
        h: &Tensor,
        b: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad_h = h.track_op().then(|| grad.clone());
        let grad_b = if b.track_op() {
            Some(grad.contiguous()?.apply_op1_no_bwd(&ColumnSums)?)
        } else {
            None
        };
        Ok((grad_h, grad_b))
    }
}

/// `Σ_rows x` for `x: [..., width]`, as `[width]`: partial sums over fixed row blocks on the pool, added in order.
struct ColumnSums;

impl candle_core::CustomOp1 for ColumnSums {
    fn name(&self) -> &'static str {
        "column-sums"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(xs, xl)?;
        let width = xl.dims().last().copied().unwrap_or(1).max(1);
        let rows = x.len() / width;
        let parts = rows.div_ceil(BIAS_ROWS_PER_PART).max(1);
        let mut partial = vec![0f32; parts * width];
        let ptr = SharedOut(partial.as_mut_ptr());
        candle_core::utils::barrier_pool().execute_chunked(parts, |range| {
            let ptr = ptr;
            for part in range {
                // SAFETY: part `part` owns `partial[part · width ..][..width]`, disjoint from the others.
                let sums =
                    unsafe { std::slice::from_raw_parts_mut(ptr.0.add(part * width), width) };
                let first = part * BIAS_ROWS_PER_PART;
                let last = (first + BIAS_ROWS_PER_PART).min(rows);
                for row in x[first * width..last * width].chunks(width) {
                    for (s, &v) in sums.iter_mut().zip(row) {
                        *s += v;
                    }
                }
            }
        });
        let mut out = vec![0f32; width];
        for sums in partial.chunks(width) {
            for (o, &s) in out.iter_mut().zip(sums) {
                *o += s;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(width)))
    }
}

/// The contiguous `f32` values of a CPU storage.
fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let CpuStorage::F32(all) = storage else {
        candle_core::bail!("expected f32 values");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("expected a contiguous tensor");
    };
    all.get(start..end)
        .ok_or_else(|| candle_core::Error::Msg("storage shorter than its layout".into()))
}

/// `h + bias` over the last axis of `h` (`bias: [width]`): a one-pass kernel with a pooled column-sum backward on CPU
/// `f32`, candle's `broadcast_add` elsewhere (same values, same gradients up to float reassociation).
pub fn bias_add(h: &Tensor, bias: &Tensor) -> Result<Tensor> {
    if cpu_kernels_apply(h) && cpu_kernels_apply(bias) && bias.rank() == 1 {
        return h.contiguous()?.apply_op2(&bias.contiguous()?, BiasAdd);
    }
    h.broadcast_add(bias)
}

#[cfg(test)]
mod bias_add_tests {
    use candle_core::{Device, Result, Tensor, Var};

    use super::bias_add;

    fn max_abs(t: &Tensor) -> Result<f32> {
        t.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
    }

    /// Value and the gradients of `h` and `bias` (loss `Σ f(h, bias) ⊙ upstream`).
    fn run(
        h: &Var,
        bias: &Var,
        upstream: &Tensor,
        f: &dyn Fn(&Tensor, &Tensor) -> Result<Tensor>,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let y = f(h.as_tensor(), bias.as_tensor())?;
        let grads = (&y * upstream)?.sum_all()?.backward()?;
        let missing = || candle_core::Error::Msg("no gradient".into());
        Ok((
            y.detach(),
            grads.get(h).cloned().ok_or_else(missing)?,
            grads.get(bias).cloned().ok_or_else(missing)?,
        ))
    }

    #[test]
    fn matches_broadcast_add_in_value_and_both_gradients() -> Result<()> {
        let dev = Device::Cpu;
        // 3·150 rows: several row blocks and column-sum parts, one of them short.
        let h = Var::from_tensor(&Tensor::randn(0f32, 1., (3, 150, 40), &dev)?)?;
        let bias = Var::from_tensor(&Tensor::randn(0f32, 1., 40, &dev)?)?;
        let upstream = Tensor::randn(0f32, 1., (3, 150, 40), &dev)?;
        let fast = run(&h, &bias, &upstream, &|h, b| bias_add(h, b))?;
        let reference = run(&h, &bias, &upstream, &|h, b| h.broadcast_add(b))?;
        for (what, f, r) in [
            ("value", &fast.0, &reference.0),
            ("h", &fast.1, &reference.1),
            ("bias", &fast.2, &reference.2),
        ] {
            let gap = max_abs(&(f - r)?)? / max_abs(r)?;
            assert!(gap <= 1e-5, "{what}: {gap}");
        }
        Ok(())
    }

    #[test]
    fn bias_gradient_matches_central_differences_and_a_frozen_input_gets_none() -> Result<()> {
        let dev = Device::Cpu;
        let h = Tensor::randn(0f32, 1., (300, 7), &dev)?;
        let bias = Var::from_tensor(&Tensor::randn(0f32, 1., 7, &dev)?)?;
        let upstream = Tensor::randn(0f32, 1., (300, 7), &dev)?;
        let y = bias_add(&h, bias.as_tensor())?;
        let grads = (&y * &upstream)?.sum_all()?.backward()?;
        assert!(grads.get(&h).is_none());
        let g = grads.get(&bias).expect("bias gradient").to_vec1::<f32>()?;
        let base = bias.as_tensor().to_vec1::<f32>()?;
        let loss = |b: Vec<f32>| -> Result<f64> {
            let b = Tensor::new(b, &dev)?;
            (bias_add(&h, &b)? * &upstream)?
                .sum_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()
        };
        let step = 1e-2f32;
        for i in 0..base.len() {
            let (mut plus, mut minus) = (base.clone(), base.clone());
            plus[i] += step;
            minus[i] -= step;
            let numeric = (loss(plus)? - loss(minus)?) / (2.0 * step as f64);
            assert!(
                (numeric as f32 - g[i]).abs() <= 1e-3 * g[i].abs().max(1.0),
                "{i}: {numeric} vs {}",
                g[i]
            );
        }
        Ok(())
    }
}
