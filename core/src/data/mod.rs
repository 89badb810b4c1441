//! Tasks: GLUE's TSV files and the user's own TSV/CSV/JSONL files, read into labelled examples (or, for generation
//! tasks, source texts with their reference outputs).
//!
//! A task is read once into [`TaskData`] (strings and labels); tokenisation happens later, in the trainer, through a
//! [`Tokenize`]r (the model folder's [`crate::model::Tokenizer`]).

mod custom;
mod encoding;
mod generation;
mod glue;
mod table;

use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

pub use custom::{custom_kind, kind_problem_message, label_values, load_custom, KindProblem};
pub use encoding::{pad_batch, Tokenize, Tokens};
pub use generation::load_generation;
pub use glue::{glue_task, load_glue, GlueTask, GLUE_TASKS};

use crate::evaluator::{Evaluator, Metrics};
use crate::spec::TaskSpec;
use crate::{Error, Result};

/// One labelled example: one text, or a pair of texts.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub text: String,
    pub pair: Option<String>,
    /// Class index for classification, the target value for regression (0 for generation).
    pub label: f32,
    /// The reference output text of a generation task (`None` for classification and regression).
    pub target: Option<String>,
}

/// What a task predicts.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskKind {
    /// Classes, in index order (`label` holds the index).
    Classification { labels: Vec<String> },
    /// One real value per example.
    Regression,
    /// Text to text (summarisation, translation): [`Example::target`] holds the reference output, decoded and scored
    /// by a text evaluator (ROUGE, BLEU). Needs a backbone with a language model.
    Generation {
        /// Source tokens kept (the task prefix and special tokens included); `None`: `training.max_seq_len`.
        max_source_tokens: Option<usize>,
        /// Target tokens kept for training and generated at most at evaluation (the end-of-sequence token
        /// included).
        max_target_tokens: usize,
        /// How evaluation decodes (greedy by default).
        decoding: crate::spec::DecodingSpec,
    },
}

impl TaskKind {
    /// What the reference score ([`TaskData::reference`]) predicts, for messages.
    pub fn reference_name(&self) -> &'static str {
        match self {
            TaskKind::Classification { .. } => "majority class",
            TaskKind::Regression => "mean predictor",
            TaskKind::Generation { .. } => "source copy",
        }
    }

    /// Width of the task head's output: the number of classes, 1 for regression, none for generation (the
    /// language-model head predicts tokens).
    pub fn outputs(&self) -> usize {
        match self {
            TaskKind::Classification { labels } => labels.len(),
            TaskKind::Regression => 1,
            TaskKind::Generation { .. } => 0,
        }
    }
}

/// A task ready for training: its examples and how it is scored.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskData {
    /// The task id from the experiment (`sst2`, `mrpc`, or a custom name).
    pub id: String,
    pub kind: TaskKind,
    /// Name of the evaluator (in the evaluator registry) that scores this task.
    pub evaluator: String,
    pub train: Vec<Example>,
    /// Examples scored after each epoch (GLUE's dev set).
    pub eval: Vec<Example>,
    /// Files the examples came from (train, eval), for messages and trial ids.
    pub sources: Vec<PathBuf>,
}

