//! What training differs in for generation tasks ([`TaskKind::Generation`]): the targets as token ids, the
//! teacher-forced batch, the token cross-entropy of the language-model head, and scoring by decoding.
//!
//! Conventions follow transformers' sequence-to-sequence fine-tuning: the labels are the tokenised target (special
//! tokens as the tokenizer adds them, so T5 ends with `</s>` and BART is wrapped in `<s> … </s>`), the decoder input
//! is the labels shifted right behind the model's decoder start token, padded label positions are left out of the
//! loss, and the loss is the mean over the real target tokens of the batch.

use candle_core::{DType, Tensor, D};

use crate::backbone::lm::{decoder_input_from_labels, LanguageModel};
use crate::backbone::{Backbone, Batch};
use crate::data::{pad_batch, Example, TaskData, TaskKind, Tokenize, Tokens};
use crate::generate::GenerationSettings;
use crate::spec::DecodingSpec;
use crate::{Error, Result};

/// The language model of a generation task's backbone, or the error saying why there is none.
pub(super) fn language_model<'b>(
    backbone: &'b dyn Backbone,
    task: &TaskData,
) -> Result<Option<&'b dyn LanguageModel>> {
    if !matches!(task.kind, TaskKind::Generation { .. }) {
        return Ok(None);
    }
    backbone.language_model().map(Some).ok_or_else(|| {
        Error::msg(format!(
            "task `{}` is a generation task, but the model has no language-model head; use an encoder-decoder such \
             as T5 or BART",
            task.id
        ))
    })
}

/// How a generation task's evaluation decodes: its decoding settings, at most `max_target_tokens` new tokens.
pub(super) fn decoding_settings(
    max_target_tokens: usize,
    decoding: &DecodingSpec,
) -> Result<GenerationSettings> {
    let settings = GenerationSettings {
        num_beams: decoding.num_beams,
        max_new_tokens: max_target_tokens,
        min_new_tokens: decoding.min_target_tokens,
        no_repeat_ngram_size: decoding.no_repeat_ngram_size,
        length_penalty: decoding.length_penalty,
        early_stopping: decoding.early_stopping,
    };
    settings.validate()?;
    Ok(settings)
}

/// The target of each example as token ids, at most `max_target_tokens` long (special tokens included).
pub(super) fn target_tokens(
    tokenizer: &dyn Tokenize,
    examples: &[Example],
    max_target_tokens: usize,
) -> Result<Vec<Tokens>> {
    examples
        .iter()
        .map(|e| {
            let target = e.target.as_deref().ok_or_else(|| {
                Error::msg(format!(
                    "an example of a generation task has no target text (source: `{}`)",
                    e.text.chars().take(40).collect::<String>()
                ))
            })?;
            tokenizer.encode(target, None, max_target_tokens)
        })
        .collect()
}

/// The labels of a teacher-forced batch: `[rows, longest target]` ids (padding `pad`) and the 0/1 mask of real
/// target tokens.
pub struct TargetLabels {
    pub ids: Tensor,
    pub mask: Tensor,
}

/// Adds the decoder input (targets shifted right behind `start`) to `batch` and returns the labels; `targets[r]` is
/// the target of row r.
pub(super) fn teacher_forcing(
    batch: &mut Batch,
    targets: &[&Tokens],
    pad: u32,
    start: u32,
) -> Result<TargetLabels> {
    let padded = pad_batch(targets, pad, batch.input_ids.device())?;
    batch.decoder_input_ids = Some(decoder_input_from_labels(&padded.input_ids, start)?);
    Ok(TargetLabels {
        ids: padded.input_ids,
        mask: padded.attention_mask,
    })
}

/// Mean token cross-entropy of `[rows, length, vocab]` logits against `labels` over the positions where the mask is
/// 1, with label smoothing `smoothing` (PyTorch's definition: `(1 − ε)·nll + ε·mean over the vocabulary of −log p`).
pub fn token_cross_entropy(
    logits: &Tensor,
    labels: &TargetLabels,
    smoothing: f64,
) -> Result<Tensor> {
    let mut losses = token_cross_entropy_per_group(logits, labels, smoothing, 1)?;
    losses
        .pop()
        .ok_or_else(|| Error::msg("no loss for a batch of generation targets"))
}

