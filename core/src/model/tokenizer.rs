//! The one tokenizer: [`Tokenize`] for any Hugging Face `tokenizer.json` (WordPiece, BPE, SentencePiece models alike).
//!
//! The file's own padding and truncation settings are switched off (MiniLM's file pads everything to 128): the
//! trainer pads per batch, and truncation to the experiment's `max_seq_len` happens here, longest text first, before
//! the model's special tokens are added by the file's post-processor.

use std::path::Path;

use tokenizers::{Encoding, PostProcessor, TruncationDirection};

use crate::data::{Tokenize, Tokens};
use crate::{Error, Result};

/// A loaded `tokenizer.json` (usually through [`super::ModelFolder::tokenizer`]).
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pad_id: u32,
}

impl Tokenizer {
    /// Loads `tokenizer.json`; `pad_id` is the model's padding id (from `config.json`, usually 0 for BERT, 1 for
    /// RoBERTa/BART, 0 for T5). When `None`: the file's own padding id, else the id of `[PAD]` or `<pad>`, else 0.
    pub fn from_file(path: &Path, pad_id: Option<u32>) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::Model {
                path: path.to_path_buf(),
                message: "no such file; the model folder needs a tokenizer.json (transformers' fast tokenizer file)"
                    .to_string(),
            });
        }
        // tokenizers 0.23 panics (`expect("Helper")`) on some malformed `decoder` sections instead of returning an
        // error; a bad file must stay an error, so the panic is caught here and reported like any other.
        let loaded = std::panic::catch_unwind(|| tokenizers::Tokenizer::from_file(path)).map_err(
            |panic| Error::Model {
                path: path.to_path_buf(),
                message: format!(
                    "cannot read the tokenizer: malformed file ({})",
                    panic_reason(panic.as_ref())
                ),
            },
        )?;
        let mut inner = loaded.map_err(|e| Error::Model {
            path: path.to_path_buf(),
            message: format!("cannot read the tokenizer: {e}"),
        })?;
        let own_pad = inner
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| inner.token_to_id("[PAD]"))
            .or_else(|| inner.token_to_id("<pad>"));
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|e| Error::Model {
            path: path.to_path_buf(),
            message: format!("cannot switch off truncation: {e}"),
        })?;
        Ok(Tokenizer {
            inner,
            pad_id: pad_id.or(own_pad).unwrap_or(0),
        })
    }

    /// Tokenises examples (a text and an optional pair, each at most `max_len` tokens) into one right-padded batch.
    pub fn batch(
        &self,
        examples: &[(&str, Option<&str>)],
        max_len: usize,
        device: &candle_core::Device,
    ) -> Result<crate::backbone::Batch> {
        let rows = examples
            .iter()
            .map(|(text, pair)| self.encode(text, *pair, max_len))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&Tokens> = rows.iter().collect();
        crate::data::pad_batch(&refs, self.pad_id, device)
    }

    /// The wrapped `tokenizers` tokenizer (padding and truncation switched off).
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    fn piece(&self, text: &str) -> Result<Encoding> {
        self.inner
            .encode(text, false)
            .map_err(|e| Error::msg(format!("tokenizing {text:?} failed: {e}")))
    }
}

impl Tokenize for Tokenizer {
    fn encode(&self, text: &str, pair: Option<&str>, max_len: usize) -> Result<Tokens> {
        // tokenizers panics on some inconsistent files it accepted (a post-processor template naming a sequence
        // or special token it does not have indexes out of bounds); a bad tokenizer.json must stay an error.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.encode_unguarded(text, pair, max_len)
        }))
        .unwrap_or_else(|panic| {
            Err(Error::msg(format!(
                "the tokenizer failed on `{}`: {} (is tokenizer.json consistent?)",
                text.chars().take(40).collect::<String>(),
                panic_reason(panic.as_ref())
            )))
        })
    }

    fn pad_id(&self) -> u32 {
        self.pad_id
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| Error::msg(format!("decoding ids {ids:?} failed: {e}")))
    }
}

impl Tokenizer {
    fn encode_unguarded(&self, text: &str, pair: Option<&str>, max_len: usize) -> Result<Tokens> {
        let mut first = self.piece(text)?;
        let mut second = pair.map(|p| self.piece(p)).transpose()?;
        let added = self
            .inner
            .get_post_processor()
            .map(|p| p.added_tokens(second.is_some()))
            .unwrap_or(0);
        let room = max_len.saturating_sub(added);
        let (mut a, mut b) = (first.len(), second.as_ref().map_or(0, Encoding::len));
        // Longest first: take one token at a time from whichever text is longer.
        while a + b > room {
            if a >= b {
                a -= 1;
            } else {
                b -= 1;
            }
        }
        first.truncate(a, 0, TruncationDirection::Right);
        if let Some(s) = second.as_mut() {
            s.truncate(b, 0, TruncationDirection::Right);
        }
        let full = self
            .inner
            .post_process(first, second, true)
            .map_err(|e| Error::msg(format!("adding special tokens failed: {e}")))?;
        Ok(Tokens {
            ids: full.get_ids().to_vec(),
            type_ids: full.get_type_ids().to_vec(),
        })
    }
}

/// The message of a caught panic.
fn panic_reason(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "the tokenizer library panicked".into())
}
