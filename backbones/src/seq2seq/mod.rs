//! Pieces shared by the encoder-decoder backbones (T5, BART): the generic model ([`EncoderDecoder`]) with its
//! language-model head ([`lm_head`]) and cached decoding, checkpoint access, embeddings, the decoder input convention
//! and the sequence-classification read-out at the last end-of-sequence token.

pub mod attention;
mod encoder_decoder;
pub mod lm_head;

pub use encoder_decoder::{
    describe, load, load_trainable, Architecture, CheckpointLayout, EncoderDecoder, LayerStack,
    StackInput,
};

use std::path::Path;

use candle_core::{DType, Module, Tensor};
use candle_nn::VarBuilder;
use peftspace_core::backbone::{Batch, Encoded};
use peftspace_core::hooks::LayerHooks;
use peftspace_core::shapes::{LinearSite, SiteKind};
use peftspace_core::{Error, Result};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::ops::Linear;

/// Reads `config.json` of a model folder and parses it with `parse` (which also checks it); errors name the file.
pub fn read_config<T>(dir: &Path, parse: fn(&str) -> std::result::Result<T, String>) -> Result<T> {
    let (path, text) = peftspace_core::model::read_config(dir)?;
    parse(&text).map_err(|message| Error::Model { path, message })
}

/// Parses the text of a `config.json` (serde's message names the line and column).
pub fn parse_config<T: DeserializeOwned>(text: &str) -> std::result::Result<T, String> {
    serde_json::from_str(text).map_err(|e| format!("invalid config: {e}"))
}

/// Wraps a loading error with the model folder; only the first line is kept (candle appends a backtrace when
/// `RUST_BACKTRACE` is set, which says nothing to a user about their checkpoint).
pub fn model_error(dir: &Path, e: impl std::fmt::Display) -> Error {
    let text = e.to_string();
    Error::Model {
        path: dir.to_path_buf(),
        message: text.lines().next().unwrap_or_default().to_string(),
    }
}

/// The first prefix under which `probe` exists (`""`, `"model."`, `"transformer."`): transformers saves the bare
/// model without a prefix and task models with one.
pub fn root_prefix(
    vb: &VarBuilder,
    probe: &str,
    candidates: &[&'static str],
) -> Option<&'static str> {
    candidates
        .iter()
        .copied()
        .find(|p| vb.contains_tensor(&format!("{p}{probe}")))
}

/// The first of `names` present in the checkpoint, loaded as `[rows, cols]`.
pub fn first_present(
    vb: &VarBuilder,
    names: &[String],
    rows: usize,
    cols: usize,
) -> candle_core::Result<Tensor> {
    for name in names {
        if vb.contains_tensor(name) {
            return vb.get((rows, cols), name);
        }
    }
    Err(candle_core::Error::Msg(format!(
        "none of the embedding tensors {} is in the checkpoint",
        names.join(", ")
    )))
}

/// A token id written in `config.json` as a number or a list of numbers (the first is used).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TokenId {
    One(u32),
    Many(Vec<u32>),
}

impl TokenId {
    pub fn first(&self) -> Option<u32> {
        match self {
            TokenId::One(id) => Some(*id),
            TokenId::Many(ids) => ids.first().copied(),
        }
    }
}

/// Looks up `[batch, seq]` ids in a `[vocab, width]` table (frozen or trainable).
pub fn embed(table: &Tensor, ids: &Tensor) -> Result<Tensor> {
    let (batch, seq) = ids.dims2()?;
    if batch * seq == 0 {
        return Err(Error::msg(format!(
            "empty batch of token ids (shape {:?})",
            ids.dims()
        )));
    }
    let ids = ids.to_dtype(DType::U32)?;
    let vocab = table.dim(0)?;
    let max = ids.flatten_all()?.max(0)?.to_scalar::<u32>()?;
    if max as usize >= vocab {
        return Err(Error::msg(format!(
            "token id {max} is outside the vocabulary of {vocab} tokens (wrong tokenizer for this model?)"
        )));
    }
    let rows = table.index_select(&ids.flatten_all()?, 0)?;
    Ok(rows.reshape((batch, seq, table.dim(1)?))?)
}

/// The decoder input in the transformers convention: `input_ids` shifted right by one, `start` in front.
pub fn shift_right(input_ids: &Tensor, start: u32) -> Result<Tensor> {
    let (batch, seq) = input_ids.dims2()?;
    let first = Tensor::full(start, (batch, 1), input_ids.device())?;
    if seq <= 1 {
        return Ok(first.narrow(1, 0, seq)?);
    }
    Ok(Tensor::cat(
        &[&first, &input_ids.narrow(1, 0, seq - 1)?],
        1,
    )?)
}

/// For each row, the position of the last `eos` in `input_ids`; a row without one (truncated) falls back to its last
/// real token according to `attention_mask`.
pub fn last_eos_positions(
    input_ids: &Tensor,
    attention_mask: &Tensor,
    eos: u32,
) -> Result<Vec<usize>> {
    let ids = input_ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
    let mask = attention_mask.to_dtype(DType::U32)?.to_vec2::<u32>()?;
    Ok(ids
        .iter()
        .zip(&mask)
        .map(|(row, m)| match row.iter().rposition(|&t| t == eos) {
            Some(p) => p,
            None => m.iter().rposition(|&x| x != 0).unwrap_or(0),
        })
        .collect())
}

