//! Experiment files, pass 1: plain serde structs read from RON with unknown fields refused.
//!
//! Pass 2 (resolving names through the registries, range checks, errors with `file:line:col`) is in
//! [`crate::experiment`], which also reads files (with `Some(…)` optional around optional values).
//! Every field documents its default; defaults live in `Default` impls.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

mod generation;

pub use generation::{
    DecodingSpec, GenerationTaskSpec, DEFAULT_GENERATION_MAX_EVAL, DEFAULT_GENERATION_METRIC,
};

/// Longest experiment name accepted (it becomes a folder name, which file systems limit to 255 bytes).
pub const MAX_NAME_LEN: usize = 100;

/// Checks an experiment name before it becomes the default results folder `results/<name>`: only letters, digits,
/// `-`, `_` and `.`, not `.` or `..`, at most [`MAX_NAME_LEN`] characters. A name such as `..` or `a/../../x`
/// would otherwise place the manifest and the CSVs outside `results/`. Returns the reason for a person.
pub fn check_results_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty (it names the results folder)".into());
    }
    if name == "." || name == ".." {
        return Err(format!(
            "`{name}` is not a folder name (it names the results folder); use letters, digits, `-`, `_` or `.`"
        ));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "is {} characters long; at most {MAX_NAME_LEN} (it names the results folder)",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "`{name}` contains {bad:?}; a name may hold only letters, digits, `-`, `_` and `.` (it names the \
             results folder)"
        ));
    }
    Ok(())
}

/// One experiment: a backbone, tasks, a budget, the design space and the refinement stages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    /// Name used for the results folder. Required.
    pub name: String,
    /// The frozen pretrained model. Required.
    pub backbone: BackboneSpec,
    /// Folder holding GLUE task folders (`SST-2`, `CoLA`, …). Default: none (then `--data-dir`, `PEFTSPACE_DATA`,
    /// or a download into the cache).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Dynamic plugin libraries to load before anything is resolved. Default: none.
    #[serde(default)]
    pub plugins: Vec<PathBuf>,
    /// Search tasks. Required, at least one.
    pub tasks: Vec<TaskSpec>,
    /// Trainable-parameter budget as a fraction of the backbone's parameters. Default: 0.005 (0.5 %).
    #[serde(default = "defaults::budget")]
    pub budget: f64,
    /// Number of layer groups G. Default: 4.
    #[serde(default = "defaults::groups")]
    pub groups: usize,
    /// How encoder and decoder layers are grouped. Default: `Joint`.
    #[serde(default)]
    pub group_stacks: GroupStacks,
    /// Every grouping rule admits only splits whose largest group is at most this many times the smallest (per
    /// stack when stacks are grouped separately), e.g. `Some(3.0)`; at least 1. Default: none (no bound).
    // Left out of the serialised form when absent, so manifests written before the option existed stay valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_group_ratio: Option<f64>,
    /// The strategies designs may use, with their options. Default: adapter, prefix, lora, bitfit with defaults.
    #[serde(default = "defaults::strategies")]
    pub strategies: Vec<StrategySpec>,
    /// Training settings of every trial.
    #[serde(default)]
    pub training: TrainingSpec,
    /// Root seed: fixes design sampling (stage → candidate → design seeds derive from it). Default: 1.
    #[serde(default = "defaults::seed")]
    pub seed: u64,
    /// Training seeds: each design runs once per seed and task. Default: `[1]`.
    #[serde(default = "defaults::seeds")]
    pub seeds: Vec<u64>,
    /// Designs sampled per candidate (N). Default: 100.
    #[serde(default = "defaults::samples")]
    pub samples: usize,
    /// Share of each search task's training set held out as its validation split (drawn with the root `seed`):
    /// search trials train on the rest and are scored on it, so the designs are chosen without seeing the official
    /// dev set, which only the final runs report on. In (0, 1). Default: 0.1.
    #[serde(default = "defaults::validation_fraction")]
    pub validation_fraction: f64,
    /// Score search trials on this many training rows that no trial trains on instead: rows outside each task's
    /// `max_train` subset, drawn with the root `seed`. Search trials then train on the whole subset, and the split
    /// can be large (less noise per score) without taking training data. Needs `max_train` below each search
    /// task's training set. Default: none (`validation_fraction`).
    // Left out of the serialised form when absent, so manifests and trial ids written before it stay valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<ValidationSpec>,
    /// Refinement stages in order. Default: none (only S0 is sampled).
    #[serde(default)]
    pub stages: Vec<StageSpec>,
    /// How a stage picks its winner. Default: `HighestMean`.
    #[serde(default)]
    pub decision: DecisionRule,
    /// Two candidates whose mean design scores differ by less than this are practically equal: a stage whose every
    /// pair is shown inside ±margin (two one-sided Welch tests at the stage's α) ends `equivalent`. On the primary
    /// score's scale (a fraction). Default: 0.01.
    // Left out of the serialised form when absent, so manifests written before the option existed stay valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equivalence_margin: Option<f64>,
    /// What a stage that ends `undecided` (or `equivalent`) hands to the next stage; a stage may override it.
    /// Default: `KeepAll`.
    // Left out of the serialised form when `KeepAll`, so manifests written before the option existed stay valid.
    #[serde(default, skip_serializing_if = "OnUndecided::is_keep_all")]
    pub on_undecided: OnUndecided,
    /// What a design with a diverged trial counts as in a stage's population. Default: `Drop`.
    // Left out of the serialised form when `Drop`, so manifests written before the option existed stay valid.
    #[serde(default, skip_serializing_if = "DivergedRule::is_drop")]
    pub diverged: DivergedRule,
    /// Race the candidates of every stage: sample designs in rounds and drop candidates that are significantly
    /// worse than the best so far, instead of training all `samples` designs of every candidate. Default: none
    /// (the full protocol).
    // Left out of the serialised form when absent, so manifests written before racing existed stay valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub race: Option<RaceSpec>,
    /// Runs after the last stage: best designs and baselines with more seeds. Default: none.
    #[serde(default)]
    pub final_runs: Option<FinalRunsSpec>,
}