impl TaskData {
    /// The score a model gets without learning anything: the training set's majority class predicted for every
    /// evaluation example (classification), or the training mean (regression), scored by `evaluator`. For
    /// accuracy this is the majority class's share; MCC and correlations are 0; F1 is that of always answering
    /// the majority class. For generation it is the score of copying each source text as its output. A trial that
    /// does not beat it learned nothing.
    pub fn reference(&self, evaluator: &dyn Evaluator) -> Result<Metrics> {
        let constant = match &self.kind {
            TaskKind::Classification { labels } => {
                let mut counts = vec![0usize; labels.len()];
                for e in &self.train {
                    if let Some(c) = counts.get_mut(e.label as usize) {
                        *c += 1;
                    }
                }
                // Ties go to the earlier class, so the reference does not depend on the examples' order.
                let mut best = 0;
                for (i, &c) in counts.iter().enumerate() {
                    if c > counts[best] {
                        best = i;
                    }
                }
                best as f64
            }
            TaskKind::Regression => {
                let n = self.train.len().max(1) as f64;
                self.train.iter().map(|e| f64::from(e.label)).sum::<f64>() / n
            }
            TaskKind::Generation { .. } => {
                let copies: Vec<String> = self.eval.iter().map(|e| e.text.clone()).collect();
                let targets: Vec<String> = self
                    .eval
                    .iter()
                    .map(|e| e.target.clone().unwrap_or_default())
                    .collect();
                return evaluator.score_texts(&copies, &targets);
            }
        };
        let labels: Vec<f64> = self.eval.iter().map(|e| f64::from(e.label)).collect();
        evaluator.score(&vec![constant; labels.len()], &labels)
    }

    /// Keeps a seeded random subset of at most `max_train` training and `max_eval` evaluation examples.
    ///
    /// The subsets keep the files' order, so a larger `max_*` with the same seed does not reshuffle the data.
    pub fn subsample(
        mut self,
        max_train: Option<usize>,
        max_eval: Option<usize>,
        seed: u64,
    ) -> Self {
        if let Some(n) = max_train {
            self.train = seeded_subset(self.train, n, seed);
        }
        if let Some(n) = max_eval {
            // A different stream from the training subset, so the two choices are independent.
            self.eval = seeded_subset(self.eval, n, seed ^ 0x9e37_79b9_7f4a_7c15);
        }
        self
    }
}

/// Mixed into the seed of [`TaskData::hold_out`], so the held-out rows are drawn independently of the training
/// subsample drawn with the same seed.
const HOLD_OUT_STREAM: u64 = 0x7661_6c69_6461_7465;

/// Rows of a validation split of `fraction` of `n` training examples: `round(fraction × n)`, at least one, and at
/// least one left to train on (`n ≥ 2`).
pub fn validation_rows(n: usize, fraction: f64) -> usize {
    ((fraction * n as f64).round() as usize).clamp(1, n.saturating_sub(1).max(1))
}

impl TaskData {
    /// The validation split of search trials: `round(fraction × n)` of the `n` training examples (at least one,
    /// and at least one left to train on) drawn uniformly with `seed` become the evaluation set, the others stay
    /// the training set; both keep the file's order. The official evaluation set is not used. The same seed and
    /// fraction give the same split; the two parts never share a row.
    pub fn hold_out(&self, fraction: f64, seed: u64) -> Result<TaskData> {
        let n = self.train.len();
        if !(fraction.is_finite() && fraction > 0.0 && fraction < 1.0) {
            return Err(Error::msg(format!(
                "task `{}`: validation fraction {fraction} is not in (0, 1)",
                self.id
            )));
        }
        if n < 2 {
            return Err(Error::msg(format!(
                "task `{}` has {n} training example(s); holding out a validation split needs at least 2 (raise `max_train` or add examples)",
                self.id
            )));
        }
        let held = validation_rows(n, fraction);
        let mut rng = StdRng::seed_from_u64(seed ^ HOLD_OUT_STREAM);
        let mut indices: Vec<usize> = (0..n).collect();
        indices.shuffle(&mut rng);
        let mut held_out = vec![false; n];
        for &i in &indices[..held] {
            held_out[i] = true;
        }
        let (eval, train): (Vec<_>, Vec<_>) = self
            .train
            .iter()
            .cloned()
            .zip(held_out)
            .partition(|(_, h)| *h);
        Ok(TaskData {
            train: train.into_iter().map(|(e, _)| e).collect(),
            eval: eval.into_iter().map(|(e, _)| e).collect(),
            ..self.clone()
        })
    }
}

