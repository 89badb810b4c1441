//! `peftspace encode`: runs the frozen backbone once on one example (no padding; no PEFT unless `--adapter` names
//! one) and writes its hidden states to a safetensors file, for parity checks against transformers and PEFT.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{anyhow, Context};
use candle_core::Tensor;
use peftspace_core::backbone::{Batch, Mode, Weights};
use peftspace_core::data::{pad_batch, Tokenize, Tokens};
use peftspace_core::hooks::NoHooks;
use peftspace_core::registry::registries;
use peftspace_core::resolve::ModelNeeds;
use peftspace_core::saved::design_hooks;

use super::{Exit, Global};

/// Encode one example with the model given by `--model DIR` (or `PEFTSPACE_MODEL`, or `--hub-id`).
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["text", "ids"])))]
pub struct Args {
    /// Text to tokenise with the model folder's tokenizer.json (special tokens added, no truncation).
    #[arg(long)]
    pub text: Option<String>,
    /// Second text of a pair (with --text).
    #[arg(long, requires = "text")]
    pub pair: Option<String>,
    /// Token ids, comma-separated, used as given (special tokens included); segment ids are 0.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub ids: Option<Vec<u32>>,
    /// Decoder input ids for encoder-decoders, comma-separated (default: derived by the model).
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub decoder_ids: Option<Vec<u32>>,
    /// A Hugging Face model id, taken from the cache or downloaded when neither --model nor PEFTSPACE_MODEL is given.
    #[arg(long)]
    pub hub_id: Option<String>,
    /// Apply this design while encoding: a PEFT LoRA or prefix adapter folder, or a folder `train --save` wrote.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Output file: `encoder_hidden` [seq, hidden] (and `decoder_hidden` [dec_seq, hidden]) as F32.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: Args, global: &Global) -> Result<(), Exit> {
    // Token ids are used as given: only a text needs the tokenizer.
    let needs = if args.text.is_some() {
        ModelNeeds::Everything
    } else {
        ModelNeeds::Weights
    };
    let model = super::model_without_experiment(global, args.hub_id.clone(), needs)?;
    let (_, device) = super::device(global)?;
    let backbone = model
        .load(&registries()?, &device, Weights::Frozen)
        .map_err(Exit::library)?;
    let tokens = match (&args.text, &args.ids) {
        (Some(text), _) => {
            // One example, no truncation: a too-long text is reported by the model, not silently cut.
            let tokenizer = model.tokenizer().map_err(Exit::library)?;
            tokenizer.encode(text, args.pair.as_deref(), usize::MAX)?
        }
        (None, Some(ids)) if !ids.is_empty() => Tokens {
            ids: ids.clone(),
            type_ids: vec![0; ids.len()],
        },
        _ => {
            return Err(Exit::usage(anyhow!(
                "give --text TEXT [--pair TEXT] or --ids 1,2,3 (not empty)"
            )))
        }
    };
    let mut batch: Batch = pad_batch(&[&tokens], 0, &device)?;
    if let Some(dec) = &args.decoder_ids {
        batch.decoder_input_ids = Some(Tensor::from_vec(dec.clone(), (1, dec.len()), &device)?);
    }
    let encoded = match &args.adapter {
        Some(dir) => {
            let design = super::adapter::read(dir, &model, &device)?;
            let hooks = design_hooks(backbone.as_ref(), &design.design, &design.source)
                .map_err(Exit::usage)?;
            backbone.encode(&batch, &hooks, Mode::Eval)?
        }
        None => backbone.encode(&batch, &NoHooks, Mode::Eval)?,
    };
    let mut out: HashMap<String, Tensor> = HashMap::new();
    out.insert(
        "encoder_hidden".into(),
        encoded.encoder_hidden.squeeze(0)?.contiguous()?,
    );
    if let Some(dec) = encoded.decoder_hidden {
        out.insert("decoder_hidden".into(), dec.squeeze(0)?.contiguous()?);
    }
    candle_core::safetensors::save(&out, &args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    Ok(())
}