/// Where the backbone comes from: a local folder, or a hub id downloaded into the cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackboneSpec {
    /// Local folder with `config.json`, `model.safetensors`, `tokenizer.json`. Default: none.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Hugging Face hub id used when no local folder is given (`sentence-transformers/all-MiniLM-L6-v2`). Default: none.
    #[serde(default)]
    pub hub_id: Option<String>,
}

/// Whether groups may span the encoder and decoder of an encoder-decoder backbone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupStacks {
    /// One sequence of layers, encoder then decoder, cut into G groups.
    #[default]
    Joint,
    /// Encoder and decoder each cut into G/2 groups.
    Separate,
}

/// One task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// GLUE task id (`cola`, `sst2`, `mrpc`, `qqp`, `stsb`, `mnli`, `qnli`, `rte`, `wnli`), or the name of a custom
    /// or generation task.
    pub id: String,
    /// Seeded subsample of the training set. Default: all.
    #[serde(default)]
    pub max_train: Option<usize>,
    /// Seeded subsample of the evaluation set. Default: all; for a generation task
    /// [`DEFAULT_GENERATION_MAX_EVAL`] (200), since every evaluation decodes each example.
    #[serde(default)]
    pub max_eval: Option<usize>,
    /// A non-GLUE classification or regression task read from TSV/CSV/JSONL files. Default: none.
    #[serde(default)]
    pub custom: Option<CustomTaskSpec>,
    /// A text-to-text task (summarisation, translation) read from JSONL/TSV/CSV files. Default: none. A task with
    /// neither `custom` nor `generation` is a GLUE task; one with both is refused.
    // Left out of the serialised form when absent, so the trial ids of GLUE and custom tasks (hashes of this
    // struct) stay what they were before generation tasks existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<GenerationTaskSpec>,
}

impl TaskSpec {
    /// Whether this is one of GLUE's tasks (read from the GLUE folder) rather than one in the user's files.
    pub fn is_glue(&self) -> bool {
        self.custom.is_none() && self.generation.is_none()
    }

    /// The evaluation subsample that applies: `max_eval`, or for a generation task left without one
    /// [`DEFAULT_GENERATION_MAX_EVAL`].
    pub fn effective_max_eval(&self) -> Option<usize> {
        self.max_eval.or_else(|| {
            self.generation
                .as_ref()
                .map(|_| DEFAULT_GENERATION_MAX_EVAL)
        })
    }
}

