//! Scoring examples with a saved design: its hooks and head rebuilt on the frozen backbone, every variable set from
//! the file.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Tensor, D};

use super::SavedDesign;
use crate::backbone::{Backbone, Mode};
use crate::data::{pad_batch, Example, TaskKind, Tokenize, Tokens};
use crate::hooks::DesignHooks;
use crate::params::ParamStore;
use crate::spec::TrainingSpec;
use crate::train::{build_design, eval_batches, max_input_len, TaskHead};
use crate::{Error, Result};

/// A saved design ready to score examples on its backbone.
pub struct Predictor {
    backbone: Arc<dyn Backbone>,
    hooks: DesignHooks,
    head: TaskHead,
    kind: TaskKind,
}

impl Predictor {
    /// Builds the design's variables and head for `backbone` and sets each from `design.tensors`; a tensor the
    /// design lacks, or a variable the file lacks, is an error naming it (`source` is the file, for messages).
    pub fn new(backbone: Arc<dyn Backbone>, design: &SavedDesign, source: &Path) -> Result<Self> {
        let mut store = ParamStore::new(backbone.device(), 0);
        let strategies = design.strategy_specs()?;
        let built = build_design(
            backbone.info(),
            &design.plan(),
            &strategies,
            &TrainingSpec::default(),
            &mut store,
        )
        .map_err(|e| super::file_error(source, e.to_string()))?;
        let kind = design.manifest.task.kind();
        let mut head = TaskHead::new(&mut store, backbone.feature_dim(), &kind)?;
        head.set_scale(design.manifest.task.target_scale);
        store
            .assign(&design.tensors)
            .map_err(|e| super::file_error(source, e.to_string()))?;
        if let Some((missing, _)) = store
            .named_vars()
            .iter()
            .find(|(n, _)| !design.tensors.contains_key(n))
        {
            return Err(super::file_error(
                source,
                format!("tensor `{missing}` is missing; the file does not hold the whole design"),
            ));
        }
        Ok(Predictor {
            backbone,
            hooks: built.hooks,
            head,
            kind,
        })
    }

    /// What the head predicts.
    pub fn kind(&self) -> &TaskKind {
        &self.kind
    }

    /// The head's raw outputs (class logits, or one regression value) for each example, in order. Inputs are cut to
    /// `min(max_seq_len, the backbone's position limit)`, as in training.
    pub fn outputs(
        &self,
        tokenizer: &dyn Tokenize,
        examples: &[Example],
        max_seq_len: usize,
        batch_size: usize,
    ) -> Result<Vec<Vec<f32>>> {
        let max_len = max_input_len(max_seq_len, self.backbone.max_positions());
        let tokens: Vec<Tokens> = examples
            .iter()
            .map(|e| tokenizer.encode(&e.text, e.pair.as_deref(), max_len))
            .collect::<Result<_>>()?;
        let lengths: Vec<usize> = tokens.iter().map(Tokens::len).collect();
        let mut out = vec![Vec::new(); examples.len()];
        for indices in eval_batches(&lengths, batch_size.max(1)) {
            let rows: Vec<&Tokens> = indices.iter().map(|&i| &tokens[i]).collect();
            let batch = pad_batch(&rows, tokenizer.pad_id(), self.backbone.device())?;
            let features = self.backbone.features(&batch, &self.hooks, Mode::Eval)?;
            let logits = self.head.forward(&features, Mode::Eval, 0.0)?;
            let rows: Vec<Vec<f32>> = logits.to_dtype(DType::F32)?.to_vec2()?;
            for (&i, row) in indices.iter().zip(rows) {
                out[i] = row;
            }
        }
        Ok(out)
    }
}

/// The hooks of a design with every variable set from its tensors, without a head (what `encode --adapter` runs).
pub fn design_hooks(
    backbone: &dyn Backbone,
    design: &SavedDesign,
    source: &Path,
) -> Result<DesignHooks> {
    let mut store = ParamStore::new(backbone.device(), 0);
    let built = build_design(
        backbone.info(),
        &design.plan(),
        &design.strategy_specs()?,
        &TrainingSpec::default(),
        &mut store,
    )
    .map_err(|e| super::file_error(source, e.to_string()))?;
    let values: crate::params::Tensors = design
        .tensors
        .iter()
        .filter(|(n, _)| !n.starts_with("head."))
        .map(|(n, t)| (n.clone(), t.clone()))
        .collect();
    store
        .assign(&values)
        .map_err(|e| super::file_error(source, e.to_string()))?;
    if let Some((missing, _)) = store
        .named_vars()
        .iter()
        .find(|(n, _)| !values.contains_key(n))
    {
        return Err(super::file_error(
            source,
            format!("tensor `{missing}` is missing; the file does not hold the whole design"),
        ));
    }
    Ok(built.hooks)
}

