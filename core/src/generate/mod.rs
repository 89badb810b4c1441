//! Decoding: greedy search and beam search over a [`LanguageModel`]'s key/value cache, token for token what
//! transformers' `generate` returns without sampling (`do_sample=False`).
//!
//! The encoder runs once ([`LanguageModel::start`]); every step feeds one new token per row
//! ([`LanguageModel::step`]), so the cost grows linearly with the output length. Beam search keeps `inputs × beams`
//! rows in the cache and reorders them with [`crate::backbone::lm::DecoderCache::select_rows`] after each step.
//!
//! What transformers does, and so what we do (the references are `tests/fixtures/lm/*/generate.json`):
//! - the scores a step sees are the raw logits (greedy) or their log-softmax (beam search), changed in this order by
//!   the n-gram ban (`no_repeat_ngram_size`: a token that would complete an n-gram already in the decoder sequence,
//!   the start token included, gets −∞), the minimum length (EOS gets −∞ while fewer than `min_new_tokens` tokens
//!   were generated) and the forced EOS ([`crate::backbone::lm::SpecialTokens::forced_eos`]: at the last allowed step every
//!   other token gets −∞ and EOS 0);
//! - greedy takes the first highest score; a row is done at EOS or after `max_new_tokens` tokens;
//! - beam search: see the documentation at the top of `beam.rs`.

mod beam;
mod greedy;
mod process;
mod text;

#[cfg(test)]
mod tests;

pub use text::{decode_texts, generate_texts};

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::backbone::lm::LanguageModel;
use crate::hooks::LayerHooks;
use crate::{Error, Result};

/// How to decode. The defaults are transformers' (greedy, no bans, length penalty 1, no early stopping) except
/// the length: transformers' default is 20 tokens overall (`max_length`), ours 20 new tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerationSettings {
    /// 1: greedy search; more: beam search with this many beams per input.
    pub num_beams: usize,
    /// The most tokens generated after the decoder start token (EOS included).
    pub max_new_tokens: usize,
    /// EOS is not allowed before this many tokens were generated.
    pub min_new_tokens: usize,
    /// No n-gram of this size occurs twice in a decoder sequence; 0 switches the ban off.
    pub no_repeat_ngram_size: usize,
    /// Beam search: a finished hypothesis scores `sum of log-probabilities / generated_length^length_penalty`, the
    /// generated length counting the tokens after the start token (EOS included). Above 0 favours longer outputs.
    pub length_penalty: f64,
    /// Beam search: `true` stops an input as soon as it has `num_beams` finished hypotheses; `false` goes on while
    /// the best running beam, divided by the current length's penalty, could still beat the worst finished one.
    pub early_stopping: bool,
}

impl Default for GenerationSettings {
    fn default() -> Self {
        GenerationSettings {
            num_beams: 1,
            max_new_tokens: 20,
            min_new_tokens: 0,
            no_repeat_ngram_size: 0,
            length_penalty: 1.0,
            early_stopping: false,
        }
    }
}

impl GenerationSettings {
    /// Greedy search for at most `max_new_tokens` tokens, nothing else changed.
    pub fn greedy(max_new_tokens: usize) -> Self {
        GenerationSettings {
            max_new_tokens,
            ..Self::default()
        }
    }

    /// Refuses settings no search can follow.
    pub fn validate(&self) -> Result<()> {
        if self.num_beams == 0 {
            return Err(Error::msg(
                "num_beams must be at least 1 (1 is greedy search)",
            ));
        }
        if self.max_new_tokens == 0 {
            return Err(Error::msg(
                "max_new_tokens must be at least 1: nothing would be generated",
            ));
        }
        if self.min_new_tokens > self.max_new_tokens {
            return Err(Error::msg(format!(
                "min_new_tokens ({}) is larger than max_new_tokens ({})",
                self.min_new_tokens, self.max_new_tokens
            )));
        }
        if !self.length_penalty.is_finite() {
            return Err(Error::msg(format!(
                "length_penalty must be a finite number, not {}",
                self.length_penalty
            )));
        }
        Ok(())
    }
}