/// A task in the user's own files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomTaskSpec {
    /// Training file (`.tsv`, `.csv` or `.jsonl`). Required.
    pub train: PathBuf,
    /// Evaluation file, same format. Required.
    pub eval: PathBuf,
    /// Column (or JSON key) of the first text. Required.
    pub text: String,
    /// Column of the second text for pair tasks. Default: none.
    #[serde(default)]
    pub text_pair: Option<String>,
    /// Column of the label. Required.
    pub label: String,
    /// Label values in class order for classification (`["neg", "pos"]`); `[]` makes the task a regression.
    /// Required unless `kind: Regression`: left out, a classification task would silently become a regression.
    // Written as a plain list whether given or not (`None` as `[]`), so trial ids and manifests are what they were
    // when this field was a list defaulting to empty.
    #[serde(default, serialize_with = "defaults::labels_as_list")]
    pub labels: Option<Vec<String>>,
    /// `Classification` or `Regression`. Default: from `labels` (a list of classes, or `[]` for regression).
    // Not serialised: once checked it adds nothing to `labels`, and leaving it out keeps trial ids unchanged.
    #[serde(default, skip_serializing)]
    pub kind: Option<CustomKind>,
    /// Whether TSV/CSV files start with a header row. Default: true.
    #[serde(default = "defaults::yes")]
    pub header: bool,
    /// Evaluator name (`accuracy`, `f1`, `mcc`, `pearson_spearman`, …). Default: `accuracy`, or
    /// `pearson_spearman` for regression.
    #[serde(default)]
    pub metric: Option<String>,
}

/// What a custom task predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CustomKind {
    /// One of the `labels` (scored by `accuracy` unless `metric` says otherwise).
    Classification,
    /// A real value per example (scored by `pearson_spearman` unless `metric` says otherwise).
    Regression,
}

/// One strategy designs may use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrategySpec {
    /// Registry name (`adapter`, `prefix`, `lora`, `bitfit`, or a plugin's). Required.
    pub name: String,
    /// The strategy's own options, e.g. `(targets: ["q", "v"], alpha: 16.0)` for LoRA (every strategy's fields are
    /// listed in `docs/EXPERIMENTS.md`). Default: the strategy's defaults.
    #[serde(default = "defaults::unit")]
    pub options: ron::Value,
    /// Learning rate for this strategy's parameters. Default: `training.learning_rate`.
    #[serde(default)]
    pub learning_rate: Option<f64>,
}

/// Training settings of one trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingSpec {
    /// Passes over the (subsampled) training set. Default: 3.
    pub epochs: usize,
    /// Examples per step. Default: 32.
    pub batch_size: usize,
    /// Peak AdamW learning rate. Default: 5e-4.
    pub learning_rate: f64,
    /// Learning rate of the task head. Default: `learning_rate` (`full_learning_rate` in full fine-tuning).
    pub head_learning_rate: Option<f64>,
    /// Peak learning rate of the backbone's weights (and of the head, unless `head_learning_rate` is set) in full
    /// fine-tuning (`--baseline full`, the `full` final-run baseline). Default: 5e-5.
    // Left out of the serialised form while it has its default, so that trial ids (hashes of these settings) and
    // stored results from before this field existed stay valid.
    #[serde(skip_serializing_if = "defaults::is_full_learning_rate")]
    pub full_learning_rate: f64,
    /// AdamW decoupled weight decay. Default: 0.0.
    pub weight_decay: f64,
    /// Fraction of steps with linear warm-up, then linear decay to 0. Default: 0.06.
    pub warmup: f64,
    /// Longest tokenised input; longer ones are truncated. Default: 128.
    pub max_seq_len: usize,
    /// Global gradient-norm clip. Default: 1.0 (0 disables).
    pub grad_clip: f64,
    /// Dropout inside the backbone and head while training. Default: 0.1.
    pub dropout: f64,
    /// Which epoch's score a search trial reports (on its validation split). Default: `Last`. Final runs always
    /// report their last epoch: they are scored on the dev set, which must not also pick the epoch.
    pub select: Select,
    /// Eval batch size. Default: 64.
    pub eval_batch_size: usize,
    /// Learning-curve pruning: stop a design whose dev score after one epoch is below a threshold, and record it as
    /// `pruned` with that partial score. Off by default: it changes the populations a stage compares.
    // Left out of the serialised form while off, so trial ids of runs without pruning stay what they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prune: Option<PruneSpec>,
    /// Label smoothing of the token cross-entropy of generation tasks (as PyTorch's `label_smoothing`: the target
    /// distribution puts this mass uniformly over the vocabulary). Default: 0.0.
    // Left out of the serialised form while 0, so trial ids of runs from before it existed stay valid.
    #[serde(skip_serializing_if = "defaults::is_zero")]
    pub label_smoothing: f64,
}

