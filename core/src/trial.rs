//! The trial vocabulary every floor shares: what one trial is (design × task × seed under fixed settings), its
//! content-addressed id, how it ended, what it produced, the stored record, and the [`TrialExecutor`] that runs one.
//!
//! The trainer (`train`), the refinement runner (`refine`), the result store (`store`) and reports all speak these
//! types; none of them is defined twice.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::spec::{StrategySpec, TaskSpec, TrainingSpec};
use crate::Result;

/// Runs one trial. Trial-specific trouble (divergence, a failed evaluation) is an `Ok` outcome with that status;
/// an `Err` means the run cannot go on (a missing model, say) and stops it without storing anything.
pub trait TrialExecutor: Send + Sync {
    /// Identifies the backbone weights (part of every trial id).
    fn backbone_identity(&self) -> Result<String>;
    /// Identifies a task's data after subsampling (part of its trials' ids).
    fn data_fingerprint(&self, task: &TaskSpec) -> Result<String>;
    fn run(&self, trial: &TrialSpec) -> Result<TrialOutcome>;

    /// Which trials may train together as one population: trials with equal keys give exactly the outcome they
    /// give alone when [`TrialExecutor::run_population`] trains them together. `None`: the trial trains alone.
    /// Default: every trial alone.
    fn population_key(&self, _trial: &TrialSpec) -> Result<Option<String>> {
        Ok(None)
    }

    /// Runs trials of one population key together; one result per trial, in order. `Err` for the whole
    /// population: nothing of it ran to the end (an interruption). Default: one after another with
    /// [`TrialExecutor::run`].
    fn run_population(&self, trials: &[TrialSpec]) -> Result<Vec<Result<TrialOutcome>>> {
        Ok(trials.iter().map(|t| self.run(t)).collect())
    }
}

/// The design text of the full fine-tuning baseline: every backbone weight trains (plus the task head), no PEFT
/// module. Executors recognise it with [`TrialSpec::is_full_fine_tuning`].
pub const FULL_FINE_TUNING: &str = "full";

/// Everything a trial executor needs to run one trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialSpec {
    /// Hex SHA-256 of the identity fields: design, task, seed, training, budget, strategies, backbone identity
    /// and data fingerprint (see [`TrialSpec::new`]).
    pub id: String,
    /// The design in its compact text form.
    pub design: String,
    pub task: TaskSpec,
    /// Training seed (initialisation, dropout, data order).
    pub seed: u64,
    /// Training settings, with any final-run override of the epochs already applied.
    pub training: TrainingSpec,
    /// Budget fraction and strategy options: they fix the absolute sizes a design text stands for.
    pub budget: f64,
    pub strategies: Vec<StrategySpec>,
    /// Which examples the trial trains on and is scored on. Absent in trials written before the split existed,
    /// which were scored on the dev set.
    #[serde(default, skip_serializing_if = "Split::is_dev")]
    pub split: Split,
    /// Where to write the trained design as a saved design folder (`final_runs.save`); not part of the id, since
    /// saving changes no result. Executors that cannot save refuse such a trial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save: Option<std::path::PathBuf>,
}

/// The examples a trial trains on and the ones that score it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// The whole (subsampled) training set; scored on the task's official evaluation set (GLUE's dev set). Final
    /// runs and `peftspace train`.
    #[default]
    Dev,
    /// `fraction` of the training set held out, drawn with `seed` ([`crate::data::TaskData::hold_out`]); trained
    /// on the rest, scored on the held-out part. Search trials, so that choosing designs never sees the dev set.
    Validation { fraction: f64, seed: u64 },
    /// `rows` training rows outside the task's `max_train` subset, drawn with `seed`
    /// ([`crate::data::TaskData::spare_validation`]); trained on the whole subset, scored on those rows. Search
    /// trials of an experiment with `validation: (rows: N)`.
    SpareRows { rows: usize, seed: u64 },
}

impl Split {
    pub fn is_dev(&self) -> bool {
        matches!(self, Split::Dev)
    }

    /// `dev` or `validation`, as `trials.csv` writes it.
    pub fn label(&self) -> &'static str {
        match self {
            Split::Dev => "dev",
            Split::Validation { .. } | Split::SpareRows { .. } => "validation",
        }
    }
}

/// The fields a trial id is the hash of. Anything that can change a trial's result belongs here.
#[derive(Serialize)]
struct TrialIdentity<'a> {
    design: &'a str,
    task: &'a TaskSpec,
    seed: u64,
    training: &'a TrainingSpec,
    budget: f64,
    strategies: &'a [StrategySpec],
    backbone: &'a str,
    data: &'a str,
    // Written only for a validation split, so the ids of dev-set trials are those they had before splits existed.
    #[serde(skip_serializing_if = "Split::is_dev")]
    split: Split,
}

