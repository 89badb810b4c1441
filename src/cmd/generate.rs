//! `peftspace generate`: decode one input with an encoder-decoder's language model (greedy or beam search, as
//! transformers' `generate` without sampling), optionally through a PEFT adapter or a saved design.

use std::path::PathBuf;

use anyhow::anyhow;
use candle_core::Tensor;
use peftspace_core::backbone::Weights;
use peftspace_core::data::Tokenize;
use peftspace_core::generate::{decode_texts, generate, GenerationSettings};
use peftspace_core::hooks::{LayerHooks, NoHooks};
use peftspace_core::registry::registries;
use peftspace_core::resolve::ModelNeeds;
use peftspace_core::saved::design_hooks;

use super::{Exit, Global};

/// Generate from one input with the model given by `--model DIR` (or `PEFTSPACE_MODEL`, or `--hub-id`). Prints the
/// generated ids (decoder start token first, EOS included) on one line and the decoded text (special tokens
/// skipped: the model's start, EOS and padding tokens and those the tokenizer marks special) on the next.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["text", "ids"])))]
pub struct Args {
    /// Text to tokenise with the model folder's tokenizer.json (special tokens added, no truncation).
    #[arg(long)]
    pub text: Option<String>,
    /// Input token ids, comma-separated, used as given (special tokens included).
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub ids: Option<Vec<u32>>,
    /// A Hugging Face model id, taken from the cache or downloaded when neither --model nor PEFTSPACE_MODEL is given.
    #[arg(long)]
    pub hub_id: Option<String>,
    /// Apply this design while generating: a PEFT LoRA or prefix adapter folder, or a folder `train --save` wrote.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Beams per input: 1 is greedy search.
    #[arg(long, default_value_t = 1)]
    pub num_beams: usize,
    /// The most tokens to generate after the decoder start token (EOS included). Default: the `max_target_tokens`
    /// of the generation task a saved design (--adapter) was trained on, else 20.
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// EOS is not allowed before this many tokens were generated.
    #[arg(long, default_value_t = 0)]
    pub min_new_tokens: usize,
    /// No n-gram of this size is generated twice (0: no ban).
    #[arg(long, default_value_t = 0)]
    pub no_repeat_ngram_size: usize,
    /// Beam search: finished hypotheses score log-probability / generated_length^X (above 0 favours longer ones).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub length_penalty: f64,
    /// Beam search: stop an input as soon as it has --num-beams finished hypotheses.
    #[arg(long)]
    pub early_stopping: bool,
}

/// `--max-new-tokens` without a saved design that says otherwise.
const DEFAULT_MAX_NEW_TOKENS: usize = 20;

impl Args {
    fn settings(&self) -> GenerationSettings {
        GenerationSettings {
            num_beams: self.num_beams,
            max_new_tokens: self.max_new_tokens.unwrap_or(DEFAULT_MAX_NEW_TOKENS),
            min_new_tokens: self.min_new_tokens,
            no_repeat_ngram_size: self.no_repeat_ngram_size,
            length_penalty: self.length_penalty,
            early_stopping: self.early_stopping,
        }
    }
}

pub fn run(args: Args, global: &Global) -> Result<(), Exit> {
    let mut settings = args.settings();
    // Bad settings are refused before a model is resolved (perhaps downloaded) and loaded.
    settings.validate().map_err(Exit::usage)?;
    // Token ids are used as given: without a tokenizer the ids are printed, and the text line is left out.
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
    let lm = backbone.language_model().ok_or_else(|| {
        Exit::usage(anyhow!(
            "{}: a `{}` model has no language-model head to generate with; generate needs an encoder-decoder \
             (T5 or BART)",
            model.dir().display(),
            model.model_type()
        ))
    })?;
    let tokenizer = match args.text {
        Some(_) => Some(model.tokenizer().map_err(Exit::library)?),
        None if model.dir().join("tokenizer.json").is_file() => {
            Some(model.tokenizer().map_err(Exit::library)?)
        }
        None => None,
    };
    let input: Vec<u32> = match (&args.text, &args.ids, &tokenizer) {
        // One input, no truncation: a too-long text is reported by the model, not silently cut.
        (Some(text), _, Some(tokenizer)) => tokenizer.encode(text, None, usize::MAX)?.ids,
        (None, Some(ids), _) if !ids.is_empty() => ids.clone(),
        _ => {
            return Err(Exit::usage(anyhow!(
                "give --text TEXT or --ids 1,2,3 (not empty)"
            )))
        }
    };
    let vocab = lm.vocab_size();
    if let Some(bad) = input.iter().find(|&&id| id as usize >= vocab) {
        return Err(Exit::usage(anyhow!(
            "input id {bad} is not in the model's vocabulary (ids 0..{})",
            vocab.saturating_sub(1)
        )));
    }
    let len = input.len();
    let input_ids = Tensor::from_vec(input, (1, len), &device)?;
    let mask = Tensor::ones((1, len), candle_core::DType::U32, &device)?;
    let design;
    let hooks: &dyn LayerHooks = match &args.adapter {
        Some(dir) => {
            let read = super::adapter::read(dir, &model, &device)?;
            // A design trained on a generation task generates at most what it was trained to.
            if let (None, Some(limit)) = (
                args.max_new_tokens,
                read.design.manifest.task.max_target_tokens,
            ) {
                settings.max_new_tokens = limit;
            }
            design =
                design_hooks(backbone.as_ref(), &read.design, &read.source).map_err(Exit::usage)?;
            &design
        }
        None => &NoHooks,
    };
    let sequences = generate(lm, &input_ids, &mask, hooks, &settings)?;
    let ids = sequences
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("generation returned no sequence for the input"))?;
    let line = ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    println!("{line}");
    if let Some(tokenizer) = &tokenizer {
        let text = decode_texts(tokenizer, std::slice::from_ref(&ids), lm.special_tokens())
            .map_err(Exit::library)?
            .pop()
            .unwrap_or_default();
        println!("{text}");
    }
    Ok(())
}
