//! The language-model head of the encoder-decoders, as transformers' `…ForConditionalGeneration` computes it:
//! `logits = (decoder output × scale) · Wᵀ + bias`.
//!
//! - `W` is the checkpoint's own `lm_head.weight` when there is one that is not simply a copy of the shared embedding
//!   (T5 v1.1 / flan, whose config says `tie_word_embeddings: false`), otherwise the shared token embedding (tied:
//!   in full fine-tuning the embedding's `Var` then also gets the head's gradient). transformers 5 ties the two only
//!   when the checkpoint lacks the head or holds an identical copy, which is what the check below reproduces.
//! - `scale` is T5 v1.0's `d_model^-0.5` (see [`crate::t5::Config::rescales_decoder_output`]); BART has none.
//! - `bias` is BART's `final_logits_bias`, a buffer and not a parameter in transformers: it is read as a constant
//!   even when the other weights are trainable; absent, it is zero.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use super::CheckpointLayout;
use crate::ops::Linear;

/// The projection from the decoder's last hidden state to the vocabulary.
#[derive(Debug, Clone)]
pub struct LmHead {
    /// `[vocab, d_model]` weight, and the logits bias when the checkpoint has one.
    projection: Linear,
    /// Factor on the decoder output before the projection; `None`: 1.
    input_scale: Option<f64>,
}

/// Where the head's tensors may be and how the architecture's config ties them.
pub struct HeadSource<'a> {
    /// The whole checkpoint (no prefix), frozen or trainable like the rest of the model.
    pub weights: &'a VarBuilder<'static>,
    /// The same checkpoint, always frozen: for buffers and for looking at a tensor without making it a `Var`.
    pub constants: &'a VarBuilder<'static>,
    /// The model's root prefix (`""`, `model.`, `transformer.`).
    pub root: &'a str,
    pub layout: &'a CheckpointLayout,
    /// The config says the head has weights of its own (`tie_word_embeddings: false`).
    pub declared_untied: bool,
    pub input_scale: Option<f64>,
}

/// The names `name` may have: at the top level (where transformers saves a task model's head) or under the root.
fn candidates(name: &str, root: &str) -> Vec<String> {
    let mut names = vec![name.to_string()];
    if !root.is_empty() {
        names.push(format!("{root}{name}"));
    }
    names
}

impl LmHead {
    /// Loads the head over the `[vocab, d_model]` shared token embedding `shared`.
    pub fn load(source: HeadSource<'_>, shared: &Tensor) -> candle_core::Result<Self> {
        let (vocab, d) = shared.dims2()?;
        let own = candidates(source.layout.lm_head, source.root)
            .into_iter()
            .find(|name| source.constants.contains_tensor(name));
        let weight = match own {
            Some(name) => {
                let stored = source.constants.get((vocab, d), &name)?;
                let copy_of_shared = !source.declared_untied
                    && (stored - shared.detach())?
                        .abs()?
                        .max_all()?
                        .to_scalar::<f32>()?
                        == 0.0;
                if copy_of_shared {
                    shared.clone()
                } else {
                    // Through `weights`, so that it is a `Var` in full fine-tuning.
                    source.weights.get((vocab, d), &name)?
                }
            }
            None => shared.clone(),
        };
        let bias = match source.layout.logits_bias {
            Some(name) => candidates(name, source.root)
                .into_iter()
                .find(|name| source.constants.contains_tensor(name))
                .map(|name| source.constants.get((1, vocab), &name)?.reshape(vocab))
                .transpose()?,
            None => None,
        };
        Ok(LmHead {
            projection: Linear { weight, bias },
            input_scale: source.input_scale,
        })
    }

    /// `[…, vocab]` logits from a `[…, d_model]` decoder output. Frozen weights go through [`Linear`]'s
    /// input-only gradient, so no gradient is ever computed for them.
    pub fn forward(&self, hidden: &Tensor) -> candle_core::Result<Tensor> {
        match self.input_scale {
            Some(scale) => self.projection.forward(&(hidden * scale)?),
            None => self.projection.forward(hidden),
        }
    }

    /// Width of the logits.
    pub fn vocab_size(&self) -> usize {
        self.projection.weight.dims().first().copied().unwrap_or(0)
    }
}