impl TrialSpec {
    /// Builds a trial and its id from the identity fields plus the backbone identity and the task's data
    /// fingerprint (both supplied by the executor, see [`TrialExecutor`]), scored on `split`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        design: &str,
        task: &TaskSpec,
        seed: u64,
        training: &TrainingSpec,
        budget: f64,
        strategies: &[StrategySpec],
        backbone_identity: &str,
        data_fingerprint: &str,
        split: Split,
    ) -> Result<Self> {
        let identity = TrialIdentity {
            design,
            task,
            seed,
            training,
            budget,
            strategies,
            backbone: backbone_identity,
            data: data_fingerprint,
            split,
        };
        let canonical = serde_json::to_string(&identity)
            .map_err(|e| crate::Error::msg(format!("cannot serialise a trial identity: {e}")))?;
        Ok(TrialSpec {
            id: hex_sha256(canonical.as_bytes()),
            split,
            ..TrialSpec::unstored(design, task, seed, training, budget, strategies)
        })
    }
}

impl TrialSpec {
    /// A trial run outside any result store (`peftspace train`): nothing looks it up, so it gets no id, and the
    /// backbone's weights need not be hashed for one.
    pub fn unstored(
        design: &str,
        task: &TaskSpec,
        seed: u64,
        training: &TrainingSpec,
        budget: f64,
        strategies: &[StrategySpec],
    ) -> Self {
        TrialSpec {
            id: String::new(),
            design: design.to_string(),
            task: task.clone(),
            seed,
            training: training.clone(),
            budget,
            strategies: strategies.to_vec(),
            split: Split::Dev,
            save: None,
        }
    }

    /// Whether this trial is the full fine-tuning baseline (its executor must load the backbone with trainable
    /// weights, afresh for this trial).
    pub fn is_full_fine_tuning(&self) -> bool {
        self.design == FULL_FINE_TUNING
    }
}

/// How a trial ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialStatus {
    /// Trained and evaluated; the metrics count.
    Ok,
    /// The loss became NaN or infinite at this optimiser step.
    Diverged { step: u64 },
    /// The trial could not be completed (the message says why); other trials go on.
    Failed { message: String },
    /// Stopped by learning-curve pruning (`training.prune`) after this epoch; its metrics are that epoch's.
    Pruned { epoch: u64 },
}

impl TrialStatus {
    pub fn is_ok(&self) -> bool {
        matches!(self, TrialStatus::Ok)
    }

    /// Whether the trial has a score that counts in its population: trained to the end, or pruned (its partial
    /// score, below the pruning threshold, stands for the design).
    pub fn is_scored(&self) -> bool {
        matches!(self, TrialStatus::Ok | TrialStatus::Pruned { .. })
    }

    /// `ok`, `diverged`, `failed` or `pruned`, as written in the CSV.
    pub fn label(&self) -> &'static str {
        match self {
            TrialStatus::Ok => "ok",
            TrialStatus::Diverged { .. } => "diverged",
            TrialStatus::Failed { .. } => "failed",
            TrialStatus::Pruned { .. } => "pruned",
        }
    }
}

impl std::fmt::Display for TrialStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrialStatus::Ok => write!(f, "ok"),
            TrialStatus::Diverged { step } => write!(f, "diverged at step {step}"),
            TrialStatus::Failed { message } => write!(f, "failed: {message}"),
            TrialStatus::Pruned { epoch } => write!(f, "pruned after epoch {epoch}"),
        }
    }
}

/// What an executor reports for one trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialOutcome {
    pub status: TrialStatus,
    /// Metric name → value on the evaluation set (e.g. `accuracy`, `f1`, `mcc`).
    pub metrics: BTreeMap<String, f64>,
    /// The task's GLUE primary score; `None` unless the status is `Ok` or `Pruned` (then the pruned epoch's).
    pub primary: Option<f64>,
    /// Trainable parameters the design really created (task head excluded); all backbone weights for full
    /// fine-tuning.
    pub trainable_params: u64,
    /// Parameters of the task head, reported apart from the budget.
    pub head_params: u64,
    /// Wall-clock seconds of the trial.
    pub seconds: f64,
    /// Where it ran (`cpu`, `cuda:0`, …): recorded, but not part of the trial's identity, so a trial stored on
    /// one device counts on any other. Absent in records written before devices were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The task's reference score ([`crate::data::TaskData::reference`]: majority class, mean predictor) on
    /// the same evaluation set; absent in records stored before it was computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<f64>,
}

/// Scores within this of the reference count as equal to it (a float sum of the same accuracy).
const REFERENCE_TOLERANCE: f64 = 1e-9;

/// Whether a score beats a reference score; `None` when either is unknown.
pub fn beats_reference(score: Option<f64>, reference: Option<f64>) -> Option<bool> {
    match (score, reference) {
        (Some(s), Some(r)) if s.is_finite() && r.is_finite() => Some(s > r + REFERENCE_TOLERANCE),
        _ => None,
    }
}

impl TrialOutcome {
    /// Whether the trial beat its task's reference score: `Some(false)` is a trial that learned nothing.
    pub fn learned(&self) -> Option<bool> {
        if !self.status.is_scored() {
            return None;
        }
        beats_reference(self.primary, self.reference)
    }
}

/// One stored line of the result store: the trial and what it produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    pub id: String,
    pub design: String,
    pub task: String,
    pub seed: u64,
    pub outcome: TrialOutcome,
}

