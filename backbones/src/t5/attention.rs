//! T5 attention: no scaling of the scores, relative position buckets (bidirectional in the encoder, causal in the
//! decoder) computed by the first layer of each stack and shared by all its layers.

use candle_core::Tensor;
use candle_nn::VarBuilder;
use peftspace_core::shapes::AttentionKind;
use peftspace_core::Result;

use super::config::Config;
use crate::ops::Linear;
use crate::seq2seq::attention::AttentionBlock;

/// The bucket of a relative position `key - query`, as in Mesh TensorFlow and transformers' `T5Attention`
/// (the logarithmic part in f32, like the reference).
pub fn relative_position_bucket(
    relative: i64,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> usize {
    let mut buckets = num_buckets as i64;
    let mut offset = 0i64;
    let distance = if bidirectional {
        buckets /= 2;
        if relative > 0 {
            offset = buckets;
        }
        relative.abs()
    } else {
        -relative.min(0)
    };
    let max_exact = buckets / 2;
    if distance < max_exact {
        return (offset + distance) as usize;
    }
    let log_ratio = (distance as f32 / max_exact as f32).ln();
    let log_range = (max_distance as f64 / max_exact as f64).ln() as f32;
    let large = max_exact + (log_ratio / log_range * (buckets - max_exact) as f32) as i64;
    (offset + large.min(buckets - 1)) as usize
}

/// The relative position bias `[1, heads, queries, keys]` from a `[buckets, heads]` table, for queries at positions
/// `first_query ..` (past 0 in a decoding step) over keys at positions `0 .. keys`.
pub fn position_bias(
    table: &Tensor,
    first_query: usize,
    queries: usize,
    keys: usize,
    bidirectional: bool,
    cfg: &Config,
) -> Result<Tensor> {
    let buckets: Vec<u32> = (0..queries)
        .flat_map(|q| {
            let query = (first_query + q) as i64;
            (0..keys).map(move |k| {
                relative_position_bucket(
                    k as i64 - query,
                    bidirectional,
                    cfg.relative_attention_num_buckets,
                    cfg.relative_attention_max_distance,
                ) as u32
            })
        })
        .collect();
    let index = Tensor::from_vec(buckets, queries * keys, table.device())?;
    let heads = table.dim(1)?;
    let values = table
        .index_select(&index, 0)?
        .reshape((queries, keys, heads))?;
    Ok(values.permute((2, 0, 1))?.unsqueeze(0)?.contiguous()?)
}

/// Loads the `[buckets, heads]` relative position table of a stack's first layer.
pub fn load_position_table(vb: VarBuilder, cfg: &Config) -> candle_core::Result<Tensor> {
    vb.get(
        (cfg.relative_attention_num_buckets, cfg.num_heads),
        "relative_attention_bias.weight",
    )
}

/// Loads the four projections of one T5 attention block (`SelfAttention` or `EncDecAttention`): no biases, scores
/// not scaled.
pub fn load_attention(
    vb: VarBuilder,
    cfg: &Config,
    kind: AttentionKind,
) -> candle_core::Result<AttentionBlock> {
    let (d, inner) = (cfg.d_model, cfg.inner_dim());
    Ok(AttentionBlock {
        q: Linear::load(vb.pp("q"), d, inner, false)?,
        k: Linear::load(vb.pp("k"), d, inner, false)?,
        v: Linear::load(vb.pp("v"), d, inner, false)?,
        o: Linear::load(vb.pp("o"), inner, d, false)?,
        heads: cfg.num_heads,
        head_dim: cfg.d_kv,
        kind,
        scale: 1.0,
    })
}

#[cfg(test)]
mod tests {
    use super::relative_position_bucket;

    const POSITIONS: [i64; 24] = [
        -200, -129, -128, -100, -64, -32, -16, -12, -9, -8, -7, -1, 0, 1, 7, 8, 9, 12, 16, 32, 64,
        100, 128, 200,
    ];

    /// Expected buckets computed with transformers' `T5Attention._relative_position_bucket` (32 buckets, 128).
    #[test]
    fn buckets_match_transformers() {
        let bidirectional = [
            15, 15, 15, 15, 14, 12, 10, 9, 8, 8, 7, 1, 0, 17, 23, 24, 24, 25, 26, 28, 30, 31, 31,
            31,
        ];
        let causal = [
            31, 31, 31, 30, 26, 21, 16, 12, 9, 8, 7, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        for (i, &p) in POSITIONS.iter().enumerate() {
            assert_eq!(
                relative_position_bucket(p, true, 32, 128),
                bidirectional[i],
                "bidirectional {p}"
            );
            assert_eq!(
                relative_position_bucket(p, false, 32, 128),
                causal[i],
                "causal {p}"
            );
        }
    }
}
