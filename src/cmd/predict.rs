//! `peftspace predict`: score a file of texts with a saved design (or an imported PEFT adapter) and write a CSV.

use std::path::{Path, PathBuf};

use std::sync::Arc;

use anyhow::anyhow;
use candle_core::Device;
use peftspace_core::backbone::Weights;
use peftspace_core::data::TaskKind;
use peftspace_core::generate::{generate_texts, GenerationSettings};
use peftspace_core::model::{ModelFolder, Tokenizer};
use peftspace_core::registry::registries;
use peftspace_core::saved::{design_hooks, probabilities, read_examples, Predictor, SavedDesign};
use peftspace_core::spec::TrainingSpec;

use super::adapter::Design;
use super::{Exit, Global};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A folder written by `train --save`, or a Hugging Face PEFT adapter (adapter_config.json +
    /// adapter_model.safetensors).
    pub design: PathBuf,
    /// Texts to score: `.tsv`, `.csv` (with a header row) or `.jsonl`.
    #[arg(long)]
    pub input: PathBuf,
    /// Column (JSON key) of the text. Default: the first of text, sentence, sentence1, question, question1.
    #[arg(long)]
    pub text: Option<String>,
    /// Column of the second text of a pair. Default: the first of text_pair, pair, sentence2, question2.
    #[arg(long)]
    pub pair: Option<String>,
    /// Where the predictions go (CSV: index, label, score, then p_<label> and logit_<label> for every class; or
    /// index, value; for a design trained on a generation task: index, generated).
    #[arg(long)]
    pub out: PathBuf,
    /// Examples per forward pass. Default: the training run's eval_batch_size.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Beams of beam search, for a design trained on a generation task (1: greedy, the default).
    #[arg(long, default_value_t = 1)]
    pub num_beams: usize,
}

/// A design ready to score: the loaded predictor, the tokenizer and the settings training used.
pub struct Loaded {
    pub design: SavedDesign,
    pub predictor: Predictor,
    pub tokenizer: Tokenizer,
    pub training: TrainingSpec,
}

/// Loads a saved design (or PEFT adapter) from `dir` onto the model `--model` names (else the one the design
/// records), refusing a backbone with other weights.
pub fn load(dir: &Path, global: &Global) -> Result<Loaded, Exit> {
    let (model, device, design) = read(dir, global)?;
    with_predictor(model, device, design)
}

/// The design (or PEFT adapter) in `dir`, the model it applies to and the device.
fn read(dir: &Path, global: &Global) -> Result<(ModelFolder, Device, Design), Exit> {
    let (_, device) = super::device(global)?;
    let model = super::adapter::model_for(dir, global)?;
    let design = super::adapter::read(dir, &model, &device)?;
    Ok((model, device, design))
}

/// A read design with its head's predictor on the frozen model.
fn with_predictor(model: ModelFolder, device: Device, design: Design) -> Result<Loaded, Exit> {
    if !design.has_head {
        return Err(Exit::usage(anyhow!(
            "{}: the adapter has no task head this backbone can use (PEFT's `classifier` of a BERT sequence \
             classifier), so it cannot predict; `encode --adapter` still applies it",
            design.source.display()
        )));
    }
    let backbone = model
        .load(&registries()?, &device, Weights::Frozen)
        .map_err(Exit::library)?;
    let predictor =
        Predictor::new(Arc::from(backbone), &design.design, &design.source).map_err(Exit::usage)?;
    let tokenizer = model.tokenizer().map_err(Exit::library)?;
    let training = design.design.manifest.training.clone().unwrap_or_default();
    Ok(Loaded {
        design: design.design,
        predictor,
        tokenizer,
        training,
    })
}