/// Generates one sequence per row of `[batch, source]` `input_ids` (padding marked 0 in `attention_mask`): the
/// decoder start token, then the generated tokens up to and including EOS, or up to `max_new_tokens` tokens. No
/// padding is ever part of a sequence.
pub fn generate(
    lm: &dyn LanguageModel,
    input_ids: &Tensor,
    attention_mask: &Tensor,
    hooks: &dyn LayerHooks,
    settings: &GenerationSettings,
) -> Result<Vec<Vec<u32>>> {
    settings.validate()?;
    let (batch, source) = input_ids.dims2()?;
    if attention_mask.dims() != input_ids.dims() {
        return Err(Error::msg(format!(
            "the attention mask is {:?} but the input ids are {:?}",
            attention_mask.dims(),
            input_ids.dims()
        )));
    }
    if batch == 0 || source == 0 {
        return Err(Error::msg(format!(
            "nothing to generate from: the input ids are {batch}×{source}"
        )));
    }
    let input_ids = input_ids.to_dtype(DType::U32)?;
    let attention_mask = attention_mask.to_dtype(DType::U32)?;
    check_ids(lm, &input_ids)?;
    let special = lm.special_tokens();
    let vocab = lm.vocab_size();
    for (name, id) in [
        ("decoder start", Some(special.decoder_start)),
        ("EOS", Some(special.eos)),
        ("forced EOS", special.forced_eos),
    ] {
        if let Some(id) = id.filter(|&id| id as usize >= vocab) {
            return Err(Error::msg(format!(
                "the {name} token {id} is outside the model's vocabulary of {vocab}"
            )));
        }
    }
    let cache = lm.start(&input_ids, &attention_mask, hooks)?;
    let search = Search {
        lm,
        hooks,
        processors: process::Processors::new(settings, special),
        vocab,
    };
    if settings.num_beams == 1 {
        greedy::run(&search, cache, batch)
    } else {
        beam::run(&search, cache, batch, settings)
    }
}

/// Refuses input ids the model's embedding table does not have (they would fail deep inside the model).
fn check_ids(lm: &dyn LanguageModel, input_ids: &Tensor) -> Result<()> {
    let vocab = lm.vocab_size();
    let rows = input_ids.to_vec2::<u32>()?;
    if let Some(&bad) = rows.iter().flatten().find(|&&id| id as usize >= vocab) {
        return Err(Error::msg(format!(
            "input token id {bad} is outside the model's vocabulary of {vocab} (ids 0..{})",
            vocab.saturating_sub(1)
        )));
    }
    Ok(())
}

/// What greedy and beam search share: the model, the hooks, the score processors.
struct Search<'a> {
    lm: &'a dyn LanguageModel,
    hooks: &'a dyn LayerHooks,
    processors: process::Processors,
    vocab: usize,
}

impl Search<'_> {
    /// One decoding step: feeds `last[i]` to row i and returns each row's logits as f32.
    fn step(
        &self,
        cache: &mut crate::backbone::lm::DecoderCache,
        last: &[u32],
    ) -> Result<Vec<Vec<f32>>> {
        let device = cache.encoder_hidden.device().clone();
        let ids = Tensor::from_vec(last.to_vec(), (last.len(), 1), &device)?;
        let logits = self.lm.step(cache, &ids, self.hooks)?;
        let dims = logits.dims().to_vec();
        if dims != [last.len(), self.vocab] {
            return Err(Error::msg(format!(
                "the language model returned logits of shape {dims:?} for {} rows and a vocabulary of {}",
                last.len(),
                self.vocab
            )));
        }
        Ok(logits.to_dtype(DType::F32)?.to_vec2::<f32>()?)
    }
}