/// When a design stops early (`training.prune`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneSpec {
    /// The epoch after whose evaluation the rule is applied (1 = after the first epoch); it must come before the
    /// last epoch, or nothing would be saved.
    pub after_epoch: usize,
    /// The threshold on the task's primary dev score.
    pub below: PruneThreshold,
}

/// The score under which a design is pruned.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum PruneThreshold {
    /// A fixed primary score (e.g. `Score(0.6)` for accuracy).
    Score(f64),
    /// The task's reference score (majority class, mean predictor) on the same evaluation set plus a margin:
    /// `ReferencePlus(0.0)` prunes designs that have learned nothing yet.
    ReferencePlus(f64),
}

impl PruneSpec {
    /// Whether a design scoring `score` after `epoch` of `epochs` stops here. `reference` is the task's reference
    /// score; when it is unknown, a `ReferencePlus` rule prunes nothing.
    pub fn prunes(&self, epoch: usize, epochs: usize, score: f64, reference: Option<f64>) -> bool {
        if epoch != self.after_epoch || epoch >= epochs {
            return false;
        }
        let threshold = match self.below {
            PruneThreshold::Score(t) => Some(t),
            PruneThreshold::ReferencePlus(margin) => reference.map(|r| r + margin),
        };
        // A NaN score never clears a threshold, so it is pruned.
        threshold.is_some_and(|t| !(score >= t))
    }

    /// The rule in words, for stage tables and `stages.csv`.
    pub fn describe(&self) -> String {
        match self.below {
            PruneThreshold::Score(t) => format!("after epoch {} below {t}", self.after_epoch),
            PruneThreshold::ReferencePlus(m) => {
                format!("after epoch {} below reference + {m}", self.after_epoch)
            }
        }
    }
}

/// Which epoch's score a trial reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Select {
    #[default]
    Last,
    Best,
}

/// One refinement stage: a dimension and the candidate constraints compared on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// Stage name (`S1`, …), used in outputs. Required.
    pub name: String,
    /// Which dimension this stage constrains. Required.
    pub dimension: Dimension,
    /// Candidates: grouping/allocation rule names; tuned-group patterns (`"1111"`, `"0111"`); or strategy sets
    /// written as names joined by `+` (`"adapter+lora"`). Required, at least one (a single candidate simply fixes
    /// the dimension); no duplicates.
    pub candidates: Vec<String>,
    /// Designs per candidate for this stage. Default: the experiment's `samples`.
    #[serde(default)]
    pub samples: Option<usize>,
    /// This stage's `on_undecided`. Default: the experiment's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_undecided: Option<OnUndecided>,
}

/// A validation split of spare training rows (`ExperimentSpec::validation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationSpec {
    /// Rows per search task, at least 1.
    pub rows: usize,
}

/// What a stage hands to the next when it did not find a winner. A `significant` stage always hands on its winner.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnUndecided {
    /// The union of the candidates still in the race (a dropped candidate is out, and so is one with no scored
    /// design): the next stage samples each of them equally often, instead of a constraint chosen by noise.
    #[default]
    KeepAll,
    /// This candidate (e.g. the simpler one), when it is still in the race; otherwise the union, as `KeepAll`.
    Keep(String),
    /// The candidate with the best mean, significant or not (what every stage did before stages had outcomes).
    Best,
}

impl OnUndecided {
    pub fn is_keep_all(&self) -> bool {
        *self == OnUndecided::KeepAll
    }
}

