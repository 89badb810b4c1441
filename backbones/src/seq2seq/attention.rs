//! Multi-head attention shared by the encoder-decoder backbones: additive biases (padding, causal, T5's relative
//! positions) and trainable prefixes prepended to keys and values.

use candle_core::{DType, Device, Tensor, D};
use peftspace_core::backbone::Mode;
use peftspace_core::hooks::Prefix;
use peftspace_core::{Error, Result};

use crate::ops;

/// The additive bias for a causal self-attention over `len` positions: `[1, 1, len, len]`, 0 on and below the
/// diagonal, a large negative number above it.
pub fn causal_bias(len: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let values: Vec<f32> = (0..len)
        .flat_map(|q| (0..len).map(move |k| if k > q { -1e9 } else { 0.0 }))
        .collect();
    Ok(Tensor::from_vec(values, (1, 1, len, len), device)?.to_dtype(dtype)?)
}

/// The additive bias that hides padded keys: `[batch, 1, 1, keys]` from a `[batch, keys]` 0/1 mask.
pub fn padding_bias(mask: &Tensor, dtype: DType) -> Result<Tensor> {
    Ok(ops::mask_bias(mask, dtype)?)
}

/// One attention call after the projections.
pub struct AttentionCall<'a> {
    /// `[batch, queries, heads × head_dim]`.
    pub query: Tensor,
    /// `[batch, keys, heads × head_dim]`.
    pub key: Tensor,
    /// `[batch, keys, heads × head_dim]`.
    pub value: Tensor,
    pub heads: usize,
    pub head_dim: usize,
    /// Additive bias broadcastable to `[batch, heads, queries, keys]` (padding, causal, relative positions).
    pub bias: Option<&'a Tensor>,
    /// Trainable rows prepended to keys and values; they see a bias of zero (always attended, no position).
    pub prefix: Option<Prefix>,
    /// Factor on the scores before the bias (BART: `head_dim^-0.5`, T5: 1).
    pub scale: f64,
    /// Dropout probability on the attention weights (training only).
    pub dropout: f64,
}

/// Splits `[batch, len, heads × head_dim]` into `[batch, heads, len, head_dim]`.
fn split_heads(x: &Tensor, heads: usize, head_dim: usize) -> Result<Tensor> {
    let (batch, len, _) = x.dims3()?;
    Ok(x.reshape((batch, len, heads, head_dim))?
        .transpose(1, 2)?
        .contiguous()?)
}

/// Checks a prefix against the keys it joins, so that a strategy of the wrong width fails with a clear message.
fn check_prefix(prefix: &Prefix, key: &Tensor) -> Result<()> {
    let (batch, _, width) = key.dims3()?;
    for (name, t) in [("key", &prefix.key), ("value", &prefix.value)] {
        let (b, _, w) = t.dims3()?;
        if b != batch || w != width {
            return Err(Error::msg(format!(
                "prefix {name} has shape {:?}, expected [{batch}, length, {width}] (batch, prefix length, heads × head_dim)",
                t.dims()
            )));
        }
    }
    if prefix.key.dim(1)? != prefix.value.dim(1)? {
        return Err(Error::msg(format!(
            "prefix key and value lengths differ ({} vs {})",
            prefix.key.dim(1)?,
            prefix.value.dim(1)?
        )));
    }
    Ok(())
}

/// Runs `softmax(scale · q kᵀ + bias) v` over all heads and returns `[batch, queries, heads × head_dim]`.
pub fn attend(call: AttentionCall<'_>, mode: Mode<'_>) -> Result<Tensor> {
    let AttentionCall {
        query,
        mut key,
        mut value,
        heads,
        head_dim,
        bias,
        prefix,
        scale,
        dropout,
    } = call;
    let (batch, queries, _) = query.dims3()?;
    let mut bias = bias.cloned();
    if let Some(prefix) = prefix {
        check_prefix(&prefix, &key)?;
        let len = prefix.key.dim(1)?;
        if len > 0 {
            key = Tensor::cat(&[&prefix.key, &key], 1)?;
            value = Tensor::cat(&[&prefix.value, &value], 1)?;
            // Prefix positions are never masked and carry no position bias.
            bias = match bias {
                Some(b) => {
                    let (b0, b1, b2, _) = b.dims4()?;
                    let zeros = Tensor::zeros((b0, b1, b2, len), b.dtype(), b.device())?;
                    Some(Tensor::cat(&[&zeros, &b], D::Minus1)?)
                }
                None => None,
            };
        }
    }
    let q = split_heads(&query, heads, head_dim)?;
    let k = split_heads(&key, heads, head_dim)?;
    let v = split_heads(&value, heads, head_dim)?;
    let mut scores = q.matmul(&k.t()?)?;
    if scale != 1.0 {
        scores = (scores * scale)?;
    }
    if let Some(b) = &bias {
        scores = scores.broadcast_add(b)?;
    }
    let weights = ops::softmax_last_dim(&scores)?;
    let weights = mode.dropout(&weights, dropout)?;
    let out = weights.matmul(&v)?;
    Ok(out
        .transpose(1, 2)?
        .reshape((batch, queries, heads * head_dim))?)
}
