//! Multi-head attention shared by the encoder-decoder backbones: the four projections with their hook sites,
//! additive biases (padding, causal, T5's relative positions), trainable prefixes prepended to keys and values, and
//! the key/value cache of incremental decoding. The uncached forward pass and a decoding step run the same code; the
//! cache only decides where keys and values come from.

use candle_core::{DType, Device, Tensor, D};
use peftspace_core::backbone::lm::KeyValues;
use peftspace_core::backbone::Mode;
use peftspace_core::hooks::{LayerHooks, Prefix};
use peftspace_core::shapes::{AttentionKind, SiteKind};
use peftspace_core::{Error, Result};

use super::project;
use crate::ops::{self, Linear};

/// The additive bias of a causal self-attention for `queries` new positions that follow `offset` earlier ones:
/// `[1, 1, queries, offset + queries]`, 0 where the key is at or before the query, a large negative number after
/// it. `offset` is 0 for a whole sequence and the cache position for a decoding step.
pub fn causal_bias(offset: usize, queries: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let keys = offset + queries;
    let values: Vec<f32> = (0..queries)
        .flat_map(|q| (0..keys).map(move |k| if k > offset + q { -1e9 } else { 0.0 }))
        .collect();
    Ok(Tensor::from_vec(values, (1, 1, queries, keys), device)?.to_dtype(dtype)?)
}

/// The additive bias that hides padded keys: `[batch, 1, 1, keys]` from a `[batch, keys]` 0/1 mask.
pub fn padding_bias(mask: &Tensor, dtype: DType) -> Result<Tensor> {
    Ok(ops::mask_bias(mask, dtype)?)
}

/// The projections of one attention block (self-attention or cross-attention) and how it scores.
#[derive(Debug, Clone)]
pub struct AttentionBlock {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub heads: usize,
    pub head_dim: usize,
    pub kind: AttentionKind,
    /// Factor on the scores before the bias (BART: `head_dim^-0.5`, T5: 1).
    pub scale: f64,
}

/// Where one attention call reads its keys from and what it may hide, besides the queries' own input.
pub struct AttentionContext<'a> {
    /// The encoder output for cross-attention; `None` for self-attention (keys come from the queries' input).
    pub memory: Option<&'a Tensor>,
    /// Additive bias over the real keys (prefix rows excluded), broadcastable to `[batch, heads, queries, keys]`.
    pub bias: &'a Tensor,
    /// The block's entry of a decoding cache; `None` outside incremental decoding.
    pub cache: Option<&'a mut Option<KeyValues>>,
}

impl AttentionBlock {
    /// The hook sites of the query, key, value and output projections.
    fn sites(&self) -> [SiteKind; 4] {
        match self.kind {
            AttentionKind::CrossAttention => [
                SiteKind::CrossQuery,
                SiteKind::CrossKey,
                SiteKind::CrossValue,
                SiteKind::CrossOut,
            ],
            AttentionKind::SelfAttention => [
                SiteKind::Query,
                SiteKind::Key,
                SiteKind::Value,
                SiteKind::AttnOut,
            ],
        }
    }

    /// Keys and values of `source` through the key and value hooks.
    fn project_keys_values(
        &self,
        source: &Tensor,
        layer: usize,
        hooks: &dyn LayerHooks,
    ) -> Result<KeyValues> {
        let [_, key_site, value_site, _] = self.sites();
        Ok(KeyValues {
            key: project(hooks, layer, key_site, &self.k, source)?,
            value: project(hooks, layer, value_site, &self.v, source)?,
        })
    }

    /// The hooks' prefix rows for this block, in front of `real` keys and values.
    fn with_prefix(
        &self,
        real: KeyValues,
        layer: usize,
        hooks: &dyn LayerHooks,
    ) -> Result<KeyValues> {
        let batch = real.key.dim(0)?;
        match hooks.prefix(layer, self.kind, batch)? {
            Some(prefix) if prefix.len()? > 0 => {
                check_prefix(&prefix, &real.key)?;
                Ok(KeyValues {
                    key: Tensor::cat(&[&prefix.key, &real.key], 1)?,
                    value: Tensor::cat(&[&prefix.value, &real.value], 1)?,
                })
            }
            Some(prefix) => {
                check_prefix(&prefix, &real.key)?;
                Ok(real)
            }
            None => Ok(real),
        }
    }