/// Softmax of one row of logits.
pub fn probabilities(logits: &[f32]) -> Result<Vec<f32>> {
    let t = Tensor::new(logits, &candle_core::Device::Cpu)?;
    let max = t.max_keepdim(D::Minus1)?;
    let e = t.broadcast_sub(&max)?.exp()?;
    let p = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
    Ok(p.to_vec1()?)
}

/// Texts to score from a `.tsv`, `.csv` (both with a header row) or `.jsonl` file. `text` and `pair` name the
/// columns (JSON keys); by default the first of `text`, `sentence`, `sentence1`, `question`, `question1` is the text
/// and the first of `text_pair`, `pair`, `sentence2`, `question2` the pair. Labels are not read.
pub fn read_examples(path: &Path, text: Option<&str>, pair: Option<&str>) -> Result<Vec<Example>> {
    const TEXTS: [&str; 5] = ["text", "sentence", "sentence1", "question", "question1"];
    const PAIRS: [&str; 4] = ["text_pair", "pair", "sentence2", "question2"];
    let bad = |line: usize, message: String| Error::Data {
        path: path.to_path_buf(),
        line,
        message,
    };
    let pick =
        |columns: &[String], wanted: Option<&str>, defaults: &[&str], what: &str| match wanted {
            Some(name) => columns
                .iter()
                .position(|c| c == name)
                .map(Some)
                .ok_or_else(|| {
                    bad(
                        1,
                        format!(
                            "no {what} column `{name}`; the columns are {}",
                            columns.join(", ")
                        ),
                    )
                }),
            None => Ok(defaults
                .iter()
                .find_map(|d| columns.iter().position(|c| c == d))),
        };
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let mut out = Vec::new();
    if extension == "jsonl" {
        let content = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        for (n, line) in content.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let value: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line)
                .map_err(|e| bad(n + 1, format!("not a JSON object: {e}")))?;
            let keys: Vec<String> = value.keys().cloned().collect();
            let t = pick(&keys, text, &TEXTS, "text")?.ok_or_else(|| {
                bad(
                    n + 1,
                    format!("no text key (one of {}); pass --text KEY", TEXTS.join(", ")),
                )
            })?;
            let p = pick(&keys, pair, &PAIRS, "pair")?;
            let as_text = |i: usize| -> Result<String> {
                value[&keys[i]]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad(n + 1, format!("`{}` is not a string", keys[i])))
            };
            out.push(Example {
                text: as_text(t)?,
                pair: p.map(as_text).transpose()?,
                label: 0.0,
                target: None,
            });
        }
        return Ok(out);
    }
    let delimiter = match extension {
        "tsv" => b'\t',
        "csv" => b',',
        other => {
            return Err(bad(
                0,
                format!("unknown input format `.{other}`; give a .tsv, .csv or .jsonl file"),
            ))
        }
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        // GLUE's TSVs hold unbalanced quotes inside sentences: tabs alone separate fields there.
        .quoting(delimiter != b'\t')
        .flexible(true)
        .from_path(path)
        .map_err(|e| bad(0, e.to_string()))?;
    let columns: Vec<String> = reader
        .headers()
        .map_err(|e| bad(1, e.to_string()))?
        .iter()
        .map(|c| c.trim_start_matches('\u{feff}').to_string())
        .collect();
    let t = pick(&columns, text, &TEXTS, "text")?.ok_or_else(|| {
        bad(
            1,
            format!(
                "no text column (one of {}); pass --text COLUMN",
                TEXTS.join(", ")
            ),
        )
    })?;
    let p = pick(&columns, pair, &PAIRS, "pair")?;
    for (n, record) in reader.records().enumerate() {
        let record = record.map_err(|e| bad(n + 2, e.to_string()))?;
        let field = |i: usize| {
            record
                .get(i)
                .map(str::to_string)
                .ok_or_else(|| bad(n + 2, format!("column `{}` is missing", columns[i])))
        };
        out.push(Example {
            text: field(t)?,
            pair: p.map(field).transpose()?,
            label: 0.0,
            target: None,
        });
    }
    Ok(out)
}