/// [`token_cross_entropy`] of each of `groups` equal blocks of rows (a population's members, stacked member-major),
/// from one pass over the whole logits: only the small per-token losses are split, so the backward pass never pads a
/// gradient of the whole logits once per member.
pub fn token_cross_entropy_per_group(
    logits: &Tensor,
    labels: &TargetLabels,
    smoothing: f64,
    groups: usize,
) -> Result<Vec<Tensor>> {
    let (rows, length, vocab) = logits.dims3()?;
    if labels.ids.dims2()? != (rows, length) {
        return Err(Error::msg(format!(
            "logits of shape {:?} for labels of shape {:?}",
            logits.dims(),
            labels.ids.dims()
        )));
    }
    if groups == 0 || rows % groups != 0 {
        return Err(Error::msg(format!(
            "{rows} rows of logits do not split into {groups} equal groups"
        )));
    }
    let logits = logits
        .to_dtype(DType::F32)?
        .reshape((rows * length, vocab))?;
    // log-softmax from elementary ops (all with gradients): x − max − log Σ exp(x − max).
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let log_norm = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let log_probs = shifted.broadcast_sub(&log_norm)?;
    let index = labels
        .ids
        .to_dtype(DType::U32)?
        .reshape((rows * length, 1))?;
    let mut per_token = log_probs.gather(&index, 1)?.squeeze(1)?.neg()?;
    if smoothing > 0.0 {
        let uniform = log_probs.mean(D::Minus1)?.neg()?;
        per_token = ((per_token * (1.0 - smoothing))? + (uniform * smoothing)?)?;
    }
    let per_group = rows / groups * length;
    let mask = labels
        .mask
        .to_dtype(DType::F32)?
        .reshape((groups, per_group))?;
    let counts = mask.sum(1)?.to_vec1::<f32>()?;
    let masked = (per_token.reshape((groups, per_group))? * mask)?;
    counts
        .iter()
        .enumerate()
        .map(|(g, &count)| {
            if count == 0.0 {
                return Err(Error::msg(
                    "a batch of generation targets has no target token",
                ));
            }
            // With one group the narrowing is the tensor itself (candle records no op for a whole-axis narrow).
            Ok((masked.narrow(0, g, 1)?.sum_all()? / f64::from(count))?)
        })
        .collect()
}

