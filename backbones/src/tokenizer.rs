//! `tokenizer.json` through the `tokenizers` crate, producing padded [`Batch`]es.
//!
//! Files often switch on padding to a fixed length and truncation (all-MiniLM-L6-v2 pads everything to 128); we turn
//! both off and pad each batch to its longest row ourselves, truncating to the length the caller asks for.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use peftspace_core::backbone::Batch;
use peftspace_core::{Error, Result};

/// File name of the tokenizer inside a model folder.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Token ids and segment ids of one example, special tokens included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
}

/// A loaded `tokenizer.json` with our padding and truncation.
pub struct TextTokenizer {
    inner: Tokenizer,
    path: PathBuf,
    pad_id: u32,
    max_len: usize,
}

impl TextTokenizer {
    /// Loads `<dir>/tokenizer.json`, truncating examples to `max_len` tokens (special tokens included).
    pub fn from_dir(dir: &Path, max_len: usize) -> Result<TextTokenizer> {
        TextTokenizer::from_file(&dir.join(TOKENIZER_FILE), max_len)
    }

    /// Loads a `tokenizer.json`, truncating examples to `max_len` tokens (special tokens included).
    ///
    /// The padding id is the file's own padding id when it sets one, else the id of `[PAD]` or `<pad>`, else 0;
    /// [`TextTokenizer::with_pad_id`] overrides it.
    pub fn from_file(path: &Path, max_len: usize) -> Result<TextTokenizer> {
        let bad = |message: String| Error::Model {
            path: path.to_path_buf(),
            message,
        };
        if !path.is_file() {
            return Err(bad(
                "no such file; the model folder needs a tokenizer.json (transformers' fast \
                            tokenizer file)"
                    .to_string(),
            ));
        }
        let mut inner = Tokenizer::from_file(path)
            .map_err(|e| bad(format!("cannot load the tokenizer: {e}")))?;
        let pad_id = inner
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| inner.token_to_id("[PAD]"))
            .or_else(|| inner.token_to_id("<pad>"))
            .unwrap_or(0);
        if max_len == 0 {
            return Err(bad("the maximum length must be at least 1".to_string()));
        }
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| bad(format!("cannot set truncation to {max_len}: {e}")))?;
        Ok(TextTokenizer {
            inner,
            path: path.to_path_buf(),
            pad_id,
            max_len,
        })
    }

    /// Pads with `pad_id` instead (RoBERTa must pad with its `padding_idx`).
    pub fn with_pad_id(mut self, pad_id: u32) -> Self {
        self.pad_id = pad_id;
        self
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Tokenises one text or text pair with the file's special tokens, truncated to [`TextTokenizer::max_len`].
    pub fn encode(&self, text: &str, pair: Option<&str>) -> Result<Tokens> {
        let encoding = match pair {
            Some(p) => self.inner.encode((text, p), true),
            None => self.inner.encode(text, true),
        }
        .map_err(|e| Error::Model {
            path: self.path.clone(),
            message: format!("tokenising {text:?}: {e}"),
        })?;
        Ok(Tokens {
            ids: encoding.get_ids().to_vec(),
            type_ids: encoding.get_type_ids().to_vec(),
        })
    }

    /// Tokenises examples (text, optional pair) into one right-padded batch on `device`.
    pub fn batch(&self, examples: &[(&str, Option<&str>)], device: &Device) -> Result<Batch> {
        let rows = examples
            .iter()
            .map(|(text, pair)| self.encode(text, *pair))
            .collect::<Result<Vec<_>>>()?;
        pad_batch(&rows, self.pad_id, device)
    }
}

/// Right-pads rows to the longest one: ids with `pad_id`, segment ids with 0, attention mask 1 on real tokens.
pub fn pad_batch(rows: &[Tokens], pad_id: u32, device: &Device) -> Result<Batch> {
    if rows.is_empty() {
        return Err(Error::msg("cannot build a batch of no examples"));
    }
    let seq = rows.iter().map(|r| r.ids.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(rows.len() * seq);
    let mut types = Vec::with_capacity(rows.len() * seq);
    let mut mask = Vec::with_capacity(rows.len() * seq);
    for row in rows {
        if row.type_ids.len() != row.ids.len() {
            return Err(Error::msg(format!(
                "an example has {} ids but {} segment ids",
                row.ids.len(),
                row.type_ids.len()
            )));
        }
        let pad = seq - row.ids.len();
        ids.extend(
            row.ids
                .iter()
                .copied()
                .chain(std::iter::repeat_n(pad_id, pad)),
        );
        types.extend(
            row.type_ids
                .iter()
                .copied()
                .chain(std::iter::repeat_n(0, pad)),
        );
        mask.extend(std::iter::repeat_n(1u32, row.ids.len()).chain(std::iter::repeat_n(0, pad)));
    }
    let shape = (rows.len(), seq);
    Ok(Batch {
        input_ids: Tensor::from_vec(ids, shape, device)?,
        attention_mask: Tensor::from_vec(mask, shape, device)?,
        token_type_ids: Some(Tensor::from_vec(types, shape, device)?),
        decoder_input_ids: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_to_the_longest_row() -> Result<()> {
        let rows = vec![
            Tokens {
                ids: vec![5, 6, 7],
                type_ids: vec![0, 0, 1],
            },
            Tokens {
                ids: vec![9],
                type_ids: vec![0],
            },
        ];
        let b = pad_batch(&rows, 1, &Device::Cpu)?;
        assert_eq!(
            b.input_ids.to_vec2::<u32>()?,
            vec![vec![5, 6, 7], vec![9, 1, 1]]
        );
        assert_eq!(
            b.attention_mask.to_vec2::<u32>()?,
            vec![vec![1, 1, 1], vec![1, 0, 0]]
        );
        let types = b
            .token_type_ids
            .as_ref()
            .map(|t| t.to_vec2::<u32>())
            .transpose()?;
        assert_eq!(types, Some(vec![vec![0, 0, 1], vec![0, 0, 0]]));
        assert!(pad_batch(&[], 0, &Device::Cpu).is_err());
        Ok(())
    }
}
