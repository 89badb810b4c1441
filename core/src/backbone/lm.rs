//! `LanguageModel`: what an encoder-decoder backbone offers besides its hidden states: its language-model head over
//! teacher-forced decoder inputs (training) and one decoding step at a time over a key/value cache (generation).
//!
//! A backbone that has a language-model head answers [`crate::backbone::Backbone::language_model`]; the decoding
//! algorithms (`crate::generate`) and the sequence-to-sequence trainer see only this trait. Hooks apply as in
//! [`crate::backbone::Backbone::encode`]: every site of both stacks, prefixes included.

use candle_core::{DType, Tensor};

use crate::backbone::{Batch, Mode};
use crate::hooks::LayerHooks;
use crate::{Error, Result};

/// The token ids decoding needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialTokens {
    /// The first decoder input (T5: pad, BART: `</s>`).
    pub decoder_start: u32,
    /// End of sequence: a hypothesis that produces it is finished.
    pub eos: u32,
    /// Padding (of inputs, and of finished rows).
    pub pad: u32,
    /// Forced as the last token when a hypothesis reaches its maximum length (BART's `forced_eos_token_id`).
    pub forced_eos: Option<u32>,
}

/// Keys and values one attention block has seen so far, `[batch, rows, heads × head_dim]` each; trainable prefix
/// rows, when the hooks give any, are the first rows.
#[derive(Debug, Clone)]
pub struct KeyValues {
    pub key: Tensor,
    pub value: Tensor,
}

/// The cache of one decoder layer: its self-attention grows by one row per step; its cross-attention is computed
/// from the encoder output at the first step and then only read.
#[derive(Debug, Clone, Default)]
pub struct LayerCache {
    pub self_attention: Option<KeyValues>,
    pub cross_attention: Option<KeyValues>,
}

/// Everything incremental decoding carries from one step to the next, for `batch` rows (inputs × beams).
#[derive(Debug, Clone)]
pub struct DecoderCache {
    /// `[batch, source, d_model]`: the encoder's last hidden state.
    pub encoder_hidden: Tensor,
    /// `[batch, source]` u32: 1 for real source tokens, 0 for padding.
    pub encoder_mask: Tensor,
    /// One entry per decoder layer, in order.
    pub layers: Vec<LayerCache>,
    /// Decoder positions already processed (the position of the next input token).
    pub position: usize,
}

impl DecoderCache {
    /// A cache over an encoder output, before the first decoding step.
    pub fn new(encoder_hidden: Tensor, encoder_mask: Tensor, decoder_layers: usize) -> Self {
        DecoderCache {
            encoder_hidden,
            encoder_mask,
            layers: vec![LayerCache::default(); decoder_layers],
            position: 0,
        }
    }

    /// Number of rows.
    pub fn batch(&self) -> Result<usize> {
        Ok(self.encoder_hidden.dim(0)?)
    }

    /// Keeps row `rows[i]` as row `i` of every cached tensor (beam search reorders, repeats and drops rows).
    pub fn select_rows(&mut self, rows: &[u32]) -> Result<()> {
        let batch = self.batch()?;
        if let Some(&bad) = rows.iter().find(|&&r| r as usize >= batch) {
            return Err(Error::msg(format!(
                "row {bad} selected from a decoder cache of {batch} rows"
            )));
        }
        let index = Tensor::new(rows, self.encoder_hidden.device())?;
        let pick = |t: &Tensor| -> Result<Tensor> { Ok(t.index_select(&index, 0)?) };
        self.encoder_hidden = pick(&self.encoder_hidden)?;
        self.encoder_mask = pick(&self.encoder_mask)?;
        for layer in &mut self.layers {
            for kv in [&mut layer.self_attention, &mut layer.cross_attention]
                .into_iter()
                .flatten()
            {
                kv.key = pick(&kv.key)?;
                kv.value = pick(&kv.value)?;
            }
        }
        Ok(())
    }
}

/// An encoder-decoder with a language-model head.
pub trait LanguageModel: Send + Sync {
    fn special_tokens(&self) -> SpecialTokens;

    /// Width of the logits.
    fn vocab_size(&self) -> usize;

    /// `[batch, decoder length, vocab]` logits of the language-model head for `batch.decoder_input_ids` (teacher
    /// forcing; `None`: the input shifted right, as [`crate::backbone::Backbone::encode`] does), exactly as
    /// transformers' `…ForConditionalGeneration` computes them.
    fn logits(&self, batch: &Batch, hooks: &dyn LayerHooks, mode: Mode<'_>) -> Result<Tensor>;

    /// Runs the encoder over `[batch, source]` inputs and returns an empty cache for decoding (evaluation mode).
    fn start(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        hooks: &dyn LayerHooks,
    ) -> Result<DecoderCache>;

    /// Feeds `[batch, n]` new decoder tokens (usually n = 1) at positions `cache.position ..`, appends their keys and
    /// values to the cache, advances `cache.position` by n and returns the logits of the last of them, `[batch,
    /// vocab]` (evaluation mode). The logits equal those [`LanguageModel::logits`] gives for the whole sequence.
    fn step(
        &self,
        cache: &mut DecoderCache,
        ids: &Tensor,
        hooks: &dyn LayerHooks,
    ) -> Result<Tensor>;
}

/// The decoder input of teacher forcing from `[batch, length]` target ids in which padding is `pad`: each row shifted
/// right by one with `start` in front (transformers' `shift_tokens_right` / T5's `_shift_right`).
pub fn decoder_input_from_labels(labels: &Tensor, start: u32) -> Result<Tensor> {
    let (batch, len) = labels.dims2()?;
    let labels = labels.to_dtype(DType::U32)?;
    let first = Tensor::full(start, (batch, 1), labels.device())?;
    if len <= 1 {
        return Ok(first.narrow(1, 0, len)?);
    }
    Ok(Tensor::cat(&[&first, &labels.narrow(1, 0, len - 1)?], 1)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn selecting_rows_reorders_every_cached_tensor() -> Result<()> {
        let dev = Device::Cpu;
        let hidden = Tensor::arange(0f32, 6., &dev)?.reshape((3, 1, 2))?;
        let mask = Tensor::new(&[[1u32], [1], [0]], &dev)?;
        let mut cache = DecoderCache::new(hidden, mask, 1);
        let kv = Tensor::arange(0f32, 3., &dev)?.reshape((3, 1, 1))?;
        cache.layers[0].self_attention = Some(KeyValues {
            key: kv.clone(),
            value: (kv * 10.)?,
        });
        cache.select_rows(&[2, 0, 0])?;
        assert_eq!(
            cache.encoder_mask.to_vec2::<u32>()?,
            vec![vec![0], vec![1], vec![1]]
        );
        let self_kv = cache.layers[0].self_attention.as_ref().unwrap();
        assert_eq!(
            self_kv.key.flatten_all()?.to_vec1::<f32>()?,
            vec![2., 0., 0.]
        );
        assert_eq!(
            self_kv.value.flatten_all()?.to_vec1::<f32>()?,
            vec![20., 0., 0.]
        );
        assert!(cache.select_rows(&[3]).is_err());
        Ok(())
    }

    #[test]
    fn the_decoder_input_is_the_target_shifted_right() -> Result<()> {
        let labels = Tensor::new(&[[5u32, 6, 1], [7, 1, 0]], &Device::Cpu)?;
        let shifted = decoder_input_from_labels(&labels, 0)?;
        assert_eq!(
            shifted.to_vec2::<u32>()?,
            vec![vec![0, 5, 6], vec![0, 7, 1]]
        );
        Ok(())
    }
}