/// Rows of `hidden: [batch, seq, width]` at one position per row → `[batch, width]` (differentiable).
pub fn gather_rows(hidden: &Tensor, positions: &[usize]) -> Result<Tensor> {
    let (batch, seq, width) = hidden.dims3()?;
    if positions.len() != batch {
        return Err(Error::msg(format!(
            "{} positions for a batch of {batch}",
            positions.len()
        )));
    }
    if let Some(&p) = positions.iter().find(|&&p| p >= seq) {
        return Err(Error::msg(format!(
            "end-of-sequence position {p} is past the decoder length {seq}: pass decoder ids at least as long as the \
             input, or none (then the input shifted right is used)"
        )));
    }
    let index: Vec<u32> = positions
        .iter()
        .enumerate()
        .map(|(r, &p)| (r * seq + p) as u32)
        .collect();
    let index = Tensor::new(index.as_slice(), hidden.device())?;
    Ok(hidden
        .reshape((batch * seq, width))?
        .index_select(&index, 0)?)
}

/// Runs a projection and passes its output through the `linear` hook.
pub fn project(
    hooks: &dyn LayerHooks,
    layer: usize,
    site: SiteKind,
    linear: &Linear,
    x: &Tensor,
) -> Result<Tensor> {
    let y = linear.forward(x)?;
    hooks.linear(layer, site, x, y)
}

/// A linear site description.
pub fn site(kind: SiteKind, d_in: usize, d_out: usize, has_bias: bool) -> LinearSite {
    LinearSite {
        kind,
        d_in,
        d_out,
        has_bias,
    }
}

/// Checks the `[batch, seq]` input tensors of a batch and returns the decoder ids to use.
pub fn decoder_ids(batch: &Batch, start: u32) -> Result<Tensor> {
    let (b, s) = batch.input_ids.dims2()?;
    if batch.attention_mask.dims2()? != (b, s) {
        return Err(Error::msg(format!(
            "attention_mask has shape {:?}, input_ids [{b}, {s}]",
            batch.attention_mask.dims()
        )));
    }
    match &batch.decoder_input_ids {
        Some(ids) => {
            let (db, ds) = ids.dims2()?;
            if db != b || ds == 0 {
                return Err(Error::msg(format!(
                    "decoder_input_ids has shape {:?}, expected [{b}, length ≥ 1]",
                    ids.dims()
                )));
            }
            Ok(ids.to_dtype(DType::U32)?)
        }
        None => shift_right(&batch.input_ids.to_dtype(DType::U32)?, start),
    }
}

/// The decoder state at the last EOS of each row of `input_ids` (transformers' sequence-classification convention:
/// `BartForSequenceClassification`, `T5ForSequenceClassification`); `[batch, hidden]`.
pub fn eos_features(encoded: Encoded, batch: &Batch, eos: u32) -> Result<Tensor> {
    let hidden = encoded
        .decoder_hidden
        .ok_or_else(|| Error::msg("an encoder-decoder must return a decoder hidden state"))?;
    let positions = last_eos_positions(&batch.input_ids, &batch.attention_mask, eos)?;
    gather_rows(&hidden, &positions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn ids(rows: &[&[u32]]) -> Tensor {
        let width = rows[0].len();
        let flat: Vec<u32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_vec(flat, (rows.len(), width), &Device::Cpu).unwrap()
    }

    #[test]
    fn shift_right_puts_the_start_token_first() {
        let shifted = shift_right(&ids(&[&[5, 6, 1, 0], &[7, 1, 0, 0]]), 0).unwrap();
        assert_eq!(
            shifted.to_vec2::<u32>().unwrap(),
            vec![vec![0, 5, 6, 1], vec![0, 7, 1, 0]]
        );
    }

    #[test]
    fn last_eos_or_last_real_token() {
        let input = ids(&[&[5, 2, 6, 2, 1], &[5, 6, 7, 1, 1]]);
        let mask = ids(&[&[1, 1, 1, 1, 0], &[1, 1, 1, 0, 0]]);
        // Row 0: two EOS (id 2), the last one counts; row 1 was truncated (no EOS): its last real token.
        assert_eq!(last_eos_positions(&input, &mask, 2).unwrap(), vec![3, 2]);
    }

    #[test]
    fn gather_rows_picks_one_position_per_row_and_checks_bounds() {
        let hidden = Tensor::arange(0f32, 12., &Device::Cpu)
            .unwrap()
            .reshape((2, 3, 2))
            .unwrap();
        let rows = gather_rows(&hidden, &[2, 0]).unwrap();
        assert_eq!(
            rows.to_vec2::<f32>().unwrap(),
            vec![vec![4., 5.], vec![6., 7.]]
        );
        let err = gather_rows(&hidden, &[3, 0]).unwrap_err().to_string();
        assert!(err.contains("past the decoder length"), "{err}");
    }

    #[test]
    fn out_of_vocabulary_ids_are_an_error() {
        let table = Tensor::zeros((4, 2), DType::F32, &Device::Cpu).unwrap();
        let err = embed(&table, &ids(&[&[1, 4]])).unwrap_err().to_string();
        assert!(
            err.contains("token id 4 is outside the vocabulary of 4"),
            "{err}"
        );
    }
}