/// The reference texts of `examples`.
pub(super) fn references(examples: &[Example]) -> Vec<String> {
    examples
        .iter()
        .map(|e| e.target.clone().unwrap_or_default())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn labels(ids: &[&[u32]], mask: &[&[u32]]) -> TargetLabels {
        let dev = Device::Cpu;
        let flat = |rows: &[&[u32]]| {
            rows.iter()
                .flat_map(|r| r.iter().copied())
                .collect::<Vec<u32>>()
        };
        let shape = (ids.len(), ids[0].len());
        TargetLabels {
            ids: Tensor::from_vec(flat(ids), shape, &dev).unwrap(),
            mask: Tensor::from_vec(flat(mask), shape, &dev).unwrap(),
        }
    }

    /// −log softmax by hand, in f64.
    fn nll(row: &[f32], target: usize) -> f64 {
        let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let norm: f64 = row
            .iter()
            .map(|&x| (x as f64 - max).exp())
            .sum::<f64>()
            .ln();
        -(row[target] as f64 - max - norm)
    }

    #[test]
    fn padded_positions_are_left_out_and_smoothing_mixes_in_the_uniform_term() -> Result<()> {
        let values: Vec<f32> = (0..2 * 3 * 4)
            .map(|i| ((i * 7) % 11) as f32 * 0.3 - 1.0)
            .collect();
        let logits = Tensor::from_vec(values.clone(), (2, 3, 4), &Device::Cpu)?;
        let l = labels(&[&[1, 3, 0], &[2, 0, 0]], &[&[1, 1, 1], &[1, 0, 0]]);
        let row = |r: usize, p: usize| &values[(r * 3 + p) * 4..(r * 3 + p + 1) * 4];
        let kept = [(0, 0, 1), (0, 1, 3), (0, 2, 0), (1, 0, 2)];
        let expected: f64 = kept.iter().map(|&(r, p, t)| nll(row(r, p), t)).sum::<f64>() / 4.0;
        let loss = token_cross_entropy(&logits, &l, 0.0)?.to_scalar::<f32>()? as f64;
        assert!((loss - expected).abs() < 1e-5, "{loss} vs {expected}");
        let uniform: f64 = kept
            .iter()
            .map(|&(r, p, _)| (0..4).map(|t| nll(row(r, p), t)).sum::<f64>() / 4.0)
            .sum::<f64>()
            / 4.0;
        let smoothed = token_cross_entropy(&logits, &l, 0.1)?.to_scalar::<f32>()? as f64;
        assert!((smoothed - (0.9 * expected + 0.1 * uniform)).abs() < 1e-5);
        Ok(())
    }

    #[test]
    fn each_group_of_rows_gets_the_loss_and_gradient_of_its_rows_alone() -> Result<()> {
        let values: Vec<f32> = (0..4 * 3 * 5)
            .map(|i| ((i * 7) % 13) as f32 * 0.25 - 1.5)
            .collect();
        let logits = candle_core::Var::from_vec(values, (4, 3, 5), &Device::Cpu)?;
        let l = labels(
            &[&[1, 3, 0], &[2, 0, 0], &[4, 4, 1], &[0, 2, 0]],
            &[&[1, 1, 1], &[1, 0, 0], &[1, 1, 0], &[1, 1, 1]],
        );
        let groups = token_cross_entropy_per_group(&logits, &l, 0.1, 2)?;
        let total = (&groups[0] + &groups[1])?;
        let grads = total.backward()?;
        let together = grads.get(&logits).expect("a gradient").to_vec3::<f32>()?;
        for (g, group) in groups.iter().enumerate() {
            let own = logits.narrow(0, 2 * g, 2)?.detach();
            let own = candle_core::Var::from_tensor(&own)?;
            let own_labels = TargetLabels {
                ids: l.ids.narrow(0, 2 * g, 2)?,
                mask: l.mask.narrow(0, 2 * g, 2)?,
            };
            let alone = token_cross_entropy(&own, &own_labels, 0.1)?;
            assert_eq!(group.to_scalar::<f32>()?, alone.to_scalar::<f32>()?);
            let own_grad = alone
                .backward()?
                .get(&own)
                .expect("a gradient")
                .to_vec3::<f32>()?;
            assert_eq!(together[2 * g..2 * g + 2], own_grad[..]);
        }
        assert!(token_cross_entropy_per_group(&logits, &l, 0.0, 3).is_err());
        Ok(())
    }

    #[test]
    fn the_task_decoding_becomes_the_generation_settings() {
        let decoding = DecodingSpec {
            num_beams: 3,
            length_penalty: 0.6,
            no_repeat_ngram_size: 2,
            min_target_tokens: 4,
            early_stopping: true,
        };
        let settings = decoding_settings(12, &decoding).unwrap();
        assert_eq!(
            (
                settings.num_beams,
                settings.max_new_tokens,
                settings.min_new_tokens
            ),
            (3, 12, 4)
        );
        assert_eq!(settings.no_repeat_ngram_size, 2);
        assert!(settings.early_stopping && settings.length_penalty == 0.6);
        assert!(
            decoding_settings(3, &decoding).is_err(),
            "a minimum above the limit"
        );
    }

    #[test]
    fn no_target_token_is_an_error() {
        let logits = Tensor::zeros((1, 2, 3), DType::F32, &Device::Cpu).unwrap();
        let l = labels(&[&[0, 0]], &[&[0, 0]]);
        assert!(token_cross_entropy(&logits, &l, 0.0).is_err());
    }
}
