//! Text-to-text tasks (summarisation, translation) in experiment files: `generation: (train: "…", eval: "…", …)`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Evaluation examples a generation task scores when it leaves `max_eval` out: every evaluation decodes each example
/// token by token, so a whole summarisation dev set (XSum's has 11 332 documents) would dwarf the training.
pub const DEFAULT_GENERATION_MAX_EVAL: usize = 200;

/// The evaluator a generation task is scored with when it names none.
pub const DEFAULT_GENERATION_METRIC: &str = "rouge";

/// A task whose examples are a source text and a reference output text, in the user's files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationTaskSpec {
    /// Training file (`.jsonl`, `.tsv` or `.csv`). Required.
    pub train: PathBuf,
    /// Evaluation file, same format. Required.
    pub eval: PathBuf,
    /// Column (or JSON key) of the source text; in the WMT layout (`{"translation": {"en": …, "ro": …}}`) the
    /// source language. Default: `source` (and when a file has no `source`, XSum's `document`).
    #[serde(default = "default_source")]
    pub source: String,
    /// Column (or JSON key) of the reference output; in the WMT layout the target language. Default: `target`
    /// (and when a file has no `target`, XSum's `summary`).
    #[serde(default = "default_target")]
    pub target: String,
    /// Text put before every source, T5's task prefix (`"summarize: "`, `"translate English to Romanian: "`).
    /// Default: none.
    #[serde(default)]
    pub source_prefix: Option<String>,
    /// Longest tokenised source (prefix included); longer ones are truncated. Default: `training.max_seq_len`.
    #[serde(default)]
    pub max_source_tokens: Option<usize>,
    /// Target tokens kept for training and generated at most when evaluating (the end-of-sequence token included).
    /// Default: 64.
    #[serde(default = "default_max_target_tokens")]
    pub max_target_tokens: usize,
    /// Whether TSV/CSV files start with a header row. Default: true. Without one, columns are named by their 0-based
    /// position, and the default names mean columns 0 (source) and 1 (target).
    #[serde(default = "super::defaults::yes")]
    pub header: bool,
    /// Evaluator of the generated texts: `rouge` (summarisation) or `bleu` (translation), or a plugin's text
    /// evaluator. Default: `rouge`.
    #[serde(default)]
    pub metric: Option<String>,
    /// How evaluation decodes: `(num_beams: 4, length_penalty: 1.0, no_repeat_ngram_size: 3, min_target_tokens:
    /// 10, early_stopping: true)`, as transformers' `generate` reads them. Default: greedy (every field at its
    /// default).
    // Left out of the serialised form while greedy, so trial ids of greedy runs stay what they were.
    #[serde(default, skip_serializing_if = "DecodingSpec::is_greedy")]
    pub decoding: DecodingSpec,
}

/// How a generation task's evaluation decodes (see [`crate::generate::GenerationSettings`], which it becomes with
/// `max_target_tokens` as the limit).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecodingSpec {
    /// Beams of beam search; 1 is greedy search. Default: 1.
    pub num_beams: usize,
    /// Exponent of the length normalisation of finished beams (> 0 favours longer outputs). Default: 1.0.
    pub length_penalty: f64,
    /// No n-gram of this size appears twice in an output; 0 allows repeats. Default: 0.
    pub no_repeat_ngram_size: usize,
    /// End-of-sequence is not allowed before this many generated tokens. Default: 0.
    pub min_target_tokens: usize,
    /// Stop an input's beam search as soon as `num_beams` outputs are finished. Default: false.
    pub early_stopping: bool,
}

impl Default for DecodingSpec {
    fn default() -> Self {
        DecodingSpec {
            num_beams: 1,
            length_penalty: 1.0,
            no_repeat_ngram_size: 0,
            min_target_tokens: 0,
            early_stopping: false,
        }
    }
}

impl DecodingSpec {
    /// Whether every field has its default (greedy search, nothing banned).
    pub fn is_greedy(&self) -> bool {
        *self == DecodingSpec::default()
    }
}

impl GenerationTaskSpec {
    /// The evaluator name that scores this task.
    pub fn metric_name(&self) -> &str {
        self.metric.as_deref().unwrap_or(DEFAULT_GENERATION_METRIC)
    }

    /// Longest tokenised source under training settings whose `max_seq_len` is given.
    pub fn source_tokens(&self, max_seq_len: usize) -> usize {
        self.max_source_tokens.unwrap_or(max_seq_len)
    }

    /// Whether `source` and `target` are left at their defaults (only then are XSum's names recognised, and columns
    /// 0 and 1 taken in files without a header).
    pub fn default_names(&self) -> bool {
        self.source == default_source() && self.target == default_target()
    }
}

fn default_source() -> String {
    "source".into()
}

fn default_target() -> String {
    "target".into()
}

fn default_max_target_tokens() -> usize {
    64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::TaskSpec;

    #[test]
    fn a_generation_task_parses_with_its_defaults() {
        let task: TaskSpec =
            ron::from_str(r#"(id: "xsum", generation: Some((train: "t.jsonl", eval: "e.jsonl")))"#)
                .expect("parses");
        let g = task.generation.clone().expect("generation");
        assert_eq!((g.source.as_str(), g.target.as_str()), ("source", "target"));
        assert!(g.default_names() && g.header);
        assert_eq!(g.max_target_tokens, 64);
        assert_eq!(g.source_tokens(128), 128);
        assert_eq!(g.metric_name(), "rouge");
        assert_eq!(task.effective_max_eval(), Some(DEFAULT_GENERATION_MAX_EVAL));
        assert!(!task.is_glue());
        assert!(g.decoding.is_greedy());
        let beams: TaskSpec = ron::from_str(
            r#"(id: "x", generation: Some((train: "t", eval: "e", decoding: (num_beams: 4))))"#,
        )
        .expect("parses");
        let decoding = beams.generation.expect("generation").decoding;
        assert_eq!((decoding.num_beams, decoding.length_penalty), (4, 1.0));
        let unknown = r#"(id: "x", generation: Some((train: "t", eval: "e", prefix: "a")))"#;
        assert!(ron::from_str::<TaskSpec>(unknown).is_err());
    }

    #[test]
    fn tasks_without_generation_serialise_as_before_so_trial_ids_stay() {
        let task = TaskSpec {
            id: "sst2".into(),
            max_train: Some(100),
            max_eval: None,
            custom: None,
            generation: None,
        };
        // The exact text trial ids of GLUE and custom tasks were hashed from before generation tasks existed.
        assert_eq!(
            serde_json::to_string(&task).expect("json"),
            r#"{"id":"sst2","max_train":100,"max_eval":null,"custom":null}"#
        );
        assert!(task.is_glue());
        assert_eq!(task.effective_max_eval(), None);
    }
}
