//! From text to token ids: the [`Tokenize`] trait the model folder's tokenizer implements, and padding into a [`Batch`].

use candle_core::{Device, Tensor};

use crate::backbone::Batch;
use crate::Result;

/// Token ids of one example, special tokens included, already truncated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tokens {
    pub ids: Vec<u32>,
    /// Segment ids (0 for the first text, 1 for the pair); empty when the model has none.
    pub type_ids: Vec<u32>,
}

impl Tokens {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Turns texts into token ids the way the backbone was pretrained (special tokens, pair layout, truncation).
///
/// Implemented by [`crate::model::Tokenizer`]; the trainer only calls it (tests may give it a stand-in). Padding is the trainer's job.
pub trait Tokenize: Send + Sync {
    /// Ids of one example (one text or a pair), at most `max_len` long; longer inputs are truncated (for pairs,
    /// the longer text loses tokens first).
    fn encode(&self, text: &str, pair: Option<&str>, max_len: usize) -> Result<Tokens>;

    /// The id padding positions get.
    fn pad_id(&self) -> u32;

    /// The text of generated ids, special tokens left out (generation tasks score this text).
    fn decode(&self, ids: &[u32]) -> Result<String> {
        let _ = ids;
        Err(crate::Error::msg(
            "this tokenizer cannot turn ids back into text, which generation tasks need",
        ))
    }
}

/// Right-pads examples to the longest one and builds the batch (attention mask 1 on real tokens).
/// Segment ids are included when the examples have them.
pub fn pad_batch(items: &[&Tokens], pad_id: u32, device: &Device) -> Result<Batch> {
    let rows = items.len();
    let width = items.iter().map(|t| t.len()).max().unwrap_or(0).max(1);
    let with_types = items.iter().any(|t| !t.type_ids.is_empty());
    let mut ids = vec![pad_id; rows * width];
    let mut mask = vec![0u32; rows * width];
    let mut types = vec![0u32; if with_types { rows * width } else { 0 }];
    for (r, t) in items.iter().enumerate() {
        let start = r * width;
        ids[start..start + t.len()].copy_from_slice(&t.ids);
        mask[start..start + t.len()].fill(1);
        if with_types {
            let n = t.type_ids.len().min(t.len());
            types[start..start + n].copy_from_slice(&t.type_ids[..n]);
        }
    }
    Ok(Batch {
        input_ids: Tensor::from_vec(ids, (rows, width), device)?,
        attention_mask: Tensor::from_vec(mask, (rows, width), device)?,
        token_type_ids: if with_types {
            Some(Tensor::from_vec(types, (rows, width), device)?)
        } else {
            None
        },
        decoder_input_ids: None,
    })
}