impl TrialRecord {
    pub fn new(trial: &TrialSpec, outcome: TrialOutcome) -> Self {
        TrialRecord {
            id: trial.id.clone(),
            design: trial.design.clone(),
            task: trial.task.id.clone(),
            seed: trial.seed,
            outcome,
        }
    }
}

/// Lower-case hex SHA-256.
pub fn hex_sha256(bytes: &[u8]) -> String {
    hex_digest(Sha256::new_with_prefix(bytes))
}

/// Lower-case hex of a finished SHA-256.
pub fn hex_digest(hasher: Sha256) -> String {
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Feeds the bytes of the file at `path` to `hasher`, read in blocks (weight files are large).
pub fn hash_file(hasher: &mut Sha256, path: &std::path::Path) -> Result<()> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| crate::Error::io(path, e))?;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buffer)
            .map_err(|e| crate::Error::io(path, e))?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buffer[..n]);
    }
}

/// A child seed: the first 8 bytes of SHA-256 over the parent seed and a path of names (root → stage → candidate →
/// design), so every design's seed is fixed by the root seed and its place, whatever else the experiment contains.
pub fn child_seed(root: u64, path: &[&str]) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(root.to_le_bytes());
    for part in path {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str) -> TaskSpec {
        TaskSpec {
            id: id.into(),
            max_train: Some(100),
            max_eval: None,
            custom: None,
            generation: None,
        }
    }

    #[test]
    fn id_changes_with_every_identity_field() {
        let training = TrainingSpec::default();
        let base = TrialSpec::new(
            "d",
            &task("sst2"),
            1,
            &training,
            0.005,
            &[],
            "bb",
            "data",
            Split::Dev,
        )
        .expect("id");
        let again = TrialSpec::new(
            "d",
            &task("sst2"),
            1,
            &training,
            0.005,
            &[],
            "bb",
            "data",
            Split::Dev,
        )
        .expect("id");
        assert_eq!(base.id, again.id);
        let mut longer = training.clone();
        longer.epochs += 1;
        let variants = [
            TrialSpec::new(
                "e",
                &task("sst2"),
                1,
                &training,
                0.005,
                &[],
                "bb",
                "data",
                Split::Dev,
            ),
            TrialSpec::new(
                "d",
                &task("mrpc"),
                1,
                &training,
                0.005,
                &[],
                "bb",
                "data",
                Split::Dev,
            ),
            TrialSpec::new(
                "d",
                &task("sst2"),
                2,
                &training,
                0.005,
                &[],
                "bb",
                "data",
                Split::Dev,
            ),
            TrialSpec::new(
                "d",
                &task("sst2"),
                1,
                &longer,
                0.005,
                &[],
                "bb",
                "data",
                Split::Dev,
            ),
            TrialSpec::new(
                "d",
                &task("sst2"),
                1,
                &training,
                0.01,
                &[],
                "bb",
                "data",
                Split::Dev,
            ),
            TrialSpec::new(
                "d",
                &task("sst2"),
                1,
                &training,
                0.005,
                &[],
                "other",
                "data",
                Split::Dev,
            ),
            TrialSpec::new(
                "d",
                &task("sst2"),
                1,
                &training,
                0.005,
                &[],
                "bb",
                "changed",
                Split::Dev,
            ),
            TrialSpec::new(
                "d",
                &task("sst2"),
                1,
                &training,
                0.005,
                &[],
                "bb",
                "data",
                Split::Validation {
                    fraction: 0.1,
                    seed: 1,
                },
            ),
        ];
        for v in variants {
            assert_ne!(v.expect("id").id, base.id);
        }
    }

    #[test]
    fn dev_trials_keep_the_ids_they_had_before_splits_existed() {
        let training = TrainingSpec::default();
        let trial = TrialSpec::new(
            "d",
            &task("sst2"),
            1,
            &training,
            0.005,
            &[],
            "bb",
            "data",
            Split::Dev,
        )
        .expect("id");
        // The identity as it was written before the split existed: the same fields, in the same order.
        #[derive(Serialize)]
        struct Before<'a> {
            design: &'a str,
            task: TaskSpec,
            seed: u64,
            training: &'a TrainingSpec,
            budget: f64,
            strategies: [StrategySpec; 0],
            backbone: &'a str,
            data: &'a str,
        }
        let before = Before {
            design: "d",
            task: task("sst2"),
            seed: 1,
            training: &training,
            budget: 0.005,
            strategies: [],
            backbone: "bb",
            data: "data",
        };
        let text = serde_json::to_string(&before).expect("json");
        assert_eq!(trial.id, hex_sha256(text.as_bytes()));
    }

    #[test]
    fn child_seeds_depend_on_the_whole_path() {
        let a = child_seed(1, &["S1", "spindle", "0"]);
        assert_eq!(a, child_seed(1, &["S1", "spindle", "0"]));
        assert_ne!(a, child_seed(2, &["S1", "spindle", "0"]));
        assert_ne!(a, child_seed(1, &["S1", "spindle", "1"]));
        // Length prefixes keep ("ab", "c") and ("a", "bc") apart.
        assert_ne!(child_seed(1, &["ab", "c"]), child_seed(1, &["a", "bc"]));
    }
}
