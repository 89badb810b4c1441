//! Hand-written input gradients for blocks that run a fast kernel without a backward pass.
//!
//! candle differentiates every op it records, and for a binary op or a matmul it computes the gradient of both
//! operands, also when one is a frozen weight or a constant mask. A block that knows its own derivative runs its
//! forward pass on a detached input and attaches the derivative with [`with_input_gradient`]: one recorded op instead
//! of many, and no work on gradients nobody reads.

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, CustomOp2, Layout, Result, Shape, Tensor};

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
    let output = if output.is_contiguous() && output.layout().start_offset() == 0 {
        output
    } else {
        output.force_contiguous()?
    };
    input.apply_op2(
        &output.detach(),
        AttachGradient {
            name,
            gradient: Arc::new(gradient),
        },
    )
}