    /// The keys and values this call attends to, prefix rows first. Without a cache they are computed from the
    /// source; with one, cross-attention computes them from the encoder output at the first step and then reads
    /// them, and self-attention appends the new rows' keys and values to those of the earlier steps. What the cache
    /// keeps is detached: decoding is evaluation, and a graph chained through every step would hold all of them.
    fn keys_values(
        &self,
        x: &Tensor,
        memory: Option<&Tensor>,
        cache: Option<&mut Option<KeyValues>>,
        layer: usize,
        hooks: &dyn LayerHooks,
    ) -> Result<KeyValues> {
        let Some(slot) = cache else {
            let real = self.project_keys_values(memory.unwrap_or(x), layer, hooks)?;
            return self.with_prefix(real, layer, hooks);
        };
        let all = match (slot.clone(), memory) {
            (Some(cached), Some(_)) => cached,
            (None, source) => {
                let real = self.project_keys_values(source.unwrap_or(x), layer, hooks)?;
                self.with_prefix(real, layer, hooks)?
            }
            (Some(cached), None) => {
                let new = self.project_keys_values(x, layer, hooks)?;
                KeyValues {
                    key: Tensor::cat(&[&cached.key, &new.key], 1)?,
                    value: Tensor::cat(&[&cached.value, &new.value], 1)?,
                }
            }
        };
        *slot = Some(KeyValues {
            key: all.key.detach(),
            value: all.value.detach(),
        });
        Ok(all)
    }

    /// The block's output for the normed hidden state `x: [batch, queries, d_model]`.
    pub fn forward(
        &self,
        x: &Tensor,
        context: AttentionContext<'_>,
        layer: usize,
        hooks: &dyn LayerHooks,
        mode: Mode<'_>,
        dropout: f64,
    ) -> Result<Tensor> {
        let [query_site, _, _, out_site] = self.sites();
        let query = project(hooks, layer, query_site, &self.q, x)?;
        let keys_values = self.keys_values(x, context.memory, context.cache, layer, hooks)?;
        let mixed = self.attend(&query, &keys_values, context.bias, mode, dropout)?;
        project(hooks, layer, out_site, &self.o, &mixed)
    }

    /// `softmax(scale · q kᵀ + bias) v` over all heads, `[batch, queries, heads × head_dim]`. Keys beyond the width
    /// of `bias` are the prefix rows in front: they get a bias of zero (always attended, no position).
    fn attend(
        &self,
        query: &Tensor,
        keys_values: &KeyValues,
        bias: &Tensor,
        mode: Mode<'_>,
        dropout: f64,
    ) -> Result<Tensor> {
        let (batch, queries, _) = query.dims3()?;
        let rows = keys_values.key.dim(1)?;
        let real = bias.dim(D::Minus1)?;
        let prefix_len = rows.checked_sub(real).ok_or_else(|| {
            Error::msg(format!(
                "attention over {rows} keys with a bias over {real} keys"
            ))
        })?;
        let bias = if prefix_len > 0 {
            let (b0, b1, b2, _) = bias.dims4()?;
            let zeros = Tensor::zeros((b0, b1, b2, prefix_len), bias.dtype(), bias.device())?;
            Tensor::cat(&[&zeros, bias], D::Minus1)?
        } else {
            bias.clone()
        };
        let (heads, head_dim) = (self.heads, self.head_dim);
        let q = split_heads(query, heads, head_dim)?;
        let k = split_heads(&keys_values.key, heads, head_dim)?;
        let v = split_heads(&keys_values.value, heads, head_dim)?;
        let mut scores = q.matmul(&k.t()?)?;
        if self.scale != 1.0 {
            scores = (scores * self.scale)?;
        }
        let scores = scores.broadcast_add(&bias)?;
        let weights = ops::softmax_last_dim(&scores)?;
        let weights = mode.dropout(&weights, dropout)?;
        let out = weights.matmul(&v)?;
        Ok(out
            .transpose(1, 2)?
            .reshape((batch, queries, heads * head_dim))?)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decoding_step_sees_every_earlier_position_and_itself() -> Result<()> {
        let whole = causal_bias(0, 3, DType::F32, &Device::Cpu)?;
        let step = causal_bias(1, 2, DType::F32, &Device::Cpu)?;
        // The rows of queries 1 and 2 of the whole sequence are the step's two rows.
        let tail = whole.narrow(2, 1, 2)?;
        assert_eq!(
            tail.flatten_all()?.to_vec1::<f32>()?,
            step.flatten_all()?.to_vec1::<f32>()?
        );
        Ok(())
    }
}