/// The design dimension a stage constrains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dimension {
    Grouping,
    Allocation,
    TunedGroups,
    /// The strategy set of one group (0-based); the paper decides these group by group.
    Strategies(usize),
}

/// How a stage picks its winner.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DecisionRule {
    /// The candidate whose population has the highest mean score (the paper's rule).
    #[default]
    HighestMean,
    /// The highest median.
    HighestMedian,
}

/// What a diverged trial counts as when a stage scores its designs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DivergedRule {
    /// The design has no score: it is left out of the population and counted (`designs_diverged`).
    #[default]
    Drop,
    /// The diverged trial scores its task's reference (chance) level: the evaluator's score of the training set's
    /// majority class (classification) or mean (regression) predicted for every example. A design that diverges
    /// often then pulls its candidate down instead of vanishing from it.
    Chance,
}

impl DivergedRule {
    pub fn is_drop(&self) -> bool {
        *self == DivergedRule::Drop
    }
}

/// A race within each stage (`core::refine::race`). A stage's `samples` is the most designs a candidate gets.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaceSpec {
    /// Designs every candidate gets before the first look. Default: 10.
    pub min_samples: usize,
    /// Designs added to every candidate still in the race between two looks. Default: 5.
    pub batch: usize,
    /// Family-wise error rate of the stage's eliminations, and of its equivalence stop, each spent over the looks by
    /// O'Brien–Fleming-type alpha spending (`core::refine::race`). Default: 0.05.
    pub alpha: f64,
}

impl RaceSpec {
    /// The first field that is out of range, with the reason for a person (the experiment check places it in the
    /// file; `report --replay-race` names the flag).
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if self.min_samples < 2 {
            return Some((
                "min_samples",
                format!(
                    "{} designs per candidate cannot show a difference; at least 2 (e.g. 10)",
                    self.min_samples
                ),
            ));
        }
        if self.batch == 0 {
            return Some((
                "batch",
                "must add at least 1 design per round (e.g. 5)".into(),
            ));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0 && self.alpha < 1.0) {
            return Some((
                "alpha",
                format!("{} is not an error rate in (0, 1); e.g. 0.05", self.alpha),
            ));
        }
        None
    }
}

impl Default for RaceSpec {
    fn default() -> Self {
        RaceSpec {
            min_samples: 10,
            batch: 5,
            alpha: 0.05,
        }
    }
}

/// Runs after the search: the discovered space's best designs and single-strategy baselines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinalRunsSpec {
    /// How many of the last stage's best designs to rerun. Default: 1.
    #[serde(default = "defaults::one")]
    pub top: usize,
    /// Training seeds of the final runs, none of them one of the search's `seeds` (the designs were chosen with
    /// those). Default: the eight seeds after the largest search seed (`[2, …, 9]` for `seeds: [1]`), so the final
    /// comparison can be a test (`core::report::final_comparison`).
    #[serde(default)]
    pub seeds: Option<Vec<u64>>,
    /// Epochs of the final runs. Default: the training epochs.
    #[serde(default)]
    pub epochs: Option<usize>,
    /// Baselines: strategy names (each in every layer at the same budget), `full` (all weights), or design texts
    /// (`g=… a=… t=… s=…`, e.g. a published design). Default: none.
    #[serde(default)]
    pub baselines: Vec<String>,
    /// Tasks of the final runs. Default: the search tasks.
    #[serde(default)]
    pub tasks: Option<Vec<TaskSpec>>,
    /// Write each final run's trained design as a saved design folder (`docs/SAVED_DESIGNS.md`) under the results
    /// directory, `final/<trial id>/`. Default: false.
    // Left out of the manifest (`refine::manifest`): saving changes no result, so it may be turned on for a
    // results folder that already holds the final runs.
    #[serde(default)]
    pub save: bool,
}

/// Final seeds when the experiment names none: eight, so that the paired comparison of the discovered design with
/// a baseline (2/2ⁿ is the smallest two-sided p over n pairs) can reach 0.05 even on one task after Holm.
pub const DEFAULT_FINAL_SEEDS: usize = 8;