/// At most `n` items chosen uniformly with a seeded RNG, in their original order.
pub fn seeded_subset<T>(items: Vec<T>, n: usize, seed: u64) -> Vec<T> {
    seeded_split(items, n, seed).0
}

/// [`seeded_subset`] and the items it leaves out, both in the input's order.
pub fn seeded_split<T>(items: Vec<T>, n: usize, seed: u64) -> (Vec<T>, Vec<T>) {
    if items.len() <= n {
        return (items, Vec::new());
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut indices: Vec<usize> = (0..items.len()).collect();
    indices.shuffle(&mut rng);
    let mut keep = vec![false; items.len()];
    for &i in &indices[..n] {
        keep[i] = true;
    }
    let (kept, rest): (Vec<_>, Vec<_>) = items.into_iter().zip(keep).partition(|(_, k)| *k);
    (
        kept.into_iter().map(|(item, _)| item).collect(),
        rest.into_iter().map(|(item, _)| item).collect(),
    )
}

impl TaskData {
    /// The split of search trials with `validation: (rows: N)`: trained on the `max_train` subset of `whole`'s
    /// training set (drawn with `data_seed`, exactly the subset [`load_task`] keeps), scored on `rows` of the
    /// training rows outside it (drawn with `seed`; all of them when fewer are left). An error when nothing is
    /// left outside the subset.
    pub fn spare_validation(
        whole: &TaskData,
        max_train: Option<usize>,
        data_seed: u64,
        rows: usize,
        seed: u64,
    ) -> Result<TaskData> {
        let n = max_train.unwrap_or(whole.train.len());
        let (train, spare) = seeded_split(whole.train.clone(), n, data_seed);
        if spare.is_empty() || rows == 0 {
            return Err(Error::msg(format!(
                "task `{}`: `validation: (rows: {rows})` needs training rows outside `max_train`, but all {} are used \
                 for training; set `max_train` below {} or use `validation_fraction`",
                whole.id,
                whole.train.len(),
                whole.train.len()
            )));
        }
        Ok(TaskData {
            id: whole.id.clone(),
            kind: whole.kind.clone(),
            evaluator: whole.evaluator.clone(),
            train,
            eval: seeded_subset(spare, rows, seed ^ HOLD_OUT_STREAM),
            sources: whole.sources.clone(),
        })
    }
}

/// Loads the task an experiment names: a custom or generation task from its files (relative paths from
/// `spec_dir`), or a GLUE task from `data_dir/<GLUE folder>`; then subsamples with `seed` as the task asks (a
/// generation task without `max_eval` keeps [`crate::spec::DEFAULT_GENERATION_MAX_EVAL`] evaluation examples).
pub fn load_task(
    task: &TaskSpec,
    data_dir: Option<&Path>,
    spec_dir: &Path,
    seed: u64,
) -> Result<TaskData> {
    let data = match (&task.custom, &task.generation) {
        (Some(_), Some(_)) => {
            return Err(Error::msg(format!(
                "task `{}` is both a `custom` and a `generation` task; keep one of them",
                task.id
            )))
        }
        (Some(custom), None) => load_custom(&task.id, custom, spec_dir)?,
        (None, Some(generation)) => load_generation(&task.id, generation, spec_dir)?,
        (None, None) => {
            let glue = glue_task(&task.id)?;
            let dir = data_dir.ok_or_else(|| {
                Error::msg(format!(
                    "task `{}` needs the GLUE data: pass --data-dir DIR, set PEFTSPACE_DATA, or add `data_dir` to the \
                     experiment file (DIR holds the `{}` folder)",
                    task.id, glue.folder
                ))
            })?;
            load_glue(glue, dir)?
        }
    };
    Ok(data.subsample(task.max_train, task.effective_max_eval(), seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(n: usize) -> TaskData {
        TaskData {
            id: "toy".into(),
            kind: TaskKind::Classification {
                labels: vec!["a".into(), "b".into()],
            },
            evaluator: "accuracy".into(),
            train: (0..n)
                .map(|i| Example {
                    text: format!("train {i}"),
                    pair: None,
                    label: (i % 2) as f32,
                    target: None,
                })
                .collect(),
            eval: vec![Example {
                text: "official dev".into(),
                pair: None,
                label: 0.0,
                target: None,
            }],
            sources: Vec::new(),
        }
    }

    #[test]
    fn the_validation_split_is_disjoint_from_training_and_fixed_by_its_seed() -> Result<()> {
        let full = task(200);
        let split = full.hold_out(0.1, 7)?;
        assert_eq!(split.eval.len(), 20);
        assert_eq!(split.train.len(), 180);
        let trained: std::collections::BTreeSet<&str> =
            split.train.iter().map(|e| e.text.as_str()).collect();
        assert!(split
            .eval
            .iter()
            .all(|e| !trained.contains(e.text.as_str())));
        // Together the parts are the training set; the official dev set is no part of either.
        let mut all: Vec<&str> = split
            .train
            .iter()
            .chain(&split.eval)
            .map(|e| e.text.as_str())
            .collect();
        all.sort_unstable();
        let mut expected: Vec<&str> = full.train.iter().map(|e| e.text.as_str()).collect();
        expected.sort_unstable();
        assert_eq!(all, expected);
        assert!(split.eval.iter().all(|e| e.text != "official dev"));
        // The same seed gives the same split; another seed another one.
        assert_eq!(full.hold_out(0.1, 7)?, split);
        assert_ne!(full.hold_out(0.1, 8)?.eval, split.eval);
        // Not the rows a training subsample with the same seed would keep first.
        let subsample = seeded_subset(full.train.clone(), 20, 7);
        assert_ne!(subsample, split.eval);
        Ok(())
    }

    #[test]
    fn a_split_keeps_a_row_on_each_side_and_refuses_what_it_cannot_split() -> Result<()> {
        let tiny = task(3).hold_out(0.01, 1)?;
        assert_eq!((tiny.train.len(), tiny.eval.len()), (2, 1));
        let most = task(3).hold_out(0.99, 1)?;
        assert_eq!((most.train.len(), most.eval.len()), (1, 2));
        assert!(task(1).hold_out(0.1, 1).is_err());
        assert!(task(10).hold_out(0.0, 1).is_err());
        assert!(task(10).hold_out(1.0, 1).is_err());
        Ok(())
    }

    #[test]
    fn spare_rows_validate_outside_the_training_subset() -> Result<()> {
        let whole = task(300);
        let split = TaskData::spare_validation(&whole, Some(100), 5, 50, 7)?;
        // Trained on exactly the subset `max_train: 100` keeps with the data seed, scored on 50 rows outside it.
        let subset = whole.clone().subsample(Some(100), None, 5);
        assert_eq!(split.train, subset.train);
        assert_eq!(split.eval.len(), 50);
        let trained: std::collections::BTreeSet<&str> =
            split.train.iter().map(|e| e.text.as_str()).collect();
        assert!(split
            .eval
            .iter()
            .all(|e| !trained.contains(e.text.as_str())));
        assert!(split.eval.iter().all(|e| e.text != "official dev"));
        // Fixed by its seed; fewer spare rows than asked: all of them; none: a clear error.
        assert_eq!(
            TaskData::spare_validation(&whole, Some(100), 5, 50, 7)?,
            split
        );
        assert_ne!(
            TaskData::spare_validation(&whole, Some(100), 5, 50, 8)?.eval,
            split.eval
        );
        assert_eq!(
            TaskData::spare_validation(&whole, Some(280), 5, 50, 7)?
                .eval
                .len(),
            20
        );
        let e = TaskData::spare_validation(&whole, None, 5, 50, 7)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("max_train") && e.contains("validation_fraction"),
            "{e}"
        );
        Ok(())
    }
}
