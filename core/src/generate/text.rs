//! From texts to generated texts: tokenising the sources, decoding in batches, and turning generated ids back into
//! text.

use crate::backbone::lm::SpecialTokens;
use crate::backbone::Backbone;
use crate::data::{pad_batch, Tokenize, Tokens};
use crate::hooks::LayerHooks;
use crate::{Error, Result};

use super::{generate, GenerationSettings};

/// The text of each generated sequence. The model's own start, end-of-sequence and padding tokens are left out
/// (a tokenizer file need not mark them special), then the tokenizer decodes the rest without its special tokens.
pub fn decode_texts(
    tokenizer: &dyn Tokenize,
    sequences: &[Vec<u32>],
    special: SpecialTokens,
) -> Result<Vec<String>> {
    sequences
        .iter()
        .map(|ids| {
            let content: Vec<u32> = ids
                .iter()
                .copied()
                .filter(|&id| {
                    id != special.decoder_start
                        && id != special.eos
                        && id != special.pad
                        && Some(id) != special.forced_eos
                })
                .collect();
            tokenizer.decode(&content)
        })
        .collect()
}

/// Generates one output text for every source text with `backbone`'s language model, `batch_size` sources at a time
/// (each cut to `max_source_tokens` tokens, special tokens included), with `hooks` applied.
pub fn generate_texts(
    backbone: &dyn Backbone,
    tokenizer: &dyn Tokenize,
    sources: &[String],
    max_source_tokens: usize,
    hooks: &dyn LayerHooks,
    settings: &GenerationSettings,
    batch_size: usize,
) -> Result<Vec<String>> {
    let lm = backbone.language_model().ok_or_else(|| {
        Error::msg("the model has no language-model head to generate with; use an encoder-decoder such as T5 or BART")
    })?;
    let tokens: Vec<Tokens> = sources
        .iter()
        .map(|s| tokenizer.encode(s, None, max_source_tokens))
        .collect::<Result<_>>()?;
    let mut texts = Vec::with_capacity(sources.len());
    for chunk in tokens.chunks(batch_size.max(1)) {
        crate::interrupt::check()?;
        let rows: Vec<&Tokens> = chunk.iter().collect();
        let batch = pad_batch(&rows, tokenizer.pad_id(), backbone.device())?;
        let sequences = generate(lm, &batch.input_ids, &batch.attention_mask, hooks, settings)?;
        texts.extend(decode_texts(tokenizer, &sequences, lm.special_tokens())?);
    }
    Ok(texts)
}