impl FinalRunsSpec {
    /// The final runs' training seeds: the ones given, or the [`DEFAULT_FINAL_SEEDS`] after the largest of
    /// `search_seeds`.
    pub fn seeds_after(&self, search_seeds: &[u64]) -> Vec<u64> {
        match &self.seeds {
            Some(seeds) => seeds.clone(),
            None => {
                let last = search_seeds.iter().copied().max().unwrap_or(0);
                (1..=DEFAULT_FINAL_SEEDS as u64)
                    .map(|i| last.saturating_add(i))
                    .collect()
            }
        }
    }
}

impl Default for TrainingSpec {
    fn default() -> Self {
        TrainingSpec {
            epochs: 3,
            batch_size: 32,
            learning_rate: 5e-4,
            head_learning_rate: None,
            full_learning_rate: defaults::FULL_LEARNING_RATE,
            weight_decay: 0.0,
            warmup: 0.06,
            max_seq_len: 128,
            grad_clip: 1.0,
            dropout: 0.1,
            select: Select::Last,
            eval_batch_size: 64,
            prune: None,
            label_smoothing: 0.0,
        }
    }
}

mod defaults {
    use super::StrategySpec;

    pub fn is_zero(value: &f64) -> bool {
        *value == 0.0
    }

    /// The rate commonly used to fine-tune all of a BERT-sized model.
    pub const FULL_LEARNING_RATE: f64 = 5e-5;

    pub fn is_full_learning_rate(rate: &f64) -> bool {
        *rate == FULL_LEARNING_RATE
    }

    pub fn budget() -> f64 {
        0.005
    }
    pub fn groups() -> usize {
        4
    }
    pub fn seed() -> u64 {
        1
    }
    pub fn seeds() -> Vec<u64> {
        vec![1]
    }
    pub fn validation_fraction() -> f64 {
        0.1
    }
    pub fn samples() -> usize {
        100
    }
    pub fn one() -> usize {
        1
    }
    pub fn yes() -> bool {
        true
    }
    pub fn labels_as_list<S: serde::Serializer>(
        labels: &Option<Vec<String>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(labels.as_deref().unwrap_or(&[]), serializer)
    }
    pub fn unit() -> ron::Value {
        ron::Value::Unit
    }
    pub fn strategies() -> Vec<StrategySpec> {
        ["adapter", "prefix", "lora", "bitfit"]
            .into_iter()
            .map(|name| StrategySpec {
                name: name.to_string(),
                options: ron::Value::Unit,
                learning_rate: None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_experiment_parses_with_defaults() {
        let text = r#"ExperimentSpec(
            name: "t",
            backbone: (path: Some("m")),
            tasks: [(id: "sst2", max_train: Some(100))],
            stages: [(name: "S1", dimension: Grouping, candidates: ["uniform", "spindle"]),
                     (name: "S4a", dimension: Strategies(0), candidates: ["adapter+lora", "bitfit"])],
        )"#;
        let spec: ExperimentSpec = ron::from_str(text).expect("parses");
        assert_eq!(spec.budget, 0.005);
        assert_eq!(spec.groups, 4);
        assert_eq!(spec.strategies.len(), 4);
        assert_eq!(spec.training.epochs, 3);
        assert_eq!(spec.stages[1].dimension, Dimension::Strategies(0));
        assert_eq!(spec.validation_fraction, 0.1);
    }

    #[test]
    fn final_seeds_default_to_eight_after_the_search_seeds() {
        let text = r#"(top: 1)"#;
        let final_runs: FinalRunsSpec = ron::from_str(text).expect("parses");
        assert_eq!(final_runs.seeds_after(&[1]), (2..=9).collect::<Vec<u64>>());
        assert_eq!(
            final_runs.seeds_after(&[5, 2]),
            (6..=13).collect::<Vec<u64>>()
        );
        let given: FinalRunsSpec = ron::from_str("(seeds: Some([9]))").expect("parses");
        assert_eq!(given.seeds_after(&[1]), vec![9]);
    }

    #[test]
    fn unknown_field_is_refused() {
        let text = r#"ExperimentSpec(name: "t", backbone: (), tasks: [], budgte: 0.1)"#;
        assert!(ron::from_str::<ExperimentSpec>(text).is_err());
    }
}