pub fn run(args: Args, global: &Global) -> Result<(), Exit> {
    let examples = read_examples(&args.input, args.text.as_deref(), args.pair.as_deref())
        .map_err(Exit::library)?;
    if examples.is_empty() {
        return Err(Exit::usage(anyhow!(
            "{}: no examples to score",
            args.input.display()
        )));
    }
    let (model, device, design) = read(&args.design, global)?;
    if let TaskKind::Generation {
        max_target_tokens, ..
    } = design.design.manifest.task.kind()
    {
        let written = generate(&args, &examples, model, device, design, max_target_tokens)?;
        eprintln!("wrote {written} generated texts to {}", args.out.display());
        return Ok(());
    }
    let loaded = with_predictor(model, device, design)?;
    let batch = args.batch_size.unwrap_or(loaded.training.eval_batch_size);
    let outputs = loaded.predictor.outputs(
        &loaded.tokenizer,
        &examples,
        loaded.training.max_seq_len,
        batch,
    )?;
    let task = &loaded.design.manifest.task;
    let mut w = csv::Writer::from_writer(Vec::new());
    if task.regression {
        w.write_record(["index", "value"])?;
        for (i, row) in outputs.iter().enumerate() {
            let value = row.first().copied().unwrap_or(f32::NAN);
            w.write_record([i.to_string(), value.to_string()])?;
        }
    } else {
        let mut header = vec!["index".to_string(), "label".into(), "score".into()];
        header.extend(task.labels.iter().map(|l| format!("p_{l}")));
        header.extend(task.labels.iter().map(|l| format!("logit_{l}")));
        w.write_record(&header)?;
        for (i, row) in outputs.iter().enumerate() {
            let p = probabilities(row)?;
            // Ties go to the first class, as the trainer's argmax does.
            let best = p
                .iter()
                .enumerate()
                .fold(0, |b, (j, &v)| if v > p[b] { j } else { b });
            let mut record = vec![
                i.to_string(),
                task.labels
                    .get(best)
                    .cloned()
                    .unwrap_or_else(|| best.to_string()),
                format!("{:.6}", p[best]),
            ];
            record.extend(p.iter().map(|v| format!("{v:.6}")));
            record.extend(row.iter().map(|v| v.to_string()));
            w.write_record(&record)?;
        }
    }
    let bytes = w
        .into_inner()
        .map_err(|e| anyhow!("building {}: {e}", args.out.display()))?;
    peftspace_core::store::write_bytes_atomically(&args.out, &bytes)?;
    eprintln!(
        "wrote {} predictions to {}",
        outputs.len(),
        args.out.display()
    );
    Ok(())
}

/// For a design trained on a generation task (no head: the language model writes the output), generates a text for
/// every example with the design applied and writes `index,generated`; returns how many.
fn generate(
    args: &Args,
    examples: &[peftspace_core::data::Example],
    model: ModelFolder,
    device: Device,
    read: Design,
    max_target_tokens: usize,
) -> Result<usize, Exit> {
    let backbone = model
        .load(&registries()?, &device, Weights::Frozen)
        .map_err(Exit::library)?;
    let hooks = design_hooks(backbone.as_ref(), &read.design, &read.source).map_err(Exit::usage)?;
    let tokenizer = model.tokenizer().map_err(Exit::library)?;
    let training = read.design.manifest.training.clone().unwrap_or_default();
    let settings = GenerationSettings {
        num_beams: args.num_beams,
        max_new_tokens: max_target_tokens,
        ..GenerationSettings::default()
    };
    settings.validate().map_err(Exit::usage)?;
    let sources: Vec<String> = examples.iter().map(|e| e.text.clone()).collect();
    let texts = generate_texts(
        backbone.as_ref(),
        &tokenizer,
        &sources,
        training.max_seq_len,
        &hooks,
        &settings,
        args.batch_size.unwrap_or(training.eval_batch_size),
    )
    .map_err(Exit::library)?;
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["index", "generated"])?;
    for (i, text) in texts.iter().enumerate() {
        w.write_record([i.to_string(), text.clone()])?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| anyhow!("building {}: {e}", args.out.display()))?;
    peftspace_core::store::write_bytes_atomically(&args.out, &bytes)?;
    Ok(texts.len())
}
